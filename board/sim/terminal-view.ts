/**
 * The simulated phone in a terminal: the display as a box of cols × rows cells with a status
 * line (LEDs, hook, backlight) under it, and the keyboard as keypad.
 *
 * Key mapping (raw-mode TTY; a pipe is read the same way, byte by byte):
 *   0–9 * #               keypad digits
 *   F1–F4                 softkeys 1–4 (xterm `ESC O P`…, vt `ESC [11~`…, linux `ESC [[A`…)
 *   s then 1–4            softkeys 1–4 (for terminals that keep F-keys for themselves)
 *   arrow keys            up / down / left / right
 *   Enter                 ok
 *   Backspace, Escape     back (a lone ESC, i.e. one that ends the chunk read, is Escape)
 *   m                     menu
 *   l then a key          long-press of that key (e.g. `l0`, `l` + Enter)
 *   h                     lift / replace the handset (hook toggle)
 *   Ctrl-C, Ctrl-D        calls `onExit` (raw mode swallows SIGINT, so the caller decides)
 *
 * On a TTY the box is redrawn in place with ANSI escapes; on anything else (a pipe, a log file)
 * every change prints the box again as plain lines, without a single escape code.
 */

import type { Readable, Writable } from "node:stream";
import type { IndicatorState } from "../../firmware/hal/indicators.ts";
import type { Key, KeyEvent } from "../../firmware/hal/keys.ts";
import type { SimBoard, SimBoardSnapshot } from "./sim-board.ts";

export type TerminalInput = Readable & { isTTY?: boolean; setRawMode?: (mode: boolean) => unknown };
export type TerminalOutput = Writable & { isTTY?: boolean };

export interface TerminalViewOptions {
  input: TerminalInput;
  output: TerminalOutput;
  /** Called on Ctrl-C / Ctrl-D; the caller stops the phone and detaches the view. */
  onExit?: () => void;
  /** Force ANSI redraws on or off; defaults to `output.isTTY === true`. */
  ansi?: boolean;
}

export interface TerminalView {
  /** Restores the terminal (cooked mode, cursor) and stops listening. Idempotent. */
  detach(): void;
}

export type TerminalAction = { type: "key"; event: KeyEvent } | { type: "hook" } | { type: "exit" };

const ESC = "\x1b";

const SEQUENCES: ReadonlyArray<[string, Key]> = [
  ["[A", "up"],
  ["[B", "down"],
  ["[C", "right"],
  ["[D", "left"],
  ["OA", "up"],
  ["OB", "down"],
  ["OC", "right"],
  ["OD", "left"],
  ["OP", "soft1"],
  ["OQ", "soft2"],
  ["OR", "soft3"],
  ["OS", "soft4"],
  ["[11~", "soft1"],
  ["[12~", "soft2"],
  ["[13~", "soft3"],
  ["[14~", "soft4"],
  ["[[A", "soft1"],
  ["[[B", "soft2"],
  ["[[C", "soft3"],
  ["[[D", "soft4"],
];

/** Turns terminal input into phone actions; keeps the prefix state (`s`, `l`) between chunks. */
export class TerminalKeyDecoder {
  private prefix: "soft" | "long" | undefined;

