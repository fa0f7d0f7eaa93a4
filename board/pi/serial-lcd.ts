/**
 * DisplaySink for a character LCD behind a serial backpack speaking the Matrix Orbital
 * LCD/LK command set (Matrix Orbital LCD4041 / LK202-24 user manuals, "Command Summary": every
 * command is the prefix 0xFE (254) followed by a command byte; any other byte is text written at
 * the cursor, which then advances). The commands used here:
 *
 *   FE 47 col row   set cursor position, 1-based column and row   (254 71, 'G')
 *   FE 58           clear screen                                   (254 88, 'X')
 *   FE 42 00        backlight on; minutes = 0 means stay on        (254 66, 'B')
 *   FE 46           backlight off                                  (254 70, 'F')
 *   FE 52           auto scroll off, so writing the bottom-right   (254 82, 'R')
 *                   cell never scrolls the screen up
 *
 * What crosses the wire:
 * - A full redraw (first frame after open, after a port error/reopen, or `redraw()`):
 *   FE 52, the backlight command, FE 58, then every non-blank run of each row, each preceded by
 *   a cursor move.
 * - Any later frame is diffed against what the device shows: for each row, the changed cells are
 *   grouped into runs (runs separated by fewer than 4 unchanged cells are merged, since a cursor
 *   move costs 4 bytes), and each run is sent as a cursor move plus its text. The cursor move is
 *   omitted when the device cursor is already there (right after the previous run on that row).
 *   We never rely on the cursor wrapping from one row to the next (HD44780 row order is 1, 3, 2, 4).
 * - Characters: printable ASCII (0x20–0x7E) is sent as-is; the rest is mapped to one ASCII cell
 *   each: "…" → ".", dashes (– — − ‐) → "-", single quotes (‘ ’ ‚ ′) → "'", double quotes
 *   (“ ” „ ″) → '"', "•" → "*", "·" → ".", "×" → "x", "°" → "o", no-break space and control
 *   characters → " ", letters with diacritics → their base letter (é → e, Ü → U), anything else
 *   → "?". Lines are cut or padded with spaces to `cols`; missing rows are blank.
 *   (HD44780 ROM A00 shows "\" as ¥ and "~" as →; we leave that to the glass.)
 *
 * Errors: a port error or unexpected close drops the port; it is reopened after
 * backoffDelay() (firmware/core/backoff.ts) on the injected Clock, and the last frame is then
 * redrawn in full. The retry count resets once a port has stayed up for `stableMs`.
 */
import { type BackoffOptions, backoffDelay } from "../../firmware/core/backoff.ts";
import type { Clock, TimerHandle } from "../../firmware/core/clock.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import { type Random, SeededRandom } from "../../firmware/core/random.ts";
import type { DisplayFrame, DisplaySink } from "../../firmware/hal/display.ts";

/** The serial port as this module needs it: serialport's SerialPort, SerialPortMock or a fake. */
export interface SerialLike {
  write(data: Uint8Array): void;
  /** Registers the listener for failures (an error, or a close we did not ask for). */
  onFailure(listener: (err: Error) => void): void;
  close(): void;
}

export type OpenSerial = (path: string, baudRate: number) => SerialLike;

export const MatrixOrbital = {
  PREFIX: 0xfe,
  SET_CURSOR: 0x47,
  CLEAR: 0x58,
  BACKLIGHT_ON: 0x42,
  BACKLIGHT_OFF: 0x46,
  AUTOSCROLL_OFF: 0x52,
} as const;

const CURSOR_MOVE_BYTES = 4;
const SPACE = 0x20;

export interface SerialLcdOptions {
  path: string;
  baudRate: number;
  cols: number;
  rows: number;
  openSerial: OpenSerial;
  clock: Clock;
  random?: Random;
  logger?: Logger;
  /** Reopen delays; default 500 ms doubling to 30 s, with jitter. */
  backoff?: BackoffOptions;
  /** A port up this long resets the retry count (default 10 s). */
  stableMs?: number;
}

export class SerialLcd implements DisplaySink {
  readonly cols: number;
  readonly rows: number;
  /** Bytes handed to the port since construction. */
  bytesWritten = 0;
  /** Frames (full or diff) that put at least one byte on the wire. */
  framesSent = 0;
  fullRedraws = 0;
  reopens = 0;

  private readonly logger: Logger;
  private readonly random: Random;
  private port: SerialLike | undefined;
  private wanted = false;
  /** What the device shows, per row as byte codes; undefined until a full redraw. */
  private shown: number[][] | undefined;
  private cursor: { row: number; col: number } | undefined;
  private last: number[][] | undefined;
  private backlight = true;
  private attempt = 0;
  private reopenTimer: TimerHandle | undefined;
  private stableTimer: TimerHandle | undefined;

  constructor(private readonly opts: SerialLcdOptions) {
    this.cols = opts.cols;
    this.rows = opts.rows;
    this.logger = opts.logger ?? silentLogger;
    this.random = opts.random ?? new SeededRandom(Date.now());
  }

  get isOpen(): boolean {
    return this.port !== undefined;
  }

  /** Opens the port; the next frame (or the last one, if any) is drawn in full. */
  open(): void {
    this.wanted = true;
    this.connect();
  }

  close(): void {
    this.wanted = false;
    this.reopenTimer?.cancel();
    this.stableTimer?.cancel();
    this.reopenTimer = this.stableTimer = undefined;
    const port = this.port;
    this.port = undefined;
    this.shown = undefined;
    try {
      port?.close();
    } catch (err) {
      this.logger.debug("close failed", { error: String(err) });
    }
  }

