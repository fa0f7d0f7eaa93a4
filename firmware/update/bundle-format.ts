/**
 * The update bundle, as bytes (pure: no I/O; the caller reads the file or the download and hands
 * the bytes in).
 *
 *   offset 0   magic "HANDSET-UPDATE\n" (15 bytes)
 *          15  u32 big-endian: length H of the header (2 … 65 536)
 *          19  header: H bytes of UTF-8 JSON (BundleHeader)
 *     19 + H   signature: 64 bytes, Ed25519 over exactly the H header bytes
 *     83 + H   the payload area: the payloads, back to back, in the header's order, to the end
 *              of the file (nothing before, between or after them)
 *
 * Format 2 (the only one this firmware writes or reads). Header: {format:2, name:"handset",
 * version, arch:"arm64"|"amd64", compatible:"handset-<arch>", chunkBytes:4194304,
 * payloads:[{name:"boot"|"system", offset, size, sha256, chunks}]}; offset counts from the start
 * of the payload area; sha256 is the whole payload's digest and chunks[i] the digest of its bytes
 * [i·chunkBytes, min((i+1)·chunkBytes, size)) — ceil(size / chunkBytes) of them, the last one
 * shorter — every digest lower-case hex. Unknown keys are refused: a field this firmware cannot
 * judge is not signed-off content it may ignore.
 *
 * The header names every payload's size and digests, so the one signature covers the whole file:
 * a verified header plus payloads whose digests match it is the bundle the key's owner made. The
 * chunk digests exist for a bundle that is streamed from a URL into a partition (it does not fit
 * the phone's data partition): each chunk is checked before it is written, so no unverified byte
 * reaches the disk; the whole-payload sha256 is checked again on the partition's read-back.
 * chunkBytes is fixed (4 MiB): a signer cannot make the installer buffer more than that.
 * A signature of 64 zero bytes is an unsigned bundle (what `create` without a key would give):
 * refused as `update-unsigned`.
 */
import { createHash } from "node:crypto";
import { HandsetError } from "../core/errors.ts";

export const BUNDLE_MAGIC = "HANDSET-UPDATE\n";
const MAGIC_BYTES = new TextEncoder().encode(BUNDLE_MAGIC);
export const SIGNATURE_BYTES = 64;
export const MAX_HEADER_BYTES = 65_536;
/** Bytes before the header: magic + length. */
export const PREAMBLE_BYTES = MAGIC_BYTES.length + 4;
/** How much of a bundle's start parseBundleHead may need: everything but the payloads. */
export const MAX_HEAD_BYTES = PREAMBLE_BYTES + MAX_HEADER_BYTES + SIGNATURE_BYTES;
export const BUNDLE_FORMAT = 2;
/** The one chunk size a bundle may use (what a streamed install holds in memory at a time). */
export const CHUNK_BYTES = 4 * 2 ** 20;
/**
 * No single payload is larger than this (1 GiB: the phone's boot partition is 160 MiB, its
 * system image ~250 MB). Bounded so that the largest header — both payloads at this size, 256
 * chunk digests each, the longest version — still fits MAX_HEADER_BYTES: about 35 KB of 64 KiB
 * (a test builds it). 2 GiB would need ~69 KB.
 */
export const MAX_PAYLOAD_BYTES = 2 ** 30;

export const ARCHES = ["arm64", "amd64"] as const;
export type Arch = (typeof ARCHES)[number];
export const PAYLOAD_NAMES = ["boot", "system"] as const;
export type PayloadName = (typeof PAYLOAD_NAMES)[number];

export interface PayloadEntry {
  name: PayloadName;
  /** From the start of the payload area. */
  offset: number;
  size: number;
  /** The whole payload's digest: lower-case hex, 64 digits. */
  sha256: string;
  /** The digest of each consecutive chunkBytes slice (the last one shorter), lower-case hex. */
  chunks: string[];
}

export interface BundleHeader {
  format: 2;
  name: "handset";
  version: string;
  arch: Arch;
  compatible: string;
  chunkBytes: number;
  payloads: PayloadEntry[];
}

