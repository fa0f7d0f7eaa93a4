/**
 * Scenario 7, the soak: seven simulated days on a fake clock against the lab's SBA over real
 * sockets, with the phone's real services — every refresh on time, no timer or socket leaked,
 * heap growth bounded. (Liveness probes, keep-alives, refreshes every 540 s and SA
 * re-authentication every 8 h − 5 min all run as they would on the wall.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Lab, startLab } from "../lab/lab.ts";
import { isUp, makeRig, pass, register, settle, signedInStore, waitStatus } from "./harness.ts";

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ site: "branch", expires: 600 });
});
afterAll(async () => {
  await lab?.stop();
});

const DAY = 86_400_000;
const REFRESH = 540_000; // min(600 − 30, 0.9 × 600) s

describe("soak: seven simulated days", () => {
  it("refreshes on time for a week without leaking timers, sockets or heap", {
    timeout: 180_000,
  }, async () => {
    const rig = await makeRig(lab, await signedInStore(lab));
    register(rig);
    await waitStatus(rig, isUp);
    const connections = lab.sba.stats.connections;
    const handshakes = lab.sba.stats.handshakes;

    await pass(lab, rig, DAY, REFRESH);
    const timersAfterDay1 = rig.clock.pendingTimers();
    const heapAfterDay1 = process.memoryUsage().heapUsed;
    await pass(lab, rig, 6 * DAY, REFRESH);
    const heapAfterDay7 = process.memoryUsage().heapUsed;

    const ups = rig.statuses.slice(rig.statuses.findIndex(isUp));
    expect(rig.logs.filter((l) => l.level !== "info" && l.level !== "debug").slice(0, 3)).toEqual([]);
    expect(ups.filter((s) => !isUp(s))).toEqual([]);
    // One registration per refresh interval, all week.
    expect(ups.length).toBeGreaterThanOrEqual(Math.floor((7 * DAY) / REFRESH));
    const gaps = ups.slice(1).map((s, i) => s.at - ups[i]!.at);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(REFRESH);
    // The same TLS connection all week; a fresh TLS-DSK handshake about every 8 h.
    expect(lab.sba.stats.connections).toBe(connections);
    expect(lab.sba.stats.handshakes - handshakes).toBeGreaterThanOrEqual(20);
    expect(rig.clock.pendingTimers()).toBeLessThanOrEqual(timersAfterDay1 + 1);
    expect(heapAfterDay7 - heapAfterDay1).toBeLessThan(64 * 1024 * 1024);

    await rig.handle?.stop();
    await settle(lab, rig);
    expect(rig.clock.pendingTimers()).toBe(0);
  });
});
