/**
 * The [MS-SIPAE] signature buffer (shared/protocol/tls-dsk.md §4.1): string values each wrapped in
 * `<…>`, no separators. Version ≥ 3: 16 fields (the 16th, the status code, on responses only);
 * version < 3: the 13-field [MS-SIP] §3.1.4.2 layout. Values are taken from the header values as
 * received (same case), never rebuilt.
 */

import type { SipMessage } from "../message/message.ts";
import { header, headers } from "../message/message.ts";

export interface BufferAuth {
  /** Field 1: the scheme token ("TLS-DSK", "NTLM", …). */
  protocol: string;
  /** crand or srand, as sent. */
  rand: string;
  /** cnum or snum, as sent (decimal). */
  num: string;
  realm: string;
  targetname: string;
  version: number;
}

/** Splits `s` at `sep` where it is outside double quotes and outside `<…>`. */
function splitOutside(s: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "<") depth++;
    else if (c === ">" && depth > 0) depth--;
    else if (c === sep && depth === 0) {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

/** Index of the first `<` outside a quoted display name, or -1. */
function openBracket(s: string): number {
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted) {
      if (c === "\\") i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === "<") return i;
  }
  return -1;
}

/**
 * Splits a name-addr / addr-spec header value into its URI (inside `<…>`, else up to the first
 * `;`) and the header-parameter text that follows.
 */
export function splitNameAddr(value: string): { uri: string; params: string } {
  const lt = openBracket(value);
  if (lt >= 0) {
    const gt = value.indexOf(">", lt + 1);
    if (gt < 0) return { uri: value.slice(lt + 1).trim(), params: "" };
    return { uri: value.slice(lt + 1, gt).trim(), params: value.slice(gt + 1) };
  }
  const semi = value.indexOf(";");
  if (semi < 0) return { uri: value.trim(), params: "" };
  return { uri: value.slice(0, semi).trim(), params: value.slice(semi) };
}

/** The value of the `tag` header parameter (not a URI parameter), or "". */
export function headerTag(value: string): string {
  const { params } = splitNameAddr(value);
  for (const p of splitOutside(params, ";")) {
    const eq = p.indexOf("=");
    if (eq < 0) continue;
    if (p.slice(0, eq).trim().toLowerCase() === "tag") return p.slice(eq + 1).trim();
  }
  return "";
}

/** The sip:/sips: and tel: URIs of P-Asserted-Identity (or P-Preferred-Identity when PAI is absent). */
export function assertedIdentities(msg: SipMessage): { sip: string; tel: string } {
  let lines = headers(msg, "P-Asserted-Identity");
  if (lines.length === 0) lines = headers(msg, "P-Preferred-Identity");
  let sip = "";
  let tel = "";
  for (const line of lines) {
    for (const entry of splitOutside(line, ",")) {
      const { uri } = splitNameAddr(entry);
      const lower = uri.toLowerCase();
      if (!sip && (lower.startsWith("sip:") || lower.startsWith("sips:"))) sip = uri;
      else if (!tel && lower.startsWith("tel:")) tel = uri;
    }
  }
  return { sip, tel };
}

/** Builds the signature buffer for `msg` with the given auth parameters. */
export function signatureBuffer(msg: SipMessage, auth: BufferAuth): string {
  const from = header(msg, "From") ?? "";
  const to = header(msg, "To") ?? "";
  const cseq = (header(msg, "CSeq") ?? "").trim();
  const [cseqNum = "", cseqMethod = ""] = cseq.split(/[ \t]+/);
  const method = msg.kind === "request" ? msg.method : cseqMethod;
  const callId = (header(msg, "Call-ID") ?? "").trim();
  const expires = (header(msg, "Expires") ?? "").trim();
  const fromUri = splitNameAddr(from).uri;
  const fromTag = headerTag(from);
  const toTag = headerTag(to);

  const fields: string[] = [
    auth.protocol,
    auth.rand,
    auth.num,
    auth.realm,
    auth.targetname,
    callId,
    cseqNum,
    method,
  ];
  if (auth.version >= 3) {
    const pai = assertedIdentities(msg);
    fields.push(fromUri, fromTag, splitNameAddr(to).uri, toTag, pai.sip, pai.tel, expires);
  } else {
    fields.push(fromUri, fromTag, toTag, expires);
  }
  if (msg.kind === "response") fields.push(String(msg.status));
  return fields.map((f) => `<${f}>`).join("");
}
