/**
 * Issue 14, the store's side: a sign-in's steps never leave the certificate in one file only;
 * any one damaged file (truncated, a byte flipped, the key removed, deleted) still loads the
 * certificate and key and is repaired; nothing usable left is "store-damaged" ("The stored
 * identity is damaged") on every load until a sign-out or factory reset; files found at 0644
 * are set back to 0600 with a warning; describe() shows all of it without a secret.
 */
import { createPublicKey } from "node:crypto";
import { chmod, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import {
  IDENTITY_SCHEMA,
  type IdentityRecord,
  IdentityStore,
  StoreError,
} from "../../firmware/store/identity-store.ts";
import { makePairs, type TestPair } from "../store/fixtures.ts";
import { MemoryFileSystem, PowerCut } from "../store/memory-file-system.ts";

let pair: TestPair;
let caPem: string;

beforeAll(async () => {
  const made = await makePairs(1);
  pair = made.pairs[0]!;
  caPem = made.caPem;
}, 30_000);

const DIR = "/flash/identity";
const MAIN = `${DIR}/identity.json`;
const PREV = `${DIR}/identity.prev.json`;

function fresh(): IdentityRecord {
  return {
    schema: IDENTITY_SCHEMA,
    deviceId: "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b",
    epid: "0a1b2c3d4e",
    instanceId: "11111111-2222-4333-8444-555555555555",
    trustedRoots: [],
    registrars: {},
  };
}

/** The saves of a PIN sign-in (resumable-sign-in.ts): fresh ids, key, CSR sent, certificate. */
async function signInSteps(store: IdentityStore): Promise<IdentityRecord> {
  const publicKeyPem = String(createPublicKey(pair.keyPem).export({ type: "spki", format: "pem" }));
  await store.save(fresh());
  const signIn = {
    stage: "key-generated" as const,
    keyPem: pair.keyPem,
    publicKeyPem,
    uri: pair.uri,
    startedAt: 1,
  };
  await store.save({ ...fresh(), signIn });
  await store.save({ ...fresh(), signIn: { ...signIn, stage: "csr-sent" } });
  return signedIn();
}

function signedIn(): IdentityRecord {
  const { uri, certPem, keyPem, notBefore, notAfter, serial } = pair;
  return {
    ...fresh(),
    certProvUrl: "https://pool.lab.test/CertProv/CertProvisioningService.svc",
    trustedRoots: [caPem],
    credential: { uri, certPem, keyPem, notBefore, notAfter, serial },
  };
}

const DAMAGES: Array<[string, (b: Buffer) => Buffer | undefined]> = [
  ["truncated", (b) => b.subarray(0, b.length >> 1)],
  [
    "one byte flipped",
    (b) => {
      const c = Buffer.from(b);
      const at = c.indexOf("PRIVATE KEY-----") + 300;
      c[at] = c[at]! ^ 0x01;
      return c;
    },
  ],
  [
    "key removed",
    (b) => {
      const env = JSON.parse(b.toString());
      delete env.record.credential.keyPem;
      return Buffer.from(JSON.stringify(env, null, 2));
    },
  ],
  ["deleted", () => undefined],
];

function damage(fs: MemoryFileSystem, path: string, how: (b: Buffer) => Buffer | undefined): void {
  const e = fs.files.get(path);
  if (!e) throw new Error(`${path} missing`);
  const spoiled = how(e.data);
  if (spoiled) fs.files.set(path, { data: spoiled, mode: e.mode });
  else fs.files.delete(path);
}

async function rejection(p: Promise<unknown>): Promise<StoreError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreError);
  return err as StoreError;
}

