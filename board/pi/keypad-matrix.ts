/**
 * Keypad matrix scanner: a KeySource over GPIO lines, timed by the injected Clock.
 *
 * Every `scanIntervalMs` (5 ms) each row in turn is driven to the active level (0 with column
 * pull-ups, 1 with pull-downs) while the others sit at the idle level, and the columns are read;
 * a column at the active level means the key at (row, column) is closed.
 *
 * - Debounce: a key's state changes only after its raw reading has been the same for
 *   `debounceMs` (20 ms); chatter shorter than that is never reported. "press" is emitted on
 *   the debounced key-down.
 * - Long-press: emitted once per hold, `longPressMs` (800 ms) after the key went down.
 * - Releases are not reported (KeyEvent has no "release").
 * - Ghosting: without a diode per key, three keys closed in an L (two sharing a row, two sharing a
 *   column) make the fourth corner read as closed too. A scan in which ≥3 keys read down with two
 *   in one row and two in one column is ambiguous and is discarded whole (no key changes state
 *   from it). Two keys at once, or three in no L, are reported normally.
 * - Rows are driven push-pull by sysfs GPIO; a series diode per row (or per key) keeps two keys
 *   in one column from shorting a driven row against an idle one.
 */
import type { Clock, TimerHandle } from "../../firmware/core/clock.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import type { Key, KeyEvent, KeySource } from "../../firmware/hal/keys.ts";
import type { GpioFactory, GpioLine, Level } from "./gpio.ts";

export interface KeypadMatrixOptions {
  gpio: GpioFactory;
  clock: Clock;
  /** BCM lines driven one at a time. */
  rows: readonly number[];
  /** BCM lines read. */
  columns: readonly number[];
  /** keys[row][column]; null where no key is fitted. */
  keys: ReadonlyArray<ReadonlyArray<Key | null>>;
  columnPull?: "up" | "down";
  scanIntervalMs?: number;
  debounceMs?: number;
  longPressMs?: number;
  logger?: Logger;
}

interface KeyState {
  raw: boolean;
  rawSince: number;
  stable: boolean;
  downAt: number;
  longSent: boolean;
}

export class KeypadMatrix implements KeySource {
  private readonly listeners = new Set<(event: KeyEvent) => void>();
  private readonly states: KeyState[];
  private readonly active: Level;
  private readonly idle: Level;
  private readonly scanMs: number;
  private readonly debounceMs: number;
  private readonly longPressMs: number;
  private readonly logger: Logger;
  private rowLines: GpioLine[] = [];
  private colLines: GpioLine[] = [];
  private timer: TimerHandle | undefined;
  private running = false;
  /** Scans thrown away as ambiguous (ghosting); for diagnostics and tests. */
  ghostScans = 0;

  constructor(private readonly opts: KeypadMatrixOptions) {
    this.idle = (opts.columnPull ?? "up") === "up" ? 1 : 0;
    this.active = this.idle === 1 ? 0 : 1;
    this.scanMs = opts.scanIntervalMs ?? 5;
    this.debounceMs = opts.debounceMs ?? 20;
    this.longPressMs = opts.longPressMs ?? 800;
    this.logger = opts.logger ?? silentLogger;
    this.states = Array.from({ length: opts.rows.length * opts.columns.length }, () => ({
      raw: false,
      rawSince: 0,
      stable: false,
      downAt: 0,
      longSent: false,
    }));
  }

  onKey(listener: (event: KeyEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Exports the lines (rows idle) and starts scanning. */
  start(): void {
    if (this.running) return;
    try {
      this.rowLines = this.opts.rows.map((l) => this.opts.gpio.open(l, "out"));
      this.colLines = this.opts.columns.map((l) => this.opts.gpio.open(l, "in"));
    } catch (err) {
      this.release();
      throw err;
    }
    for (const row of this.rowLines) row.write(this.idle);
    const now = this.opts.clock.monotonic();
    for (const s of this.states)
      Object.assign(s, { raw: false, rawSince: now, stable: false, longSent: false });
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
    this.timer?.cancel();
    this.timer = undefined;
    this.release();
  }

  private release(): void {
    for (const line of [...this.rowLines, ...this.colLines]) {
      try {
        line.unexport();
      } catch (err) {
        this.logger.warn("unexport failed", { error: String(err) });
      }
    }
    this.rowLines = [];
    this.colLines = [];
  }

  private schedule(): void {
    this.timer = this.opts.clock.setTimer(this.scanMs, () => {
      if (!this.running) return;
      this.scan();
      this.schedule();
    });
  }

  /** One pass over the matrix: read, reject ghosts, debounce, emit. */
  private scan(): void {
    const ncols = this.colLines.length;
    const down: boolean[] = new Array(this.states.length).fill(false);
    this.rowLines.forEach((row, r) => {
      row.write(this.active);
      this.colLines.forEach((col, c) => {
        down[r * ncols + c] = col.read() === this.active;
      });
      row.write(this.idle);
    });
    if (isGhostly(down, ncols)) {
      this.ghostScans++;
      return;
    }
    const now = this.opts.clock.monotonic();
    this.states.forEach((s, i) => {
      const raw = down[i]!;
      if (raw !== s.raw) {
        s.raw = raw;
        s.rawSince = now;
      }
      const key = this.opts.keys[Math.floor(i / ncols)]?.[i % ncols] ?? null;
      if (s.raw !== s.stable && now - s.rawSince >= this.debounceMs) {
        s.stable = s.raw;
        if (s.stable) {
          s.downAt = s.rawSince;
          s.longSent = false;
          if (key) this.emit({ key, kind: "press" });
        }
      }
      if (s.stable && !s.longSent && now - s.downAt >= this.longPressMs) {
        s.longSent = true;
        if (key) this.emit({ key, kind: "long-press" });
      }
    });
  }

  private emit(event: KeyEvent): void {
    for (const l of [...this.listeners]) {
      try {
        l(event);
      } catch (err) {
        this.logger.error("key listener threw", { error: String(err), key: event.key });
      }
    }
  }
}

/** ≥3 keys down with one of them sharing a row with another and a column with a third. */
export function isGhostly(down: readonly boolean[], ncols: number): boolean {
  const idx = down.flatMap((d, i) => (d ? [i] : []));
  if (idx.length < 3) return false;
  return idx.some((i) => {
    const r = Math.floor(i / ncols);
    const c = i % ncols;
    const rowMate = idx.some((j) => j !== i && Math.floor(j / ncols) === r);
    const colMate = idx.some((j) => j !== i && j % ncols === c);
    return rowMate && colMate;
  });
}
