/**
 * Issue 9 §4 over real sockets, real TLS and TLS-DSK against the lab's branch site (home: the
 * SBA; backup: the central pool across the WAN), with the phone's real services on a fake clock:
 *
 * - failback happens only after a signed REGISTER with a verified answer succeeds on a side flow:
 *   a home registrar that accepts the TLS connection but refuses REGISTER (503), or whose 200 does
 *   not verify, keeps the phone on the backup; once it answers properly the phone goes home and
 *   leaves no binding behind on the backup;
 * - the identity store is written only when what it holds changes: refreshes, re-authentications
 *   and re-registrations with the same registrar write nothing.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Lab, startLab } from "../lab/lab.ts";
import {
  isUp,
  makeRig,
  pass,
  type Rig,
  refuseRegister,
  register,
  settle,
  signedInStore,
  waitStatus,
} from "../scenarios/harness.ts";

let lab: Lab;
let storeDir: string;
let rig: Rig | undefined;

beforeAll(async () => {
  lab = await startLab({ site: "branch", expires: 3600 });
  storeDir = await signedInStore(lab);
});

afterEach(async () => {
  await rig?.handle?.stop();
  if (rig) await settle(lab, rig);
  rig = undefined;
  lab.sba.faults = {};
  await lab.sba.start();
  await lab.pool.start();
});

afterAll(async () => {
  await lab?.stop();
});

const generation = (dir: string): number =>
  (JSON.parse(readFileSync(join(dir, "identity.json"), "utf8")) as { generation: number }).generation;

/** The generation once no write has landed for half a second. */
async function stableGeneration(dir: string): Promise<number> {
  let last = generation(dir);
  for (let quiet = 0; quiet < 10; ) {
    await new Promise((r) => setTimeout(r, 50));
    const now = generation(dir);
    quiet = now === last ? quiet + 1 : 0;
    last = now;
  }
  return last;
}

async function failOverToPool(r: Rig): Promise<void> {
  register(r);
  expect(await waitStatus(r, isUp)).toMatchObject({ state: "registered", registrar: lab.ready.sba });
  const from = r.statuses.length;
  await lab.sba.stop();
  // A lost registration hands over within U(0, 40 s) of noticing the reset.
  const handover = await waitStatus(r, (s) => s.state === "registering", from);
  expect(handover.retryInMs).toBeLessThanOrEqual(40_000);
  await pass(lab, r, handover.retryInMs! + 1_000, 1_000);
  expect(await waitStatus(r, isUp, from)).toMatchObject({ state: "limited", registrar: lab.ready.pool });
}

describe("failback only after a successful signed REGISTER on a side flow", () => {
  it("home accepts TLS but answers REGISTER 503: the phone stays on the backup; then it fails back", {
    timeout: 120_000,
  }, async () => {
    let refusing = true;
    const seen = { refused: 0 };
    rig = await makeRig(lab, storeDir, {
      failbackProbeMs: 60_000,
      wrapConnect: refuseRegister(
        () => lab.ready.sba,
        () => refusing,
        seen,
      ),
    });
    refusing = false;
    await failOverToPool(rig);
    refusing = true;
    await lab.sba.start();
    const connections = lab.sba.stats.connections;
    const mark = rig.statuses.length;
    await pass(lab, rig, 300_000, 5_000);
    expect(lab.sba.stats.connections - connections).toBeGreaterThanOrEqual(4); // probed over TLS …
    expect(seen.refused).toBeGreaterThanOrEqual(4); // … and refused every time
    expect(rig.statuses.slice(mark)).toEqual([]); // never left the backup
    expect(lab.pool.bindingCount).toBe(1);

    refusing = false;
    await pass(lab, rig, 61_000, 5_000);
    expect(await waitStatus(rig, (s) => s.state === "registered", mark)).toMatchObject({
      registrar: lab.ready.sba,
      primary: true,
    });
    await settle(lab, rig);
    expect(lab.sba.bindingCount).toBe(1);
    expect(lab.pool.bindingCount).toBe(0); // the backup's binding was unregistered
    // The side registration became the registration: one handshake per probe, none after.
    const handshakes = lab.sba.stats.handshakes;
    await pass(lab, rig, 3_600_000, 60_000);
    expect(lab.sba.stats.handshakes).toBe(handshakes);
    expect(rig.statuses.slice(mark).every((s) => s.registrar === lab.ready.sba)).toBe(true);
  });

  it("home answers with a 200 whose rspauth does not verify: no failback until it signs properly", {
    timeout: 120_000,
  }, async () => {
    rig = await makeRig(lab, storeDir, { failbackProbeMs: 60_000 });
    await failOverToPool(rig);
    lab.sba.faults = { badRspauth: true };
    await lab.sba.start();
    const mark = rig.statuses.length;
    const handshakes = lab.sba.stats.handshakes;
    await pass(lab, rig, 300_000, 5_000);
    expect(lab.sba.stats.handshakes - handshakes).toBeGreaterThanOrEqual(4); // full TLS-DSK each time
    expect(rig.statuses.slice(mark)).toEqual([]);

    lab.sba.faults = {};
    await pass(lab, rig, 61_000, 5_000);
    expect(await waitStatus(rig, (s) => s.state === "registered", mark)).toMatchObject({
      registrar: lab.ready.sba,
    });
    await settle(lab, rig);
    expect(lab.pool.bindingCount).toBe(0);
  });
});

describe("the identity store is written only when what it holds changes", () => {
  it("refreshes, SA re-authentications and a re-registration with the same registrar write nothing", {
    timeout: 120_000,
  }, async () => {
    rig = await makeRig(lab, storeDir);
    rig.discovery = {
      ...rig.discovery,
      registrars: [{ host: "sba.lab.test", port: 5061, source: "static" }],
    };
    register(rig);
    expect(await waitStatus(rig, isUp)).toMatchObject({ registrar: lab.ready.sba });
    await settle(lab, rig);
    // Flash writes are fire-and-forget: let any that the first registration (or the previous
    // test's phone) queued land before counting.
    const before = await stableGeneration(storeDir);
    const refreshes = lab.sba.stats.registered;
    const handshakes = lab.sba.stats.handshakes;
    // 9 h: a refresh every 54 min and one SA re-authentication (8 h − 5 min).
    await pass(lab, rig, 9 * 3_600_000, 60_000);
    // And a registrar restart: a fresh registration with the same registrar.
    const from = rig.statuses.length;
    await lab.sba.stop();
    await lab.sba.start();
    const failed = await waitStatus(rig, (s) => s.state === "failed", from);
    await pass(lab, rig, failed.retryInMs! + 1_000, 1_000);
    await waitStatus(rig, isUp, from);
    await settle(lab, rig);
    expect(lab.sba.stats.registered - refreshes).toBeGreaterThanOrEqual(10);
    expect(lab.sba.stats.handshakes - handshakes).toBeGreaterThanOrEqual(2);
    expect(await stableGeneration(storeDir)).toBe(before);
  });
});
