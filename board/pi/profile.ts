/**
 * The Pi board profile: which BCM lines the keypad matrix, hook switch and LEDs use, what key sits
 * at each matrix position, and where the display is. Read from a JSON file
 * (board/pi/profiles/handset-v1.json by default), then overridden from the environment:
 *
 *   HANDSET_GPIO_CHIP_LABEL="pinctrl-bcm2711"      (comma list, preference order)
 *   HANDSET_GPIO_ROWS="5,6,13,19,26,24"            HANDSET_GPIO_COLUMNS="12,16,20,21"
 *   HANDSET_GPIO_COLUMN_PULL="up"|"down"           HANDSET_GPIO_HOOK="17"
 *   HANDSET_GPIO_LED_MWI="22"                      HANDSET_GPIO_LED_STATUS="27"
 *   HANDSET_LCD_PATH="/dev/ttyAMA0"                HANDSET_LCD_BAUD="19200"
 *   HANDSET_LCD_SIZE="20x4"
 *   HANDSET_AUDIO_CAPTURE="plughw:CARD=Device,DEV=0"   HANDSET_AUDIO_PLAYBACK="…"
 *   HANDSET_AUDIO_RATE="16000"|"8000"              HANDSET_AUDIO="off" (no audio device)
 *
 * The optional "audio" section names the ALSA PCMs of the handset's microphone and earpiece
 * (board/pi/alsa-audio.ts, which says what the board needs: alsa-utils, a USB handset or a codec
 * HAT, the names from `arecord -L`):
 *
 *   "audio": { "capture": "plughw:CARD=Device,DEV=0",  (required)
 *              "playback": "…",                         (default: the capture PCM)
 *              "rateHz": 16000,                         (8000 or 16000; default 16000)
 *              "latencyMs": 60,                         (40..500; default 60)
 *              "arecordPath": "arecord", "aplayPath": "aplay" }  (default: found on PATH)
 *
 * A profile without it gives a board without audio: the phone registers, calls carry no sound.
 *
 * Everything is validated at once; problems are reported together in one "invalid-board-profile"
 * HandsetError.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { HandsetError } from "../../firmware/core/errors.ts";
import { isKey, type Key } from "../../firmware/hal/keys.ts";
import {
  type AlsaAudioProfile,
  DEFAULT_AUDIO_LATENCY_MS,
  DEFAULT_AUDIO_RATE,
  MAX_AUDIO_LATENCY_MS,
  MIN_AUDIO_LATENCY_MS,
} from "./alsa-audio.ts";
import type { Level } from "./gpio.ts";

export interface LedProfile {
  line: number;
  activeLevel: Level;
}

export interface PiProfile {
  name: string;
  gpio: { chipLabel: string[] };
  keypad: {
    /** Driven outputs, one per matrix row (BCM offsets). */
    rows: number[];
    /** Inputs, one per matrix column (BCM offsets). */
    columns: number[];
    /** "up": idle columns read 1, the scanned row is driven 0; "down": the reverse. */
    columnPull: "up" | "down";
    scanIntervalMs: number;
    debounceMs: number;
    longPressMs: number;
    /** keys[row][column]; null where no key is fitted. */
    keys: Array<Array<Key | null>>;
  };
  hook: { line: number; offHookLevel: Level; debounceMs: number; pollMs: number };
  leds: { blinkMs: number; messageWaiting: LedProfile; status: LedProfile };
  display: { path: string; baudRate: number; cols: number; rows: number; backpack: "matrix-orbital" };
  /** The handset's ALSA PCMs; absent: the board has no audio device. */
  audio?: AlsaAudioProfile;
}

export const DEFAULT_PROFILE_PATH: string = join(import.meta.dirname, "profiles", "handset-v1.json");

const BAUD_RATES = [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200];
const MAX_BCM = 57;

