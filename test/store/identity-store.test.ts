import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import {
  describeIdentity,
  encodeEnvelope,
  IDENTITY_SCHEMA,
  type IdentityRecord,
  type IdentityRecordV1,
  IdentityStore,
  StoreError,
} from "../../firmware/store/identity-store.ts";
import { makePairs, type TestPair } from "./fixtures.ts";
import { MemoryFileSystem, PowerCut } from "./memory-file-system.ts";

let pairs: TestPair[];
let caPem: string;
let strayKeyPem: string;

beforeAll(async () => {
  ({ pairs, caPem, strayKeyPem } = await makePairs(2));
}, 30_000);

const DIR = "/flash/identity";
const MAIN = `${DIR}/identity.json`;
const PREV = `${DIR}/identity.prev.json`;

function base(seq: number): IdentityRecord {
  return {
    schema: IDENTITY_SCHEMA,
    deviceId: "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    epid: "0a1b2c3d4e",
    instanceId: "11111111-2222-4333-8444-555555555555",
    trustedRoots: [],
    registrars: { primary: "pool.lab.test:5061", updatedAt: seq },
    lastGoodTime: seq,
  };
}

function signedIn(seq: number, pair = pairs[0]!): IdentityRecord {
  const { uri, certPem, keyPem, notBefore, notAfter, serial } = pair;
  return {
    ...base(seq),
    certProvUrl: "https://pool.lab.test/CertProv/CertProvisioningService.svc",
    trustedRoots: [caPem],
    credential: { uri, certPem, keyPem, notBefore, notAfter, serial },
  };
}

async function storeError(p: Promise<unknown>): Promise<StoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  return err as StoreError;
}

describe("IdentityStore on the real file system", () => {
  let root: string;
  let dir: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "handset-store-"));
    dir = join(root, "identity");
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("creates an identity once, round-trips it, and keeps the files 0600 in a 0700 directory", async () => {
    const store = new IdentityStore(nodeFileSystem, dir, { random: new SeededRandom(7) });
    expect(await store.load()).toBeUndefined();
    const first = await store.loadOrCreate();
    expect(first.deviceId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(first.instanceId).not.toBe(first.deviceId);
    expect(first.epid).toMatch(/^[0-9a-f]{10}$/);

    const again = new IdentityStore(nodeFileSystem, dir);
    expect(await again.loadOrCreate()).toEqual(first);

    const rec = { ...signedIn(5), deviceId: first.deviceId, epid: first.epid, instanceId: first.instanceId };
    await again.save(rec);
    expect(await new IdentityStore(nodeFileSystem, dir).load()).toEqual(rec);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    for (const name of await readdir(dir)) expect((await stat(join(dir, name))).mode & 0o777).toBe(0o600);
    expect((await readdir(dir)).sort()).toEqual(["identity.json", "identity.prev.json"]);
  });

  it("cleans leftover tmp files of a cut-short write at load, and only its own", async () => {
    const store = new IdentityStore(nodeFileSystem, dir);
    await store.save(signedIn(1));
    await writeFile(join(dir, "identity.json.tmp-0badc0ffee"), '{"format":"handset.iden');
    await writeFile(join(dir, "identity.prev.json.tmp-12"), "");
    await writeFile(join(dir, "notes.txt.tmp-1"), "someone else's");
    expect((await store.load())?.lastGoodTime).toBe(1);
    // identity.prev.json: the only credential is kept twice (issue 14: one bad file is survived).
    expect((await readdir(dir)).sort()).toEqual(["identity.json", "identity.prev.json", "notes.txt.tmp-1"]);
  });

  it("wipeCredential leaves no key material anywhere in the directory", async () => {
    const store = new IdentityStore(nodeFileSystem, dir);
    await store.save(signedIn(1, pairs[0]));
    await store.save({
      ...signedIn(2, pairs[1]),
      signIn: { stage: "csr-sent", keyPem: strayKeyPem, startedAt: 2 },
    });
    await store.save(signedIn(3, pairs[1])); // prev now holds the signIn key and pair 1's key
    await writeFile(join(dir, "identity.json.tmp-dead"), pairs[0]!.keyPem); // debris of a cut write
    await writeFile(join(dir, "identity.corrupt-1.json"), `garbage ${pairs[0]!.keyPem}`);
    const before = await Promise.all((await readdir(dir)).map((n) => readFile(join(dir, n), "utf8")));
    expect(before.filter((t) => t.includes("PRIVATE KEY")).length).toBeGreaterThanOrEqual(3);

    await store.wipeCredential();

    for (const name of await readdir(dir))
      expect(await readFile(join(dir, name), "utf8"), name).not.toContain("PRIVATE KEY");
    const after = await store.load();
    expect(after?.credential).toBeUndefined();
    expect(after?.signIn).toBeUndefined();
    expect(after).toMatchObject({ deviceId: base(0).deviceId, epid: base(0).epid, trustedRoots: [caPem] });
  });
});

