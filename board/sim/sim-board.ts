/**
 * The simulated board: every hal/ contract kept in memory. The phone drives its display and LEDs;
 * a test, the demo's `--keys` flag or a view (terminal, web page) presses keys and lifts the
 * handset. Views subscribe to `changes` and redraw; nothing here does I/O.
 */

import type { Clock } from "../../firmware/core/clock.ts";
import { Emitter } from "../../firmware/core/emitter.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import type { Board } from "../../firmware/hal/board.ts";
import type { DisplayFrame, DisplaySink } from "../../firmware/hal/display.ts";
import type { HookSwitch, Indicator, IndicatorState, Indicators } from "../../firmware/hal/indicators.ts";
import { isKey, type Key, type KeyEvent, type KeySource } from "../../firmware/hal/keys.ts";
import { createSimAudio, type SimAudioDevice, type SimAudioOptions } from "./sim-audio.ts";

export type IndicatorName = keyof Indicators;

export const INDICATOR_NAMES: readonly IndicatorName[] = ["messageWaiting", "status"];

/** Everything a view needs to draw the phone, as plain JSON (the web view sends exactly this). */
export interface SimBoardSnapshot {
  cols: number;
  rows: number;
  /** Exactly `rows` lines, each at most `cols` characters (not padded). */
  lines: string[];
  backlight: boolean;
  offHook: boolean;
  indicators: Record<IndicatorName, IndicatorState>;
}

/** One change on the board, in the order it happened; `at` is the clock's monotonic time. */
export type SimBoardChange =
  | { type: "frame"; at: number; frame: DisplayFrame }
  | { type: "backlight"; at: number; on: boolean }
  | { type: "indicator"; at: number; name: IndicatorName; state: IndicatorState }
  | { type: "hook"; at: number; offHook: boolean }
  | { type: "key"; at: number; event: KeyEvent };

export interface SimBoard extends Board {
  readonly cols: number;
  readonly rows: number;
  /** Every frame shown, oldest first, normalised to `rows` lines of at most `cols` characters. */
  readonly frames: readonly DisplayFrame[];
  /** The frame on the display now (blank lines before the first `show`). */
  readonly current: DisplayFrame;
  readonly backlight: boolean;
  readonly indicatorStates: Readonly<Record<IndicatorName, IndicatorState>>;
  /** Frame, backlight, indicator, hook and key changes, for views and tests. */
  readonly changes: Emitter<SimBoardChange>;
  /** The handset's audio: a tone (or samples) into the microphone, a recording speaker. */
  readonly audio: SimAudioDevice;
  press(key: Key): void;
  longPress(key: Key): void;
  setHook(offHook: boolean): void;
  /** Presses the keys spelled by `text` (see parseKeys); throws before pressing any if one is bad. */
  typeKeys(text: string): void;
  snapshot(): SimBoardSnapshot;
}

export interface SimBoardOptions {
  cols?: number;
  rows?: number;
  clock: Clock;
  name?: string;
  /** Default: a silent microphone. */
  audio?: SimAudioOptions;
}

/**
 * Parses a key script as the demo's `--keys` flag takes it:
 * - `0`–`9`, `*`, `#` press that key; whitespace is ignored;
 * - `{name}` presses any other key by its hal name: `{soft1}`…`{soft4}`, `{up}`, `{down}`,
 *   `{left}`, `{right}`, `{ok}`, `{back}`, `{menu}` (digits work too: `{5}`);
 * - `{long:name}` long-presses it, e.g. `{long:0}`.
 */
