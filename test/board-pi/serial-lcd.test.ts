import { SerialPortMock } from "serialport";
import { afterEach, describe, expect, it } from "vitest";
import { IDLE_SCREEN, IDLE_SCREEN_TICK, lcdBytesPerUpdate } from "../../board/pi/lcd-bench.ts";
import { changedRuns, lcdText, SerialLcd, type SerialLike } from "../../board/pi/serial-lcd.ts";
import { adaptSerialStream } from "../../board/pi/serial-port.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { SeededRandom } from "../../firmware/core/random.ts";

const MockBinding = SerialPortMock.binding;
const PATH = "/dev/ttyLCD";

const ascii = (s: string) => [...Buffer.from(s, "latin1")];
const at = (col: number, row: number) => [0xfe, 0x47, col, row];
/** FE 52 (auto scroll off), FE 42 00 (backlight on), FE 58 (clear). */
const FULL_PREFIX = [0xfe, 0x52, 0xfe, 0x42, 0x00, 0xfe, 0x58];
const IDLE_FULL = [
  ...FULL_PREFIX,
  ...at(1, 1),
  ...ascii("4711"),
  ...at(1, 2),
  ...ascii("Sat 28 Nov   14:05"),
  ...at(1, 3),
  ...ascii("Registered"),
  ...at(1, 4),
  ...ascii("Menu"),
];

function mockRig() {
  MockBinding.createPort(PATH, { echo: false, record: true });
  const clock = new ManualClock();
  const streams: SerialPortMock[] = [];
  const lcd = new SerialLcd({
    path: PATH,
    baudRate: 19200,
    cols: 20,
    rows: 4,
    clock,
    random: new SeededRandom(7),
    openSerial: (path, baudRate) => {
      const s = new SerialPortMock({ path, baudRate });
      streams.push(s);
      return adaptSerialStream(s);
    },
  });
  const recorded = async (i = streams.length - 1): Promise<number[]> => {
    const s = streams[i]!;
    await new Promise<void>((resolve, reject) => s.drain((err) => (err ? reject(err) : resolve())));
    return [...((s.port as unknown as { recording: Buffer }).recording ?? [])];
  };
  return { clock, lcd, streams, recorded };
}

afterEach(() => {
  MockBinding.reset();
});

