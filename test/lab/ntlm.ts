/**
 * The server side of NTLM for the lab's web ticket service ([MS-NLMP], carried over HTTP as
 * [MS-NTHT] describes): NEGOTIATE_MESSAGE in, CHALLENGE_MESSAGE out, AUTHENTICATE_MESSAGE verified
 * as NTLMv2 against a password the lab knows.
 *
 * What a hardened AD accepts, and so what this accepts: NTLMv2 only ("Send NTLMv2 response only.
 * Refuse LM & NTLM"). An NtChallengeResponse of 24 bytes (NTLMv1, with or without extended session
 * security), an LM-only response, an anonymous AUTHENTICATE and a malformed NTLMv2 blob are all
 * refused; so is a blob whose time is outside the allowed window or whose MsvAvTimestamp is not the
 * one this server sent. When the client's AV pairs claim a MIC (MsvAvFlags bit 0x2), the MIC is
 * checked over NEGOTIATE ‖ CHALLENGE ‖ AUTHENTICATE (MIC zeroed) with the exported session key.
 *
 * Node 20's OpenSSL 3 has MD4 and RC4 only in its legacy provider, which is not loaded (checked:
 * `createHash("md4")` throws "digital envelope routines::unsupported"), so both are written here
 * from their definitions (RFC 1320; RC4 as in RFC 6229's test vectors) and tested against the
 * published vectors (test/lab-web/ntlm-messages.test.ts). HMAC-MD5 comes from node:crypto.
 *
 * Not done: SPNEGO. A "Negotiate" token that is raw NTLMSSP is taken as NTLM (IIS does the same and
 * answers under "Negotiate"); a real SPNEGO/Kerberos token is refused. No signing or sealing: the
 * session key is only used for the MIC.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export const NTLMSSP_SIGNATURE = Buffer.from("NTLMSSP\0", "latin1");

/** NegotiateFlags ([MS-NLMP] §2.2.2.5). */
export const Flag = {
  UNICODE: 0x00000001,
  OEM: 0x00000002,
  REQUEST_TARGET: 0x00000004,
  SIGN: 0x00000010,
  SEAL: 0x00000020,
  DATAGRAM: 0x00000040,
  LM_KEY: 0x00000080,
  NTLM: 0x00000200,
  ANONYMOUS: 0x00000800,
  ALWAYS_SIGN: 0x00008000,
  TARGET_TYPE_DOMAIN: 0x00010000,
  TARGET_TYPE_SERVER: 0x00020000,
  EXTENDED_SESSIONSECURITY: 0x00080000,
  IDENTIFY: 0x00100000,
  TARGET_INFO: 0x00800000,
  VERSION: 0x02000000,
  N128: 0x20000000,
  KEY_EXCH: 0x40000000,
  N56: 0x80000000,
} as const;

/** AV_PAIR ids ([MS-NLMP] §2.2.2.1). */
export const AvId = {
  EOL: 0,
  NbComputerName: 1,
  NbDomainName: 2,
  DnsComputerName: 3,
  DnsDomainName: 4,
  DnsTreeName: 5,
  Flags: 6,
  Timestamp: 7,
  SingleHost: 8,
  TargetName: 9,
  ChannelBindings: 10,
} as const;

/** MsvAvFlags bit: the AUTHENTICATE_MESSAGE carries a MIC. */
export const AV_FLAG_MIC = 0x00000002;

export class NtlmFormatError extends Error {}

// ---- primitives ------------------------------------------------------------------------------

const rotl = (x: number, s: number) => ((x << s) | (x >>> (32 - s))) >>> 0;

