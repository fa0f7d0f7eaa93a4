/**
 * Issue 14 over loopback against the lab: the phone's services supply what Network info shows —
 * the registrar in use (home, not the backup), IP and MAC, the NTP server whose answer set the
 * clock, the certificate's subject, issuer, serial and expiry — and the factory reset leaves flash
 * in factory state. Also: the lab removes the temporary directory it made when it stops, and so
 * does the demo with its store.
 */
import { X509Certificate } from "node:crypto";
import { readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOutput } from "../../firmware/commands/output.ts";
import type { Diagnostics } from "../../firmware/telemetry/diagnostics.ts";
import { demoCommand } from "../dev/demo.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { isUp, makeRig, register, signedInStore, waitStatus } from "../scenarios/harness.ts";

let lab: Lab;
const dirs: string[] = [];

beforeAll(async () => {
  lab = await startLab();
}, 60_000);
afterAll(async () => {
  await lab?.stop();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("phone services diagnostics", () => {
  it("name the registrar in use, IP and MAC, the NTP server used and the certificate", async () => {
    const dir = await signedInStore(lab);
    dirs.push(dir);
    const rig = await makeRig(lab, dir);
    const services = rig.services as typeof rig.services & { diagnostics(): Promise<Diagnostics> };
    const set = await services.setClock(rig.discovery);
    register(rig);
    const up = await waitStatus(rig, isUp);
    try {
      const d = await services.diagnostics();
      expect(d.registrar).toMatchObject({ inUse: up.registrar, backup: false, from: "registration" });
      expect(d.ntp).toMatchObject({ set: true, server: set.source });
      expect(d.ntp.server).toBe(lab.ready.ntp);
      expect(d.network.ip).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(d.network.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect(d.user).toBe("sip:4711@lab.test");
      expect(d.certificate?.subject).toContain("4711@lab.test");
      expect(d.certificate?.issuer).toContain("Handset Lab Root CA");
      expect(d.certificate?.serial).toMatch(/^[0-9A-F]+$/);
      expect(Date.parse(d.certificate!.notAfter)).toBeGreaterThan(Date.now());
      expect(JSON.stringify(d)).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE|keyPem/);
      const rows = await services.networkInfo();
      expect(rows.slice(0, 5).map(([label]) => label)).toEqual(["Registrar", "User", "IP", "MAC", "NTP"]);
      expect(rows).toContainEqual(["Registrar", up.registrar]);
      expect(rows).toContainEqual(["NTP", lab.ready.ntp]);
      expect(rows.map(([l]) => l)).toEqual(
        expect.arrayContaining(["Cert subject", "Cert issuer", "Cert serial", "Cert expires"]),
      );
    } finally {
      await rig.handle?.stop();
    }
    // Factory reset: the certificate and the cached servers are gone, new ids.
    const before = await services.diagnostics();
    await services.factoryReset();
    const after = await services.diagnostics();
    expect(after.certificate).toBeUndefined();
    expect(after.user).toBeUndefined();
    expect(after.registrar.inUse).toBeUndefined();
    expect(after.device?.deviceId).not.toBe(before.device?.deviceId);
    expect(await readdir(dir)).toEqual(["identity.json"]);
    expect(await services.identity()).toEqual({ hasCredential: false });
    expect(new X509Certificate(lab.ca.cert).subject).toContain("Handset Lab Root CA");
  }, 60_000);
});

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

describe("temporary directories", () => {
  it("the lab removes the directory it made when it stops (not one it was given)", async () => {
    const made = await startLab();
    const dir = made.ready.dir;
    expect(await exists(made.ready.ca)).toBe(true);
    await made.stop();
    expect(await exists(dir)).toBe(false);
  }, 60_000);

  it("the demo removes its lab CA and its temporary store when it exits", async () => {
    const demos = async () => (await readdir(tmpdir())).filter((n) => n.startsWith("handset-demo-"));
    const before = new Set(await demos());
    const lines: string[] = [];
    const out = createOutput(
      true,
      (l) => lines.push(l),
      () => {},
    );
    expect(await demoCommand(["--until", "sign-in-required", "--timeout", "30", "--json"], out)).toBe(0);
    const ready = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e["event"] === "lab.ready");
    expect(typeof ready?.["dir"]).toBe("string");
    expect(await exists(ready!["dir"] as string)).toBe(false);
    expect((await demos()).filter((n) => !before.has(n))).toEqual([]);
  }, 60_000);
});
