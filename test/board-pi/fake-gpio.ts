/**
 * An in-memory GpioFactory for tests: outputs record what was written, inputs read whatever the
 * test (or a simulated circuit, via `inputResolver`) says.
 */
import type { GpioFactory, GpioLine, Level } from "../../board/pi/gpio.ts";

interface FakeLineState {
  direction: "in" | "out";
  value: Level;
  writes: Level[];
  listeners: Array<(value: Level) => void>;
  exported: boolean;
}

export class FakeGpio implements GpioFactory {
  accessible = true;
  readonly lines = new Map<number, FakeLineState>();
  /** When set, an input's read() asks this instead of the stored level (e.g. a keypad matrix). */
  inputResolver: ((line: number) => Level | undefined) | undefined;

  open(line: number, direction: "in" | "out", _edge: "none" | "both" = "none"): GpioLine {
    const existing = this.lines.get(line);
    if (existing?.exported) throw new Error(`fake GPIO${line} is already exported`);
    const state: FakeLineState = {
      direction,
      value: existing?.value ?? 0,
      writes: [],
      listeners: [],
      exported: true,
    };
    this.lines.set(line, state);
    return {
      read: () => (direction === "in" ? (this.inputResolver?.(line) ?? state.value) : state.value),
      write: (value) => {
        if (direction !== "out") throw new Error(`fake GPIO${line} is an input`);
        state.value = value;
        state.writes.push(value);
      },
      watch: (listener) => {
        state.listeners.push(listener);
      },
      unexport: () => {
        state.exported = false;
      },
    };
  }

  /** Sets an input's level, firing edge listeners when it changes. */
  setInput(line: number, value: Level): void {
    const state = this.lines.get(line) ?? {
      direction: "in",
      value,
      writes: [],
      listeners: [],
      exported: false,
    };
    const changed = state.value !== value;
    state.value = value;
    this.lines.set(line, state);
    if (changed) for (const l of state.listeners) l(value);
  }

  level(line: number): Level | undefined {
    return this.lines.get(line)?.value;
  }

  writes(line: number): Level[] {
    return this.lines.get(line)?.writes ?? [];
  }

  exported(line: number): boolean {
    return this.lines.get(line)?.exported ?? false;
  }
}

/**
 * A keypad matrix wired to a FakeGpio: pressing (row, col) connects that column to that row.
 * With pull-ups, a column reads the level of any driven-low row it is connected to.
 */
export class FakeMatrix {
  private readonly down = new Set<string>();

  constructor(
    private readonly gpio: FakeGpio,
    private readonly rows: readonly number[],
    private readonly columns: readonly number[],
    private readonly pull: "up" | "down" = "up",
  ) {
    gpio.inputResolver = (line) => this.resolve(line);
  }

  press(row: number, col: number): void {
    this.down.add(`${row},${col}`);
  }

  release(row: number, col: number): void {
    this.down.delete(`${row},${col}`);
  }

  set(row: number, col: number, pressed: boolean): void {
    if (pressed) this.press(row, col);
    else this.release(row, col);
  }

  /**
   * Worst-case wiring (no diodes, idle rows high-impedance): a column reads active when a path of
   * pressed keys connects it to the driven row — which is what makes a ghost appear at the fourth
   * corner of three keys pressed in an L.
   */
  private resolve(line: number): Level | undefined {
    const col = this.columns.indexOf(line);
    if (col < 0) return undefined;
    const idle: Level = this.pull === "up" ? 1 : 0;
    const active: Level = idle === 1 ? 0 : 1;
    const activeRows = this.rows.flatMap((l, r) => (this.gpio.level(l) === active ? [r] : []));
    const seenRows = new Set<number>(activeRows);
    const seenCols = new Set<number>();
    const queue = [...activeRows];
    while (queue.length) {
      const r = queue.shift()!;
      for (let c = 0; c < this.columns.length; c++) {
        if (seenCols.has(c) || !this.down.has(`${r},${c}`)) continue;
        seenCols.add(c);
        for (let r2 = 0; r2 < this.rows.length; r2++)
          if (!seenRows.has(r2) && this.down.has(`${r2},${c}`)) {
            seenRows.add(r2);
            queue.push(r2);
          }
      }
    }
    return seenCols.has(col) ? active : idle;
  }
}
