/**
 * Certificate lifecycle POLICY: when to renew the client certificate, what to do when renewal
 * fails. The mechanism (provisioning/renewal.ts) is injected as `renew`; this class only owns
 * timers on the injected Clock and reports.
 *
 * Schedule (wall clock, from the stored credential):
 *   due = min(notBefore + ⅔·lifetime, notAfter − 30 days), but never before the lifetime's
 *   midpoint (so that certificates shorter than 60 days do not renew back to back), and "now"
 *   when that moment has passed.
 *   180 days → day 120 (⅔ wins over day 150); 60 days → day 30 (30-day margin wins over day 40).
 *
 * Failure handling:
 *   - a certificate refusal (provisioning's isCertificateRefusal: "certificate-revoked", or
 *     "ticket-rejected" from the certificate port — pools answer revoked, unpublished and expired
 *     certificates with the same generic 28020 fault) → {type:"revoked"} and stop: only a PIN
 *     sign-in can help, and retrying would only hammer the pool;
 *   - anything else (web services unreachable, timeouts, server errors) → keep the old
 *     certificate (the lifecycle never touches the store), retry after
 *     backoffDelay(n, RENEWAL_BACKOFF) = min(6 h, 5 min·2ⁿ)·U(0.5, 1), forever — until the
 *     certificate lapses: a retry that would fall at or after notAfter is brought forward to
 *     half the time left (while that exceeds 2 base delays); past that, {type:"renewal-failed"}
 *     carries the time to notAfter, {type:"expired"} follows at notAfter and the lifecycle stops.
 *
 * Long waits: one timer never exceeds WAKE_MS (1 day, well under Node's 2³¹−1 ms setTimeout
 * limit, beyond which Node fires after 1 ms). Each wake re-reads the wall clock and the
 * credential, so a 120-day wait is a chain of daily timers and an SNTP correction or a new
 * credential moves the deadline within a day.
 */
import { type BackoffOptions, backoffDelay } from "../core/backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { isCertificateRefusal } from "../provisioning/errors.ts";

export const DAY_MS = 86_400_000;
/** Renew no later than this long before notAfter. */
export const RENEW_MARGIN_MS = 30 * DAY_MS;
/** Retry schedule while renewal fails: 5 min doubling to 6 h, ×U(0.5, 1). */
export const RENEWAL_BACKOFF: BackoffOptions = { baseMs: 5 * 60_000, capMs: 6 * 3_600_000 };
/** The longest single timer; longer waits are chained. */
export const WAKE_MS = DAY_MS;

export interface Validity {
  notBefore: number;
  notAfter: number;
}

export type CertLifecycleEvent =
  | { type: "renewal-due"; attempt: number }
  | { type: "renewed"; notAfter: number }
  | { type: "renewal-failed"; code: string; retryInMs: number; attempt: number }
  | { type: "revoked"; code: string }
  | { type: "expired"; notAfter: number };

export interface CertificateLifecycleOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  /** Renews and stores the certificate; rejects with a typed error. */
  renew: () => Promise<void>;
  /** The stored credential's validity, read afresh at every decision. */
  credential: () => Validity | undefined;
  backoff?: BackoffOptions;
  /** Which failures mean "this certificate is no longer accepted" (default isCertificateRefusal). */
  isRevocation?: (err: unknown) => boolean;
}

/** When to renew a certificate with this validity (epoch ms; may lie in the past). */
export function renewalTime(v: Validity): number {
  const lifetime = v.notAfter - v.notBefore;
  const twoThirds = v.notBefore + (lifetime * 2) / 3;
  const margin = v.notAfter - RENEW_MARGIN_MS;
  const midpoint = v.notBefore + lifetime / 2;
  return Math.max(Math.min(twoThirds, margin), midpoint);
}

export class CertificateLifecycle {
  readonly events = new Emitter<CertLifecycleEvent>();
  private timer: TimerHandle | undefined;
  private running = false;
  /** Bumped by stop()/reschedule(), so a renewal in flight cannot act on a stale plan. */
  private epoch = 0;
  private attempt = 0;
  private readonly backoff: BackoffOptions;
  private readonly isRevocation: (err: unknown) => boolean;

  constructor(private readonly o: CertificateLifecycleOptions) {
    this.backoff = o.backoff ?? RENEWAL_BACKOFF;
    this.isRevocation = o.isRevocation ?? isCertificateRefusal;
  }

