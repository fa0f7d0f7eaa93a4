/**
 * The firmware's wall clock: what certificate checks, logs and the display read. It wraps the
 * injected base Clock and guarantees that wall time never goes backwards for its readers.
 *
 * Semantics of now():
 *   t = max(base.now() + offset, restored floor);  now() = max(t, last value returned) while
 *   the last value is at most MAX_HOLD_MS ahead of t, else t.
 * - `offset` is the SNTP correction (0 until the first clock-set).
 * - `restored floor` exists only until the first clock-set: the "last good time" loaded from
 *   flash at boot, advanced by the monotonic time elapsed since, so that a Pi without an RTC that
 *   boots at 1970 starts from its last known good time and keeps ticking.
 * - A small backward correction (≤ MAX_HOLD_MS: SNTP jitter, a floor a few seconds ahead) is
 *   held: readers see wall time stand still until the corrected time catches up. A larger one
 *   steps back at once: before SNTP the OS clock can be years ahead (no RTC, a bad image), and
 *   certificates are checked against now(), so the phone must trust SNTP over the OS rather
 *   than stand still for a year. The clock-set event reports `heldMs` (how far ahead readers'
 *   time is held at that moment, 0 when it stepped) and `steppedMs` (how far it stepped back).
 * - Only a trusted time is saved as the last good time: SNTP's, or the restored floor advanced by
 *   monotonic time; never the OS clock's word before SNTP answered.
 *
 * Timers and monotonic() pass straight through to the base clock.
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { type Logger, silentLogger } from "../core/logger.ts";

/** The largest backward correction readers are held through instead of seeing time step back. */
export const MAX_HOLD_MS = 10 * 60_000;

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
      /** How far readers' time is held ahead of the corrected time (0 unless a small correction went back). */
      heldMs: number;
      /** How far readers' time stepped back (a correction larger than MAX_HOLD_MS; 0 otherwise). */
      steppedMs?: number;
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

  /**
   * The clock SNTP offsets must be measured against: the base, whose offset set() takes. Measured
   * against now() instead, a second SNTP answer would read ≈0 and undo the first correction.
   */
  measurementClock(): Clock {
    return this.base;
  }

  /** The current SNTP correction in ms. */
  offset(): number {
    return this.offsetMs;
  }

  now(): number {
    const t = this.corrected();
    if (t < this.last && this.last - t <= MAX_HOLD_MS) return this.last;
    this.last = t;
    return t;
  }

  /** The corrected time without the readers' hold: base + offset, and the floor until SNTP answers. */
  private corrected(): number {
    const t = this.base.now() + this.offsetMs;
    const floor = this.floorNow();
    return floor === undefined ? t : Math.max(t, floor);
  }

  private floorNow(): number | undefined {
    if (!this.floor || this.synced) return undefined;
    return this.floor.epochMs + (this.base.monotonic() - this.floor.mono);
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
    const steppedMs = Math.max(0, before - epochMs);
    if (steppedMs > 0) this.logger.warn("clock stepped back: the time before SNTP was wrong", { steppedMs });
    const event: ClockServiceEvent = {
      type: "clock-set",
      offsetMs: sample.offsetMs,
      source: sample.source ?? "sntp",
      epochMs,
      heldMs: Math.max(0, epochMs - corrected),
      ...(steppedMs > 0 ? { steppedMs } : {}),
      ...(sample.server !== undefined ? { server: sample.server } : {}),
    };
    this.events.emit(event);
    await this.save();
    return event;
  }

  /**
   * Saves the last good time: now() once SNTP has set the clock; before that the restored floor
   * advanced by monotonic time (never the OS clock, which may be years off); nothing without either.
   */
  async save(): Promise<void> {
    const trusted = this.synced ? this.now() : this.floorNow();
    if (!this.store || trusted === undefined) return;
    try {
      await this.store.save(trusted);
    } catch (err) {
      this.logger.warn("could not save last good time", { error: (err as Error).message });
    }
  }

  /** Saves the time every intervalMs (hourly is plenty; flash wears). */
  startPeriodicSave(intervalMs = 3_600_000): void {
    this.stopPeriodicSave();
    const tick = () => {
      // save() logs its own failures; the catch only keeps a bug from becoming an unhandled rejection.
      this.save().catch(() => {});
      this.periodic = this.base.setTimer(intervalMs, tick);
    };
    this.periodic = this.base.setTimer(intervalMs, tick);
  }

  stopPeriodicSave(): void {
    this.periodic?.cancel();
    this.periodic = undefined;
  }
}
