/**
 * Dialogs, RFC 3261 §12: the state two user agents share for a call (and later for REFER's
 * implicit subscription), and the rules for requests inside one.
 *
 * - Identity: Call-ID + local tag + remote tag. For a request we receive the local tag is in To
 *   and the remote one in From; for a response we receive it is the other way round.
 * - Created by a 101–199 (early) or 2xx (confirmed) response with a To tag to an INVITE: as UAC
 *   from the response (route set = its Record-Route REVERSED, remote target = its Contact), as
 *   UAS from the request (route set = Record-Route in order, remote target = its Contact).
 * - An early UAC dialog is confirmed by a 2xx with the same tags, which recomputes the route set
 *   and remote target (§13.2.2.4); a non-2xx final ends every early dialog of the INVITE (§12.3).
 *   A 2xx with other tags (a fork) makes a dialog of its own (`Dialog.asUac`).
 * - Requests inside it (§12.2.1.1): From/To with our/their tag, local CSeq +1 (ACK and CANCEL
 *   reuse the INVITE's number), Request-URI and Route from the route set: loose routing (first
 *   route has `lr`) puts the remote target in the Request-URI and the whole route set in Route;
 *   strict routing (RFC 2543 proxies) puts the first route in the Request-URI and appends the
 *   remote target to Route. Target refresh requests carry our Contact.
 * - Requests received inside it (§12.2.2): wrong or terminated dialog → 481; CSeq lower than the
 *   remote sequence number → 500 (out of order); ACK is never answered and never checked
 *   against CSeq (it reuses its INVITE's number, which may be below a later request's). A target
 *   refresh request replaces the remote target with its Contact on receipt, as §12.2.2 says
 *   (RFC 6141 would wait for the 2xx; we answer refreshes 2xx unless we are hanging up).
 * - Responses to our requests (§12.2.1.2): a 2xx to a target refresh replaces the remote target;
 *   the route set never changes after creation; 481 or 408, or a timeout, ends the dialog; any
 *   final response to our BYE ends it (§15.1.1).
 *
 * Vias are the user-agent core's: it adds one with a fresh branch to every request built here
 * (the ACK of a 2xx too: it is a transaction of its own), or passes it as `via`.
 */
import { HandsetError } from "../../core/errors.ts";
import type { Random } from "../../core/random.ts";
import { MAX_CSEQ, parseCSeq } from "../grammar/cseq.ts";
import { formatNameAddr, parseNameAddr, tagOf } from "../grammar/name-addr.ts";
import { formatUri, parseUri } from "../grammar/uri.ts";
import { header, headerList, request, type SipRequest, type SipResponse } from "../message/message.ts";

export type DialogState = "early" | "confirmed" | "terminated";

export interface DialogId {
  callId: string;
  localTag: string;
  remoteTag: string;
}

export function dialogKey(id: DialogId): string {
  return `${id.callId}\u0000${id.localTag}\u0000${id.remoteTag}`;
}

/** The dialog a received request claims (local = To tag); undefined when To has no tag. */
export function dialogIdOfRequest(req: SipRequest): DialogId | undefined {
  const callId = header(req, "Call-ID");
  const localTag = tagOf(header(req, "To") ?? "");
  if (callId === undefined || localTag === undefined) return undefined;
  // §12.1.1: an RFC 2543 peer may send no From tag; its remote tag is then empty.
  return { callId, localTag, remoteTag: tagOf(header(req, "From") ?? "") ?? "" };
}

/** The dialog a received response belongs to (local = From tag); undefined without a To tag. */
export function dialogIdOfResponse(res: SipResponse): DialogId | undefined {
  const callId = header(res, "Call-ID");
  const remoteTag = tagOf(header(res, "To") ?? "");
  const localTag = tagOf(header(res, "From") ?? "");
  if (callId === undefined || remoteTag === undefined || localTag === undefined) return undefined;
  return { callId, localTag, remoteTag };
}

/** Requests that may change the remote target (§12.2, RFC 3311, RFC 6665 for SUBSCRIBE/NOTIFY/REFER). */
const TARGET_REFRESH = new Set(["INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"]);

export type InDialogVerdict = { ok: true } | { ok: false; status: 400 | 481 | 500; reason: string };

export interface RequestOptions {
  /** The top Via (with a fresh branch), put first; otherwise the core adds it. */
  via?: string;
  headers?: Array<[string, string]>;
  body?: Buffer | string;
}

