/**
 * The fleet under load (issue 11), for `npm run bench` and for test/fleet/load.test.ts: N phone
 * cores (FleetAgent, each on its own MQTT.js connection through createMqttPort, its own device id,
 * user and password, a trivial FleetDevice and an in-memory outbox) in this one process, against
 * one real mosquitto with a password file (one user per phone) and the site ACL, plain TCP on
 * loopback.
 *
 * - connects/s and messages/s run on the real clock: every phone connects at once, as fast as
 *   the broker takes them; then QoS 1 events go through the agents' outboxes to one subscriber in
 *   another process (mosquitto_sub), and this process's CPU time is divided by the messages;
 * - the restart storm (restartStorm) runs every phone on ONE ManualClock, so the spread of the
 *   returns is the product's own distribution, not this machine's speed: time moves in small
 *   steps, and only once the wire is quiet (no CONNECT, SUBSCRIBE or PUBLISH waiting for the
 *   broker), so "per second" is per simulated second.
 *
 * The broker logs connections but not every packet (its debug lines would cost this process more
 * CPU reading them than the phones spend on the messages). Figures are printed, never asserted.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import mqtt from "mqtt";
import type { Clock } from "../firmware/core/clock.ts";
import { ManualClock } from "../firmware/core/clock.ts";
import { createLogger, type LogRecord } from "../firmware/core/logger.ts";
import type { Random } from "../firmware/core/random.ts";
import { SeededRandom } from "../firmware/core/random.ts";
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { createMqttPort } from "../firmware/platform/mqtt-connection.ts";
import { SystemClock } from "../firmware/platform/system-clock.ts";
import { FleetAgent, type FleetDevice, type FleetSettings } from "../firmware/telemetry/fleet-agent.ts";
import type { MqttConnection, MqttPort, MqttPublishOptions } from "../firmware/telemetry/mqtt-port.ts";
import type { OutboxSnapshot, OutboxStore } from "../firmware/telemetry/outbox.ts";
import {
  hasMosquitto,
  MOSQUITTO_MISSING,
  MOSQUITTO_SUB,
  type Mosquitto,
  type MosquittoUser,
  siteAcl,
  startMosquitto,
} from "../test/support/mosquitto.ts";

export const FLEET_PREFIX = "handset/v1";
/**
 * The broker's keep-alive runs on real time, the phones' pings on simulated time: 60 s (the
 * product's default is 30) keeps the two from crossing when this machine is slow to connect a
 * thousand phones (mosquitto would drop a phone after 90 real seconds without a ping).
 */
export const FLEET_KEEPALIVE_S = 60;
const SITE = "load";
/** Fds this process needs besides one per phone: node itself, the broker's pipes, subscribers. */
const FD_MARGIN = 200;

const ACL = siteAcl(FLEET_PREFIX);

/**
 * Connections and notices logged, not every packet (log_type none resets the helper's "all");
 * the restart helper waits for the "running" line, which is information. A subscriber that gets
 * a thousand retained states at once must not hit the default queue of 1 000 QoS 1 messages.
 */
const QUIET_BROKER = [
  "log_type none",
  "log_type error",
  "log_type warning",
  "log_type notice",
  "log_type information",
  "max_queued_messages 1000000",
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const turn = () => new Promise<void>((r) => setImmediate(r));

async function until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

export function phoneId(i: number): string {
  return `phone-${String(i).padStart(4, "0")}`;
}

/** This process's soft limit on open files (Node 20 has no getrlimit: /proc/self/limits). */
export function openFileLimit(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s{2,}/)[1];
    if (soft === undefined) return undefined;
    return soft === "unlimited" ? Number.POSITIVE_INFINITY : Number(soft);
  } catch {
    return undefined;
  }
}

/** Why this process cannot hold `phones` connections, or undefined when it can. */
export function fdShortfall(phones: number): string | undefined {
  const limit = openFileLimit();
  const need = phones + FD_MARGIN;
  if (limit === undefined) return undefined; // not Linux: let the connections tell
  if (limit >= need) return undefined;
  return `the open-file limit is ${limit}, below the ${need} that ${phones} MQTT connections need (one fd each, plus ${FD_MARGIN}; mosquitto inherits the same limit): raise it, e.g. ulimit -n ${Math.max(4096, need)}`;
}

