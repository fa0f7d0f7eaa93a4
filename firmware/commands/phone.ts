/**
 * `handset run --config FILE`: the firmware on a real (pi) or simulated board, configured by a
 * validated file (firmware/config/). Every state change and every display frame is an event
 * (--json prints them one per line). The development demo (test/dev/) drives the same runPhone.
 */
import { readFile } from "node:fs/promises";
import { createPiBoardFromEnvironment } from "../../board/pi/pi-board.ts";
import { attachTerminalView, createSimBoard, type SimBoard, startWebView } from "../../board/sim/index.ts";
import { ConfigError } from "../config/parse.ts";
import { HandsetError } from "../core/errors.ts";
import { createLogger, type Logger, silentLogger } from "../core/logger.ts";
import type { Board } from "../hal/board.ts";
import { type PhoneConfig, phoneConfigFrom, startPhone } from "../main.ts";
import { PHONE_STATES } from "../phone/lifecycle.ts";
import type { PhoneEvent } from "../phone/phone.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { parseFlags, required } from "./args.ts";
import { loadConfigFile } from "./config.ts";
import type { Output } from "./output.ts";

const STATES = new Set<string>(PHONE_STATES);

export interface RunFlags {
  keys?: string;
  until?: string;
  timeoutS?: number;
  web?: number;
}

export function phoneFlags(f: Record<string, string | boolean | undefined>): RunFlags {
  const until = typeof f["until"] === "string" ? f["until"] : undefined;
  if (until && !STATES.has(until))
    throw new HandsetError("usage", `--until must be one of ${[...STATES].join(", ")}`);
  const web = f["web"] !== undefined ? Number(f["web"]) : undefined;
  if (web !== undefined && (!Number.isInteger(web) || web < 0 || web > 65535))
    throw new HandsetError("usage", "--web must be a port number");
  const timeoutS = f["timeout"] !== undefined ? Number(f["timeout"]) : undefined;
  if (timeoutS !== undefined && !(timeoutS > 0 && timeoutS <= 86_400))
    throw new HandsetError("usage", "--timeout must be a number of seconds (up to 86400)");
  return {
    ...(typeof f["keys"] === "string" ? { keys: f["keys"] } : {}),
    ...(until ? { until } : {}),
    ...(timeoutS !== undefined ? { timeoutS } : {}),
    ...(web !== undefined ? { web } : {}),
  };
}

/** With --verbose every log record is a `log` event, its fields included (they hold no secret). */
export function logSink(out: Output, verbose: boolean): Logger {
  return verbose
    ? createLogger((r) => {
        let fields: unknown;
        try {
          fields = r.fields ? JSON.parse(JSON.stringify(r.fields)) : undefined;
        } catch {
          fields = undefined; // a field JSON cannot carry (a cycle, a bigint): the message still goes out
        }
        out.event({
          event: "log",
          level: r.level,
          category: r.category,
          message: r.message,
          ...(fields !== undefined ? { fields } : {}),
        });
      })
    : silentLogger;
}

/** Runs a phone on a board until --until is reached, the timeout passes, or a signal arrives. */
export async function runPhone(
  out: Output,
  config: PhoneConfig,
  board: Board,
  sim: SimBoard | undefined,
  flags: RunFlags,
  logger: Logger,
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
  const onEvent = (e: PhoneEvent) => {
    if (e.event !== "display" || out.json || !process.stdout.isTTY) out.event(e);
    if (e.event !== "state") return;
    if (e.state === "sign-in-required" && sim && flags.keys && !keysTyped) {
      keysTyped = true;
      const keys = flags.keys;
      clock.setTimer(0, () => sim.typeKeys(keys));
    }
    if (flags.until && e.state === flags.until) finish(0);
  };
  const running = await startPhone({ config, board, logger, onEvent });
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
  await running.stop();
  for (const stop of views) await stop();
  return code;
}

export async function runCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    config: { type: "string" },
    keys: { type: "string" },
    until: { type: "string" },
    timeout: { type: "string" },
    web: { type: "string" },
    verbose: { type: "boolean" },
  });
  const path = required(f, "config");
  const file = await loadConfigFile(path);
  const trustedRoots = await Promise.all(
    file.trustedRoots.map(async (p) => {
      try {
        return await readFile(p, "utf8");
      } catch (err) {
        throw new ConfigError("trustedRoots", `cannot read ${p}: ${(err as Error).message}`).inFile(path);
      }
    }),
  );
  const config = phoneConfigFrom(file, trustedRoots);
  const logger = logSink(out, f["verbose"] === true);
  const clock = new SystemClock();
  if (file.board === "pi") {
    const board = await createPiBoardFromEnvironment({ clock, logger });
    return runPhone(out, config, board, undefined, phoneFlags(f), logger);
  }
  const sim = createSimBoard({ clock });
  return runPhone(out, config, sim, sim, phoneFlags(f), logger);
}