/** An address header value without its tag parameter (other parameters, e.g. Lync's epid, kept). */
function withoutTag(value: string): string {
  const addr = parseNameAddr(value);
  const params = new Map(addr.params);
  params.delete("tag");
  const out: { display?: string; uri: string; params: Map<string, string | null> } = {
    uri: addr.uri,
    params,
  };
  if (addr.display !== undefined) out.display = addr.display;
  return formatNameAddr(out);
}

function contactUri(msg: SipRequest | SipResponse): string | undefined {
  const first = headerList(msg, "Contact")[0];
  if (first === undefined || first === "*") return undefined;
  try {
    return parseNameAddr(first).uri;
  } catch {
    return undefined;
  }
}

function recordRoute(msg: SipRequest | SipResponse): string[] {
  return headerList(msg, "Record-Route").map((el) => parseNameAddr(el).uri);
}

function cseqOf(msg: SipRequest | SipResponse): { seq: number; method: string } {
  return parseCSeq(header(msg, "CSeq") ?? "");
}

function isLooseRoute(uri: string): boolean {
  try {
    return parseUri(uri).params.has("lr");
  } catch {
    return true; // not a SIP URI we can read: today's proxies all route loosely
  }
}

/** §12.2.1.1: a route URI used as Request-URI loses what a Request-URI may not carry. */
function asRequestUri(uri: string): string {
  try {
    const u = parseUri(uri);
    if (u.scheme !== "sip" && u.scheme !== "sips") return uri;
    u.headers = new Map();
    u.params = new Map([...u.params].filter(([k]) => k !== "method"));
    return formatUri(u);
  } catch {
    return uri;
  }
}

interface DialogInit {
  role: "uac" | "uas";
  state: "early" | "confirmed";
  id: DialogId;
  localUri: string;
  remoteUri: string;
  localContact: string | undefined;
  remoteTarget: string;
  routeSet: string[];
  localSeq: number | undefined;
  remoteSeq: number | undefined;
  secure: boolean;
  random: Random | undefined;
}

export class Dialog {
  readonly role: "uac" | "uas";
  readonly id: DialogId;
  /** From/To value without tag: ours (From of our requests) and theirs (To of our requests). */
  readonly localUri: string;
  readonly remoteUri: string;
  /** The Contact value we put in target refresh requests. */
  localContact: string | undefined;
  remoteTarget: string;
  /** Route URIs in the order our requests list them. Fixed once the dialog is confirmed. */
  routeSet: string[];
  localSeq: number | undefined;
  remoteSeq: number | undefined;
  /** §12.1: the dialog was set up with a SIPS Request-URI (the phone always uses TLS). */
  readonly secure: boolean;
  private _state: DialogState;
  private readonly random: Random | undefined;

  private constructor(init: DialogInit) {
    this.role = init.role;
    this._state = init.state;
    this.id = init.id;
    this.localUri = init.localUri;
    this.remoteUri = init.remoteUri;
    this.localContact = init.localContact;
    this.remoteTarget = init.remoteTarget;
    this.routeSet = init.routeSet;
    this.localSeq = init.localSeq;
    this.remoteSeq = init.remoteSeq;
    this.secure = init.secure;
    this.random = init.random;
  }

  /**
   * The UAC's dialog from a response to its INVITE (§12.1.2): 101–199 with a To tag → early,
   * 2xx → confirmed; anything else (100, no To tag, a failure) makes none and returns undefined.
   */
  static asUac(invite: SipRequest, res: SipResponse): Dialog | undefined {
    if (res.status <= 100 || res.status >= 300) return undefined;
    const id = dialogIdOfResponse(res);
    if (!id) return undefined;
    return new Dialog({
      role: "uac",
      state: res.status < 200 ? "early" : "confirmed",
      id,
      localUri: withoutTag(header(invite, "From") ?? ""),
      remoteUri: withoutTag(header(res, "To") ?? ""),
      localContact: headerList(invite, "Contact")[0],
      // A 2xx without Contact breaks §12.1.2; the Request-URI is the best target left.
      remoteTarget: contactUri(res) ?? invite.uri,
      routeSet: recordRoute(res).reverse(),
      localSeq: cseqOf(invite).seq,
      remoteSeq: undefined,
      secure: /^sips:/i.test(invite.uri),
      random: undefined,
    });
  }

