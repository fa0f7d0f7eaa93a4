/**
 * Issue 10: the phone's notifications to systemd (firmware/platform/systemd-notify.ts), sent by
 * the real systemd-notify to a real datagram receiver: socat bound to a NOTIFY_SOCKET of our own
 * (`socat -u -v UNIX-RECV:<tmp>/notify.sock -`; -v dumps each datagram with its length, so the
 * test sees message boundaries). socat does not answer systemd-notify's barrier, so the tests of
 * what arrives use `barrier: false` (--no-block); one test shows that the production command
 * line does ask for the barrier, and that a manager which never answers it does not hang us.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createSimBoard } from "../../board/sim/index.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { runPhone } from "../../firmware/commands/phone.ts";
import { createLogger, type LogRecord, silentLogger } from "../../firmware/core/logger.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import {
  createSystemdNotifier,
  type SystemdNotifier,
  type SystemdNotifierOptions,
  watchdogFromEnv,
} from "../../firmware/platform/systemd-notify.ts";

const hasSocat = !spawnSync("socat", ["-V"]).error;
const hasNotify = !spawnSync("systemd-notify", ["--version"]).error;
const CI = process.env.CI === "true";
const MISSING = [hasSocat ? "" : "socat", hasNotify ? "" : "systemd-notify"].filter(Boolean).join(" and ");

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits (up to 5 s) until `ok()` holds. */
async function until(ok: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !ok(); i++) await sleep(10);
}

/** socat receiving on a datagram socket; each message as its fields (KEY → VALUE). */
interface Peer {
  path: string;
  messages: Array<Map<string, string>>;
  stop(): void;
}

const HEADER = /^> [^\n]*length=(\d+) from=\d+ to=\d+\n/;

