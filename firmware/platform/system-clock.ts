import { performance } from "node:perf_hooks";
import type { Clock, TimerHandle } from "../core/clock.ts";

/** The real clock. Wall time may later be corrected by SNTP (discovery); timers use monotonic time. */
export class SystemClock implements Clock {
  private offsetMs = 0;

  now(): number {
    return Date.now() + this.offsetMs;
  }

  monotonic(): number {
    return performance.now();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    const t = setTimeout(fn, Math.max(0, ms));
    return { cancel: () => clearTimeout(t) };
  }

  /** Applies an SNTP offset without touching the system clock (the phone may not be root). */
  setOffset(offsetMs: number): void {
    this.offsetMs = offsetMs;
  }
}
