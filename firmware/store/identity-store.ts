/**
 * The phone's identity in flash: one versioned record (device ids, trusted roots, the issued
 * certificate and its private key, resumable sign-in progress, registrars), kept for months
 * through power cuts at any moment.
 *
 * On disk (directory `dir`, mode 0700; files 0600 because they hold the private key):
 *   identity.json            the current generation
 *   identity.prev.json       the previous good generation — or, when the previous one held no
 *                            certificate (a sign-in's last step), a second copy of the current
 *   identity.corrupt-<n>.json  a generation that failed its integrity check, kept for diagnosis
 *   identity.*.tmp-<rand>    debris of a write cut short; removed at load
 *
 * Each file is an envelope `{format, generation, sha256, record}` where sha256 is taken over
 * the canonical JSON (sorted keys, no whitespace) of `{generation, record}`. A file that does
 * not parse or whose digest does not match is corrupt and is never copied over a good one.
 *
 * One bad file is survived without a new sign-in. The invariant: while the newest verified
 * generation holds a credential (certificate and key), the other of the two files holds a
 * verified generation with a credential too (the same one, or the one before it). So a
 * truncated, bit-flipped or deleted identity.json or identity.prev.json still leaves a
 * certificate with its key to register with.
 *
 * save(): (0) if identity.json verifies, is the newest and already holds this very record,
 * write nothing; otherwise (1) if identity.json verifies, copy it atomically to
 * identity.prev.json; (2) write the new record atomically to identity.json with generation + 1;
 * (3) "mirror": when the new record holds a credential and what (1) would have left in
 * identity.prev.json holds none (the first certificate after a sign-in's key/CSR steps, or the
 * first save of an empty store), step (1) is skipped and the new bytes go to identity.prev.json
 * as well, after identity.json. A power cut during (1) leaves identity.json intact; during (2)
 * rename() leaves identity.json old or new and identity.prev.json holds the old one; during (3)
 * identity.json holds the new record and load() completes the mirror. load() returns the
 * verified generation with the highest number, so whatever is cut short, the phone boots with
 * the last or the new record.
 *
 * load() also repairs, logging a warning for each: debris is removed; a corrupt generation is
 * moved aside; when the invariant above does not hold (a file was damaged or deleted, or a
 * mirror was cut short) the newest verified generation is copied over the missing, corrupt or
 * certificate-less other file; identity files (and the directory) found with other permission
 * bits than 0600 (0700), e.g. 0644 after a copy by hand, are set back.
 *
 * Nothing usable left — generations (or moved-aside corrupt ones) exist and none verifies —
 * is StoreError "store-damaged", "The stored identity is damaged", from load(), loadOrCreate()
 * and update() alike, on every call until reset() (factory reset) or wipeCredential() (sign
 * out) clears the directory. It never silently turns into a fresh identity: that would ask for
 * a PIN as if the phone had never been signed in, and would lose the evidence.
 */
import { createHash, createPublicKey, randomBytes, X509Certificate } from "node:crypto";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { type FileSystem, joinPath, TMP_MARKER } from "./file-system.ts";

export const IDENTITY_SCHEMA = 2;

export interface Credential {
  uri: string;
  certPem: string;
  keyPem: string;
  notBefore: number;
  notAfter: number;
  serial?: string;
}

export type SignInStage = "key-generated" | "ticket-obtained" | "csr-sent";

export interface SignInProgress {
  stage: SignInStage;
  keyPem?: string;
  publicKeyPem?: string;
  uri?: string;
  startedAt: number;
}

export interface Registrars {
  primary?: string;
  backup?: string;
  lastAddresses?: string[];
  fromDhcp?: string;
  updatedAt?: number;
}

export interface IdentityRecord {
  schema: number;
  /** UUID, stable forever (GetAndPublishCert DeviceId, RST Context). */
  deviceId: string;
  /** 10 lower-case hex digits, stable (From ;epid=). */
  epid: string;
  /** UUID for +sip.instance. */
  instanceId: string;
  certProvUrl?: string;
  /** PEM. */
  trustedRoots: string[];
  credential?: Credential;
  /** Resumable sign-in progress. */
  signIn?: SignInProgress;
  registrars: Registrars;
  /** Epoch ms last known to be right, for a board with no RTC. */
  lastGoodTime?: number;
}

