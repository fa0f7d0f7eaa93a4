/**
 * What a call writes into and reads out of SIP messages, as pure functions: the initial INVITE,
 * the headers every answer carries, the session description in a body, the remote party, the
 * REFER / NOTIFY pieces of RFC 3515, the glare delay of RFC 3261 §14.1, the Warning of a 488.
 */
import type { Random } from "../../core/random.ts";
import { splitTopLevel } from "../grammar/lexer.ts";
import { parseNameAddr } from "../grammar/name-addr.ts";
import {
  header,
  headerList,
  headers,
  request,
  type SipMessage,
  type SipRequest,
} from "../message/message.ts";
import type { MediaDescription, MediaRefusal } from "./media-port.ts";

/** Who we are in our requests: the address of record, the name shown, Lync's endpoint id. */
export interface LocalIdentity {
  aor: string;
  displayName?: string;
  /** [MS-SIPRE] endpoint id, on From as `;epid=` (the registration uses the same one). */
  epid?: string;
}

/** The methods a call answers (Allow, §20.5): no UPDATE, no PRACK, so neither is advertised. */
export const ALLOW = "INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS, INFO";
/** Extensions we understand in a Require (§8.2.2.3): session timers only (RFC 4028). */
export const SUPPORTED = new Set(["timer"]);
export const SDP = "application/sdp";
export const SIPFRAG = "message/sipfrag;version=2.0";

export interface Party {
  uri: string;
  displayName?: string;
}

/** The other end as the phone shows it: From or To, and what the network asserts (RFC 3325). */
export interface RemoteParty extends Party {
  asserted: Party[];
}

