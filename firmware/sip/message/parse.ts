/**
 * parseMessage: one complete SIP message with datagram semantics (RFC 3261 §7, §18.3).
 *
 * Syntax: start line with single SPs; CRLF line ends; header lines `token *(SP/HT) ":" value`
 * with folding; UTF-8 header section; an empty line ends the header section (mandatory).
 * Body: Content-Length bytes (extra trailing octets are ignored, RFC 4475 §3.1.1.8); without
 * Content-Length the body is the rest of the datagram (RFC 4475 §3.4.1).
 *
 * Value checks a UA relies on (each failure is a typed SipParseError):
 * - version SIP/2.0 only (code "sip-version", answer 505);
 * - status code 100–699, Request-URI a URI without spaces or <> (no URI headers in a SIP
 *   Request-URI, RFC 3261 §19.1.1);
 * - Via and CSeq present; CSeq number 32-bit, CSeq method equal to the request method;
 * - Max-Forwards 0–255, Expires and Retry-After delta-seconds within 2^32-1, Date in GMT;
 * - Content-Length digits, one value only, no larger than the bytes present
 *   (code "sip-content-length");
 * - From, To, Contact, Route, Record-Route, Reply-To, P-Asserted-Identity, P-Preferred-Identity
 *   as (lists of) name-addr/addr-spec, their SIP URIs parsed; Via elements parsed; Call-ID
 *   a valid word["@"word].
 * Application semantics (missing To/From/Call-ID, unknown schemes, Require, ...) are left to
 * the layers above; see `missingHeaders`.
 *
 * The function throws SipParseError and nothing else: an unexpected internal failure is
 * reported with code "sip-parse-internal" (the fuzz tests assert it never happens).
 */
import { SipParseError } from "../../core/errors.ts";
import { parseCSeq } from "../grammar/cseq.ts";
import {
  allIn,
  clip,
  fail,
  hasControl,
  isToken,
  parseDigits,
  splitTopLevel,
  trimWs,
  WORD,
} from "../grammar/lexer.ts";
import { parseNameAddr } from "../grammar/name-addr.ts";
import { parseUri } from "../grammar/uri.ts";
import { parseViaList } from "../grammar/via.ts";
import { headerKey, SIP_VERSION, type SipHeader, type SipMessage } from "./message.ts";

/** Error codes thrown by the parser and the framer. */
export const SipParseCodes = {
  /** Malformed syntax or value: answer 400 (requests) or drop (responses). */
  parse: "sip-parse",
  /** Unsupported SIP version: answer 505. */
  version: "sip-version",
  /** Content-Length missing (stream), malformed, conflicting or larger than the data. */
  contentLength: "sip-content-length",
  /** A framed message larger than the framer's limit. */
  tooLarge: "sip-too-large",
  /** A parser bug caught at the boundary; never expected. */
  internal: "sip-parse-internal",
} as const;

const MAX_U32 = 0xffffffff;
const MAX_CONTENT_LENGTH = 0x7fffffff;
const utf8 = new TextDecoder("utf-8", { fatal: true });
const CRLFCRLF = Buffer.from("\r\n\r\n");
const DATE_RE =
  /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;
