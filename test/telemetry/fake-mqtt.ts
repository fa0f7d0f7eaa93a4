/**
 * A scripted MqttPort for the fleet agent's unit tests: it records every CONNECT, publish and
 * subscription, lets a test deliver messages, drop a connection, refuse or stall a CONNECT, or
 * make the broker go silent. Keep-alive is simulated through the agent's own timer
 * (MqttConnectOptions.timer): each ping is answered with a packet unless the broker is silent.
 * Also here: an in-memory OutboxStore and helpers to run a ManualClock with the promises between.
 */
import { FLEET_COMMANDS } from "../../firmware/config/options.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  type DeviceState,
  FleetAgent,
  type FleetDevice,
  type FleetSettings,
  type FleetStatus,
} from "../../firmware/telemetry/fleet-agent.ts";
import type {
  MqttConnection,
  MqttConnectOptions,
  MqttIncoming,
  MqttPort,
  MqttPublishOptions,
} from "../../firmware/telemetry/mqtt-port.ts";
import type { OutboxSnapshot, OutboxStore } from "../../firmware/telemetry/outbox.ts";
import { fleetTopics } from "../../firmware/telemetry/topics.ts";

export interface Published {
  topic: string;
  payload: string;
  o: MqttPublishOptions;
  /** Index of the connection it went out on. */
  conn: number;
  /** The clock's monotonic time when it went out. */
  at: number;
}

type Step = { kind: "accept" } | { kind: "refuse"; code: string } | { kind: "hang" };

export class FakeConnection implements MqttConnection {
  readonly publishes: Published[] = [];
  readonly subscriptions: string[][] = [];
  closed: { force: boolean; by: "client" | "broker" } | undefined;
  /** When false, QoS 1 publishes wait for ack() (one at a time, in order). */
  autoAck = true;
  /** The broker answers nothing: no PINGRESP, no PUBACK (publishes wait). */
  silent = false;
  /** Reject publishes to topics matching this with mqtt-refused (a broker ACL). */
  refuseTopic: RegExp | undefined;
  private readonly waiting: Array<{ resolve: () => void; reject: (e: unknown) => void }> = [];
  private messageHandler: ((m: MqttIncoming) => void) | undefined;
  private packetHandler: (() => void) | undefined;
  private closeHandler: ((reason: string) => void) | undefined;
  private pingTimer: number | undefined;

  constructor(
    readonly options: MqttConnectOptions,
    readonly index: number,
    readonly all: Published[],
    private readonly now: () => number,
  ) {
    this.pingTimer = options.timer.set(() => this.ping(), options.keepaliveS * 1000);
  }

  get open(): boolean {
    return this.closed === undefined;
  }

