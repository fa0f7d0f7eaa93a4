/**
 * `handset demo` (npm start): the lab pool + the phone + a simulated board, and `handset run
 * --config FILE`: the firmware on a real (pi) or simulated board. Every state change and every
 * display frame is an event (--json prints them one per line).
 */
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPiBoardFromEnvironment } from "../../board/pi/pi-board.ts";
import { attachTerminalView, createSimBoard, type SimBoard, startWebView } from "../../board/sim/index.ts";
import { HandsetError } from "../core/errors.ts";
import { createLogger, type Logger, silentLogger } from "../core/logger.ts";
import type { Board } from "../hal/board.ts";
import { type PhoneConfig, startPhone } from "../main.ts";
import { PHONE_STATES } from "../phone/lifecycle.ts";
import type { PhoneEvent } from "../phone/phone.ts";
import { SystemClock } from "../platform/system-clock.ts";
import type { InnerTls } from "../sip/tls-dsk/engine.ts";
import { hostPort, parseFlags, required } from "./args.ts";
import { loadLab } from "./lab.ts";
import type { Output } from "./output.ts";
import type { PhoneNetworkConfig } from "./phone-services.ts";

const STATES = new Set<string>(PHONE_STATES);

interface RunFlags {
  keys?: string;
  until?: string;
  timeoutS?: number;
  web?: number;
}

function phoneFlags(f: Record<string, string | boolean | undefined>): RunFlags {
  const until = typeof f["until"] === "string" ? f["until"] : undefined;
  if (until && !STATES.has(until))
    throw new HandsetError("usage", `--until must be one of ${[...STATES].join(", ")}`);
  const web = f["web"] !== undefined ? Number(f["web"]) : undefined;
  if (web !== undefined && (!Number.isInteger(web) || web < 0 || web > 65535))
    throw new HandsetError("usage", "--web must be a port number");
  const timeoutS = f["timeout"] !== undefined ? Number(f["timeout"]) : undefined;
  return {
    ...(typeof f["keys"] === "string" ? { keys: f["keys"] } : {}),
    ...(until ? { until } : {}),
    ...(timeoutS !== undefined ? { timeoutS } : {}),
    ...(web !== undefined ? { web } : {}),
  };
}

function logSink(out: Output, verbose: boolean): Logger {
  return verbose
    ? createLogger((r) =>
        out.event({ event: "log", level: r.level, category: r.category, message: r.message }),
      )
    : silentLogger;
}

/** Runs a phone on a board until --until is reached, the timeout passes, or a signal arrives. */
async function runPhone(
  out: Output,
  config: PhoneConfig,
  board: Board,
  sim: SimBoard | undefined,
  flags: RunFlags,
  logger: Logger,
): Promise<number> {
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
      setImmediate(() => sim.typeKeys(keys));
    }
    if (flags.until && e.state === flags.until) finish(0);
  };
  const running = await startPhone({ config, board, logger, onEvent });
  const timer =
    flags.timeoutS !== undefined
      ? setTimeout(() => {
          out.error(
            new HandsetError(
              "timeout",
              `The phone did not reach "${flags.until ?? "the end"}" in ${flags.timeoutS} s`,
            ),
          );
          finish(1);
        }, flags.timeoutS * 1000)
      : undefined;
  const onSignal = () => finish(0);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const code = await done;
  clearTimeout(timer);
  process.off("SIGINT", onSignal);
  process.off("SIGTERM", onSignal);
  await running.stop();
  for (const stop of views) await stop();
  return code;
}

export async function demoCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    site: { type: "string" },
    keys: { type: "string" },
    until: { type: "string" },
    timeout: { type: "string" },
    web: { type: "string" },
    "inner-tls": { type: "string" },
    store: { type: "string" },
    verbose: { type: "boolean" },
  });
  const flags = phoneFlags(f);
  const site = f["site"] === "hq" ? "hq" : "branch";
  const { startLab, phoneNetwork } = await loadLab();
  const lab = await startLab({ site });
  out.event({ ...lab.ready });
  try {
    const clock = new SystemClock();
    const sim = createSimBoard({ clock });
    const network: PhoneNetworkConfig = {
      ...phoneNetwork(lab.ready),
      innerTls: ((f["inner-tls"] as string) ?? "auto") as InnerTls,
      failbackProbeMs: 10_000,
    };
    const storeDir =
      typeof f["store"] === "string" ? f["store"] : await mkdtemp(join(tmpdir(), "handset-demo-"));
    const config: PhoneConfig = { storeDir, trustedRoots: [lab.ca.cert], network };
    return await runPhone(out, config, sim, sim, flags, logSink(out, f["verbose"] === true));
  } finally {
    await lab.stop();
  }
}

interface RunConfigFile {
  board: "pi" | "sim";
  storeDir: string;
  trustedRoots: string[];
  network: Omit<PhoneNetworkConfig, "dhcp" | "ntp" | "staticRegistrars"> & {
    dhcp?: { interface?: string; server?: string };
    ntp?: string;
    staticRegistrars?: string[];
  };
  utcOffsetMinutes?: number;
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
  let file: RunConfigFile;
  try {
    file = JSON.parse(await readFile(path, "utf8")) as RunConfigFile;
  } catch (err) {
    throw new HandsetError(
      "config-invalid",
      `Cannot read the configuration ${path}: ${(err as Error).message}`,
    );
  }
  if (file.board !== "pi" && file.board !== "sim")
    throw new HandsetError("config-invalid", 'board must be "pi" or "sim"');
  if (!file.storeDir || !Array.isArray(file.trustedRoots) || file.trustedRoots.length === 0)
    throw new HandsetError("config-invalid", "storeDir and trustedRoots (PEM file paths) are required");
  const trustedRoots = await Promise.all(file.trustedRoots.map((p) => readFile(p, "utf8")));
  const { dhcp: _d, ntp: _n, staticRegistrars: _s, ...rest } = file.network ?? {};
  const n = file.network ?? {};
  const network: PhoneNetworkConfig = {
    ...rest,
    ...(n.dhcp
      ? {
          dhcp: {
            ...(n.dhcp.interface ? { interface: n.dhcp.interface } : {}),
            ...(n.dhcp.server ? { server: hostPort(n.dhcp.server, "network.dhcp.server") } : {}),
          },
        }
      : {}),
    ...(n.ntp ? { ntp: hostPort(n.ntp, "network.ntp") } : {}),
    ...(n.staticRegistrars
      ? { staticRegistrars: n.staticRegistrars.map((r) => hostPort(r, "staticRegistrars")) }
      : {}),
  };
  const config: PhoneConfig = {
    storeDir: file.storeDir,
    trustedRoots,
    network,
    ...(file.utcOffsetMinutes !== undefined ? { utcOffsetMinutes: file.utcOffsetMinutes } : {}),
  };
  const logger = logSink(out, f["verbose"] === true);
  const clock = new SystemClock();
  if (file.board === "pi") {
    const board = await createPiBoardFromEnvironment({ clock, logger });
    return runPhone(out, config, board, undefined, phoneFlags(f), logger);
  }
  const sim = createSimBoard({ clock });
  return runPhone(out, config, sim, sim, phoneFlags(f), logger);
}