export interface BundleHead {
  header: BundleHeader;
  /** The exact bytes the signature covers. */
  headerBytes: Uint8Array;
  signature: Uint8Array;
  /** File offset of the payload area. */
  dataStart: number;
  /** True when the signature is all zeros (never signed). */
  unsigned: boolean;
}

/** A payload's absolute place in the file. */
export interface PayloadRange extends PayloadEntry {
  start: number;
}

const malformed = (message: string) => new HandsetError("update-malformed", `update bundle: ${message}`);

/** A release version: semver (1.2.3, 1.2.3-rc.1, 1.2.3+build.5), at most 64 characters. */
export const VERSION_GRAMMAR =
  /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$/;

export function isValidVersion(v: unknown): v is string {
  return typeof v === "string" && v.length <= 64 && VERSION_GRAMMAR.test(v);
}

function isWhole(n: unknown, max: number): n is number {
  return typeof n === "number" && Number.isSafeInteger(n) && n >= 0 && n <= max;
}

function exactKeys(o: Record<string, unknown>, keys: readonly string[], what: string): void {
  for (const k of Object.keys(o)) if (!keys.includes(k)) throw malformed(`unknown field "${k}" in ${what}`);
  for (const k of keys) if (!Object.hasOwn(o, k)) throw malformed(`${what} has no "${k}"`);
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const HEX_DIGEST = /^[0-9a-f]{64}$/;

/** How many chunk digests a payload of `size` bytes has. */
export function chunkCount(size: number, chunkBytes: number = CHUNK_BYTES): number {
  return Math.ceil(size / chunkBytes);
}

/** The length of chunk `index` of a payload of `size` bytes (the last one is shorter). */
export function chunkLength(size: number, index: number, chunkBytes: number = CHUNK_BYTES): number {
  return Math.max(0, Math.min(chunkBytes, size - index * chunkBytes));
}

/** Validates a header object (after JSON.parse); throws update-malformed with the first fault. */
export function validateHeader(v: unknown, payloadAreaBytes?: number): BundleHeader {
  if (!isObject(v)) throw malformed("the header is not a JSON object");
  // The format first: an older or newer bundle is named as such, not as a list of odd fields.
  if (v["format"] !== BUNDLE_FORMAT)
    throw malformed(`unknown format ${JSON.stringify(v["format"])} (this firmware reads ${BUNDLE_FORMAT})`);
  exactKeys(v, ["format", "name", "version", "arch", "compatible", "chunkBytes", "payloads"], "the header");
  if (v["name"] !== "handset") throw malformed(`not a handset bundle (name ${JSON.stringify(v["name"])})`);
  if (!isValidVersion(v["version"]))
    throw malformed(`version ${JSON.stringify(v["version"])} is not MAJOR.MINOR.PATCH[-pre][+build]`);
  const arch = v["arch"];
  if (typeof arch !== "string" || !(ARCHES as readonly string[]).includes(arch))
    throw malformed(`arch ${JSON.stringify(arch)} is not one of ${ARCHES.join(", ")}`);
  if (v["compatible"] !== `handset-${arch}`)
    throw malformed(`compatible ${JSON.stringify(v["compatible"])} does not match arch (handset-${arch})`);
  if (v["chunkBytes"] !== CHUNK_BYTES)
    throw malformed(`chunkBytes ${JSON.stringify(v["chunkBytes"])} is not ${CHUNK_BYTES}`);
  const list = v["payloads"];
  if (!Array.isArray(list) || list.length !== PAYLOAD_NAMES.length)
    throw malformed(`payloads must list ${PAYLOAD_NAMES.join(" and ")}, each once`);
  const seen = new Set<string>();
  let next = 0;
  const payloads: PayloadEntry[] = list.map((p, i) => {
    if (!isObject(p)) throw malformed(`payload ${i} is not an object`);
    exactKeys(p, ["name", "offset", "size", "sha256", "chunks"], `payload ${i}`);
    const name = p["name"];
    if (typeof name !== "string" || !(PAYLOAD_NAMES as readonly string[]).includes(name))
      throw malformed(`payload ${i} has unknown name ${JSON.stringify(name)}`);
    if (seen.has(name)) throw malformed(`payload "${name}" is listed twice`);
    seen.add(name);
    const size = p["size"];
    if (!isWhole(size, MAX_PAYLOAD_BYTES) || size === 0)
      throw malformed(`payload "${name}" has a bad size ${JSON.stringify(size)} (1 … ${MAX_PAYLOAD_BYTES})`);
    if (!isWhole(p["offset"], Number.MAX_SAFE_INTEGER) || p["offset"] !== next)
      throw malformed(`payload "${name}" does not start where the one before it ends (offset ${next})`);
    if (typeof p["sha256"] !== "string" || !HEX_DIGEST.test(p["sha256"]))
      throw malformed(`payload "${name}" has no lower-case hex sha256`);
    const chunks = p["chunks"];
    const want = chunkCount(size);
    if (!Array.isArray(chunks) || chunks.length !== want)
      throw malformed(`payload "${name}" must have ${want} chunk digests (one per ${CHUNK_BYTES} bytes)`);
    for (const [k, c] of chunks.entries())
      if (typeof c !== "string" || !HEX_DIGEST.test(c))
        throw malformed(`payload "${name}" chunk ${k} has no lower-case hex sha256`);
    next += size;
    return { name: name as PayloadName, offset: next - size, size, sha256: p["sha256"], chunks: [...chunks] };
  });
  if (payloadAreaBytes !== undefined && next !== payloadAreaBytes)
    throw malformed(
      next > payloadAreaBytes
        ? `truncated: the payloads need ${next} bytes, the file holds ${payloadAreaBytes}`
        : `${payloadAreaBytes - next} bytes after the last payload`,
    );
  return {
    format: BUNDLE_FORMAT,
    name: "handset",
    version: v["version"],
    arch: arch as Arch,
    compatible: v["compatible"],
    chunkBytes: CHUNK_BYTES,
    payloads,
  };
}

/**
 * The length of a bundle's head (magic, length, header, signature: everything before the
 * payloads) from its first PREAMBLE_BYTES, so that a stream reads exactly the head and not a
 * byte of payload more. Throws update-malformed for a bad magic or a header length out of range.
 */
export function headLength(preamble: Uint8Array): number {
  if (preamble.length < PREAMBLE_BYTES) throw malformed("truncated (no header)");
  for (let i = 0; i < MAGIC_BYTES.length; i++)
    if (preamble[i] !== MAGIC_BYTES[i]) throw malformed("not an update bundle (bad magic)");
  const view = new DataView(preamble.buffer, preamble.byteOffset, preamble.byteLength);
  const headerLength = view.getUint32(MAGIC_BYTES.length, false);
  if (headerLength < 2 || headerLength > MAX_HEADER_BYTES)
    throw malformed(`header length ${headerLength} is out of range (2 … ${MAX_HEADER_BYTES})`);
  return PREAMBLE_BYTES + headerLength + SIGNATURE_BYTES;
}

/**
 * Reads the head of a bundle: `head` is the file's first bytes (at least headLength() of them:
 * MAX_HEAD_BYTES always is, or the whole file when it is shorter), `fileSize` the file's (or the
 * download's) length. Every range is checked against that size: a truncated or padded bundle is
 * update-malformed.
 */
export function parseBundleHead(head: Uint8Array, fileSize: number): BundleHead {
  if (!isWhole(fileSize, Number.MAX_SAFE_INTEGER) || head.length > fileSize)
    throw malformed("inconsistent file size");
  const dataStart = headLength(head);
  const headerLength = dataStart - PREAMBLE_BYTES - SIGNATURE_BYTES;
  if (fileSize < dataStart || head.length < dataStart) throw malformed("truncated (header or signature)");
  const headerBytes = head.slice(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength);
  const signature = head.slice(PREAMBLE_BYTES + headerLength, dataStart);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch {
    throw malformed("the header is not UTF-8 JSON");
  }
  const header = validateHeader(json, fileSize - dataStart);
  return { header, headerBytes, signature, dataStart, unsigned: signature.every((b) => b === 0) };
}

/**
 * The head from a stream (`read(n)`: exactly the next n bytes) of `size` bytes: the preamble,
 * then exactly the rest of the head, so the payloads stay in the stream for verifiedChunks.
 */
export async function readBundleHead(
  read: (n: number) => Promise<Uint8Array>,
  size: number,
): Promise<BundleHead> {
  const preamble = await read(Math.min(size, PREAMBLE_BYTES));
  const want = Math.min(size, headLength(preamble));
  const head = new Uint8Array(want);
  head.set(preamble, 0);
  head.set(await read(want - preamble.length), preamble.length);
  return parseBundleHead(head, size);
}

/** Where each payload lies in the file. */
export function payloadRanges(head: BundleHead): PayloadRange[] {
  return head.header.payloads.map((p) => ({ ...p, start: head.dataStart + p.offset }));
}

/** The payload of a name (validateHeader guarantees each is present once). */
export function payloadOf(head: BundleHead, name: PayloadName): PayloadRange {
  const p = payloadRanges(head).find((r) => r.name === name);
  if (!p) throw malformed(`no "${name}" payload`);
  return p;
}

/**
 * The checks after the signature verified: this board's arch, and every payload fits its
 * partition. (`partitionBytes` is the target partition's size per payload.)
 */
export function checkBundleFits(
  head: BundleHead,
  o: { arch: Arch; partitionBytes: Record<PayloadName, number> },
): void {
  if (head.header.arch !== o.arch || head.header.compatible !== `handset-${o.arch}`)
    throw new HandsetError(
      "update-wrong-arch",
      `update bundle is for ${head.header.compatible}, this phone is handset-${o.arch}`,
    );
  for (const p of head.header.payloads) {
    const room = o.partitionBytes[p.name];
    if (p.size > room)
      throw new HandsetError(
        "update-too-large",
        `update payload "${p.name}" is ${p.size} bytes, its partition holds ${room}`,
      );
  }
}

/** Compares the digests the caller computed over each payload range with the header's. */
export function checkPayloadDigests(head: BundleHead, digests: Record<PayloadName, string>): void {
  for (const p of head.header.payloads)
    if (digests[p.name] !== p.sha256)
      throw new HandsetError(
        "update-tampered",
        `update payload "${p.name}" does not match its signed sha256 (damaged or tampered)`,
      );
}

// ---------------------------------------------------------------------------------------------
// Chunks (a streamed install checks each one before it writes it)

/** Throws update-tampered unless `bytes` are chunk `index` of the payload, as signed. */
export function checkChunk(p: PayloadEntry, index: number, bytes: Uint8Array, chunkBytes: number): void {
  const want = chunkLength(p.size, index, chunkBytes);
  const signed = p.chunks[index];
  if (
    signed === undefined ||
    bytes.length !== want ||
    createHash("sha256").update(bytes).digest("hex") !== signed
  )
    throw new HandsetError(
      "update-tampered",
      `update payload "${p.name}" chunk ${index} (bytes ${index * chunkBytes}…) does not match its signed sha256 (damaged or tampered)`,
    );
}

/** One chunk of a payload that matched its signed digest; `offset` counts from the payload's start. */
export interface VerifiedChunk {
  index: number;
  offset: number;
  bytes: Uint8Array;
}

/**
 * The payload's chunks in order, each handed out only after it matched its signed digest: the
 * caller writes what it gets and cannot get an unchecked byte. `read(n)` gives the next n bytes
 * of the source (the download), exactly n, or rejects.
 */
export async function* verifiedChunks(
  p: PayloadEntry,
  chunkBytes: number,
  read: (n: number) => Promise<Uint8Array>,
): AsyncGenerator<VerifiedChunk> {
  const n = chunkCount(p.size, chunkBytes);
  for (let index = 0; index < n; index++) {
    const bytes = await read(chunkLength(p.size, index, chunkBytes));
    checkChunk(p, index, bytes, chunkBytes);
    yield { index, offset: index * chunkBytes, bytes };
  }
}

export interface PayloadDigests {
  size: number;
  sha256: string;
  chunks: string[];
}

/**
 * A payload's size, whole sha256 and chunk digests, fed in pieces of any length (the bundle tool
 * reads files in whatever slices the stream gives).
 */
export class PayloadDigester {
  private readonly whole = createHash("sha256");
  private chunk = createHash("sha256");
  private inChunk = 0;
  private size = 0;
  private readonly chunks: string[] = [];

  constructor(private readonly chunkBytes: number = CHUNK_BYTES) {}

  update(bytes: Uint8Array): void {
    this.whole.update(bytes);
    this.size += bytes.length;
    for (let at = 0; at < bytes.length; ) {
      const n = Math.min(this.chunkBytes - this.inChunk, bytes.length - at);
      this.chunk.update(bytes.subarray(at, at + n));
      this.inChunk += n;
      at += n;
      if (this.inChunk === this.chunkBytes) this.closeChunk();
    }
  }

  digest(): PayloadDigests {
    if (this.inChunk > 0) this.closeChunk();
    return { size: this.size, sha256: this.whole.digest("hex"), chunks: [...this.chunks] };
  }

  private closeChunk(): void {
    this.chunks.push(this.chunk.digest("hex"));
    this.chunk = createHash("sha256");
    this.inChunk = 0;
  }
}

/** The digests of a payload in memory (tests). */
export function digestPayload(bytes: Uint8Array, chunkBytes: number = CHUNK_BYTES): PayloadDigests {
  const d = new PayloadDigester(chunkBytes);
  d.update(bytes);
  return d.digest();
}

// ---------------------------------------------------------------------------------------------
// Writing (the bundle tool and tests)

/** The header for payloads of these sizes and digests, laid out back to back in this order. */
export function makeHeader(o: {
  version: string;
  arch: Arch;
  payloads: Array<{ name: PayloadName } & PayloadDigests>;
}): BundleHeader {
  let offset = 0;
  const payloads = o.payloads.map((p) => {
    const e = { name: p.name, offset, size: p.size, sha256: p.sha256, chunks: p.chunks };
    offset += p.size;
    return e;
  });
  return validateHeader({
    format: BUNDLE_FORMAT,
    name: "handset",
    version: o.version,
    arch: o.arch,
    compatible: `handset-${o.arch}`,
    chunkBytes: CHUNK_BYTES,
    payloads,
  });
}

/** The header's bytes: what the signature covers. */
export function encodeHeader(header: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(header));
}

