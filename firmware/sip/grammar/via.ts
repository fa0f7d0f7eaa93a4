/**
 * Via (RFC 3261 §20.42, §25.1):
 *   via-parm = sent-protocol LWS sent-by *( SEMI via-params )
 *   sent-protocol = protocol-name SLASH protocol-version SLASH transport
 *   sent-by = host [ COLON port ]
 * White space is allowed around "/" ":" ";" "=" (RFC 4475 §3.1.1.1). `received` may hold an
 * IPv6 address with or without brackets (RFC 5118 §4.5).
 */
import {
  clip,
  fail,
  isHost,
  isWs,
  parseDigits,
  parseGenericParams,
  scan,
  skipWs,
  splitTopLevel,
  TOKEN,
  trimWs,
} from "./lexer.ts";

export interface Via {
  /** protocol-name "/" protocol-version, uppercased, e.g. "SIP/2.0". */
  protocol: string;
  /** Uppercased transport: "UDP", "TCP", "TLS", "SCTP", "WS", ... (unknown ones kept). */
  transport: string;
  /** Host as received; IPv6 references keep their brackets. */
  host: string;
  port?: number;
  /** branch, received, rport, maddr, ttl, ...: lowercased names, values as received. */
  params: Map<string, string | null>;
}

function token(s: string, i: number, what: string, raw: string): [string, number] {
  i = skipWs(s, i);
  const end = scan(s, i, TOKEN);
  if (end === i) fail(`missing ${what} in Via "${clip(raw)}"`);
  return [s.slice(i, end), end];
}

function slash(s: string, i: number, raw: string): number {
  i = skipWs(s, i);
  if (s[i] !== "/") fail(`expected "/" in Via "${clip(raw)}"`);
  return i + 1;
}

/** Parses one via-parm; throws SipParseError. */
export function parseVia(value: string): Via {
  const raw = value;
  const s = trimWs(value);
  const [name, afterName] = token(s, 0, "protocol name", raw);
  let i = afterName;
  i = slash(s, i, raw);
  const [version, afterVersion] = token(s, i, "protocol version", raw);
  i = slash(s, afterVersion, raw);
  const [transport, afterTransport] = token(s, i, "transport", raw);
  i = afterTransport;
  if (!isWs(s.charCodeAt(i))) fail(`expected white space before sent-by in Via "${clip(raw)}"`);
  i = skipWs(s, i);
  let hostEnd: number;
  if (s[i] === "[") {
    const close = s.indexOf("]", i);
    if (close < 0) fail(`unterminated IPv6 reference in Via "${clip(raw)}"`);
    hostEnd = close + 1;
  } else {
    hostEnd = i;
    while (hostEnd < s.length && !/[;:, \t]/.test(s[hostEnd]!)) hostEnd++;
  }
  const host = s.slice(i, hostEnd);
  if (!isHost(host)) fail(`invalid sent-by host "${clip(host)}" in Via "${clip(raw)}"`);
  i = skipWs(s, hostEnd);
  let port: number | undefined;
  if (s[i] === ":") {
    i = skipWs(s, i + 1);
    let end = i;
    while (end < s.length && s.charCodeAt(end) >= 0x30 && s.charCodeAt(end) <= 0x39) end++;
    port = parseDigits(s.slice(i, end), 65535);
    if (port === undefined) fail(`invalid port in Via "${clip(raw)}"`);
    i = end;
  }
  const params = parseGenericParams(s, i, "Via");
  const via: Via = {
    protocol: `${name.toUpperCase()}/${version.toUpperCase()}`,
    transport: transport.toUpperCase(),
    host,
    params,
  };
  if (port !== undefined) via.port = port;
  return via;
}

/** Parses a Via header value that may hold several comma-separated via-parms. */
export function parseViaList(value: string): Via[] {
  return splitTopLevel(value).map((el) => {
    if (el === "") fail(`empty element in Via "${clip(value)}"`);
    return parseVia(el);
  });
}