describe("serial LCD byte protocol (serialport mock binding)", () => {
  it("sends a full redraw with clear for the first frame, then only the changed cell", async () => {
    const { lcd, recorded } = mockRig();
    lcd.open();
    lcd.show({ lines: IDLE_SCREEN });
    expect(await recorded()).toEqual(IDLE_FULL);
    lcd.show({ lines: IDLE_SCREEN_TICK });
    expect((await recorded()).slice(IDLE_FULL.length)).toEqual([...at(18, 2), ...ascii("6")]);
    lcd.show({ lines: IDLE_SCREEN_TICK });
    expect(await recorded()).toHaveLength(IDLE_FULL.length + 5);
    expect(lcd.framesSent).toBe(2);
    expect(lcd.bytesWritten).toBe(IDLE_FULL.length + 5);
    lcd.close();
  });

  it("toggles the backlight with FE 46 / FE 42 00 and keeps it across a full redraw", async () => {
    const { lcd, recorded } = mockRig();
    lcd.open();
    lcd.show({ lines: ["A"] });
    const base = (await recorded()).length;
    lcd.setBacklight(false);
    lcd.setBacklight(false);
    lcd.setBacklight(true);
    expect((await recorded()).slice(base)).toEqual([0xfe, 0x46, 0xfe, 0x42, 0x00]);
    lcd.setBacklight(false);
    lcd.redraw();
    expect((await recorded()).slice(base + 5)).toEqual([
      0xfe,
      0x46,
      0xfe,
      0x52,
      0xfe,
      0x46,
      0xfe,
      0x58,
      ...at(1, 1),
      ...ascii("A"),
    ]);
    lcd.close();
  });

  it("diffs runs of changes with cursor moves, merging runs closer than a cursor move", async () => {
    const { lcd, recorded } = mockRig();
    lcd.open();
    lcd.show({ lines: ["abcdefghijklmnopqrst", "", "", ""] });
    const base = (await recorded()).length;
    // cells 1,3 change (gap 1 → one run "BcD"); cell 15 changes (gap 11 → its own move), and
    // the cleared "t" at cell 19 is 3 cells on (< a cursor move) → one run "Pqrs "; row 4 gains "x"
    lcd.show({ lines: ["aBcDefghijklmnoPqrs", "", "", "  x"] });
    expect((await recorded()).slice(base)).toEqual([
      ...at(2, 1),
      ...ascii("BcD"),
      ...at(16, 1),
      ...ascii("Pqrs "),
      ...at(3, 4),
      ...ascii("x"),
    ]);
    expect(changedRuns([1, 2, 3, 4, 5, 6, 7, 8], [0, 2, 3, 4, 5, 6, 0, 8])).toEqual([
      [0, 1],
      [6, 7],
    ]);
    expect(changedRuns([1, 2, 3, 4, 5], [0, 2, 3, 4, 0])).toEqual([[0, 5]]);
    lcd.close();
  });

  it("replaces characters outside printable ASCII, one cell each, and cuts long lines", async () => {
    expect(lcdText("Call… – “Zoë” 5°")).toBe('Call. - "Zoe" 5o');
    expect(lcdText("日\t€")).toBe("? ?");
    const { lcd, recorded } = mockRig();
    lcd.open();
    lcd.show({ lines: ["Müller…123456789012345", "ok"] });
    expect(await recorded()).toEqual([
      ...FULL_PREFIX,
      ...at(1, 1),
      ...ascii("Muller.1234567890123"),
      ...at(1, 2),
      ...ascii("ok"),
    ]);
    lcd.close();
  });

  it("reopens with backoff after the port closes under it, and redraws in full", async () => {
    const { clock, lcd, streams, recorded } = mockRig();
    lcd.open();
    lcd.show({ lines: IDLE_SCREEN });
    expect(await recorded()).toEqual(IDLE_FULL);
    // the device goes away: the port closes without us asking
    await new Promise<void>((resolve) => streams[0]!.close(() => resolve()));
    await new Promise((r) => setImmediate(r));
    expect(lcd.isOpen).toBe(false);
    lcd.show({ lines: IDLE_SCREEN_TICK }); // nothing to send it to
    expect(streams).toHaveLength(1);
    clock.advance(200);
    expect(streams).toHaveLength(1); // backoff: 500 ms × U(0.5, 1)
    clock.advance(400);
    expect(streams).toHaveLength(2);
    const tickFull = [...IDLE_FULL];
    tickFull[tickFull.indexOf(0x35, 28)] = 0x36; // "14:05" → "14:06"
    expect(await recorded(1)).toEqual(tickFull);
    lcd.show({ lines: IDLE_SCREEN });
    expect((await recorded(1)).slice(tickFull.length)).toEqual([...at(18, 2), ...ascii("5")]);
    expect(lcd.reopens).toBe(1);

    // an error event on the stream: same story; the retry count has not reset yet (the port
    // was up for less than stableMs), so this wait is 1000 ms × U(0.5, 1)
    streams[1]!.emit("error", new Error("EIO"));
    await new Promise((r) => setTimeout(r, 5));
    clock.advance(1000);
    expect(streams).toHaveLength(3);
    expect(await recorded(2)).toEqual(IDLE_FULL);
    lcd.close();
  });

  it("backs off further on repeated failures and resets after a stable period", () => {
    const clock = new ManualClock();
    let opens = 0;
    let failing = true;
    const writes: number[][] = [];
    const lcd = new SerialLcd({
      path: "x",
      baudRate: 19200,
      cols: 20,
      rows: 4,
      clock,
      random: new SeededRandom(1),
      backoff: { baseMs: 100, capMs: 1000 },
      openSerial: (): SerialLike => {
        opens++;
        if (failing) throw new Error("ENOENT");
        return { write: (d) => writes.push([...d]), onFailure: () => {}, close: () => {} };
      },
    });
    lcd.open();
    lcd.show({ lines: ["hi"] });
    const openTimes: number[] = [];
    let last = opens;
    for (let t = 0; t < 3000; t += 10) {
      clock.advance(10);
      if (opens !== last) openTimes.push(clock.monotonic());
      last = opens;
    }
    const gaps = openTimes.slice(1).map((t, i) => t - openTimes[i]!);
    expect(gaps[0]).toBeLessThanOrEqual(200);
    expect(Math.max(...gaps)).toBeGreaterThan(400);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(1010);
    failing = false;
    clock.advance(1100);
    expect(lcd.isOpen).toBe(true);
    expect(writes.flat()).toEqual([...FULL_PREFIX, ...at(1, 1), ...ascii("hi")]);
    lcd.close();
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("LCD bench helper", () => {
  it("measures an idle clock tick and a full redraw", () => {
    expect(lcdBytesPerUpdate()).toEqual({ idleClockTickBytes: 5, fullRedrawBytes: IDLE_FULL.length });
  });
});
