/**
 * SDP Security Descriptions (RFC 4568): the value of an a=crypto line, parsed and written.
 *
 *   crypto:<tag> <crypto-suite> inline:<base64(key ‖ salt)>[|<lifetime>][|<MKI>:<length>][;inline:…] [<session-param>…]
 *
 * Only the two suites a desk phone's SRTP stack implements (RFC 4568 §6.2, and srtp.ts) are
 * understood: AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32, each with a 30-octet inline
 * value (16 octets of master key, then 14 of master salt). A line with any other suite is a
 * typed "sdes-unsupported-suite", so an answerer can skip it and try the next line (RFC 4568
 * §7.1.2: pick the first one it supports). Lync also sends a=cryptoscale (MS-SDPEXT, scale SRTP);
 * that is another attribute and is not read here.
 *
 * Pure: the key material for a new line comes from the Random port the caller passes.
 */
import { HandsetError } from "../core/errors.ts";
import type { Random } from "../core/random.ts";

/** The crypto suites we negotiate; the same strings as srtp.ts's SrtpSuite. */
export type SdesSuite = "AES_CM_128_HMAC_SHA1_80" | "AES_CM_128_HMAC_SHA1_32";
export const SDES_SUITES: readonly SdesSuite[] = ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"];

/** Octets in an inline key for both suites: 128-bit master key ‖ 112-bit master salt. */
export const SDES_KEY_SALT_LENGTH = 30;
/** The most SRTP packets one master key may protect with these suites (RFC 4568 §6.2.1). */
export const SDES_MAX_LIFETIME = 2 ** 48;
/** The lifetime Lync writes on its lines, and the one we write (2^31, the SRTCP limit). */
export const SDES_DEFAULT_LIFETIME = 2 ** 31;

export type SdesErrorCode =
  | "sdes-syntax"
  | "sdes-tag"
  | "sdes-unsupported-suite"
  | "sdes-key"
  | "sdes-lifetime"
  | "sdes-mki"
  | "sdes-session-param";

export class SdesError extends HandsetError {
  declare readonly code: SdesErrorCode;

  constructor(code: SdesErrorCode, message: string) {
    super(code, message);
  }
}

/** An MKI: its value and its width in octets (1..128). Fits srtp.ts's SrtpMki. */
export interface SdesMki {
  value: bigint;
  length: number;
}

export interface SdesKey {
  /** 30 octets: master key then master salt. */
  keySalt: Uint8Array;
  /** Packets this key may protect; undefined when the line leaves it to the suite's maximum. */
  lifetime: number | undefined;
  mki: SdesMki | undefined;
}

export interface SdesCrypto {
  /** 0..999999999, unique per media line; the answer repeats the tag of the line it accepts. */
  tag: number;
  suite: SdesSuite;
  keys: SdesKey[];
  /** Session parameters verbatim (KDR=…, UNENCRYPTED_SRTCP, WSH=…, or "-"-prefixed extensions). */
  sessionParams: string[];
}

