/**
 * GpioFactory on onoff (sysfs GPIO). onoff knows nothing of chip bases, so BCM offsets are
 * translated here with the base `findGpioChipBase()` reads (looked up once, on first open).
 *
 * Pull-ups/-downs cannot be set through sysfs: configure them in config.txt
 * (e.g. `gpio=12,16,20,21=ip,pu`) to match the profile's `keypad.columnPull`.
 */
import { Gpio } from "onoff";
import { HandsetError } from "../../firmware/core/errors.ts";
import { DEFAULT_SYSFS_GPIO, findGpioChipBase, type GpioFactory, type GpioLine, type Level } from "./gpio.ts";

export interface OnoffGpioOptions {
  /** Pin-controller label(s), in preference order (profile `gpio.chipLabel`). */
  chipLabel: string | readonly string[];
  sysfsRoot?: string;
}

export function createOnoffGpio(options: OnoffGpioOptions): GpioFactory {
  const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_GPIO;
  let base: number | undefined;
  return {
    get accessible() {
      return Gpio.accessible;
    },
    open(line, direction, edge = "none"): GpioLine {
      base ??= findGpioChipBase(options.chipLabel, sysfsRoot);
      const number = base + line;
      let gpio: Gpio;
      try {
        gpio = new Gpio(number, direction, edge);
      } catch (err) {
        throw new HandsetError(
          "gpio-unavailable",
          `cannot export GPIO${line} (sysfs ${number} = base ${base} + ${line}) as ${direction}: ${
            err instanceof Error ? err.message : String(err)
          }`,
          { cause: err },
        );
      }
      return {
        read: () => gpio.readSync(),
        write: (value: Level) => gpio.writeSync(value),
        watch: (listener) =>
          gpio.watch((err, value) => {
            if (!err) listener(value);
          }),
        unexport: () => gpio.unexport(),
      };
    },
  };
}
