/**
 * systemd's notify protocol (sd_notify(3)) for the phone's `Type=notify` service
 * (image/rootfs/etc/systemd/system/handset.service): READY=1, STATUS=…, WATCHDOG=1, STOPPING=1.
 *
 * Node has no AF_UNIX datagram socket, so each notification is one run of `systemd-notify`.
 * The unit's NotifyAccess=all lets the service manager accept a message from any process of the
 * unit's cgroup, which a child of ours is. The command line is chosen to work on both systemd 252
 * (Debian bookworm hosts) and 257 (the trixie image):
 *
 *   systemd-notify --pid=<our pid> KEY=VALUE…
 *
 * - Every field is a positional KEY=VALUE assignment, which every version takes: 252 has no
 *   --stopping (253+) and neither --exec nor --fd (254+); no --booted check (NOTIFY_SOCKET being
 *   set is the only question, and --booted would only ask about PID 1, not about us).
 * - --pid=<our pid> adds MAINPID=<our pid> (the unit's main process is the firmware even if a
 *   wrapper started it) and makes systemd-notify send the message on behalf of our pid: where the
 *   kernel allows faking the sender (root, CAP_SYS_ADMIN) the message is attributed to us, a
 *   process that outlives the child. Unprivileged, as the service runs (User=handset, no
 *   capabilities), libsystemd falls back to the child's own credentials, and then:
 * - no --no-block: systemd-notify waits on a barrier (BARRIER=1 with a pipe the manager closes
 *   once it has processed everything before it, 5 s at most). That keeps the child alive until
 *   systemd has attributed the message to the unit through the child's cgroup, which is the race
 *   systemd-notify(1) warns about (a short-lived sender that exits first is ignored even with
 *   NotifyAccess=all). 257 with a kernel that passes SCM_PIDFD would need it less; 252 needs it.
 *   (--exec, 254+, only matters for a shell script that execs its daemon afterwards.)
 *
 * Notifications never fork a storm nor reach into the phone: one systemd-notify runs at a time;
 * what is asked for meanwhile waits in one batch, where a newer STATUS replaces an older one and
 * WATCHDOG=1 is sent once; STOPPING=1 starts its own batch so that it follows an earlier READY=1.
 * A failure (no systemd-notify, a socket gone, a child that hangs) is logged once until a
 * notification succeeds again, and never thrown.
 *
 * The watchdog (WATCHDOG_USEC, for us only if WATCHDOG_PID is unset or ours) pings every
 * WATCHDOG_USEC/3 from a timer on the event loop: a blocked loop stops the pings, and systemd
 * restarts the phone. That is the point of it; no worker thread or child pings for us.
 */
import { type ChildProcess, spawn } from "node:child_process";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { type Logger, silentLogger } from "../core/logger.ts";
import { SystemClock } from "./system-clock.ts";

/** WATCHDOG_USEC outside this range is ignored: under 0.1 s would fork ten times a second. */
export const WATCHDOG_USEC_MIN = 100_000;
/** One day: anything longer is a typo, not a watchdog. */
export const WATCHDOG_USEC_MAX = 86_400_000_000;

/** How much longer than systemd-notify's own 5 s barrier a child may take before it is killed. */
const CHILD_TIMEOUT_MS = 10_000;
/** STATUS= text: one line (the protocol separates fields by newlines), of bounded length. */
const STATUS_MAX = 200;

export interface SystemdNotifierOptions {
  logger?: Logger;
  clock?: Clock;
  /** The program to run (default "systemd-notify", found on env.PATH). */
  command?: string;
  /** Our pid (default process.pid): sent as MAINPID and compared with WATCHDOG_PID. */
  pid?: number;
  /**
   * Wait for the service manager to have read each message (the default, see the file comment).
   * false adds --no-block: only for a receiver that does not answer barriers (a test peer).
   */
  barrier?: boolean;
  /** A child still running after this long is killed (default 10 s). */
  childTimeoutMs?: number;
}