export function isSdesSuite(s: string): s is SdesSuite {
  return (SDES_SUITES as readonly string[]).includes(s);
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function decodeKeySalt(text: string): Uint8Array {
  // Buffer.from(…, "base64") skips what it does not understand; a key must be exactly right.
  if (!BASE64.test(text) || text.length % 4 !== 0)
    throw new SdesError("sdes-key", "inline key is not base64");
  const bytes = Buffer.from(text, "base64");
  if (bytes.toString("base64") !== text)
    throw new SdesError("sdes-key", "inline key is not canonical base64");
  if (bytes.length !== SDES_KEY_SALT_LENGTH)
    throw new SdesError(
      "sdes-key",
      `inline key is ${bytes.length} octets, the suite needs ${SDES_KEY_SALT_LENGTH} (16 key + 14 salt)`,
    );
  return new Uint8Array(bytes);
}

function parseLifetime(text: string): number {
  const power = /^2\^([0-9]{1,2})$/.exec(text);
  const value = power ? 2 ** Number(power[1]) : /^[0-9]{1,15}$/.test(text) ? Number(text) : Number.NaN;
  if (!(value >= 1 && value <= SDES_MAX_LIFETIME))
    throw new SdesError("sdes-lifetime", `key lifetime "${text}" is not 1..2^48`);
  return value;
}

function parseMki(text: string): SdesMki {
  const m = /^([0-9]{1,310}):([0-9]{1,3})$/.exec(text);
  if (!m) throw new SdesError("sdes-mki", `MKI "${text}" is not <value>:<length>`);
  const value = BigInt(m[1]!);
  const length = Number(m[2]);
  if (length < 1 || length > 128) throw new SdesError("sdes-mki", `MKI length ${length} is not 1..128`);
  if (value >= 1n << BigInt(8 * length))
    throw new SdesError("sdes-mki", `MKI value ${value} does not fit in ${length} octet(s)`);
  return { value, length };
}

function parseKeyParam(param: string): SdesKey {
  const colon = param.indexOf(":");
  // ABNF literals are case-insensitive (RFC 5234 §2.3): "INLINE:" is as good as "inline:".
  if (colon < 0 || param.slice(0, colon).toLowerCase() !== "inline")
    throw new SdesError("sdes-syntax", "key parameter is not inline:<key>");
  const [keyText = "", ...rest] = param.slice(colon + 1).split("|");
  if (rest.length > 2)
    throw new SdesError("sdes-syntax", "inline key has more than lifetime and MKI after it");
  const keySalt = decodeKeySalt(keyText);
  let lifetime: number | undefined;
  let mki: SdesMki | undefined;
  // Both are optional and in that order (RFC 4568 §9.2); only the MKI has a colon.
  if (rest.length === 2) {
    lifetime = parseLifetime(rest[0]!);
    mki = parseMki(rest[1]!);
  } else if (rest.length === 1) {
    if (rest[0]!.includes(":")) mki = parseMki(rest[0]!);
    else lifetime = parseLifetime(rest[0]!);
  }
  return { keySalt, lifetime, mki };
}

const FLAG_PARAMS = new Set(["UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTP", "UNAUTHENTICATED_SRTP"]);

function checkSessionParam(p: string): void {
  // RFC 4568 §6.3: a "-" prefix marks an optional extension, ignorable; any other unknown
  // parameter makes the whole line invalid, because its sender relies on it.
  if (p.startsWith("-") && p.length > 1) return;
  if (FLAG_PARAMS.has(p)) return;
  const eq = p.indexOf("=");
  const name = eq < 0 ? p : p.slice(0, eq);
  const value = eq < 0 ? "" : p.slice(eq + 1);
  const ok =
    (name === "KDR" && /^[0-9]{1,2}$/.test(value) && Number(value) <= 24) ||
    (name === "WSH" && /^[0-9]{1,9}$/.test(value) && Number(value) >= 64) ||
    (name === "FEC_ORDER" && (value === "FEC_SRTP" || value === "SRTP_FEC")) ||
    (name === "FEC_KEY" && value.length > 0);
  if (!ok) throw new SdesError("sdes-session-param", `session parameter "${p}" is unknown or malformed`);
}

/** Parses the value of an a=crypto attribute (what follows "crypto:"). Throws SdesError only. */
export function parseCrypto(value: string): SdesCrypto {
  const fields = value.split(/[ \t]+/);
  if (fields.length < 3 || fields.some((f) => f === ""))
    throw new SdesError("sdes-syntax", "a=crypto needs <tag> <suite> <key-params>");
  const [tagText, suite, keyParams, ...sessionParams] = fields as [string, string, string, ...string[]];
  if (!/^[0-9]{1,9}$/.test(tagText)) throw new SdesError("sdes-tag", `tag "${tagText}" is not 1 to 9 digits`);
  if (!isSdesSuite(suite))
    throw new SdesError("sdes-unsupported-suite", `crypto suite ${suite} is not supported`);
  const keys = keyParams.split(";").map(parseKeyParam);
  if (keys.length > 1) {
    // With several keys the receiver picks one per packet by its MKI (RFC 4568 §6.1), so each
    // needs one, all of the same width, and no two alike.
    const first = keys[0]!.mki;
    if (!keys.every((k) => k.mki !== undefined && k.mki.length === first?.length))
      throw new SdesError("sdes-mki", "several keys need an MKI each, all of one length");
    if (new Set(keys.map((k) => k.mki!.value)).size !== keys.length)
      throw new SdesError("sdes-mki", "two keys share an MKI value");
  }
  for (const p of sessionParams) checkSessionParam(p);
  return { tag: Number(tagText), suite, keys, sessionParams };
}

function formatLifetime(n: number): string {
  const log = Math.log2(n);
  return Number.isInteger(log) ? `2^${log}` : `${n}`;
}

/** Writes the value of an a=crypto attribute; refuses (SdesError) what parseCrypto would refuse. */
export function formatCrypto(c: SdesCrypto): string {
  if (!Number.isInteger(c.tag) || c.tag < 0 || c.tag > 999_999_999)
    throw new SdesError("sdes-tag", `tag ${c.tag} is not 0..999999999`);
  if (!isSdesSuite(c.suite))
    throw new SdesError("sdes-unsupported-suite", `crypto suite ${c.suite} is not supported`);
  if (c.keys.length === 0) throw new SdesError("sdes-syntax", "a=crypto needs a key");
  const keys = c.keys.map((k) => {
    if (k.keySalt.length !== SDES_KEY_SALT_LENGTH)
      throw new SdesError(
        "sdes-key",
        `inline key must be ${SDES_KEY_SALT_LENGTH} octets, not ${k.keySalt.length}`,
      );
    let s = `inline:${Buffer.from(k.keySalt).toString("base64")}`;
    if (k.lifetime !== undefined) s += `|${formatLifetime(k.lifetime)}`;
    if (k.mki !== undefined) s += `|${k.mki.value}:${k.mki.length}`;
    return s;
  });
  for (const p of c.sessionParams) checkSessionParam(p);
  const text = [`${c.tag}`, c.suite, keys.join(";"), ...c.sessionParams].join(" ");
  // What we write must read back the same; parsing it checks lifetime, MKI and multi-key rules.
  parseCrypto(text);
  return text;
}

/** A new single-key line with a fresh key from `random`, as our offers and answers carry. */
export function generateCrypto(
  random: Random,
  tag: number,
  suite: SdesSuite,
  lifetime: number | undefined = SDES_DEFAULT_LIFETIME,
): SdesCrypto {
  const keySalt = random.bytes(SDES_KEY_SALT_LENGTH);
  if (keySalt.length !== SDES_KEY_SALT_LENGTH) throw new SdesError("sdes-key", "Random gave a short key");
  return {
    tag,
    suite,
    keys: [{ keySalt: Uint8Array.from(keySalt), lifetime, mki: undefined }],
    sessionParams: [],
  };
}
