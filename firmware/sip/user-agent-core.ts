/**
 * The user-agent core for one flow: client transactions keyed by Via branch, the message
 * security association (TLS-DSK) applied to everything that crosses the flow, and the rule
 * of [MS-SIPAE] §3.2.5.2 for what happens to unsigned or badly signed server messages.
 *
 * - Every request sent after the SA exists is signed.
 * - Every final response received is checked. A bad rspauth is fatal: the flow is dropped
 *   and `onSecurityFailure` reports it, so the registration re-authenticates from scratch.
 * - Unsigned final responses after the SA: a 401/407 and a non-2xx to REGISTER are let through
 *   but marked "unsigned" (`signatureOf`), so the registration treats them as a hint at most
 *   (a failed flow with normal backoff: never a redirect, a stored registrar, a sign-in or a
 *   long Retry-After); a 2xx without Authentication-Info is a security failure
 *   ("rspauth-missing"); any other unsigned final response is dropped and its transaction left
 *   to time out. Every final response that reaches a transaction user carries a verdict:
 *   "verified" (rspauth checked against the SA), "unsigned" (after the SA), "no-sa" (before).
 * - 1xx responses are never signed by Lync pools and are passed through.
 * - Requests from the server (NOTIFY, BENOTIFY, OPTIONS …) are checked like responses
 *   (unsigned or badly signed ones are dropped) and always answered, signed with our SA
 *   (tls-dsk.md §4.2: Authorization with crand/cnum/response, field 16 = status): the first
 *   registered handler that claims the request chooses the answer; otherwise OPTIONS gets 200
 *   and anything else 501. ACK and BENOTIFY are never answered (handlers still see BENOTIFY).
 * - It keeps the flow's activity (last byte sent / received, messages and pongs received)
 *   for the keep-alive and liveness timers above it.
 *
 * Calls (issue 12) add INVITE transactions and dialogs, with the same signing rules:
 * - Client transactions are keyed by branch AND method (matching.ts): a CANCEL reuses its
 *   INVITE's branch. An outgoing INVITE runs in an InviteClientTransaction; its CANCEL in a
 *   non-INVITE one. Every 2xx is ACKed here with the dialog's ACK (fresh branch), the same ACK
 *   again for a retransmitted 2xx; a 2xx that comes after we cancelled is ACKed and then BYEd.
 *   Dialogs are made from 1xx/2xx with a To tag (early/confirmed), one per fork.
 * - Server requests go, after the signature check: a retransmission or the ACK of a non-2xx to
 *   its server transaction; a CANCEL to the INVITE it targets (481 when none); another ACK to its
 *   dialog (or nowhere); an INVITE without To tag to a new InviteServerTransaction and the
 *   `onInvite` handler; a request with a To tag to its dialog's owner (DialogTable), else 481 —
 *   except that the synchronous handlers still see it first, so Lync's registration NOTIFY and
 *   BENOTIFY (which carry a To tag but belong to no dialog of ours) are answered as before, and
 *   an OPTIONS keeps today's 200.
 *   Everything else (out of dialog, no To tag) takes the synchronous RequestHandler path.
 * - Requests answered later (an INVITE rings, then is answered) get a handle (IncomingInvite,
 *   ServerRequest) whose respond() runs the server transaction; the dialog is made when the first
 *   1xx/2xx with our tag goes out. A 2xx is retransmitted (T1 doubling to T2, §13.3.1.4) until its
 *   ACK arrives; after 64·T1 the owner hears `onAckTimeout` and hangs up.
 * - Everything these layers put on the flow (responses, the automatic 100 Trying, 487, ACK,
 *   CANCEL, in-dialog requests) is signed with the SA, freshly for each transmission.
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { AuthError, type HandsetError, TransportError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import { hexToken, type Random } from "../core/random.ts";
import { Dialog, DialogTable, type RequestOptions } from "./dialog/dialog.ts";
import type { Flow } from "./flow.ts";
import { tagOf } from "./grammar/name-addr.ts";
import { parseVia } from "./grammar/via.ts";
import {
  header,
  headers,
  response,
  type SipMessage,
  type SipRequest,
  type SipResponse,
  setHeader,
} from "./message/message.ts";
import type { SecurityAssociation } from "./tls-dsk/security-association.ts";
import {
  type IctFailure,
  type IctState,
  type IctTimers,
  InviteClientTransaction,
} from "./transaction/invite-client.ts";
import { InviteServerTransaction, type IstState } from "./transaction/invite-server.ts";
import {
  branchOf,
  cancelTargetKey,
  clientKey,
  clientKeyOfResponse,
  serverKeyOfRequest,
} from "./transaction/matching.ts";
import {
  type NictUser,
  NonInviteClientTransaction,
  T1_MS,
  TIMER_F_MS,
} from "./transaction/non-invite-client.ts";
import { buildResponse, NonInviteServerTransaction } from "./transaction/server-non-invite.ts";

// The session layer may use only this core and the vocabulary (layers.test.ts), so what it needs
// of the dialog and transaction layers is handed on from here.
export type { Dialog, DialogId, RequestOptions } from "./dialog/dialog.ts";
export {
  DEFAULT_OFFER,
  DEFAULT_UAS_POLICY,
  type Negotiated,
  type Offer,
  offerHeaders,
  refreshOffer,
  retryAfter422,
  SessionTimer,
  type UasPolicy,
  uacResult,
  uasAnswer,
} from "./dialog/session-timer.ts";
export type { IctFailure, IctState, IctTimers } from "./transaction/invite-client.ts";
export type { IstState } from "./transaction/invite-server.ts";
export type { NictUser } from "./transaction/non-invite-client.ts";
export { T1_MS };

/** RFC 3261 §17.1.2.2: the cap of the doubling retransmission interval. */
export const T2_MS = 4_000;

