/**
 * Non-INVITE server transaction, RFC 3261 §17.2.2, for reliable transports (BYE, REFER, NOTIFY,
 * INFO, UPDATE, CANCEL … that the phone answers), and `buildResponse` (§8.2.6), which every
 * server transaction uses.
 *
 *   Trying ──1xx from TU──► Proceeding ──200-699 from TU──► Completed ──Timer J──► Terminated
 *      └──────────────200-699 from TU──────────────────────────┘
 *
 * Timer J is 64·T1 over unreliable transports and zero over reliable ones (§17.2.2): a TLS peer
 * never retransmits its request, so there is nothing for Completed to absorb. With J = 0 the
 * transaction terminates as soon as the final response is on its way, without arming a 0 ms
 * timer. A transport error in any state terminates it and tells the TU (§17.2.4).
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import type { HandsetError } from "../../core/errors.ts";
import { header, headers, response, type SipRequest, type SipResponse } from "../message/message.ts";
import { T1_MS } from "./non-invite-client.ts";

/** Timer J for unreliable transports; the phone's default is 0 (TLS). */
export const TIMER_J_UNRELIABLE_MS = 64 * T1_MS;

/** Reason phrases the transaction and dialog layers produce themselves. */
export const REASON_PHRASES: Record<number, string> = {
  100: "Trying",
  180: "Ringing",
  200: "OK",
  422: "Session Interval Too Small",
  481: "Call/Transaction Does Not Exist",
  487: "Request Terminated",
  500: "Server Internal Error",
};

export interface BuildResponseOptions {
  reason?: string;
  /** Our To tag, added when the request's To has none (never to a 100, §8.2.6.2, §17.2.1). */
  toTag?: string;
  headers?: Array<[string, string]>;
  body?: Buffer | string;
}

/**
 * A response to `request` per §8.2.6.2: every Via in order, From, Call-ID and CSeq copied, To
 * copied with our tag added when it had none; a 100 also copies Timestamp (§8.2.6.1).
 */
export function buildResponse(
  request: SipRequest,
  status: number,
  opts: BuildResponseOptions = {},
): SipResponse {
  const list: Array<[string, string]> = headers(request, "Via").map((v) => ["Via", v]);
  list.push(["From", header(request, "From") ?? ""]);
  let to = header(request, "To") ?? "";
  if (status > 100 && opts.toTag && !/;\s*tag\s*=/i.test(to)) to = `${to};tag=${opts.toTag}`;
  list.push(["To", to]);
  list.push(["Call-ID", header(request, "Call-ID") ?? ""]);
  list.push(["CSeq", header(request, "CSeq") ?? ""]);
  const timestamp = header(request, "Timestamp");
  if (status === 100 && timestamp !== undefined) list.push(["Timestamp", timestamp]);
  list.push(...(opts.headers ?? []));
  return response(status, opts.reason ?? REASON_PHRASES[status] ?? "", list, opts.body);
}

export type NistState = "trying" | "proceeding" | "completed" | "terminated";

export interface NistUser {
  /** Puts a response on the flow. */
  send(response: SipResponse): void;
  /** The flow failed while the transaction lived (§17.2.4). */
  onFailure?(reason: "transport", error?: HandsetError): void;
  /** The transaction is over; the owner drops it from its table. */
  onTerminated?(): void;
}

export class NonInviteServerTransaction {
  private _state: NistState = "trying";
  private last: SipResponse | undefined;
  private timerJ: TimerHandle | undefined;

  constructor(
    readonly request: SipRequest,
    private readonly clock: Clock,
    private readonly user: NistUser,
    private readonly timerJMs = 0,
  ) {}

  get state(): NistState {
    return this._state;
  }

  /** The last response sent, if any. */
  get lastResponse(): SipResponse | undefined {
    return this.last;
  }

  /**
   * The TU's response. Returns false (and sends nothing) once a final response went out: a
   * transaction has exactly one final answer.
   */
  respond(res: SipResponse): boolean {
    if (this._state === "completed" || this._state === "terminated") return false;
    this.last = res;
    if (res.status < 200) {
      this._state = "proceeding";
      this.user.send(res);
      return true;
    }
    this._state = "completed";
    this.user.send(res);
    if (this.timerJMs > 0) this.timerJ = this.clock.setTimer(this.timerJMs, () => this.terminate());
    else this.terminate();
    return true;
  }

  /**
   * A retransmission of the request (same key). Trying: absorbed, the TU is still working on it;
   * Proceeding / Completed: the last response goes out again (§17.2.2).
   */
  receiveRequest(_retransmission: SipRequest): void {
    if ((this._state === "proceeding" || this._state === "completed") && this.last) this.user.send(this.last);
  }

  transportFailed(error?: HandsetError): void {
    if (this._state === "terminated") return;
    this.terminate(() => this.user.onFailure?.("transport", error));
  }

  /** `first` tells the TU why before onTerminated says the transaction is gone. */
  private terminate(first?: () => void): void {
    if (this._state === "terminated") return;
    this._state = "terminated";
    this.timerJ?.cancel();
    this.timerJ = undefined;
    first?.();
    this.user.onTerminated?.();
  }
}
