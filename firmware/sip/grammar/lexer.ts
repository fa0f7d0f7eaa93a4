/**
 * Character classes and small scanners shared by the SIP grammar helpers (RFC 3261 §25.1).
 * All scanners work on header values that the message parser has already unfolded, so
 * linear white space (LWS) is a run of SP / HTAB.
 */
import { SipParseError } from "../../core/errors.ts";

function table(chars: string, alnum = true): Uint8Array {
  const t = new Uint8Array(128);
  if (alnum) {
    for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
    for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
    for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  }
  for (const ch of chars) t[ch.charCodeAt(0)] = 1;
  return t;
}

/** token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~") */
export const TOKEN = table("-.!%*_+`'~");
/** word (Call-ID) = token chars plus ( ) < > : \ DQUOTE / [ ] ? { } */
export const WORD = table("-.!%*_+`'~()<>:\\\"/[]?{}");
/** unreserved = alphanum / mark */
export const UNRESERVED = table("-_.!~*'()");
/** user = unreserved / escaped / "&" / "=" / "+" / "$" / "," / ";" / "?" / "/" */
export const USER = table("-_.!~*'()&=+$,;?/");
/** password = unreserved / escaped / "&" / "=" / "+" / "$" / "," */
export const PASSWORD = table("-_.!~*'()&=+$,");
/** paramchar = param-unreserved / unreserved / escaped */
export const PARAMCHAR = table("-_.!~*'()[]/:&+$");
/** hname / hvalue = hnv-unreserved / unreserved / escaped */
export const HNV = table("-_.!~*'()[]/?:+$");
/** Generic parameter values: token, host (with IPv6 reference, or a bare IPv6 for received). */
export const GEN_VALUE = table("-.!%*_+`'~[]:");
/** hostname / IPv4 characters. */
export const HOSTNAME = table("-.");

export function fail(message: string, code = "sip-parse"): never {
  throw new SipParseError(message, code);
}

export function isWs(c: number): boolean {
  return c === 0x20 || c === 0x09;
}

/** Trims SP and HTAB only (String.prototype.trim would also eat U+FEFF and friends). */
export function trimWs(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && isWs(s.charCodeAt(a))) a++;
  while (b > a && isWs(s.charCodeAt(b - 1))) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

export function skipWs(s: string, i: number): number {
  while (i < s.length && isWs(s.charCodeAt(i))) i++;
  return i;
}

/** Index just past the run of characters of class t starting at i. */
export function scan(s: string, i: number, t: Uint8Array): number {
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c >= 128 || t[c] !== 1) break;
    i++;
  }
  return i;
}

export function allIn(s: string, t: Uint8Array): boolean {
  return s.length > 0 && scan(s, 0, t) === s.length;
}

export function isToken(s: string): boolean {
  return allIn(s, TOKEN);
}

/**
 * Reads a quoted-string starting at s[i] === '"'. Returns the unescaped content and the
 * index after the closing quote. quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F).
 */
export function readQuoted(s: string, i: number): { value: string; end: number } {
  let out = "";
  let j = i + 1;
  while (j < s.length) {
    const ch = s[j]!;
    if (ch === '"') return { value: out, end: j + 1 };
    if (ch === "\\") {
      const next = s.charCodeAt(j + 1);
      if (Number.isNaN(next) || next > 0x7f || next === 0x0a || next === 0x0d) break;
      out += s[j + 1];
      j += 2;
      continue;
    }
    out += ch;
    j++;
  }
  return fail(`unterminated quoted string in "${clip(s)}"`);
}

/**
 * Splits a header value at top-level occurrences of sep: not inside "quoted strings" (with
 * backslash escapes) and not inside <angle brackets>. Elements are trimmed (SP/HT).
 * Unbalanced quotes or brackets simply run to the end; callers that care validate elements.
 */
export function splitTopLevel(s: string, sep = ","): string[] {
  const out: string[] = [];
  let depthAngle = false;
  let inQuote = false;
  let from = 0;
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (inQuote) {
      if (ch === "\\") i++;
      else if (ch === '"') inQuote = false;
    } else if (ch === '"') inQuote = true;
    else if (ch === "<") depthAngle = true;
    else if (ch === ">") depthAngle = false;
    else if (ch === sep && !depthAngle) {
      out.push(trimWs(s.slice(from, i)));
      from = i + 1;
    }
  }
  out.push(trimWs(s.slice(from)));
  return out;
}

