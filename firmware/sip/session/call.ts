/**
 * One call: the session layer above the user-agent core (RFC 3261 §13–15, RFC 4028 session
 * timers, RFC 3515 REFER). Pure: messages go through the core, time is the injected Clock,
 * randomness the Random port, media a MediaPort. One Call per dialog.
 *
 *   outgoing: idle ─dial─► calling ─180─► ringing ─18x+SDP─► early ─2xx (ACKed)─► confirmed
 *   incoming: incoming ─ring (180)─► ringing ─answer (200+SDP)─► answered ─ACK─► confirmed
 *   every state ─► terminated, with a reason (EndReason) and the SIP status that caused it
 *
 * - cancel / reject (486 busy, 603 decline) / hangUp (BYE; CANCEL or 603 before an answer).
 *   An ended call is ended at once for the phone: a CANCEL that a 2xx crossed is mopped up by the
 *   core (ACK, then BYE), a BYE's answer is not waited for.
 * - hold / resume: a re-INVITE with the media port's offer (sendonly / sendrecv); the peer's
 *   re-INVITE is answered with the port's answer, or 488 when the port refuses the offer (say it
 *   drops SRTP that we require), and the call carries on as it was (§14.2). An offer of ours that
 *   the peer refuses is rolled back the same way.
 * - Glare (§14.1): 491 to a re-INVITE that crosses ours; ours is retried after the random delay
 *   (2.1–4 s when we own the Call-ID, 0–2 s otherwise). A second re-INVITE while the first is
 *   unanswered gets 500 with Retry-After (§14.2).
 * - Session timers (RFC 4028): Session-Expires / Min-SE on every INVITE we send; the refresher
 *   re-INVITEs at half the interval (same SDP: a refresh offer), either side sends BYE at expiry
 *   (session-timer.ts's watchdog); a 422 is retried with the larger Min-SE.
 * - blindTransfer: REFER with Refer-To; 202, then the NOTIFYs' sipfrag tell the progress; on a
 *   2xx sipfrag the call is over ("transferred", we send BYE as RFC 5589 §6.1 has the transferor
 *   do). A REFER from the peer is declined 603 unless `acceptTransfers`, then 202, NOTIFY
 *   "100 Trying" (RFC 3515 §2.4.4) and a "transfer-requested" event; the owner places the new
 *   call (dial with the REFER's Referred-By, RFC 3892) and reports its progress with
 *   reportTransfer (180, then the final status, which ends the implicit subscription).
 * - Requests in a dialog that has ended get 481 (the core, or this call once terminated).
 *
 * Events: state changes with reasons, the remote party (From / To, P-Asserted-Identity), hold,
 * refused offers, transfer progress; times on the monotonic clock (durationMs for the call log).
 */
import type { TimerHandle } from "../../core/clock.ts";
import { Emitter } from "../../core/emitter.ts";
import { HandsetError } from "../../core/errors.ts";
import { hexToken } from "../../core/random.ts";
import { header, type SipRequest, type SipResponse } from "../message/message.ts";
import {
  DEFAULT_OFFER,
  type Dialog,
  type IncomingInvite,
  type InviteClientUser,
  type NictUser,
  type Offer,
  type OutgoingInvite,
  offerHeaders,
  refreshOffer,
  retryAfter422,
  type ServerRequest,
  SessionTimer,
  type UasPolicy,
  uacResult,
  uasAnswer,
} from "../user-agent-core.ts";
import {
  ALLOW,
  bodyHeaders,
  buildInvite,
  contactValue,
  eventPackage,
  glareDelayMs,
  partyOf,
  type RemoteParty,
  referTarget,
  SIPFRAG,
  sessionBody,
  sipfrag,
  sipfragStatus,
  subscriptionState,
  unsupportedRequired,
  warningHeader,
  withSupported,
} from "./call-requests.ts";
import {
  CALL_USER_AGENT,
  type CallDirection,
  type CallEvent,
  type CallOptions,
  type CallState,
  type DialOptions,
  type EndReason,
  endReasonOf,
  type TransferProgress,
} from "./call-types.ts";
import type { MediaDescription, MediaRefusal } from "./media-port.ts";

export type {
  CallDirection,
  CallEvent,
  CallOptions,
  CallState,
  DialOptions,
  EndReason,
  SessionTimerSettings,
  TransferProgress,
} from "./call-types.ts";
export { CALL_USER_AGENT } from "./call-types.ts";

const NO_ANSWER_MS = 180_000;

type MediaAction = "hold" | "resume" | "refresh";