describe("IdentityStore validation", () => {
  it("rejects a certificate whose public key is not the private key's (cert-key-mismatch)", async () => {
    const store = new IdentityStore(new MemoryFileSystem(), DIR);
    const rec = signedIn(1);
    rec.credential!.keyPem = pairs[1]!.keyPem;
    expect((await storeError(store.save(rec))).code).toBe("cert-key-mismatch");
    expect(await store.load()).toBeUndefined();
  });

  it.each<[string, (r: IdentityRecord) => void]>([
    [
      "credential without keyPem",
      (r) => {
        r.credential!.keyPem = "";
      },
    ],
    [
      "credential without certPem",
      (r) => {
        delete (r.credential as Partial<typeof r.credential>)!.certPem;
      },
    ],
    [
      "certPem that is not a certificate",
      (r) => {
        r.credential!.certPem = "-----BEGIN CERTIFICATE-----";
      },
    ],
    [
      "bad epid",
      (r) => {
        r.epid = "ABCDEF0123";
      },
    ],
    [
      "bad deviceId",
      (r) => {
        r.deviceId = "not-a-uuid";
      },
    ],
    [
      "missing registrars",
      (r) => {
        delete (r as Partial<IdentityRecord>).registrars;
      },
    ],
    [
      "unknown signIn stage",
      (r) => {
        r.signIn = { stage: "done" as "csr-sent", startedAt: 1 };
      },
    ],
    [
      "old schema number",
      (r) => {
        r.schema = 1;
      },
    ],
  ])("rejects %s (store-invalid) and keeps the stored record", async (_what, spoil) => {
    const store = new IdentityStore(new MemoryFileSystem(), DIR);
    await store.save(signedIn(1));
    const rec = signedIn(2);
    spoil(rec);
    expect((await storeError(store.save(rec))).code).toBe("store-invalid");
    expect((await store.load())?.lastGoodTime).toBe(1);
  });

  it("checks a resumable sign-in's key pair too", async () => {
    const store = new IdentityStore(new MemoryFileSystem(), DIR);
    const rec = { ...base(1), signIn: { stage: "key-generated" as const, startedAt: 1 } };
    const pub = (await import("node:crypto"))
      .createPublicKey(pairs[0]!.keyPem)
      .export({ type: "spki", format: "pem" });
    await store.save({
      ...rec,
      signIn: { ...rec.signIn, keyPem: pairs[0]!.keyPem, publicKeyPem: String(pub) },
    });
    const err = await storeError(
      store.save({ ...rec, signIn: { ...rec.signIn, keyPem: pairs[1]!.keyPem, publicKeyPem: String(pub) } }),
    );
    expect(err.code).toBe("cert-key-mismatch");
  });

  it("describeIdentity shows what matters and no key or PEM body", () => {
    const r = { ...signedIn(1), signIn: { stage: "csr-sent" as const, keyPem: strayKeyPem, startedAt: 1 } };
    const text = JSON.stringify(describeIdentity(r));
    expect(text).not.toMatch(/PRIVATE KEY|BEGIN|MII/);
    expect(describeIdentity(r)).toMatchObject({
      deviceId: r.deviceId,
      credential: { uri: pairs[0]!.uri, serial: pairs[0]!.serial },
      signIn: { stage: "csr-sent", hasKey: true },
    });
  });
});

