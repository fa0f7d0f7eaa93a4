/**
 * The bounded event outbox (issue 11 "Outages"): events wait here, in flash, until the broker has
 * acknowledged them. Oldest dropped first when full (and counted); every event gets the next
 * `seq`, which survives a reboot, as does `birthSeq` (the session number the last will carries).
 * Delivery is in order, one at a time: peek() the oldest, remove() it only after its PUBACK.
 *
 * Flash is reached through the OutboxStore port (the composition root writes it atomically).
 * Saves are serialised and coalesced: at most one in flight, and any number of changes while it
 * runs make exactly one more. A failed save is logged and retried on the clock; it never throws
 * into the caller, because the phone must keep working with a broken flash.
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { asHandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";

export interface OutboxEntry {
  seq: number;
  /** The event's payload text, built when the event happened (its ts is that moment). */
  payload: string;
}

export interface OutboxSnapshot {
  v: 1;
  /** The seq the next event gets. */
  nextSeq: number;
  birthSeq: number;
  dropped: number;
  entries: OutboxEntry[];
}

export interface OutboxStore {
  load(): Promise<OutboxSnapshot | undefined>;
  save(s: OutboxSnapshot): Promise<void>;
}

const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;

const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

export class Outbox {
  private entries: OutboxEntry[] = [];
  private nextSeq = 1;
  private birth = 0;
  private droppedCount = 0;
  private readonly capacity: number;
  private readonly store: OutboxStore;
  private readonly clock: Clock;
  private readonly log: Logger;
  /** Changed since the last save began. */
  private dirty = false;
  private saving: Promise<void> | undefined;
  private retryTimer: TimerHandle | undefined;
  private retryMs = RETRY_MIN_MS;
  private closed = false;

  constructor(o: { store: OutboxStore; capacity: number; clock: Clock; logger: Logger }) {
    this.store = o.store;
    this.capacity = Math.max(1, Math.floor(o.capacity));
    this.clock = o.clock;
    this.log = o.logger;
  }

  get size(): number {
    return this.entries.length;
  }

  get dropped(): number {
    return this.droppedCount;
  }

  get birthSeq(): number {
    return this.birth;
  }

  /** Restores what flash holds; an unreadable or damaged snapshot starts an empty outbox. */
  async load(): Promise<void> {
    let s: OutboxSnapshot | undefined;
    try {
      s = await this.store.load();
    } catch (err) {
      this.log.warn("outbox unreadable, starting empty", { code: asHandsetError(err, "outbox-load").code });
      return;
    }
    if (s === undefined) return;
    if (
      typeof s !== "object" ||
      s === null ||
      !isCount(s.nextSeq) ||
      !isCount(s.birthSeq) ||
      !isCount(s.dropped) ||
      !Array.isArray(s.entries)
    ) {
      this.log.warn("outbox damaged, starting empty", { code: "outbox-damaged" });
      return;
    }
    const entries = s.entries.filter(
      (e): e is OutboxEntry => isCount(e?.seq) && e.seq > 0 && typeof e.payload === "string",
    );
    entries.sort((a, b) => a.seq - b.seq);
    const excess = Math.max(0, entries.length - this.capacity);
    this.entries = entries.slice(excess);
    this.droppedCount = s.dropped + excess + (s.entries.length - entries.length);
    this.nextSeq = Math.max(s.nextSeq, (entries.at(-1)?.seq ?? 0) + 1, 1);
    this.birth = s.birthSeq;
  }

  /** Queues an event built for the next seq; when full, the oldest is dropped and counted. */
  push(build: (seq: number) => string): OutboxEntry {
    const seq = this.nextSeq++;
    const entry = { seq, payload: build(seq) };
    this.entries.push(entry);
    while (this.entries.length > this.capacity) {
      this.entries.shift();
      this.droppedCount++;
    }
    this.changed();
    return entry;
  }

  peek(): OutboxEntry | undefined {
    return this.entries[0];
  }

  /** After the broker's PUBACK for seq; a seq that is not the oldest (already dropped) is ignored. */
  remove(seq: number): void {
    if (this.entries[0]?.seq !== seq) return;
    this.entries.shift();
    this.changed();
  }

  /** The broker refused this event for good: it leaves the outbox, counted as dropped. */
  discard(seq: number): void {
    if (this.entries[0]?.seq !== seq) return;
    this.entries.shift();
    this.droppedCount++;
    this.changed();
  }

  /** The next session number, in flash (or at least tried) before it is used in a CONNECT. */
  async advanceBirth(): Promise<number> {
    this.birth++;
    this.changed();
    await this.flush();
    return this.birth;
  }

  /** Resolves once every change so far has been saved, or a save of it has failed. */
  async flush(): Promise<void> {
    while (this.saving) await this.saving;
  }

  /** Stops retrying (the agent stopped); a save in flight still completes. */
  close(): void {
    this.closed = true;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
  }

  snapshot(): OutboxSnapshot {
    return {
      v: 1,
      nextSeq: this.nextSeq,
      birthSeq: this.birth,
      dropped: this.droppedCount,
      entries: this.entries.map((e) => ({ ...e })),
    };
  }

  private changed(): void {
    this.dirty = true;
    if (!this.saving && !this.retryTimer) this.saving = this.saveLoop();
  }

  /**
   * Saves until nothing is dirty. Started on a later microtask, so a burst of changes in one
   * turn costs one write.
   */
  private async saveLoop(): Promise<void> {
    await Promise.resolve();
    try {
      while (this.dirty) {
        this.dirty = false;
        try {
          await this.store.save(this.snapshot());
          this.retryMs = RETRY_MIN_MS;
        } catch (err) {
          this.dirty = true;
          this.log.warn("outbox save failed, will retry", {
            code: asHandsetError(err, "outbox-save").code,
            retryInMs: this.retryMs,
          });
          if (!this.closed)
            this.retryTimer = this.clock.setTimer(this.retryMs, () => {
              this.retryTimer = undefined;
              if (this.dirty && !this.saving) this.saving = this.saveLoop();
            });
          this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
          return;
        }
      }
    } finally {
      this.saving = undefined;
    }
  }
}
