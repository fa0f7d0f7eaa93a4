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
  /** Calls fn once, after ms milliseconds of monotonic time. */
  setTimer(ms: number, fn: () => void): TimerHandle;
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
    this.timers.set(id, { at: this.mono + Math.max(0, ms), seq: id, fn });
    return { cancel: () => this.timers.delete(id) };
  }

  /** Milliseconds until the earliest waiting timer, or undefined when none waits. */
  nextTimerIn(): number | undefined {
    let at: number | undefined;
    for (const t of this.timers.values()) if (at === undefined || t.at < at) at = t.at;
    return at === undefined ? undefined : Math.max(0, at - this.mono);
  }

  /** How many timers are waiting; a leak check for soak tests. */
  pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by ms, firing every timer that falls due on the way. */
  advance(ms: number): void {
    const target = this.mono + ms;
    for (;;) {
      let next: { id: number; at: number; seq: number; fn: () => void } | undefined;
      for (const [id, t] of this.timers) {
        if (t.at <= target && (!next || t.at < next.at || (t.at === next.at && t.seq < next.seq))) {
          next = { id, ...t };
        }
      }
      if (!next) break;
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