/** MD4 (RFC 1320 §3). */
export function md4(input: Uint8Array): Buffer {
  const bitLen = input.length * 8;
  const total = ((input.length + 8) >>> 6) * 64 + 64;
  const m = Buffer.alloc(total);
  m.set(input);
  m[input.length] = 0x80;
  m.writeUInt32LE(bitLen >>> 0, total - 8);
  m.writeUInt32LE(Math.floor(bitLen / 2 ** 32) >>> 0, total - 4);
  const v = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  const x = new Array<number>(16);
  const F = (a: number, b: number, c: number) => (a & b) | (~a & c);
  const G = (a: number, b: number, c: number) => (a & b) | (a & c) | (b & c);
  const H = (a: number, b: number, c: number) => a ^ b ^ c;
  const rounds: Array<{ f: typeof F; k: number[]; s: number[]; add: number }> = [
    { f: F, k: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], s: [3, 7, 11, 19], add: 0 },
    { f: G, k: [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15], s: [3, 5, 9, 13], add: 0x5a827999 },
    { f: H, k: [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15], s: [3, 9, 11, 15], add: 0x6ed9eba1 },
  ];
  for (let off = 0; off < total; off += 64) {
    for (let i = 0; i < 16; i++) x[i] = m.readUInt32LE(off + i * 4);
    const saved = [...v];
    for (const r of rounds) {
      for (let i = 0; i < 16; i++) {
        // Steps rotate through [abcd], [dabc], [cdab], [bcda].
        const t = (4 - (i % 4)) % 4;
        const sum = v[t]! + r.f(v[(t + 1) % 4]!, v[(t + 2) % 4]!, v[(t + 3) % 4]!) + x[r.k[i]!]! + r.add;
        v[t] = rotl(sum >>> 0, r.s[i % 4]!);
      }
    }
    for (let i = 0; i < 4; i++) v[i] = (v[i]! + saved[i]!) >>> 0;
  }
  const out = Buffer.alloc(16);
  for (let i = 0; i < 4; i++) out.writeUInt32LE(v[i]!, i * 4);
  return out;
}

/** RC4 (ARCFOUR): the NTLM key exchange ([MS-NLMP] §3.1.5.1.2, §6). */
export function rc4(key: Uint8Array, data: Uint8Array): Buffer {
  const s = new Uint8Array(256);
  for (let i = 0; i < 256; i++) s[i] = i;
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i]! + key[i % key.length]!) & 0xff;
    [s[i], s[j]] = [s[j]!, s[i]!];
  }
  const out = Buffer.alloc(data.length);
  for (let n = 0, i = 0, j = 0; n < data.length; n++) {
    i = (i + 1) & 0xff;
    j = (j + s[i]!) & 0xff;
    [s[i], s[j]] = [s[j]!, s[i]!];
    out[n] = data[n]! ^ s[(s[i]! + s[j]!) & 0xff]!;
  }
  return out;
}

export function hmacMd5(key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  const h = createHmac("md5", key);
  for (const p of parts) h.update(p);
  return h.digest();
}

export const utf16 = (s: string) => Buffer.from(s, "utf16le");

/** Upper case one UTF-16 unit at a time, so the length never changes (as RtlUpcaseUnicodeString). */
export function upcase(s: string): string {
  let out = "";
  for (const ch of s) {
    const u = ch.toUpperCase();
    out += u.length === ch.length ? u : ch;
  }
  return out;
}

/** NTOWFv1 = MD4(UNICODE(Passwd)) ([MS-NLMP] §3.3.1): the NT hash. */
export function ntowfv1(password: string): Buffer {
  return md4(utf16(password));
}

/** NTOWFv2 = HMAC_MD5(MD4(UNICODE(Passwd)), UNICODE(Uppercase(User) ‖ UserDom)) ([MS-NLMP] §3.3.2). */
export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(ntowfv1(password), utf16(upcase(user) + domain));
}

const FILETIME_EPOCH_OFFSET_MS = 11_644_473_600_000n;

/** A FILETIME (100 ns since 1601-01-01 UTC), little-endian, for MsvAvTimestamp and the NTLMv2 blob. */
export function filetime(ms: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE((BigInt(Math.floor(ms)) + FILETIME_EPOCH_OFFSET_MS) * 10_000n);
  return b;
}

export function filetimeToMs(b: Buffer): number {
  return Number(b.readBigUInt64LE() / 10_000n - FILETIME_EPOCH_OFFSET_MS);
}

// ---- AV pairs --------------------------------------------------------------------------------

