/**
 * The LCD's bytes through a real tty: socat makes a pty pair, the SerialLcd writes to one end
 * through serialport's real SerialPort, and a second SerialPort reads the other end.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { SerialPort } from "serialport";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IDLE_SCREEN, IDLE_SCREEN_TICK } from "../../board/pi/lcd-bench.ts";
import { SerialLcd } from "../../board/pi/serial-lcd.ts";
import { openSerialPort } from "../../board/pi/serial-port.ts";
import { ManualClock } from "../../firmware/core/clock.ts";

const hasSocat = !spawnSync("socat", ["-V"]).error;
const mustHaveSocat = process.env.CI === "true";

async function startSocat(): Promise<{ proc: ChildProcess; ends: [string, string] }> {
  const proc = spawn("socat", ["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  return await new Promise((resolve, reject) => {
    let text = "";
    const timer = setTimeout(() => reject(new Error(`socat did not start: ${text}`)), 5000);
    proc.on("error", reject);
    proc.stderr!.on("data", (chunk: Buffer) => {
      text += chunk.toString();
      const ptys = [...text.matchAll(/PTY is (\/dev\/\S+)/g)].map((m) => m[1]!);
      if (ptys.length >= 2 && text.includes("starting data transfer loop")) {
        clearTimeout(timer);
        resolve({ proc, ends: [ptys[0]!, ptys[1]!] });
      }
    });
  });
}

describe("serial LCD over a socat pty pair", () => {
  let socat: ChildProcess | undefined;
  let ends: [string, string] | undefined;

  beforeAll(async () => {
    if (!hasSocat) return;
    ({ proc: socat, ends } = await startSocat());
  });

  afterAll(() => {
    socat?.kill();
  });

  it("sends exactly the full frame, then exactly the diff, across a real tty", async (ctx) => {
    if (!hasSocat) {
      if (mustHaveSocat) throw new Error("socat not installed");
      ctx.skip("socat not installed");
    }
    const [lcdEnd, deviceEnd] = ends!;
    const device = new SerialPort({ path: deviceEnd, baudRate: 19200 });
    let received = Buffer.alloc(0);
    device.on("data", (d: Buffer) => {
      received = Buffer.concat([received, d]);
    });
    await new Promise<void>((resolve, reject) => device.once("open", resolve).once("error", reject));
    const waitFor = async (n: number) => {
      const deadline = Date.now() + 3000;
      while (received.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 20)); // and nothing more arrives
    };

    // the expected bytes come from the same LCD logic on a recording port
    const expected: number[][] = [];
    const reference = new SerialLcd({
      path: "ref",
      baudRate: 19200,
      cols: 20,
      rows: 4,
      clock: new ManualClock(),
      openSerial: () => ({ write: (d) => expected.push([...d]), onFailure: () => {}, close: () => {} }),
    });
    reference.open();
    reference.show({ lines: IDLE_SCREEN });
    reference.show({ lines: IDLE_SCREEN_TICK });
    expect(expected[1]).toEqual([0xfe, 0x47, 18, 2, 0x36]);

    const lcd = new SerialLcd({
      path: lcdEnd,
      baudRate: 19200,
      cols: 20,
      rows: 4,
      clock: new ManualClock(),
      openSerial: openSerialPort,
    });
    lcd.open();
    lcd.show({ lines: IDLE_SCREEN });
    await waitFor(expected[0]!.length);
    expect([...received]).toEqual(expected[0]);
    lcd.show({ lines: IDLE_SCREEN_TICK });
    await waitFor(expected[0]!.length + expected[1]!.length);
    expect([...received]).toEqual([...expected[0]!, ...expected[1]!]);
    expect(lcd.bytesWritten).toBe(received.length);
    expect(lcd.isOpen).toBe(true);
    lcd.close();
    await new Promise<void>((resolve) => device.close(() => resolve()));
  });
});