/**
 * Schema 1 (firmware 0.1, before registrar failover): no `instanceId` — the +sip.instance
 * was derived from deviceId — and a single `registrar` string ("host:port") instead of the
 * `registrars` block. Everything else had today's shape.
 */
export interface IdentityRecordV1 {
  schema: 1;
  deviceId: string;
  epid: string;
  certProvUrl?: string;
  trustedRoots: string[];
  credential?: Credential;
  signIn?: SignInProgress;
  registrar?: string;
  lastGoodTime?: number;
}

/** Failures of the flash store; `code` is one of the constants below. */
export class StoreError extends HandsetError {}

/** Identity files exist and none verifies: "The stored identity is damaged" (never "no identity yet"). */
export const STORE_DAMAGED = "store-damaged";
/** @deprecated the old name of STORE_DAMAGED (its code is "store-damaged" now). */
export const STORE_CORRUPT = STORE_DAMAGED;
export const STORE_DAMAGED_MESSAGE = "The stored identity is damaged";
export const STORE_INVALID = "store-invalid";
export const STORE_TOO_NEW = "store-too-new";
export const CERT_KEY_MISMATCH = "cert-key-mismatch";

const FORMAT = "handset.identity";
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
const MAIN = "identity.json";
const PREV = "identity.prev.json";
const CORRUPT = /^identity\.corrupt-(\d+)\.json$/;
const KEEP_CORRUPT = 3;

interface Envelope {
  format: string;
  generation: number;
  sha256: string;
  record: unknown;
}

/** What one generation file holds, as load() sees it (holds secrets: the record and its bytes). */
export type GenerationState =
  | { file: string; status: "missing" }
  | { file: string; status: "corrupt"; reason: string }
  | { file: string; status: "too-new"; generation: number; schema: number }
  | { file: string; status: "ok"; generation: number; record: IdentityRecord; bytes: Buffer };

/**
 * The store's health, for diagnostics (`handset store show`, the phone's screens, MQTT):
 * - "empty": factory state, no identity file at all;
 * - "ok": a usable generation, and if it holds a credential, a second file holds one too;
 * - "degraded": usable, but one bad file away from "damaged" (the second copy is missing or
 *   corrupt); the next load() repairs it;
 * - "damaged": nothing usable; load() throws store-damaged until reset();
 * - "too-new": only generations written by newer firmware.
 */
export type StoreHealth = "empty" | "ok" | "degraded" | "damaged" | "too-new";

/** One file of the store directory, as describe() reports it: never a key or a PEM body. */
export interface StoreFileDescription {
  name: string;
  /** current = identity.json, previous = identity.prev.json, quarantined = identity.corrupt-<n>.json. */
  role: "current" | "previous" | "quarantined" | "debris" | "other";
  bytes: number;
  /** Permission bits as octal text ("0600"); modeOk is false when load() would set them back. */
  mode?: string;
  modeOk?: boolean;
  /** For current and previous: what the file holds. */
  status?: "ok" | "corrupt" | "too-new";
  generation?: number;
  /** Why a file is corrupt. */
  reason?: string;
  hasCredential?: boolean;
}

/** A secret-free picture of the store (IdentityStore.describe()). */
export interface StoreDescription {
  dir: string;
  health: StoreHealth;
  /** The file load() would return, its generation, and describeIdentity() of its record. */
  current?: { file: string; generation: number; identity: Record<string, unknown> };
  files: StoreFileDescription[];
}

// ─── canonical form and integrity ────────────────────────────────────────────────────────