/**
 * Parses `*( SEMI generic-param )` starting at i (SEMI = SWS ";" SWS).
 * generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string.
 * Names are lowercased; values are kept as received (a quoted-string keeps its quotes).
 * The first occurrence of a name wins.
 */
export function parseGenericParams(s: string, i: number, what: string): Map<string, string | null> {
  const params = new Map<string, string | null>();
  for (;;) {
    i = skipWs(s, i);
    if (i >= s.length) return params;
    if (s[i] !== ";") fail(`unexpected "${s[i]}" in ${what} "${clip(s)}"`);
    i = skipWs(s, i + 1);
    const nameEnd = scan(s, i, TOKEN);
    if (nameEnd === i) fail(`empty parameter name in ${what} "${clip(s)}"`);
    const name = s.slice(i, nameEnd).toLowerCase();
    i = skipWs(s, nameEnd);
    let value: string | null = null;
    if (s[i] === "=") {
      i = skipWs(s, i + 1);
      if (s[i] === '"') {
        const q = readQuoted(s, i);
        value = s.slice(i, q.end);
        i = q.end;
      } else {
        const end = scan(s, i, GEN_VALUE);
        if (end === i) fail(`empty value for parameter "${name}" in ${what} "${clip(s)}"`);
        value = s.slice(i, end);
        i = end;
      }
    }
    if (!params.has(name)) params.set(name, value);
  }
}

/** Validates a host: hostname, IPv4address or IPv6reference (brackets included in the text). */
export function isHost(h: string): boolean {
  if (h.length === 0) return false;
  if (h.charCodeAt(0) === 0x5b) {
    return h.length > 2 && h.endsWith("]") && isIpv6(h.slice(1, -1));
  }
  // labels: alphanum with inner "-", separated by single dots; a trailing dot is allowed
  let labelStart = true;
  for (let i = 0; i < h.length; i++) {
    const c = h.charCodeAt(i);
    if (c === 0x2e) {
      if (labelStart || h.charCodeAt(i - 1) === 0x2d) return false;
      labelStart = true;
    } else if (c === 0x2d) {
      if (labelStart) return false;
    } else if (c < 128 && HOSTNAME[c] === 1) {
      labelStart = false;
    } else return false;
  }
  return h.charCodeAt(h.length - 1) !== 0x2d;
}

/**
 * IPv6 address check, tolerant as RFC 5118 §4.10 asks: the RFC 3261 ABNF bug allows
 * "2001:db8:::192.0.2.1", which receivers must accept.
 */
export function isIpv6(a: string): boolean {
  if (a.length < 2 || a.length > 64) return false;
  let colons = 0;
  for (let i = 0; i < a.length; i++) {
    const c = a.charCodeAt(i);
    if (c === 0x3a) colons++;
    else if (
      !((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66) || c === 0x2e)
    )
      return false;
  }
  if (colons < 2 || colons > 8) return false;
  const groups = a.split(":");
  const last = groups[groups.length - 1]!;
  if (last.includes(".")) {
    if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(last)) return false;
    groups.pop();
  }
  for (const g of groups) if (g.length > 4 || g.includes(".")) return false;
  return true;
}

/** Parses 1*DIGIT into a number no larger than max; undefined when malformed or out of range. */
export function parseDigits(s: string, max: number): number | undefined {
  if (s.length === 0) return undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return undefined;
  }
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    n = n * 10 + (s.charCodeAt(i) - 0x30);
    if (n > max) return undefined;
  }
  return n;
}

/** True when s holds a control character (HTAB counts unless allowTab). */
export function hasControl(s: string, allowTab = false): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && !(allowTab && c === 0x09)) || c === 0x7f) return true;
  }
  return false;
}

/** True when s holds a character that cannot appear in a URI: CTL, SP, "<", ">", DQUOTE. */
export function hasNonUriChar(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c <= 0x20 || c === 0x7f || c === 0x3c || c === 0x3e || c === 0x22) return true;
  }
  return false;
}

/** Shortens a value for an error message, control characters shown as "?". */
export function clip(s: string, n = 80): string {
  let safe = "";
  const end = Math.min(s.length, n);
  for (let i = 0; i < end; i++) {
    const c = s.charCodeAt(i);
    safe += c < 0x20 || c === 0x7f ? "?" : s[i];
  }
  return s.length > n ? `${safe}…` : safe;
}