export interface SystemdNotifier {
  /** READY=1 (with STATUS= when given): the service is up. */
  ready(status?: string): void;
  /** STATUS=<text>; a burst of them sends only the last. */
  status(text: string): void;
  /** One WATCHDOG=1. */
  watchdog(): void;
  /** STOPPING=1 (with STATUS= when given): a clean stop has begun. */
  stopping(status?: string): void;
  /** The watchdog ping period, or undefined when systemd asked for no watchdog (or an absurd one). */
  readonly watchdogIntervalMs: number | undefined;
  /** Pings now and then every watchdogIntervalMs; false (and nothing) when there is no watchdog. */
  startWatchdog(): boolean;
  stopWatchdog(): void;
  /** Resolves once everything asked for has been sent (or has failed). */
  flush(): Promise<void>;
  /**
   * Stops the watchdog, lets queued notifications go out for up to timeoutMs (default 6 s, more
   * than systemd-notify's barrier), then kills a child still waiting. Later calls do nothing.
   */
  close(timeoutMs?: number): Promise<void>;
  /** Children run and failures seen (diagnostics, tests). */
  stats(): { spawned: number; failures: number };
}

type Watchdog = { intervalMs: number } | { ignored: string } | undefined;

/** The watchdog systemd asks of `pid`, as sd_watchdog_enabled(3) reads the environment. */
export function watchdogFromEnv(env: NodeJS.ProcessEnv, pid: number): Watchdog {
  const usecText = env["WATCHDOG_USEC"];
  if (usecText === undefined || usecText === "") return undefined;
  const pidText = env["WATCHDOG_PID"];
  if (pidText !== undefined && pidText !== "") {
    if (!/^\d{1,10}$/.test(pidText)) return { ignored: `WATCHDOG_PID "${pidText}" is not a pid` };
    if (Number(pidText) !== pid) return undefined; // meant for another process (a wrapper, a parent)
  }
  if (!/^\d{1,20}$/.test(usecText)) return { ignored: `WATCHDOG_USEC "${usecText}" is not a number` };
  const usec = Number(usecText);
  if (usec < WATCHDOG_USEC_MIN || usec > WATCHDOG_USEC_MAX)
    return {
      ignored: `WATCHDOG_USEC ${usecText} is outside ${WATCHDOG_USEC_MIN}..${WATCHDOG_USEC_MAX} µs`,
    };
  return { intervalMs: Math.floor(usec / 3 / 1000) };
}

/** One printable line: control characters (newlines above all) become spaces. */
function oneLine(text: string): string {
  const line = text.replace(/[\u0000-\u001f\u007f]+/g, " ").trim();
  return line.length > STATUS_MAX ? `${line.slice(0, STATUS_MAX - 1)}…` : line;
}

/**
 * The notifier for this process, or undefined when it does not run under a service manager
 * that wants notifications (NOTIFY_SOCKET unset or empty): then nothing is ever spawned.
 */
