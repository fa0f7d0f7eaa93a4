/**
 * INVITE client transaction, RFC 3261 §17.1.1 as amended by RFC 6026 (the Accepted state), for
 * reliable transports (the phone speaks SIP over TLS):
 *
 *   Calling ──1xx──► Proceeding ──1xx──► Proceeding
 *     │  │              │  │
 *     │  └─────2xx──────┼──┴──► Accepted ──2xx: to TU──► Accepted ──Timer M──► Terminated
 *     │                 │
 *     └──300-699────────┴──► Completed (ACK sent, response to TU) ──Timer D──► Terminated
 *     └──Timer B (Calling only) or transport error──► Terminated, TU told
 *
 * - Timer A (request retransmission) is for unreliable transports only and is not used.
 * - Timer B = 64·T1 guards Calling only: once a provisional arrived, the INVITE may ring for as
 *   long as the callee lets it (§17.1.1.2); ending a ringing call is the TU's CANCEL.
 * - Timer D = 0 over reliable transports: no final response retransmissions will come, so
 *   Completed ends at once (no 0 ms timer is armed). A larger value can be configured and then
 *   every retransmitted final is answered with the same ACK and not passed up.
 * - Timer M = 64·T1 (RFC 6026 §8.4): Accepted waits for 2xx retransmissions and for 2xx from
 *   other forks; each is passed to the TU, which ACKs it (the ACK of a 2xx is the TU's, §13.2.2.4).
 * - The ACK of a non-2xx final is built and sent by this transaction (§17.1.1.3).
 * - CANCEL (§9.1) may be sent only after a provisional response: asked for earlier, it waits for
 *   the first 1xx; asked for after a final response, it is not sent. A CANCEL is its own
 *   non-INVITE transaction with the INVITE's branch, which the TU runs (`sendCancel`). If no
 *   final response follows within 64·T1 of sending it, the transaction gives the INVITE up.
 *
 * Timers run on the injected Clock so a test can move through them without waiting.
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import type { HandsetError } from "../../core/errors.ts";
import { parseCSeq } from "../grammar/cseq.ts";
import { splitTopLevel } from "../grammar/lexer.ts";
import { header, headers, request, type SipRequest, type SipResponse } from "../message/message.ts";
import { T1_MS } from "./non-invite-client.ts";

export const TIMER_B_MS = 64 * T1_MS;
export const TIMER_M_MS = 64 * T1_MS;
/** Timer D over unreliable transports ("at least 32 seconds"); the phone's default is 0. */
export const TIMER_D_UNRELIABLE_MS = 32_000;
/** §9.1: how long after a CANCEL a final response may still come before the INVITE is given up. */
export const CANCEL_WAIT_MS = 64 * T1_MS;

export type IctState = "calling" | "proceeding" | "accepted" | "completed" | "terminated";
export type CancelState = "none" | "pending" | "sent";

export interface IctTimers {
  timerBMs?: number;
  timerDMs?: number;
  timerMMs?: number;
  cancelWaitMs?: number;
}

export type IctFailure =
  /** Timer B: no response at all (the TU treats it as 408). */
  | "timeout"
  /** The flow failed before a final response. */
  | "transport"
  /** A CANCEL was sent and no final response came within 64·T1 (§9.1). */
  | "cancel-timeout";

export interface IctUser {
  /** Puts a request built by the transaction on the flow: the ACK of a non-2xx final. */
  send(request: SipRequest): void;
  /** Runs the CANCEL in a non-INVITE client transaction of its own (§9.1). */
  sendCancel(cancel: SipRequest): void;
  onProvisional?(response: SipResponse): void;
  /** Each 2xx: the first, its retransmissions and those of other forks. The TU ACKs every one. */
  onSuccess(response: SipResponse): void;
  /** The 300–699 final response, once; its ACK has already been sent. */
  onRejected(response: SipResponse): void;
  /** No final response will come. */
  onFailure(reason: IctFailure, error?: HandsetError): void;
  /** The transaction is over; the owner drops it from its table. */
  onTerminated?(): void;
}

