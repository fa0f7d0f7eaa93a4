/**
 * Parsing and formatting of SIP authentication header values:
 * WWW-Authenticate / Proxy-Authenticate, Authorization / Proxy-Authorization and
 * (Proxy-)Authentication-Info, in the `scheme name="quoted", name=token, …` form MS-SIPAE uses.
 *
 * The parser is total: any input either parses or raises AuthError("auth-header-malformed").
 */
import { AuthError } from "../../core/errors.ts";

export interface AuthChallenge {
  /** The scheme token as received (e.g. "TLS-DSK", "NTLM"). */
  scheme: string;
  /** Parameter names lower-cased; values unquoted (escapes resolved); token values kept verbatim. */
  params: Map<string, string>;
  /** An RFC 7235 token68 credential instead of parameters (e.g. `Negotiate YII…`), when present. */
  token68?: string;
}

const TOKEN_CHAR = /[A-Za-z0-9!#$%&'*+\-.^_`|~]/;
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*$/;

function malformed(detail: string): AuthError {
  return new AuthError("auth-header-malformed", `malformed auth header: ${detail}`);
}

function isWs(c: string | undefined): boolean {
  return c === " " || c === "\t";
}

function isTokenChar(c: string | undefined): boolean {
  return c !== undefined && TOKEN_CHAR.test(c);
}

/** Characters allowed in an unquoted parameter value: anything printable but separators. */
function isValueChar(c: string | undefined): boolean {
  if (c === undefined) return false;
  const code = c.charCodeAt(0);
  if (code <= 0x20 || code === 0x7f) return false;
  return c !== "," && c !== '"' && c !== ";";
}

/** Parses one auth header value, e.g. `TLS-DSK realm="…", targetname="…", version=4`. */
export function parseAuthHeader(value: string): AuthChallenge {
  if (typeof value !== "string") throw malformed("not a string");
  const s = value;
  const n = s.length;
  let i = 0;
  const skipWs = (): void => {
    while (i < n && isWs(s[i])) i++;
  };

  skipWs();
  const schemeStart = i;
  while (i < n && isTokenChar(s[i])) i++;
  const scheme = s.slice(schemeStart, i);
  if (scheme.length === 0) throw malformed("missing scheme");
  const params = new Map<string, string>();
  if (i < n && !isWs(s[i])) throw malformed(`unexpected character after scheme at ${i}`);
  skipWs();
  if (i >= n) return { scheme, params };

  // token68 form: the remainder is a single token68 with nothing after it.
  const rest = s.slice(i).trimEnd();
  if (TOKEN68.test(rest)) {
    return { scheme, params, token68: rest };
  }

  let first = true;
  while (i < n) {
    if (!first) {
      // Expect a comma (list separator); tolerate empty list elements (",,").
      if (s[i] !== ",") throw malformed(`expected ',' at ${i}`);
      while (i < n && (s[i] === "," || isWs(s[i]))) i++;
      if (i >= n) break;
    }
    first = false;

    const nameStart = i;
    while (i < n && isTokenChar(s[i])) i++;
    const name = s.slice(nameStart, i).toLowerCase();
    if (name.length === 0) throw malformed(`expected parameter name at ${i}`);
    skipWs();
    if (s[i] !== "=") throw malformed(`expected '=' after ${name}`);
    i++;
    skipWs();

    let val: string;
    if (s[i] === '"') {
      i++;
      let out = "";
      let closed = false;
      while (i < n) {
        const c = s[i] as string;
        if (c === "\\") {
          const next = s[i + 1];
          if (next === undefined) throw malformed("dangling escape");
          out += next;
          i += 2;
          continue;
        }
        if (c === '"') {
          closed = true;
          i++;
          break;
        }
        if (c === "\r" || c === "\n" || c === "\0") throw malformed("control character in quoted value");
        out += c;
        i++;
      }
      if (!closed) throw malformed(`unterminated quoted value for ${name}`);
      val = out;
    } else {
      const valStart = i;
      while (i < n && isValueChar(s[i])) i++;
      val = s.slice(valStart, i);
      if (val.length === 0) throw malformed(`empty value for ${name}`);
    }
    if (!params.has(name)) params.set(name, val);
    skipWs();
  }
  return { scheme, params };
}

/**
 * Formats `scheme name="value", name=token, …`. Quoted values have `\` and `"` escaped.
 * Values with CR/LF/NUL, or unquoted values that are not plain tokens, raise
 * AuthError("auth-header-malformed") rather than producing a header that would break the message.
 */
export function formatAuthHeader(
  scheme: string,
  params: Array<[name: string, value: string, quoted?: boolean]>,
): string {
  if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/.test(scheme)) throw malformed(`bad scheme ${JSON.stringify(scheme)}`);
  const parts: string[] = [];
  for (const [name, value, quoted = true] of params) {
    if (!/^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/.test(name))
      throw malformed(`bad parameter name ${JSON.stringify(name)}`);
    if (/[\r\n\0]/.test(value)) throw malformed(`control character in ${name}`);
    if (quoted) {
      parts.push(`${name}="${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`);
    } else {
      if (value.length === 0 || ![...value].every(isValueChar)) {
        throw malformed(`value of ${name} cannot be sent unquoted`);
      }
      parts.push(`${name}=${value}`);
    }
  }
  return parts.length === 0 ? scheme : `${scheme} ${parts.join(", ")}`;
}

/**
 * Picks the first header value whose scheme equals `scheme` (case-insensitively). Malformed
 * values for other schemes are skipped; a malformed value that *starts* with the wanted scheme
 * token raises AuthError("auth-header-malformed").
 */
export function findChallenge(values: string[], scheme: string): AuthChallenge | undefined {
  const want = scheme.toLowerCase();
  for (const v of values) {
    const m = /^[ \t]*([^ \t,]+)/.exec(v);
    if (!m || (m[1] ?? "").toLowerCase() !== want) continue;
    const parsed = parseAuthHeader(v);
    if (parsed.scheme.toLowerCase() === want) return parsed;
  }
  return undefined;
}
