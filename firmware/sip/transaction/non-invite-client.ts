/**
 * Non-INVITE client transaction, RFC 3261 §17.1.2, for reliable transports only (the phone
 * speaks SIP over TLS). Over a reliable transport Timer E never fires (§17.1.2.2: the request
 * is not retransmitted) and Timer K is zero, so the machine is small:
 *
 *   Trying ──1xx──► Proceeding ──2xx-6xx──► Completed(=Terminated, K=0)
 *      │                 │
 *      └──Timer F (64·T1)┴──► Terminated, "timeout" reported to the TU (treated as 408)
 *
 * Timers run on the injected Clock so a test can move through them without waiting.
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import type { HandsetError } from "../../core/errors.ts";
import type { SipRequest, SipResponse } from "../message/message.ts";

export const T1_MS = 500;
export const TIMER_F_MS = 64 * T1_MS;

export type NictState = "trying" | "proceeding" | "completed" | "terminated";

export interface NictUser {
  onProvisional?(response: SipResponse): void;
  onFinal(response: SipResponse): void;
  /** Timer F expired or the flow failed; the request got no final answer. */
  onFailure(reason: "timeout" | "transport", error?: HandsetError): void;
}

export class NonInviteClientTransaction {
  private _state: NictState = "trying";
  private timerF: TimerHandle | undefined;

  constructor(
    readonly branch: string,
    readonly request: SipRequest,
    clock: Clock,
    private readonly user: NictUser,
    timerFMs = TIMER_F_MS,
  ) {
    // "When a request is sent ... the client transaction MUST set timer F to fire in 64*T1 seconds."
    this.timerF = clock.setTimer(timerFMs, () => {
      if (this._state === "trying" || this._state === "proceeding") {
        this.terminate();
        this.user.onFailure("timeout");
      }
    });
  }

  get state(): NictState {
    return this._state;
  }

  receive(response: SipResponse): void {
    if (this._state === "completed" || this._state === "terminated") return; // late retransmission: absorbed
    if (response.status < 200) {
      this._state = "proceeding";
      this.user.onProvisional?.(response);
      return;
    }
    // "Timer K ... zero seconds for reliable transports": completed is over at once.
    this._state = "completed";
    this.terminate();
    this.user.onFinal(response);
  }

  /** The flow below died: "the client transaction SHOULD inform the TU" (§17.1.4). */
  transportFailed(error?: HandsetError): void {
    if (this._state === "terminated") return;
    this.terminate();
    this.user.onFailure("transport", error);
  }

  /** The TU gave up on the request (e.g. its owner stopped): terminate without telling it. */
  abandon(): void {
    this.terminate();
  }

  private terminate(): void {
    this._state = "terminated";
    this.timerF?.cancel();
    this.timerF = undefined;
  }
}
