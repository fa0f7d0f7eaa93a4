/**
 * Which transaction a message belongs to (RFC 3261 §17.1.3, §17.2.3), as a string key for a Map.
 *
 * Client side: a response belongs to the client transaction whose request carried the same top
 * Via branch AND whose method equals the response's CSeq method. The method matters because a
 * CANCEL reuses the branch of the INVITE it cancels (§9.1) and is a transaction of its own.
 *
 * Server side, RFC 3261 peers (branch starts with the magic cookie "z9hG4bK"): branch, top Via
 * sent-by and method; an ACK is looked up with method INVITE, because the ACK of a non-2xx final
 * is part of the INVITE server transaction (§17). The ACK of a 2xx is not: its sender gives it a
 * new branch (§13.2.2.4), so it finds no transaction here and belongs to the dialog. A CANCEL is
 * a server transaction of its own (it gets its own 200); `cancelTargetKey` names the INVITE
 * transaction it asks to cancel (§9.2: match as if the method were not CANCEL).
 *
 * Server side, RFC 2543 peers (no cookie): §17.2.3's fallback compares Request-URI, To tag,
 * From tag, Call-ID, CSeq and top Via. This key leaves the To tag out: the INVITE had none and
 * its ACK carries ours, and comparing it would need the response we sent. Two such requests that
 * differ only in To tag would share a key; Lync and every peer we meet send the cookie.
 */
import { parseCSeq } from "../grammar/cseq.ts";
import { tagOf } from "../grammar/name-addr.ts";
import { parseViaList, type Via } from "../grammar/via.ts";
import { header, headers, type SipMessage, type SipRequest, type SipResponse } from "../message/message.ts";

/** RFC 3261 §8.1.1.7: a branch that starts with this was made by an RFC 3261 element. */
export const MAGIC_COOKIE = "z9hG4bK";

const SEP = "\u0000";

/** The first via-parm of the first Via line, or undefined when absent or malformed. */
export function topVia(msg: SipMessage): Via | undefined {
  const first = headers(msg, "Via")[0];
  if (first === undefined) return undefined;
  try {
    return parseViaList(first)[0];
  } catch {
    return undefined;
  }
}

/** The top Via branch, or undefined. */
export function branchOf(msg: SipMessage): string | undefined {
  const b = topVia(msg)?.params.get("branch");
  return b ? b : undefined;
}

export function isRfc3261Branch(branch: string | undefined): branch is string {
  return (branch?.length ?? 0) > MAGIC_COOKIE.length && branch!.startsWith(MAGIC_COOKIE);
}

function cseqOf(msg: SipMessage): { seq: number; method: string } | undefined {
  const v = header(msg, "CSeq");
  if (v === undefined) return undefined;
  try {
    return parseCSeq(v);
  } catch {
    return undefined;
  }
}

/** Key of a client transaction: our branch and the method of the request we sent. */
export function clientKey(branch: string, method: string): string {
  return `${branch}${SEP}${method.toUpperCase()}`;
}

/** Key of the client transaction a request we send creates (undefined without a branch). */
export function clientKeyOfRequest(request: SipRequest): string | undefined {
  const branch = branchOf(request);
  return branch ? clientKey(branch, request.method) : undefined;
}

/** Key of the client transaction a received response belongs to (§17.1.3). */
export function clientKeyOfResponse(response: SipResponse): string | undefined {
  const branch = branchOf(response);
  const cseq = cseqOf(response);
  return branch && cseq ? clientKey(branch, cseq.method) : undefined;
}

function sentBy(via: Via): string {
  // Host names compare case-insensitively (§19.1.4); the port is compared as sent, so
  // "host" and "host:5061" differ, as the RFC's textual comparison of sent-by would have it.
  return via.port === undefined ? via.host.toLowerCase() : `${via.host.toLowerCase()}:${via.port}`;
}

function serverKeyAs(request: SipRequest, method: string): string | undefined {
  const via = topVia(request);
  if (!via) return undefined;
  const branch = via.params.get("branch") ?? undefined;
  if (isRfc3261Branch(branch)) return ["3261", branch, sentBy(via), method].join(SEP);
  const cseq = cseqOf(request);
  const callId = header(request, "Call-ID");
  if (!cseq || callId === undefined) return undefined;
  return [
    "2543",
    request.uri,
    tagOf(header(request, "From") ?? "") ?? "",
    callId,
    String(cseq.seq),
    `${via.transport} ${sentBy(via)} ${branch ?? ""}`,
    method,
  ].join(SEP);
}

/** Key of the server transaction a received request belongs to (§17.2.3); ACK maps to INVITE. */
export function serverKeyOfRequest(request: SipRequest): string | undefined {
  const method = request.method.toUpperCase();
  return serverKeyAs(request, method === "ACK" ? "INVITE" : method);
}

/**
 * Key of the server transaction a CANCEL targets (§9.2). Only INVITE is cancelled in practice
 * (§9.1: a CANCEL SHOULD NOT be sent for other methods), so the INVITE key is returned.
 */
export function cancelTargetKey(cancel: SipRequest): string | undefined {
  return serverKeyAs(cancel, "INVITE");
}
