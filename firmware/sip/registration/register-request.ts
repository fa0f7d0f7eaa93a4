/**
 * Builds the Lync-style REGISTER ([MS-SIPREGE], lync-phone-behaviour.md §4.1). The endpoint
 * identity (epid on From, +sip.instance on Contact) is stable for the life of the phone: the
 * registrar binds the security association to it.
 */
import type { Random } from "../../core/random.ts";
import { hex32 } from "../../core/random.ts";
import { request, type SipRequest } from "../message/message.ts";

export interface EndpointIdentity {
  /** Address of record, e.g. sip:4711@lab.test */
  aor: string;
  /** 10 hex digits, kept in flash. */
  epid: string;
  /** UUID, kept in flash. */
  instanceId: string;
}

export interface RegisterParams {
  endpoint: EndpointIdentity;
  callId: string;
  cseq: number;
  branch: string;
  local: { address: string; port: number };
  /** Omitted: let the registrar choose; 0: de-register. */
  expires?: number;
  userAgent: string;
  random: Random;
}

export const USER_AGENT = "handset/0.1 (Lync-compatible SIP desk phone)";

export function domainOf(aor: string): string {
  const at = aor.indexOf("@");
  return (at >= 0 ? aor.slice(at + 1) : aor.replace(/^sips?:/i, "")).replace(/[;?>].*$/, "");
}

export function buildRegister(p: RegisterParams): SipRequest {
  const { address, port } = p.local;
  const host = address.includes(":") ? `[${address}]` : address;
  const headers: Array<[string, string]> = [
    ["Via", `SIP/2.0/TLS ${host}:${port};branch=${p.branch};rport`],
    ["Max-Forwards", "70"],
    ["From", `<${p.endpoint.aor}>;tag=${hex32(p.random)};epid=${p.endpoint.epid}`],
    ["To", `<${p.endpoint.aor}>`],
    ["Call-ID", p.callId],
    ["CSeq", `${p.cseq} REGISTER`],
    [
      "Contact",
      `<sip:${host}:${port};transport=tls;ms-opaque=${p.endpoint.epid}>;methods="INVITE, MESSAGE, INFO, SUBSCRIBE, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER, BENOTIFY";proxy=replace;+sip.instance="<urn:uuid:${p.endpoint.instanceId}>"`,
    ],
    ["User-Agent", p.userAgent],
    ["Supported", "gruu-10, adhoclist, msrtc-event-categories, com.microsoft.msrtc.presence"],
    ["Supported", "ms-userservices-state-notification, ms-cluster-failover, ms-keep-alive"],
    ["ms-keep-alive", "UAC;hop-hop=yes"],
    ["Event", "registration"],
  ];
  if (p.expires !== undefined) headers.push(["Expires", String(p.expires)]);
  return request("REGISTER", `sip:${domainOf(p.endpoint.aor)}`, headers);
}
