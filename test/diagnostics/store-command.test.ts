/**
 * Issue 14: `handset store show --store DIR [--json]` (diagnostics, no secrets), `handset store
 * reset --store DIR --yes` (factory reset, refused without --yes), the pure diagnostics object
 * behind both (and behind the Network info pages and, later, MQTT), and the phone's services
 * supplying the registrar in use, IP and MAC, the NTP server used and the certificate.
 */
import { X509Certificate } from "node:crypto";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOutput } from "../../firmware/commands/output.ts";
import { localInterface } from "../../firmware/commands/phone-services.ts";
import { storeCommand } from "../../firmware/commands/store.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { type IdentityRecord, IdentityStore } from "../../firmware/store/identity-store.ts";
import { diagnostics, diagnosticsRows } from "../../firmware/telemetry/diagnostics.ts";
import { type IssuedCert, LabCa } from "../lab/ca.ts";

let ca: LabCa;
let client: IssuedCert;
const dirs: string[] = [];

beforeAll(async () => {
  ca = await LabCa.create();
  client = await ca.issueClient("4711@lab.test");
}, 60_000);
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "handset-diag-"));
  dirs.push(d);
  return d;
}

function signedIn(base: IdentityRecord): IdentityRecord {
  const x = new X509Certificate(client.cert);
  return {
    ...base,
    certProvUrl: "https://pool.lab.test/CertProv/CertProvisioningService.svc",
    trustedRoots: [ca.cert],
    credential: {
      uri: "sip:4711@lab.test",
      certPem: client.cert,
      keyPem: client.key,
      notBefore: Date.parse(x.validFrom),
      notAfter: Date.parse(x.validTo),
      serial: x.serialNumber,
    },
    registrars: {
      primary: "sba.lab.test:5061",
      backup: "pool.lab.test:5061",
      lastAddresses: ["pool.lab.test:5061"],
    },
    lastGoodTime: Date.UTC(2026, 0, 1),
  };
}

async function storeWithIdentity(): Promise<{ dir: string; record: IdentityRecord }> {
  const dir = await tempDir();
  const store = new IdentityStore(nodeFileSystem, dir, { random: new SeededRandom(3) });
  const record = signedIn(await store.loadOrCreate());
  await store.save(record);
  return { dir, record };
}

function capture(json: boolean) {
  const lines: string[] = [];
  const errors: string[] = [];
  const out = createOutput(
    json,
    (l) => lines.push(l),
    (l) => errors.push(l),
  );
  return { out, lines, errors };
}

const SECRETS = /PRIVATE KEY|BEGIN CERTIFICATE|keyPem|"pin"|ticket/i;

describe("diagnostics (pure)", () => {
  it("names the registrar in use and whether it is the backup, the certificate, never a secret", () => {
    const record = signedIn({
      schema: 2,
      deviceId: "8a1f0c2e-1111-4222-8333-444455556666",
      epid: "0123456789",
      instanceId: "9b2f0c2e-1111-4222-8333-444455556666",
      trustedRoots: [],
      registrars: {},
      signIn: { stage: "key-generated", keyPem: client.key, startedAt: 0 },
    });
    const x = new X509Certificate(client.cert);
    const d = diagnostics({
      version: "0.1.0",
      state: "limited",
      record,
      registration: { state: "limited", registrar: "pool.lab.test:5061", primary: false },
      network: { interface: "eth0", ip: "10.0.0.5", mac: "b8:27:eb:12:34:56" },
      ntp: { set: true, server: "10.0.0.1:123", offsetMs: 12 },
      discovery: {
        registrars: [{ host: "sba.lab.test", port: 5061, source: "dhcp-120" }],
        ntpServers: ["10.0.0.1:123", "10.0.0.2:123"],
      },
    });
    expect(d.registrar).toMatchObject({ inUse: "pool.lab.test:5061", backup: true, from: "registration" });
    expect(d.network).toEqual({ interface: "eth0", ip: "10.0.0.5", mac: "b8:27:eb:12:34:56" });
    expect(d.ntp).toEqual({
      set: true,
      server: "10.0.0.1:123",
      offsetMs: 12,
      discovered: ["10.0.0.1:123", "10.0.0.2:123"],
    });
    expect(d.certificate).toMatchObject({
      subject: "CN=4711@lab.test",
      issuer: "CN=Handset Lab Root CA, O=Handset Lab",
      serial: x.serialNumber.toUpperCase(),
      notAfter: new Date(Date.parse(x.validTo)).toISOString(),
    });
    expect(d.signIn).toEqual({ stage: "key-generated", startedAt: "1970-01-01T00:00:00.000Z" });
    expect(JSON.stringify(d)).not.toMatch(SECRETS);
    // Registered to the home registrar: not the backup.
    const home = diagnostics({
      record,
      registration: { registrar: "sba.lab.test:5061", primary: true },
    });
    expect(home.registrar.backup).toBe(false);
    // No phone running: the last registrar flash remembers, judged against the primary.
    const fromFlash = diagnostics({ record });
    expect(fromFlash.registrar).toMatchObject({ inUse: "pool.lab.test:5061", backup: true, from: "flash" });
    expect(diagnosticsRows(fromFlash)[0]).toEqual(["Registrar (backup)", "pool.lab.test:5061 (last)"]);
  });

  it("localInterface picks the configured interface, else an external one, with its MAC", () => {
    const list = {
      lo: [
        {
          address: "127.0.0.1",
          netmask: "255.0.0.0",
          family: "IPv4",
          mac: "00:00:00:00:00:00",
          internal: true,
          cidr: null,
        },
      ],
      eth0: [
        {
          address: "10.0.0.5",
          netmask: "255.255.255.0",
          family: "IPv4",
          mac: "b8:27:eb:12:34:56",
          internal: false,
          cidr: null,
        },
      ],
      wlan0: [
        {
          address: "10.1.0.9",
          netmask: "255.255.255.0",
          family: "IPv4",
          mac: "b8:27:eb:aa:bb:cc",
          internal: false,
          cidr: null,
        },
      ],
    } as unknown as Parameters<typeof localInterface>[1];
    expect(localInterface(undefined, list)).toEqual({
      interface: "eth0",
      ip: "10.0.0.5",
      mac: "b8:27:eb:12:34:56",
    });
    expect(localInterface("wlan0", list)).toEqual({
      interface: "wlan0",
      ip: "10.1.0.9",
      mac: "b8:27:eb:aa:bb:cc",
    });
  });
});