async function startPeer(path: string): Promise<Peer> {
  const proc: ChildProcess = spawn("socat", ["-u", "-v", `UNIX-RECV:${path}`, "-"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  const messages: Array<Map<string, string>> = [];
  let buffer = "";
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (text: string) => {
    buffer += text;
    for (let m = HEADER.exec(buffer); m; m = HEADER.exec(buffer)) {
      const length = Number(m[1]);
      if (buffer.length < m[0].length + length) break;
      const body = buffer.slice(m[0].length, m[0].length + length);
      buffer = buffer.slice(m[0].length + length);
      messages.push(new Map(body.split("\n").map((l) => [l.split("=")[0]!, l.slice(l.indexOf("=") + 1)])));
    }
  });
  for (let i = 0; i < 300 && !existsSync(path); i++) await sleep(10);
  if (!existsSync(path)) throw new Error(`socat did not bind ${path}`);
  return { path, messages, stop: () => proc.kill() };
}

let dir: string;
let peer: Peer;
const notifiers: SystemdNotifier[] = [];

function capture() {
  const records: LogRecord[] = [];
  return { records, logger: createLogger((r) => records.push(r)) };
}

function notifier(env: NodeJS.ProcessEnv, o: SystemdNotifierOptions = {}): SystemdNotifier {
  const n = createSystemdNotifier({ PATH: process.env.PATH, ...env }, { barrier: false, ...o });
  if (!n) throw new Error("expected a notifier");
  notifiers.push(n);
  return n;
}

/** Everything sent has been received: with --no-block each child sends exactly one datagram. */
async function delivered(n: SystemdNotifier): Promise<void> {
  await n.flush();
  await until(() => peer.messages.length >= n.stats().spawned);
}

const statuses = () => peer.messages.filter((m) => m.has("STATUS")).map((m) => m.get("STATUS"));
const pings = () => peer.messages.filter((m) => m.get("WATCHDOG") === "1").length;

describe.skipIf(MISSING !== "" && !CI)("systemd notifications to a real socket (socat)", () => {
  beforeAll(async () => {
    if (MISSING) throw new Error(`${MISSING} not installed (apt-get install socat systemd)`);
    dir = await mkdtemp(join(tmpdir(), "handset-notify-"));
  });
  afterEach(async () => {
    for (const n of notifiers.splice(0)) await n.close(100);
    peer?.stop();
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const fresh = async (name: string) => {
    peer = await startPeer(join(dir, `${name}.sock`));
    return peer.path;
  };

  it("without NOTIFY_SOCKET there is no notifier at all, so nothing is ever spawned", () => {
    expect(createSystemdNotifier({ PATH: process.env.PATH })).toBeUndefined();
    expect(createSystemdNotifier({ NOTIFY_SOCKET: "", WATCHDOG_USEC: "300000" })).toBeUndefined();
  });

  it("READY=1 (with its STATUS) arrives, then the next STATUS, each naming our pid as MAINPID", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("ready") });
    n.ready("booting");
    n.status("registered sba.lab.test:5061");
    await delivered(n);
    expect(peer.messages.map((m) => Object.fromEntries(m))).toEqual([
      { MAINPID: String(process.pid), READY: "1", STATUS: "booting" },
      { MAINPID: String(process.pid), STATUS: "registered sba.lab.test:5061" },
    ]);
    expect(n.stats()).toEqual({ spawned: 2, failures: 0 });
  });

  it("a burst of 50 status updates runs two processes, and the last status wins", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("burst") });
    for (let i = 0; i < 50; i++) n.status(`state ${i}`);
    await delivered(n);
    expect(n.stats().spawned).toBe(2);
    expect(statuses()).toEqual(["state 0", "state 49"]);
  });

  it("a status is one line: a newline cannot smuggle in another field", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("oneline") });
    n.status("failed: boom\nREADY=1");
    await delivered(n);
    expect(peer.messages.map((m) => Object.fromEntries(m))).toEqual([
      { MAINPID: String(process.pid), STATUS: "failed: boom READY=1" },
    ]);
  });

  it("WATCHDOG=1 arrives every WATCHDOG_USEC/3 from a timer, and stops with stopWatchdog()", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("watchdog"), WATCHDOG_USEC: "300000" });
    expect(n.watchdogIntervalMs).toBe(100);
    expect(n.startWatchdog()).toBe(true);
    const t0 = performance.now();
    await until(() => pings() >= 4);
    expect(pings()).toBeGreaterThanOrEqual(4);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(250); // periodic, not a burst
    n.stopWatchdog();
    await delivered(n);
    const stopped = pings();
    await sleep(300);
    expect(pings()).toBe(stopped);
  });

  it("a blocked event loop stops the pings (they come from the loop, not from a child)", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("blocked"), WATCHDOG_USEC: "300000" });
    n.startWatchdog();
    await until(() => pings() >= 2);
    await delivered(n);
    const before = pings();
    // Six ping periods with the loop busy: no timer runs, so no ping goes out. Afterwards the
    // overdue timer fires once (and a child already running at the start may land one more).
    const end = performance.now() + 600;
    while (performance.now() < end) {
      // blocked
    }
    await sleep(30);
    expect(pings() - before).toBeLessThanOrEqual(2);
  });

  it("absurd WATCHDOG_USEC values are ignored (with a warning); WATCHDOG_PID of another process means no watchdog", async () => {
    const socket = await fresh("absurd");
    for (const usec of ["0", "1", "99999", "-300000", "abc", "1e6", "300000.5", "99999999999999999999"]) {
      const { logger, records } = capture();
      const n = notifier({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: usec }, { logger });
      expect(n.watchdogIntervalMs, usec).toBeUndefined();
      expect(n.startWatchdog()).toBe(false);
      expect(records.map((r) => r.message)).toEqual(["systemd watchdog ignored"]);
    }
    const pid = 4242;
    expect(watchdogFromEnv({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "4243" }, pid)).toBeUndefined();
    expect(watchdogFromEnv({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "4242" }, pid)).toEqual({
      intervalMs: 10_000,
    });
    expect(watchdogFromEnv({ WATCHDOG_USEC: "30000000" }, pid)).toEqual({ intervalMs: 10_000 });
    expect(watchdogFromEnv({}, pid)).toBeUndefined();
    const other = notifier({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: "300000", WATCHDOG_PID: "1" });
    expect(other.startWatchdog()).toBe(false);
    await sleep(150);
    expect(peer.messages).toEqual([]);
  });

  it("failures are logged once and never thrown into the phone", async () => {
    const { logger, records } = capture();
    // A socket that is gone: systemd-notify itself fails (exit 1, "Failed to notify init system").
    const n = notifier({ NOTIFY_SOCKET: join(dir, "gone.sock") }, { logger });
    n.ready("booting");
    n.status("discovering");
    await n.flush();
    n.status("registered");
    await n.flush();
    expect(n.stats()).toMatchObject({ failures: 3 });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      level: "warn",
      fields: { reason: expect.stringContaining("exited") },
    });
    // No such program at all.
    const missing = notifier({ NOTIFY_SOCKET: join(dir, "gone.sock") }, { logger, command: "/nonexistent" });
    missing.ready();
    await missing.flush();
    expect(missing.stats().failures).toBe(1);
    expect(records).toHaveLength(2);
  });

  it("STOPPING=1 follows READY=1 as its own message, and close() sends what is queued", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("stopping") });
    n.ready("booting");
    n.status("registered");
    n.stopping("stopping");
    await n.close();
    await until(() => peer.messages.length >= 3);
    expect(peer.messages.map((m) => [m.get("READY"), m.get("STOPPING"), m.get("STATUS")])).toEqual([
      ["1", undefined, "booting"],
      [undefined, undefined, "registered"],
      [undefined, "1", "stopping"],
    ]);
    n.status("after close"); // ignored, no throw
    await sleep(50);
    expect(peer.messages).toHaveLength(3);
  });

  it("the production command line waits on systemd's barrier; close() does not hang on a manager that never answers", async () => {
    const { logger, records } = capture();
    const n = createSystemdNotifier(
      { PATH: process.env.PATH, NOTIFY_SOCKET: await fresh("barrier") },
      { logger },
    )!;
    n.ready("booting");
    for (let i = 0; i < 100 && peer.messages.length < 2; i++) await sleep(10);
    // The message, then systemd-notify's BARRIER=1 (its pipe: socat keeps it open, systemd closes it).
    expect(peer.messages.map((m) => Object.fromEntries(m))).toEqual([
      { MAINPID: String(process.pid), READY: "1", STATUS: "booting" },
      { BARRIER: "1" },
    ]);
    n.status("discovering"); // waits behind the child that waits on the barrier
    const t0 = performance.now();
    await n.close(100);
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(records).toEqual([]);
  });

  it("handset run's phone: READY=1 at its first state, STATUS= for each, the watchdog while it runs, STOPPING=1 at the end", async () => {
    const n = notifier({ NOTIFY_SOCKET: await fresh("phone"), WATCHDOG_USEC: "300000" });
    const lines: string[] = [];
    const out = createOutput(
      true,
      (l) => lines.push(l),
      () => {},
    );
    const board = createSimBoard({ clock: new SystemClock() });
    // No DHCP, DNS or static registrar: the phone starts, finds nothing and says so ("failed",
    // retrying). It is still a running service, so READY=1 came at its first state already.
    const storeDir = await mkdtemp(join(dir, "store-"));
    const code = await runPhone(
      out,
      { storeDir, trustedRoots: [], network: {} },
      board,
      board,
      { until: "failed", timeoutS: 10 },
      silentLogger,
      n,
    );
    expect(code).toBe(0);
    await until(() => peer.messages.length >= n.stats().spawned);
    const fields = peer.messages.map((m) => Object.fromEntries(m));
    expect(fields[0]).toEqual({ MAINPID: String(process.pid), READY: "1", STATUS: "booting" });
    expect(fields.filter((m) => m.READY)).toHaveLength(1);
    expect(fields.at(-1)).toMatchObject({ STOPPING: "1", STATUS: "stopping" });
    expect(fields.some((m) => m.WATCHDOG === "1")).toBe(true);
    // The states the phone reported, coalesced where they came in a burst.
    const failed = fields.find((m) => m.STATUS?.startsWith("failed: "));
    expect(failed?.STATUS).toBe("failed: discovery-failed");
    expect(n.watchdogIntervalMs).toBe(100);
  });
});
