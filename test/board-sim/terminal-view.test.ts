import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { attachTerminalView, createSimBoard, TerminalKeyDecoder } from "../../board/sim/index.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import type { KeyEvent } from "../../firmware/hal/keys.ts";

const tick = () => new Promise((r) => setImmediate(r));

function fakeTty(isTTY: boolean) {
  const input = Object.assign(new PassThrough(), {
    isTTY,
    rawModes: [] as boolean[],
    setRawMode(mode: boolean) {
      this.rawModes.push(mode);
      return this;
    },
  });
  const output = Object.assign(new PassThrough(), { isTTY });
  let written = "";
  output.on("data", (d: Buffer) => {
    written += d.toString("utf8");
  });
  return { input, output, text: () => written };
}

describe("TerminalKeyDecoder", () => {
  const keys = (...chunks: string[]) => {
    const d = new TerminalKeyDecoder();
    return chunks.flatMap((c) => d.decode(c));
  };

  it("maps the documented keys", () => {
    expect(keys("0123456789*#\rm\x7f\x1b")).toEqual(
      [..."0123456789*#", "ok", "menu", "back", "back"].map((key) => ({
        type: "key",
        event: { key, kind: "press" },
      })),
    );
    const arrows = keys("\x1b[A\x1b[B\x1b[C\x1b[D\x1bOA");
    expect(arrows.map((a) => a.type === "key" && a.event.key)).toEqual(["up", "down", "right", "left", "up"]);
    const soft = keys("\x1bOP\x1b[12~\x1b[[C", "s4", "s", "1");
    expect(soft.map((a) => a.type === "key" && a.event.key)).toEqual([
      "soft1",
      "soft2",
      "soft3",
      "soft4",
      "soft1",
    ]);
  });

  it("handles long-press prefix, hook, exit and ignores unmapped sequences", () => {
    expect(keys("l0", "h", "\x1b[5~", "x", "\x03")).toEqual([
      { type: "key", event: { key: "0", kind: "long-press" } },
      { type: "hook" },
      { type: "exit" },
    ]);
  });
});

describe("terminal view", () => {
  it("draws frames with ANSI redraws on a TTY and feeds typed keys to the board", async () => {
    const board = createSimBoard({ clock: new ManualClock() });
    const tty = fakeTty(true);
    let exits = 0;
    const view = attachTerminalView(board, { input: tty.input, output: tty.output, onExit: () => exits++ });
    expect(tty.input.rawModes).toEqual([true]);

    board.display.show({ lines: ["Sign in", "Ext: 4711"] });
    board.indicators.status.set("blink");
    await tick();
    expect(tty.text()).toContain("\x1b[H");
    expect(tty.text()).toContain("│Sign in             │");
    expect(tty.text()).toContain("│Ext: 4711           │");
    expect(tty.text()).toMatch(/status ◐ blink\s+on-hook/);

    const got: KeyEvent[] = [];
    board.keys.onKey((e) => got.push(e));
    tty.input.write("47\x1bOQ\r");
    tty.input.write("h");
    tty.input.write("\x03");
    await tick();
    expect(got).toEqual([
      { key: "4", kind: "press" },
      { key: "7", kind: "press" },
      { key: "soft2", kind: "press" },
      { key: "ok", kind: "press" },
    ]);
    expect(board.hook.offHook).toBe(true);
    expect(exits).toBe(1);
    await tick();
    expect(tty.text()).toContain("off-hook");

    view.detach();
    view.detach();
    expect(tty.input.rawModes).toEqual([true, false]);
    tty.input.write("9");
    await tick();
    expect(got).toHaveLength(4);
  });

  it("prints plain lines without escape codes when the output is not a TTY", async () => {
    const board = createSimBoard({ clock: new ManualClock() });
    const pipe = fakeTty(false);
    const view = attachTerminalView(board, { input: pipe.input, output: pipe.output });
    board.display.show({ lines: ["Registered", "4711"] });
    board.indicators.messageWaiting.set("on");
    await tick();
    pipe.input.write("1{");
    await tick();
    view.detach();
    expect(pipe.input.rawModes).toEqual([]);
    expect(pipe.text()).not.toContain("\x1b");
    expect(pipe.text()).toContain("|Registered          |\n|4711                |\n");
    expect(pipe.text()).toContain("msg on  status off  on-hook  backlight on");
    expect(board.frames).toHaveLength(1);
  });
});