export interface UserAgentCoreOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  timerFMs?: number;
  /** INVITE client transaction timers (tests shorten them). */
  inviteTimers?: IctTimers;
  /** INVITE server transaction timers: the automatic 100 after `tryingAfterMs`, Timers H and L. */
  inviteServerTimers?: { tryingAfterMs?: number; timerHMs?: number; timerLMs?: number };
}

/** How a request handler answers a server request; `after` runs once the answer is on the wire. */
export interface RequestAnswer {
  status: number;
  reason?: string;
  headers?: Array<[string, string]>;
  after?: () => void;
}

/** Returns an answer to claim the request, undefined to leave it to the next handler. */
export type RequestHandler = (request: SipRequest) => RequestAnswer | undefined;

const REASONS: Record<number, string> = {
  200: "OK",
  480: "Temporarily Unavailable",
  481: "Call/Transaction Does Not Exist",
  500: "Server Internal Error",
  501: "Not Implemented",
};

/** What crossed the flow, on the monotonic clock; read by keep-alive and liveness timers. */
export interface FlowActivity {
  lastSentAt: number;
  lastReceivedAt: number;
  /** Messages, pongs and malformed-but-framed input alike: anything proves the flow carries bytes. */
  received: number;
  pongs: number;
  /** The last input was a CRLF pong (not a SIP message). */
  lastWasPong: boolean;
}

/** Whether a received message was signed by the current SA (see the class comment). */
export type SignatureVerdict = "verified" | "unsigned" | "no-sa";

/** What a response carries besides the fields copied from its request. */
export interface ResponseOptions {
  reason?: string;
  headers?: Array<[string, string]>;
  body?: Buffer | string;
}

/** A request the session answers through a server transaction (now or a little later). */
export interface ServerRequest {
  readonly kind: "request";
  readonly request: SipRequest;
  /** The dialog it arrived in (undefined for a CANCEL or an out-of-dialog request). */
  readonly dialog: Dialog | undefined;
  /** A final response went out. */
  readonly answered: boolean;
  /** Sends a response; false (nothing sent) once a final one went out. */
  respond(status: number, opts?: ResponseOptions): boolean;
}

/**
 * An INVITE the session answers when it chooses (ringing, then answered or refused). An initial
 * INVITE has no dialog until a 1xx/2xx with `toTag` goes out; a re-INVITE has its dialog.
 */
export interface IncomingInvite {
  readonly kind: "invite";
  readonly request: SipRequest;
  readonly dialog: Dialog | undefined;
  /** Our To tag in every answer but the 100. */
  readonly toTag: string;
  readonly state: IstState;
  readonly answered: boolean;
  /**
   * Sends a response. For an initial INVITE a 101–299 makes the dialog (Record-Route copied in,
   * §12.1.1; our Contact is the one in `opts.headers`), bound to `owner`. False when refused:
   * above all a 2xx that lost the race against a CANCEL (onCancelled tells).
   */
  respond(status: number, opts?: ResponseOptions): boolean;
  /** Receives the requests of the dialog the answer makes; set it before the first 1xx/2xx. */
  owner: DialogUser | undefined;
  /** A CANCEL came before the final response; the INVITE has been answered 487. */
  onCancelled: (cancel: SipRequest) => void;
  /** Our 2xx was not acknowledged within 64·T1 (§13.3.1.4): the session should send BYE. */
  onAckTimeout: () => void;
  /**
   * The transaction failed: "transport" (the flow closed; before a dialog exists this is the only
   * word the session gets) or "no-ack" (Timer H: our failure answer was never acknowledged).
   */
  onFailure: (reason: "transport" | "no-ack", error?: HandsetError) => void;
}

/** Whoever owns a dialog (a call): the core routes the dialog's requests and ACKs to it. */
export interface DialogUser {
  /** A request in the dialog that passed §12.2.2; an INVITE comes as an IncomingInvite. */
  onRequest(request: ServerRequest | IncomingInvite): void;
  /** The ACK of a 2xx we sent in this dialog (initial INVITE or re-INVITE). */
  onAck(ack: SipRequest, dialog: Dialog): void;
  /** The flow under the dialog closed; no request of the dialog can reach the peer any more. */
  onTransportLost?(error: HandsetError): void;
}

