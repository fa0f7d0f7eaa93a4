/**
 * `handset run --config FILE`: the firmware on a real (pi) or simulated board, configured by a
 * validated file (firmware/config/). Every state change and every display frame is an event
 * (--json prints them one per line). The development demo (test/dev/) drives the same runPhone.
 */
import { readFile } from "node:fs/promises";
import { hostname, networkInterfaces } from "node:os";
import { createPiBoardFromEnvironment } from "../../board/pi/pi-board.ts";
import {
  attachTerminalView,
  createSimBoard,
  parseKeys,
  type SimBoard,
  startWebView,
} from "../../board/sim/index.ts";
import type { HandsetConfig, OptionName } from "../config/options.ts";
import { ConfigError } from "../config/parse.ts";
import { HandsetError } from "../core/errors.ts";
import { createLogger, type Logger, type LogLevel } from "../core/logger.ts";
import type { Board } from "../hal/board.ts";
import { type PhoneConfig, phoneConfigFrom, type RunningPhone, startPhone } from "../main.ts";
import { PHONE_STATES } from "../phone/lifecycle.ts";
import type { PhoneEvent } from "../phone/phone.ts";
import { readBootInfo } from "../platform/boot-control.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { nodeFileSystem } from "../platform/file-system.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { createSystemdNotifier, type SystemdNotifier } from "../platform/systemd-notify.ts";
import type { FleetSettings } from "../telemetry/fleet-agent.ts";
import type { MqttPort } from "../telemetry/mqtt-port.ts";
import { atLeast, RecentLog } from "../telemetry/recent-log.ts";
import { type ArgSpec, type CommandSpec, parseFlags, required, seconds, VERBOSE_FLAG } from "./args.ts";
import { loadConfigFile } from "./config.ts";
import { type FleetLink, type FleetOverlay, loadFleetOverlay, startFleetLink } from "./fleet-link.ts";
import { fleetUpdates } from "./fleet-update.ts";
import { openStore } from "./identity.ts";
import { checkStoreDir, InputError, readTrustFile } from "./input-files.ts";
import { logEventSink, logSink, type Output } from "./output.ts";
import { type PhoneNetworkConfig, VERSION } from "./phone-services.ts";

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

/** Where the phone's log records go: the command line (at a level the fleet may change) and memory. */
export interface PhoneLogging {
  logger: Logger;
  /** The last records, for the fleet's `diagnostics`. */
  recent: RecentLog;
  setLevel(level: LogLevel): void;
}

/**
 * The phone's logger: every record at info or above is kept in memory (redacted) for the fleet's
 * `diagnostics`; records at `level` or above are written as `log` events (all with --verbose;
 * none when `level` is undefined, as the demo runs).
 */
export function phoneLogging(out: Output, o: { verbose: boolean; level?: LogLevel }): PhoneLogging {
  const clock = new SystemClock();
  const recent = new RecentLog({ capacity: 200, now: () => clock.now() });
  const write = logEventSink(out);
  let level: LogLevel | undefined = o.verbose ? "debug" : o.level;
  return {
    logger: createLogger((r) => {
      recent.sink(r);
      if (level !== undefined && atLeast(r.level, level)) write(r);
    }),
    recent,
    setLevel: (l) => {
      level = o.verbose ? "debug" : l;
    },
  };
}

/** The device id in flash (a damaged store: the host's name, until a sign-in writes a new record). */
async function flashDeviceId(storeDir: string, logger: Logger): Promise<string> {
  try {
    return (await openStore(storeDir, new CryptoRandom()).loadOrCreate()).deviceId;
  } catch (err) {
    logger.warn("no device id in flash; the fleet uses the host name", { code: (err as HandsetError).code });
    return (
      hostname()
        .replace(/[^A-Za-z0-9._-]/g, "-")
        .slice(0, 64) || "handset"
    );
  }
}

/** The fleet connection of a phone run: settings without the device id when flash names it. */
export interface PhoneFleet {
  settings: Omit<FleetSettings, "deviceId"> & { deviceId?: string };
  /** The A/B slot running, where the image says. */
  slot?: string;
  /** The first trustedRoots file: what an https update server is checked against. */
  updateCa?: string;
  /** Test seam: the MQTT edge (default: MQTT.js). */
  port?: MqttPort;
}

/**
 * The remote configuration's idle values on top of a phone's configuration (the options with
 * `remote: "idle"` in firmware/config/options.ts; a value of undefined is the file's own).
 */
