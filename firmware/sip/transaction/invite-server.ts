/**
 * INVITE server transaction, RFC 3261 §17.2.1 as amended by RFC 6026, for reliable transports:
 *
 *   Proceeding ──1xx from TU: send──► Proceeding       (100 Trying by itself after 200 ms)
 *     │  └──2xx from TU: send──► Accepted ──2xx from TU: send; ACK: to TU──► Accepted
 *     │                              └──Timer L──► Terminated
 *     └──300-699 from TU: send──► Completed ──ACK──► Confirmed ──Timer I──► Terminated
 *                                    └──Timer H (no ACK) or transport error──► Terminated, TU told
 *
 * - "The server transaction MUST generate a 100 (Trying) response unless it knows that the TU
 *   will generate a provisional or final response within 200 ms": the transaction sends one when
 *   the TU has sent nothing 200 ms after the INVITE. It carries no To tag (§17.2.1).
 * - Timer H = 64·T1 waits for the ACK of a non-2xx final; Timer G (its retransmission) is for
 *   unreliable transports and not used. Timer I = 0 over reliable transports: Confirmed ends at
 *   once (no 0 ms timer). Timer L = 64·T1 (RFC 6026 §8.7): Accepted absorbs retransmitted
 *   INVITEs and passes the TU's 2xx retransmissions down; an ACK that still matches (a peer that
 *   reused the branch) goes up to the TU, which owns the ACK of a 2xx.
 * - CANCEL (§9.2): the CANCEL is answered 200 (with the same To tag as the INVITE's answers) by
 *   its own non-INVITE server transaction; if no final response went out yet, the INVITE gets a
 *   487 and the TU is told. A TU answer that loses this race is refused (`respond` → false).
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import type { HandsetError } from "../../core/errors.ts";
import type { SipRequest, SipResponse } from "../message/message.ts";
import { T1_MS } from "./non-invite-client.ts";
import { type BuildResponseOptions, buildResponse } from "./server-non-invite.ts";

export const TRYING_AFTER_MS = 200;
export const TIMER_H_MS = 64 * T1_MS;
export const TIMER_L_MS = 64 * T1_MS;

export type IstState = "proceeding" | "accepted" | "completed" | "confirmed" | "terminated";

export interface IstOptions {
  /** Our To tag for every response but the 100 (the TU makes it; §19.3: random, ≥ 32 bits). */
  toTag: string;
  tryingAfterMs?: number;
  timerHMs?: number;
  timerIMs?: number;
  timerLMs?: number;
}

export interface IstUser {
  /** Puts a response on the flow. */
  send(response: SipResponse): void;
  /** A CANCEL arrived before any final response; the INVITE has been answered 487. */
  onCancelled?(cancel: SipRequest): void;
  /** An ACK matched while Accepted (RFC 6026 §8.7): it acknowledges the TU's 2xx. */
  onAck?(ack: SipRequest): void;
  /** "no-ack": Timer H fired, the non-2xx final was never acknowledged. */
  onFailure?(reason: "no-ack" | "transport", error?: HandsetError): void;
  /** The transaction is over; the owner drops it from its table. */
  onTerminated?(): void;
}

export class InviteServerTransaction {
  private _state: IstState = "proceeding";
  private last: SipResponse | undefined;
  private tryingTimer: TimerHandle | undefined;
  private timer: TimerHandle | undefined;
  readonly toTag: string;
  private readonly timerHMs: number;
  private readonly timerIMs: number;
  private readonly timerLMs: number;

  constructor(
    readonly request: SipRequest,
    private readonly clock: Clock,
    private readonly user: IstUser,
    opts: IstOptions,
  ) {
    this.toTag = opts.toTag;
    this.timerHMs = opts.timerHMs ?? TIMER_H_MS;
    this.timerIMs = opts.timerIMs ?? 0;
    this.timerLMs = opts.timerLMs ?? TIMER_L_MS;
    this.tryingTimer = clock.setTimer(opts.tryingAfterMs ?? TRYING_AFTER_MS, () => {
      this.tryingTimer = undefined;
      if (this._state === "proceeding" && !this.last) this.sendTrying();
    });
  }