/** Reads, overrides and validates a profile file. */
export function loadProfile(
  path: string = DEFAULT_PROFILE_PATH,
  env: NodeJS.ProcessEnv = process.env,
): PiProfile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new HandsetError(
      "invalid-board-profile",
      `cannot read board profile ${path}: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    );
  }
  return parseProfile(raw, env, path);
}

/** Applies environment overrides to a parsed JSON profile and validates the result. */
export function parseProfile(raw: unknown, env: NodeJS.ProcessEnv = {}, source = "profile"): PiProfile {
  const problems: string[] = [];
  const p = structuredClone(raw) as Record<string, unknown>;
  if (typeof p !== "object" || p === null || Array.isArray(p))
    throw new HandsetError("invalid-board-profile", `${source}: not a JSON object`);
  applyEnv(p, env, problems);

  const obj = (v: unknown, where: string): Record<string, unknown> => {
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    problems.push(`${where} must be an object`);
    return {};
  };
  const int = (v: unknown, where: string, min: number, max: number): number => {
    if (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max) return v;
    problems.push(`${where} must be an integer in ${min}..${max} (got ${JSON.stringify(v)})`);
    return min;
  };
  const level = (v: unknown, where: string): Level => {
    if (v === 0 || v === 1) return v;
    problems.push(`${where} must be 0 or 1 (got ${JSON.stringify(v)})`);
    return 1;
  };
  const lines = (v: unknown, where: string): number[] => {
    if (!Array.isArray(v) || v.length === 0) {
      problems.push(`${where} must be a non-empty list of BCM line numbers`);
      return [];
    }
    return v.map((x, i) => int(x, `${where}[${i}]`, 0, MAX_BCM));
  };

  const gpio = obj(p["gpio"], "gpio");
  const labels = typeof gpio["chipLabel"] === "string" ? [gpio["chipLabel"]] : gpio["chipLabel"];
  if (!Array.isArray(labels) || labels.length === 0 || !labels.every((l) => typeof l === "string" && l))
    problems.push("gpio.chipLabel must be a label or a non-empty list of labels (e.g. pinctrl-bcm2711)");

  const kp = obj(p["keypad"], "keypad");
  const rows = lines(kp["rows"], "keypad.rows");
  const columns = lines(kp["columns"], "keypad.columns");
  const columnPull = kp["columnPull"] ?? "up";
  if (columnPull !== "up" && columnPull !== "down")
    problems.push(`keypad.columnPull must be "up" or "down" (got ${JSON.stringify(columnPull)})`);
  const scanIntervalMs = int(kp["scanIntervalMs"] ?? 5, "keypad.scanIntervalMs", 1, 100);
  const debounceMs = int(kp["debounceMs"] ?? 20, "keypad.debounceMs", 0, 1000);
  const longPressMs = int(kp["longPressMs"] ?? 800, "keypad.longPressMs", 1, 60_000);
  const keys: Array<Array<Key | null>> = [];
  if (!Array.isArray(kp["keys"])) problems.push("keypad.keys must be a table keys[row][column]");
  else {
    if (kp["keys"].length !== rows.length)
      problems.push(`keypad.keys has ${kp["keys"].length} rows but keypad.rows names ${rows.length} lines`);
    const seen = new Map<string, string>();
    kp["keys"].forEach((row: unknown, r: number) => {
      if (!Array.isArray(row) || row.length !== columns.length) {
        problems.push(
          `keypad.keys[${r}] must list ${columns.length} entries, one per column (key name or null)`,
        );
        keys.push([]);
        return;
      }
      keys.push(
        row.map((k: unknown, c: number) => {
          if (k === null) return null;
          if (typeof k !== "string" || !isKey(k)) {
            problems.push(`keypad.keys[${r}][${c}]: unknown key ${JSON.stringify(k)}`);
            return null;
          }
          const prev = seen.get(k);
          if (prev) problems.push(`keypad.keys[${r}][${c}]: key "${k}" already at ${prev}`);
          seen.set(k, `[${r}][${c}]`);
          return k;
        }),
      );
    });
  }

  const hk = obj(p["hook"], "hook");
  const hook = {
    line: int(hk["line"], "hook.line", 0, MAX_BCM),
    offHookLevel: level(hk["offHookLevel"] ?? 1, "hook.offHookLevel"),
    debounceMs: int(hk["debounceMs"] ?? 30, "hook.debounceMs", 0, 1000),
    pollMs: int(hk["pollMs"] ?? 5, "hook.pollMs", 1, 100),
  };

  const ld = obj(p["leds"], "leds");
  const led = (name: string): LedProfile => {
    const l = obj(ld[name], `leds.${name}`);
    return {
      line: int(l["line"], `leds.${name}.line`, 0, MAX_BCM),
      activeLevel: level(l["activeLevel"] ?? 1, `leds.${name}.activeLevel`),
    };
  };
  const leds = {
    blinkMs: int(ld["blinkMs"] ?? 500, "leds.blinkMs", 50, 10_000),
    messageWaiting: led("messageWaiting"),
    status: led("status"),
  };

  const dp = obj(p["display"], "display");
  const path = dp["path"] ?? "/dev/ttyAMA0";
  if (typeof path !== "string" || !path)
    problems.push("display.path must be a device path such as /dev/ttyAMA0");
  const baudRate = dp["baudRate"] ?? 19200;
  if (typeof baudRate !== "number" || !BAUD_RATES.includes(baudRate))
    problems.push(
      `display.baudRate must be one of ${BAUD_RATES.join(", ")} (got ${JSON.stringify(baudRate)})`,
    );
  const display = {
    path: String(path),
    baudRate: Number(baudRate),
    cols: int(dp["cols"] ?? 20, "display.cols", 1, 40),
    rows: int(dp["rows"] ?? 4, "display.rows", 1, 4),
    backpack: "matrix-orbital" as const,
  };
  if ((dp["backpack"] ?? "matrix-orbital") !== "matrix-orbital")
    problems.push(`display.backpack must be "matrix-orbital" (got ${JSON.stringify(dp["backpack"])})`);

  let audio: AlsaAudioProfile | undefined;
  if (p["audio"] !== undefined && p["audio"] !== null) {
    const au = obj(p["audio"], "audio");
    const name = (v: unknown, where: string, example: string): string => {
      if (typeof v === "string" && v.trim() !== "") return v;
      problems.push(`${where} must be ${example} (got ${JSON.stringify(v)})`);
      return "";
    };
    const capture = name(
      au["capture"],
      "audio.capture",
      'an ALSA PCM name from `arecord -L`, e.g. "plughw:CARD=Device,DEV=0"',
    );
    const playback = name(au["playback"] ?? capture, "audio.playback", "an ALSA PCM name from `aplay -L`");
    const rateHz = au["rateHz"] ?? DEFAULT_AUDIO_RATE;
    if (rateHz !== 8000 && rateHz !== 16000)
      problems.push(`audio.rateHz must be 8000 or 16000 (got ${JSON.stringify(rateHz)})`);
    audio = {
      capture,
      playback,
      rateHz: rateHz === 8000 ? 8000 : 16000,
      latencyMs: int(
        au["latencyMs"] ?? DEFAULT_AUDIO_LATENCY_MS,
        "audio.latencyMs",
        MIN_AUDIO_LATENCY_MS,
        MAX_AUDIO_LATENCY_MS,
      ),
      arecordPath: name(au["arecordPath"] ?? "arecord", "audio.arecordPath", "a program path"),
      aplayPath: name(au["aplayPath"] ?? "aplay", "audio.aplayPath", "a program path"),
    };
  }

  const used = new Map<number, string>();
  const claim = (line: number, what: string) => {
    const prev = used.get(line);
    if (prev) problems.push(`GPIO${line} is used twice: ${prev} and ${what}`);
    else used.set(line, what);
  };
  for (const [i, l] of rows.entries()) claim(l, `keypad.rows[${i}]`);
  for (const [i, l] of columns.entries()) claim(l, `keypad.columns[${i}]`);
  claim(hook.line, "hook.line");
  claim(leds.messageWaiting.line, "leds.messageWaiting.line");
  claim(leds.status.line, "leds.status.line");

  const name = typeof p["name"] === "string" ? p["name"] : "unnamed";
  if (problems.length)
    throw new HandsetError("invalid-board-profile", `${source} (${name}) is invalid: ${problems.join("; ")}`);
  return {
    name,
    gpio: { chipLabel: labels as string[] },
    keypad: {
      rows,
      columns,
      columnPull: columnPull as "up" | "down",
      scanIntervalMs,
      debounceMs,
      longPressMs,
      keys,
    },
    hook,
    leds,
    display,
    ...(audio ? { audio } : {}),
  };
}

function applyEnv(p: Record<string, unknown>, env: NodeJS.ProcessEnv, problems: string[]): void {
  const section = (name: string): Record<string, unknown> => {
    const v = p[name];
    if (typeof v === "object" && v !== null && !Array.isArray(v)) return v as Record<string, unknown>;
    const fresh: Record<string, unknown> = {};
    p[name] = fresh;
    return fresh;
  };
  const num = (name: string, text: string): number => {
    const n = Number(text.trim());
    if (text.trim() === "" || !Number.isFinite(n)) problems.push(`${name}="${text}" is not a number`);
    return n;
  };
  const list = (name: string, text: string): number[] | undefined => {
    const parts = text.split(",").map((t) => (t.trim() === "" ? Number.NaN : Number(t.trim())));
    if (parts.every(Number.isFinite)) return parts;
    problems.push(`${name}="${text}" must be a comma-separated list of BCM line numbers`);
    return undefined;
  };
  const e = (name: string): string | undefined =>
    env[name] === undefined || env[name] === "" ? undefined : env[name];

  const on = (name: string, apply: (text: string) => void) => {
    const text = e(name);
    if (text !== undefined) apply(text);
  };
  on("HANDSET_GPIO_CHIP_LABEL", (v) => {
    section("gpio")["chipLabel"] = v.split(",").map((s) => s.trim());
  });
  on("HANDSET_GPIO_ROWS", (v) => {
    const rows = list("HANDSET_GPIO_ROWS", v);
    if (rows) section("keypad")["rows"] = rows;
  });
  on("HANDSET_GPIO_COLUMNS", (v) => {
    const columns = list("HANDSET_GPIO_COLUMNS", v);
    if (columns) section("keypad")["columns"] = columns;
  });
  on("HANDSET_GPIO_COLUMN_PULL", (v) => {
    section("keypad")["columnPull"] = v.trim();
  });
  on("HANDSET_GPIO_HOOK", (v) => {
    section("hook")["line"] = num("HANDSET_GPIO_HOOK", v);
  });
  const leds = () => section("leds");
  const led = (name: string): Record<string, unknown> => {
    const l = leds()[name];
    if (typeof l === "object" && l !== null) return l as Record<string, unknown>;
    const fresh: Record<string, unknown> = {};
    leds()[name] = fresh;
    return fresh;
  };
  on("HANDSET_GPIO_LED_MWI", (v) => {
    led("messageWaiting")["line"] = num("HANDSET_GPIO_LED_MWI", v);
  });
  on("HANDSET_GPIO_LED_STATUS", (v) => {
    led("status")["line"] = num("HANDSET_GPIO_LED_STATUS", v);
  });
  on("HANDSET_LCD_PATH", (v) => {
    section("display")["path"] = v;
  });
  on("HANDSET_LCD_BAUD", (v) => {
    section("display")["baudRate"] = num("HANDSET_LCD_BAUD", v);
  });
  on("HANDSET_AUDIO_CAPTURE", (v) => {
    section("audio")["capture"] = v;
  });
  on("HANDSET_AUDIO_PLAYBACK", (v) => {
    section("audio")["playback"] = v;
  });
  on("HANDSET_AUDIO_RATE", (v) => {
    section("audio")["rateHz"] = num("HANDSET_AUDIO_RATE", v);
  });
  // Last, so that "off" wins over the names: a board whose handset is unplugged.
  on("HANDSET_AUDIO", (v) => {
    if (v.trim() === "off") delete p["audio"];
    else problems.push(`HANDSET_AUDIO="${v}" must be "off" (name the PCMs with HANDSET_AUDIO_CAPTURE)`);
  });
  on("HANDSET_LCD_SIZE", (v) => {
    const m = /^\s*(\d+)\s*x\s*(\d+)\s*$/i.exec(v);
    if (!m) problems.push(`HANDSET_LCD_SIZE="${v}" must look like 20x4 (columns x rows)`);
    else {
      section("display")["cols"] = Number(m[1]);
      section("display")["rows"] = Number(m[2]);
    }
  });
}