describe("handset store show", () => {
  it("--json: one object with the generations and the diagnostics, no key, PIN or ticket", async () => {
    const { dir, record } = await storeWithIdentity();
    const { out, lines } = capture(true);
    expect(await storeCommand(["show", "--store", dir, "--json"], out)).toBe(0);
    expect(lines).toHaveLength(1);
    const e = JSON.parse(lines[0]!) as { event: string; generations: unknown[]; diagnostics: unknown };
    expect(e.event).toBe("store");
    expect(e.generations[0]).toEqual({
      file: "identity.json",
      status: "ok",
      generation: expect.any(Number),
      signedIn: true,
    });
    expect(e.generations[1]).toMatchObject({ file: "identity.prev.json", status: "ok" });
    expect(e.diagnostics).toMatchObject({
      user: "sip:4711@lab.test",
      registrar: { inUse: "pool.lab.test:5061", backup: true, from: "flash", primary: "sba.lab.test:5061" },
      certificate: { subject: "CN=4711@lab.test", issuer: "CN=Handset Lab Root CA, O=Handset Lab" },
      device: { deviceId: record.deviceId, epid: record.epid, instanceId: record.instanceId },
      certProvUrl: "https://pool.lab.test/CertProv/CertProvisioningService.svc",
      lastGoodTime: "2026-01-01T00:00:00.000Z",
    });
    expect(lines[0]).not.toMatch(SECRETS);
    expect(lines[0]).not.toContain(client.key.split("\n")[1]!);
  });

  it("without --json: readable lines, no secret; it changes nothing in the directory", async () => {
    const { dir } = await storeWithIdentity();
    await writeFile(join(dir, "identity.json.tmp-debris"), "x");
    const before = (await readdir(dir)).sort();
    const { out, lines } = capture(false);
    expect(await storeCommand(["show", "--store", dir], out)).toBe(0);
    expect(lines).toContain("info cert-subject=CN=4711@lab.test");
    expect(lines).toContain("info registrar-backup-=pool.lab.test:5061 (last)");
    expect(lines.join("\n")).not.toMatch(SECRETS);
    expect((await readdir(dir)).sort()).toEqual(before);
  });

  it("a missing store and a missing subcommand are one-line errors", async () => {
    const { out } = capture(false);
    await expect(
      storeCommand(["show", "--store", join(tmpdir(), "handset-no-such-store")], out),
    ).rejects.toMatchObject({
      code: "store-not-found",
    });
    await expect(storeCommand(["show"], out)).rejects.toMatchObject({ code: "usage" });
    await expect(storeCommand(["wipe", "--store", "x"], out)).rejects.toMatchObject({ code: "usage" });
  });
});

describe("handset store reset", () => {
  it("refuses without --yes and leaves the store as it was", async () => {
    const { dir } = await storeWithIdentity();
    const before = (await readdir(dir)).sort();
    const { out } = capture(false);
    await expect(storeCommand(["reset", "--store", dir], out)).rejects.toMatchObject({
      code: "usage",
      message: expect.stringContaining("--yes"),
    });
    expect((await readdir(dir)).sort()).toEqual(before);
    const store = new IdentityStore(nodeFileSystem, dir);
    expect((await store.load())?.credential).toBeDefined();
  });

  it("--yes: factory state — one generation, new ids, no certificate, key, roots or servers", async () => {
    const { dir, record } = await storeWithIdentity();
    const { out, lines } = capture(true);
    expect(await storeCommand(["reset", "--store", dir, "--yes", "--json"], out)).toBe(0);
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: "store.reset", store: dir });
    expect(await readdir(dir)).toEqual(["identity.json"]);
    const after = await new IdentityStore(nodeFileSystem, dir).load();
    expect(after).toBeDefined();
    expect(after!.credential).toBeUndefined();
    expect(after!.signIn).toBeUndefined();
    expect(after!.trustedRoots).toEqual([]);
    expect(after!.registrars).toEqual({});
    expect(after!.certProvUrl).toBeUndefined();
    expect(after!.deviceId).not.toBe(record.deviceId);
    expect(after!.epid).not.toBe(record.epid);
    // No file in the directory holds the old key any more.
    for (const f of await readdir(dir))
      expect(await nodeFileSystem.readFile(join(dir, f)).then(String)).not.toContain("PRIVATE KEY");
  });
});
