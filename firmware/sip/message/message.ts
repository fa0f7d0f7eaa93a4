/**
 * The SIP message model (RFC 3261 §7) and header accessors.
 *
 * Headers are kept as an ordered list of lines exactly as received: `name` as spelled on the
 * wire ("CSEQ", "f"), `value` with surrounding SP/HT trimmed and each fold (CRLF + SP/HT run)
 * replaced by one space, otherwise byte-exact (TLS-DSK signs the raw text). Accessors match
 * names case-insensitively and treat compact forms (RFC 3261 §7.3.3 and later RFCs) as their
 * long names.
 */
import { splitTopLevel } from "../grammar/lexer.ts";

export interface SipHeader {
  name: string;
  value: string;
}

export interface SipRequest {
  kind: "request";
  method: string;
  uri: string;
  version: string;
  headers: SipHeader[];
  body: Buffer;
}

export interface SipResponse {
  kind: "response";
  status: number;
  reason: string;
  version: string;
  headers: SipHeader[];
  body: Buffer;
}

export type SipMessage = SipRequest | SipResponse;

export const SIP_VERSION = "SIP/2.0";

/** Compact form → long name (lowercase). */
const COMPACT: Record<string, string> = {
  i: "call-id",
  m: "contact",
  e: "content-encoding",
  l: "content-length",
  c: "content-type",
  f: "from",
  s: "subject",
  k: "supported",
  t: "to",
  v: "via",
  o: "event",
  r: "refer-to",
  b: "referred-by",
  u: "allow-events",
  x: "session-expires",
  a: "accept-contact",
  j: "reject-contact",
  d: "request-disposition",
  y: "identity",
  n: "identity-info",
};

/** The canonical key of a header name: lowercase long form ("l" and "CONTENT-LENGTH" → "content-length"). */
export function headerKey(name: string): string {
  const lower = name.toLowerCase();
  if (lower.length === 1) return COMPACT[lower] ?? lower;
  return lower;
}

/** Value of the first header with this name (case-insensitive, compact forms match). */
export function header(msg: SipMessage, name: string): string | undefined {
  const key = headerKey(name);
  for (const h of msg.headers) if (headerKey(h.name) === key) return h.value;
  return undefined;
}

/** Values of every line with this name, in order; not comma-split. */
export function headers(msg: SipMessage, name: string): string[] {
  const key = headerKey(name);
  const out: string[] = [];
  for (const h of msg.headers) if (headerKey(h.name) === key) out.push(h.value);
  return out;
}

/**
 * Every element of a comma-separated list header across all its lines, split only at
 * top-level commas (not inside "quoted strings" or <angle brackets>), trimmed; empty
 * elements are dropped.
 */
export function headerList(msg: SipMessage, name: string): string[] {
  const out: string[] = [];
  for (const v of headers(msg, name)) for (const el of splitTopLevel(v)) if (el !== "") out.push(el);
  return out;
}

/** Replaces every occurrence with one line (at the position of the first, else appended). */
export function setHeader(msg: SipMessage, name: string, value: string): void {
  const key = headerKey(name);
  const idx = msg.headers.findIndex((h) => headerKey(h.name) === key);
  if (idx < 0) {
    msg.headers.push({ name, value });
    return;
  }
  msg.headers = msg.headers.filter((h, i) => i <= idx || headerKey(h.name) !== key);
  msg.headers[idx] = { name, value };
}

export function addHeader(msg: SipMessage, name: string, value: string): void {
  msg.headers.push({ name, value });
}

export function removeHeader(msg: SipMessage, name: string): void {
  const key = headerKey(name);
  msg.headers = msg.headers.filter((h) => headerKey(h.name) !== key);
}

function toBody(body: Buffer | string | undefined): Buffer {
  if (body === undefined) return Buffer.alloc(0);
  return typeof body === "string" ? Buffer.from(body, "utf8") : body;
}

export function request(
  method: string,
  uri: string,
  headers: Array<[string, string]>,
  body?: Buffer | string,
): SipRequest {
  return {
    kind: "request",
    method,
    uri,
    version: SIP_VERSION,
    headers: headers.map(([name, value]) => ({ name, value })),
    body: toBody(body),
  };
}

export function response(
  status: number,
  reason: string,
  headers: Array<[string, string]>,
  body?: Buffer | string,
): SipResponse {
  return {
    kind: "response",
    status,
    reason,
    version: SIP_VERSION,
    headers: headers.map(([name, value]) => ({ name, value })),
    body: toBody(body),
  };
}

/**
 * Mandatory headers (RFC 3261 §8.1.1) missing from a message: To, From, Call-ID, CSeq, Via,
 * and Max-Forwards for requests. The parser only insists on Via and CSeq (without them no
 * answer can be routed or matched); a UA answers 400 when this list is not empty
 * (RFC 4475 §3.3.1), except that Max-Forwards alone may be missing (RFC 2543 peers, §3.4.1).
 */
export function missingHeaders(msg: SipMessage): string[] {
  const names = ["To", "From", "Call-ID", "CSeq", "Via"];
  if (msg.kind === "request") names.push("Max-Forwards");
  return names.filter((n) => header(msg, n) === undefined);
}
