import { describe, expect, it } from "vitest";
import { createSimBoard, parseKeys, type SimBoardChange } from "../../board/sim/index.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import type { KeyEvent } from "../../firmware/hal/keys.ts";

const board = () => createSimBoard({ clock: new ManualClock() });

describe("parseKeys", () => {
  it("reads digits, star and hash", () => {
    expect(parseKeys("4711#1234#").map((e) => e.key)).toEqual([..."4711#1234#"]);
    expect(parseKeys("*0").every((e) => e.kind === "press")).toBe(true);
  });

  it("reads braced key names and long presses, ignoring whitespace", () => {
    expect(parseKeys("{soft1} 12{ok}{menu}{ long:0 }{#}")).toEqual<KeyEvent[]>([
      { key: "soft1", kind: "press" },
      { key: "1", kind: "press" },
      { key: "2", kind: "press" },
      { key: "ok", kind: "press" },
      { key: "menu", kind: "press" },
      { key: "0", kind: "long-press" },
      { key: "#", kind: "press" },
    ]);
  });

  it("rejects unknown keys and unclosed braces with a HandsetError", () => {
    expect(() => parseKeys("12a")).toThrow(HandsetError);
    expect(() => parseKeys("{soft5}")).toThrow(/unknown key "\{soft5\}"/);
    expect(() => parseKeys("1{ok")).toThrow(/unclosed/);
    expect(() => parseKeys("{long:}")).toThrow(/unknown key/);
  });
});

describe("createSimBoard", () => {
  it("implements Board with a 20×4 display by default", () => {
    const b = board();
    expect(b.name).toBe("sim");
    expect([b.display.cols, b.display.rows]).toEqual([20, 4]);
    expect(b.current.lines).toEqual(["", "", "", ""]);
    expect(createSimBoard({ clock: new ManualClock(), cols: 16, rows: 2 }).current.lines).toHaveLength(2);
  });

  it("delivers pressed and typed keys to key listeners, and validates before pressing any", () => {
    const b = board();
    const got: KeyEvent[] = [];
    const off = b.keys.onKey((e) => got.push(e));
    b.press("5");
    b.longPress("soft2");
    b.typeKeys("4711#{ok}");
    expect(got).toEqual([
      { key: "5", kind: "press" },
      { key: "soft2", kind: "long-press" },
      ...[..."4711#"].map((key) => ({ key, kind: "press" })),
      { key: "ok", kind: "press" },
    ]);
    expect(() => b.typeKeys("12x")).toThrow(/unknown key "x"/);
    expect(got).toHaveLength(8);
    off();
    b.press("1");
    expect(got).toHaveLength(8);
  });

  it("records every frame, normalised to rows × at most cols", () => {
    const b = board();
    b.display.show({ lines: ["Welcome"] });
    b.display.show({ lines: ["a".repeat(30), "b", "c", "d", "e"] });
    b.display.show({ lines: ["a".repeat(30), "b", "c", "d", "e"] });
    expect(b.frames).toHaveLength(3);
    expect(b.frames[0]!.lines).toEqual(["Welcome", "", "", ""]);
    expect(b.current.lines).toEqual(["a".repeat(20), "b", "c", "d"]);
  });

  it("tracks indicators, backlight and hook, and reports each change once with the clock's time", () => {
    const clock = new ManualClock();
    const b = createSimBoard({ clock });
    const changes: SimBoardChange[] = [];
    b.changes.on((c) => changes.push(c));
    const hooks: boolean[] = [];
    b.hook.onChange((h) => hooks.push(h));

    b.indicators.messageWaiting.set("blink");
    clock.advance(250);
    b.indicators.status.set("on");
    b.indicators.status.set("on");
    b.display.setBacklight(false);
    b.setHook(true);
    b.setHook(true);
    b.display.show({ lines: ["x"] });

    expect(b.indicatorStates).toEqual({ messageWaiting: "blink", status: "on" });
    expect(b.backlight).toBe(false);
    expect(b.hook.offHook).toBe(true);
    expect(hooks).toEqual([true]);
    expect(changes.map((c) => c.type)).toEqual(["indicator", "indicator", "backlight", "hook", "frame"]);
    expect(changes[0]!.at).toBe(0);
    expect(changes[1]!.at).toBe(250);
    expect(b.snapshot()).toEqual({
      cols: 20,
      rows: 4,
      lines: ["x", "", "", ""],
      backlight: false,
      offHook: true,
      indicators: { messageWaiting: "blink", status: "on" },
    });
  });

  it("starts and stops", async () => {
    const b = board();
    await b.start();
    await b.stop();
  });
});
