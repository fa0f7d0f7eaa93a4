/**
 * Bytes per display update on the serial LCD, for the bench: a 20×4 idle screen, then the same
 * screen one minute later (the clock tick, a diff), and a forced full redraw of it.
 */
import { ManualClock } from "../../firmware/core/clock.ts";
import { SerialLcd, type SerialLike } from "./serial-lcd.ts";

export const IDLE_SCREEN = ["4711", "Sat 28 Nov   14:05", "Registered", "Menu"];
export const IDLE_SCREEN_TICK = ["4711", "Sat 28 Nov   14:06", "Registered", "Menu"];

export function lcdBytesPerUpdate(): { idleClockTickBytes: number; fullRedrawBytes: number } {
  const recorded: number[] = [];
  const port: SerialLike = { write: (d) => recorded.push(d.length), onFailure: () => {}, close: () => {} };
  const lcd = new SerialLcd({
    path: "bench",
    baudRate: 19200,
    cols: 20,
    rows: 4,
    openSerial: () => port,
    clock: new ManualClock(),
  });
  lcd.open();
  lcd.show({ lines: IDLE_SCREEN });
  const before = lcd.bytesWritten;
  lcd.show({ lines: IDLE_SCREEN_TICK });
  const idleClockTickBytes = lcd.bytesWritten - before;
  const beforeRedraw = lcd.bytesWritten;
  lcd.redraw();
  const fullRedrawBytes = lcd.bytesWritten - beforeRedraw;
  lcd.close();
  return { idleClockTickBytes, fullRedrawBytes };
}