export function withFleetOverlay(base: PhoneConfig, overlay: FleetOverlay): PhoneConfig {
  const v = overlay.values;
  const network: PhoneNetworkConfig = { ...base.network };
  if ("network.staticRegistrars" in v) {
    const r = v["network.staticRegistrars"] as Array<{ host: string; port: number }> | undefined;
    if (r) network.staticRegistrars = r;
  }
  if ("network.failbackProbeMs" in v) {
    const ms = v["network.failbackProbeMs"] as number | undefined;
    if (ms !== undefined) network.failbackProbeMs = ms;
  }
  const utc = v["utcOffsetMinutes"] as number | undefined;
  return { ...base, network, ...(utc !== undefined ? { utcOffsetMinutes: utc } : {}) };
}

/**
 * Runs a phone on a board until --until is reached, the timeout passes, or a signal arrives.
 * Under systemd (`systemd`, from createSystemdNotifier) the phone is READY=1 at its first state
 * (up and working, registered or not: a phone with the WAN down is a running service), reports
 * each state as STATUS=, pings the watchdog while it runs and says STOPPING=1 when it stops.
 * With `fleet` the phone also reports to and takes commands from an MQTT broker (fleet-link.ts);
 * that link outlives the phone core, which it may restart to apply a configuration.
 */