describe("IdentityStore migration", () => {
  it("migrates a schema-1 record (no instanceId, one registrar string) and persists the result", async () => {
    const fs = new MemoryFileSystem();
    const { uri, certPem, keyPem, notBefore, notAfter } = pairs[0]!;
    const v1: IdentityRecordV1 = {
      schema: 1,
      deviceId: base(0).deviceId,
      epid: "00aa11bb22",
      trustedRoots: [caPem],
      credential: { uri, certPem, keyPem, notBefore, notAfter },
      registrar: "sba.branch.lab.test:5061",
      lastGoodTime: 42,
    };
    await fs.writeFileAtomic(MAIN, encodeEnvelope(9, v1), 0o600);
    const store = new IdentityStore(fs, DIR);
    const loaded = await store.load();
    expect(loaded).toEqual({
      schema: 2,
      deviceId: v1.deviceId,
      epid: v1.epid,
      instanceId: v1.deviceId,
      trustedRoots: [caPem],
      credential: v1.credential,
      registrars: { primary: "sba.branch.lab.test:5061" },
      lastGoodTime: 42,
    });
    expect(await store.loadOrCreate()).toEqual(loaded);
    const main = JSON.parse((await fs.readFile(MAIN))!.toString());
    expect(main).toMatchObject({ generation: 10, record: { schema: 2 } });
    expect(JSON.parse((await fs.readFile(PREV))!.toString()).record.schema).toBe(1);
  });

  it("does not take a record from newer firmware for corrupt (store-too-new), but falls back to prev", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(base(1));
    await store.save(base(2));
    await fs.writeFileAtomic(MAIN, encodeEnvelope(5, { ...base(3), schema: 3 }), 0o600);
    expect((await store.load())?.lastGoodTime).toBe(1);
    await fs.remove(PREV);
    expect((await storeError(store.load())).code).toBe("store-too-new");
    expect(await fs.list(DIR)).toEqual(["identity.json"]);
  });
});

describe("IdentityStore corruption", () => {
  const spoilers: Array<[string, (b: Buffer) => Buffer]> = [
    ["truncated", (b) => b.subarray(0, Math.floor(b.length * 0.6))],
    [
      "flipped byte in a value",
      (b) => {
        const c = Buffer.from(b);
        const at = c.indexOf("pool.lab.test");
        c[at] = c[at]! ^ 0x01;
        return c;
      },
    ],
    ["garbage", () => Buffer.from("\x00\xff\x13garbage\n".repeat(40), "latin1")],
    ["empty", () => Buffer.alloc(0)],
  ];

  it.each(spoilers)(
    "%s main file: falls back to prev, sets it aside, never overwrites the good one",
    async (_w, spoil) => {
      const fs = new MemoryFileSystem();
      const store = new IdentityStore(fs, DIR);
      await store.save(signedIn(1));
      await store.save(signedIn(2, pairs[1]));
      const good = (await fs.readFile(PREV))!;
      const spoiled = spoil((await fs.readFile(MAIN))!);
      await fs.writeFileAtomic(MAIN, spoiled, 0o600);

      expect((await store.load())?.lastGoodTime).toBe(1);
      expect(await fs.readFile(`${DIR}/identity.corrupt-1.json`)).toEqual(spoiled);
      expect(await fs.readFile(PREV)).toEqual(good);

      await store.save(signedIn(3)); // a corrupt main is never copied over prev
      expect(await fs.readFile(PREV)).toEqual(good);
      expect((await store.load())?.lastGoodTime).toBe(3);
      await store.save(signedIn(4));
      expect((await store.load())?.lastGoodTime).toBe(4);
      expect((await new IdentityStore(fs, DIR).inspect()).map((s) => s.status)).toEqual(["ok", "ok"]);
    },
  );

  it("a bit flip anywhere in the main file yields exactly the main or the prev record", async () => {
    const fs = new MemoryFileSystem();
    await new IdentityStore(fs, DIR).save(base(1));
    await new IdentityStore(fs, DIR).save(base(2));
    const main = (await fs.readFile(MAIN))!;
    const prev = (await fs.readFile(PREV))!;
    const seen = new Map<number | undefined, number>();
    for (let i = 0; i < main.length; i++) {
      for (const bit of [0x01, 0x20]) {
        const flipped = Buffer.from(main);
        flipped[i] = flipped[i]! ^ bit;
        const probe = new MemoryFileSystem();
        await probe.writeFileAtomic(MAIN, flipped, 0o600);
        await probe.writeFileAtomic(PREV, prev, 0o600);
        const got = await new IdentityStore(probe, DIR).load();
        const seq = got?.lastGoodTime;
        expect(got, `byte ${i} ^ ${bit}`).toEqual(seq === 2 ? base(2) : base(1));
        seen.set(seq, (seen.get(seq) ?? 0) + 1);
      }
    }
    expect(seen.get(1)).toBeGreaterThan(main.length); // most flips are caught...
    expect([...seen.keys()].every((k) => k === 1 || k === 2)).toBe(true); // ...the rest are harmless
  });

  // Issue 14: nothing usable left is "store-damaged" on every load (never a silent fresh identity
  // that asks for the PIN as if never signed in), until a factory reset.
  it("every generation corrupt: store-damaged on every load, files kept aside, factory state after reset()", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR, { random: new SeededRandom(3) });
    const old = await store.loadOrCreate();
    await store.save({ ...old, lastGoodTime: 1 });
    await fs.writeFileAtomic(MAIN, Buffer.from("{}"), 0o600);
    await fs.writeFileAtomic(PREV, Buffer.from('{"format":'), 0o600);
    expect((await storeError(store.load())).code).toBe("store-damaged");
    expect((await fs.list(DIR)).sort()).toEqual(["identity.corrupt-1.json", "identity.corrupt-2.json"]);
    expect((await storeError(store.load())).code).toBe("store-damaged");
    expect((await storeError(store.loadOrCreate())).code).toBe("store-damaged");
    await store.reset();
    expect(await store.load()).toBeUndefined();
    const fresh = await store.loadOrCreate();
    expect(fresh.deviceId).not.toBe(old.deviceId);
    expect((await fs.list(DIR)).sort()).toEqual(["identity.json"]);
  });

  it("loadOrCreate never starts over by itself when everything is corrupt, keeping the last three aside", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    for (let i = 0; i < 4; i++) {
      await fs.writeFileAtomic(MAIN, Buffer.from(`bad ${i}`), 0o600);
      expect((await storeError(store.loadOrCreate())).code).toBe("store-damaged");
      await fs.remove(PREV);
    }
    expect((await fs.list(DIR)).filter((n) => n.includes("corrupt")).sort()).toEqual([
      "identity.corrupt-2.json",
      "identity.corrupt-3.json",
      "identity.corrupt-4.json",
    ]);
  });
});