export interface FleetBroker {
  broker: Mosquitto;
  phones: number;
  /** The phone's user (= its device id and client id) and password. */
  user(i: number): MosquittoUser;
  operator: MosquittoUser;
}

/** One mosquitto with a user per phone (mosquitto_passwd -U hashes them all in one go) and the ACL. */
export async function startFleetBroker(phones: number): Promise<FleetBroker> {
  const users = Array.from({ length: phones }, (_, i) => ({
    username: phoneId(i),
    password: randomBytes(12).toString("hex"),
  }));
  const operator = { username: "operator", password: randomBytes(12).toString("hex") };
  const broker = await startMosquitto({ users: [...users, operator], acl: ACL, extraConfig: QUIET_BROKER });
  return { broker, phones, user: (i) => users[i]!, operator };
}

/** The flash store, in memory: the snapshot is a fresh copy already (Outbox.snapshot()). */
class MemoryStore implements OutboxStore {
  private saved: OutboxSnapshot | undefined;
  async load(): Promise<OutboxSnapshot | undefined> {
    return this.saved;
  }
  async save(s: OutboxSnapshot): Promise<void> {
    this.saved = s;
  }
}

/** A registered phone that does nothing else. */
function loadDevice(i: number, clock: Clock): FleetDevice {
  const started = clock.monotonic();
  return {
    state: () => ({
      state: "registered",
      registrar: "pool.lab.test:5061",
      primary: true,
      limited: false,
      uri: `sip:${4000 + i}@lab.test`,
      firmware: { version: "0.1.0", slot: "a" },
      uptimeS: Math.floor((clock.monotonic() - started) / 1000),
      addresses: { ip: `10.${(i >> 8) & 255}.${i & 255}.10` },
    }),
    isIdle: () => true,
    run: async () => ({}),
    applyConfig: async () => {},
  };
}

/** What is on the wire, waiting for the broker, over all phones. */
export interface Wire {
  connecting: number;
  publishing: number;
  subscribing: number;
  attempts: number;
  failedConnects: number;
}

/** The port and its connections, counting what waits for the broker (nothing else changes). */
function trackedPort(inner: MqttPort, wire: Wire): MqttPort {
  const counted = <T>(key: "publishing" | "subscribing", run: () => Promise<T>): Promise<T> => {
    wire[key]++;
    return Promise.resolve()
      .then(run)
      .finally(() => {
        wire[key]--;
      });
  };
  // Delegates to the edge's connection (its keepaliveS getter and anything the port grows
  // later), only publish and subscribe counted.
  const wrap = (c: MqttConnection): MqttConnection =>
    Object.assign(Object.create(c) as MqttConnection, {
      publish: (topic: string, payload: string, o: MqttPublishOptions) =>
        counted("publishing", () => c.publish(topic, payload, o)),
      subscribe: (filters: string[], qos: 0 | 1) => counted("subscribing", () => c.subscribe(filters, qos)),
    });
  return {
    connect: async (o) => {
      wire.connecting++;
      wire.attempts++;
      try {
        return wrap(await inner.connect(o));
      } catch (err) {
        wire.failedConnects++;
        throw err;
      } finally {
        wire.connecting--;
      }
    },
  };
}

/** N phone cores on one clock, each with its own connection, seen through their status emitters. */
export class PhoneFleet {
  readonly agents: FleetAgent[] = [];
  readonly wire: Wire = { connecting: 0, publishing: 0, subscribing: 0, attempts: 0, failedConnects: 0 };
  /** warn/error log records of agents and edges, by code. */
  readonly problems = new Map<string, number>();
  private readonly up = new Set<number>();
  private readonly listeners = new Set<(i: number, at: number) => void>();