describe("a sign-in never leaves the certificate in one file only", () => {
  it("after the certificate step both files hold it (the csr-sent record is no fallback)", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(await signInSteps(store));
    for (const s of await store.inspect()) {
      expect(s.status, s.file).toBe("ok");
      if (s.status === "ok") expect(s.record.credential?.certPem, s.file).toBe(pair.certPem);
    }
  });

  it.each(["identity.json", "identity.prev.json"])(
    "%s damaged in every way: the credential still loads, and is copied back",
    async (file) => {
      for (const [how, spoil] of DAMAGES) {
        const fs = new MemoryFileSystem();
        const store = new IdentityStore(fs, DIR);
        const rec = await signInSteps(store);
        await store.save(rec);
        damage(fs, `${DIR}/${file}`, spoil);

        const rebooted = new IdentityStore(fs, DIR);
        expect(await rebooted.loadOrCreate(), `${file} ${how}`).toEqual(rec);
        const states = await rebooted.inspect();
        expect(
          states.map((s) => s.status),
          `${file} ${how}`,
        ).toEqual(["ok", "ok"]);
        for (const s of states) if (s.status === "ok") expect(s.record).toEqual(rec);
        // A second bad file, now, is survived too.
        damage(fs, MAIN, DAMAGES[0]![1]);
        expect(await new IdentityStore(fs, DIR).load(), `${file} ${how}, then main`).toEqual(rec);
      }
    },
  );

  it("a power cut at every step of the certificate save: old record or the certificate, and then two copies", async () => {
    for (let k = 0; ; k++) {
      const fs = new MemoryFileSystem();
      const store = new IdentityStore(fs, DIR);
      const rec = await signInSteps(store);
      fs.crashAfter(k);
      const done = await store.save(rec).then(
        () => true,
        (e: unknown) => (e instanceof PowerCut ? false : Promise.reject(e)),
      );
      fs.restore();
      const got = await new IdentityStore(fs, DIR).load();
      expect(got?.signIn?.stage ?? "credential", `cut after ${k}`).toMatch(/csr-sent|credential/);
      if (got?.credential) {
        // load() completed a mirror cut short: no single file holds the only certificate.
        for (const s of await store.inspect())
          expect(s.status === "ok" && s.record.credential !== undefined, `cut after ${k}: ${s.file}`).toBe(
            true,
          );
      }
      if (done) {
        expect(got).toEqual(rec);
        break;
      }
    }
  });

  it("a renewal's save keeps the previous certificate as the previous generation (no extra copy)", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(await signInSteps(store));
    const writes = fs.log.length;
    await store.save({ ...signedIn(), lastGoodTime: 5 });
    expect(fs.log.slice(writes)).toEqual(["write identity.prev.json", "write identity.json"]);
  });
});

describe("nothing usable left: store-damaged, never 'no identity yet'", () => {
  const both: Array<[string, string]> = [];
  for (const [a] of DAMAGES)
    for (const [b] of DAMAGES) if (a !== "deleted" || b !== "deleted") both.push([a, b]);

  it.each(both)("identity.json %s, identity.prev.json %s", async (howMain, howPrev) => {
    const fs = new MemoryFileSystem();
    const logs: LogRecord[] = [];
    const store = new IdentityStore(fs, DIR, { logger: createLogger((r) => logs.push(r)) });
    await store.save(await signInSteps(store));
    damage(fs, MAIN, DAMAGES.find(([h]) => h === howMain)![1]);
    damage(fs, PREV, DAMAGES.find(([h]) => h === howPrev)![1]);

    for (const attempt of [
      () => store.load(),
      () => store.loadOrCreate(),
      () => store.update((r) => r),
      () => new IdentityStore(fs, DIR).loadOrCreate(), // the next boot, too
    ]) {
      const err = await rejection(attempt());
      expect(err.code).toBe("store-damaged");
      expect(err.message).toBe("The stored identity is damaged");
    }
    // No fresh identity was written over the evidence.
    expect(fs.files.has(MAIN)).toBe(false);
    expect((await fs.list(DIR)).every((n) => n.startsWith("identity.corrupt-"))).toBe(true);
    expect(logs.some((l) => l.level === "error" && l.fields?.["code"] === "store-damaged")).toBe(true);

    const d = await store.describe();
    expect(d.health).toBe("damaged");
    expect(d.current).toBeUndefined();
    expect(JSON.stringify(d)).not.toMatch(/PRIVATE KEY|BEGIN|MII/);
  });

  it("a factory reset (reset()) or a sign-out (wipeCredential()) leads out of it, to factory state", async () => {
    for (const wayOut of ["reset", "wipeCredential"] as const) {
      const fs = new MemoryFileSystem();
      const store = new IdentityStore(fs, DIR, { random: new SeededRandom(1) });
      await store.save(await signInSteps(store));
      damage(fs, MAIN, DAMAGES[0]![1]);
      damage(fs, PREV, DAMAGES[1]![1]);
      await fs.writeFileAtomic(`${DIR}/notes.txt`, Buffer.from("not ours"), 0o644);
      expect((await rejection(store.load())).code).toBe("store-damaged");
      await store[wayOut]();
      expect(await store.load(), wayOut).toBeUndefined();
      expect(await fs.list(DIR), wayOut).toEqual(["notes.txt"]);
      const next = await store.loadOrCreate();
      expect(next.deviceId).not.toBe(fresh().deviceId);
      expect((await store.describe()).health).toBe("ok");
    }
  });

  it("without any damage evidence an empty directory is still factory state", async () => {
    const store = new IdentityStore(new MemoryFileSystem(), DIR);
    expect(await store.load()).toBeUndefined();
    expect((await store.describe()).health).toBe("empty");
  });
});

