import { type Clock, MAX_PLATFORM_TIMER_MS, type TimerHandle, timerDelay } from "../core/clock.ts";

/**
 * The real clock. Wall time may later be corrected by SNTP (discovery); timers use monotonic time.
 *
 * setTimer keeps the Clock contract (core/clock.ts) on top of Node's setTimeout, which turns any
 * delay over 2³¹−1 ms into 1 ms (and NaN or a negative one into 1 ms): a longer delay is a chain
 * of timers of at most MAX_PLATFORM_TIMER_MS, each re-armed against the monotonic deadline, so
 * the callback runs once, when the whole delay has passed, and never early. (The global
 * `performance` is node:perf_hooks' own; read through the global so fake timers can stand in.)
 */
export class SystemClock implements Clock {
  private offsetMs = 0;

  now(): number {
    return Date.now() + this.offsetMs;
  }

  monotonic(): number {
    return performance.now();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const delay = timerDelay(ms);
    if (delay <= MAX_PLATFORM_TIMER_MS) {
      const t = setTimeout(fn, delay);
      return { cancel: () => clearTimeout(t) };
    }
    const deadline = performance.now() + delay;
    let t: ReturnType<typeof setTimeout> | undefined;
    let cancelled = false;
    const arm = (): void => {
      if (cancelled) return;
      const left = deadline - performance.now();
      if (left > MAX_PLATFORM_TIMER_MS) t = setTimeout(arm, MAX_PLATFORM_TIMER_MS);
      else
        t = setTimeout(
          () => {
            if (!cancelled) fn();
          },
          Math.max(0, left),
        );
    };
    arm();
    return {
      cancel: () => {
        cancelled = true;
        if (t !== undefined) clearTimeout(t);
      },
    };
  }

  /** Applies an SNTP offset without touching the system clock (the phone may not be root). */
  setOffset(offsetMs: number): void {
    this.offsetMs = offsetMs;
  }
}
