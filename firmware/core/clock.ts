/**
 * Time as a port. Protocol cores never call Date.now() or setTimeout() themselves: they take
 * a Clock, so a test can run seven simulated days in a second and production uses the
 * system's clock (platform/system-clock.ts).
 */
export interface TimerHandle {
  cancel(): void;
}

export interface Clock {
  /** Milliseconds since the Unix epoch, as the phone currently believes it. */
  now(): number;
  /** Milliseconds on a monotonic scale; use for timeouts and durations. */
  monotonic(): number;
  /**
   * Calls fn once, after ms milliseconds of monotonic time. The contract every implementation
   * keeps (see timerDelay()):
   * - any finite delay is honoured exactly, however long: a delay beyond what the platform's
   *   timer can hold (Node: 2³¹−1 ms ≈ 24.8 days, which it would otherwise turn into 1 ms) is
   *   chained from shorter timers against the monotonic deadline;
   * - NaN, a negative delay or −Infinity counts as 0: fn runs on a later turn of the event loop
   *   (never synchronously inside setTimer), once;
   * - +Infinity never fires (cancel() still works).
   * A clock cannot stop a caller that re-arms a 0 ms timer from its own callback from spinning:
   * callers range-check durations that come from outside (Expires, Retry-After, keep-alive,
   * certificate lifetimes) where they parse them, and never re-arm on a 0 delay in a loop.
   */
  setTimer(ms: number, fn: () => void): TimerHandle;
}

/** The longest delay a Node timer holds; longer ones would fire after 1 ms. */
export const MAX_PLATFORM_TIMER_MS = 2 ** 31 - 1;

/** A delay as the Clock contract reads it: NaN, negative → 0; +Infinity stays (never fires). */
export function timerDelay(ms: number): number {
  return Number.isNaN(ms) || ms < 0 ? 0 : ms;
}

/**
 * A clock that only moves when told to. Timers fire in deadline order, each seeing now()
 * equal to its deadline, so code under test observes the same sequence it would in real time.
 */
export class ManualClock implements Clock {
  private current: number;
  private mono = 0;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; seq: number; fn: () => void }>();
  /**
   * advance() gives up after this many timers fire at one instant without time moving: a caller
   * re-arming a 0 ms timer from its own callback, which with real timers would spin the CPU.
   * A test then fails with a message instead of hanging.
   */
  static maxFiringsPerInstant = 1_000_000;

  constructor(startEpochMs = Date.UTC(2026, 0, 1)) {
    this.current = startEpochMs;
  }

  now(): number {
    return this.current;
  }

  monotonic(): number {
    return this.mono;
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const id = ++this.seq;
    this.timers.set(id, { at: this.mono + timerDelay(ms), seq: id, fn });
    return { cancel: () => this.timers.delete(id) };
  }

  /** Milliseconds until the earliest waiting timer, or undefined when none will ever fire. */
  nextTimerIn(): number | undefined {
    let at: number | undefined;
    for (const t of this.timers.values())
      if (Number.isFinite(t.at) && (at === undefined || t.at < at)) at = t.at;
    return at === undefined ? undefined : Math.max(0, at - this.mono);
  }

  /** How many timers are waiting; a leak check for soak tests. */
  pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by ms, firing every timer that falls due on the way. */
  advance(ms: number): void {
    const target = this.mono + timerDelay(ms);
    let instant = this.mono;
    let firings = 0;
    for (;;) {
      let next: { id: number; at: number; seq: number; fn: () => void } | undefined;
      for (const [id, t] of this.timers) {
        if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) {
          next = { id, ...t };
        }
      }
      if (!next) break;
      if (next.at !== instant) {
        instant = next.at;
        firings = 0;
      }
      if (++firings > ManualClock.maxFiringsPerInstant)
        throw new Error(
          `ManualClock: more than ${ManualClock.maxFiringsPerInstant} timers fired at one instant (a 0 ms timer re-armed in a loop?)`,
        );
      this.timers.delete(next.id);
      this.current += next.at - this.mono;
      this.mono = next.at;
      next.fn();
    }
    this.current += target - this.mono;
    this.mono = target;
  }

  /** Sets the wall clock (as SNTP would) without moving monotonic time. */
  setWallClock(epochMs: number): void {
    this.current = epochMs;
  }
}
