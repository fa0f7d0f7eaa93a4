/**
 * SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966 loosely), plus a generic
 * absoluteURI check for other schemes.
 *
 * - `user`, `password`, parameter names/values and header names/values are unescaped
 *   (%HH decoded as UTF-8); `raw` keeps the text as received. Parameter names are lowercased.
 * - `host` keeps IPv6 references in brackets ("[2001:db8::1]"); hostnames keep their case.
 * - tel: the telephone-subscriber goes in `user`, `host` is "".
 * - other schemes: `opaque` holds everything after "scheme:", `host` is "".
 */
import { clip, fail, HNV, hasNonUriChar, isHost, PARAMCHAR, PASSWORD, parseDigits, USER } from "./lexer.ts";

export interface SipUri {
  scheme: string;
  user?: string;
  password?: string;
  host: string;
  port?: number;
  params: Map<string, string | null>;
  headers: Map<string, string>;
  /** For schemes other than sip/sips/tel: the text after "scheme:". */
  opaque?: string;
  raw: string;
}

const SCHEME_RE = /^[A-Za-z][A-Za-z0-9+.-]*$/;

/** Decodes %HH escapes (as UTF-8); throws on a malformed escape. chars: allowed raw characters. */
function pctDecode(s: string, chars: Uint8Array, what: string, raw: string): string {
  let hasEscape = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25) {
      if (!/^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3)))
        fail(`bad %-escape in ${what} of URI "${clip(raw)}"`);
      hasEscape = true;
      i += 2;
    } else if (c >= 128 || chars[c] !== 1) {
      fail(`invalid character "${clip(s[i]!)}" in ${what} of URI "${clip(raw)}"`);
    }
  }
  if (!hasEscape) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "%") {
      bytes.push(Number.parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(s.charCodeAt(i));
  }
  return Buffer.from(bytes).toString("utf8");
}

