/**
 * Issue 9 §4: the identity store is written only when what it holds changed. Today's phone
 * rewrote identity.json (which holds the private key) at every registration; an unchanged
 * record is now no write at all, while a changed one still goes through the atomic
 * prev-copy + rename sequence.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { IDENTITY_SCHEMA, type IdentityRecord, IdentityStore } from "../../firmware/store/identity-store.ts";
import { makePairs, type TestPair } from "../store/fixtures.ts";
import { MemoryFileSystem } from "../store/memory-file-system.ts";

let pair: TestPair;
let caPem: string;

beforeAll(async () => {
  const made = await makePairs(1);
  pair = made.pairs[0]!;
  caPem = made.caPem;
}, 30_000);

const DIR = "/flash/identity";

function record(): IdentityRecord {
  const { uri, certPem, keyPem, notBefore, notAfter, serial } = pair;
  return {
    schema: IDENTITY_SCHEMA,
    deviceId: "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    epid: "0a1b2c3d4e",
    instanceId: "11111111-2222-4333-8444-555555555555",
    trustedRoots: [caPem],
    credential: { uri, certPem, keyPem, notBefore, notAfter, serial },
    registrars: {
      primary: "pool.lab.test:5061",
      backup: "sba.lab.test:5061",
      lastAddresses: ["10.0.0.5:5061"],
    },
  };
}

/** What phone-services does at a registration: record the registrar, unless it is already the one. */
const registeredAt = (registrar: string) => (r: IdentityRecord) =>
  r.registrars.lastAddresses?.length === 1 && r.registrars.lastAddresses[0] === registrar
    ? r
    : { ...r, registrars: { ...r.registrars, lastAddresses: [registrar], updatedAt: 1 } };

/** What it does at a 301: keep the primary and backup, unless they are already those. */
const redirected = (primary: string, backup: string) => (r: IdentityRecord) =>
  r.registrars.primary === primary && r.registrars.backup === backup
    ? r
    : { ...r, registrars: { ...r.registrars, primary, backup, updatedAt: 2 } };

describe("identity store: writes only on change", () => {
  it("100 registrations, refreshes and repeated 301s with the same registrars cause zero writes", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(record());
    const writes = fs.log.length;
    for (let i = 0; i < 100; i++) {
      await store.update(registeredAt("10.0.0.5:5061"));
      await store.update(redirected("pool.lab.test:5061", "sba.lab.test:5061"));
      await store.update((r) => r); // a refresh: nothing to record
    }
    expect(fs.log.slice(writes)).toEqual([]);
  });

  it("saving the very record again writes nothing; a key order difference is no change", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(record());
    const writes = fs.log.length;
    // The same content with its keys in another order (as a spread-and-override builds it).
    const { registrars, ...rest } = record();
    await store.save({ registrars: { lastAddresses: registrars.lastAddresses!, ...registrars }, ...rest });
    expect(fs.log.slice(writes)).toEqual([]);
  });

  it("a changed registrar record is written, atomically as before (previous generation kept)", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(record());
    const writes = fs.log.length;
    await store.update(redirected("pool2.lab.test:5061", "sba.lab.test:5061"));
    expect(fs.log.slice(writes)).toEqual(["write identity.prev.json", "write identity.json"]);
    const [main, prev] = await store.inspect();
    expect(main).toMatchObject({ status: "ok", generation: 2 });
    expect(prev).toMatchObject({ status: "ok", generation: 1 });
    expect((await store.load())?.registrars.primary).toBe("pool2.lab.test:5061");
    // And once it holds that, saying it again is free.
    await store.update(redirected("pool2.lab.test:5061", "sba.lab.test:5061"));
    expect(fs.log.slice(writes)).toHaveLength(2);
  });

  it("a corrupt identity.json is rewritten even when the previous generation holds the same record", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(record());
    await store.update(registeredAt("10.0.0.6:5061"));
    fs.files.set(`${DIR}/identity.json`, { data: Buffer.from("{ torn"), mode: 0o600 });
    const writes = fs.log.length;
    await store.update((r) => r);
    expect(fs.log.slice(writes)).toContain("write identity.json");
    expect((await store.inspect())[0]).toMatchObject({ status: "ok" });
  });
});