/** JSON with object keys sorted and undefined members dropped: the bytes that are hashed. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  const obj = value as Record<string, unknown>;
  const parts = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`);
  return `{${parts.join(",")}}`;
}

function digest(generation: number, record: unknown): string {
  return createHash("sha256").update(canonicalJson({ generation, record })).digest("hex");
}

export function encodeEnvelope(generation: number, record: unknown): Buffer {
  const env: Envelope = { format: FORMAT, generation, sha256: digest(generation, record), record };
  return Buffer.from(`${JSON.stringify(env, null, 2)}\n`);
}

/** Parses and verifies one file's bytes; migrates the record to the current schema. */
export function decodeEnvelope(file: string, bytes: Buffer | undefined): GenerationState {
  if (bytes === undefined) return { file, status: "missing" };
  const corrupt = (reason: string): GenerationState => ({ file, status: "corrupt", reason });
  if (bytes.length === 0) return corrupt("empty");
  let env: Envelope;
  try {
    env = JSON.parse(bytes.toString("utf8")) as Envelope;
  } catch {
    return corrupt("not JSON (truncated or damaged)");
  }
  if (!isObject(env) || env.format !== FORMAT) return corrupt("not an identity envelope");
  if (!Number.isSafeInteger(env.generation) || env.generation < 1) return corrupt("bad generation");
  if (typeof env.sha256 !== "string" || env.sha256 !== digest(env.generation, env.record))
    return corrupt("SHA-256 mismatch");
  const schema = isObject(env.record) ? env.record["schema"] : undefined;
  if (typeof schema === "number" && schema > IDENTITY_SCHEMA)
    return { file, status: "too-new", generation: env.generation, schema };
  try {
    const record = migrate(env.record);
    validate(record);
    return { file, status: "ok", generation: env.generation, record, bytes };
  } catch (err) {
    // The digest matched, so we wrote this: a record we cannot read back is still unusable.
    return corrupt(`verified but unreadable: ${err instanceof Error ? err.message : String(err)}`);
  }
}

// ─── schema: migration and validation ────────────────────────────────────────────────────

/** Brings a stored record of any known schema to IDENTITY_SCHEMA (pure). */
export function migrate(stored: unknown): IdentityRecord {
  if (!isObject(stored)) throw new StoreError(STORE_INVALID, "identity record is not an object");
  let r = stored as Record<string, unknown>;
  if (r["schema"] === 1)
    r = migrateV1(r as unknown as IdentityRecordV1) as unknown as Record<string, unknown>;
  if (r["schema"] !== IDENTITY_SCHEMA)
    throw new StoreError(STORE_INVALID, `unknown identity schema ${String(r["schema"])}`);
  return r as unknown as IdentityRecord;
}

