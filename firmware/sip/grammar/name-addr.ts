/**
 * name-addr / addr-spec with header parameters (RFC 3261 §20.10, §25.1): the shape of From,
 * To, Contact, Route, Record-Route, Reply-To, P-Asserted-Identity values (one element; split
 * lists with `splitTopLevel` or `parseNameAddrList` first).
 *
 *   ( name-addr / addr-spec ) *( SEMI generic-param )
 *   name-addr = [ display-name ] LAQUOT addr-spec RAQUOT
 *   display-name = *(token LWS) / quoted-string
 *
 * Tolerances: no LWS needed between a token display name and "<" (RFC 4475 §3.1.1.6).
 * Strictness: no white space inside <...> (RFC 4475 §3.1.2.14); an addr-spec (no brackets)
 * must not contain "," "?" or ";" in its URI (RFC 3261 §20.10), so ";" starts parameters.
 */
import {
  clip,
  fail,
  hasNonUriChar,
  isToken,
  isWs,
  parseGenericParams,
  readQuoted,
  skipWs,
  splitTopLevel,
  trimWs,
} from "./lexer.ts";

export interface NameAddr {
  /** Display name: unquoted and unescaped when it was a quoted-string; undefined when absent. */
  display?: string;
  /** URI text inside <>, or the addr-spec up to the first ";". */
  uri: string;
  /** Header parameters (tag, expires, q, +sip.instance, ...): lowercased names, values as received. */
  params: Map<string, string | null>;
  /** True when the URI was enclosed in <>. */
  bracketed: boolean;
  raw: string;
}

const SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;

function checkUriText(uri: string, raw: string): void {
  if (!SCHEME_RE.test(uri)) fail(`missing or invalid URI scheme in "${clip(raw)}"`);
  if (hasNonUriChar(uri)) fail(`invalid character in URI of "${clip(raw)}"`);
  if (uri.length === uri.indexOf(":") + 1) fail(`empty URI in "${clip(raw)}"`);
}

/** Parses one name-addr or addr-spec with its parameters; throws SipParseError. */
export function parseNameAddr(text: string): NameAddr {
  const raw = text;
  const s = trimWs(text);
  if (s.length === 0) fail("empty address");
  let i = 0;
  let display: string | undefined;
  let bracketed = false;
  let uri: string;

  if (s[0] === '"') {
    const q = readQuoted(s, 0);
    display = q.value;
    i = skipWs(s, q.end);
    if (s[i] !== "<") fail(`expected "<" after the display name in "${clip(raw)}"`);
  } else {
    const lt = s.indexOf("<");
    if (lt >= 0) {
      const dn = trimWs(s.slice(0, lt));
      if (dn.length > 0) {
        for (const word of dn.split(/[ \t]+/)) {
          if (!isToken(word)) fail(`display name "${clip(dn)}" must be tokens or a quoted string`);
        }
        display = dn;
      }
      i = lt;
    }
  }

  if (s[i] === "<") {
    bracketed = true;
    const gt = s.indexOf(">", i + 1);
    if (gt < 0) fail(`unterminated "<" in "${clip(raw)}"`);
    uri = s.slice(i + 1, gt);
    if (uri.length > 0 && (isWs(uri.charCodeAt(0)) || isWs(uri.charCodeAt(uri.length - 1))))
      fail(`white space inside <> in "${clip(raw)}"`);
    checkUriText(uri, raw);
    i = gt + 1;
  } else {
    let end = s.indexOf(";");
    if (end < 0) end = s.length;
    uri = trimWs(s.slice(0, end));
    if (/[,?]/.test(uri)) fail(`a URI with "," or "?" must be enclosed in <> in "${clip(raw)}"`);
    if (uri.includes(">")) fail(`unbalanced ">" in "${clip(raw)}"`);
    checkUriText(uri, raw);
    i = end;
  }

  const params = parseGenericParams(s, i, "address");
  const out: NameAddr = { uri, params, bracketed, raw };
  if (display !== undefined) out.display = display;
  return out;
}

/** Parses a comma-separated list of name-addr / addr-spec elements (Contact, Route, ...). */
export function parseNameAddrList(text: string): NameAddr[] {
  return splitTopLevel(text).map((el) => {
    if (el === "") fail(`empty element in address list "${clip(text)}"`);
    return parseNameAddr(el);
  });
}

/** The tag parameter of a From/To value, or undefined (also when the value does not parse). */
export function tagOf(text: string): string | undefined {
  try {
    return parseNameAddr(text).params.get("tag") ?? undefined;
  } catch {
    return undefined;
  }
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** Formats `"display" <uri>;p=v`; the display name is always quoted, the URI always bracketed. */
export function formatNameAddr(addr: {
  display?: string;
  uri: string;
  params?: Map<string, string | null>;
}): string {
  let out = addr.display !== undefined ? `${quote(addr.display)} <${addr.uri}>` : `<${addr.uri}>`;
  for (const [k, v] of addr.params ?? []) out += v === null ? `;${k}` : `;${k}=${v}`;
  return out;
}