  /**
   * The UAS's dialog from an INVITE it answers with a 1xx (early) or 2xx (confirmed) carrying
   * `localTag` (§12.1.1). `random` picks the first local CSeq (§8.1.1.5: below 2³¹).
   */
  static asUas(
    invite: SipRequest,
    opts: { localTag: string; localContact?: string; state: "early" | "confirmed"; random?: Random },
  ): Dialog {
    const from = header(invite, "From") ?? "";
    return new Dialog({
      role: "uas",
      state: opts.state,
      id: {
        callId: header(invite, "Call-ID") ?? "",
        localTag: opts.localTag,
        remoteTag: tagOf(from) ?? "",
      },
      localUri: withoutTag(header(invite, "To") ?? ""),
      remoteUri: withoutTag(from),
      localContact: opts.localContact,
      // An INVITE without Contact breaks §8.1.1.8; answer towards the From URI then.
      remoteTarget: contactUri(invite) ?? parseNameAddr(from).uri,
      routeSet: recordRoute(invite),
      localSeq: undefined,
      remoteSeq: cseqOf(invite).seq,
      secure: /^sips:/i.test(invite.uri),
      random: opts.random,
    });
  }

  get state(): DialogState {
    return this._state;
  }

  get key(): string {
    return dialogKey(this.id);
  }

  /**
   * Early → confirmed. As UAC pass the 2xx: its Record-Route (reversed) and Contact replace the
   * early route set and target (§13.2.2.4). As UAS call it when the 2xx goes out.
   */
  confirm(res?: SipResponse): void {
    if (this._state !== "early") return;
    this._state = "confirmed";
    if (res && this.role === "uac") {
      this.routeSet = recordRoute(res).reverse();
      this.remoteTarget = contactUri(res) ?? this.remoteTarget;
    }
  }

  terminate(): void {
    this._state = "terminated";
  }

  /**
   * A request inside the dialog (§12.2.1.1): BYE, re-INVITE, UPDATE, REFER, INFO, NOTIFY, …
   * Not ACK (use createAck) nor CANCEL (the INVITE client transaction builds it).
   */
  createRequest(method: string, opts: RequestOptions = {}): SipRequest {
    const m = method.toUpperCase();
    if (m === "ACK" || m === "CANCEL") throw new Error(`${m} is not built by createRequest`); // a bug of ours
    if (this._state === "terminated") throw new HandsetError("sip-dialog-terminated", "the dialog has ended");
    return this.build(method, this.nextLocalSeq(), opts, TARGET_REFRESH.has(m));
  }

  /**
   * The ACK of a 2xx to `invite` (§13.2.2.4): a request of the dialog with the INVITE's CSeq
   * number, the same credentials as the INVITE, and a body only if the 2xx carried the offer.
   */
  createAck(invite: SipRequest, opts: RequestOptions = {}): SipRequest {
    const credentials: Array<[string, string]> = [];
    for (const name of ["Authorization", "Proxy-Authorization"]) {
      const v = header(invite, name);
      if (v !== undefined) credentials.push([name, v]);
    }
    return this.build(
      "ACK",
      cseqOf(invite).seq,
      { ...opts, headers: [...credentials, ...(opts.headers ?? [])] },
      false,
    );
  }

  /** Checks a request that claims this dialog (§12.2.2) and updates the dialog state with it. */
  receiveRequest(req: SipRequest): InDialogVerdict {
    const id = dialogIdOfRequest(req);
    if (this._state === "terminated" || !id || dialogKey(id) !== this.key)
      return { ok: false, status: 481, reason: "Call/Transaction Does Not Exist" };
    const method = req.method.toUpperCase();
    if (method === "ACK" || method === "CANCEL") return { ok: true };
    let seq: number;
    try {
      seq = cseqOf(req).seq;
    } catch {
      return { ok: false, status: 400, reason: "Bad CSeq" };
    }
    if (this.remoteSeq !== undefined && seq < this.remoteSeq)
      return { ok: false, status: 500, reason: "Server Internal Error (CSeq out of order)" };
    this.remoteSeq = seq;
    if (TARGET_REFRESH.has(method)) this.remoteTarget = contactUri(req) ?? this.remoteTarget;
    // A BYE that passes these checks is answered 200 (§15.1.2); the dialog ends with it.
    if (method === "BYE") this._state = "terminated";
    return { ok: true };
  }

  /** A response to a request we sent in this dialog (or to the INVITE that created it). */
  receiveResponse(req: SipRequest, res: SipResponse): void {
    if (this._state === "terminated") return;
    const method = req.method.toUpperCase();
    if (this._state === "early" && this.role === "uac" && method === "INVITE") {
      if (res.status >= 300) this.terminate();
      else if (res.status >= 200) this.confirm(res);
      else if (res.status > 100) this.remoteTarget = contactUri(res) ?? this.remoteTarget;
      return;
    }
    if (res.status === 481 || res.status === 408) {
      this.terminate();
      return;
    }
    if (method === "BYE" && res.status >= 200) {
      this.terminate();
      return;
    }
    if (res.status >= 200 && res.status < 300 && TARGET_REFRESH.has(method))
      this.remoteTarget = contactUri(res) ?? this.remoteTarget;
  }

