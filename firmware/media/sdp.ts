/**
 * SDP (RFC 4566) as text in, a typed description out, and back: the line grammar only. What a
 * description means for a call (codecs, SRTP, hold) is offer-answer.ts; a=crypto is sdes.ts.
 *
 * Why our own codec and not `sdp-transform` (or another package):
 * - bad input must end in a typed SdpError with a stable code and a line number (the SIP layer
 *   answers 400 or 488 from it), never in a half-filled object or a plain Error;
 * - it is strict where a misread could mislead us (field order, v=0, numeric fields, unknown
 *   type letters, RFC 4566 §5) and keeps what it does not interpret byte for byte: every a= line,
 *   in order, with its value exactly as sent (Lync's candidate lines end in a space; MS-SDPEXT
 *   attributes such as a=x-ssrc-range, a=cryptoscale, a=x-devicecaps are unknown to most tables);
 * - a grammar table of regular expressions per attribute is the wrong shape for that: it drops
 *   or reshapes what it does not know, and fails silently on what does not match;
 * - no dependency to audit and keep in the firmware image for 300 lines of code.
 *
 * Round trip: for a description whose lines end in CRLF, serializeSdp(parseSdp(x)) === x. Bare LF
 * line ends are accepted (RFC 4566 §5 asks parsers to be tolerant of them) and written as CRLF.
 * Pure: no I/O, no clock, no randomness.
 */
import { HandsetError } from "../core/errors.ts";

export type SdpErrorCode =
  | "sdp-encoding"
  | "sdp-syntax"
  | "sdp-version"
  | "sdp-missing-field"
  | "sdp-order"
  | "sdp-unknown-type"
  | "sdp-origin"
  | "sdp-connection"
  | "sdp-bandwidth"
  | "sdp-timing"
  | "sdp-media"
  | "sdp-attribute"
  | "sdp-serialize";

/** Malformed SDP. `line` is 1-based in the input, when one line is to blame. */
export class SdpError extends HandsetError {
  declare readonly code: SdpErrorCode;
  readonly line: number | undefined;

  constructor(code: SdpErrorCode, message: string, line?: number) {
    super(code, line === undefined ? message : `SDP line ${line}: ${message}`);
    this.line = line;
  }
}

/** `a=name` (value undefined) or `a=name:value` (value verbatim, possibly empty). */
export interface SdpAttribute {
  name: string;
  value: string | undefined;
}

/** o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address> (§5.2). */
export interface SdpOrigin {
  username: string;
  /** Decimal digits, kept as text: WebRTC and some SBCs use ids beyond 2^53. */
  sessionId: string;
  sessionVersion: string;
  netType: string;
  addrType: string;
  address: string;
}

/** c=<nettype> <addrtype> <connection-address> (§5.7); a multicast TTL stays in `address`. */
export interface SdpConnection {
  netType: string;
  addrType: string;
  address: string;
}

/** b=<bwtype>:<bandwidth> (§5.8), e.g. Lync's b=CT:99980. */
export interface SdpBandwidth {
  type: string;
  value: number;
}

/** t=<start> <stop> (§5.9) and its r= lines, verbatim (a call always says t=0 0). */
export interface SdpTiming {
  start: string;
  stop: string;
  repeats: string[];
}

/** m=<media> <port>[/<count>] <proto> <fmt> ... (§5.14) and the lines under it. */
export interface SdpMedia {
  media: string;
  port: number;
  portCount: number | undefined;
  proto: string;
  formats: string[];
  info: string | undefined;
  connections: SdpConnection[];
  bandwidths: SdpBandwidth[];
  key: string | undefined;
  attributes: SdpAttribute[];
}

export interface SessionDescription {
  origin: SdpOrigin;
  sessionName: string;
  info: string | undefined;
  uri: string | undefined;
  emails: string[];
  phones: string[];
  connection: SdpConnection | undefined;
  bandwidths: SdpBandwidth[];
  timings: SdpTiming[];
  zone: string | undefined;
  key: string | undefined;
  attributes: SdpAttribute[];
  media: SdpMedia[];
}