function migrateV1(v1: IdentityRecordV1): IdentityRecord {
  const { registrar, schema: _schema, ...rest } = v1;
  return {
    ...rest,
    schema: 2,
    // v1 announced deviceId as its +sip.instance; keep it so the registrar sees the same instance.
    instanceId: v1.deviceId,
    registrars: registrar ? { primary: registrar } : {},
  };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const EPID = /^[0-9a-f]{10}$/;
const STAGES: readonly string[] = ["key-generated", "ticket-obtained", "csr-sent"];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Checks the record's shape and invariants; throws StoreError (store-invalid, cert-key-mismatch). */
export function validate(r: IdentityRecord): void {
  const bad = (what: string): never => {
    throw new StoreError(STORE_INVALID, `identity record: ${what}`);
  };
  const str = (v: unknown) => typeof v === "string";
  const optStr = (v: unknown) => v === undefined || str(v);
  const num = (v: unknown) => typeof v === "number" && Number.isFinite(v);
  const optNum = (v: unknown) => v === undefined || num(v);
  if (!isObject(r)) bad("not an object");
  if (r.schema !== IDENTITY_SCHEMA) bad(`schema ${String(r.schema)}, expected ${IDENTITY_SCHEMA}`);
  if (!str(r.deviceId) || !UUID.test(r.deviceId)) bad("deviceId is not a lower-case UUID");
  if (!str(r.epid) || !EPID.test(r.epid)) bad("epid is not 10 lower-case hex digits");
  if (!str(r.instanceId) || !UUID.test(r.instanceId)) bad("instanceId is not a lower-case UUID");
  if (!optStr(r.certProvUrl)) bad("certProvUrl");
  if (!Array.isArray(r.trustedRoots) || !r.trustedRoots.every(str)) bad("trustedRoots must be PEM strings");
  if (!optNum(r.lastGoodTime)) bad("lastGoodTime");
  const g = r.registrars;
  if (!isObject(g)) bad("registrars missing");
  if (!optStr(g.primary) || !optStr(g.backup) || !optStr(g.fromDhcp) || !optNum(g.updatedAt))
    bad("registrars");
  if (g.lastAddresses !== undefined && !(Array.isArray(g.lastAddresses) && g.lastAddresses.every(str)))
    bad("registrars.lastAddresses");
  const s = r.signIn;
  if (s !== undefined) {
    if (!isObject(s) || !STAGES.includes(s.stage as string)) bad("signIn.stage");
    if (!optStr(s.keyPem) || !optStr(s.publicKeyPem) || !optStr(s.uri) || !num(s.startedAt)) bad("signIn");
    if (s.keyPem && s.publicKeyPem && !sameKey(s.publicKeyPem, s.keyPem))
      throw new StoreError(CERT_KEY_MISMATCH, "signIn.publicKeyPem does not belong to signIn.keyPem");
  }
  const c = r.credential;
  if (c !== undefined) {
    if (!isObject(c)) bad("credential");
    if (!str(c.certPem) || !c.certPem || !str(c.keyPem) || !c.keyPem)
      bad("credential needs both certPem and keyPem");
    if (!str(c.uri) || !num(c.notBefore) || !num(c.notAfter) || !optStr(c.serial)) bad("credential");
    const certKey = keyOf(
      () => new X509Certificate(c.certPem).publicKey,
      "credential.certPem is not a certificate",
    );
    const ownKey = keyOf(() => createPublicKey(c.keyPem), "credential.keyPem is not a private key");
    if (certKey !== ownKey)
      throw new StoreError(CERT_KEY_MISMATCH, "the certificate's public key does not match the private key");
  }
}

function keyOf(parse: () => ReturnType<typeof createPublicKey>, what: string): string {
  try {
    return spki(parse());
  } catch {
    throw new StoreError(STORE_INVALID, `identity record: ${what}`);
  }
}

function spki(key: ReturnType<typeof createPublicKey>): string {
  return key.export({ type: "spki", format: "der" }).toString("base64");
}

function sameKey(publicPem: string, privatePem: string): boolean {
  try {
    return spki(createPublicKey(publicPem)) === spki(createPublicKey(privatePem));
  } catch {
    throw new StoreError(STORE_INVALID, "signIn keys do not parse");
  }
}

/** Whether a verified file's bytes hold exactly `record` (canonical JSON of the stored record). */
function sameStored(bytes: Buffer, record: IdentityRecord): boolean {
  try {
    return canonicalJson((JSON.parse(bytes.toString("utf8")) as Envelope).record) === canonicalJson(record);
  } catch {
    return false;
  }
}

// ─── redaction ───────────────────────────────────────────────────────────────────────────

/** A log-safe summary: no private key, no PEM bodies (certificates appear as fingerprints). */
export function describeIdentity(r: IdentityRecord): Record<string, unknown> {
  const fingerprint = (pem: string): string => {
    try {
      return new X509Certificate(pem).fingerprint256;
    } catch {
      return "unparsable";
    }
  };
  const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString());
  return {
    schema: r.schema,
    deviceId: r.deviceId,
    epid: r.epid,
    instanceId: r.instanceId,
    certProvUrl: r.certProvUrl,
    trustedRoots: r.trustedRoots.map(fingerprint),
    credential: r.credential && {
      uri: r.credential.uri,
      serial: r.credential.serial,
      notBefore: iso(r.credential.notBefore),
      notAfter: iso(r.credential.notAfter),
      certSha256: fingerprint(r.credential.certPem),
    },
    signIn: r.signIn && {
      stage: r.signIn.stage,
      uri: r.signIn.uri,
      startedAt: iso(r.signIn.startedAt),
      hasKey: r.signIn.keyPem !== undefined,
    },
    registrars: r.registrars,
    lastGoodTime: iso(r.lastGoodTime),
  };
}