const METHOD_CHARS_RE = /^[A-Za-z0-9\-.!%*_+`'~]+$/;

/**
 * Resolves the Content-Length header values of one message: undefined when there is none;
 * throws (code "sip-content-length") when a value is not 1*DIGIT, too large, or the values
 * disagree (RFC 4475 §3.3.9: framing is then unknowable).
 */
export function resolveContentLength(values: string[]): number | undefined {
  let result: number | undefined;
  for (const v of values) {
    const n = parseDigits(trimWs(v), MAX_CONTENT_LENGTH);
    if (n === undefined) fail(`invalid Content-Length "${clip(v)}"`, SipParseCodes.contentLength);
    if (result !== undefined && result !== n)
      fail(`conflicting Content-Length values ${result} and ${n}`, SipParseCodes.contentLength);
    result = n;
  }
  return result;
}

/**
 * Content-Length values found in a raw header section (bytes up to the empty line), as the
 * stream framer needs them before the whole message is there. Decoded as latin1 so it never
 * fails; only ASCII matters here.
 */
export function contentLengthValues(headerSection: Buffer): string[] {
  const text = headerSection.toString("latin1");
  const out: string[] = [];
  let inLength = false;
  let pos = 0;
  while (pos <= text.length) {
    let eol = text.indexOf("\r\n", pos);
    if (eol < 0) eol = text.length;
    const c = text.charCodeAt(pos);
    if (c === 0x20 || c === 0x09) {
      if (inLength) out[out.length - 1] += ` ${text.slice(pos, eol)}`;
    } else {
      inLength = false;
      // only lines starting with "l" or "c" can be Content-Length
      if (c === 0x6c || c === 0x4c || c === 0x63 || c === 0x43) {
        const colon = text.indexOf(":", pos);
        if (colon >= 0 && colon < eol && headerKey(trimWs(text.slice(pos, colon))) === "content-length") {
          out.push(text.slice(colon + 1, eol));
          inLength = true;
        }
      }
    }
    pos = eol + 2;
  }
  return out;
}

export function parseMessage(data: Buffer | string): SipMessage {
  try {
    return parse(typeof data === "string" ? Buffer.from(data, "utf8") : data);
  } catch (err) {
    if (err instanceof SipParseError) throw err;
    const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    throw new SipParseError(`internal parser error: ${text}`, SipParseCodes.internal);
  }
}

function parse(buf: Buffer): SipMessage {
  let start = 0;
  // RFC 3261 §7.5: CRLFs before the start line are ignored.
  while (start + 1 < buf.length && buf[start] === 0x0d && buf[start + 1] === 0x0a) start += 2;
  if (start >= buf.length) fail("empty message");
  const headEnd = buf.indexOf(CRLFCRLF, start);
  if (headEnd < 0) fail("no empty line ends the header section");
  let head: string;
  try {
    head = utf8.decode(buf.subarray(start, headEnd));
  } catch {
    return fail("header section is not valid UTF-8");
  }
  const lines = head.split("\r\n");
  for (const line of lines) {
    if (line.includes("\r") || line.includes("\n")) fail("bare CR or LF in the header section");
  }

  const msg = parseStartLine(lines[0]!);
  const raw: Array<{ name: string; value: string }> = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const c = line.charCodeAt(0);
    if (c === 0x20 || c === 0x09) {
      const prev = raw[raw.length - 1];
      if (prev === undefined) fail("continuation line before the first header");
      prev.value += ` ${line.replace(/^[ \t]+/, "")}`;
      continue;
    }
    const colon = line.indexOf(":");
    if (colon < 0) fail(`header line without ":": "${clip(line)}"`);
    const name = trimWs(line.slice(0, colon));
    if (!isToken(name)) fail(`invalid header name "${clip(line.slice(0, colon))}"`);
    raw.push({ name, value: line.slice(colon + 1) });
  }
  const hdrs: SipHeader[] = raw.map((h) => ({ name: h.name, value: trimWs(h.value) }));
  const keys = hdrs.map((h) => headerKey(h.name));
  msg.headers = hdrs;

  const bodyStart = headEnd + 4;
  const clValues: string[] = [];
  for (let i = 0; i < hdrs.length; i++) if (keys[i] === "content-length") clValues.push(hdrs[i]!.value);
  const cl = resolveContentLength(clValues);
  const available = buf.length - bodyStart;
  if (cl !== undefined && cl > available)
    fail(`Content-Length ${cl} is larger than the ${available} body bytes`, SipParseCodes.contentLength);
  msg.body = Buffer.from(buf.subarray(bodyStart, cl === undefined ? buf.length : bodyStart + cl));

  validateHeaders(msg, keys);
  return msg;
}

function parseStartLine(line: string): SipMessage {
  if (hasControl(line, true)) fail("control character in the start line");
  if (line.slice(0, 4).toUpperCase() === "SIP/") {
    const sp1 = line.indexOf(" ");
    if (sp1 < 0) fail(`malformed status line "${clip(line)}"`);
    const version = line.slice(0, sp1);
    checkVersion(version);
    const sp2 = line.indexOf(" ", sp1 + 1);
    const codeText = sp2 < 0 ? line.slice(sp1 + 1) : line.slice(sp1 + 1, sp2);
    if (!/^\d{3}$/.test(codeText)) fail(`malformed status code "${clip(codeText)}"`);
    const status = Number(codeText);
    if (status < 100 || status > 699) fail(`status code ${status} is outside 100-699`);
    const reason = sp2 < 0 ? "" : line.slice(sp2 + 1);
    return { kind: "response", status, reason, version, headers: [], body: Buffer.alloc(0) };
  }
  const parts = line.split(" ");
  if (parts.length !== 3 || parts.some((p) => p === ""))
    fail(`request line "${clip(line)}" must be Method SP Request-URI SP SIP-Version`);
  const [method, uri, version] = parts as [string, string, string];
  if (!METHOD_CHARS_RE.test(method)) fail(`invalid method "${clip(method)}"`);
  if (/\t/.test(uri)) fail("white space in the Request-URI");
  const parsed = parseUri(uri);
  if ((parsed.scheme === "sip" || parsed.scheme === "sips") && parsed.headers.size > 0)
    fail(`headers are not allowed in a Request-URI: "${clip(uri)}"`);
  checkVersion(version);
  return { kind: "request", method, uri, version, headers: [], body: Buffer.alloc(0) };
}

function checkVersion(version: string): void {
  if (version.toUpperCase() !== SIP_VERSION) {
    if (/^SIP\/\d+\.\d+$/i.test(version))
      fail(`unsupported SIP version "${clip(version)}"`, SipParseCodes.version);
    fail(`malformed SIP version "${clip(version)}"`);
  }
}

function checkAddress(value: string, list: boolean, name: string): void {
  const elements = list ? splitTopLevel(value) : [value];
  for (const el of elements) {
    if (el === "") fail(`empty element in ${name}`);
    const addr = parseNameAddr(el);
    const scheme = addr.uri.slice(0, addr.uri.indexOf(":")).toLowerCase();
    if (scheme === "sip" || scheme === "sips" || scheme === "tel") parseUri(addr.uri);
  }
}

function validateHeaders(msg: SipMessage, keys: string[]): void {
  let haveVia = false;
  let haveCSeq = false;
  for (let i = 0; i < msg.headers.length; i++) {
    const h = msg.headers[i]!;
    const key = keys[i];
    const v = h.value;
    switch (key) {
      case "via":
        parseViaList(v);
        haveVia = true;
        break;
      case "cseq": {
        const cseq = parseCSeq(v);
        if (msg.kind === "request" && cseq.method !== msg.method)
          fail(`CSeq method ${clip(cseq.method)} does not match request method ${clip(msg.method)}`);
        haveCSeq = true;
        break;
      }
      case "from":
      case "to":
        checkAddress(v, false, h.name);
        break;
      case "contact":
        if (v !== "*") checkAddress(v, true, h.name);
        break;
      case "route":
      case "record-route":
      case "reply-to":
      case "p-asserted-identity":
      case "p-preferred-identity":
        checkAddress(v, true, h.name);
        break;
      case "call-id": {
        const at = v.indexOf("@");
        const ok = at < 0 ? allIn(v, WORD) : allIn(v.slice(0, at), WORD) && allIn(v.slice(at + 1), WORD);
        if (!ok) fail(`invalid Call-ID "${clip(v)}"`);
        break;
      }
      case "max-forwards":
        if (parseDigits(v, 255) === undefined) fail(`Max-Forwards "${clip(v)}" is not 0-255`);
        break;
      case "expires":
        if (parseDigits(v, MAX_U32) === undefined) fail(`Expires "${clip(v)}" is not delta-seconds`);
        break;
      case "retry-after": {
        const m = /^\d+/.exec(v);
        if (m === null || parseDigits(m[0], MAX_U32) === undefined)
          fail(`Retry-After "${clip(v)}" is not delta-seconds`);
        break;
      }
      case "date":
        if (!DATE_RE.test(v)) fail(`Date "${clip(v)}" is not an RFC 1123 date in GMT`);
        break;
    }
  }
  if (!haveVia) fail("missing Via header");
  if (!haveCSeq) fail("missing CSeq header");
}