  constructor(o: {
    fleet: FleetBroker;
    phones: number;
    clock: Clock;
    random: (i: number) => Random;
    settings?: Partial<FleetSettings>;
  }) {
    const sink = (r: LogRecord) => {
      if (r.level !== "warn" && r.level !== "error") return;
      const code = typeof r.fields?.["code"] === "string" ? (r.fields["code"] as string) : r.message;
      this.problems.set(code, (this.problems.get(code) ?? 0) + 1);
    };
    const logger = createLogger(sink);
    for (let i = 0; i < o.phones; i++) {
      const user = o.fleet.user(i);
      const agent = new FleetAgent({
        clock: o.clock,
        random: o.random(i),
        logger,
        port: trackedPort(createMqttPort({ logger }), this.wire),
        settings: {
          brokers: [o.fleet.broker.url],
          prefix: FLEET_PREFIX,
          deviceId: user.username,
          site: SITE,
          username: user.username,
          password: user.password,
          keepaliveS: FLEET_KEEPALIVE_S,
          commands: ["ping"],
          outboxSize: 1_000,
          outboxRatePerS: 20,
          intervalS: 300,
          ...o.settings,
        },
        device: loadDevice(i, o.clock),
        store: new MemoryStore(),
      });
      agent.status.on((s) => {
        if (s.state !== "connected") {
          this.up.delete(i);
          return;
        }
        this.up.add(i);
        const at = o.clock.monotonic();
        for (const l of this.listeners) l(i, at);
      });
      this.agents.push(agent);
    }
  }

  /** Phones whose latest status is "connected". */
  get connected(): number {
    return this.up.size;
  }

  /** Every "connected" status from now on, with the clock's monotonic time. */
  onConnected(fn: (i: number, at: number) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  start(): Promise<void> {
    return Promise.all(this.agents.map((a) => a.start())).then(() => undefined);
  }

  /** CONNECTs, SUBSCRIBEs and PUBLISHes still waiting for the broker. */
  busy(): number {
    return this.wire.connecting + this.wire.publishing + this.wire.subscribing;
  }

  /**
   * Real time passes until nothing waits for the broker (a timer that fired may have started a
   * connect only after the outbox's save: the first turn lets that happen). False on the cap.
   */
  async settle(capMs = 60_000): Promise<boolean> {
    await turn();
    const end = Date.now() + capMs;
    while (this.busy() > 0) {
      if (Date.now() > end) return false;
      await sleep(2);
    }
    await turn();
    return true;
  }

  /** Forced stops (the will fires): the quickest way to close a thousand connections. */
  async stop(): Promise<void> {
    await Promise.race([Promise.all(this.agents.map((a) => a.stop())), sleep(30_000)]);
  }

  problemCounts(): Record<string, number> {
    return Object.fromEntries([...this.problems.entries()].sort((a, b) => b[1] - a[1]));
  }
}

/**
 * Simulated time in steps of stepMs, each followed by real time until the wire is quiet, while
 * `more()` holds and at most maxMs. Returns the simulated milliseconds it moved.
 */
export async function runSimulated(
  clock: ManualClock,
  fleet: PhoneFleet,
  o: { stepMs: number; maxMs: number; more: () => boolean },
): Promise<number> {
  let moved = 0;
  await fleet.settle();
  while (o.more() && moved < o.maxMs) {
    clock.advance(o.stepMs);
    moved += o.stepMs;
    await fleet.settle();
  }
  return moved;
}

export interface RetainedStates {
  /** Messages mosquitto_sub printed (it stops at the expected count or after its timeout). */
  messages: number;
  /** Distinct PREFIX/DEVICE/state topics with the retain flag set. */
  retained: number;
  /** Of those, how many say what (registered, lost, offline…). */
  byState: Record<string, number>;
  /** Retained states whose device id is one of this fleet's. */
  fleetPhones: number;
  birthSeq: { min: number; max: number };
}

/**
 * A fresh, independent subscriber (mosquitto_sub, MQTT v5, as the operator) on PREFIX/+/state:
 * what the broker retains, as a dashboard starting now would see it.
 */
export function retainedStates(fb: FleetBroker, timeoutS = 30): Promise<RetainedStates> {
  const b = fb.broker;
  const args = [
    ...["-V", "mqttv5", "-h", b.host, "-p", String(b.port), "-i", `load-sub-${process.pid}-${Date.now()}`],
    ...["-u", fb.operator.username, "-P", fb.operator.password],
    ...["-t", `${FLEET_PREFIX}/+/state`, "-q", "1", "-F", "%r %t %p"],
    ...["-C", String(fb.phones), "-W", String(timeoutS)],
  ];
  const child = spawn(MOSQUITTO_SUB, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (t: string) => {
    out += t;
  });
  child.stderr.resume();
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", () => {
      const lines = out.split("\n").filter((l) => l.length > 0);
      const states = new Map<string, { state: string; birthSeq: number }>();
      for (const line of lines) {
        const [flag, topic, ...rest] = line.split(" ");
        if (flag !== "1" || topic === undefined) continue;
        try {
          const p = JSON.parse(rest.join(" ")) as { state?: unknown; birthSeq?: unknown };
          states.set(topic, {
            state: typeof p.state === "string" ? p.state : "?",
            birthSeq: typeof p.birthSeq === "number" ? p.birthSeq : Number.NaN,
          });
        } catch {
          states.set(topic, { state: "unparsable", birthSeq: Number.NaN });
        }
      }
      const byState: Record<string, number> = {};
      for (const s of states.values()) byState[s.state] = (byState[s.state] ?? 0) + 1;
      const ids = new Set(Array.from({ length: fb.phones }, (_, i) => `${FLEET_PREFIX}/${phoneId(i)}/state`));
      const seqs = [...states.values()].map((s) => s.birthSeq);
      resolve({
        messages: lines.length,
        retained: states.size,
        byState,
        fleetPhones: [...states.keys()].filter((t) => ids.has(t)).length,
        birthSeq: { min: Math.min(...seqs), max: Math.max(...seqs) },
      });
    });
  });
}