export async function runPhone(
  out: Output,
  config: PhoneConfig,
  board: Board,
  sim: SimBoard | undefined,
  flags: RunFlags,
  logger: Logger,
  systemd?: SystemdNotifier,
  extras: { fleet?: PhoneFleet; logging?: PhoneLogging } = {},
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
  let link: FleetLink | undefined;
  let screen: string[] = [];
  const onEvent = (e: PhoneEvent) => {
    if (e.event !== "display" || out.json || !process.stdout.isTTY) out.event(e);
    if (e.event === "display") screen = e.lines;
    link?.onPhoneEvent(e);
    // A call ending (or the dial screen closing) may be the idle moment deferred fleet commands
    // and idle configuration wait for: the link only looks again on state changes otherwise.
    if (e.event === "call" && (e.state === "idle" || e.state === "ended")) link?.agent.idleChanged();
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
  const onCertificate = (e: { type: string }) => link?.onCertificate(e);
  const fleet = extras.fleet;
  const overlay = fleet ? await loadFleetOverlay(config.storeDir, logger) : { values: {} };
  // The fleet's name for the phone: the device id in flash, created now on a first boot (before
  // the phone core opens the store, so that only one of them ever creates the record).
  const deviceId = fleet ? (fleet.settings.deviceId ?? (await flashDeviceId(config.storeDir, logger))) : "";
  let running: RunningPhone | undefined = await startPhone({
    config: withFleetOverlay(config, overlay),
    board,
    logger,
    onEvent,
    onCertificate,
  });
  /** A core restart (a configuration applied at idle, or a reboot outside systemd): the board stays. */
  let restarting: Promise<void> = Promise.resolve();
  let current = overlay;
  const restartCore = (next: FleetOverlay, reason: string): Promise<void> => {
    current = next;
    restarting = restarting.then(async () => {
      const old = running;
      if (!old) return;
      logger.info("restarting the phone core", { reason });
      running = undefined;
      await old.stop({ keepBoard: true });
      running = await startPhone({
        config: withFleetOverlay(config, next),
        board,
        logger,
        onEvent,
        onCertificate,
        boardStarted: true,
      });
    });
    return restarting;
  };
  if (fleet) {
    const first = running;
    link = await startFleetLink({
      settings: { ...fleet.settings, deviceId },
      storeDir: config.storeDir,
      clock: first.clock,
      random: new CryptoRandom(),
      logger,
      version: VERSION,
      core: () => running,
      screen: () => screen,
      ...(extras.logging ? { recentLog: extras.logging.recent, setLogLevel: extras.logging.setLevel } : {}),
      ...(fleet.slot ? { slot: fleet.slot } : {}),
      ...(fleet.port ? { port: fleet.port } : {}),
      // On an A/B image the phone can ask the root installer for an update (fleet-update.ts).
      ...(fleet.slot
        ? {
            updates: fleetUpdates({
              storeDir: config.storeDir,
              fs: nodeFileSystem,
              random: new CryptoRandom(),
              phoneClock: { now: () => (running ?? first).clock.now() },
              osClock: clock,
              ...(fleet.updateCa ? { ca: fleet.updateCa } : {}),
            }),
          }
        : {}),
      restartCore,
      // Under systemd a reboot is the service's restart (Restart=always): a fresh process.
      reboot: () => {
        if (systemd) finish(0);
        else void restartCore(current, "reboot").catch(() => {});
      },
    });
    // The state events of the boot so far (the link started after the core).
    link.onPhoneEvent({ event: "state", state: first.phone.state });
  }
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
  await restarting.catch(() => {});
  await running?.stop();
  // A clean stop says so on the retained state ("offline"), unlike a crash (the will: "lost").
  await link?.stop({ clean: true });
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

/** The fleet settings a configuration file asks for (mqtt.brokers set), its files read. */
async function fleetFromConfig(
  file: HandsetConfig,
  path: string,
  trustedRoots: string[],
): Promise<PhoneFleet | undefined> {
  const brokers = file["mqtt.brokers"];
  if (!brokers) return undefined;
  const username = file["mqtt.username"];
  const passwordFile = file["mqtt.passwordFile"];
  const certFile = file["mqtt.cert"];
  const keyFile = file["mqtt.key"];
  if (!(username && passwordFile) && !(certFile && keyFile))
    throw new ConfigError(
      "mqtt.brokers",
      "needs mqtt.username with mqtt.passwordFile, or mqtt.cert with mqtt.key: the phone never connects to a broker anonymously",
    ).inFile(path);
  if ((username === undefined) !== (passwordFile === undefined))
    throw new ConfigError("mqtt.username", "mqtt.username and mqtt.passwordFile go together").inFile(path);
  const read = async (key: OptionName, p: string, secret: boolean): Promise<string> => {
    try {
      const text = await readFile(p, "utf8");
      return secret ? (text.split(/\r?\n/)[0] ?? "") : text;
    } catch (err) {
      throw new ConfigError(
        key,
        `cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      ).inFile(path);
    }
  };
  const id = file["mqtt.deviceId"];
  if (id === "org" || id === "site")
    throw new ConfigError(
      "mqtt.deviceId",
      `"${id}" is reserved (PREFIX/${id}/… holds shared desired configuration)`,
    ).inFile(path);
  const caFile = file["mqtt.ca"];
  let slot: string | undefined;
  // Under handset.service's sandbox /proc/cmdline and the device tree are hidden: root's
  // boot-facts (image/rootfs/usr/lib/handset) hands the boot partition over in the environment.
  const facts = process.env["HANDSET_BOOT_PARTITION"];
  if (facts === "2" || facts === "3") slot = facts === "2" ? "a" : "b";
  else
    try {
      slot = (await readBootInfo()).bootPartition === 2 ? "a" : "b";
    } catch {
      slot = undefined; // not an A/B image (a development machine)
    }
  return {
    settings: {
      brokers,
      prefix: file["mqtt.prefix"],
      ...(file["mqtt.deviceId"] ? { deviceId: file["mqtt.deviceId"] } : {}),
      ...(file["mqtt.site"] ? { site: file["mqtt.site"] } : {}),
      ...(username && passwordFile
        ? { username, password: await read("mqtt.passwordFile", passwordFile, true) }
        : {}),
      ca: caFile ? [await read("mqtt.ca", caFile, false)] : trustedRoots,
      ...(certFile && keyFile
        ? { cert: await read("mqtt.cert", certFile, false), key: await read("mqtt.key", keyFile, true) }
        : {}),
      keepaliveS: file["mqtt.keepaliveS"],
      commands: file["mqtt.commands"],
      outboxSize: file["mqtt.outboxSize"],
      outboxRatePerS: file["mqtt.outboxRatePerS"],
      intervalS: file["telemetry.intervalS"],
    },
    ...(slot ? { slot } : {}),
    ...(file.trustedRoots[0]?.startsWith("/") ? { updateCa: file.trustedRoots[0] } : {}),
  };
}

/**
 * media.address unset: the first non-loopback IPv4 address, which on a desk phone with one
 * Ethernet port is the one the registrar reaches. Loopback when there is none (a lab on one host).
 */
function firstIpv4Address(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
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
  const config = phoneConfigFrom(file, trustedRoots, firstIpv4Address());
  const fleet = await fleetFromConfig(file, path, trustedRoots);
  const logging = phoneLogging(out, { verbose: f["verbose"] === true, level: file["log.level"] });
  const logger = logging.logger;
  const clock = new SystemClock();
  // undefined unless systemd runs us (NOTIFY_SOCKET): then nothing is sent at all.
  const systemd = createSystemdNotifier(process.env, { logger: logger.child("systemd"), clock });
  const extras = { logging, ...(fleet ? { fleet } : {}) };
  if (file.board === "pi") {
    const board = await createPiBoardFromEnvironment({ clock, logger });
    return runPhone(out, config, board, undefined, flags, logger, systemd, extras);
  }
  const sim = createSimBoard({ clock });
  return runPhone(out, config, sim, sim, flags, logger, systemd, extras);
}