/** The one via-parm of the request's top Via, as sent. */
function topViaText(req: SipRequest): string {
  const first = headers(req, "Via")[0] ?? "";
  return splitTopLevel(first)[0] ?? first;
}

function cseqNumber(req: SipRequest): number {
  return parseCSeq(header(req, "CSeq") ?? "").seq;
}

/**
 * The ACK of a non-2xx final response (§17.1.1.3): Request-URI, Call-ID, From and CSeq number of
 * the INVITE; To of the response (it carries the answerer's tag); the INVITE's top Via only, so
 * the ACK reaches the same server transaction; the INVITE's Route headers; no body.
 */
export function buildAck(invite: SipRequest, res: SipResponse): SipRequest {
  const list: Array<[string, string]> = [["Via", topViaText(invite)]];
  list.push(["Max-Forwards", header(invite, "Max-Forwards") ?? "70"]);
  for (const r of headers(invite, "Route")) list.push(["Route", r]);
  list.push(["From", header(invite, "From") ?? ""]);
  list.push(["To", header(res, "To") ?? header(invite, "To") ?? ""]);
  list.push(["Call-ID", header(invite, "Call-ID") ?? ""]);
  list.push(["CSeq", `${cseqNumber(invite)} ACK`]);
  return request("ACK", invite.uri, list);
}

/**
 * The CANCEL of an INVITE (§9.1): Request-URI, Call-ID, To, From and CSeq number identical to the
 * INVITE (To without a tag for an initial INVITE), the INVITE's top Via (same branch) and Route
 * headers, method CANCEL. `extra` adds e.g. a Reason header (RFC 3326).
 */
export function buildCancel(invite: SipRequest, extra: Array<[string, string]> = []): SipRequest {
  const list: Array<[string, string]> = [["Via", topViaText(invite)]];
  list.push(["Max-Forwards", header(invite, "Max-Forwards") ?? "70"]);
  for (const r of headers(invite, "Route")) list.push(["Route", r]);
  list.push(["From", header(invite, "From") ?? ""]);
  list.push(["To", header(invite, "To") ?? ""]);
  list.push(["Call-ID", header(invite, "Call-ID") ?? ""]);
  list.push(["CSeq", `${cseqNumber(invite)} CANCEL`]);
  list.push(...extra);
  return request("CANCEL", invite.uri, list);
}

export class InviteClientTransaction {
  private _state: IctState = "calling";
  private _cancel: CancelState = "none";
  private cancelHeaders: Array<[string, string]> = [];
  private timer: TimerHandle | undefined;
  private cancelTimer: TimerHandle | undefined;
  private _ack: SipRequest | undefined;
  private readonly timers: Required<IctTimers>;

  constructor(
    readonly branch: string,
    readonly request: SipRequest,
    private readonly clock: Clock,
    private readonly user: IctUser,
    timers: IctTimers = {},
  ) {
    this.timers = {
      timerBMs: timers.timerBMs ?? TIMER_B_MS,
      timerDMs: timers.timerDMs ?? 0,
      timerMMs: timers.timerMMs ?? TIMER_M_MS,
      cancelWaitMs: timers.cancelWaitMs ?? CANCEL_WAIT_MS,
    };
    // "For any transport, the client transaction MUST start timer B with a value of 64*T1."
    this.timer = clock.setTimer(this.timers.timerBMs, () => {
      if (this._state === "calling") this.terminate(() => this.user.onFailure("timeout"));
    });
  }

  get state(): IctState {
    return this._state;
  }

  /** Whether the TU asked to cancel, and whether the CANCEL went out yet. */
  get cancelState(): CancelState {
    return this._cancel;
  }

  /** The ACK this transaction sent for a non-2xx final, if any. */
  get ack(): SipRequest | undefined {
    return this._ack;
  }