export interface RestartReport {
  phones: number;
  connected_before_restart: number;
  /** Simulated seconds the first connections took (0 when the broker took them all at once). */
  initial_connect_sim_s: number;
  initial_connect_wall_ms: number;
  connect_attempts_before_restart: number;
  retained_before_restart: RetainedStates;
  still_connected_after_keepalive: number;
  disconnected_by_restart: number;
  restart_wall_ms: number;
  reconnected: number;
  reconnections: number;
  first_reconnect_s: number;
  last_reconnect_s: number;
  /** Reconnections per simulated second after the restart, index = second. */
  per_second: number[];
  worst_second: number;
  worst_second_share: number;
  connected_at_end: number;
  recovery_wall_ms: number;
  retained_after_restart: RetainedStates;
  /** warn/error log codes of agents and edges over the whole run. */
  problems: Record<string, number>;
}

/**
 * Every phone connects (simulated time moving only to let failed attempts retry), stays up for
 * a keep-alive (so that the connection counts as established), then the broker stops (SIGTERM)
 * and starts again on the same port. The returns are counted per simulated second from the
 * moment of the restart, from each agent's "connected" status.
 */
export async function restartStorm(o: {
  phones: number;
  seed?: number;
  stepMs?: number;
}): Promise<RestartReport> {
  const phones = o.phones;
  const stepMs = o.stepMs ?? 250;
  const fb = await startFleetBroker(phones);
  const clock = new ManualClock(Date.now());
  // Seeded in the test (the histogram is then reproducible), the kernel's CSPRNG in the bench.
  const fleet = new PhoneFleet({
    fleet: fb,
    phones,
    clock,
    random: (i) => (o.seed !== undefined ? new SeededRandom(o.seed + i) : new CryptoRandom()),
  });
  try {
    const t0 = performance.now();
    await fleet.start();
    const initialSimMs = await runSimulated(clock, fleet, {
      stepMs,
      maxMs: 300_000,
      more: () => fleet.connected < phones,
    });
    const initialWallMs = performance.now() - t0;
    const connectedBefore = fleet.connected;
    const attemptsBefore = fleet.wire.attempts;
    const retainedBefore = await retainedStates(fb);
    // Up for longer than a keep-alive: the agent treats the loss as one of an established link.
    await runSimulated(clock, fleet, {
      stepMs: 1_000,
      maxMs: (FLEET_KEEPALIVE_S + 5) * 1_000,
      more: () => true,
    });
    const stillConnected = fleet.connected;

    const mark = clock.monotonic();
    const arrivals: number[] = [];
    const back = new Set<number>();
    fleet.onConnected((i, at) => {
      arrivals.push(at - mark);
      back.add(i);
    });
    const t1 = performance.now();
    await fb.broker.stop();
    // Every phone sees its socket close before the broker is back (simulated time stands still).
    await until(() => fleet.connected === 0, 30_000);
    const disconnected = phones - fleet.connected;
    await fb.broker.restart();
    const restartWallMs = performance.now() - t1;
    const t2 = performance.now();
    await runSimulated(clock, fleet, { stepMs, maxMs: 120_000, more: () => back.size < phones });
    // A few more seconds: a phone that came back only to drop again would show here.
    await runSimulated(clock, fleet, { stepMs, maxMs: 5_000, more: () => true });
    const recoveryWallMs = performance.now() - t2;
    const retainedAfter = await retainedStates(fb);

    const perSecond: number[] = [];
    for (const a of arrivals) {
      const s = Math.floor(a / 1000);
      while (perSecond.length <= s) perSecond.push(0);
      perSecond[s]!++;
    }
    const worst = perSecond.length > 0 ? Math.max(...perSecond) : 0;
    return {
      phones,
      connected_before_restart: connectedBefore,
      initial_connect_sim_s: initialSimMs / 1000,
      initial_connect_wall_ms: Math.round(initialWallMs),
      connect_attempts_before_restart: attemptsBefore,
      retained_before_restart: retainedBefore,
      still_connected_after_keepalive: stillConnected,
      disconnected_by_restart: disconnected,
      restart_wall_ms: Math.round(restartWallMs),
      reconnected: back.size,
      reconnections: arrivals.length,
      first_reconnect_s: arrivals.length > 0 ? Math.min(...arrivals) / 1000 : Number.NaN,
      last_reconnect_s: arrivals.length > 0 ? Math.max(...arrivals) / 1000 : Number.NaN,
      per_second: perSecond,
      worst_second: worst,
      worst_second_share: worst / phones,
      connected_at_end: fleet.connected,
      recovery_wall_ms: Math.round(recoveryWallMs),
      retained_after_restart: retainedAfter,
      problems: fleet.problemCounts(),
    };
  } finally {
    await fleet.stop();
    await fb.broker.dispose();
  }
}