describe("store file modes", () => {
  let root: string;
  let dir: string;
  let logs: LogRecord[];
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "handset-modes-"));
    dir = join(root, "identity");
    logs = [];
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });
  const open = () => new IdentityStore(nodeFileSystem, dir, { logger: createLogger((r) => logs.push(r)) });
  const modeOf = async (name: string) => (await stat(join(dir, name))).mode & 0o777;

  it("files found at 0644 (and the directory at 0755) are set back to 0600 (0700) with a warning", async () => {
    const store = open();
    await store.save(await signInSteps(store));
    await writeFile(join(dir, "identity.corrupt-1.json"), "kept aside earlier", { mode: 0o644 });
    await writeFile(join(dir, "notes.txt"), "not ours", { mode: 0o644 });
    for (const name of ["identity.json", "identity.prev.json", "identity.corrupt-1.json"])
      await chmod(join(dir, name), 0o644);
    await chmod(dir, 0o755);

    expect((await open().load())?.credential?.serial).toBe(pair.serial);

    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    for (const name of ["identity.json", "identity.prev.json", "identity.corrupt-1.json"])
      expect(await modeOf(name), name).toBe(0o600);
    expect(await modeOf("notes.txt")).toBe(0o644); // not the store's
    const warned = logs.filter((l) => l.level === "warn" && l.message === "store file mode set back");
    expect(warned.map((l) => l.fields)).toEqual(
      expect.arrayContaining([
        { file: ".", was: "0755", now: "0700" },
        { file: "identity.json", was: "0644", now: "0600" },
        { file: "identity.prev.json", was: "0644", now: "0600" },
        { file: "identity.corrupt-1.json", was: "0644", now: "0600" },
      ]),
    );
    expect(warned).toHaveLength(4);

    // Once set back, a load changes nothing and says nothing.
    logs.length = 0;
    await open().load();
    expect(logs.filter((l) => l.level === "warn")).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual([
      "identity.corrupt-1.json",
      "identity.json",
      "identity.prev.json",
      "notes.txt",
    ]);
  });

  it("describe() names the files load() would set back, and sets nothing back itself", async () => {
    const store = open();
    await store.save(await signInSteps(store));
    await writeFile(join(dir, "notes.txt"), "not ours", { mode: 0o644 });
    await chmod(join(dir, "identity.prev.json"), 0o644);
    const d = await open().describe();
    expect(d.files.map((f) => [f.name, f.mode, f.modeOk])).toEqual([
      ["identity.json", "0600", true],
      ["identity.prev.json", "0644", false],
      ["notes.txt", "0644", true],
    ]);
    expect(await modeOf("identity.prev.json")).toBe(0o644);
  });
});

describe("describe(): health without secrets", () => {
  it("ok, degraded (one copy left, before load repairs it), too-new", async () => {
    const fs = new MemoryFileSystem();
    const store = new IdentityStore(fs, DIR);
    await store.save(await signInSteps(store));
    const ok = await store.describe();
    expect(ok).toMatchObject({
      dir: DIR,
      health: "ok",
      current: { file: "identity.json", identity: { credential: { serial: pair.serial } } },
    });
    expect(ok.files.map((f) => [f.name, f.role, f.status, f.hasCredential, f.mode])).toEqual([
      ["identity.json", "current", "ok", true, "0600"],
      ["identity.prev.json", "previous", "ok", true, "0600"],
    ]);
    expect(JSON.stringify(ok)).not.toMatch(/PRIVATE KEY|BEGIN|MII/);

    damage(fs, MAIN, DAMAGES[0]![1]);
    const degraded = await store.describe();
    expect(degraded.health).toBe("degraded");
    expect(degraded.current?.file).toBe("identity.prev.json");
    expect(degraded.files[0]).toMatchObject({ name: "identity.json", status: "corrupt" });
    expect(fs.files.get(MAIN)).toBeDefined(); // describe() repairs nothing
    await store.load();
    expect((await store.describe()).health).toBe("ok");

    const { encodeEnvelope } = await import("../../firmware/store/identity-store.ts");
    const tooNew = new MemoryFileSystem();
    await tooNew.writeFileAtomic(MAIN, encodeEnvelope(3, { ...fresh(), schema: 99 }), 0o600);
    expect((await new IdentityStore(tooNew, DIR).describe()).health).toBe("too-new");
  });
});
