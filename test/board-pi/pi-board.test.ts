import { SerialPortMock } from "serialport";
import { afterEach, describe, expect, it } from "vitest";
import { createPiBoard } from "../../board/pi/pi-board.ts";
import { DEFAULT_PROFILE_PATH, loadProfile } from "../../board/pi/profile.ts";
import { adaptSerialStream } from "../../board/pi/serial-port.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import type { KeyEvent } from "../../firmware/hal/keys.ts";
import { FakeGpio, FakeMatrix } from "./fake-gpio.ts";

const MockBinding = SerialPortMock.binding;
afterEach(() => MockBinding.reset());

describe("Pi board (fake GPIO, mock serial port)", () => {
  it("wires keypad, hook, LEDs and display from the profile", async () => {
    const profile = loadProfile(DEFAULT_PROFILE_PATH, { HANDSET_LCD_PATH: "/dev/ttyLCD" });
    MockBinding.createPort("/dev/ttyLCD", { echo: false, record: true });
    const clock = new ManualClock();
    const gpio = new FakeGpio();
    const matrix = new FakeMatrix(gpio, profile.keypad.rows, profile.keypad.columns, "up");
    gpio.setInput(profile.hook.line, 0);
    let stream: SerialPortMock | undefined;
    const board = createPiBoard(profile, {
      gpio,
      clock,
      openSerial: (path, baudRate) => {
        stream = new SerialPortMock({ path, baudRate });
        return adaptSerialStream(stream);
      },
    });
    const keys: KeyEvent[] = [];
    const hook: boolean[] = [];
    board.keys.onKey((e) => keys.push(e));
    board.hook.onChange((v) => hook.push(v));
    await board.start();

    matrix.press(3, 2); // "#"
    clock.advance(30);
    gpio.setInput(profile.hook.line, 1);
    clock.advance(50);
    board.indicators.messageWaiting.set("blink");
    expect(gpio.level(22)).toBe(1);
    clock.advance(500);
    expect(gpio.level(22)).toBe(0);
    board.display.show({ lines: ["4711"] });
    await new Promise<void>((r) => stream!.drain(() => r()));
    const recording = (stream!.port as unknown as { recording: Buffer }).recording;
    expect(recording.subarray(-8).toString("latin1")).toBe("\xfeG\x01\x014711");
    expect(keys).toEqual([{ key: "#", kind: "press" }]);
    expect(hook).toEqual([true]);
    expect(board.hook.offHook).toBe(true);

    await board.stop();
    expect(clock.pendingTimers()).toBe(0);
    expect([...gpio.lines.keys()].filter((l) => gpio.exported(l))).toEqual([]);
  });

  it("refuses to build without accessible GPIO", () => {
    const profile = loadProfile(DEFAULT_PROFILE_PATH, {});
    const gpio = new FakeGpio();
    gpio.accessible = false;
    expect(() =>
      createPiBoard(profile, { gpio, clock: new ManualClock(), openSerial: () => ({}) as never }),
    ).toThrow(/GPIO is not accessible/);
  });
});