  show(frame: DisplayFrame): void {
    this.last = this.layout(frame);
    this.draw();
  }

  /** Forces a full redraw of the last frame (clear, then every non-blank cell). */
  redraw(): void {
    this.shown = undefined;
    this.draw();
  }

  setBacklight(on: boolean): void {
    if (on === this.backlight) return;
    this.backlight = on;
    if (this.port && this.shown) this.send(this.backlightCommand());
  }

  private connect(): void {
    this.reopenTimer = undefined;
    if (!this.wanted || this.port) return;
    let port: SerialLike;
    try {
      port = this.opts.openSerial(this.opts.path, this.opts.baudRate);
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)), undefined);
      return;
    }
    this.port = port;
    this.shown = undefined;
    port.onFailure((err) => this.fail(err, port));
    this.stableTimer = this.opts.clock.setTimer(this.opts.stableMs ?? 10_000, () => {
      this.attempt = 0;
    });
    if (this.last) this.draw();
  }

  private fail(err: Error, port: SerialLike | undefined): void {
    if (port !== this.port) return; // an old port's late news
    this.logger.warn("display port failed", {
      path: this.opts.path,
      error: err.message,
      attempt: this.attempt,
    });
    this.port = undefined;
    this.shown = undefined;
    this.cursor = undefined;
    this.stableTimer?.cancel();
    this.stableTimer = undefined;
    try {
      port?.close();
    } catch {
      // already gone
    }
    if (!this.wanted || this.reopenTimer) return;
    const delay = backoffDelay(
      this.attempt++,
      this.random,
      this.opts.backoff ?? { baseMs: 500, capMs: 30_000 },
    );
    this.reopenTimer = this.opts.clock.setTimer(delay, () => {
      this.reopens++;
      this.connect();
    });
  }

  private layout(frame: DisplayFrame): number[][] {
    return Array.from({ length: this.rows }, (_, r) => {
      const chars = [...(frame.lines[r] ?? "")].slice(0, this.cols).map(lcdCharCode);
      while (chars.length < this.cols) chars.push(SPACE);
      return chars;
    });
  }

  private draw(): void {
    if (!this.port || !this.last) return;
    const out: number[] = [];
    const P = MatrixOrbital.PREFIX;
    let shown = this.shown;
    if (!shown) {
      out.push(P, MatrixOrbital.AUTOSCROLL_OFF, ...this.backlightCommand(), P, MatrixOrbital.CLEAR);
      shown = Array.from({ length: this.rows }, () => new Array<number>(this.cols).fill(SPACE));
      this.cursor = undefined;
      this.fullRedraws++;
    }
    for (let r = 0; r < this.rows; r++) {
      const want = this.last[r]!;
      const have = shown[r]!;
      for (const [start, end] of changedRuns(want, have)) {
        if (this.cursor?.row !== r || this.cursor.col !== start)
          out.push(P, MatrixOrbital.SET_CURSOR, start + 1, r + 1);
        out.push(...want.slice(start, end));
        this.cursor = end < this.cols ? { row: r, col: end } : undefined;
      }
    }
    this.shown = this.last.map((row) => [...row]);
    if (out.length && this.send(out)) this.framesSent++;
  }

  private backlightCommand(): number[] {
    return this.backlight
      ? [MatrixOrbital.PREFIX, MatrixOrbital.BACKLIGHT_ON, 0]
      : [MatrixOrbital.PREFIX, MatrixOrbital.BACKLIGHT_OFF];
  }

  private send(bytes: number[]): boolean {
    const port = this.port;
    if (!port) return false;
    try {
      port.write(Uint8Array.from(bytes));
      this.bytesWritten += bytes.length;
      return true;
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)), port);
      return false;
    }
  }
}

/** [start, end) runs of cells that differ, merging runs less than a cursor move apart. */
export function changedRuns(want: readonly number[], have: readonly number[]): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let i = 0; i < want.length; i++) {
    if (want[i] === have[i]) continue;
    const prev = runs.at(-1);
    if (prev && i - prev[1] < CURSOR_MOVE_BYTES) prev[1] = i + 1;
    else runs.push([i, i + 1]);
  }
  return runs;
}

const LOOKALIKES: Record<string, string> = {
  "…": ".",
  "–": "-",
  "—": "-",
  "−": "-",
  "‐": "-",
  "‘": "'",
  "’": "'",
  "‚": "'",
  "′": "'",
  "“": '"',
  "”": '"',
  "„": '"',
  "″": '"',
  "•": "*",
  "·": ".",
  "×": "x",
  "°": "o",
  "\u00a0": " ",
};

/** One display cell's byte for one character (see the mapping in the module header). */
export function lcdCharCode(ch: string): number {
  const code = ch.codePointAt(0) ?? SPACE;
  if (code >= 0x20 && code <= 0x7e) return code;
  if (code < 0x20 || (code >= 0x7f && code < 0xa0)) return SPACE;
  const look = LOOKALIKES[ch];
  if (look) return look.charCodeAt(0);
  const base = ch.normalize("NFD").replace(/\p{M}+/gu, "");
  if (base.length === 1) {
    const b = base.charCodeAt(0);
    if (b >= 0x20 && b <= 0x7e) return b;
  }
  return 0x3f; // "?"
}

/** The text a frame becomes on the glass (for tests and the bench). */
export function lcdText(line: string): string {
  return String.fromCharCode(...[...line].map(lcdCharCode));
}