export type AvPair = [id: number, value: Buffer];

/** Encodes AV pairs and the terminating MsvAvEOL. */
export function encodeAvPairs(pairs: AvPair[]): Buffer {
  const parts: Buffer[] = [];
  for (const [id, value] of pairs) {
    const h = Buffer.alloc(4);
    h.writeUInt16LE(id, 0);
    h.writeUInt16LE(value.length, 2);
    parts.push(h, value);
  }
  parts.push(Buffer.alloc(4));
  return Buffer.concat(parts);
}

/** Decodes AV pairs up to MsvAvEOL; throws when the list runs past its buffer or has no EOL. */
export function parseAvPairs(buf: Buffer): AvPair[] {
  const out: AvPair[] = [];
  let off = 0;
  while (off + 4 <= buf.length) {
    const id = buf.readUInt16LE(off);
    const len = buf.readUInt16LE(off + 2);
    if (id === AvId.EOL) return out;
    if (off + 4 + len > buf.length) throw new NtlmFormatError("AV pair runs past the end");
    out.push([id, buf.subarray(off + 4, off + 4 + len)]);
    off += 4 + len;
  }
  throw new NtlmFormatError("AV pairs without MsvAvEOL");
}

// ---- messages --------------------------------------------------------------------------------

function messageType(buf: Buffer): number {
  if (buf.length < 12 || !buf.subarray(0, 8).equals(NTLMSSP_SIGNATURE)) {
    throw new NtlmFormatError("not an NTLMSSP message");
  }
  return buf.readUInt32LE(8);
}

/** The message type of an NTLMSSP token, or undefined when it is not one. */
export function ntlmMessageType(buf: Buffer): number | undefined {
  try {
    return messageType(buf);
  } catch {
    return undefined;
  }
}

/** A payload field (len, maxlen, offset at `at`); throws when it lies outside the message. */
function field(buf: Buffer, at: number): { data: Buffer; offset: number } {
  if (at + 8 > buf.length) throw new NtlmFormatError("message too short for its fields");
  const len = buf.readUInt16LE(at);
  const offset = buf.readUInt32LE(at + 4);
  if (len === 0) return { data: Buffer.alloc(0), offset };
  if (offset + len > buf.length) throw new NtlmFormatError("field outside the message");
  return { data: buf.subarray(offset, offset + len), offset };
}

export interface NegotiateMessage {
  flags: number;
  raw: Buffer;
}

/** NEGOTIATE_MESSAGE ([MS-NLMP] §2.2.1.1): only the flags matter to a server. */
export function parseNegotiate(buf: Buffer): NegotiateMessage {
  if (messageType(buf) !== 1) throw new NtlmFormatError("not a NEGOTIATE_MESSAGE");
  if (buf.length < 16) throw new NtlmFormatError("NEGOTIATE_MESSAGE too short");
  return { flags: buf.readUInt32LE(12), raw: buf };
}

/** 8-byte VERSION: major, minor, build (LE), 3 reserved, NTLMSSP_REVISION_W2K3 (15). */
export function version(major: number, minor: number, build: number): Buffer {
  const v = Buffer.alloc(8);
  v[0] = major;
  v[1] = minor;
  v.writeUInt16LE(build, 2);
  v[7] = 0x0f;
  return v;
}

/** The lab's VERSION: Windows Server 2019 (10.0.17763), as the pool's IIS would answer. */
export const SERVER_VERSION = version(10, 0, 17763);

export interface ChallengeFields {
  flags: number;
  serverChallenge: Buffer;
  targetName: Buffer;
  targetInfo: Buffer;
  version?: Buffer | undefined;
}

/**
 * CHALLENGE_MESSAGE ([MS-NLMP] §2.2.1.2): 56-byte header (signature, type 2, TargetNameFields,
 * NegotiateFlags, ServerChallenge, Reserved, TargetInfoFields, Version), then TargetName and
 * TargetInfo.
 */