function pctEncode(s: string, chars: Uint8Array): string {
  let out = "";
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (c < 128 && chars[c] === 1) out += ch;
    else for (const b of Buffer.from(ch, "utf8")) out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

function parseUriParams(text: string, raw: string): Map<string, string | null> {
  const params = new Map<string, string | null>();
  if (text === "") return params;
  for (const p of text.split(";")) {
    if (p === "") fail(`empty parameter in URI "${clip(raw)}"`);
    const eq = p.indexOf("=");
    const name = pctDecode(eq < 0 ? p : p.slice(0, eq), PARAMCHAR, "parameter name", raw).toLowerCase();
    if (name === "") fail(`empty parameter name in URI "${clip(raw)}"`);
    const value = eq < 0 ? null : pctDecode(p.slice(eq + 1), PARAMCHAR, "parameter value", raw);
    if (value === "") fail(`empty value for parameter "${name}" in URI "${clip(raw)}"`);
    if (!params.has(name)) params.set(name, value);
  }
  return params;
}

/** Parses a URI; throws SipParseError (code "sip-parse") on malformed input. */
export function parseUri(text: string): SipUri {
  const raw = text;
  const colon = text.indexOf(":");
  const schemeText = colon > 0 ? text.slice(0, colon) : "";
  if (!SCHEME_RE.test(schemeText)) fail(`URI "${clip(raw)}" has no valid scheme`);
  const scheme = schemeText.toLowerCase();
  const rest = text.slice(colon + 1);
  if (rest.length === 0) fail(`empty URI "${clip(raw)}"`);
  if (hasNonUriChar(rest)) fail(`invalid character in URI "${clip(raw)}"`);

  if (scheme === "tel") {
    const semi = rest.indexOf(";");
    const number = semi < 0 ? rest : rest.slice(0, semi);
    if (!/^(\+[0-9().-]*[0-9][0-9().-]*|[0-9A-Fa-f*#().pw-]+)$/.test(number))
      fail(`invalid telephone number in URI "${clip(raw)}"`);
    return {
      scheme,
      user: number,
      host: "",
      params: parseUriParams(semi < 0 ? "" : rest.slice(semi + 1), raw),
      headers: new Map(),
      raw,
    };
  }

  if (scheme !== "sip" && scheme !== "sips") {
    return { scheme, host: "", params: new Map(), headers: new Map(), opaque: rest, raw };
  }

  const uri: SipUri = { scheme, host: "", params: new Map(), headers: new Map(), raw };
  let hostStart = 0;
  const at = rest.indexOf("@");
  if (at >= 0) {
    const userinfo = rest.slice(0, at);
    const pc = userinfo.indexOf(":");
    const userText = pc < 0 ? userinfo : userinfo.slice(0, pc);
    if (userText === "") fail(`empty user part in URI "${clip(raw)}"`);
    uri.user = pctDecode(userText, USER, "user part", raw);
    if (pc >= 0) uri.password = pctDecode(userinfo.slice(pc + 1), PASSWORD, "password", raw);
    hostStart = at + 1;
  }
  let hostEnd = hostStart;
  if (rest[hostStart] === "[") {
    const close = rest.indexOf("]", hostStart);
    if (close < 0) fail(`unterminated IPv6 reference in URI "${clip(raw)}"`);
    hostEnd = close + 1;
  }
  while (hostEnd < rest.length && rest[hostEnd] !== ";" && rest[hostEnd] !== "?") hostEnd++;
  const hostport = rest.slice(hostStart, hostEnd);
  const closeBracket = hostport.startsWith("[") ? hostport.indexOf("]") + 1 : 0;
  const portColon = hostport.indexOf(":", closeBracket);
  const host = portColon < 0 ? hostport : hostport.slice(0, portColon);
  if (!isHost(host)) fail(`invalid host "${clip(host)}" in URI "${clip(raw)}"`);
  uri.host = host;
  if (portColon >= 0) {
    const port = parseDigits(hostport.slice(portColon + 1), 65535);
    if (port === undefined) fail(`invalid port in URI "${clip(raw)}"`);
    uri.port = port;
  }
  const q = rest.indexOf("?", hostEnd);
  uri.params = parseUriParams(
    rest.slice(
      hostEnd < rest.length && rest[hostEnd] === ";" ? hostEnd + 1 : hostEnd,
      q < 0 ? rest.length : q,
    ),
    raw,
  );
  if (q >= 0) {
    const htext = rest.slice(q + 1);
    if (htext === "") fail(`empty header part in URI "${clip(raw)}"`);
    for (const h of htext.split("&")) {
      const eq = h.indexOf("=");
      if (eq <= 0) fail(`malformed header "${clip(h)}" in URI "${clip(raw)}"`);
      const name = pctDecode(h.slice(0, eq), HNV, "header name", raw);
      const value = pctDecode(h.slice(eq + 1), HNV, "header value", raw);
      if (!uri.headers.has(name)) uri.headers.set(name, value);
    }
  }
  return uri;
}

/** Formats a URI from its parts, escaping where needed (raw is ignored). */
export function formatUri(uri: SipUri): string {
  const params = [...uri.params]
    .map(([k, v]) =>
      v === null ? `;${pctEncode(k, PARAMCHAR)}` : `;${pctEncode(k, PARAMCHAR)}=${pctEncode(v, PARAMCHAR)}`,
    )
    .join("");
  if (uri.scheme === "tel") return `tel:${uri.user ?? ""}${params}`;
  if (uri.scheme !== "sip" && uri.scheme !== "sips") return `${uri.scheme}:${uri.opaque ?? ""}`;
  let out = `${uri.scheme}:`;
  if (uri.user !== undefined) {
    out += pctEncode(uri.user, USER);
    if (uri.password !== undefined) out += `:${pctEncode(uri.password, PASSWORD)}`;
    out += "@";
  }
  const host = uri.host.includes(":") && !uri.host.startsWith("[") ? `[${uri.host}]` : uri.host;
  out += host;
  if (uri.port !== undefined) out += `:${uri.port}`;
  out += params;
  if (uri.headers.size > 0) {
    out += `?${[...uri.headers].map(([k, v]) => `${pctEncode(k, HNV)}=${pctEncode(v, HNV)}`).join("&")}`;
  }
  return out;
}

/** True when text is a syntactically acceptable URI (sip/sips/tel fully parsed, others generic). */
export function isUri(text: string): boolean {
  try {
    parseUri(text);
    return true;
  } catch {
    return false;
  }
}
