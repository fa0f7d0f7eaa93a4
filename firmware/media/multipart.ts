/**
 * MIME multipart bodies (RFC 2046 §5.1) as far as a SIP INVITE needs them, and the choice of the
 * SDP to answer.
 *
 * Lync and Skype for Business send a first INVITE's offer as multipart/alternative when a
 * 2007-era peer may be on the path (MS-SIPRE §3.15.4.1):
 *
 *   Content-Type: multipart/alternative;boundary="----=_NextPart_000_001C_01D282D0.D2055920"
 *
 *   ------=_NextPart_000_001C_01D282D0.D2055920
 *   Content-Type: application/sdp
 *   Content-Transfer-Encoding: 7bit
 *   Content-ID: <…>
 *   Content-Disposition: session; handling=optional; ms-proxy-2007fallback
 *
 *   <SDP for ICE draft 6, for Office Communicator 2007 peers>
 *   ------=_NextPart_000_001C_01D282D0.D2055920
 *   Content-Type: application/sdp
 *   Content-Transfer-Encoding: 7bit
 *   Content-ID: <…>
 *   Content-Disposition: session; handling=optional
 *
 *   <SDP for ICE draft 19, always the last part>
 *   ------=_NextPart_000_001C_01D282D0.D2055920--
 *
 * The part marked ms-proxy-2007fallback (MS-SIPRE §2.2.14) is the one a proxy keeps when it
 * retries with a single body after a 415 (§3.9.5.5, §3.15.5.2). A current endpoint answers the
 * other one: we take the last application/sdp part without that marker, as RFC 2046 §5.1.4 makes
 * the last alternative the preferred one, and the fallback part only when it is all there is. The
 * three-level form (multipart/mixed holding the alternative and a call context) is searched too.
 *
 * Tolerant of CRLF or LF line ends, of a preamble and an epilogue and of transport padding after a
 * delimiter; a missing or malformed boundary, a body without its close delimiter, or a part whose
 * headers do not parse is a MultipartError. Pure: bytes in, bytes out.
 */
import { HandsetError } from "../core/errors.ts";

export type MultipartErrorCode =
  | "multipart-content-type"
  | "multipart-boundary"
  | "multipart-no-parts"
  | "multipart-unterminated"
  | "multipart-part-header"
  | "multipart-encoding"
  | "multipart-no-sdp"
  | "multipart-depth";

export class MultipartError extends HandsetError {
  declare readonly code: MultipartErrorCode;

  constructor(code: MultipartErrorCode, message: string) {
    super(code, message);
  }
}

/** The Content-Disposition parameter of the part meant for 2007-era peers (MS-SIPRE §2.2.14). */
export const MS_PROXY_FALLBACK = "ms-proxy-2007fallback";

/** type/subtype (lower case) and parameters (names lower case, values unquoted). */
export interface MediaType {
  type: string;
  subtype: string;
  params: Map<string, string>;
}

/** Content-Disposition: the type (lower case) and its parameters; a bare parameter's value is "". */
export interface Disposition {
  type: string;
  params: Map<string, string>;
}

export interface BodyPart {
  headers: Array<{ name: string; value: string }>;
  /** text/plain when the part has no Content-Type (RFC 2046 §5.1). */
  contentType: MediaType;
  disposition: Disposition | undefined;
  body: Buffer;
}

export interface SelectedSdp {
  /** The SDP to parse. */
  body: Buffer;
  /** The part it came from; undefined when the whole body was application/sdp. */
  part: BodyPart | undefined;
  /** True when only the ms-proxy-2007fallback part carried SDP. */
  fallback: boolean;
}

/** MIME token (RFC 2045 §5.1): no SP, CTLs or tspecials. */
const MIME_TOKEN = /^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$/;
/** bchars of RFC 2046 §5.1.1; a boundary is 1 to 70 of them and does not end in a space. */
const BOUNDARY = /^[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]$/;
/** How deep a body may nest: MS-SIPRE §3.15.4.1 uses at most three levels. */
const MAX_DEPTH = 3;

/** Splits at ";" outside quoted strings. */
function splitParams(value: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (quoted && ch === "\\" && i + 1 < value.length) {
      cur += ch + value[++i];
      continue;
    }
    if (ch === '"') quoted = !quoted;
    if (ch === ";" && !quoted) {
      out.push(cur);
      cur = "";
    } else cur += ch;
  }
  if (quoted) throw new MultipartError("multipart-content-type", "unterminated quoted string in a parameter");
  out.push(cur);
  return out;
}