  get started(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.reschedule();
  }

  stop(): void {
    this.running = false;
    this.epoch++;
    this.cancelTimer();
  }

  /** Plans from the current credential again (e.g. after a PIN sign-in stored a new one). */
  reschedule(): void {
    if (!this.running) return;
    this.epoch++;
    this.attempt = 0;
    this.cancelTimer();
    const c = this.o.credential();
    if (!c) {
      this.o.logger.info("no certificate; renewal idle");
      return;
    }
    const due = renewalTime(c);
    this.o.logger.info("certificate renewal planned", {
      due: new Date(due).toISOString(),
      notAfter: new Date(c.notAfter).toISOString(),
    });
    this.waitUntil(due, () => this.spawnRenewal());
  }

  private cancelTimer(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }

  /** Runs `fn` once the wall clock reaches `at`, in timers of at most WAKE_MS. */
  private waitUntil(at: number, fn: () => void): void {
    const left = at - this.o.clock.now();
    if (left <= 0) {
      this.timer = this.o.clock.setTimer(0, () => {
        this.timer = undefined;
        fn();
      });
      return;
    }
    this.timer = this.o.clock.setTimer(Math.min(left, WAKE_MS), () => {
      this.timer = undefined;
      this.waitUntil(at, fn);
    });
  }

  /**
   * renewNow() catches the renewal itself; a throw from its own bookkeeping is a bug, logged and
   * retried after one base delay so renewal never silently stops.
   */
  private spawnRenewal(): void {
    const epoch = this.epoch;
    this.renewNow().catch((err: unknown) => {
      this.o.logger.error("certificate renewal failed unexpectedly", { error: String(err) });
      if (epoch === this.epoch && this.running)
        this.waitUntil(this.o.clock.now() + this.backoff.baseMs, () => this.spawnRenewal());
    });
  }

  private async renewNow(): Promise<void> {
    const epoch = this.epoch;
    const current = this.o.credential();
    if (!current) return;
    if (this.o.clock.now() >= current.notAfter) return this.lapse(current);
    this.attempt++;
    this.events.emit({ type: "renewal-due", attempt: this.attempt });
    let failure: unknown;
    try {
      await Promise.resolve().then(() => this.o.renew());
    } catch (err) {
      failure = err;
    }
    if (epoch !== this.epoch || !this.running) return;
    if (failure === undefined) {
      const next = this.o.credential();
      if (next && renewalTime(next) > this.o.clock.now()) {
        this.o.logger.info("certificate renewed", { notAfter: new Date(next.notAfter).toISOString() });
        this.events.emit({ type: "renewed", notAfter: next.notAfter });
        this.reschedule();
        return;
      }
      failure = new HandsetError("renewal-ineffective", "Renewal stored no newer certificate");
    }
    const code = failure instanceof HandsetError ? failure.code : "internal";
    if (this.isRevocation(failure)) {
      this.o.logger.warn("certificate refused by the server; PIN sign-in needed", { code });
      this.stop();
      this.events.emit({ type: "revoked", code });
      return;
    }
    const latest = this.o.credential() ?? current;
    const now = this.o.clock.now();
    let retryInMs = backoffDelay(this.attempt - 1, this.o.random, this.backoff);
    const left = latest.notAfter - now;
    // Near the end, halve the remaining time instead, down to one base delay before the lapse.
    if (retryInMs >= left && left > 2 * this.backoff.baseMs) retryInMs = Math.floor(left / 2);
    if (retryInMs >= left) {
      this.o.logger.warn("renewal failed; certificate lapses before the next attempt", { code });
      this.events.emit({
        type: "renewal-failed",
        code,
        retryInMs: latest.notAfter - now,
        attempt: this.attempt,
      });
      this.waitUntil(latest.notAfter, () => this.lapse(latest));
      return;
    }
    this.o.logger.warn("renewal failed; keeping the current certificate", { code, retryInMs });
    this.events.emit({ type: "renewal-failed", code, retryInMs, attempt: this.attempt });
    this.waitUntil(now + retryInMs, () => this.spawnRenewal());
  }

  private lapse(c: Validity): void {
    this.o.logger.warn("certificate lapsed before it could be renewed", {
      notAfter: new Date(c.notAfter).toISOString(),
    });
    this.stop();
    this.events.emit({ type: "expired", notAfter: c.notAfter });
  }
}