const isRefusal = (r: { kind: string }): r is MediaRefusal => r.kind === "refused";

export class Call {
  private _state: CallState;
  private _reason: EndReason | undefined;
  private _status: number | undefined;
  private readonly emitter = new Emitter<CallEvent>();
  private readonly timer: SessionTimer;
  private dialog: Dialog | undefined;
  /** Our initial INVITE (outgoing) or theirs (incoming). */
  private outgoing: OutgoingInvite | undefined;
  private incoming: IncomingInvite | undefined;
  private callId = "";
  private fromTag = "";
  private cseq = 1;
  private target = "";
  private referredBy: string | undefined;
  private offer: MediaDescription | undefined;
  /** The answer taken from a provisional (early media); a 2xx repeats it (§13.2.1). */
  private earlyAnswer: string | undefined;
  /** Incoming: the answer to the INVITE's offer, ready for the 200; or none (we offer in it). */
  private preparedAnswer: MediaDescription | undefined;
  private checked = false;
  private uasTimer: ReturnType<typeof uasAnswer> | undefined;
  /** Our 2xx carries an offer; its ACK brings the answer. */
  private answerInAck = false;
  /** Hung up while our 2xx waited for its ACK: the BYE goes once it comes (§15). */
  private byeAfterAck = false;
  private reinvite: { action: MediaAction; handle: OutgoingInvite } | undefined;
  private peerReinvite: IncomingInvite | undefined;
  private retry: TimerHandle | undefined;
  private noAnswer: TimerHandle | undefined;
  /** After a 422 to a re-INVITE: the raised offer for the retry. */
  private timerOverride: Offer | undefined;
  private sessionOffer: Offer | undefined;
  private localHold = false;
  private remoteHold = false;
  private transfer: { progress: TransferProgress } | undefined;
  private referral: { id: number } | undefined;
  private _party: RemoteParty | undefined;
  /** Monotonic ms. */
  readonly createdAt: number;
  /** Epoch ms, for the call log. */
  readonly startedAtEpochMs: number;
  private _answeredAt: number | undefined;
  private _endedAt: number | undefined;
  private readonly dialogUser = {
    onRequest: (tx: ServerRequest | IncomingInvite) => this.onRequest(tx),
    onAck: (ack: SipRequest, dialog: Dialog) => this.onAck(ack, dialog),
    onTransportLost: (_error: HandsetError) => this.end("transport"),
  };

  constructor(
    private readonly o: CallOptions,
    readonly direction: CallDirection = "outgoing",
  ) {
    this._state = direction === "outgoing" ? "idle" : "incoming";
    this.createdAt = o.clock.monotonic();
    this.startedAtEpochMs = o.clock.now();
    this.timer = new SessionTimer(o.clock, {
      onRefresh: () => {
        // A re-INVITE in progress (or a glare retry waiting) refreshes the session when it succeeds.
        if (!this.changeMedia("refresh")) this.note("no refresh sent: another re-INVITE is under way");
      },
      onExpire: () => {
        this.bye();
        this.end("session-expired");
      },
    });
    if (o.sessionTimer !== false) {
      const s = o.sessionTimer ?? {};
      this.sessionOffer = {
        interval: s.interval ?? DEFAULT_OFFER.interval,
        minSe: s.minSe ?? DEFAULT_OFFER.minSe,
        ...(s.refresher ? { refresher: s.refresher } : {}),
      };
    }
  }

  /**
   * An incoming call from the core's INVITE handle. Nothing is sent yet: attach listeners, then
   * ring() (180), or answer / reject straight away (auto-answer, busy). Unanswered, the core's
   * 100 Trying goes out after 200 ms.
   */
  static incoming(o: CallOptions, invite: IncomingInvite): Call {
    const call = new Call(o, "incoming");
    call.take(invite);
    return call;
  }

  on(listener: (e: CallEvent) => void): () => void {
    return this.emitter.on(listener);
  }

  get state(): CallState {
    return this._state;
  }

  /** Why the call ended, and the SIP status behind it. */
  get endReason(): { reason: EndReason; status?: number } | undefined {
    if (!this._reason) return undefined;
    return this._status === undefined
      ? { reason: this._reason }
      : { reason: this._reason, status: this._status };
  }

  get remoteParty(): RemoteParty | undefined {
    return this._party;
  }

  /** Who holds whom: `local` we hold the peer, `remote` the peer holds us. */
  get holdState(): { local: boolean; remote: boolean } {
    return { local: this.localHold, remote: this.remoteHold };
  }