/** mosquitto_sub on every phone's event topic, counting what arrives (one short line each). */
function eventSubscriber(fb: FleetBroker): {
  received(): number;
  ready(): Promise<boolean>;
  stop(): void;
} {
  const b = fb.broker;
  const probe = `${FLEET_PREFIX}/_bench/probe`;
  const child: ChildProcess = spawn(
    MOSQUITTO_SUB,
    [
      ...["-V", "mqttv5", "-h", b.host, "-p", String(b.port), "-i", `bench-sub-${process.pid}`],
      ...["-u", fb.operator.username, "-P", fb.operator.password],
      ...["-t", `${FLEET_PREFIX}/+/event`, "-t", probe, "-q", "1", "-F", "%t"],
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let events = 0;
  let probed = false;
  let tail = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (t: string) => {
    const lines = (tail + t).split("\n");
    tail = lines.pop() ?? "";
    for (const l of lines) {
      if (l === probe) probed = true;
      else if (l.endsWith("/event")) events++;
    }
  });
  child.stderr!.resume();
  return {
    received: () => events,
    // Subscribed = a probe published after it has come back (no debug log to read it from).
    ready: async () => {
      const op = await mqtt.connectAsync(b.url, {
        protocolVersion: 5,
        username: fb.operator.username,
        password: fb.operator.password,
        reconnectPeriod: 0,
      });
      try {
        const end = Date.now() + 10_000;
        while (!probed && Date.now() < end) {
          await op.publishAsync(probe, "probe", { qos: 1 });
          await until(() => probed, 200);
        }
        return probed;
      } finally {
        await op.endAsync();
      }
    },
    stop: () => {
      child.kill("SIGTERM");
    },
  };
}

const round = (v: number, digits = 1) => Math.round(v * 10 ** digits) / 10 ** digits;

/** connects/s, messages/s and CPU per message on the real clock. */
async function realClockFigures(phones: number, eventsPerPhone: number): Promise<Record<string, unknown>> {
  const fb = await startFleetBroker(phones);
  const clock = new SystemClock();
  // Unthrottled outboxes (1 000/s, the maximum): the figure is the pipe's, not the limiter's.
  const fleet = new PhoneFleet({
    fleet: fb,
    phones,
    clock,
    random: () => new CryptoRandom(),
    settings: { outboxRatePerS: 1_000, outboxSize: Math.max(1_000, eventsPerPhone) },
  });
  const out: Record<string, unknown> = {};
  try {
    const t0 = performance.now();
    await fleet.start();
    const all = await until(() => fleet.connected === phones, 180_000);
    const connectS = (performance.now() - t0) / 1000;
    out["connect"] = {
      connected: fleet.connected,
      all_connected: all,
      wall_s: round(connectS, 2),
      connects_per_s: round(fleet.connected / connectS),
      attempts: fleet.wire.attempts,
      failed_attempts: fleet.wire.failedConnects,
    };
    await fleet.settle();

    const sub = eventSubscriber(fb);
    try {
      if (!(await sub.ready())) {
        out["messages"] = "not measured: the subscriber never saw its probe";
        return out;
      }
      const total = fleet.agents.length * eventsPerPhone;
      const cpu0 = process.cpuUsage();
      const w0 = performance.now();
      for (let k = 0; k < eventsPerPhone; k++) for (const a of fleet.agents) a.event("bench.tick", { k });
      const complete = await until(() => sub.received() >= total, 180_000);
      const wallS = (performance.now() - w0) / 1000;
      const cpu = process.cpuUsage(cpu0);
      const cpuMs = (cpu.user + cpu.system) / 1000;
      const received = sub.received();
      out["messages"] = {
        qos: 1,
        sent: total,
        received,
        complete,
        wall_s: round(wallS, 2),
        messages_per_s: round(received / wallS),
        cpu_ms: round(cpuMs),
        cpu_us_per_message: round((cpuMs * 1000) / Math.max(1, received), 2),
        note: "CPU of this (phone-side) process only; broker and subscriber run in their own processes",
      };
    } finally {
      sub.stop();
    }
    out["problems"] = fleet.problemCounts();
  } finally {
    await fleet.stop();
    await fb.broker.dispose();
  }
  return out;
}

/**
 * `npm run bench` → "fleet". BENCH_FLEET_PHONES (default 1000), BENCH_FLEET_EVENTS (QoS 1 events
 * per phone for messages/s, default 30).
 */
export async function benchFleet(
  phones = Number(process.env["BENCH_FLEET_PHONES"] ?? 1000),
  eventsPerPhone = Number(process.env["BENCH_FLEET_EVENTS"] ?? 30),
): Promise<Record<string, unknown>> {
  if (!hasMosquitto) return { status: "not measured: mosquitto missing", hint: MOSQUITTO_MISSING };
  const short = fdShortfall(phones);
  if (short) return { status: `not measured: ${short}` };
  const out: Record<string, unknown> = { phones, keepalive_s: FLEET_KEEPALIVE_S };
  Object.assign(out, await realClockFigures(phones, eventsPerPhone));
  const r = await restartStorm({ phones });
  out["restart"] = {
    reconnected: r.reconnected,
    reconnections: r.reconnections,
    first_reconnect_s: r.first_reconnect_s,
    last_reconnect_s: r.last_reconnect_s,
    worst_second: r.worst_second,
    worst_second_share: r.worst_second_share,
    per_second: r.per_second,
    recovery_wall_ms: r.recovery_wall_ms,
    retained_after_restart: r.retained_after_restart.retained,
    problems: r.problems,
    note: "simulated seconds from the restart; spread U(0, reconnectSpreadMs) drawn from the kernel's CSPRNG",
  };
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchFleet();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  process.exit(0);
}