export function encodeChallenge(c: ChallengeFields): Buffer {
  if (c.serverChallenge.length !== 8) throw new Error("server challenge must be 8 bytes");
  const header = Buffer.alloc(56);
  NTLMSSP_SIGNATURE.copy(header, 0);
  header.writeUInt32LE(2, 8);
  let off = header.length;
  header.writeUInt16LE(c.targetName.length, 12);
  header.writeUInt16LE(c.targetName.length, 14);
  header.writeUInt32LE(off, 16);
  off += c.targetName.length;
  header.writeUInt32LE(c.flags >>> 0, 20);
  c.serverChallenge.copy(header, 24);
  header.writeUInt16LE(c.targetInfo.length, 40);
  header.writeUInt16LE(c.targetInfo.length, 42);
  header.writeUInt32LE(off, 44);
  (c.version ?? Buffer.alloc(8)).copy(header, 48);
  return Buffer.concat([header, c.targetName, c.targetInfo]);
}

export interface ServerIdentity {
  /** NetBIOS domain name, e.g. "LAB" (also the TargetName: the target type is a domain). */
  nbDomain: string;
  /** NetBIOS computer name, e.g. "POOL". */
  nbComputer: string;
  /** DNS domain, e.g. "lab.test". */
  dnsDomain: string;
  /** DNS computer name, e.g. "pool.lab.test". */
  dnsComputer: string;
}

export interface IssuedChallenge {
  message: Buffer;
  flags: number;
  serverChallenge: Buffer;
  /** The MsvAvTimestamp sent (FILETIME bytes). */
  timestamp: Buffer;
}

/**
 * The server's answer to a NEGOTIATE_MESSAGE: NTLM, target info, version, always-sign and a domain
 * target, plus what the client asked for among Unicode/OEM, extended session security, sign, seal,
 * 128/56-bit and key exchange. Target info: MsvAvNbDomainName, MsvAvNbComputerName,
 * MsvAvDnsDomainName, MsvAvDnsComputerName, MsvAvDnsTreeName, MsvAvTimestamp (Windows' order).
 */
export function challengeFor(
  negotiate: NegotiateMessage,
  id: ServerIdentity,
  serverChallenge: Buffer,
  nowMs: number,
): IssuedChallenge {
  const asked = negotiate.flags;
  const echo =
    Flag.EXTENDED_SESSIONSECURITY |
    Flag.SIGN |
    Flag.SEAL |
    Flag.N128 |
    Flag.N56 |
    Flag.KEY_EXCH |
    Flag.IDENTIFY;
  const unicode = (asked & Flag.UNICODE) !== 0 || (asked & Flag.OEM) === 0;
  const flags =
    ((asked & echo) |
      (unicode ? Flag.UNICODE : Flag.OEM) |
      Flag.REQUEST_TARGET |
      Flag.NTLM |
      Flag.ALWAYS_SIGN |
      Flag.TARGET_TYPE_DOMAIN |
      Flag.TARGET_INFO |
      Flag.VERSION) >>>
    0;
  const timestamp = filetime(nowMs);
  const targetInfo = encodeAvPairs([
    [AvId.NbDomainName, utf16(id.nbDomain)],
    [AvId.NbComputerName, utf16(id.nbComputer)],
    [AvId.DnsDomainName, utf16(id.dnsDomain)],
    [AvId.DnsComputerName, utf16(id.dnsComputer)],
    [AvId.DnsTreeName, utf16(id.dnsDomain)],
    [AvId.Timestamp, timestamp],
  ]);
  const targetName = unicode ? utf16(id.nbDomain) : Buffer.from(id.nbDomain, "latin1");
  const message = encodeChallenge({
    flags,
    serverChallenge,
    targetName,
    targetInfo,
    version: SERVER_VERSION,
  });
  return { message, flags, serverChallenge, timestamp };
}

export interface AuthenticateMessage {
  flags: number;
  lmResponse: Buffer;
  ntResponse: Buffer;
  domain: string;
  user: string;
  workstation: string;
  encryptedRandomSessionKey: Buffer;
  /** The 16 bytes at offset 72 when the payload leaves room for them (the MIC, if one is claimed). */
  mic?: Buffer | undefined;
  raw: Buffer;
}