  get callIdentifier(): string {
    return this.callId;
  }

  /** The agreed session timer, if any. */
  get sessionTimer(): { interval: number; refresher: "local" | "remote" } | undefined {
    return this.timer.current;
  }

  get answeredAt(): number | undefined {
    return this._answeredAt;
  }

  get endedAt(): number | undefined {
    return this._endedAt;
  }

  /** Time connected (answer to end, or to now), ms; 0 when never answered. */
  get durationMs(): number {
    if (this._answeredAt === undefined) return 0;
    return (this._endedAt ?? this.o.clock.monotonic()) - this._answeredAt;
  }

  // ---- actions ------------------------------------------------------------------------------

  /** `referredBy`: this call is a transfer's (RFC 3892), the REFER's Referred-By goes on the INVITE. */
  dial(target: string, o: DialOptions = {}): void {
    if (this.direction !== "outgoing" || this._state !== "idle")
      throw new HandsetError("call-state", `cannot dial in state ${this._state}`);
    this.target = target;
    this.referredBy = o.referredBy;
    this.setParty({ uri: target, asserted: [] });
    this.callId = hexToken(this.o.random, 16);
    this.fromTag = hexToken(this.o.random, 8);
    const offer = this.o.media.createOffer({ purpose: "initial" });
    if (isRefusal(offer)) {
      this.note(`no offer: ${offer.code}`);
      this.end("media");
      return;
    }
    this.offer = offer;
    this.setState("calling");
    this.noAnswer = this.o.clock.setTimer(this.o.noAnswerMs ?? NO_ANSWER_MS, () => {
      this.noAnswer = undefined;
      this.outgoing?.cancel();
      this.end("no-answer");
    });
    this.sendInitialInvite();
  }

  /** Cancels an outgoing call that has not been answered (§9.1). */
  cancel(): boolean {
    if (this.direction !== "outgoing" || !["calling", "ringing", "early"].includes(this._state)) return false;
    this.outgoing?.cancel();
    this.end("cancelled");
    return true;
  }

  /** Sends 180 Ringing (after the checks that may refuse the INVITE first). */
  ring(): boolean {
    const invite = this.incoming;
    if (!invite || this._state !== "incoming") return false;
    if (!this.check()) return false;
    if (!invite.respond(180, { headers: this.answerHeaders() })) return false;
    this.dialog = invite.dialog;
    this.setState("ringing");
    return true;
  }

  answer(): boolean {
    const invite = this.incoming;
    if (!invite || (this._state !== "incoming" && this._state !== "ringing")) return false;
    if (!this.check()) return false;
    let body = this.preparedAnswer;
    if (!body) {
      // The INVITE had no offer: ours goes in the 200, the answer comes in the ACK (§13.2.1).
      const offer = this.o.media.createOffer({ purpose: "initial" });
      if (isRefusal(offer)) {
        invite.respond(500, { reason: "No Media Available" });
        this.end("media", 500);
        return false;
      }
      body = offer;
      this.answerInAck = true;
    }
    const list = [
      ...this.answerHeaders(),
      ...withSupported(this.uasTimer?.headers ?? []),
      ...bodyHeaders(body),
    ];
    if (!invite.respond(200, { headers: list, body: body.sdp })) return false; // a CANCEL won
    this.dialog = invite.dialog;
    invite.onAckTimeout = () => {
      this.bye();
      this.byeAfterAck = false;
      if (this._state === "terminated" && this.dialog) this.o.core.releaseDialog(this.dialog);
      this.end("no-ack");
    };
    this.timer.start(this.uasTimer?.kind === "accept" ? this.uasTimer.timer : undefined);
    this._answeredAt = this.o.clock.monotonic();
    this.o.media.connected?.();
    this.setState("answered");
    return true;
  }

  /** Refuses an incoming call: 486 Busy Here (default), 603 Decline, 480 … */
  reject(status = 486): boolean {
    const invite = this.incoming;
    if (!invite || (this._state !== "incoming" && this._state !== "ringing")) return false;
    if (status < 300 || status > 699)
      throw new HandsetError("call-reject", `reject needs a 3xx–6xx, not ${status}`);
    invite.respond(status);
    this.end("rejected", status);
    return true;
  }