/** Whoever sent an INVITE hears about its responses here. */
export interface InviteClientUser {
  /** A 1xx; `dialog` is the early dialog it made or updated (none for 100 or a 1xx without tag). */
  onProvisional?(response: SipResponse, dialog: Dialog | undefined): void;
  /**
   * Every 2xx, already ACKed. `retransmission`: this dialog's 2xx came before (ACKed again);
   * `afterCancel`: we had cancelled, so the core has also sent BYE in that dialog.
   */
  onSuccess(
    response: SipResponse,
    dialog: Dialog,
    info: { retransmission: boolean; afterCancel: boolean },
  ): void;
  /** The 300–699 final response, ACKed by the transaction. */
  onRejected(response: SipResponse): void;
  onFailure(reason: IctFailure, error?: HandsetError): void;
  /** Body and headers of the ACK of the first 2xx of a dialog (the answer, when the 2xx offered). */
  ackFor?(response: SipResponse, dialog: Dialog): RequestOptions | undefined;
}

/** Handle of an INVITE we sent. */
export interface OutgoingInvite {
  readonly request: SipRequest;
  readonly state: IctState;
  /** cancel() was called: a later 2xx is ACKed and hung up by the core. */
  readonly cancelled: boolean;
  /** §9.1; "pending" goes out with the first provisional; see InviteClientTransaction.cancel. */
  cancel(extra?: Array<[string, string]>): "sent" | "pending" | "too-late";
}

type ClientTransaction = NonInviteClientTransaction | InviteClientTransaction;
type ServerTransaction = NonInviteServerTransaction | InviteServerTransaction;

const NO_NICT_USER: NictUser = { onFinal: () => {}, onFailure: () => {} };

export class UserAgentCore {
  private readonly verdicts = new WeakMap<SipMessage, SignatureVerdict>();
  private readonly transactions = new Map<string, ClientTransaction>();
  private readonly servers = new Map<string, ServerTransaction>();
  private readonly dialogs = new DialogTable();
  private readonly owners = new Map<string, { dialog: Dialog; user: DialogUser }>();
  /** 2xx responses waiting for their ACK, by dialog key + CSeq number. */
  private readonly awaitingAck = new Map<string, { stop(): void }>();
  private inviteHandler: ((invite: IncomingInvite) => void) | undefined;
  private sa: SecurityAssociation | undefined;
  private closed = false;
  private handlers: RequestHandler[] = [];
  readonly activity: FlowActivity;
  /** Called when the server's signature fails; the flow has already been closed. */
  onSecurityFailure: (error: AuthError) => void = () => {};
  /** Called once when the flow closes for any reason. */
  onFlowClosed: (reason?: HandsetError) => void = () => {};
  /** Requests from the server (NOTIFY, BENOTIFY, OPTIONS …) after signature checks. */
  onRequest: (request: SipRequest) => void = () => {};