  get state(): IstState {
    return this._state;
  }

  /** The last response sent, if any. */
  get lastResponse(): SipResponse | undefined {
    return this.last;
  }

  /** A response to the INVITE with our To tag (none on a 100), for the TU to pass to respond(). */
  response(status: number, opts: Omit<BuildResponseOptions, "toTag"> = {}): SipResponse {
    return buildResponse(this.request, status, { ...opts, toTag: this.toTag });
  }

  /**
   * The TU's response. Proceeding takes any; Accepted takes further 2xx (retransmissions).
   * Returns false, sending nothing, when the state does not allow it: above all a 2xx that
   * lost the race against a CANCEL, which the TU learnt of through onCancelled.
   */
  respond(res: SipResponse): boolean {
    if (this._state === "accepted") {
      if (res.status < 200 || res.status >= 300) return false;
      this.last = res;
      this.user.send(res);
      return true;
    }
    if (this._state !== "proceeding") return false;
    this.stopTrying();
    this.last = res;
    if (res.status >= 200 && res.status < 300) {
      this._state = "accepted";
      this.timer = this.clock.setTimer(this.timerLMs, () => this.terminate());
    } else if (res.status >= 300) {
      this._state = "completed";
      this.timer = this.clock.setTimer(this.timerHMs, () =>
        this.terminate(() => this.user.onFailure?.("no-ack")),
      );
    }
    this.user.send(res);
    return true;
  }

  /** A request matching this transaction: a retransmitted INVITE, or the ACK of our final. */
  receiveRequest(req: SipRequest): void {
    if (req.method.toUpperCase() === "ACK") {
      if (this._state === "completed") {
        this._state = "confirmed";
        this.timer?.cancel();
        this.timer = undefined;
        if (this.timerIMs > 0) this.timer = this.clock.setTimer(this.timerIMs, () => this.terminate());
        else this.terminate();
      } else if (this._state === "accepted") {
        this.user.onAck?.(req);
      }
      // Confirmed: ACK retransmissions absorbed; Proceeding: an ACK before any final is nonsense.
      return;
    }
    if (this._state === "proceeding") {
      // §17.2.1: a retransmission gets the most recent provisional; none sent yet → the 100 now.
      if (this.last) this.user.send(this.last);
      else {
        this.stopTrying();
        this.sendTrying();
      }
    } else if (this._state === "completed" && this.last) {
      this.user.send(this.last);
    }
    // Accepted (RFC 6026: absorbed, the TU retransmits its 2xx itself), Confirmed: absorbed.
  }

  /**
   * A CANCEL whose target is this transaction (§9.2). `answerCancel` gets the 200 for the CANCEL
   * first (to send through the CANCEL's own server transaction); then, if no final response had
   * gone out, the INVITE is answered 487 and onCancelled runs. Returns whether it was cancelled.
   */
  cancel(cancel: SipRequest, answerCancel: (ok: SipResponse) => void): boolean {
    answerCancel(buildResponse(cancel, 200, { toTag: this.toTag }));
    if (this._state !== "proceeding") return false; // a final response won the race
    this.respond(this.response(487));
    this.user.onCancelled?.(cancel);
    return true;
  }

  /** The flow below died; the TU is told while it still had something to deliver or await. */
  transportFailed(error?: HandsetError): void {
    if (this._state === "terminated") return;
    const awaiting = this._state === "proceeding" || this._state === "completed";
    this.terminate(awaiting ? () => this.user.onFailure?.("transport", error) : undefined);
  }

  private sendTrying(): void {
    const trying = buildResponse(this.request, 100);
    this.last = trying;
    this.user.send(trying);
  }

  private stopTrying(): void {
    this.tryingTimer?.cancel();
    this.tryingTimer = undefined;
  }

  /** `first` tells the TU why before onTerminated says the transaction is gone. */
  private terminate(first?: () => void): void {
    if (this._state === "terminated") return;
    this._state = "terminated";
    this.stopTrying();
    this.timer?.cancel();
    this.timer = undefined;
    first?.();
    this.user.onTerminated?.();
  }
}