  /** Ends the call whatever its state: CANCEL or 603 before an answer, BYE after. */
  /**
   * Ends the call whatever its state. `now`: the flow under the call is about to close (the line
   * is given up), so an answered call not yet ACKed says BYE at once rather than waiting for an
   * ACK that can no longer arrive: §15's wait protects a BYE racing its own 2xx, but without the
   * BYE the far end would stay in a call with no one until its session timer.
   */
  hangUp(o: { now?: boolean } = {}): void {
    switch (this._state) {
      case "calling":
      case "ringing":
      case "early":
        if (this.direction === "outgoing") this.cancel();
        else this.reject(603);
        return;
      case "incoming":
        this.reject(603);
        return;
      case "answered":
        if (o.now) {
          if (this.incoming) this.incoming.onAckTimeout = () => {}; // the BYE is already said
          this.bye();
          this.end("local-hangup");
          return;
        }
        // §15: the callee sends no BYE before the ACK of its 2xx (or the 2xx's 64·T1 timeout).
        this.byeAfterAck = true;
        this.end("local-hangup");
        return;
      case "confirmed":
        this.bye();
        this.end("local-hangup");
        return;
      case "idle":
        this.end("local-hangup");
        return;
      case "terminated":
        return;
    }
  }

  /** Puts the peer on hold (re-INVITE, sendonly); false when busy with another offer. */
  hold(): boolean {
    return this.localHold ? true : this.changeMedia("hold");
  }

  resume(): boolean {
    return this.localHold ? this.changeMedia("resume") : true;
  }

  /** Blind transfer (RFC 3515): REFER the peer to `target`; progress in "transfer" events. */
  blindTransfer(target: string): boolean {
    if (this._state !== "confirmed" || this.transfer) return false;
    this.setTransfer("requested");
    const sent = this.send(
      "REFER",
      {
        headers: [
          ["Refer-To", `<${target}>`],
          ["Referred-By", `<${this.o.identity.aor}>`],
        ],
      },
      {
        onFinal: (r) => {
          if (!this.transfer) return;
          if (r.status >= 200 && r.status < 300) {
            if (this.transfer.progress === "requested") this.setTransfer("accepted", r.status);
          } else this.transferOver("failed", r.status);
        },
        onFailure: () => this.transferOver("failed"),
      },
    );
    if (!sent) this.transferOver("failed");
    return sent;
  }

  /**
   * After a "transfer-requested": how the new call is going, as a SIP status (100 trying, 180,
   * 200 answered, 486 …). A final status (≥ 200) ends the REFER's implicit subscription.
   */
  reportTransfer(status: number, reason?: string): void {
    if (!this.referral || this._state !== "confirmed") return;
    const final = status >= 200;
    this.notifyReferrer(status, reason, final);
    if (final) this.referral = undefined;
  }

  // ---- outgoing INVITE ----------------------------------------------------------------------

  private sendInitialInvite(): void {
    const req = buildInvite({
      target: this.target,
      identity: this.o.identity,
      contact: this.o.contact,
      callId: this.callId,
      fromTag: this.fromTag,
      cseq: this.cseq,
      offer: this.offer!,
      timerHeaders: this.sessionOffer ? offerHeaders(this.sessionOffer) : [],
      userAgent: this.o.userAgent ?? CALL_USER_AGENT,
      ...(this.referredBy ? { referredBy: this.referredBy } : {}),
    });
    this.outgoing = this.o.core.sendInvite(req, this.initialUser, this.dialogUser);
  }

