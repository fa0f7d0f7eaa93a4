/**
 * The firmware's wall clock: what certificate checks, logs and the display read. It wraps the
 * injected base Clock and guarantees that wall time never goes backwards for its readers.
 *
 * Semantics of now():
 *   now() = max(last value returned, base.now() + offset, restored floor)
 * - `offset` is the SNTP correction (0 until the first clock-set).
 * - `restored floor` exists only until the first clock-set: the "last good time" loaded from
 *   flash at boot, advanced by the monotonic time elapsed since, so that a Pi without an RTC that
 *   boots at 1970 starts from its last known good time and keeps ticking.
 * - When a correction moves time backwards (the base clock or the floor was ahead), readers see
 *   wall time stand still until the corrected time catches up; it never steps back. The
 *   clock-set event reports `heldMs`, how far ahead the readers' time is at that moment.
 *
 * Timers and monotonic() pass straight through to the base clock.
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { type Logger, silentLogger } from "../core/logger.ts";

/** Where the last good wall time lives across reboots (flash, via the store). */
export interface LastGoodTimeStore {
  load(): Promise<number | undefined>;
  save(epochMs: number): Promise<void>;
}

export type ClockServiceEvent =
  | {
      type: "clock-set";
      offsetMs: number;
      server?: string;
      source: string;
      epochMs: number;
      /** How far readers' time is ahead of the corrected time (0 unless the correction went back). */
      heldMs: number;
    }
  | { type: "restored"; epochMs: number };

export interface ClockServiceOptions {
  base: Clock;
  store?: LastGoodTimeStore;
  logger?: Logger;
}

export class ClockService implements Clock {
  private readonly base: Clock;
  private readonly store: LastGoodTimeStore | undefined;
  private readonly logger: Logger;
  private readonly events = new Emitter<ClockServiceEvent>();
  private offsetMs = 0;
  private last = Number.NEGATIVE_INFINITY;
  private floor: { epochMs: number; mono: number } | undefined;
  private synced = false;
  private periodic: TimerHandle | undefined;

  constructor(o: ClockServiceOptions) {
    this.base = o.base;
    this.store = o.store;
    this.logger = o.logger ?? silentLogger;
  }

  on(listener: (e: ClockServiceEvent) => void): () => void {
    return this.events.on(listener);
  }

  /** True once an authoritative source (SNTP) has set the clock. */
  isSet(): boolean {
    return this.synced;
  }

  /** The current SNTP correction in ms. */
  offset(): number {
    return this.offsetMs;
  }

  now(): number {
    let t = this.base.now() + this.offsetMs;
    if (this.floor && !this.synced)
      t = Math.max(t, this.floor.epochMs + (this.base.monotonic() - this.floor.mono));
    if (t < this.last) return this.last;
    this.last = t;
    return t;
  }

  monotonic(): number {
    return this.base.monotonic();
  }

  setTimer(ms: number, fn: () => void): TimerHandle {
    return this.base.setTimer(ms, fn);
  }

  /** Boot: loads the last good time and uses it as a floor until SNTP answers. */
  async restore(): Promise<number | undefined> {
    if (!this.store) return undefined;
    let saved: number | undefined;
    try {
      saved = await this.store.load();
    } catch (err) {
      this.logger.warn("last good time unreadable", { error: (err as Error).message });
      return undefined;
    }
    if (saved === undefined || !Number.isFinite(saved)) return undefined;
    if (!this.synced) this.floor = { epochMs: saved, mono: this.base.monotonic() };
    const epochMs = this.now();
    this.events.emit({ type: "restored", epochMs });
    return epochMs;
  }

  /**
   * Applies a correction measured against the base clock (an SNTP offset). Emits clock-set and
   * saves the new time as the last good time.
   */
  async set(sample: { offsetMs: number; server?: string; source?: string }): Promise<ClockServiceEvent> {
    const before = this.now();
    this.offsetMs = sample.offsetMs;
    this.synced = true;
    this.floor = undefined;
    const corrected = this.base.now() + this.offsetMs;
    const epochMs = this.now();
    const event: ClockServiceEvent = {
      type: "clock-set",
      offsetMs: sample.offsetMs,
      source: sample.source ?? "sntp",
      epochMs,
      heldMs: Math.max(0, Math.max(before, epochMs) - corrected),
      ...(sample.server !== undefined ? { server: sample.server } : {}),
    };
    this.events.emit(event);
    await this.save();
    return event;
  }

  /** Saves now() as the last good time (only once the clock was set or restored). */
  async save(): Promise<void> {
    if (!this.store || (!this.synced && !this.floor)) return;
    try {
      await this.store.save(this.now());
    } catch (err) {
      this.logger.warn("could not save last good time", { error: (err as Error).message });
    }
  }

  /** Saves the time every intervalMs (hourly is plenty; flash wears). */
  startPeriodicSave(intervalMs = 3_600_000): void {
    this.stopPeriodicSave();
    const tick = () => {
      void this.save();
      this.periodic = this.base.setTimer(intervalMs, tick);
    };
    this.periodic = this.base.setTimer(intervalMs, tick);
  }

  stopPeriodicSave(): void {
    this.periodic?.cancel();
    this.periodic = undefined;
  }
}
