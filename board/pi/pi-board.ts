/**
 * The Raspberry Pi board: keypad matrix, hook switch and LEDs on GPIO, a Matrix Orbital-style
 * serial LCD, and, when the profile has an "audio" section, the handset's microphone and earpiece
 * through ALSA's arecord/aplay (board/pi/alsa-audio.ts; the board needs alsa-utils and a USB
 * handset or codec HAT, named as `arecord -L` lists it). `createPiBoard` takes its GPIO and serial port as ports (tests pass fakes);
 * `createPiBoardFromEnvironment` plugs in onoff and serialport and refuses clearly, with a
 * "gpio-unavailable" HandsetError, on a machine without sysfs GPIO.
 */
import type { Clock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import type { Random } from "../../firmware/core/random.ts";
import type { Board } from "../../firmware/hal/board.ts";
import { type AlsaAudioDevice, createAlsaAudio } from "./alsa-audio.ts";
import { DEFAULT_SYSFS_GPIO, type GpioFactory } from "./gpio.ts";
import { GpioHookSwitch } from "./hook-switch.ts";
import { KeypadMatrix } from "./keypad-matrix.ts";
import { GpioLed } from "./leds.ts";
import { createOnoffGpio } from "./onoff-gpio.ts";
import { DEFAULT_PROFILE_PATH, loadProfile, type PiProfile } from "./profile.ts";
import { type OpenSerial, SerialLcd } from "./serial-lcd.ts";
import { openSerialPort } from "./serial-port.ts";

export interface PiBoardDeps {
  gpio: GpioFactory;
  openSerial: OpenSerial;
  clock: Clock;
  logger?: Logger;
  random?: Random;
}

export interface PiBoard extends Board {
  readonly profile: PiProfile;
  keys: KeypadMatrix;
  display: SerialLcd;
  hook: GpioHookSwitch;
  indicators: { messageWaiting: GpioLed; status: GpioLed };
  /** Present when the profile names ALSA PCMs; nothing is spawned until a call opens it. */
  audio?: AlsaAudioDevice;
}

export function gpioUnavailable(profile: PiProfile, sysfsRoot: string = DEFAULT_SYSFS_GPIO): HandsetError {
  const k = profile.keypad;
  return new HandsetError(
    "gpio-unavailable",
    `GPIO is not accessible on this machine (onoff Gpio.accessible is false: no writable ${sysfsRoot}/export); ` +
      `board profile "${profile.name}" needs a gpiochip labelled ${profile.gpio.chipLabel.join(" or ")} for ` +
      `keypad rows ${k.rows.join(",")}, columns ${k.columns.join(",")}, hook ${profile.hook.line}, ` +
      `LEDs ${profile.leds.messageWaiting.line},${profile.leds.status.line} — run on a Raspberry Pi or use board "sim"`,
  );
}

export function createPiBoard(profile: PiProfile, deps: PiBoardDeps): PiBoard {
  if (!deps.gpio.accessible) throw gpioUnavailable(profile);
  const logger = (deps.logger ?? silentLogger).child("board.pi");
  const { clock, gpio } = deps;
  const keys = new KeypadMatrix({
    gpio,
    clock,
    rows: profile.keypad.rows,
    columns: profile.keypad.columns,
    keys: profile.keypad.keys,
    columnPull: profile.keypad.columnPull,
    scanIntervalMs: profile.keypad.scanIntervalMs,
    debounceMs: profile.keypad.debounceMs,
    longPressMs: profile.keypad.longPressMs,
    logger: logger.child("keypad"),
  });
  const hook = new GpioHookSwitch({ gpio, clock, ...profile.hook, logger: logger.child("hook") });
  const led = (p: PiProfile["leds"]["status"]) =>
    new GpioLed({ gpio, clock, line: p.line, activeLevel: p.activeLevel, blinkMs: profile.leds.blinkMs });
  const indicators = { messageWaiting: led(profile.leds.messageWaiting), status: led(profile.leds.status) };
  const display = new SerialLcd({
    path: profile.display.path,
    baudRate: profile.display.baudRate,
    cols: profile.display.cols,
    rows: profile.display.rows,
    openSerial: deps.openSerial,
    clock,
    logger: logger.child("display"),
    ...(deps.random ? { random: deps.random } : {}),
  });
  const audio = profile.audio
    ? createAlsaAudio({
        profile: profile.audio,
        clock,
        logger: logger.child("audio"),
        ...(deps.random ? { random: deps.random } : {}),
      })
    : undefined;
  const parts = [keys, hook, indicators.messageWaiting, indicators.status];
  let started = false;

  const stopAll = () => {
    display.close();
    for (const p of parts) p.stop();
  };

  return {
    name: "pi",
    profile,
    keys,
    display,
    hook,
    indicators,
    ...(audio ? { audio } : {}),
    async start() {
      if (started) return;
      try {
        for (const p of parts) p.start();
        display.open();
      } catch (err) {
        stopAll();
        throw err;
      }
      started = true;
      logger.info("board started", {
        profile: profile.name,
        display: profile.display.path,
        audio: profile.audio ? `${profile.audio.capture} / ${profile.audio.playback}` : "none",
      });
    },
    async stop() {
      if (!started) return;
      started = false;
      stopAll();
      // A call still open at shutdown: its arecord and aplay must not outlive the phone.
      await audio?.close();
    },
  };
}

export interface PiEnvironmentOptions {
  clock: Clock;
  logger?: Logger;
  random?: Random;
  profilePath?: string;
  env?: NodeJS.ProcessEnv;
  sysfsRoot?: string;
}

/** The board on real hardware: profile from file + environment, onoff GPIO, serialport LCD. */
export function createPiBoardFromEnvironment(options: PiEnvironmentOptions): PiBoard {
  const profile = loadProfile(options.profilePath ?? DEFAULT_PROFILE_PATH, options.env ?? process.env);
  const sysfsRoot = options.sysfsRoot ?? DEFAULT_SYSFS_GPIO;
  const gpio = createOnoffGpio({ chipLabel: profile.gpio.chipLabel, sysfsRoot });
  if (!gpio.accessible) throw gpioUnavailable(profile, sysfsRoot);
  return createPiBoard(profile, {
    gpio,
    openSerial: openSerialPort,
    clock: options.clock,
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.random ? { random: options.random } : {}),
  });
}