  private readonly initialUser: InviteClientUser = {
    onProvisional: (res) => {
      if (this._state === "terminated" || res.status === 100) return;
      this.setParty(partyOf(res, "To"));
      const body = sessionBody(res);
      if (body && this.earlyAnswer === undefined) {
        // §13.2.1: the answer may come early, in a provisional; the 2xx repeats it.
        const r = this.o.media.acceptAnswer(body.sdp, { contentType: body.contentType });
        if (isRefusal(r)) {
          this.note(`early answer refused: ${r.code}`);
          this.outgoing?.cancel();
          this.end("media");
          return;
        }
        this.earlyAnswer = body.sdp;
      }
      this.setState(this.earlyAnswer !== undefined ? "early" : "ringing");
    },
    onSuccess: (res, dialog, info) => {
      if (info.afterCancel) return; // the core ACKed and hung up
      if (this.dialog && dialog !== this.dialog) {
        // §13.2.2.4: a second fork answered too; we keep the first.
        this.o.core.sendInDialog(dialog, "BYE", {});
        this.o.core.releaseDialog(dialog);
        return;
      }
      if (info.retransmission) return;
      if (this._state === "terminated") {
        this.o.core.sendInDialog(dialog, "BYE", {});
        this.o.core.releaseDialog(dialog);
        return;
      }
      this.dialog = dialog;
      this.setParty(partyOf(res, "To"));
      const body = sessionBody(res);
      if (this.earlyAnswer === undefined) {
        const r = body
          ? this.o.media.acceptAnswer(body.sdp, { contentType: body.contentType })
          : ({ kind: "refused", code: "no-answer-sdp", reason: "2xx without an answer" } as MediaRefusal);
        if (isRefusal(r)) {
          this.note(`answer refused: ${r.code}`);
          this.bye();
          this.end("media");
          return;
        }
        this.noteRemoteHold(r.remoteHold);
      } else if (body && body.sdp !== this.earlyAnswer) {
        this.note("2xx answer differs from the early one; the early answer stands (RFC 3261 §13.2.1)");
      }
      this.startTimerFrom(res);
      this.noAnswer?.cancel();
      this.noAnswer = undefined;
      this._answeredAt = this.o.clock.monotonic();
      this.o.media.connected?.();
      this.setState("confirmed");
    },
    onRejected: (res) => {
      if (this._state === "terminated") return;
      if (res.status === 422 && this.sessionOffer) {
        const retry = retryAfter422(res, this.sessionOffer);
        if (retry.ok) {
          // RFC 4028 §7.3: the same INVITE again, new CSeq, with the larger Min-SE.
          this.sessionOffer = retry.offer;
          this.cseq += 1;
          this.sendInitialInvite();
          return;
        }
        this.note(retry.reason);
      }
      this.end(endReasonOf(res.status), res.status);
    },
    onFailure: (why) => {
      if (this._state === "terminated") return;
      if (why === "transport") this.end("transport");
      else this.end("timeout", 408);
    },
  };

  // ---- incoming INVITE ----------------------------------------------------------------------

  private take(invite: IncomingInvite): void {
    this.incoming = invite;
    invite.owner = this.dialogUser;
    invite.onCancelled = () => this.end("remote-cancelled", 487);
    // Before the 180 no dialog is bound, so the flow's loss comes through the transaction.
    invite.onFailure = (why) => {
      if (why === "transport") this.end("transport");
    };
    const req = invite.request;
    this.callId = header(req, "Call-ID") ?? "";
    this.setParty(partyOf(req, "From"));
  }

  /** The checks that may refuse an incoming INVITE before it rings; once. */
  private check(): boolean {
    if (this.checked) return this._state !== "terminated";
    this.checked = true;
    const invite = this.incoming!;
    const req = invite.request;
    const unsupported = unsupportedRequired(req);
    if (unsupported.length > 0) {
      invite.respond(420, { headers: [["Unsupported", unsupported.join(", ")]] });
      this.end("failed", 420);
      return false;
    }
    const timer = uasAnswer(req, this.uasPolicy());
    if (timer.kind === "reject") {
      invite.respond(timer.status, { reason: timer.reason, headers: timer.headers });
      this.end("failed", timer.status);
      return false;
    }
    for (const n of timer.notes) this.note(n);
    this.uasTimer = timer;
    const body = sessionBody(req);
    if (body) {
      const r = this.o.media.answerOffer(body.sdp, { contentType: body.contentType });
      if (isRefusal(r)) {
        this.refuseOffer(invite, r);
        this.end("media", 488);
        return false;
      }
      this.preparedAnswer = r;
      this.noteRemoteHold(r.remoteHold);
    }
    return true;
  }

  private uasPolicy(): UasPolicy {
    const s = this.o.sessionTimer === false ? {} : (this.o.sessionTimer ?? {});
    return { minSe: s.minSe ?? DEFAULT_OFFER.minSe, ...(s.refresher ? { refresher: s.refresher } : {}) };
  }

  private answerHeaders(): Array<[string, string]> {
    return [
      ["Contact", contactValue(this.o.contact)],
      ["Allow", ALLOW],
    ];
  }

  private refuseOffer(tx: IncomingInvite, r: MediaRefusal): void {
    tx.respond(488, { reason: r.reason, headers: warningHeader(r, this.o.core.flow.local.address) });
    this.emitter.emit({ type: "offer-refused", by: "local", status: 488, code: r.code });
  }

  // ---- requests in the dialog ---------------------------------------------------------------

