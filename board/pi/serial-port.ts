/**
 * SerialLike over serialport streams: the real SerialPort (a UART such as /dev/ttyAMA0, a USB
 * adapter or a pty) and SerialPortMock share the SerialPortStream API, so one adapter serves both.
 */
import { SerialPort } from "serialport";
import type { SerialLike } from "./serial-lcd.ts";

/** The part of serialport's SerialPortStream the adapter uses. */
export interface SerialStreamLike {
  readonly isOpen: boolean;
  write(data: Buffer, callback?: (err: Error | null | undefined) => void): boolean;
  on(event: "error", listener: (err: Error) => void): unknown;
  on(event: "close", listener: () => void): unknown;
  close(callback?: (err: Error | null) => void): void;
  destroy(): unknown;
}

export function adaptSerialStream(stream: SerialStreamLike): SerialLike {
  let listener: ((err: Error) => void) | undefined;
  let closing = false;
  let failed = false;
  const failure = (err: Error) => {
    if (closing || failed) return;
    failed = true;
    listener?.(err);
  };
  stream.on("error", failure);
  stream.on("close", () => failure(new Error("serial port closed")));
  return {
    write(data) {
      if (failed) throw new Error("serial port has failed");
      stream.write(Buffer.from(data), (err) => {
        if (err) failure(err);
      });
    },
    onFailure(l) {
      listener = l;
    },
    close() {
      if (closing) return;
      closing = true;
      if (stream.isOpen) stream.close(() => {});
      else stream.destroy();
    },
  };
}

/** Opens a real serial device (8N1, no flow control) as SerialLike; errors arrive via onFailure. */
export function openSerialPort(path: string, baudRate: number): SerialLike {
  return adaptSerialStream(new SerialPort({ path, baudRate }));
}