describe("IdentityStore ordering and crash points", () => {
  it("serialises concurrent updates: none is lost", async () => {
    const store = new IdentityStore(new MemoryFileSystem(), DIR);
    await store.save(base(0));
    await Promise.all(
      Array.from({ length: 40 }, () =>
        store.update((r) => ({ ...r, lastGoodTime: (r.lastGoodTime ?? 0) + 1 })),
      ),
    );
    expect((await store.load())?.lastGoodTime).toBe(40);
  });

  it("a power cut at every step of save() leaves the old or the new record", async () => {
    for (let k = 0; ; k++) {
      const fs = new MemoryFileSystem();
      const store = new IdentityStore(fs, DIR);
      await store.save(signedIn(1));
      await store.save(signedIn(2, pairs[1]));
      fs.crashAfter(k);
      const done = await store.save(signedIn(3)).then(
        () => true,
        (e: unknown) => (e instanceof PowerCut ? false : Promise.reject(e)),
      );
      fs.restore();
      const got = await new IdentityStore(fs, DIR).load();
      expect([2, 3], `cut after ${k} writes`).toContain(got?.lastGoodTime);
      if (done) {
        expect(got?.lastGoodTime).toBe(3);
        break;
      }
      expect(await fs.list(DIR)).not.toContainEqual(expect.stringContaining(".tmp-"));
    }
  });

  it("a power cut at every step of wipeCredential() leaves it signed in or wiped without key copies", async () => {
    for (let k = 0; ; k++) {
      const fs = new MemoryFileSystem();
      const store = new IdentityStore(fs, DIR);
      await store.save(signedIn(1));
      await store.save(signedIn(2, pairs[1]));
      fs.crashAfter(k);
      const done = await store.wipeCredential().then(
        () => true,
        (e: unknown) => (e instanceof PowerCut ? false : Promise.reject(e)),
      );
      fs.restore();
      const got = await new IdentityStore(fs, DIR).load();
      expect(got?.lastGoodTime, `cut after ${k} writes`).toBe(2);
      if (!got?.credential) {
        for (const name of await fs.list(DIR))
          expect((await fs.readFile(`${DIR}/${name}`))!.toString()).not.toContain("PRIVATE KEY");
      }
      if (done) {
        expect(got?.credential).toBeUndefined();
        break;
      }
    }
  });
});

describe("IdentityStore wipe after corruption", () => {
  it("wipes from prev when the main file is corrupt, and the corrupt copy of the key goes too", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(signedIn(1));
    await store.save(signedIn(2, pairs[1]));
    await fs.writeFileAtomic(MAIN, (await fs.readFile(MAIN))!.subarray(0, 2000), 0o600);
    await store.wipeCredential();
    expect(await fs.list(DIR)).toEqual(["identity.json"]);
    const got = await store.load();
    expect(got).toMatchObject({ lastGoodTime: 1, deviceId: base(0).deviceId });
    expect(got?.credential).toBeUndefined();
    expect((await fs.readFile(MAIN))!.toString()).not.toContain("PRIVATE KEY");
  });
});