export function parseKeys(text: string): KeyEvent[] {
  const events: KeyEvent[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i]!;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === "{") {
      const end = text.indexOf("}", i + 1);
      if (end < 0) throw new HandsetError("invalid-keys", `unclosed "{" at position ${i} in key script`);
      const token = text.slice(i + 1, end).trim();
      const long = token.startsWith("long:");
      const name = long ? token.slice(5).trim() : token;
      if (!isKey(name)) throw new HandsetError("invalid-keys", `unknown key "{${token}}" in key script`);
      events.push({ key: name, kind: long ? "long-press" : "press" });
      i = end + 1;
      continue;
    }
    if (!/^[0-9*#]$/.test(ch) || !isKey(ch)) {
      throw new HandsetError("invalid-keys", `unknown key "${ch}" at position ${i} in key script`);
    }
    events.push({ key: ch, kind: "press" });
    i++;
  }
  return events;
}

function normalise(frame: DisplayFrame, rows: number, cols: number): DisplayFrame {
  const lines: string[] = [];
  for (let r = 0; r < rows; r++) lines.push((frame.lines[r] ?? "").replace(/[\r\n\t]/g, " ").slice(0, cols));
  return { lines };
}

export function createSimBoard(o: SimBoardOptions): SimBoard {
  const cols = o.cols ?? 20;
  const rows = o.rows ?? 4;
  if (!Number.isInteger(cols) || cols < 1 || !Number.isInteger(rows) || rows < 1) {
    throw new HandsetError("invalid-config", `sim display must be at least 1×1 cells, got ${cols}×${rows}`);
  }
  const clock = o.clock;
  const changes = new Emitter<SimBoardChange>();
  const keyListeners = new Emitter<KeyEvent>();
  const hookListeners = new Emitter<boolean>();
  const frames: DisplayFrame[] = [];
  let current: DisplayFrame = { lines: Array.from({ length: rows }, () => "") };
  let backlight = true;
  let offHook = false;
  const indicatorStates: Record<IndicatorName, IndicatorState> = { messageWaiting: "off", status: "off" };

  const display: DisplaySink = {
    cols,
    rows,
    show(frame) {
      current = normalise(frame, rows, cols);
      frames.push(current);
      changes.emit({ type: "frame", at: clock.monotonic(), frame: current });
    },
    setBacklight(on) {
      if (on === backlight) return;
      backlight = on;
      changes.emit({ type: "backlight", at: clock.monotonic(), on });
    },
  };

  const indicator = (name: IndicatorName): Indicator => ({
    set(state) {
      if (indicatorStates[name] === state) return;
      indicatorStates[name] = state;
      changes.emit({ type: "indicator", at: clock.monotonic(), name, state });
    },
  });
  const indicators: Indicators = { messageWaiting: indicator("messageWaiting"), status: indicator("status") };

  const keys: KeySource = { onKey: (listener) => keyListeners.on(listener) };

  const hook: HookSwitch = {
    get offHook() {
      return offHook;
    },
    onChange: (listener) => hookListeners.on(listener),
  };

  const emitKey = (event: KeyEvent): void => {
    if (!isKey(event.key)) throw new HandsetError("invalid-key", `not a key: ${String(event.key)}`);
    changes.emit({ type: "key", at: clock.monotonic(), event });
    keyListeners.emit(event);
  };

  const audio = createSimAudio(o.audio ?? { microphone: { kind: "silence" } });

  return {
    name: o.name ?? "sim",
    audio,
    cols,
    rows,
    keys,
    display,
    hook,
    indicators,
    changes,
    get frames() {
      return frames;
    },
    get current() {
      return current;
    },
    get backlight() {
      return backlight;
    },
    get indicatorStates() {
      return { ...indicatorStates };
    },
    async start() {},
    async stop() {},
    press: (key) => emitKey({ key, kind: "press" }),
    longPress: (key) => emitKey({ key, kind: "long-press" }),
    setHook(next) {
      if (next === offHook) return;
      offHook = next;
      changes.emit({ type: "hook", at: clock.monotonic(), offHook });
      hookListeners.emit(offHook);
    },
    typeKeys(text) {
      for (const event of parseKeys(text)) emitKey(event);
    },
    snapshot: () => ({
      cols,
      rows,
      lines: [...current.lines],
      backlight,
      offHook,
      indicators: { ...indicatorStates },
    }),
  };
}
