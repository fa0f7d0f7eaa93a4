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
 */
import type { Clock } from "../core/clock.ts";
import { AuthError, type HandsetError, TransportError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import { hexToken, type Random } from "../core/random.ts";
import type { Flow } from "./flow.ts";
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
import { type NictUser, NonInviteClientTransaction, TIMER_F_MS } from "./transaction/non-invite-client.ts";

export interface UserAgentCoreOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  timerFMs?: number;
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

export class UserAgentCore {
  private readonly verdicts = new WeakMap<SipMessage, SignatureVerdict>();
  private readonly transactions = new Map<string, NonInviteClientTransaction>();
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

  /** RFC 5626 keep-alive ping (CRLFCRLF) on the flow. */
  sendPing(): void {
    if (this.closed) return;
    this.noteSent();
    this.flow.sendPing();
  }

  /** Forgets a client transaction without telling its user (its owner stopped); stops Timer F. */
  cancel(tx: NonInviteClientTransaction): void {
    tx.abandon();
    if (this.transactions.get(tx.branch) === tx) this.transactions.delete(tx.branch);
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
    const tx = new NonInviteClientTransaction(
      branch,
      request,
      this.opts.clock,
      {
        onProvisional: (r) => user.onProvisional?.(r),
        onFinal: (r) => {
          this.transactions.delete(branch);
          user.onFinal(r);
        },
        onFailure: (why, err) => {
          this.transactions.delete(branch);
          user.onFailure(why, err);
        },
      },
      this.opts.timerFMs ?? TIMER_F_MS,
    );
    this.transactions.set(branch, tx);
    if (this.closed) tx.transportFailed(new TransportError("connection-closed", "flow is closed"));
    else {
      this.noteSent();
      this.flow.send(request);
    }
    return tx;
  }

  close(): void {
    this.flow.close();
  }

  /** Pending client transactions; a leak check for soak tests. */
  get pending(): number {
    return this.transactions.size;
  }

  private noteSent(): void {
    this.activity.lastSentAt = this.opts.clock.monotonic();
  }

  private noteReceived(): void {
    this.activity.lastReceivedAt = this.opts.clock.monotonic();
    this.activity.received++;
  }

  private receive(message: SipMessage): void {
    if (message.kind === "request") {
      if (this.sa && !this.checkSignature(message, false)) return;
      this.answer(message);
      return;
    }
    const via = header(message, "Via");
    let branch = "";
    try {
      branch = via ? (parseVia(via).params.get("branch") ?? "") : "";
    } catch {
      branch = "";
    }
    const tx = this.transactions.get(branch);
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

  private answer(request: SipRequest): void {
    const method = request.method.toUpperCase();
    let answer: RequestAnswer | undefined;
    if (method !== "ACK") {
      for (const h of [...this.handlers]) {
        try {
          answer = h(request);
        } catch (err) {
          this.opts.logger.error("request handler failed", { method, error: String(err) });
          answer = { status: 500, reason: "Server Internal Error" };
        }
        if (answer) break;
      }
      answer ??= method === "OPTIONS" ? { status: 200 } : { status: 501 };
      // BENOTIFY is a NOTIFY that expects no answer ([MS-SIP]); its handler still runs.
      if (method !== "BENOTIFY") this.respond(request, answer);
    }
    this.onRequest(request);
    answer?.after?.();
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
