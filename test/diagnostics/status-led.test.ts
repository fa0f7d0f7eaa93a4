/**
 * Issue 14: the status LED differs between registered (steady) and limited (`wink`: lit with a
 * short dark wink every 2 s) on every board: the Pi's GPIO LED, the simulated board, the terminal
 * and the web page.
 */
import { describe, expect, it } from "vitest";
import { GpioLed } from "../../board/pi/leds.ts";
import { createSimBoard, renderTerminalLines, startWebView } from "../../board/sim/index.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { FakeGpio } from "../board-pi/fake-gpio.ts";

describe("GpioLed wink", () => {
  it("is lit 1.75 s, dark 0.25 s, and again; steady 'on' never goes dark", () => {
    const clock = new ManualClock();
    const gpio = new FakeGpio();
    const led = new GpioLed({ gpio, clock, line: 22, activeLevel: 1 });
    led.start();
    led.set("on");
    const on: number[] = [];
    for (let i = 0; i < 16; i++) {
      on.push(gpio.level(22)!);
      clock.advance(250);
    }
    expect(on.every((l) => l === 1)).toBe(true);
    led.set("wink");
    const wink: number[] = [];
    for (let i = 0; i < 16; i++) {
      wink.push(gpio.level(22)!);
      clock.advance(250);
    }
    expect(wink).toEqual([1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0]);
    led.set("blink");
    expect(led.state).toBe("blink");
    led.stop();
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("simulated board", () => {
  it("reports wink, and the terminal and the web page draw it differently from on", () => {
    const clock = new ManualClock();
    const b = createSimBoard({ clock });
    b.indicators.status.set("on");
    const on = renderTerminalLines(b.snapshot()).at(-1);
    b.indicators.status.set("wink");
    expect(b.indicatorStates.status).toBe("wink");
    const wink = renderTerminalLines(b.snapshot()).at(-1);
    expect(on).toContain("status ● on");
    expect(wink).toContain("status ◕ wink");
    expect(renderTerminalLines(b.snapshot(), true).at(-1)).toContain("status wink");
  });
});

describe("web page", () => {
  it("marks the status light wink, with its own animation", async () => {
    const clock = new ManualClock();
    const b = createSimBoard({ clock });
    b.indicators.status.set("wink");
    const view = await startWebView(b, { port: 0 });
    try {
      const html = await (await fetch(view.url)).text();
      expect(html).toContain('id="led-status" data-testid="led-status" data-state="wink"');
      expect(html).toContain('.led[data-state="wink"] .dot { animation: wink');
    } finally {
      await view.stop();
    }
  });
});