  /** Our request in this dialog got no response at all (transaction timeout): §12.2.1.2. */
  requestTimedOut(): void {
    this.terminate();
  }

  private nextLocalSeq(): number {
    if (this.localSeq === undefined) {
      // §8.1.1.5: any value below 2³¹; 1 when no randomness was given.
      const b = this.random?.bytes(4);
      this.localSeq = b ? ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) & 0x7fffffff : 1;
      if (this.localSeq === 0) this.localSeq = 1;
      return this.localSeq;
    }
    if (this.localSeq >= MAX_CSEQ)
      throw new HandsetError("sip-dialog-cseq", "the dialog's CSeq space is exhausted");
    this.localSeq += 1;
    return this.localSeq;
  }

  private build(method: string, seq: number, opts: RequestOptions, withContact: boolean): SipRequest {
    const { uri, routes } = this.target();
    const list: Array<[string, string]> = [];
    if (opts.via !== undefined) list.push(["Via", opts.via]);
    list.push(["Max-Forwards", "70"]);
    for (const r of routes) list.push(["Route", `<${r}>`]);
    list.push(["From", `${this.localUri};tag=${this.id.localTag}`]);
    // §12.1.1: an RFC 2543 peer's dialog has an empty remote tag; then To carries none.
    list.push(["To", this.id.remoteTag ? `${this.remoteUri};tag=${this.id.remoteTag}` : this.remoteUri]);
    list.push(["Call-ID", this.id.callId]);
    list.push(["CSeq", `${seq} ${method}`]);
    if (withContact && this.localContact !== undefined) list.push(["Contact", this.localContact]);
    list.push(...(opts.headers ?? []));
    return request(method, uri, list, opts.body);
  }

  /** Request-URI and Route list for the next request (§12.2.1.1). */
  private target(): { uri: string; routes: string[] } {
    const first = this.routeSet[0];
    if (first === undefined) return { uri: this.remoteTarget, routes: [] };
    if (isLooseRoute(first)) return { uri: this.remoteTarget, routes: [...this.routeSet] };
    return { uri: asRequestUri(first), routes: [...this.routeSet.slice(1), this.remoteTarget] };
  }
}

export type RequestRouting =
  /** To has no tag: not for a dialog (a new INVITE, an out-of-dialog OPTIONS …). */
  | { kind: "out-of-dialog" }
  /** It belongs to this dialog and passed its checks. */
  | { kind: "dialog"; dialog: Dialog }
  /** Answer it with this status (481 unknown dialog, 500 CSeq out of order, 400). */
  | { kind: "reject"; status: 400 | 481 | 500; reason: string; dialog?: Dialog }
  /** An ACK that fits no dialog: ACKs are never answered (§17), so it is dropped. */
  | { kind: "drop" };

/** The dialogs of one user agent, found by the tags of what arrives. */
export class DialogTable {
  private readonly dialogs = new Map<string, Dialog>();

  add(dialog: Dialog): void {
    this.dialogs.set(dialog.key, dialog);
  }

  delete(dialog: Dialog): void {
    if (this.dialogs.get(dialog.key) === dialog) this.dialogs.delete(dialog.key);
  }

  get(id: DialogId): Dialog | undefined {
    const d = this.dialogs.get(dialogKey(id));
    if (d && d.state === "terminated") {
      this.dialogs.delete(d.key);
      return undefined;
    }
    return d;
  }

  get size(): number {
    return this.dialogs.size;
  }

  /** The dialog a response to one of our requests belongs to. */
  forResponse(res: SipResponse): Dialog | undefined {
    const id = dialogIdOfResponse(res);
    return id ? this.get(id) : undefined;
  }

  /**
   * Where a received request goes (§12.2.2). CANCEL must be matched to its server transaction
   * before this (it has the To of the INVITE, and no dialog of its own).
   */
  route(req: SipRequest): RequestRouting {
    const isAck = req.method.toUpperCase() === "ACK";
    const id = dialogIdOfRequest(req);
    if (!id) return { kind: "out-of-dialog" };
    const dialog = this.get(id);
    if (!dialog) {
      return isAck
        ? { kind: "drop" }
        : { kind: "reject", status: 481, reason: "Call/Transaction Does Not Exist" };
    }
    const verdict = dialog.receiveRequest(req);
    if (verdict.ok) return { kind: "dialog", dialog };
    if (isAck) return { kind: "drop" };
    return { kind: "reject", status: verdict.status, reason: verdict.reason, dialog };
  }
}