  constructor(
    readonly flow: Flow,
    private readonly opts: UserAgentCoreOptions,
  ) {
    const now = opts.clock.monotonic();
    this.activity = { lastSentAt: now, lastReceivedAt: now, received: 0, pongs: 0, lastWasPong: false };
    flow.onMessage((m) => {
      this.noteReceived();
      this.activity.lastWasPong = false;
      this.receive(m);
    });
    flow.onPong(() => {
      this.noteReceived();
      this.activity.pongs++;
      this.activity.lastWasPong = true;
    });
    flow.onClose((reason) => {
      this.closed = true;
      const err = reason ?? new TransportError("connection-closed", `${flow.remote} closed the connection`);
      for (const t of [...this.transactions.values()]) t.transportFailed(err);
      this.transactions.clear();
      for (const t of [...this.servers.values()]) t.transportFailed(err);
      this.servers.clear();
      for (const w of [...this.awaitingAck.values()]) w.stop();
      this.awaitingAck.clear();
      const users = new Set([...this.owners.values()].map((o) => o.user));
      this.owners.clear();
      for (const u of users) u.onTransportLost?.(err);
      this.onFlowClosed(reason);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The signature verdict of a message this core delivered ("no-sa" for anything else). */
  signatureOf(message: SipMessage): SignatureVerdict {
    return this.verdicts.get(message) ?? "no-sa";
  }

  get securityAssociation(): SecurityAssociation | undefined {
    return this.sa;
  }

  setSecurityAssociation(sa: SecurityAssociation | undefined): void {
    this.sa = sa;
  }

  /** Adds a handler for server requests; returns a function that removes it. */
  addRequestHandler(handler: RequestHandler): () => void {
    this.handlers.push(handler);
    return () => {
      this.handlers = this.handlers.filter((h) => h !== handler);
    };
  }

  /**
   * Sets who receives new INVITEs (no To tag); returns a function that removes it. Without one,
   * an INVITE is answered 480 (this flow takes no calls).
   */
  onInvite(handler: (invite: IncomingInvite) => void): () => void {
    this.inviteHandler = handler;
    return () => {
      if (this.inviteHandler === handler) this.inviteHandler = undefined;
    };
  }

  /** RFC 5626 keep-alive ping (CRLFCRLF) on the flow. */
  sendPing(): void {
    if (this.closed) return;
    this.noteSent();
    this.flow.sendPing();
  }

  /** Forgets a client transaction without telling its user (its owner stopped); stops Timer F. */
  cancel(tx: NonInviteClientTransaction): void {
    tx.abandon();
    const key = clientKey(tx.branch, tx.request.method);
    if (this.transactions.get(key) === tx) this.transactions.delete(key);
  }

  newBranch(): string {
    return `z9hG4bK${hexToken(this.opts.random, 10)}`;
  }

  /** Sends a request in a new non-INVITE client transaction. The request's top Via must carry its branch. */
  sendRequest(
    request: SipRequest,
    user: NictUser,
    opts: { sign?: boolean; includeVersion?: boolean } = {},
  ): NonInviteClientTransaction {
    const via = header(request, "Via");
    const branch = via ? (parseVia(via).params.get("branch") ?? "") : "";
    if (!branch) throw new Error("request without a Via branch"); // a bug in our own code, not input
    const sign = opts.sign ?? this.sa !== undefined;
    if (sign && this.sa)
      this.sa.sign(request, this.opts.random, { includeVersion: opts.includeVersion ?? false });
    const key = clientKey(branch, request.method);
    const tx = new NonInviteClientTransaction(
      branch,
      request,
      this.opts.clock,
      {
        onProvisional: (r) => user.onProvisional?.(r),
        onFinal: (r) => {
          this.transactions.delete(key);
          user.onFinal(r);
        },
        onFailure: (why, err) => {
          this.transactions.delete(key);
          user.onFailure(why, err);
        },
      },
      this.opts.timerFMs ?? TIMER_F_MS,
    );
    this.transactions.set(key, tx);
    if (this.closed) tx.transportFailed(new TransportError("connection-closed", "flow is closed"));
    else {
      this.noteSent();
      this.flow.send(request);
    }
    return tx;
  }

  /**
   * Sends an initial INVITE (out of any dialog). A top Via is added when the request has none.
   * The dialogs its responses make are bound to `owner`.
   */
  sendInvite(invite: SipRequest, user: InviteClientUser, owner: DialogUser): OutgoingInvite {
    if (!branchOf(invite)) this.via(invite, this.newBranch());
    return this.startInvite(invite, user, { owner });
  }

  /** Sends a re-INVITE in `dialog` (§14.1): a target refresh with our Contact, fresh branch. */
  sendReinvite(dialog: Dialog, opts: RequestOptions, user: InviteClientUser): OutgoingInvite {
    const req = dialog.createRequest("INVITE", { ...opts, via: this.viaValue(this.newBranch()) });
    return this.startInvite(req, user, { dialog });
  }

  /**
   * Sends a non-INVITE request in `dialog` (BYE, REFER, NOTIFY, INFO …), fresh branch; the
   * dialog learns of its response (§12.2.1.2). Throws when the dialog has ended.
   */
  sendInDialog(
    dialog: Dialog,
    method: string,
    opts: RequestOptions,
    user: NictUser = NO_NICT_USER,
  ): SipRequest {
    const req = dialog.createRequest(method, { ...opts, via: this.viaValue(this.newBranch()) });
    this.sendRequest(req, {
      onProvisional: (r) => user.onProvisional?.(r),
      onFinal: (r) => {
        dialog.receiveResponse(req, r);
        user.onFinal(r);
      },
      onFailure: (why, err) => {
        if (why === "timeout") dialog.requestTimedOut();
        user.onFailure(why, err);
      },
    });
    return req;
  }

  /** Forgets a dialog (its call ended): later requests in it are answered 481. */
  releaseDialog(dialog: Dialog): void {
    dialog.terminate();
    this.dialogs.delete(dialog);
    if (this.owners.get(dialog.key)?.dialog === dialog) this.owners.delete(dialog.key);
    const prefix = `${dialog.key}\u0000`;
    for (const [k, w] of [...this.awaitingAck]) {
      if (k.startsWith(prefix)) {
        w.stop();
        this.awaitingAck.delete(k);
      }
    }
  }

  close(): void {
    this.flow.close();
  }

  /** Pending client transactions; a leak check for soak tests. */
  get pending(): number {
    return this.transactions.size;
  }

  /** Everything calls keep in this core; a leak check for call tests. */
  get callState(): { serverTransactions: number; dialogs: number; awaitingAck: number } {
    return {
      serverTransactions: this.servers.size,
      dialogs: this.owners.size,
      awaitingAck: this.awaitingAck.size,
    };
  }

  private noteSent(): void {
    this.activity.lastSentAt = this.opts.clock.monotonic();
  }

  private noteReceived(): void {
    this.activity.lastReceivedAt = this.opts.clock.monotonic();
    this.activity.received++;
  }

  /** Signs (when there is an SA) and sends a message of the call layers; every transmission anew. */
  private transmit(message: SipMessage): void {
    if (this.closed) return;
    this.sa?.sign(message, this.opts.random);
    this.noteSent();
    this.flow.send(message);
  }

  private viaValue(branch: string): string {
    const { address, port } = this.flow.local;
    const host = address.includes(":") ? `[${address}]` : address;
    return `SIP/2.0/TLS ${host}:${port};branch=${branch};rport`;
  }

  private bind(dialog: Dialog, user: DialogUser | undefined): void {
    this.dialogs.add(dialog);
    if (user) this.owners.set(dialog.key, { dialog, user });
  }

  private startInvite(
    req: SipRequest,
    user: InviteClientUser,
    ctx: { owner?: DialogUser; dialog?: Dialog },
  ): OutgoingInvite {
    const branch = branchOf(req);
    if (!branch) throw new Error("INVITE without a Via branch"); // a bug in our own code
    const key = clientKey(branch, "INVITE");
    /** The dialogs of this INVITE (one per fork) and the ACK sent for each one's 2xx. */
    const forks = new Map<string, { dialog: Dialog; ack?: SipRequest }>();
    if (ctx.dialog) forks.set(ctx.dialog.key, { dialog: ctx.dialog });
    let cancelled = false;
    const endEarlyForks = () => {
      if (ctx.dialog) return; // a re-INVITE's dialog outlives it
      for (const f of forks.values()) if (f.dialog.state === "early") this.releaseDialog(f.dialog);
    };
    const forkOf = (res: SipResponse): { dialog: Dialog; ack?: SipRequest } | undefined => {
      if (ctx.dialog) return forks.get(ctx.dialog.key);
      const made = Dialog.asUac(req, res);
      if (!made) return undefined;
      const known = forks.get(made.key);
      if (known) {
        known.dialog.receiveResponse(req, res);
        return known;
      }
      const entry = { dialog: made };
      forks.set(made.key, entry);
      // A 2xx after we cancelled gets BYE right away: no owner need hear the dialog's requests.
      this.bind(made, cancelled ? undefined : ctx.owner);
      return entry;
    };
    const ict = new InviteClientTransaction(
      branch,
      req,
      this.opts.clock,
      {
        send: (ack) => this.transmit(ack),
        sendCancel: (c) => {
          if (!this.closed) this.sendRequest(c, NO_NICT_USER);
        },
        onProvisional: (res) => {
          const fork = res.status > 100 ? forkOf(res) : undefined;
          user.onProvisional?.(res, fork?.dialog);
        },
        onSuccess: (res) => {
          const fork = forkOf(res);
          if (!fork) {
            // §12.1.2 needs a To tag; a 2xx without one makes no dialog to ACK in.
            this.opts.logger.warn("2xx to INVITE without a To tag; ignored");
            return;
          }
          const retransmission = fork.ack !== undefined;
          if (!fork.ack) {
            if (ctx.dialog) fork.dialog.receiveResponse(req, res);
            const extra = user.ackFor?.(res, fork.dialog) ?? {};
            fork.ack = fork.dialog.createAck(req, { ...extra, via: this.viaValue(this.newBranch()) });
          }
          this.transmit(fork.ack);
          if (cancelled && !retransmission && !ctx.dialog) {
            // §9.1 / §15: the CANCEL lost the race; the call was not wanted any more.
            this.sendInDialog(fork.dialog, "BYE", {});
            this.releaseDialog(fork.dialog);
          }
          user.onSuccess(res, fork.dialog, { retransmission, afterCancel: cancelled });
        },
        onRejected: (res) => {
          ctx.dialog?.receiveResponse(req, res);
          endEarlyForks();
          user.onRejected(res);
        },
        onFailure: (why, err) => {
          if (why === "timeout" || why === "cancel-timeout") ctx.dialog?.requestTimedOut();
          endEarlyForks();
          user.onFailure(why, err);
        },
        onTerminated: () => {
          if (this.transactions.get(key) === ict) this.transactions.delete(key);
          // §13.2.2.4: early dialogs that no 2xx confirmed end with the transaction.
          endEarlyForks();
        },
      },
      this.opts.inviteTimers,
    );
    this.transactions.set(key, ict);
    if (this.closed) ict.transportFailed(new TransportError("connection-closed", "flow is closed"));
    else this.transmit(req);
    return {
      request: req,
      get state() {
        return ict.state;
      },
      get cancelled() {
        return cancelled;
      },
      cancel: (extra = []) => {
        cancelled = true;
        // Its owner wants no more of the early dialogs; a late 2xx gets its own BYE.
        for (const f of forks.values()) {
          if (!ctx.dialog && this.owners.get(f.dialog.key)?.dialog === f.dialog)
            this.owners.delete(f.dialog.key);
        }
        return ict.cancel(extra);
      },
    };
  }

  private receive(message: SipMessage): void {
    if (message.kind === "request") {
      if (this.sa && !this.checkSignature(message, false)) return;
      this.routeRequest(message);
      return;
    }
    const key = clientKeyOfResponse(message);
    const tx = key ? this.transactions.get(key) : undefined;
    if (!tx) {
      this.opts.logger.debug("response matches no transaction; dropped", { status: message.status });
      return;
    }
    if (message.status >= 200 && this.sa && !this.checkSignature(message, this.mayBeUnsigned(message)))
      return;
    // 1xx are never checked (Lync does not sign them), so they never count as verified.
    this.verdicts.set(
      message,
      message.status >= 200 ? this.verdictFor(message) : this.sa ? "unsigned" : "no-sa",
    );
    tx.receive(message);
  }

  /** The order of the class comment: transaction, CANCEL, ACK, new INVITE, dialog, handlers. */
  private routeRequest(req: SipRequest): void {
    const method = req.method.toUpperCase();
    const key = serverKeyOfRequest(req);
    const tx = key ? this.servers.get(key) : undefined;
    if (tx) {
      tx.receiveRequest(req);
      this.onRequest(req);
      return;
    }
    if (method === "CANCEL") {
      this.receiveCancel(req, key);
      this.onRequest(req);
      return;
    }
    const toTagged = tagOf(header(req, "To") ?? "") !== undefined;
    if (method === "ACK") {
      const routing = this.dialogs.route(req);
      if (routing.kind === "dialog") this.receiveAck(routing.dialog, req);
      else if (routing.kind === "out-of-dialog") this.answer(req);
      else this.onRequest(req); // an ACK of no dialog: dropped (§17: ACKs are never answered)
      return;
    }
    if (method === "INVITE" && !toTagged) {
      this.receiveInvite(req, key);
      this.onRequest(req);
      return;
    }
    if (toTagged) {
      const routing = this.dialogs.route(req);
      const owner = routing.kind === "dialog" ? this.owners.get(routing.dialog.key) : undefined;
      if (routing.kind === "dialog" && owner) {
        this.deliver(routing.dialog, owner.user, req, key);
        this.onRequest(req);
        return;
      }
      if (routing.kind === "reject" && routing.dialog) {
        this.serverRequest(req, key, routing.dialog).respond(routing.status, { reason: routing.reason });
        this.onRequest(req);
        return;
      }
      const claimed = this.askHandlers(req);
      // Not in our table. Lync's registration NOTIFY / BENOTIFY carry a To tag but no dialog of
      // ours: they keep today's answers (never a 481, which would end the registration).
      // OPTIONS keeps today's 200 too: a keep-alive probe with a stale tag must not look dead.
      if (claimed || method === "BENOTIFY" || method === "OPTIONS" || isRegistrationNotify(req))
        this.answer(req, { claimed });
      else {
        this.serverRequest(req, key, undefined).respond(481);
        this.onRequest(req);
      }
      return;
    }
    this.answer(req);
  }

  private receiveCancel(cancel: SipRequest, key: string | undefined): void {
    const targetKey = cancelTargetKey(cancel);
    const target = targetKey ? this.servers.get(targetKey) : undefined;
    const own = this.serverRequest(cancel, key, undefined);
    if (target instanceof InviteServerTransaction) {
      target.cancel(cancel, (ok) => own.respondWith(ok));
      return;
    }
    // §9.2: no transaction to cancel.
    own.respond(481);
  }

  private receiveAck(dialog: Dialog, ack: SipRequest): void {
    const seq = Number.parseInt((header(ack, "CSeq") ?? "").trim(), 10);
    const k = `${dialog.key}\u0000${seq}`;
    const waiting = this.awaitingAck.get(k);
    // Only the first ACK of a 2xx goes up; a repeated one has nothing left to acknowledge.
    if (!waiting) return;
    this.awaitingAck.delete(k);
    waiting.stop();
    this.owners.get(dialog.key)?.user.onAck(ack, dialog);
  }

  /** §13.3.1.4: the 2xx goes out again at T1, 2·T1 … T2 until its ACK; 64·T1 without one → onTimeout. */
  private awaitAck(dialog: Dialog, seq: number, res: SipResponse, onTimeout: () => void): void {
    const k = `${dialog.key}\u0000${seq}`;
    this.awaitingAck.get(k)?.stop();
    const clock = this.opts.clock;
    let interval = T1_MS;
    let retransmit: TimerHandle | undefined;
    const again = () => {
      this.transmit(res);
      interval = Math.min(interval * 2, T2_MS);
      retransmit = clock.setTimer(interval, again);
    };
    retransmit = clock.setTimer(interval, again);
    const giveUp = clock.setTimer(64 * T1_MS, () => {
      retransmit?.cancel();
      this.awaitingAck.delete(k);
      onTimeout();
    });
    this.awaitingAck.set(k, {
      stop: () => {
        retransmit?.cancel();
        giveUp.cancel();
      },
    });
  }

  private receiveInvite(req: SipRequest, key: string | undefined): void {
    const invite = this.incomingInvite(req, key, undefined, hexToken(this.opts.random, 8));
    const handler = this.inviteHandler;
    if (!handler) {
      invite.respond(480);
      return;
    }
    try {
      handler(invite);
    } catch (err) {
      this.opts.logger.error("INVITE handler failed", { error: String(err) });
      if (!invite.answered) invite.respond(500);
    }
  }

  /** An in-dialog request for its owner: INVITE in an INVITE server transaction, others in a NIST. */
  private deliver(dialog: Dialog, user: DialogUser, req: SipRequest, key: string | undefined): void {
    const tx =
      req.method.toUpperCase() === "INVITE"
        ? this.incomingInvite(req, key, dialog, dialog.id.localTag)
        : this.serverRequest(req, key, dialog);
    try {
      user.onRequest(tx);
    } catch (err) {
      this.opts.logger.error("dialog request handler failed", { method: req.method, error: String(err) });
      if (!tx.answered) tx.respond(500);
    }
  }

  private serverRequest(
    req: SipRequest,
    key: string | undefined,
    dialog: Dialog | undefined,
  ): ServerRequest & { respondWith(res: SipResponse): boolean } {
    const nist = new NonInviteServerTransaction(req, this.opts.clock, {
      send: (res) => this.transmit(res),
      onTerminated: () => {
        if (key && this.servers.get(key) === nist) this.servers.delete(key);
      },
    });
    if (key) this.servers.set(key, nist);
    // A request without To tag (a CANCEL, a stray out-of-dialog one) gets a tag of ours.
    const toTag = dialog?.id.localTag ?? hexToken(this.opts.random, 8);
    const respondWith = (res: SipResponse) => nist.respond(res);
    return {
      kind: "request",
      request: req,
      dialog,
      get answered() {
        return nist.state === "completed" || nist.state === "terminated";
      },
      respond: (status, opts = {}) => respondWith(buildResponse(req, status, { ...opts, toTag })),
      respondWith,
    };
  }

  private incomingInvite(
    req: SipRequest,
    key: string | undefined,
    reinviteOf: Dialog | undefined,
    toTag: string,
  ): IncomingInvite {
    const core = this;
    let dialog = reinviteOf;
    const seq = Number.parseInt((header(req, "CSeq") ?? "").trim(), 10);
    const ist: InviteServerTransaction = new InviteServerTransaction(
      req,
      this.opts.clock,
      {
        send: (res) => this.transmit(res),
        onCancelled: (cancel) => {
          if (!reinviteOf && dialog) this.releaseDialog(dialog);
          handle.onCancelled(cancel);
        },
        // RFC 6026 §8.7: an ACK that matched the transaction (the peer reused the branch).
        onAck: (ack) => {
          if (dialog) this.receiveAck(dialog, ack);
        },
        onFailure: (why, err) => handle.onFailure(why, err),
        onTerminated: () => {
          if (key && this.servers.get(key) === ist) this.servers.delete(key);
        },
      },
      { toTag, ...this.opts.inviteServerTimers },
    );
    if (key) this.servers.set(key, ist);
    const handle: IncomingInvite = {
      kind: "invite",
      request: req,
      get dialog() {
        return dialog;
      },
      toTag,
      get state() {
        return ist.state;
      },
      get answered() {
        return ist.state !== "proceeding";
      },
      owner: undefined,
      onCancelled: () => {},
      onAckTimeout: () => {},
      onFailure: () => {},
      respond(status, opts = {}) {
        const list = [...(opts.headers ?? [])];
        const makesDialog = !reinviteOf && status > 100 && status < 300;
        // §12.1.1: the UAS copies Record-Route into every response that makes the dialog.
        if (makesDialog)
          list.unshift(...headers(req, "Record-Route").map((v): [string, string] => ["Record-Route", v]));
        const res = ist.response(status, { ...opts, headers: list });
        if (ist.state !== "proceeding" && !(ist.state === "accepted" && status >= 200 && status < 300))
          return false;
        let made: Dialog | undefined;
        if (makesDialog && !dialog) {
          made = Dialog.asUas(req, {
            localTag: toTag,
            localContact: header(res, "Contact"),
            state: status < 200 ? "early" : "confirmed",
            random: core.opts.random,
          });
          dialog = made;
          // Bound before the answer leaves, so a request crossing it finds its dialog.
          core.bind(made, handle.owner);
        }
        if (!ist.respond(res)) {
          if (made) {
            core.releaseDialog(made);
            dialog = undefined;
          }
          return false;
        }
        if (dialog && status >= 200 && status < 300) {
          dialog.confirm();
          if (handle.owner && !core.owners.has(dialog.key)) core.bind(dialog, handle.owner);
          core.awaitAck(dialog, seq, res, () => handle.onAckTimeout());
        } else if (status >= 300 && dialog && !reinviteOf) {
          core.releaseDialog(dialog); // §12.3: a failure ends the early dialog
          dialog = undefined;
        }
        return true;
      },
    };
    return handle;
  }

  /**
   * Today's synchronous path: the first handler that claims the request answers it (`pre` when
   * the handlers were already asked); otherwise OPTIONS gets 200 and anything else 501.
   */
  private answer(request: SipRequest, pre?: { claimed: RequestAnswer | undefined }): void {
    const method = request.method.toUpperCase();
    let answer: RequestAnswer | undefined;
    if (method !== "ACK") {
      answer = pre ? pre.claimed : this.askHandlers(request);
      answer ??= method === "OPTIONS" ? { status: 200 } : { status: 501 };
      // BENOTIFY is a NOTIFY that expects no answer ([MS-SIP]); its handler still runs.
      if (method !== "BENOTIFY") this.respond(request, answer);
    }
    this.onRequest(request);
    answer?.after?.();
  }

  private askHandlers(request: SipRequest): RequestAnswer | undefined {
    for (const h of [...this.handlers]) {
      let answer: RequestAnswer | undefined;
      try {
        answer = h(request);
      } catch (err) {
        this.opts.logger.error("request handler failed", { method: request.method, error: String(err) });
        answer = { status: 500, reason: "Server Internal Error" };
      }
      if (answer) return answer;
    }
    return undefined;
  }

  /** Sends a response to a server request, signed with the SA when there is one. */
  private respond(request: SipRequest, answer: RequestAnswer): void {
    const list: Array<[string, string]> = headers(request, "Via").map((v) => ["Via", v]);
    const to = header(request, "To") ?? "";
    list.push(["From", header(request, "From") ?? ""]);
    list.push(["To", /;\s*tag=/i.test(to) ? to : `${to};tag=${hexToken(this.opts.random, 8)}`]);
    list.push(["Call-ID", header(request, "Call-ID") ?? ""]);
    list.push(["CSeq", header(request, "CSeq") ?? ""]);
    list.push(...(answer.headers ?? []));
    const res = response(answer.status, answer.reason ?? REASONS[answer.status] ?? "", list);
    // tls-dsk.md §4.2: the client signs its responses too (Authorization, field 16 = status).
    this.sa?.sign(res, this.opts.random);
    if (this.closed) return;
    this.noteSent();
    this.flow.send(res);
  }

  /** Called once checkSignature let the message through: with an SA, a signature means it verified. */
  private verdictFor(message: SipMessage): SignatureVerdict {
    if (!this.sa) return "no-sa";
    const signed = header(message, "Authentication-Info") ?? header(message, "Proxy-Authentication-Info");
    return signed ? "verified" : "unsigned";
  }

  private mayBeUnsigned(response: SipResponse): boolean {
    if (response.status === 401 || response.status === 407) return true;
    const cseq = header(response, "CSeq") ?? "";
    return /\bREGISTER\s*$/i.test(cseq) && response.status >= 300;
  }

  /** True when the message may be processed. */
  private checkSignature(message: SipMessage, unsignedAllowed: boolean): boolean {
    const sa = this.sa;
    if (!sa) return true;
    const signed = header(message, "Authentication-Info") ?? header(message, "Proxy-Authentication-Info");
    if (!signed) {
      if (unsignedAllowed) return true;
      if (message.kind === "response" && message.status >= 200 && message.status < 300) {
        this.securityFailure(
          new AuthError("rspauth-missing", "Registrar answered without a signature (no Authentication-Info)"),
        );
      } else {
        this.opts.logger.warn("unsigned message from the server dropped");
      }
      return false;
    }
    try {
      sa.verify(message);
      return true;
    } catch (err) {
      const e = err instanceof AuthError ? err : new AuthError("rspauth-invalid", String(err));
      if (e.code === "sa-mismatch") {
        // [MS-SIPAE] §3.2.5.2: no matching SA → discard the message.
        this.opts.logger.warn("message signed for another security association dropped");
        return false;
      }
      this.securityFailure(e);
      return false;
    }
  }

  private securityFailure(error: AuthError): void {
    this.opts.logger.error("server signature check failed; dropping the flow", { code: error.code });
    this.onSecurityFailure(error);
    this.flow.close();
  }

  /** Adds Via with a fresh branch for this flow (helper for request builders). */
  via(request: SipRequest, branch: string): void {
    const { address, port } = this.flow.local;
    setHeader(request, "Via", `SIP/2.0/TLS ${address}:${port};branch=${branch};rport`);
  }
}

/** Lync's registration-notify NOTIFY (registration.ts answers it; it belongs to no dialog). */
function isRegistrationNotify(req: SipRequest): boolean {
  if (!/^(BE)?NOTIFY$/i.test(req.method)) return false;
  return (header(req, "Event") ?? "").split(";")[0]!.trim().toLowerCase() === "registration-notify";
}