// ─── the store ───────────────────────────────────────────────────────────────────────────

function uuid4(random: Random): string {
  const b = Buffer.from(random.bytes(16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const systemRandom: Random = {
  bytes: (n) => randomBytes(n),
  unit: () => randomBytes(6).readUIntBE(0, 6) / 2 ** 48,
};

export interface IdentityStoreOptions {
  /** For new ids on first boot (default: node:crypto). */
  random?: Random;
  logger?: Logger;
}

/**
 * One writer per directory (one firmware process). Within the process every operation is
 * serialised, so no two writes interleave and load() never sees its own half-done save.
 */
export class IdentityStore {
  private readonly random: Random;
  private readonly logger: Logger | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private lastGeneration = 0;

  constructor(
    private readonly fs: FileSystem,
    private readonly dir: string,
    opts: IdentityStoreOptions = {},
  ) {
    this.random = opts.random ?? systemRandom;
    this.logger = opts.logger;
  }

  /**
   * The newest generation that verifies, migrated to IDENTITY_SCHEMA; undefined in factory
   * state. Repairs what it finds (see the file comment): cleans debris of cut-short writes,
   * moves corrupt generations aside as identity.corrupt-<n>.json, restores the second copy of
   * a credential, sets file modes back to 0600. Throws StoreError "store-damaged" ("The stored
   * identity is damaged") when identity files exist and none verifies — again on every call,
   * until reset() or wipeCredential(); "store-too-new" when only newer firmware's are left.
   */
  load(): Promise<IdentityRecord | undefined> {
    return this.serial(() => this.loadUnlocked());
  }

  /** load(), or on first boot (factory state) a fresh identity, saved. Throws as load() does. */
  loadOrCreate(): Promise<IdentityRecord> {
    return this.serial(async () => {
      const found = await this.loadNewest();
      if (found) {
        // Persist a migration now, so a later downgrade-free boot needs no migration.
        if (found.stale) await this.saveUnlocked(found.record);
        return found.record;
      }
      const record = this.fresh();
      await this.saveUnlocked(record);
      this.logger?.info("new identity", describeIdentity(record));
      return record;
    });
  }

  /** Validates (StoreError store-invalid / cert-key-mismatch), then writes atomically, 0600. */
  save(record: IdentityRecord): Promise<void> {
    return this.serial(() => this.saveUnlocked(record));
  }

  /**
   * Read-modify-write of the current record (created on first boot), serialised. When `fn`
   * returns the record unchanged, nothing is written (see saveUnlocked). Throws store-damaged
   * as load() does (never a fresh record over a damaged store).
   */
  update(fn: (r: IdentityRecord) => IdentityRecord): Promise<IdentityRecord> {
    return this.serial(async () => {
      const current = (await this.loadNewest())?.record ?? this.fresh();
      const next = fn(structuredClone(current));
      await this.saveUnlocked(next);
      return next;
    });
  }

  /**
   * Sign out: the record keeps its ids, roots and registrars but loses credential and signIn,
   * and no other file in the directory keeps a copy of the key. Order: remove the previous
   * generation, moved-aside corrupt files and debris first, then replace identity.json; a cut
   * in between leaves the phone signed in (sign-out not yet done), never a key in a stale file
   * behind a signed-out record. (Exception: if identity.json was corrupt, the wiped record is
   * written first, so a cut right then can leave the old prev copy until the next wipe.)
   * (Unlinked blocks may survive on the card's flash itself; wear levelling defeats overwriting.)
   * On a damaged store (nothing verifies) it removes the moved-aside files, which may hold a
   * key, and leaves factory state: signing out is one way out of "store-damaged".
   */
  wipeCredential(): Promise<void> {
    return this.serial(async () => {
      let current: IdentityRecord | undefined;
      try {
        current = (await this.loadNewest())?.record;
      } catch (err) {
        if (!(err instanceof StoreError && err.code === STORE_DAMAGED)) throw err;
      }
      const wiped = current && (({ credential: _c, signIn: _s, ...rest }) => rest)(current);
      // identity.json missing (e.g. it was corrupt and moved aside): write it first, so that no
      // cut can leave the directory without any identity.
      const mainOk = (await this.inspect())[0]?.status === "ok";
      if (wiped && !mainOk) await this.writeGeneration(MAIN, wiped);
      for (const name of await this.fs.list(this.dir))
        if (name === PREV || CORRUPT.test(name) || this.isDebris(name))
          await this.fs.remove(joinPath(this.dir, name));
      if (wiped && mainOk) await this.writeGeneration(MAIN, wiped);
    });
  }

  /**
   * What each generation file holds (tests); does not clean anything. The states carry the
   * record and its bytes, secrets included: for anything shown to people use describe().
   */
  async inspect(): Promise<GenerationState[]> {
    return Promise.all(
      [MAIN, PREV].map(async (f) => decodeEnvelope(f, await this.fs.readFile(joinPath(this.dir, f)))),
    );
  }

  /**
   * Read-only diagnostics without secrets (no key, no PEM body; certificates as fingerprints):
   * the store's health, the generation load() would use, and every file of the directory with
   * its role, size, mode and integrity. Changes nothing (no cleanup, no repair), so it can be
   * shown before anything else touches a suspect store; it does not throw for damage.
   */
  describe(): Promise<StoreDescription> {
    return this.serial(async () => {
      const names = (await this.fs.list(this.dir)).sort();
      const states = new Map((await this.inspect()).map((s) => [s.file, s]));
      const files: StoreFileDescription[] = [];
      for (const name of names) {
        const path = joinPath(this.dir, name);
        const role: StoreFileDescription["role"] =
          name === MAIN
            ? "current"
            : name === PREV
              ? "previous"
              : CORRUPT.test(name)
                ? "quarantined"
                : this.isDebris(name)
                  ? "debris"
                  : "other";
        const mode = await this.fs.mode(path);
        const f: StoreFileDescription = {
          name,
          role,
          bytes: (await this.fs.readFile(path))?.length ?? 0,
          ...(mode !== undefined
            ? {
                mode: `0${mode.toString(8).padStart(3, "0")}`,
                modeOk: role === "other" || mode === FILE_MODE,
              }
            : {}),
        };
        const s = states.get(name);
        if (s && s.status !== "missing") {
          f.status = s.status;
          if (s.status === "corrupt") f.reason = s.reason;
          else f.generation = s.generation;
          if (s.status === "ok") f.hasCredential = s.record.credential !== undefined;
        }
        files.push(f);
      }
      const ok = [...states.values()].filter((s) => s.status === "ok");
      const best = ok.reduce<(typeof ok)[number] | undefined>(
        (a, b) => (!a || b.generation > a.generation ? b : a),
        undefined,
      );
      let health: StoreHealth;
      if (best) {
        const other = states.get(best.file === MAIN ? PREV : MAIN);
        const redundant =
          !best.record.credential ||
          other?.status === "too-new" ||
          (other?.status === "ok" && other.record.credential !== undefined);
        health = redundant ? "ok" : "degraded";
      } else if ([...states.values()].some((s) => s.status === "too-new")) health = "too-new";
      else if (
        [...states.values()].some((s) => s.status === "corrupt") ||
        files.some((f) => f.role === "quarantined")
      )
        health = "damaged";
      else health = "empty";
      return {
        dir: this.dir,
        health,
        ...(best
          ? {
              current: {
                file: best.file,
                generation: best.generation,
                identity: describeIdentity(best.record),
              },
            }
          : {}),
        files,
      };
    });
  }

  /**
   * Factory reset: removes every identity file of the directory (current, previous,
   * moved-aside corrupt copies, debris; other files stay), so that the next loadOrCreate()
   * creates a fresh identity (new deviceId) and the phone asks to sign in. identity.json goes
   * last, so a cut midway leaves the old identity (reset not yet done), never half of one.
   * The directory itself stays. (As with wipeCredential, the card's flash may keep unlinked blocks.)
   */
  reset(): Promise<void> {
    return this.serial(async () => {
      const names = (await this.fs.list(this.dir)).filter((n) => n.startsWith("identity."));
      const order = (n: string) => (n === MAIN ? 2 : n === PREV ? 1 : 0);
      for (const name of names.sort((a, b) => order(a) - order(b)))
        await this.fs.remove(joinPath(this.dir, name));
      this.lastGeneration = 0;
      this.logger?.warn("identity store reset to factory state", { removed: names });
    });
  }

  // ─── internals (callers hold the queue) ──────────────────────────────────────────────

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const run = this.queue.then(op, op);
    this.queue = run.catch(() => {});
    return run;
  }

  private fresh(): IdentityRecord {
    return {
      schema: IDENTITY_SCHEMA,
      deviceId: uuid4(this.random),
      epid: Buffer.from(this.random.bytes(5)).toString("hex"),
      instanceId: uuid4(this.random),
      trustedRoots: [],
      registrars: {},
    };
  }

  private isDebris(name: string): boolean {
    return name.startsWith("identity.") && name.includes(TMP_MARKER);
  }

  private async loadUnlocked(): Promise<IdentityRecord | undefined> {
    return (await this.loadNewest())?.record;
  }

  private async loadNewest(): Promise<{ record: IdentityRecord; stale: boolean } | undefined> {
    await this.fs.mkdirp(this.dir, DIR_MODE);
    const names: string[] = [];
    for (const name of await this.fs.list(this.dir))
      if (this.isDebris(name)) await this.fs.remove(joinPath(this.dir, name));
      else names.push(name);
    await this.repairModes(names);

    const states = await this.inspect();
    let best: Extract<GenerationState, { status: "ok" }> | undefined;
    let tooNew = false;
    let corrupt = 0;
    for (const s of states) {
      if (s.status === "ok") {
        this.lastGeneration = Math.max(this.lastGeneration, s.generation);
        if (!best || s.generation > best.generation) best = s;
      } else if (s.status === "too-new") {
        tooNew = true;
        this.lastGeneration = Math.max(this.lastGeneration, s.generation);
      } else if (s.status === "corrupt") {
        corrupt++;
        await this.quarantine(s.file, s.reason, names);
      }
    }
    if (best) {
      await this.restoreSecondCopy(best, states);
      const stored = JSON.parse(best.bytes.toString("utf8")) as Envelope;
      return {
        record: best.record,
        stale: (stored.record as { schema?: unknown }).schema !== IDENTITY_SCHEMA,
      };
    }
    if (tooNew) throw new StoreError(STORE_TOO_NEW, "identity was written by newer firmware");
    const aside = names.filter((n) => CORRUPT.test(n));
    if (corrupt > 0 || aside.length > 0) {
      this.logger?.error("no stored identity generation verifies", {
        code: STORE_DAMAGED,
        corrupt: states.filter((s) => s.status === "corrupt").map((s) => s.file),
        aside,
      });
      throw new StoreError(STORE_DAMAGED, STORE_DAMAGED_MESSAGE);
    }
    return undefined;
  }

  /**
   * Keeps the invariant of the file comment: when `best` holds a credential and the other file
   * holds no verified generation with one (missing, corrupt and moved aside, or a sign-in step
   * without the certificate), `best`'s bytes are copied there. A newer firmware's file is left
   * alone. A failed copy is logged, not thrown: the record itself is fine.
   */
  private async restoreSecondCopy(
    best: Extract<GenerationState, { status: "ok" }>,
    states: GenerationState[],
  ): Promise<void> {
    if (!best.record.credential) return;
    const target = best.file === MAIN ? PREV : MAIN;
    const other = states.find((s) => s.file === target);
    if (other?.status === "too-new") return;
    if (other?.status === "ok" && other.record.credential) return;
    try {
      await this.fs.writeFileAtomic(joinPath(this.dir, target), best.bytes, FILE_MODE);
      this.logger?.warn("second copy of the identity restored", {
        file: target,
        from: best.file,
        generation: best.generation,
        was: other?.status ?? "missing",
      });
    } catch (err) {
      this.logger?.warn("could not restore the second copy of the identity", {
        file: target,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /**
   * Identity files hold the private key: any found with other bits than 0600 (e.g. 0644 after a
   * copy by hand, or a restore from a backup) is set back, and the directory to 0700, each with
   * a warning. A failure is logged, not thrown (a read-only medium still loads).
   */
  private async repairModes(names: string[]): Promise<void> {
    const targets: Array<[path: string, want: number]> = [[this.dir, DIR_MODE]];
    for (const name of names)
      if (name.startsWith("identity.")) targets.push([joinPath(this.dir, name), FILE_MODE]);
    for (const [path, want] of targets) {
      try {
        const mode = await this.fs.mode(path);
        if (mode === undefined || mode === want) continue;
        await this.fs.chmod(path, want);
        this.logger?.warn("store file mode set back", {
          file: path === this.dir ? "." : path.slice(path.lastIndexOf("/") + 1),
          was: `0${mode.toString(8).padStart(3, "0")}`,
          now: `0${want.toString(8)}`,
        });
      } catch (err) {
        this.logger?.warn("could not set a store file's mode", {
          path,
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }
  }

  /** Moves a corrupt generation aside (never deleting evidence silently) and keeps the last few. */
  private async quarantine(file: string, reason: string, names: string[]): Promise<void> {
    const src = joinPath(this.dir, file);
    const bytes = await this.fs.readFile(src);
    const taken = names
      .map((n) => CORRUPT.exec(n)?.[1])
      .filter((n): n is string => n !== undefined)
      .map(Number)
      .sort((a, b) => a - b);
    const n = (taken.at(-1) ?? 0) + 1;
    const aside = `identity.corrupt-${n}.json`;
    if (bytes !== undefined) await this.fs.writeFileAtomic(joinPath(this.dir, aside), bytes, FILE_MODE);
    await this.fs.remove(src);
    names.push(aside);
    for (const old of taken.slice(0, Math.max(0, taken.length + 1 - KEEP_CORRUPT)))
      await this.fs.remove(joinPath(this.dir, `identity.corrupt-${old}.json`));
    this.logger?.warn("corrupt identity generation moved aside", { file, aside, reason });
  }

  /**
   * Writes only when what flash holds would change: if identity.json verifies, is the newest
   * generation and its stored record (as written, before any migration) is canonically equal
   * to `record`, nothing is written. A registration or refresh that changes nothing therefore
   * costs no flash wear and no rewrite of the file holding the private key.
   */
  private async saveUnlocked(record: IdentityRecord): Promise<void> {
    validate(record);
    await this.fs.mkdirp(this.dir, DIR_MODE);
    const [main, prev] = await this.inspect();
    for (const s of [main, prev])
      if (s && (s.status === "ok" || s.status === "too-new"))
        this.lastGeneration = Math.max(this.lastGeneration, s.generation);
    if (main?.status === "ok" && main.generation === this.lastGeneration && sameStored(main.bytes, record))
      return;
    // What identity.prev.json holds after this save without a mirror: the rotated current, or
    // (identity.json missing or corrupt) what it holds now.
    const kept = main?.status === "ok" ? main : prev;
    const mirror =
      record.credential !== undefined &&
      prev?.status !== "too-new" &&
      !(kept?.status === "ok" && kept.record.credential !== undefined);
    if (main?.status === "ok") {
      // Keep the last good generation before replacing it (a mirror replaces it below instead).
      if (!mirror) await this.fs.writeFileAtomic(joinPath(this.dir, PREV), main.bytes, FILE_MODE);
    } else if (main?.status === "corrupt") {
      await this.quarantine(MAIN, main.reason, await this.fs.list(this.dir));
    }
    const bytes = await this.writeGeneration(MAIN, record);
    // The only credential would otherwise live in one file: keep a second copy (see file comment).
    if (mirror) await this.fs.writeFileAtomic(joinPath(this.dir, PREV), bytes, FILE_MODE);
  }

  private async writeGeneration(file: string, record: unknown): Promise<Buffer> {
    const generation = this.lastGeneration + 1;
    const bytes = encodeEnvelope(generation, record);
    await this.fs.writeFileAtomic(joinPath(this.dir, file), bytes, FILE_MODE);
    this.lastGeneration = generation;
    return bytes;
  }
}