function parseParams(fields: string[], what: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const raw of fields) {
    const field = raw.trim();
    if (field === "") continue; // "type/sub;" and ";;" carry nothing
    const eq = field.indexOf("=");
    const name = (eq < 0 ? field : field.slice(0, eq)).trim().toLowerCase();
    let value = eq < 0 ? "" : field.slice(eq + 1).trim();
    if (!MIME_TOKEN.test(name))
      throw new MultipartError("multipart-content-type", `bad ${what} parameter "${field}"`);
    if (value.startsWith('"')) {
      if (value.length < 2 || !value.endsWith('"'))
        throw new MultipartError("multipart-content-type", `bad quoted ${what} parameter "${field}"`);
      value = value.slice(1, -1).replace(/\\(.)/g, "$1");
    } else if (value !== "" && !MIME_TOKEN.test(value))
      throw new MultipartError("multipart-content-type", `bad ${what} parameter value "${field}"`);
    // Two values for one name (two boundaries, say) leave no right answer.
    if (params.has(name))
      throw new MultipartError("multipart-content-type", `${what} parameter ${name} given twice`);
    params.set(name, value);
  }
  return params;
}

/** Parses a Content-Type value. */
export function parseMediaType(value: string): MediaType {
  const [head = "", ...rest] = splitParams(value);
  const slash = head.indexOf("/");
  const type = head.slice(0, slash).trim().toLowerCase();
  const subtype = head
    .slice(slash + 1)
    .trim()
    .toLowerCase();
  if (slash < 0 || !MIME_TOKEN.test(type) || !MIME_TOKEN.test(subtype))
    throw new MultipartError("multipart-content-type", `"${value}" is not a media type`);
  return { type, subtype, params: parseParams(rest, "Content-Type") };
}

/** Parses a Content-Disposition value ("session; handling=optional; ms-proxy-2007fallback"). */
export function parseDisposition(value: string): Disposition {
  const [head = "", ...rest] = splitParams(value);
  const type = head.trim().toLowerCase();
  if (!MIME_TOKEN.test(type))
    throw new MultipartError("multipart-content-type", `"${value}" is not a disposition`);
  return { type, params: parseParams(rest, "Content-Disposition") };
}

function boundaryOf(mediaType: MediaType): string {
  const boundary = mediaType.params.get("boundary");
  if (boundary === undefined)
    throw new MultipartError(
      "multipart-boundary",
      `${mediaType.type}/${mediaType.subtype} without a boundary`,
    );
  if (!BOUNDARY.test(boundary))
    throw new MultipartError(
      "multipart-boundary",
      "boundary is empty, longer than 70 characters or has a bad character",
    );
  return boundary;
}

interface Delimiter {
  /** Where the delimiter line starts (after the line break that belongs to it). */
  start: number;
  /** Where the content after it starts (after its own line end). */
  next: number;
  close: boolean;
}

/** Every delimiter line in the body: "--" boundary, then "--" for the last, then padding. */
function delimiters(text: string, boundary: string): Delimiter[] {
  const dash = `--${boundary}`;
  const out: Delimiter[] = [];
  for (let start = 0; start < text.length; ) {
    const nl = text.indexOf("\n", start);
    const end = nl < 0 ? text.length : nl;
    const line = text.slice(start, end).replace(/\r$/, "");
    if (line.startsWith(dash)) {
      let rest = line.slice(dash.length);
      const close = rest.startsWith("--");
      if (close) rest = rest.slice(2);
      // Transport padding (RFC 2046 §5.1.1) is spaces and tabs; anything else means this line
      // only begins like a delimiter.
      if (/^[ \t]*$/.test(rest)) {
        out.push({ start, next: nl < 0 ? text.length : nl + 1, close });
        if (close) break;
      }
    }
    if (nl < 0) break;
    start = nl + 1;
  }
  return out;
}

function parsePart(buf: Buffer, text: string, from: number, to: number): BodyPart {
  const headers: Array<{ name: string; value: string }> = [];
  let pos = from;
  let bodyStart = to;
  while (pos < to) {
    const nl = text.indexOf("\n", pos);
    const end = nl < 0 || nl >= to ? to : nl;
    const line = text.slice(pos, end).replace(/\r$/, "");
    const after = end === to ? to : end + 1;
    if (line === "") {
      bodyStart = after;
      break;
    }
    if (/^[ \t]/.test(line)) {
      const last = headers[headers.length - 1];
      if (!last)
        throw new MultipartError("multipart-part-header", "a body part starts with a continuation line");
      last.value = `${last.value} ${line.trim()}`;
    } else {
      const colon = line.indexOf(":");
      const name = colon < 0 ? "" : line.slice(0, colon).trim();
      if (!MIME_TOKEN.test(name))
        throw new MultipartError(
          "multipart-part-header",
          `a body part header "${line.slice(0, 40)}" is not name: value`,
        );
      headers.push({ name, value: line.slice(colon + 1).trim() });
    }
    pos = after;
  }
  const find = (n: string) => headers.find((h) => h.name.toLowerCase() === n)?.value;
  const ct = find("content-type");
  const cd = find("content-disposition");
  return {
    headers,
    contentType:
      ct === undefined ? { type: "text", subtype: "plain", params: new Map() } : parseMediaType(ct),
    disposition: cd === undefined ? undefined : parseDisposition(cd),
    body: buf.subarray(bodyStart, Math.max(bodyStart, to)),
  };
}

