/**
 * `handset run --config FILE`: the firmware on a real (pi) or simulated board, configured by a
 * validated file (firmware/config/). Every state change and every display frame is an event
 * (--json prints them one per line). The development demo (test/dev/) drives the same runPhone.
 */
import { createPiBoardFromEnvironment } from "../../board/pi/pi-board.ts";
import {
  attachTerminalView,
  createSimBoard,
  parseKeys,
  type SimBoard,
  startWebView,
} from "../../board/sim/index.ts";
import { ConfigError } from "../config/parse.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Board } from "../hal/board.ts";
import { type PhoneConfig, phoneConfigFrom, startPhone } from "../main.ts";
import { PHONE_STATES } from "../phone/lifecycle.ts";
import type { PhoneEvent } from "../phone/phone.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { createSystemdNotifier, type SystemdNotifier } from "../platform/systemd-notify.ts";
import { type ArgSpec, type CommandSpec, parseFlags, required, seconds, VERBOSE_FLAG } from "./args.ts";
import { loadConfigFile } from "./config.ts";
import { checkStoreDir, InputError, readTrustFile } from "./input-files.ts";
import { logSink, type Output } from "./output.ts";

const STATES = new Set<string>(PHONE_STATES);

export interface RunFlags {
  keys?: string;
  until?: string;
  timeoutS?: number;
  web?: number;
}

/** The flags of a phone run (`handset run`, and the demo's too). */
export const PHONE_FLAGS = {
  keys: {
    type: "string",
    arg: "KEYS",
    help: 'type these keys at sign-in: 0-9 * #, {name} for others ({soft1}, {ok}), e.g. "4711#1234#"',
  },
  until: {
    type: "string",
    arg: "STATE",
    help: `exit 0 once the phone reaches STATE (${PHONE_STATES.join(", ")})`,
  },
  timeout: { type: "string", arg: "S", help: "exit 1 if that has not happened after S seconds" },
  web: { type: "string", arg: "PORT", help: "serve the simulated phone as a web page on 127.0.0.1:PORT" },
  ...VERBOSE_FLAG,
} as const satisfies ArgSpec;

export function phoneFlags(f: Record<string, string | boolean | undefined>): RunFlags {
  const until = typeof f["until"] === "string" ? f["until"] : undefined;
  if (until !== undefined && !STATES.has(until))
    throw new HandsetError("usage", `--until must be one of ${[...STATES].join(", ")}; got "${until}"`);
  const webText = f["web"];
  const web =
    webText !== undefined ? (/^\d{1,5}$/.test(String(webText)) ? Number(webText) : Number.NaN) : undefined;
  if (web !== undefined && !(Number.isInteger(web) && web >= 0 && web <= 65535))
    throw new HandsetError("usage", `--web must be a port number (0 to 65535), got "${String(webText)}"`);
  const timeoutS = f["timeout"] !== undefined ? seconds(f, "timeout", 0) : undefined;
  const keys = typeof f["keys"] === "string" ? f["keys"] : undefined;
  if (keys !== undefined) {
    // Refused now, not when the phone first asks for them (after the network is up).
    try {
      parseKeys(keys);
    } catch (err) {
      throw new HandsetError("usage", `--keys: ${(err as Error).message} (keys: 0-9 * # {name})`);
    }
  }
  return {
    ...(keys !== undefined ? { keys } : {}),
    ...(until ? { until } : {}),
    ...(timeoutS !== undefined ? { timeoutS } : {}),
    ...(web !== undefined ? { web } : {}),
  };
}

export { logSink };

/** systemd's STATUS= for a state event: "registered sba.lab.test:5061", "failed: <reason>". */
function statusLine(e: Extract<PhoneEvent, { event: "state" }>): string {
  const where = e.registrar ? ` ${e.registrar}${e.primary === false ? " (backup)" : ""}` : "";
  return `${e.state}${where}${e.reason ? `: ${e.reason}` : ""}`;
}

/**
 * Runs a phone on a board until --until is reached, the timeout passes, or a signal arrives.
 * Under systemd (`systemd`, from createSystemdNotifier) the phone is READY=1 at its first state
 * (up and working, registered or not: a phone with the WAN down is a running service), reports
 * each state as STATUS=, pings the watchdog while it runs and says STOPPING=1 when it stops.
 */