  private onRequest(tx: ServerRequest | IncomingInvite): void {
    const method = tx.request.method.toUpperCase();
    if (this._state === "terminated" || !this.dialog || tx.dialog !== this.dialog) {
      // An early dialog of a fork we did not keep, or a call that has ended.
      tx.respond(method === "OPTIONS" && this._state !== "terminated" ? 200 : 481);
      return;
    }
    switch (method) {
      case "BYE":
        this.onBye(tx);
        return;
      case "INVITE":
        if (tx.kind === "invite") this.onPeerReinvite(tx);
        return;
      case "REFER":
        this.onRefer(tx);
        return;
      case "NOTIFY":
        this.onNotify(tx);
        return;
      case "OPTIONS":
        tx.respond(200, {
          headers: [
            ["Allow", ALLOW],
            ["Accept", "application/sdp"],
            ["Supported", "timer"],
          ],
        });
        return;
      case "INFO":
        tx.respond(200);
        return;
      default:
        tx.respond(501, { headers: [["Allow", ALLOW]] });
    }
  }

  private onBye(tx: ServerRequest | IncomingInvite): void {
    tx.respond(200);
    // §15.1.2: requests still pending in the dialog get 487.
    if (this.peerReinvite && !this.peerReinvite.answered) this.peerReinvite.respond(487);
    const early = this._state === "incoming" || this._state === "ringing";
    if (early && this.incoming && !this.incoming.answered) this.incoming.respond(487);
    this.end(early ? "remote-cancelled" : "remote-hangup");
  }

  private onPeerReinvite(tx: IncomingInvite): void {
    if (this._state !== "confirmed" || this.reinvite || this.answerInAck) {
      // §14.2: an INVITE of ours (or our offer in a 2xx) is still open on this dialog.
      tx.respond(491);
      return;
    }
    if (this.peerReinvite && !this.peerReinvite.answered) {
      const secs = Math.floor(this.o.random.unit() * 11);
      tx.respond(500, { headers: [["Retry-After", String(secs)]] });
      return;
    }
    const unsupported = unsupportedRequired(tx.request);
    if (unsupported.length > 0) {
      tx.respond(420, { headers: [["Unsupported", unsupported.join(", ")]] });
      return;
    }
    const timer = uasAnswer(tx.request, this.uasPolicy());
    if (timer.kind === "reject") {
      tx.respond(timer.status, { reason: timer.reason, headers: timer.headers });
      return;
    }
    for (const n of timer.notes) this.note(n);
    const body = sessionBody(tx.request);
    let desc: MediaDescription;
    if (body) {
      const r = this.o.media.answerOffer(body.sdp, { contentType: body.contentType });
      if (isRefusal(r)) {
        this.refuseOffer(tx, r); // the call stays as it was (§14.2)
        return;
      }
      desc = r;
    } else {
      // No offer (a refresh from some peers): ours goes in the 200, the answer in the ACK.
      const r = this.o.media.createOffer({ purpose: "refresh" });
      if (isRefusal(r)) {
        tx.respond(500, { reason: "No Media Available" });
        return;
      }
      desc = r;
      this.answerInAck = true;
    }
    this.peerReinvite = tx;
    tx.onAckTimeout = () => {
      this.bye();
      this.end("no-ack");
    };
    const list = [...this.answerHeaders(), ...withSupported(timer.headers), ...bodyHeaders(desc)];
    if (!tx.respond(200, { headers: list, body: desc.sdp })) {
      this.answerInAck = false;
      this.o.media.rollback();
      return;
    }
    this.timer.start(timer.timer);
    if (body) this.noteRemoteHold(desc.remoteHold);
  }

  private onAck(ack: SipRequest, dialog: Dialog): void {
    if (dialog !== this.dialog) return;
    if (this._state === "terminated") {
      if (this.byeAfterAck) {
        this.byeAfterAck = false;
        this.bye();
        this.o.core.releaseDialog(dialog);
      }
      return;
    }
    if (this.answerInAck) {
      this.answerInAck = false;
      const body = sessionBody(ack);
      const r = body
        ? this.o.media.acceptAnswer(body.sdp, { contentType: body.contentType })
        : ({ kind: "refused", code: "no-answer-sdp", reason: "ACK without an answer" } as MediaRefusal);
      if (isRefusal(r)) {
        this.note(`answer in ACK refused: ${r.code}`);
        this.bye();
        this.end("media");
        return;
      }
      this.noteRemoteHold(r.remoteHold);
    }
    if (this._state === "answered") this.setState("confirmed");
  }