/** magic ‖ u32 length ‖ header ‖ signature: everything before the payloads. */
export function encodeBundleHead(headerBytes: Uint8Array, signature: Uint8Array): Uint8Array {
  if (signature.length !== SIGNATURE_BYTES) throw new Error(`a signature is ${SIGNATURE_BYTES} bytes`);
  if (headerBytes.length > MAX_HEADER_BYTES) throw new Error("header too long");
  const out = new Uint8Array(PREAMBLE_BYTES + headerBytes.length + SIGNATURE_BYTES);
  out.set(MAGIC_BYTES, 0);
  new DataView(out.buffer).setUint32(MAGIC_BYTES.length, headerBytes.length, false);
  out.set(headerBytes, PREAMBLE_BYTES);
  out.set(signature, PREAMBLE_BYTES + headerBytes.length);
  return out;
}

/** The whole bundle in memory (tests; the bundle tool streams the payloads after the head). */
export function encodeBundle(
  headerBytes: Uint8Array,
  signature: Uint8Array,
  payloads: Uint8Array[],
): Uint8Array {
  const head = encodeBundleHead(headerBytes, signature);
  const out = new Uint8Array(head.length + payloads.reduce((n, p) => n + p.length, 0));
  out.set(head, 0);
  let at = head.length;
  for (const p of payloads) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