/** The parts of a multipart body, in order; preamble and epilogue are dropped. */
export function parseMultipart(contentType: MediaType | string, body: Uint8Array | string): BodyPart[] {
  const mediaType = typeof contentType === "string" ? parseMediaType(contentType) : contentType;
  if (mediaType.type !== "multipart")
    throw new MultipartError(
      "multipart-content-type",
      `${mediaType.type}/${mediaType.subtype} is not multipart`,
    );
  const boundary = boundaryOf(mediaType);
  const buf =
    typeof body === "string"
      ? Buffer.from(body, "utf8")
      : Buffer.from(body.buffer, body.byteOffset, body.length);
  // latin1 maps each byte to one character, so string offsets are byte offsets.
  const text = buf.toString("latin1");
  const marks = delimiters(text, boundary);
  if (marks.length === 0 || marks[0]!.close)
    throw new MultipartError("multipart-no-parts", "no body part delimited by the Content-Type's boundary");
  if (!marks[marks.length - 1]!.close)
    throw new MultipartError("multipart-unterminated", "the multipart body ends without its close delimiter");
  const parts: BodyPart[] = [];
  for (let i = 0; i + 1 < marks.length; i++) {
    const from = marks[i]!.next;
    const nextStart = marks[i + 1]!.start;
    // The line break before a delimiter belongs to the delimiter, not to the part (§5.1.1).
    let to = nextStart;
    if (to > from && text[to - 1] === "\n") to--;
    if (to > from && text[to - 1] === "\r") to--;
    parts.push(parsePart(buf, text, from, to));
  }
  return parts;
}

const isSdp = (t: MediaType): boolean => t.type === "application" && t.subtype === "sdp";

/** A part that describes a session: application/sdp with no disposition or "session" (RFC 3261 §20.11). */
const isSessionSdp = (p: BodyPart): boolean =>
  isSdp(p.contentType) && (p.disposition === undefined || p.disposition.type === "session");

function checkEncoding(part: BodyPart): void {
  const cte = part.headers
    .find((h) => h.name.toLowerCase() === "content-transfer-encoding")
    ?.value.toLowerCase();
  // SDP is text; Lync writes 7bit. A base64 or quoted-printable SDP would be a first.
  if (cte !== undefined && cte !== "7bit" && cte !== "8bit" && cte !== "binary")
    throw new MultipartError(
      "multipart-encoding",
      `SDP part with Content-Transfer-Encoding ${cte} is not supported`,
    );
}

function select(mediaType: MediaType, body: Buffer, depth: number): SelectedSdp | undefined {
  if (isSdp(mediaType)) return { body, part: undefined, fallback: false };
  if (mediaType.type !== "multipart") return undefined;
  if (depth >= MAX_DEPTH)
    throw new MultipartError("multipart-depth", `multipart nested deeper than ${MAX_DEPTH} levels`);
  const parts = parseMultipart(mediaType, body);
  if (mediaType.subtype === "alternative") {
    const sdps = parts.filter(isSessionSdp);
    const current = sdps.filter((p) => !p.disposition?.params.has(MS_PROXY_FALLBACK));
    const chosen = current[current.length - 1] ?? sdps[sdps.length - 1];
    if (chosen) {
      checkEncoding(chosen);
      return { body: chosen.body, part: chosen, fallback: current.length === 0 };
    }
  }
  // multipart/mixed (and an alternative of nested alternatives): the first part that holds an
  // SDP, in order; in "mixed" the order says nothing about preference.
  for (const p of mediaType.subtype === "alternative" ? [...parts].reverse() : parts) {
    if (isSdp(p.contentType)) {
      if (!isSessionSdp(p)) continue;
      checkEncoding(p);
      return { body: p.body, part: p, fallback: p.disposition?.params.has(MS_PROXY_FALLBACK) ?? false };
    }
    const inner = select(p.contentType, p.body, depth + 1);
    if (inner) return inner;
  }
  return undefined;
}

/**
 * The SDP in a SIP body: the body itself for application/sdp, the preferred SDP part of a
 * multipart body. Throws MultipartError when there is none or the body is malformed.
 */
export function selectSdpBody(contentType: string, body: Uint8Array | string): SelectedSdp {
  const mediaType = parseMediaType(contentType);
  const buf =
    typeof body === "string"
      ? Buffer.from(body, "utf8")
      : Buffer.from(body.buffer, body.byteOffset, body.length);
  const found = select(mediaType, buf, 0);
  if (found) return found;
  if (mediaType.type === "multipart")
    throw new MultipartError("multipart-no-sdp", "no application/sdp part in the body");
  throw new MultipartError(
    "multipart-content-type",
    `a ${mediaType.type}/${mediaType.subtype} body carries no SDP`,
  );
}