export function createSystemdNotifier(
  env: NodeJS.ProcessEnv = process.env,
  o: SystemdNotifierOptions = {},
): SystemdNotifier | undefined {
  const socket = env["NOTIFY_SOCKET"];
  if (!socket) return undefined;
  const logger = o.logger ?? silentLogger;
  const clock = o.clock ?? new SystemClock();
  const command = o.command ?? "systemd-notify";
  const pid = o.pid ?? process.pid;
  const childTimeoutMs = o.childTimeoutMs ?? CHILD_TIMEOUT_MS;
  const flags = [`--pid=${pid}`, ...(o.barrier === false ? ["--no-block"] : [])];
  // Only what systemd-notify needs: where to send, and where to find itself.
  const childEnv = { NOTIFY_SOCKET: socket, PATH: env["PATH"] ?? process.env["PATH"] ?? "/usr/bin:/bin" };

  const wd = watchdogFromEnv(env, pid);
  if (wd && "ignored" in wd) logger.warn("systemd watchdog ignored", { reason: wd.ignored });
  const watchdogIntervalMs = wd && "intervalMs" in wd ? wd.intervalMs : undefined;

  /** Waiting notifications, oldest first; the last batch takes new fields. */
  const batches: Array<Map<string, string>> = [];
  let child: ChildProcess | undefined;
  let closing = false;
  let closed = false;
  let failing = false;
  let spawned = 0;
  let failures = 0;
  let watchdogTimer: TimerHandle | undefined;
  let idle: Array<() => void> = [];

  const ask = (fields: Array<[string, string]>, ownBatch = false) => {
    if (closed) return;
    let batch = batches.at(-1);
    if (!batch || ownBatch) {
      batch = new Map();
      batches.push(batch);
    }
    for (const [k, v] of fields) batch.set(k, v);
    pump();
  };

  const succeeded = () => {
    if (failing) logger.info("systemd notifications work again");
    failing = false;
  };

  const failed = (reason: string) => {
    failures++;
    if (!failing) logger.warn("systemd notification failed (logged once until one succeeds)", { reason });
    failing = true;
  };

  function pump(): void {
    if (child) return;
    const batch = batches.shift();
    if (!batch) {
      const waiting = idle;
      idle = [];
      for (const resolve of waiting) resolve();
      return;
    }
    const args = [...flags, ...[...batch].map(([k, v]) => `${k}=${v}`)];
    let proc: ChildProcess;
    try {
      proc = spawn(command, args, { env: childEnv, stdio: ["ignore", "ignore", "pipe"] });
    } catch (err) {
      failed(`could not run ${command}: ${(err as Error).message}`);
      pump();
      return;
    }
    spawned++;
    child = proc;
    let stderr = "";
    proc.stderr?.setEncoding("utf8");
    proc.stderr?.on("data", (text: string) => {
      if (stderr.length < 1000) stderr += text;
    });
    const guard = clock.setTimer(childTimeoutMs, () => proc.kill("SIGKILL"));
    let settled = false;
    const settle = (failure: string | undefined) => {
      if (settled) return;
      settled = true;
      guard.cancel();
      child = undefined;
      if (closed) {
        // close() killed it on purpose, or it finished after all: nothing to report.
      } else if (failure) failed(failure);
      else succeeded();
      pump();
    };
    proc.once("error", (err) => settle(`could not run ${command}: ${err.message}`));
    proc.once("close", (code, signal) => {
      const why = stderr.trim().split("\n")[0] ?? "";
      settle(
        code === 0
          ? undefined
          : `${command} ${signal ? `killed by ${signal}` : `exited with ${code}`}${why ? `: ${why}` : ""}`,
      );
    });
  }

  const flush = () =>
    !child && batches.length === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          idle.push(resolve);
        });

  const stopWatchdog = () => {
    watchdogTimer?.cancel();
    watchdogTimer = undefined;
  };

  const notifier: SystemdNotifier = {
    ready: (status) => ask([["READY", "1"], ...(status !== undefined ? [statusField(status)] : [])]),
    status: (text) => ask([statusField(text)]),
    watchdog: () => ask([["WATCHDOG", "1"]]),
    stopping: (status) =>
      ask([["STOPPING", "1"], ...(status !== undefined ? [statusField(status)] : [])], true),
    watchdogIntervalMs,
    startWatchdog() {
      if (watchdogIntervalMs === undefined || closing) return false;
      if (watchdogTimer) return true;
      const tick = () => {
        watchdogTimer = clock.setTimer(watchdogIntervalMs, tick);
        notifier.watchdog();
      };
      tick();
      return true;
    },
    stopWatchdog,
    flush,
    async close(timeoutMs = 6_000) {
      if (closing) return;
      closing = true;
      stopWatchdog();
      let timer: TimerHandle | undefined;
      await Promise.race([
        flush(),
        new Promise<void>((resolve) => {
          timer = clock.setTimer(timeoutMs, resolve);
        }),
      ]);
      timer?.cancel();
      closed = true;
      batches.length = 0;
      child?.kill("SIGKILL");
    },
    stats: () => ({ spawned, failures }),
  };
  return notifier;
}

function statusField(text: string): [string, string] {
  return ["STATUS", oneLine(text)];
}