function quote(s: string): string {
  return `"${s.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/** A Contact header value: the URI (a GRUU, say) in brackets, unless it is a name-addr already. */
export function contactValue(contact: string): string {
  return contact.trimStart().startsWith("<") || contact.includes("<") ? contact : `<${contact}>`;
}

export function fromValue(identity: LocalIdentity, tag: string): string {
  const name = identity.displayName ? `${quote(identity.displayName)} ` : "";
  const epid = identity.epid ? `;epid=${identity.epid}` : "";
  return `${name}<${identity.aor}>;tag=${tag}${epid}`;
}

export function bodyHeaders(desc: MediaDescription): Array<[string, string]> {
  return [["Content-Type", desc.contentType ?? SDP]];
}

export interface InviteParams {
  target: string;
  identity: LocalIdentity;
  contact: string;
  callId: string;
  fromTag: string;
  cseq: number;
  offer: MediaDescription;
  /** Session timer headers (Supported: timer, Session-Expires, Min-SE) or none. */
  timerHeaders: Array<[string, string]>;
  userAgent: string;
  /**
   * Who referred us here (RFC 3892 §3): the REFER's Referred-By, copied into the INVITE that the
   * REFER triggered so the new party (and Lync's call log) sees who transferred the call.
   */
  referredBy?: string;
}

/** The initial INVITE (§8.1.1); the core adds the Via. */
export function buildInvite(p: InviteParams): SipRequest {
  const list: Array<[string, string]> = [
    ["Max-Forwards", "70"],
    ["From", fromValue(p.identity, p.fromTag)],
    ["To", `<${p.target}>`],
    ["Call-ID", p.callId],
    ["CSeq", `${p.cseq} INVITE`],
    ["Contact", contactValue(p.contact)],
    ["Allow", ALLOW],
    ...(p.referredBy ? ([["Referred-By", p.referredBy]] as Array<[string, string]>) : []),
    ...withSupported(p.timerHeaders),
    ["User-Agent", p.userAgent],
    ...bodyHeaders(p.offer),
  ];
  return request("INVITE", p.target, list, p.offer.sdp);
}

/** Timer headers with `Supported: timer` (offerHeaders has it; an answer's headers may not). */
export function withSupported(list: Array<[string, string]>): Array<[string, string]> {
  return list.some(([n]) => n.toLowerCase() === "supported") ? list : [["Supported", "timer"], ...list];
}

/** The session description a message carries: SDP, or a multipart body (Lync), else none. */
export function sessionBody(msg: SipMessage): { sdp: string; contentType: string } | undefined {
  if (msg.body.length === 0) return undefined;
  const contentType = (header(msg, "Content-Type") ?? SDP).trim();
  const base = contentType.split(";")[0]!.trim().toLowerCase();
  if (base !== SDP && !base.startsWith("multipart/")) return undefined;
  return { sdp: msg.body.toString("utf8"), contentType };
}

function partyOfValue(value: string): Party | undefined {
  try {
    const na = parseNameAddr(value);
    return na.display !== undefined && na.display !== ""
      ? { uri: na.uri, displayName: na.display }
      : { uri: na.uri };
  } catch {
    return undefined;
  }
}

/** The other end from the From (incoming) or To (outgoing) of a message, with P-Asserted-Identity. */
export function partyOf(msg: SipMessage, which: "From" | "To"): RemoteParty | undefined {
  const main = partyOfValue(header(msg, which) ?? "");
  if (!main) return undefined;
  const asserted: Party[] = [];
  for (const v of headerList(msg, "P-Asserted-Identity")) {
    const p = partyOfValue(v);
    if (p) asserted.push(p);
  }
  return { ...main, asserted };
}

/** Extensions a request requires that we do not support (answered 420 with Unsupported). */
export function unsupportedRequired(req: SipRequest): string[] {
  return headerList(req, "Require").filter((t) => !SUPPORTED.has(t.toLowerCase()));
}

/** The Warning of a 488 (§20.43): code, our host as warn-agent, the text quoted. */
export function warningHeader(refusal: MediaRefusal, agent: string): Array<[string, string]> {
  if (!refusal.warning) return [];
  return [["Warning", `${refusal.warning.code} ${agent} ${quote(refusal.warning.text)}`]];
}

/**
 * §14.1: after a 491 the re-INVITE is retried after T, in units of 10 ms: 2.1–4 s when we own
 * the Call-ID (we made it, as UAC of the first INVITE), 0–2 s otherwise, so that the two ends
 * do not collide again.
 */
export function glareDelayMs(random: Random, ownsCallId: boolean): number {
  const steps = ownsCallId ? 191 : 201;
  const base = ownsCallId ? 2_100 : 0;
  return base + 10 * Math.min(steps - 1, Math.floor(random.unit() * steps));
}

const PHRASES: Record<number, string> = {
  100: "Trying",
  180: "Ringing",
  183: "Session Progress",
  200: "OK",
  408: "Request Timeout",
  480: "Temporarily Unavailable",
  486: "Busy Here",
  487: "Request Terminated",
  488: "Not Acceptable Here",
  503: "Service Unavailable",
  603: "Decline",
};

/** A message/sipfrag body (RFC 3420) holding just a status line, for the NOTIFYs of a REFER. */
export function sipfrag(status: number, reason?: string): string {
  // Status-Line (§7.2): the SP before the reason phrase stays even when the phrase is empty.
  return `SIP/2.0 ${status} ${reason || PHRASES[status] || ""}\r\n`;
}

/** The status line of a message/sipfrag body (RFC 3420), as NOTIFYs of a REFER carry it. */
export function sipfragStatus(body: Buffer): number | undefined {
  const first = body.toString("utf8").split(/\r?\n/)[0] ?? "";
  const m = /^SIP\/2\.0\s+([1-6][0-9][0-9])(\s|$)/i.exec(first.trim());
  return m ? Number(m[1]) : undefined;
}

/** RFC 3515 §2.1: the URI of the one Refer-To (undefined when missing, several or unreadable). */
export function referTarget(req: SipRequest): string | undefined {
  const values = headers(req, "Refer-To").flatMap((v) => splitTopLevel(v));
  if (values.length !== 1) return undefined;
  return partyOfValue(values[0]!)?.uri;
}

/**
 * The URI a transfer dials from a Refer-To URI: without its header part (`?Replaces=…` and the
 * like, RFC 3261 §19.1.1), which belongs in the triggered request's headers, not its
 * Request-URI; a blind transfer (RFC 5589 §6) needs none of them.
 */
export function transferTarget(referTo: string): string {
  const q = referTo.indexOf("?");
  return q < 0 ? referTo : referTo.slice(0, q);
}

/** The value of the Subscription-State's state, lowercased ("active", "terminated" …). */
export function subscriptionState(req: SipRequest): string | undefined {
  const v = header(req, "Subscription-State");
  return v === undefined ? undefined : v.split(";")[0]!.trim().toLowerCase();
}

/** The event package of an Event header ("refer" of "refer;id=93809824"). */
export function eventPackage(req: SipRequest): string {
  return (header(req, "Event") ?? "").split(";")[0]!.trim().toLowerCase();
}