/** AUTHENTICATE_MESSAGE ([MS-NLMP] §2.2.1.3). */
export function parseAuthenticate(buf: Buffer): AuthenticateMessage {
  if (messageType(buf) !== 3) throw new NtlmFormatError("not an AUTHENTICATE_MESSAGE");
  if (buf.length < 64) throw new NtlmFormatError("AUTHENTICATE_MESSAGE too short");
  const lm = field(buf, 12);
  const nt = field(buf, 20);
  const dom = field(buf, 28);
  const usr = field(buf, 36);
  const ws = field(buf, 44);
  const key = field(buf, 52);
  const flags = buf.readUInt32LE(60);
  const unicode = (flags & Flag.UNICODE) !== 0;
  const str = (b: Buffer) => {
    if (!unicode) return b.toString("latin1");
    if (b.length % 2 !== 0) throw new NtlmFormatError("odd-length Unicode string");
    return b.toString("utf16le");
  };
  const payloadStart = Math.min(
    ...[lm, nt, dom, usr, ws, key].filter((f) => f.data.length > 0).map((f) => f.offset),
    buf.length,
  );
  const mic = payloadStart >= 88 ? Buffer.from(buf.subarray(72, 88)) : undefined;
  return {
    flags,
    lmResponse: lm.data,
    ntResponse: nt.data,
    domain: str(dom.data),
    user: str(usr.data),
    workstation: str(ws.data),
    encryptedRandomSessionKey: key.data,
    mic,
    raw: buf,
  };
}

// ---- NTLMv2 verification -----------------------------------------------------------------------

export type NtlmRefusal =
  | "malformed"
  | "anonymous"
  | "lm-only"
  | "ntlmv1"
  | "unknown-user"
  | "bad-response"
  | "stale"
  | "timestamp-mismatch"
  | "mic";

export type NtlmVerdict =
  | { ok: true; user: string; domain: string; sessionBaseKey: Buffer; exportedSessionKey: Buffer }
  | { ok: false; refusal: NtlmRefusal; reason: string };

export interface VerifyOptions {
  serverChallenge: Buffer;
  /** The password for the user the message names (as sent, with its domain), or undefined. */
  passwordFor: (user: string, domain: string) => string | undefined;
  /** Check the blob's time against this clock, when given. */
  nowMs?: number | undefined;
  /** Allowed distance between the blob's time and nowMs (default 5 minutes). */
  maxSkewMs?: number | undefined;
  /** The MsvAvTimestamp this server sent; a client that echoes one must echo exactly it. */
  sentTimestamp?: Buffer | undefined;
  /** The NEGOTIATE and CHALLENGE messages of this exchange, to check a MIC. */
  negotiate?: Buffer | undefined;
  challenge?: Buffer | undefined;
}

const refuse = (refusal: NtlmRefusal, reason: string): NtlmVerdict => ({ ok: false, refusal, reason });

/** NTProofStr = HMAC_MD5(ResponseKeyNT, ServerChallenge ‖ temp) ([MS-NLMP] §3.3.2). */
export function ntProofStr(responseKeyNT: Buffer, serverChallenge: Buffer, temp: Buffer): Buffer {
  return hmacMd5(responseKeyNT, serverChallenge, temp);
}

/** The NTLMv2 `temp` (the NTLMv2_CLIENT_CHALLENGE and four zero bytes) ([MS-NLMP] §3.3.2). */
export function ntlmv2Temp(timestamp: Buffer, clientChallenge: Buffer, serverInfo: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]),
    timestamp,
    clientChallenge,
    Buffer.alloc(4),
    serverInfo,
    Buffer.alloc(4),
  ]);
}

/**
 * Verifies an AUTHENTICATE_MESSAGE as NTLMv2 ([MS-NLMP] §3.2.5.1.2, §3.3.2). Refuses anything
 * else. The response key is computed from the user and domain exactly as the message spells them.
 */