/** RFC 4566 §6 direction attributes; sendrecv when none is given. */
export type Direction = "sendrecv" | "sendonly" | "recvonly" | "inactive";
export const DIRECTIONS: readonly Direction[] = ["sendrecv", "sendonly", "recvonly", "inactive"];

/** Every type letter RFC 4566 defines; any other letter makes the description unusable (§5). */
const KNOWN_TYPES = new Set(["v", "o", "s", "i", "u", "e", "p", "c", "b", "t", "r", "z", "k", "a", "m"]);

/** token (RFC 4566 §9): visible ASCII except the separators. */
const TOKEN = /^[!#-'*+\-.0-9A-Z^-~]+$/;
const DIGITS = /^[0-9]+$/;

interface Line {
  type: string;
  value: string;
  number: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function toText(input: string | Uint8Array): string {
  if (typeof input === "string") return input;
  try {
    return utf8.decode(input);
  } catch {
    // SDP text is UTF-8 unless a=charset says otherwise (§5); a phone never asks for another.
    throw new SdpError("sdp-encoding", "SDP is not valid UTF-8");
  }
}

function splitLines(text: string): Line[] {
  const raw = text.split("\n");
  // A final line end leaves one empty string; blank lines at the very end are padding some
  // stacks add (multipart parts, Content-Length slack) and carry nothing.
  while (raw.length > 0 && (raw[raw.length - 1] === "" || raw[raw.length - 1] === "\r")) raw.pop();
  if (raw.length === 0) throw new SdpError("sdp-missing-field", "SDP is empty");
  return raw.map((r, i) => {
    const number = i + 1;
    const s = r.endsWith("\r") ? r.slice(0, -1) : r;
    if (s.includes("\r")) throw new SdpError("sdp-syntax", "bare CR inside a line", number);
    if (s.includes("\0")) throw new SdpError("sdp-syntax", "NUL inside a line", number);
    if (s.length < 2 || s[1] !== "=") throw new SdpError("sdp-syntax", "not <type>=<value>", number);
    const type = s[0]!;
    if (!/^[a-z]$/.test(type))
      throw new SdpError("sdp-syntax", `type "${type}" is not a lower-case letter`, number);
    return { type, value: s.slice(2), number };
  });
}

/** Reads lines in the fixed order RFC 4566 §5 prescribes. */
class Cursor {
  private i = 0;
  constructor(private readonly lines: Line[]) {}

  peek(): Line | undefined {
    return this.lines[this.i];
  }

  take(type: string): Line | undefined {
    const l = this.lines[this.i];
    if (l?.type !== type) return undefined;
    this.i++;
    return l;
  }

  takeAll(type: string): Line[] {
    const out: Line[] = [];
    for (let l = this.take(type); l; l = this.take(type)) out.push(l);
    return out;
  }

  expect(type: string, what: string): Line {
    const l = this.take(type);
    if (l) return l;
    const next = this.peek();
    const later = this.lines.slice(this.i).find((x) => x.type === type);
    if (later)
      throw new SdpError("sdp-order", `${type}= (${what}) is out of the RFC 4566 order`, later.number);
    throw new SdpError(
      "sdp-missing-field",
      `expected ${type}= (${what})${next ? ` before ${next.type}=` : " before the end"}`,
      next?.number,
    );
  }
}

function parseOrigin(l: Line): SdpOrigin {
  const f = l.value.split(" ");
  if (f.length !== 6 || f.some((x) => x === ""))
    throw new SdpError("sdp-origin", "o= needs six fields separated by single spaces", l.number);
  const [username, sessionId, sessionVersion, netType, addrType, address] = f as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (!DIGITS.test(sessionId) || !DIGITS.test(sessionVersion))
    throw new SdpError("sdp-origin", "o= session id and version must be decimal digits", l.number);
  if (!TOKEN.test(netType) || !TOKEN.test(addrType))
    throw new SdpError("sdp-origin", "o= nettype and addrtype must be tokens", l.number);
  return { username, sessionId, sessionVersion, netType, addrType, address };
}

function parseConnection(l: Line): SdpConnection {
  const f = l.value.split(" ");
  if (f.length !== 3 || f.some((x) => x === ""))
    throw new SdpError("sdp-connection", "c= needs <nettype> <addrtype> <address>", l.number);
  const [netType, addrType, address] = f as [string, string, string];
  if (!TOKEN.test(netType) || !TOKEN.test(addrType))
    throw new SdpError("sdp-connection", "c= nettype and addrtype must be tokens", l.number);
  return { netType, addrType, address };
}

function parseBandwidth(l: Line): SdpBandwidth {
  const colon = l.value.indexOf(":");
  const type = l.value.slice(0, colon);
  const value = l.value.slice(colon + 1);
  if (colon < 1 || !TOKEN.test(type) || !DIGITS.test(value))
    throw new SdpError("sdp-bandwidth", "b= needs <bwtype>:<kbit/s>", l.number);
  return { type, value: Number(value) };
}

function parseTiming(l: Line, repeats: Line[]): SdpTiming {
  const f = l.value.split(" ");
  if (f.length !== 2 || !f.every((x) => DIGITS.test(x)))
    throw new SdpError("sdp-timing", "t= needs <start> <stop> in decimal", l.number);
  return { start: f[0]!, stop: f[1]!, repeats: repeats.map((r) => r.value) };
}

function parseAttribute(l: Line): SdpAttribute {
  const colon = l.value.indexOf(":");
  const name = colon < 0 ? l.value : l.value.slice(0, colon);
  if (!TOKEN.test(name)) throw new SdpError("sdp-attribute", `a= name "${name}" is not a token`, l.number);
  return { name, value: colon < 0 ? undefined : l.value.slice(colon + 1) };
}

function parseMediaLine(l: Line): Pick<SdpMedia, "media" | "port" | "portCount" | "proto" | "formats"> {
  const f = l.value.split(" ");
  if (f.length < 4 || f.some((x) => x === ""))
    throw new SdpError(
      "sdp-media",
      "m= needs <media> <port> <proto> <fmt>... separated by single spaces",
      l.number,
    );
  const [media, portField, proto, ...formats] = f as [string, string, string, ...string[]];
  const slash = portField.indexOf("/");
  const portText = slash < 0 ? portField : portField.slice(0, slash);
  const countText = slash < 0 ? undefined : portField.slice(slash + 1);
  if (!TOKEN.test(media)) throw new SdpError("sdp-media", "m= media is not a token", l.number);
  if (!DIGITS.test(portText) || Number(portText) > 65535)
    throw new SdpError("sdp-media", `m= port "${portText}" is not 0..65535`, l.number);
  if (countText !== undefined && (!DIGITS.test(countText) || Number(countText) < 1))
    throw new SdpError("sdp-media", "m= port count must be a positive integer", l.number);
  // proto is tokens joined by "/" (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF).
  if (!proto.split("/").every((p) => TOKEN.test(p)))
    throw new SdpError("sdp-media", `m= proto "${proto}" is malformed`, l.number);
  if (!formats.every((x) => TOKEN.test(x)))
    throw new SdpError("sdp-media", "m= format is not a token", l.number);
  return {
    media,
    port: Number(portText),
    portCount: countText === undefined ? undefined : Number(countText),
    proto,
    formats,
  };
}

/**
 * Parses one session description. Throws SdpError only; any line out of the RFC 4566 §5 order,
 * and any type letter it does not define, is refused rather than guessed at.
 */
export function parseSdp(input: string | Uint8Array): SessionDescription {
  const cur = new Cursor(splitLines(toText(input)));
  const v = cur.take("v");
  if (!v) throw new SdpError("sdp-version", "an SDP description starts with v=0", 1);
  if (v.value !== "0") throw new SdpError("sdp-version", `unsupported version v=${v.value}`, v.number);

  const origin = parseOrigin(cur.expect("o", "origin"));
  // RFC 4566 wants s= non-empty; an empty name is harmless, so it is kept rather than refused.
  const sessionName = cur.expect("s", "session name").value;
  const info = cur.take("i")?.value;
  const uri = cur.take("u")?.value;
  const emails = cur.takeAll("e").map((l) => l.value);
  const phones = cur.takeAll("p").map((l) => l.value);
  const c = cur.take("c");
  const connection = c ? parseConnection(c) : undefined;
  const bandwidths = cur.takeAll("b").map(parseBandwidth);
  const timings: SdpTiming[] = [];
  for (let t = cur.take("t"); t; t = cur.take("t")) timings.push(parseTiming(t, cur.takeAll("r")));
  if (timings.length === 0) cur.expect("t", "timing");
  const zone = cur.take("z")?.value;
  const key = cur.take("k")?.value;
  const attributes = cur.takeAll("a").map(parseAttribute);

  const media: SdpMedia[] = [];
  for (let m = cur.take("m"); m; m = cur.take("m")) {
    const line = parseMediaLine(m);
    const mInfo = cur.take("i")?.value;
    const connections = cur.takeAll("c").map(parseConnection);
    const mBandwidths = cur.takeAll("b").map(parseBandwidth);
    const mKey = cur.take("k")?.value;
    const mAttributes = cur.takeAll("a").map(parseAttribute);
    media.push({
      ...line,
      info: mInfo,
      connections,
      bandwidths: mBandwidths,
      key: mKey,
      attributes: mAttributes,
    });
  }

  const rest = cur.peek();
  if (rest) {
    if (!KNOWN_TYPES.has(rest.type))
      throw new SdpError("sdp-unknown-type", `unknown type letter "${rest.type}="`, rest.number);
    throw new SdpError("sdp-order", `${rest.type}= is out of the RFC 4566 order here`, rest.number);
  }
  return {
    origin,
    sessionName,
    info,
    uri,
    emails,
    phones,
    connection,
    bandwidths,
    timings,
    zone,
    key,
    attributes,
    media,
  };
}

function checked(type: string, value: string): string {
  // What we write must parse back as the same line: no line breaks smuggled into a field.
  if (/[\r\n\0]/.test(value)) throw new SdpError("sdp-serialize", `${type}= value contains CR, LF or NUL`);
  return `${type}=${value}`;
}

function connectionLine(c: SdpConnection): string {
  return checked("c", `${c.netType} ${c.addrType} ${c.address}`);
}

function attributeLine(a: SdpAttribute): string {
  if (!TOKEN.test(a.name)) throw new SdpError("sdp-serialize", `attribute name "${a.name}" is not a token`);
  return checked("a", a.value === undefined ? a.name : `${a.name}:${a.value}`);
}

/** Writes a description in RFC 4566 order, every line ending in CRLF. */
export function serializeSdp(sdp: SessionDescription): string {
  const o = sdp.origin;
  const out: string[] = [
    "v=0",
    checked("o", `${o.username} ${o.sessionId} ${o.sessionVersion} ${o.netType} ${o.addrType} ${o.address}`),
    checked("s", sdp.sessionName),
  ];
  if (sdp.info !== undefined) out.push(checked("i", sdp.info));
  if (sdp.uri !== undefined) out.push(checked("u", sdp.uri));
  for (const e of sdp.emails) out.push(checked("e", e));
  for (const p of sdp.phones) out.push(checked("p", p));
  if (sdp.connection) out.push(connectionLine(sdp.connection));
  for (const b of sdp.bandwidths) out.push(checked("b", `${b.type}:${b.value}`));
  if (sdp.timings.length === 0)
    throw new SdpError("sdp-serialize", "a description needs at least one t= line");
  for (const t of sdp.timings) {
    out.push(checked("t", `${t.start} ${t.stop}`));
    for (const r of t.repeats) out.push(checked("r", r));
  }
  if (sdp.zone !== undefined) out.push(checked("z", sdp.zone));
  if (sdp.key !== undefined) out.push(checked("k", sdp.key));
  for (const a of sdp.attributes) out.push(attributeLine(a));
  for (const m of sdp.media) {
    if (m.formats.length === 0) throw new SdpError("sdp-serialize", "m= needs at least one format");
    const port = m.portCount === undefined ? `${m.port}` : `${m.port}/${m.portCount}`;
    out.push(checked("m", `${m.media} ${port} ${m.proto} ${m.formats.join(" ")}`));
    if (m.info !== undefined) out.push(checked("i", m.info));
    for (const c of m.connections) out.push(connectionLine(c));
    for (const b of m.bandwidths) out.push(checked("b", `${b.type}:${b.value}`));
    if (m.key !== undefined) out.push(checked("k", m.key));
    for (const a of m.attributes) out.push(attributeLine(a));
  }
  return `${out.join("\r\n")}\r\n`;
}

/** Value of the first attribute with this name ("" for `a=name:`), undefined if absent or valueless. */
export function attributeValue(attributes: readonly SdpAttribute[], name: string): string | undefined {
  return attributes.find((a) => a.name === name)?.value;
}

/** Values of every attribute with this name, in order (valueless ones skipped). */
export function attributeValues(attributes: readonly SdpAttribute[], name: string): string[] {
  const out: string[] = [];
  for (const a of attributes) if (a.name === name && a.value !== undefined) out.push(a.value);
  return out;
}

export function hasAttribute(attributes: readonly SdpAttribute[], name: string): boolean {
  return attributes.some((a) => a.name === name);
}

/** The connection that applies to a media section: its own c= first, else the session's (§5.7). */
export function mediaConnection(sdp: SessionDescription, media: SdpMedia): SdpConnection | undefined {
  return media.connections[0] ?? sdp.connection;
}

function directionIn(attributes: readonly SdpAttribute[]): Direction | undefined {
  const found = attributes.filter((a) => (DIRECTIONS as readonly string[]).includes(a.name));
  // Two different directions in one section leave us unable to tell hold from resume.
  if (new Set(found.map((a) => a.name)).size > 1)
    throw new SdpError(
      "sdp-attribute",
      `conflicting direction attributes: ${found.map((a) => a.name).join(", ")}`,
    );
  return found[0]?.name as Direction | undefined;
}

/** The direction of a media section: media level, else session level, else sendrecv (§6). */
export function mediaDirection(sdp: SessionDescription, media: SdpMedia): Direction {
  return directionIn(media.attributes) ?? directionIn(sdp.attributes) ?? "sendrecv";
}

/** a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>] (§6). */
export interface RtpMap {
  payloadType: number;
  encoding: string;
  clockRate: number;
  /** Channels for audio; undefined when the line leaves it out (one channel). */
  channels: number | undefined;
}

/** Parses an rtpmap value; throws SdpError("sdp-attribute") when it is not of that form. */
export function parseRtpmap(value: string): RtpMap {
  const m = /^([0-9]{1,3}) ([^ /]+)\/([0-9]+)(?:\/([0-9]+))?$/.exec(value);
  if (!m || Number(m[1]) > 127 || Number(m[3]) === 0)
    throw new SdpError("sdp-attribute", `malformed rtpmap "${value}"`);
  return {
    payloadType: Number(m[1]),
    encoding: m[2]!,
    clockRate: Number(m[3]),
    channels: m[4] === undefined ? undefined : Number(m[4]),
  };
}

/** The fmtp parameters given for one payload type, or undefined. */
export function fmtpOf(media: SdpMedia, payloadType: string): string | undefined {
  for (const v of attributeValues(media.attributes, "fmtp")) {
    const sp = v.indexOf(" ");
    if (sp > 0 && v.slice(0, sp) === payloadType) return v.slice(sp + 1);
  }
  return undefined;
}