export async function runPhone(
  out: Output,
  config: PhoneConfig,
  board: Board,
  sim: SimBoard | undefined,
  flags: RunFlags,
  logger: Logger,
  systemd?: SystemdNotifier,
): Promise<number> {
  // The command line's own deadline (--timeout) and keystrokes run on the system clock port too.
  const clock = new SystemClock();
  const views: Array<() => Promise<void> | void> = [];
  if (sim && flags.web !== undefined) {
    const view = await startWebView(sim, { port: flags.web });
    out.event({ event: "web", url: view.url });
    views.push(() => view.stop());
  }
  let finish!: (code: number) => void;
  const done = new Promise<number>((resolve) => {
    finish = resolve;
  });
  if (sim && !out.json && process.stdout.isTTY && process.stdin.isTTY) {
    const term = attachTerminalView(sim, {
      input: process.stdin,
      output: process.stdout,
      onExit: () => finish(0),
    });
    views.push(() => term.detach());
  }
  let keysTyped = false;
  let ready = false;
  const onEvent = (e: PhoneEvent) => {
    if (e.event !== "display" || out.json || !process.stdout.isTTY) out.event(e);
    if (e.event !== "state") return;
    if (ready) systemd?.status(statusLine(e));
    else systemd?.ready(statusLine(e));
    ready = true;
    if (e.state === "sign-in-required" && sim && flags.keys && !keysTyped) {
      keysTyped = true;
      const keys = flags.keys;
      clock.setTimer(0, () => sim.typeKeys(keys));
    }
    if (flags.until && e.state === flags.until) finish(0);
  };
  const running = await startPhone({ config, board, logger, onEvent });
  systemd?.startWatchdog();
  const timer =
    flags.timeoutS !== undefined
      ? clock.setTimer(flags.timeoutS * 1000, () => {
          out.error(
            new HandsetError(
              "timeout",
              `The phone did not reach "${flags.until ?? "the end"}" in ${flags.timeoutS} s`,
            ),
          );
          finish(1);
        })
      : undefined;
  const onSignal = () => finish(0);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const code = await done;
  timer?.cancel();
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  systemd?.stopping("stopping");
  await running.stop();
  for (const stop of views) await stop();
  await systemd?.close();
  return code;
}

export const RUN_SPEC = {
  summary: 'the firmware on a board (board "pi" or "sim" in the configuration file)',
  synopsis: ["--config FILE [flags]"],
  flags: {
    config: { type: "string", arg: "FILE", help: "the configuration (handset config --defaults lists it)" },
    ...PHONE_FLAGS,
  },
} as const satisfies CommandSpec;

/** The trusted roots a configuration names, each read and parsed: an error names the file. */
async function readTrustedRoots(paths: string[], configPath: string): Promise<string[]> {
  const roots: string[] = [];
  for (const p of paths) {
    try {
      roots.push(await readTrustFile(p, "trustedRoots"));
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      throw new ConfigError("trustedRoots", err.message.replace(/^trustedRoots /, "")).inFile(configPath);
    }
  }
  return roots;
}

export async function runCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, RUN_SPEC.flags);
  const path = required(f, "config");
  const flags = phoneFlags(f);
  const file = await loadConfigFile(path);
  const trustedRoots = await readTrustedRoots(file.trustedRoots, path);
  try {
    await checkStoreDir(file.storeDir, "storeDir");
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    throw new ConfigError("storeDir", err.message.replace(/^storeDir /, "")).inFile(path);
  }
  const config = phoneConfigFrom(file, trustedRoots);
  const logger = logSink(out, f["verbose"] === true);
  const clock = new SystemClock();
  // undefined unless systemd runs us (NOTIFY_SOCKET): then nothing is sent at all.
  const systemd = createSystemdNotifier(process.env, { logger: logger.child("systemd"), clock });
  if (file.board === "pi") {
    const board = await createPiBoardFromEnvironment({ clock, logger });
    return runPhone(out, config, board, undefined, flags, logger, systemd);
  }
  const sim = createSimBoard({ clock });
  return runPhone(out, config, sim, sim, flags, logger, systemd);
}
