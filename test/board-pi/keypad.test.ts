import { beforeEach, describe, expect, it } from "vitest";
import { GpioHookSwitch } from "../../board/pi/hook-switch.ts";
import { isGhostly, KeypadMatrix } from "../../board/pi/keypad-matrix.ts";
import { GpioLed } from "../../board/pi/leds.ts";
import { DEFAULT_PROFILE_PATH, loadProfile } from "../../board/pi/profile.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import type { KeyEvent } from "../../firmware/hal/keys.ts";
import { FakeGpio, FakeMatrix } from "./fake-gpio.ts";

const profile = loadProfile(DEFAULT_PROFILE_PATH, {});
const { rows, columns, keys } = profile.keypad;

function rig(pull: "up" | "down" = "up") {
  const clock = new ManualClock();
  const gpio = new FakeGpio();
  const matrix = new FakeMatrix(gpio, rows, columns, pull);
  const keypad = new KeypadMatrix({ gpio, clock, rows, columns, keys, columnPull: pull });
  const events: KeyEvent[] = [];
  keypad.onKey((e) => events.push(e));
  keypad.start();
  return { clock, gpio, matrix, keypad, events };
}

describe("keypad matrix", () => {
  it("maps every matrix position to its key (profile table)", () => {
    for (const pull of ["up", "down"] as const) {
      const { clock, matrix, events } = rig(pull);
      const expected: string[] = [];
      for (let r = 0; r < rows.length; r++)
        for (let c = 0; c < columns.length; c++) {
          matrix.press(r, c);
          clock.advance(40);
          matrix.release(r, c);
          clock.advance(40);
          const key = keys[r]![c];
          if (key) expected.push(key);
        }
      expect(events.map((e) => e.key)).toEqual(expected);
      expect(events.every((e) => e.kind === "press")).toBe(true);
      expect(expected).toHaveLength(23);
    }
  });

  it("reports a press only after the key has been stable for the debounce time", () => {
    const { clock, matrix, events } = rig();
    matrix.press(0, 1); // "2"
    clock.advance(15);
    expect(events).toEqual([]);
    clock.advance(10);
    expect(events).toEqual([{ key: "2", kind: "press" }]);
    clock.advance(200);
    matrix.release(0, 1);
    clock.advance(100);
    expect(events).toHaveLength(1);
  });

  it("ignores chatter shorter than the debounce time, and bounce before a real press", () => {
    const { clock, matrix, events } = rig();
    // 1-ms contact bounces, never 20 ms stable
    for (let i = 0; i < 40; i++) {
      matrix.set(1, 1, i % 3 === 0);
      clock.advance(1 + (i % 7));
    }
    matrix.release(1, 1);
    clock.advance(100);
    expect(events).toEqual([]);
    // bouncy press that then settles: exactly one press
    for (let i = 0; i < 10; i++) {
      matrix.set(1, 1, i % 2 === 0);
      clock.advance(3);
    }
    matrix.press(1, 1);
    clock.advance(30);
    // bouncy release: no second press
    for (let i = 0; i < 10; i++) {
      matrix.set(1, 1, i % 2 === 1);
      clock.advance(4);
    }
    matrix.release(1, 1);
    clock.advance(100);
    expect(events).toEqual([{ key: "5", kind: "press" }]);
  });

  it("sends long-press once, 800 ms after the key went down", () => {
    const { clock, matrix, events } = rig();
    matrix.press(3, 1); // "0"
    clock.advance(790);
    expect(events).toEqual([{ key: "0", kind: "press" }]);
    clock.advance(15);
    expect(events).toEqual([
      { key: "0", kind: "press" },
      { key: "0", kind: "long-press" },
    ]);
    clock.advance(3000);
    expect(events).toHaveLength(2);
    matrix.release(3, 1);
    clock.advance(50);
    matrix.press(3, 1);
    clock.advance(900);
    expect(events.map((e) => e.kind)).toEqual(["press", "long-press", "press", "long-press"]);
  });

  it("reports two keys held together, and discards scans with three keys in an L (ghosting)", () => {
    const { clock, matrix, keypad, events } = rig();
    matrix.press(0, 3); // soft1
    matrix.press(2, 0); // "7"
    clock.advance(30);
    expect(events.map((e) => e.key).sort()).toEqual(["7", "soft1"]);
    matrix.release(0, 3);
    matrix.release(2, 0);
    clock.advance(50);
    events.length = 0;
    // "1" (0,0), "2" (0,1), "4" (1,0) → the fake circuit also closes "5" (1,1)
    matrix.press(0, 0);
    matrix.press(0, 1);
    matrix.press(1, 0);
    clock.advance(200);
    expect(events).toEqual([]);
    expect(keypad.ghostScans).toBeGreaterThan(30);
    expect(isGhostly([true, true, false, true], 2)).toBe(true);
    expect(isGhostly([true, false, false, false, true, false, false, false, true], 3)).toBe(false);
  });

  it("drives one row active at a time and unexports its lines on stop", () => {
    const { clock, gpio, keypad } = rig();
    clock.advance(5);
    for (const r of rows) expect(gpio.writes(r).slice(-2)).toEqual([0, 1]);
    keypad.stop();
    expect([...rows, ...columns].some((l) => gpio.exported(l))).toBe(false);
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("hook switch", () => {
  let clock: ManualClock;
  let gpio: FakeGpio;
  let hook: GpioHookSwitch;
  let changes: boolean[];
  beforeEach(() => {
    clock = new ManualClock();
    gpio = new FakeGpio();
    gpio.setInput(17, 0);
    hook = new GpioHookSwitch({ gpio, clock, line: 17, offHookLevel: 1, debounceMs: 30, pollMs: 5 });
    changes = [];
    hook.onChange((v) => changes.push(v));
    hook.start();
  });

  it("debounces lifting and replacing the handset", () => {
    expect(hook.offHook).toBe(false);
    gpio.setInput(17, 1);
    clock.advance(20);
    expect(hook.offHook).toBe(false);
    clock.advance(20);
    expect(hook.offHook).toBe(true);
    expect(changes).toEqual([true]);
    gpio.setInput(17, 0);
    clock.advance(40);
    expect(changes).toEqual([true, false]);
  });

  it("ignores chatter shorter than the debounce time", () => {
    for (let i = 0; i < 30; i++) {
      gpio.setInput(17, i % 2 === 0 ? 1 : 0);
      clock.advance(10);
    }
    gpio.setInput(17, 0);
    clock.advance(100);
    expect(changes).toEqual([]);
    hook.stop();
    expect(gpio.exported(17)).toBe(false);
  });
});

describe("LEDs", () => {
  it("turns on, off and blinks every 500 ms on the clock", () => {
    const clock = new ManualClock();
    const gpio = new FakeGpio();
    const led = new GpioLed({ gpio, clock, line: 22, activeLevel: 1, blinkMs: 500 });
    led.start();
    expect(gpio.level(22)).toBe(0);
    led.set("on");
    expect(gpio.level(22)).toBe(1);
    led.set("blink");
    const seen: number[] = [];
    for (let i = 0; i < 6; i++) {
      seen.push(gpio.level(22)!);
      clock.advance(500);
    }
    expect(seen).toEqual([1, 0, 1, 0, 1, 0]);
    clock.advance(250);
    expect(gpio.level(22)).toBe(1);
    led.set("off");
    expect(gpio.level(22)).toBe(0);
    clock.advance(5000);
    expect(gpio.level(22)).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("honours an active-low LED", () => {
    const clock = new ManualClock();
    const gpio = new FakeGpio();
    const led = new GpioLed({ gpio, clock, line: 27, activeLevel: 0 });
    led.set("on");
    led.start();
    expect(gpio.level(27)).toBe(0);
    led.stop();
    expect(gpio.level(27)).toBe(1);
    expect(gpio.exported(27)).toBe(false);
  });
});