  publish(topic: string, payload: string, o: MqttPublishOptions): Promise<void> {
    if (!this.open) return Promise.reject(new HandsetError("mqtt-closed", "connection closed"));
    const p: Published = { topic, payload, o, conn: this.index, at: this.now() };
    this.publishes.push(p);
    this.all.push(p);
    if (this.refuseTopic?.test(topic))
      return Promise.reject(new HandsetError("mqtt-refused", "not authorised (PUBACK 0x87)"));
    if (!this.silent && (this.autoAck || o.qos === 0)) {
      this.packet();
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** Acknowledges the oldest publish waiting for its PUBACK. */
  ack(): void {
    this.silent = false;
    const w = this.waiting.shift();
    if (!w) throw new Error("nothing waits for a PUBACK");
    this.packet();
    w.resolve();
  }

  get unacked(): number {
    return this.waiting.length;
  }

  subscribe(filters: string[], _qos: 0 | 1): Promise<number[]> {
    if (!this.open) return Promise.reject(new HandsetError("mqtt-closed", "connection closed"));
    this.subscriptions.push([...filters]);
    this.packet();
    return Promise.resolve(filters.map(() => 1));
  }

  onMessage(handler: (m: MqttIncoming) => void): void {
    if (this.messageHandler) throw new Error("onMessage set twice on one connection");
    this.messageHandler = handler;
  }

  onPacket(handler: () => void): void {
    if (this.packetHandler) throw new Error("onPacket set twice on one connection");
    this.packetHandler = handler;
  }

  onClose(handler: (reason: string) => void): void {
    if (this.closeHandler) throw new Error("onClose set twice on one connection");
    this.closeHandler = handler;
  }

  close(force = false): Promise<void> {
    this.end({ force, by: "client" }, force ? "destroyed" : "disconnect");
    return Promise.resolve();
  }

  /** The broker (or the network) ends the connection. */
  drop(reason = "connection reset"): void {
    this.end({ force: true, by: "broker" }, reason);
  }

  /** A message from the broker. */
  deliver(m: Omit<Partial<MqttIncoming>, "payload"> & { topic: string; payload?: Buffer | string }): void {
    if (!this.open) throw new Error("deliver on a closed connection");
    this.packet();
    const payload = typeof m.payload === "string" ? Buffer.from(m.payload) : (m.payload ?? Buffer.alloc(0));
    this.messageHandler?.({ retain: false, ...m, payload });
  }

  /** Delivers even after close: what a stale handler would see if anything still held it. */
  deliverStale(m: { topic: string; payload: string; responseTopic?: string }): void {
    this.messageHandler?.({ retain: false, ...m, payload: Buffer.from(m.payload) });
  }

  packet(): void {
    if (this.open && !this.silent) this.packetHandler?.();
  }

  private ping(): void {
    this.packet(); // PINGREQ answered by PINGRESP
  }

  private end(how: NonNullable<FakeConnection["closed"]>, reason: string): void {
    if (!this.open) return;
    this.closed = how;
    if (this.pingTimer !== undefined) this.options.timer.clear(this.pingTimer);
    for (const w of this.waiting.splice(0)) w.reject(new HandsetError("mqtt-closed", "connection closed"));
    this.closeHandler?.(reason);
  }
}

export class FakeMqttPort implements MqttPort {
  readonly connects: Array<{ options: MqttConnectOptions; at: number; outcome: string }> = [];
  readonly connections: FakeConnection[] = [];
  /** Every publish on every connection, in order. */
  readonly published: Published[] = [];
  private readonly script: Step[] = [];
  /** What happens when the script is empty. */
  fallback: Step = { kind: "accept" };
  /** Called at each CONNECT (e.g. to check what flash holds at that moment). */
  onConnect: ((o: MqttConnectOptions) => void) | undefined;
  /** Applied to every new connection. */
  configure: ((c: FakeConnection) => void) | undefined;

  constructor(private readonly clock: ManualClock) {}

  refuse(code = "mqtt-unreachable", times = 1): this {
    for (let i = 0; i < times; i++) this.script.push({ kind: "refuse", code });
    return this;
  }

  accept(times = 1): this {
    for (let i = 0; i < times; i++) this.script.push({ kind: "accept" });
    return this;
  }

  hang(times = 1): this {
    for (let i = 0; i < times; i++) this.script.push({ kind: "hang" });
    return this;
  }

  /** The newest connection, if it is open. */
  get current(): FakeConnection | undefined {
    const c = this.connections.at(-1);
    return c?.open ? c : undefined;
  }

  connect(o: MqttConnectOptions): Promise<MqttConnection> {
    this.onConnect?.(o);
    const step = this.script.shift() ?? this.fallback;
    this.connects.push({ options: o, at: this.clock.monotonic(), outcome: step.kind });
    if (step.kind === "refuse") return Promise.reject(new HandsetError(step.code, `refused (${step.code})`));
    if (step.kind === "hang") return new Promise(() => {});
    const c = new FakeConnection(o, this.connections.length, this.published, () => this.clock.monotonic());
    this.configure?.(c);
    this.connections.push(c);
    return Promise.resolve(c);
  }

  /** Publishes on a topic, parsed. */
  payloads(topic: string | RegExp): Array<Record<string, unknown>> {
    return this.published
      .filter((p) => (typeof topic === "string" ? p.topic === topic : topic.test(p.topic)))
      .map((p) => JSON.parse(p.payload) as Record<string, unknown>);
  }
}

export class MemoryOutboxStore implements OutboxStore {
  saved: OutboxSnapshot | undefined;
  saves = 0;
  /** Saves in flight now, and the most ever at once (must stay ≤ 1). */
  active = 0;
  maxActive = 0;
  failing = false;
  /** When set, each save waits for release(). */
  manual = false;
  private readonly held: Array<() => void> = [];

  constructor(initial?: OutboxSnapshot) {
    this.saved = initial ? structuredClone(initial) : undefined;
  }

  async load(): Promise<OutboxSnapshot | undefined> {
    return this.saved ? structuredClone(this.saved) : undefined;
  }

  async save(s: OutboxSnapshot): Promise<void> {
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.manual) await new Promise<void>((r) => this.held.push(r));
      this.saves++;
      if (this.failing) throw new HandsetError("store-io", "flash write failed");
      this.saved = structuredClone(s);
    } finally {
      this.active--;
    }
  }

