/**
 * The update bundle, as bytes (pure: no I/O; the caller reads the file and hashes the payloads).
 *
 *   offset 0   magic "HANDSET-UPDATE\n" (15 bytes)
 *          15  u32 big-endian: length H of the header (1 … 65 536)
 *          19  header: H bytes of UTF-8 JSON (BundleHeader)
 *     19 + H   signature: 64 bytes, Ed25519 over exactly the H header bytes
 *     83 + H   the payload area: the payloads, back to back, in the header's order, to the end
 *              of the file (nothing before, between or after them)
 *
 * The header names every payload's size and sha256, so the one signature covers the whole file:
 * a verified header plus payloads whose digests match it is the bundle the key's owner made.
 * A signature of 64 zero bytes is an unsigned bundle (what `create` without a key would give):
 * refused as `update-unsigned`.
 *
 * Header: {format:1, name:"handset", version, arch:"arm64"|"amd64", compatible:"handset-<arch>",
 * payloads:[{name:"boot"|"system", offset, size, sha256}]}; offset counts from the start of the
 * payload area. Unknown keys are refused: a field this firmware cannot judge is not signed-off
 * content it may ignore.
 */
import { HandsetError } from "../core/errors.ts";

export const BUNDLE_MAGIC = "HANDSET-UPDATE\n";
const MAGIC_BYTES = new TextEncoder().encode(BUNDLE_MAGIC);
export const SIGNATURE_BYTES = 64;
export const MAX_HEADER_BYTES = 65_536;
/** Bytes before the header: magic + length. */
export const PREAMBLE_BYTES = MAGIC_BYTES.length + 4;
/** How much of a bundle's start parseBundleHead may need: everything but the payloads. */
export const MAX_HEAD_BYTES = PREAMBLE_BYTES + MAX_HEADER_BYTES + SIGNATURE_BYTES;
/** No single payload is larger than this (a partition of a desk phone is far smaller). */
export const MAX_PAYLOAD_BYTES = 64 * 2 ** 30;

export const ARCHES = ["arm64", "amd64"] as const;
export type Arch = (typeof ARCHES)[number];
export const PAYLOAD_NAMES = ["boot", "system"] as const;
export type PayloadName = (typeof PAYLOAD_NAMES)[number];

export interface PayloadEntry {
  name: PayloadName;
  /** From the start of the payload area. */
  offset: number;
  size: number;
  /** Lower-case hex, 64 digits. */
  sha256: string;
}

export interface BundleHeader {
  format: 1;
  name: "handset";
  version: string;
  arch: Arch;
  compatible: string;
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

/** Validates a header object (after JSON.parse); throws update-malformed with the first fault. */
export function validateHeader(v: unknown, payloadAreaBytes?: number): BundleHeader {
  if (!isObject(v)) throw malformed("the header is not a JSON object");
  exactKeys(v, ["format", "name", "version", "arch", "compatible", "payloads"], "the header");
  if (v["format"] !== 1)
    throw malformed(`unknown format ${JSON.stringify(v["format"])} (this firmware reads 1)`);
  if (v["name"] !== "handset") throw malformed(`not a handset bundle (name ${JSON.stringify(v["name"])})`);
  if (!isValidVersion(v["version"]))
    throw malformed(`version ${JSON.stringify(v["version"])} is not MAJOR.MINOR.PATCH[-pre][+build]`);
  const arch = v["arch"];
  if (typeof arch !== "string" || !(ARCHES as readonly string[]).includes(arch))
    throw malformed(`arch ${JSON.stringify(arch)} is not one of ${ARCHES.join(", ")}`);
  if (v["compatible"] !== `handset-${arch}`)
    throw malformed(`compatible ${JSON.stringify(v["compatible"])} does not match arch (handset-${arch})`);
  const list = v["payloads"];
  if (!Array.isArray(list) || list.length !== PAYLOAD_NAMES.length)
    throw malformed(`payloads must list ${PAYLOAD_NAMES.join(" and ")}, each once`);
  const seen = new Set<string>();
  let next = 0;
  const payloads: PayloadEntry[] = list.map((p, i) => {
    if (!isObject(p)) throw malformed(`payload ${i} is not an object`);
    exactKeys(p, ["name", "offset", "size", "sha256"], `payload ${i}`);
    const name = p["name"];
    if (typeof name !== "string" || !(PAYLOAD_NAMES as readonly string[]).includes(name))
      throw malformed(`payload ${i} has unknown name ${JSON.stringify(name)}`);
    if (seen.has(name)) throw malformed(`payload "${name}" is listed twice`);
    seen.add(name);
    if (!isWhole(p["size"], MAX_PAYLOAD_BYTES) || p["size"] === 0)
      throw malformed(`payload "${name}" has a bad size ${JSON.stringify(p["size"])}`);
    if (!isWhole(p["offset"], Number.MAX_SAFE_INTEGER) || p["offset"] !== next)
      throw malformed(`payload "${name}" does not start where the one before it ends (offset ${next})`);
    if (typeof p["sha256"] !== "string" || !/^[0-9a-f]{64}$/.test(p["sha256"]))
      throw malformed(`payload "${name}" has no lower-case hex sha256`);
    next += p["size"];
    return { name: name as PayloadName, offset: p["offset"], size: p["size"], sha256: p["sha256"] };
  });
  if (payloadAreaBytes !== undefined && next !== payloadAreaBytes)
    throw malformed(
      next > payloadAreaBytes
        ? `truncated: the payloads need ${next} bytes, the file holds ${payloadAreaBytes}`
        : `${payloadAreaBytes - next} bytes after the last payload`,
    );
  return {
    format: 1,
    name: "handset",
    version: v["version"],
    arch: arch as Arch,
    compatible: v["compatible"],
    payloads,
  };
}

/**
 * Reads the head of a bundle: `head` is the file's first bytes (at least MAX_HEAD_BYTES of them,
 * or the whole file when it is shorter), `fileSize` the file's length. Every range is checked
 * against the file's size: a truncated or padded bundle is update-malformed.
 */
export function parseBundleHead(head: Uint8Array, fileSize: number): BundleHead {
  if (!isWhole(fileSize, Number.MAX_SAFE_INTEGER) || head.length > fileSize)
    throw malformed("inconsistent file size");
  if (head.length < PREAMBLE_BYTES) throw malformed("truncated (no header)");
  for (let i = 0; i < MAGIC_BYTES.length; i++)
    if (head[i] !== MAGIC_BYTES[i]) throw malformed("not an update bundle (bad magic)");
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const headerLength = view.getUint32(MAGIC_BYTES.length, false);
  if (headerLength < 2 || headerLength > MAX_HEADER_BYTES)
    throw malformed(`header length ${headerLength} is out of range (2 … ${MAX_HEADER_BYTES})`);
  const dataStart = PREAMBLE_BYTES + headerLength + SIGNATURE_BYTES;
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
// Writing (the bundle tool and tests)

/** The header for payloads of these sizes and digests, laid out back to back in this order. */
export function makeHeader(o: {
  version: string;
  arch: Arch;
  payloads: Array<{ name: PayloadName; size: number; sha256: string }>;
}): BundleHeader {
  let offset = 0;
  const payloads = o.payloads.map((p) => {
    const e = { name: p.name, offset, size: p.size, sha256: p.sha256 };
    offset += p.size;
    return e;
  });
  return validateHeader({
    format: 1,
    name: "handset",
    version: o.version,
    arch: o.arch,
    compatible: `handset-${o.arch}`,
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