  decode(chunk: string): TerminalAction[] {
    const out: TerminalAction[] = [];
    let i = 0;
    while (i < chunk.length) {
      const ch = chunk[i]!;
      if (ch === ESC) {
        const rest = chunk.slice(i + 1);
        const hit = SEQUENCES.find(([seq]) => rest.startsWith(seq));
        if (hit) {
          this.emit(out, hit[1]);
          i += 1 + hit[0].length;
          continue;
        }
        if (rest.startsWith("[") || rest.startsWith("O")) {
          // An escape sequence we do not map (Home, PgUp, F5…): skip it whole.
          const m = /^(\[[0-9;[]*[A-Za-z~]|O[A-Za-z])/.exec(rest);
          i += 1 + (m ? m[0].length : 1);
          continue;
        }
        this.emit(out, "back");
        i++;
        continue;
      }
      i++;
      if (ch === "\x03" || ch === "\x04") {
        out.push({ type: "exit" });
        continue;
      }
      if (this.prefix === "soft" && ch >= "1" && ch <= "4") {
        this.prefix = undefined;
        out.push({ type: "key", event: { key: `soft${ch}` as Key, kind: "press" } });
        continue;
      }
      if (this.prefix === "soft") this.prefix = undefined;
      if (ch === "s" || ch === "S") {
        this.prefix = "soft";
        continue;
      }
      if (ch === "l" || ch === "L") {
        this.prefix = "long";
        continue;
      }
      if (ch === "h" || ch === "H") {
        this.prefix = undefined;
        out.push({ type: "hook" });
        continue;
      }
      const key = plainKey(ch);
      if (key) this.emit(out, key);
    }
    return out;
  }

  private emit(out: TerminalAction[], key: Key): void {
    const kind = this.prefix === "long" ? "long-press" : "press";
    this.prefix = undefined;
    out.push({ type: "key", event: { key, kind } });
  }
}

function plainKey(ch: string): Key | undefined {
  if (/^[0-9*#]$/.test(ch)) return ch as Key;
  if (ch === "\r" || ch === "\n") return "ok";
  if (ch === "\x7f" || ch === "\b") return "back";
  if (ch === "m" || ch === "M") return "menu";
  return undefined;
}

const LED: Record<IndicatorState, string> = { off: "○", on: "●", blink: "◐", wink: "◕" };

/** The box and status line as plain text lines (no escapes). */
export function renderTerminalLines(s: SimBoardSnapshot, ascii = false): string[] {
  const [tl, tr, bl, br, h, v] = ascii ? ["+", "+", "+", "+", "-", "|"] : ["┌", "┐", "└", "┘", "─", "│"];
  const lines = [`${tl}${h.repeat(s.cols)}${tr}`];
  for (const line of s.lines) lines.push(`${v}${line.padEnd(s.cols, " ").slice(0, s.cols)}${v}`);
  lines.push(`${bl}${h.repeat(s.cols)}${br}`);
  const led = (st: IndicatorState) => (ascii ? st : `${LED[st]} ${st}`);
  lines.push(
    `msg ${led(s.indicators.messageWaiting)}  status ${led(s.indicators.status)}  ` +
      `${s.offHook ? "off-hook" : "on-hook"}  backlight ${s.backlight ? "on" : "off"}`,
  );
  return lines;
}

const HELP =
  "keys: 0-9*# | F1-F4 or s1-s4 softkeys | arrows | Enter=ok | Bksp/Esc=back | m=menu | l+key=long | h=hook | ^C quit";

export function attachTerminalView(board: SimBoard, o: TerminalViewOptions): TerminalView {
  const { input, output } = o;
  const ansi = o.ansi ?? output.isTTY === true;
  const decoder = new TerminalKeyDecoder();
  let scheduled = false;
  let detached = false;
  let drawnLines = 0;

  const draw = (): void => {
    scheduled = false;
    if (detached) return;
    const lines = renderTerminalLines(board.snapshot(), !ansi);
    if (ansi) {
      // Home, then every line cleared to its end; the help line stays below.
      let text = `${ESC}[H`;
      for (const line of [...lines, "", HELP]) text += `${line}${ESC}[K\r\n`;
      if (drawnLines > lines.length + 2) text += `${ESC}[J`;
      drawnLines = lines.length + 2;
      output.write(text);
    } else {
      output.write(`${lines.join("\n")}\n`);
    }
  };
  const schedule = (): void => {
    if (scheduled || detached) return;
    scheduled = true;
    queueMicrotask(draw);
  };

  const offChange = board.changes.on((change) => {
    if (change.type !== "key") schedule();
  });

  const onData = (data: Buffer | string): void => {
    for (const action of decoder.decode(typeof data === "string" ? data : data.toString("utf8"))) {
      if (action.type === "exit") o.onExit?.();
      else if (action.type === "hook") board.setHook(!board.hook.offHook);
      else if (action.event.kind === "long-press") board.longPress(action.event.key);
      else board.press(action.event.key);
    }
  };

  const raw = input.isTTY === true && typeof input.setRawMode === "function";
  if (raw) input.setRawMode!(true);
  input.on("data", onData);
  input.resume();
  if (ansi) output.write(`${ESC}[?25l${ESC}[2J${ESC}[H`);
  draw();

  return {
    detach() {
      if (detached) return;
      detached = true;
      offChange();
      input.off("data", onData);
      input.pause();
      if (raw) input.setRawMode!(false);
      if (ansi) output.write(`${ESC}[?25h\r\n`);
    },
  };
}