export function verifyAuthenticate(auth: AuthenticateMessage, o: VerifyOptions): NtlmVerdict {
  const nt = auth.ntResponse;
  if (auth.user === "" && nt.length === 0 && auth.lmResponse.length <= 1) {
    return refuse("anonymous", "anonymous AUTHENTICATE");
  }
  if (nt.length === 0) return refuse("lm-only", "LM response only (no NT response)");
  if (nt.length === 24) return refuse("ntlmv1", "NTLMv1 response (24 bytes): NTLMv2 only");
  if (nt.length < 16 + 28 + 4) return refuse("malformed", `NT response of ${nt.length} bytes`);
  const proof = nt.subarray(0, 16);
  const temp = nt.subarray(16);
  if (temp[0] !== 1 || temp[1] !== 1) return refuse("malformed", "NTLMv2 blob version is not 1/1");
  const blobTime = temp.subarray(8, 16);
  let pairs: AvPair[];
  try {
    pairs = parseAvPairs(temp.subarray(28));
  } catch (e) {
    return refuse("malformed", (e as Error).message);
  }
  const password = o.passwordFor(auth.user, auth.domain);
  // An unknown user costs the same work as a wrong password, and looks the same to the client.
  const key = ntowfv2(password ?? "\u0000no such user\u0000", auth.user, auth.domain);
  const expected = ntProofStr(key, o.serverChallenge, temp);
  if (password === undefined) return refuse("unknown-user", `no lab user "${auth.user}" with a password`);
  if (!timingSafeEqual(expected, proof)) {
    return refuse("bad-response", "NTProofStr does not match (wrong password, user or domain)");
  }
  const echoed = pairs.find(([id]) => id === AvId.Timestamp)?.[1];
  if (o.sentTimestamp && echoed && !echoed.equals(o.sentTimestamp)) {
    return refuse("timestamp-mismatch", "MsvAvTimestamp is not the one sent in the CHALLENGE");
  }
  if (o.nowMs !== undefined) {
    const skew = o.maxSkewMs ?? 5 * 60_000;
    const t = filetimeToMs(blobTime);
    if (Math.abs(t - o.nowMs) > skew) {
      return refuse("stale", `NTLMv2 blob time ${new Date(t).toISOString()} outside ±${skew / 1000} s`);
    }
  }
  const sessionBaseKey = hmacMd5(key, proof);
  // NTLMv2: KeyExchangeKey = SessionBaseKey.
  const exportedSessionKey =
    auth.flags & Flag.KEY_EXCH && auth.encryptedRandomSessionKey.length === 16
      ? rc4(sessionBaseKey, auth.encryptedRandomSessionKey)
      : sessionBaseKey;
  const avFlags = pairs.find(([id]) => id === AvId.Flags)?.[1];
  if (avFlags && avFlags.length >= 4 && avFlags.readUInt32LE(0) & AV_FLAG_MIC) {
    if (!auth.mic) return refuse("mic", "MsvAvFlags claims a MIC but the message has none");
    if (o.negotiate && o.challenge) {
      const zeroed = Buffer.from(auth.raw);
      zeroed.fill(0, 72, 88);
      const mic = hmacMd5(exportedSessionKey, o.negotiate, o.challenge, zeroed);
      if (!timingSafeEqual(mic, auth.mic)) return refuse("mic", "MIC does not match");
    }
  }
  return { ok: true, user: auth.user, domain: auth.domain, sessionBaseKey, exportedSessionKey };
}

// ---- HTTP binding ([MS-NTHT]) -----------------------------------------------------------------

export interface HttpAuthToken {
  /** The scheme as the client wrote it, to answer under the same one. */
  scheme: "NTLM" | "Negotiate";
  token: Buffer;
}

/** `Authorization: NTLM <base64>` or `Negotiate <base64>`; undefined for anything else. */
export function parseAuthorization(header: string | string[] | undefined): HttpAuthToken | undefined {
  if (typeof header !== "string") return undefined;
  const m = /^(NTLM|Negotiate)\s+([A-Za-z0-9+/]+={0,2})\s*$/i.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase() === "ntlm" ? "NTLM" : "Negotiate";
  return { scheme, token: Buffer.from(m[2]!, "base64") };
}