  private onRefer(tx: ServerRequest | IncomingInvite): void {
    if (!this.o.acceptTransfers || this._state !== "confirmed") {
      tx.respond(603, { reason: "Decline" });
      return;
    }
    const target = referTarget(tx.request);
    if (!target) {
      tx.respond(400, { reason: "Bad Refer-To" });
      return;
    }
    const seq = Number.parseInt((header(tx.request, "CSeq") ?? "").trim(), 10);
    tx.respond(202, { reason: "Accepted" });
    this.referral = { id: seq };
    // RFC 3515 §2.4.4: a NOTIFY goes out right after the 202.
    this.notifyReferrer(100, "Trying", false);
    const referredBy = header(tx.request, "Referred-By");
    this.emitter.emit(
      referredBy === undefined
        ? { type: "transfer-requested", target }
        : { type: "transfer-requested", target, referredBy },
    );
  }

  private notifyReferrer(status: number, reason: string | undefined, final: boolean): void {
    if (!this.referral) return;
    this.send("NOTIFY", {
      headers: [
        ["Event", `refer;id=${this.referral.id}`],
        ["Subscription-State", final ? "terminated;reason=noresource" : "active;expires=60"],
        ["Content-Type", SIPFRAG],
      ],
      body: sipfrag(status, reason),
    });
  }

  private onNotify(tx: ServerRequest | IncomingInvite): void {
    if (eventPackage(tx.request) !== "refer") {
      tx.respond(489, { reason: "Bad Event" });
      return;
    }
    if (!this.transfer) {
      tx.respond(481); // no REFER of ours is waiting for news
      return;
    }
    tx.respond(200);
    const status = sipfragStatus(tx.request.body);
    const over = subscriptionState(tx.request) === "terminated";
    if (status !== undefined && status >= 200 && status < 300) {
      this.transferOver("succeeded", status);
      // RFC 5589 §6.1: the transferor ends its call with the transferee.
      this.bye();
      this.end("transferred");
      return;
    }
    if (status !== undefined && status >= 300) this.transferOver("failed", status);
    else if (over) this.transferOver("failed", status);
    else this.setTransfer("trying", status);
  }

  // ---- re-INVITE of ours --------------------------------------------------------------------

  private changeMedia(action: MediaAction): boolean {
    const dialog = this.dialog;
    if (this._state !== "confirmed" || !dialog) return false;
    if (this.reinvite || this.answerInAck || (this.peerReinvite && !this.peerReinvite.answered)) return false;
    if (this.retry && action === "refresh") return false;
    // A new wish of the user's replaces a glare retry that is still waiting.
    this.retry?.cancel();
    this.retry = undefined;
    if (action !== "refresh") this.o.media.hold(action === "hold");
    const offer = this.o.media.createOffer({ purpose: action === "refresh" ? "refresh" : "update" });
    if (isRefusal(offer)) {
      this.o.media.hold(this.localHold);
      this.note(`no offer for ${action}: ${offer.code}`);
      return false;
    }
    const timerOffer = this.timerOverride ?? this.currentTimerOffer();
    this.timerOverride = undefined;
    const list = [
      ["Allow", ALLOW] as [string, string],
      ...withSupported(timerOffer ? offerHeaders(timerOffer) : []),
      ...bodyHeaders(offer),
    ];
    try {
      const handle = this.o.core.sendReinvite(
        dialog,
        { headers: list, body: offer.sdp },
        this.reinviteUser(action, timerOffer),
      );
      if (this._state === "confirmed" && handle.state !== "terminated") this.reinvite = { action, handle };
    } catch (err) {
      this.o.logger.warn("re-INVITE not sent", { error: String(err) });
      this.o.media.rollback();
      this.o.media.hold(this.localHold);
      return false;
    }
    return true;
  }

  private currentTimerOffer(): Offer | undefined {
    const current = this.timer.current;
    if (current) return refreshOffer(current, this.uasPolicy().minSe);
    return this.sessionOffer;
  }