  release(): void {
    this.held.shift()?.();
  }

  get heldCount(): number {
    return this.held.length;
  }
}

/** Lets every pending promise callback run (the agent's work between timer firings). */
export function settle(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** Moves the clock forward by ms, one timer at a time, letting promises run after each. */
export async function run(clock: ManualClock, ms: number): Promise<void> {
  await settle();
  let left = ms;
  for (;;) {
    const next = clock.nextTimerIn();
    if (next === undefined || next > left) break;
    clock.advance(next);
    left -= next;
    await settle();
  }
  clock.advance(left);
  await settle();
}

/** A phone as the agent sees it, scripted by the test. */
export class FakeDevice implements FleetDevice {
  idle = true;
  current: DeviceState = {
    state: "registered",
    registrar: "sba.lab.test:5061",
    primary: true,
    limited: false,
    uri: "sip:4711@lab.test",
    certificate: { notAfter: Date.UTC(2026, 6, 1), subject: "CN=4711" },
    firmware: { version: "0.1.0", slot: "a" },
    uptimeS: 1234,
    addresses: { ip: "192.0.2.10", mac: "02:00:00:00:00:01" },
  };
  readonly runs: Array<{ name: string; args: Record<string, unknown> }> = [];
  readonly applied: Array<{ values: Record<string, unknown>; mode: "live" | "idle" }> = [];
  results: Record<string, unknown> = {};
  failures: Record<string, Error> = {};
  applyFailure: Error | undefined;

  state(): DeviceState {
    return this.current;
  }

  isIdle(): boolean {
    return this.idle;
  }

  async run(name: string, args: Record<string, unknown>): Promise<unknown> {
    this.runs.push({ name, args });
    const f = this.failures[name];
    if (f) throw f;
    return this.results[name];
  }

  async applyConfig(values: Record<string, unknown>, mode: "live" | "idle"): Promise<void> {
    if (this.applyFailure) throw this.applyFailure;
    this.applied.push({ values: { ...values }, mode });
  }
}

export const BROKERS = ["mqtts://mqtt1.lab.test:8883", "mqtts://mqtt2.lab.test:8883"];

export const SETTINGS: FleetSettings = {
  brokers: BROKERS,
  prefix: "handset/v1",
  deviceId: "phone-1",
  site: "hq",
  keepaliveS: 30,
  commands: FLEET_COMMANDS,
  outboxSize: 100,
  outboxRatePerS: 20,
  intervalS: 300,
};

export const T = fleetTopics("handset/v1", "phone-1", "hq");

export interface Harness {
  agent: FleetAgent;
  clock: ManualClock;
  port: FakeMqttPort;
  device: FakeDevice;
  store: MemoryOutboxStore;
  logs: LogRecord[];
  statuses: FleetStatus[];
  /** Runs the clock forward (see run()). */
  run(ms: number): Promise<void>;
}

export function harness(
  o: {
    settings?: Partial<FleetSettings>;
    store?: MemoryOutboxStore;
    seed?: number;
    clock?: ManualClock;
  } = {},
): Harness {
  const clock = o.clock ?? new ManualClock();
  const port = new FakeMqttPort(clock);
  const device = new FakeDevice();
  const store = o.store ?? new MemoryOutboxStore();
  const logs: LogRecord[] = [];
  const agent = new FleetAgent({
    clock,
    random: new SeededRandom(o.seed ?? 1),
    logger: createLogger((r) => logs.push(r)),
    port,
    settings: { ...SETTINGS, ...o.settings },
    device,
    store,
  });
  const statuses: FleetStatus[] = [];
  agent.status.on((s) => statuses.push(s));
  return { agent, clock, port, device, store, logs, statuses, run: (ms) => run(clock, ms) };
}

/** A started agent on its first connection. */
export async function connected(
  o: Parameters<typeof harness>[0] = {},
): Promise<Harness & { conn: FakeConnection }> {
  const h = harness(o);
  await h.agent.start();
  await settle();
  const conn = h.port.current;
  if (!conn) throw new Error("the agent did not connect");
  return { ...h, conn };
}
