import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Gpio } from "onoff";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findGpioChipBase, listGpioChips } from "../../board/pi/gpio.ts";
import { createOnoffGpio } from "../../board/pi/onoff-gpio.ts";
import { createPiBoardFromEnvironment } from "../../board/pi/pi-board.ts";
import { DEFAULT_PROFILE_PATH, loadProfile, parseProfile } from "../../board/pi/profile.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";

const rawProfile = JSON.parse(readFileSync(DEFAULT_PROFILE_PATH, "utf8"));

function errorOf(fn: () => unknown): HandsetError {
  try {
    fn();
  } catch (err) {
    if (err instanceof HandsetError) return err;
    throw err;
  }
  throw new Error("expected a HandsetError");
}

describe("board profile", () => {
  it("loads handset-v1 with its defaults", () => {
    const p = loadProfile(DEFAULT_PROFILE_PATH, {});
    expect(p.keypad.rows).toEqual([5, 6, 13, 19, 26, 24]);
    expect(p.keypad.keys.flat().filter(Boolean)).toHaveLength(23);
    expect(p.display).toEqual({
      path: "/dev/ttyAMA0",
      baudRate: 19200,
      cols: 20,
      rows: 4,
      backpack: "matrix-orbital",
    });
    expect(p.hook).toEqual({ line: 17, offHookLevel: 1, debounceMs: 30, pollMs: 5 });
  });

  it("takes overrides from the environment", () => {
    const p = parseProfile(rawProfile, {
      HANDSET_GPIO_ROWS: "4, 7, 8, 9, 10, 11",
      HANDSET_GPIO_COLUMNS: "12,16,20,21",
      HANDSET_GPIO_HOOK: "23",
      HANDSET_GPIO_LED_MWI: "25",
      HANDSET_GPIO_CHIP_LABEL: "pinctrl-bcm2711",
      HANDSET_LCD_PATH: "/dev/ttyUSB0",
      HANDSET_LCD_BAUD: "9600",
      HANDSET_LCD_SIZE: "16x2",
    });
    expect(p.keypad.rows).toEqual([4, 7, 8, 9, 10, 11]);
    expect(p.hook.line).toBe(23);
    expect(p.leds.messageWaiting.line).toBe(25);
    expect(p.gpio.chipLabel).toEqual(["pinctrl-bcm2711"]);
    expect(p.display).toMatchObject({ path: "/dev/ttyUSB0", baudRate: 9600, cols: 16, rows: 2 });
  });

  it("reports every problem in one typed error", () => {
    const err = errorOf(() =>
      parseProfile(rawProfile, {
        HANDSET_GPIO_ROWS: "5,6,13,19",
        HANDSET_GPIO_HOOK: "12",
        HANDSET_LCD_BAUD: "12345",
      }),
    );
    expect(err.code).toBe("invalid-board-profile");
    expect(err.message).toContain("keypad.keys has 6 rows but keypad.rows names 4 lines");
    expect(err.message).toContain("GPIO12 is used twice: keypad.columns[0] and hook.line");
    expect(err.message).toContain("display.baudRate must be one of");

    const bad = structuredClone(rawProfile);
    bad.keypad.keys[0][0] = "hash";
    bad.keypad.keys[1][0] = "2";
    const err2 = errorOf(() => parseProfile(bad));
    expect(err2.message).toContain('keypad.keys[0][0]: unknown key "hash"');
    expect(err2.message).toContain('keypad.keys[1][0]: key "2" already at [0][1]');
    expect(errorOf(() => parseProfile(rawProfile, { HANDSET_GPIO_ROWS: "5,x" })).message).toContain(
      'HANDSET_GPIO_ROWS="5,x" must be a comma-separated list of BCM line numbers',
    );
    expect(errorOf(() => loadProfile("/nonexistent/profile.json", {})).code).toBe("invalid-board-profile");
  });
});

describe("GPIO chip base (fake sysfs tree)", () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "handset-sysfs-"));
    const chip = (name: string, label: string, base: number, ngpio: number) => {
      mkdirSync(join(root, name));
      writeFileSync(join(root, name, "label"), `${label}\n`);
      writeFileSync(join(root, name, "base"), `${base}\n`);
      writeFileSync(join(root, name, "ngpio"), `${ngpio}\n`);
    };
    // a Pi 4 on bookworm: the BCM pin controller at 512, the firmware expander after it
    chip("gpiochip512", "pinctrl-bcm2711", 512, 58);
    chip("gpiochip570", "raspberrypi-exp-gpio", 570, 8);
    writeFileSync(join(root, "export"), "");
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it("finds the base of the chip whose label matches, in preference order", () => {
    expect(listGpioChips(root).map((c) => c.label)).toEqual(["pinctrl-bcm2711", "raspberrypi-exp-gpio"]);
    expect(findGpioChipBase("pinctrl-bcm2711", root)).toBe(512);
    expect(findGpioChipBase(["pinctrl-rp1", "pinctrl-bcm2711", "pinctrl-bcm2835"], root)).toBe(512);
    expect(findGpioChipBase("raspberrypi-exp-gpio", root)).toBe(570);
  });

  it("says which chip it looked for when none matches", () => {
    const err = errorOf(() => findGpioChipBase(["pinctrl-rp1"], root));
    expect(err.code).toBe("gpio-unavailable");
    expect(err.message).toContain("no GPIO chip labelled pinctrl-rp1");
    expect(err.message).toContain("gpiochip512=pinctrl-bcm2711@512");
    expect(errorOf(() => findGpioChipBase("pinctrl-bcm2711", join(root, "nope"))).message).toContain(
      "no gpiochips",
    );
  });

  it("onoff adapter exports base + BCM offset", (ctx) => {
    if (Gpio.accessible) ctx.skip("real GPIO here; this checks the error path of a machine without it");
    const gpio = createOnoffGpio({ chipLabel: "pinctrl-bcm2711", sysfsRoot: root });
    expect(gpio.accessible).toBe(false);
    const err = errorOf(() => gpio.open(17, "in"));
    expect(err.code).toBe("gpio-unavailable");
    expect(err.message).toContain("GPIO17 (sysfs 529 = base 512 + 17)");
  });
});

describe("createPiBoardFromEnvironment on a machine without GPIO", () => {
  it("fails clearly with gpio-unavailable", (ctx) => {
    if (Gpio.accessible) ctx.skip("this machine has GPIO");
    const err = errorOf(() => createPiBoardFromEnvironment({ clock: new ManualClock(), env: {} }));
    expect(err.code).toBe("gpio-unavailable");
    expect(err.message).toContain("GPIO is not accessible on this machine");
    expect(err.message).toContain("Gpio.accessible is false");
    expect(err.message).toContain("/sys/class/gpio/export");
    expect(err.message).toContain("pinctrl-rp1 or pinctrl-bcm2711 or pinctrl-bcm2835");
    expect(err.message).toContain("keypad rows 5,6,13,19,26,24");
  });
});