  private reinviteUser(action: MediaAction, timerOffer: Offer | undefined): InviteClientUser {
    const done = () => {
      this.reinvite = undefined;
    };
    return {
      onSuccess: (res, _dialog, info) => {
        if (info.retransmission || this._state === "terminated") return;
        done();
        const body = sessionBody(res);
        const r = body
          ? this.o.media.acceptAnswer(body.sdp, { contentType: body.contentType })
          : ({ kind: "refused", code: "no-answer-sdp", reason: "2xx without an answer" } as MediaRefusal);
        if (isRefusal(r)) {
          this.note(`answer to our re-INVITE refused: ${r.code}`);
          this.bye();
          this.end("media");
          return;
        }
        if (action !== "refresh") this.localHold = action === "hold";
        this.noteRemoteHold(r.remoteHold, action !== "refresh");
        this.startTimerFrom(res);
      },
      onRejected: (res) => {
        if (this._state === "terminated") return;
        done();
        this.o.media.rollback();
        this.o.media.hold(this.localHold);
        if (res.status === 491) {
          this.retry = this.o.clock.setTimer(
            glareDelayMs(this.o.random, this.direction === "outgoing"),
            () => {
              this.retry = undefined;
              this.changeMedia(action);
            },
          );
          return;
        }
        if (res.status === 422 && timerOffer) {
          const retry = retryAfter422(res, timerOffer);
          if (retry.ok) {
            this.timerOverride = retry.offer;
            this.changeMedia(action);
            return;
          }
          this.note(retry.reason);
        }
        if (res.status === 481) {
          this.end("remote-hangup", 481); // the peer has no such call (§12.2.1.2)
          return;
        }
        if (res.status === 408) {
          this.bye();
          this.end("timeout", 408);
          return;
        }
        // Refused (488 …): the last agreement stands; a refused refresh leaves the watchdog on.
        this.emitter.emit({ type: "offer-refused", by: "remote", status: res.status });
      },
      onFailure: (why) => {
        if (this._state === "terminated") return;
        done();
        this.o.media.rollback();
        this.o.media.hold(this.localHold);
        if (why === "transport") return; // onTransportLost ends the call
        this.bye();
        this.end("timeout", 408);
      },
    };
  }

  // ---- plumbing -----------------------------------------------------------------------------

  private startTimerFrom(res: SipResponse): void {
    const result = uacResult(res);
    for (const n of result.notes) this.note(n);
    this.timer.start(result.timer);
  }

  /** Sends a request in the dialog; false when it has ended (or was never made). */
  private send(
    method: string,
    opts: { headers?: Array<[string, string]>; body?: string },
    user?: NictUser,
  ): boolean {
    if (!this.dialog || this.dialog.state === "terminated" || this.o.core.isClosed) return false;
    try {
      this.o.core.sendInDialog(this.dialog, method, opts, user);
      return true;
    } catch (err) {
      this.o.logger.warn(`${method} not sent`, { error: String(err) });
      return false;
    }
  }

  private bye(): void {
    this.send("BYE", {});
  }

  private setState(next: CallState, reason?: EndReason, status?: number): void {
    if (next === this._state) return;
    const previous = this._state;
    this._state = next;
    const e: Extract<CallEvent, { type: "state" }> = {
      type: "state",
      state: next,
      previous,
      at: this.o.clock.monotonic(),
    };
    if (reason) e.reason = reason;
    if (status !== undefined) e.status = status;
    this.emitter.emit(e);
  }

  private setParty(party: RemoteParty | undefined): void {
    if (!party) return;
    if (this._party && JSON.stringify(this._party) === JSON.stringify(party)) return;
    this._party = party;
    this.emitter.emit({ type: "party", party });
  }

  private noteRemoteHold(remote: boolean | undefined, changedLocal = false): void {
    const before = this.remoteHold;
    if (remote !== undefined) this.remoteHold = remote;
    if (changedLocal || before !== this.remoteHold)
      this.emitter.emit({ type: "hold", local: this.localHold, remote: this.remoteHold });
  }

  private setTransfer(progress: TransferProgress, status?: number): void {
    this.transfer = { progress };
    this.emitter.emit(
      status === undefined ? { type: "transfer", progress } : { type: "transfer", progress, status },
    );
  }

  private transferOver(progress: "succeeded" | "failed", status?: number): void {
    if (!this.transfer) return;
    this.setTransfer(progress, status);
    this.transfer = undefined;
  }

  private note(message: string): void {
    this.o.logger.debug(message, { callId: this.callId });
    this.emitter.emit({ type: "note", message });
  }

  private end(reason: EndReason, status?: number): void {
    if (this._state === "terminated") return;
    this._reason = reason;
    this._status = status;
    this.noAnswer?.cancel();
    this.retry?.cancel();
    this.noAnswer = undefined;
    this.retry = undefined;
    this.timer.stop();
    if (this.peerReinvite && !this.peerReinvite.answered) this.peerReinvite.respond(487);
    this.o.media.close();
    // A hang-up before the ACK keeps the dialog until the ACK (or its timeout) lets the BYE go.
    if (this.dialog && !this.byeAfterAck) this.o.core.releaseDialog(this.dialog);
    this._endedAt = this.o.clock.monotonic();
    this.setState("terminated", reason, status);
  }
}
