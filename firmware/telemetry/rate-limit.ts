/**
 * A token bucket on the injected clock: how fast the outbox's backlog drains after a reconnect
 * (mqtt.outboxRatePerS), so that a site's thousand phones coming back do not flood the broker.
 * The bucket holds at most one second's worth, so a long quiet spell buys no burst beyond that.
 */
import type { Clock } from "../core/clock.ts";

export class TokenBucket {
  private tokens: number;
  private at: number;
  private readonly ratePerS: number;
  private readonly burst: number;

  constructor(
    private readonly clock: Clock,
    ratePerS: number,
    burst = ratePerS,
  ) {
    this.ratePerS = Number.isFinite(ratePerS) && ratePerS > 0 ? ratePerS : 1;
    this.burst = Math.max(1, burst);
    this.tokens = this.burst;
    this.at = clock.monotonic();
  }

  /** Takes one token if there is one. */
  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is available (0 when one is). */
  waitMs(): number {
    this.refill();
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.ratePerS);
  }

  private refill(): void {
    const now = this.clock.monotonic();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.ratePerS) / 1000);
    this.at = now;
  }
}