  receive(res: SipResponse): void {
    // A response with this branch but another CSeq method (the CANCEL's 200) is not ours.
    if (!/\bINVITE\s*$/i.test(header(res, "CSeq") ?? "")) return;
    switch (this._state) {
      case "calling":
      case "proceeding":
        if (res.status < 200) {
          this.proceed(res);
        } else if (res.status < 300) {
          this.accept(res);
        } else {
          this.complete(res);
        }
        return;
      case "accepted":
        // RFC 6026 §8.4: every 2xx goes up (a retransmission, or a second fork to ACK and BYE);
        // 1xx and non-2xx finals after a 2xx are late and absorbed.
        if (res.status >= 200 && res.status < 300) this.user.onSuccess(res);
        return;
      case "completed":
        // §17.1.1.2: a retransmitted final is ACKed again and not passed up.
        if (res.status >= 300 && this._ack) this.user.send(this._ack);
        return;
      case "terminated":
        return; // late response: absorbed
    }
  }

  /**
   * Asks to cancel the INVITE (§9.1). "sent": the CANCEL went to `sendCancel`; "pending": no
   * provisional yet, it goes out with the first one; "too-late": a final response came already
   * (a 2xx that still arrives after a CANCEL is passed up as usual: the TU ACKs it and sends BYE).
   */
  cancel(extra: Array<[string, string]> = []): "sent" | "pending" | "too-late" {
    if (this._state !== "calling" && this._state !== "proceeding") return "too-late";
    if (this._cancel !== "none") return this._cancel;
    this.cancelHeaders = extra;
    if (this._state === "calling") {
      this._cancel = "pending";
      return "pending";
    }
    this.sendCancel();
    return "sent";
  }

  /** The flow below died: the TU is told when a final answer was still awaited (§17.1.4). */
  transportFailed(error?: HandsetError): void {
    if (this._state === "terminated") return;
    const awaiting = this._state === "calling" || this._state === "proceeding";
    this.terminate(awaiting ? () => this.user.onFailure("transport", error) : undefined);
  }

  /** The TU gave up on the request (its owner stopped): terminate without telling it. */
  abandon(): void {
    this.terminate();
  }

  private proceed(res: SipResponse): void {
    if (this._state === "calling") {
      this._state = "proceeding";
      // Timer B only guards Calling (§17.1.1.2).
      this.timer?.cancel();
      this.timer = undefined;
    }
    this.user.onProvisional?.(res);
    if (this._cancel === "pending" && this._state === "proceeding") this.sendCancel();
  }

  private accept(res: SipResponse): void {
    this.stopTimers();
    this._state = "accepted";
    this.timer = this.clock.setTimer(this.timers.timerMMs, () => this.terminate());
    this.user.onSuccess(res);
  }

  private complete(res: SipResponse): void {
    this.stopTimers();
    this._state = "completed";
    this._ack = buildAck(this.request, res);
    this.user.send(this._ack);
    this.user.onRejected(res);
    if ((this._state as IctState) !== "completed") return; // the TU abandoned us from its callback
    if (this.timers.timerDMs > 0)
      this.timer = this.clock.setTimer(this.timers.timerDMs, () => this.terminate());
    else this.terminate();
  }

  private sendCancel(): void {
    this._cancel = "sent";
    this.cancelTimer = this.clock.setTimer(this.timers.cancelWaitMs, () => {
      if (this._state === "calling" || this._state === "proceeding")
        this.terminate(() => this.user.onFailure("cancel-timeout"));
    });
    this.user.sendCancel(buildCancel(this.request, this.cancelHeaders));
  }

  private stopTimers(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.cancelTimer?.cancel();
    this.cancelTimer = undefined;
  }

  /** `first` tells the TU why before onTerminated says the transaction is gone. */
  private terminate(first?: () => void): void {
    if (this._state === "terminated") return;
    this._state = "terminated";
    this.stopTimers();
    first?.();
    this.user.onTerminated?.();
  }
}
