/**
 * GPIO as a port: the keypad, hook switch and LEDs see only `GpioFactory`/`GpioLine`, so the same
 * code runs on onoff (board/pi/onoff-gpio.ts) and on the test fake (test/board-pi/fake-gpio.ts).
 *
 * Line numbers given to `open()` are BCM offsets (GPIO17 = 17). Which sysfs number that is
 * depends on the kernel: on current Raspberry Pi OS the pin controller's chip has a non-zero
 * base (e.g. 512 on a Pi 4, 571 on a Pi 5), so the adapter adds the base that
 * `findGpioChipBase()` reads from sysfs (fivdi/onoff#199, #200).
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { HandsetError } from "../../firmware/core/errors.ts";

export type Level = 0 | 1;

export interface GpioLine {
  read(): Level;
  write(value: Level): void;
  /** Edge notifications, where the backend has them (inputs opened with edge "both"). */
  watch?(listener: (value: Level) => void): void;
  unexport(): void;
}

export interface GpioFactory {
  /** false where this machine has no usable GPIO (no /sys/class/gpio/export). */
  readonly accessible: boolean;
  open(line: number, direction: "in" | "out", edge?: "none" | "both"): GpioLine;
}

export const DEFAULT_SYSFS_GPIO = "/sys/class/gpio";

export interface GpioChip {
  name: string;
  label: string;
  base: number;
  ngpio: number | undefined;
}

/** Every gpiochip under a sysfs GPIO class directory (pass a fake tree in tests). */
export function listGpioChips(sysfsRoot: string = DEFAULT_SYSFS_GPIO): GpioChip[] {
  let entries: string[];
  try {
    entries = readdirSync(sysfsRoot);
  } catch {
    return [];
  }
  const chips: GpioChip[] = [];
  for (const name of entries.filter((e) => /^gpiochip\d+$/.test(e)).sort()) {
    const dir = join(sysfsRoot, name);
    try {
      const label = readFileSync(join(dir, "label"), "utf8").trim();
      const base = Number.parseInt(readFileSync(join(dir, "base"), "utf8").trim(), 10);
      let ngpio: number | undefined;
      try {
        ngpio = Number.parseInt(readFileSync(join(dir, "ngpio"), "utf8").trim(), 10);
      } catch {
        ngpio = undefined;
      }
      if (Number.isInteger(base)) chips.push({ name, label, base, ngpio });
    } catch {
      // a chip directory without label/base is not one we can use
    }
  }
  return chips;
}

/**
 * The sysfs base of the pin controller whose label is one of `labels` (first label wins, so a
 * profile can list "pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835" in preference order).
 * sysfs number = base + BCM offset.
 */
export function findGpioChipBase(
  labels: string | readonly string[],
  sysfsRoot: string = DEFAULT_SYSFS_GPIO,
): number {
  const wanted = typeof labels === "string" ? [labels] : labels;
  const chips = listGpioChips(sysfsRoot);
  for (const label of wanted) {
    const chip = chips.find((c) => c.label === label);
    if (chip) return chip.base;
  }
  const found = chips.length ? chips.map((c) => `${c.name}=${c.label}@${c.base}`).join(", ") : "no gpiochips";
  throw new HandsetError(
    "gpio-unavailable",
    `no GPIO chip labelled ${wanted.join(" or ")} under ${sysfsRoot} (found ${found})`,
  );
}
