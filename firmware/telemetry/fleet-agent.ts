/**
 * The phone's fleet session over MQTT v5 (issue 11), pure: it drives one connection at a time
 * through the injected MqttPort and decides everything MQTT.js would otherwise decide for it.
 *
 * - Brokers are tried in turn, the next one after every failure or loss, with our own jittered
 *   backoff; after losing an established connection the first attempt waits U(0, spread), so a
 *   thousand phones do not come back in the same second after a broker restart.
 * - Our own watchdog: every packet from the broker feeds it; silence for 1.5 × keep-alive closes
 *   the connection (the broker publishes the will after the same time). The edge's keep-alive
 *   pings run on timers we hand it, on the injected clock.
 * - Each connection: birthSeq+1 (in flash before CONNECT, so the will carries it), the will
 *   "lost" retained on the state topic, subscriptions and handlers made afresh (a connection's
 *   handlers answer only while it is the current one, so nothing stacks), retained state, then
 *   the outbox drained oldest first, one in flight, rate-limited.
 * - MQTT never blocks the phone: event() and stateChanged() return at once; events while
 *   disconnected wait in the outbox.
 *
 * Logs carry codes, topics and counts, never a payload body or a credential.
 */
import type { BackoffOptions } from "../core/backoff.ts";
import { backoffDelay } from "../core/backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { asHandsetError, HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { CommandTable } from "./commands.ts";
import { type ConfigMode, DesiredConfig } from "./desired-config.ts";
import type {
  MqttConnection,
  MqttConnectOptions,
  MqttCredentials,
  MqttIncoming,
  MqttPort,
  MqttPublishOptions,
} from "./mqtt-port.ts";
import { Outbox, type OutboxStore } from "./outbox.ts";
import {
  type DeviceState,
  type EventFields,
  eventPayload,
  isEventType,
  lostPayload,
  offlinePayload,
  reportedPayload,
  statePayload,
} from "./payloads.ts";
import { TokenBucket } from "./rate-limit.ts";
import { type FleetTopics, fleetTopics, isFleetTopic, parseTopic } from "./topics.ts";

export type { DeviceState } from "./payloads.ts";

export interface FleetSettings extends MqttCredentials {
  brokers: string[];
  prefix: string;
  deviceId: string;
  site?: string;
  keepaliveS: number;
  commands: readonly string[];
  outboxSize: number;
  outboxRatePerS: number;
  intervalS: number;
  /** Default 10 000. */
  connectTimeoutMs?: number;
  /** Default base 1 000, cap 60 000. */
  backoff?: BackoffOptions;
  /**
   * The first attempt after losing an established connection waits U(0, this). Default: 40 000
   * with one broker (a site's phones all come back to that one machine: at 1 000 phones no second
   * then takes more than 5 % of them), 29 000 with a cluster list (the phone moves on to another
   * member within 30 s, and a cluster's members share the load).
   */
  reconnectSpreadMs?: number;
}

export interface FleetDevice {
  state(): DeviceState;
  isIdle(): boolean;
  /** reboot, sign-out, reprovision, diagnostics, screenshot, update. */
  run(name: string, args: Record<string, unknown>): Promise<unknown>;
  /** values: dotted key → typed value (undefined = back to the file's). */
  applyConfig(values: Record<string, unknown>, mode: "live" | "idle"): Promise<void>;
}

export type FleetStatus = {
  state: "connecting" | "connected" | "disconnected" | "stopped";
  broker?: string;
  error?: { code: string; message: string };
  retryInMs?: number;
};

const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1_000, capMs: 60_000 };
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_SPREAD_MS = { single: 40_000, cluster: 29_000 };
/** The agent's own CONNECT deadline trails the edge's, so the edge's error normally wins. */
const CONNECT_GRACE_MS = 1_000;
const WATCHDOG_FACTOR = 1.5;
const REPLY_EXPIRY_S = 60;
/** A clean stop waits this long for the offline PUBACK and the DISCONNECT. */
const STOP_TIMEOUT_MS = 5_000;
const MIN_EDGE_TIMER_MS = 100;
const INTERVAL_RANGE_S = { min: 10, max: 86_400 };
/** Connect failures that prove no session began: the birthSeq offered was never taken. */
const NO_SESSION = new Set(["mqtt-refused", "mqtt-auth", "mqtt-tls", "mqtt-unreachable"]);

/** One connection and everything that lives and dies with it. */
interface Session {
  conn: MqttConnection;
  broker: string;
  since: number;
  lastPacket: number;
  edgeTimers: EdgeTimers;
  watchdog?: TimerHandle;
  interval?: TimerHandle;
  drainTimer?: TimerHandle;
  inflight: boolean;
  /** The state went out with a backlog queued: republish it once the backlog is delivered. */
  backlog: boolean;
}

/** The edge's keep-alive timers for one connection (MqttConnectOptions.timer). */
interface EdgeTimers {
  handles: Map<number, TimerHandle>;
  /** Set when the connection ends: a late set() then arms nothing, so no ping outlives it. */
  ended: boolean;
}

function endTimers(t: EdgeTimers): void {
  t.ended = true;
  for (const h of t.handles.values()) h.cancel();
  t.handles.clear();
}

/** A broker URL without any user:password@ in it, for logs and status. */
function brokerLabel(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return "(unparsable broker URL)";
  }
}

function checkRange(name: string, v: number, min: number, max: number): number {
  if (!Number.isFinite(v) || v < min || v > max)
    throw new HandsetError("mqtt-config", `${name} must be in ${min}…${max}`);
  return v;
}

export class FleetAgent {
  readonly status = new Emitter<FleetStatus>();
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly log: Logger;
  private readonly port: MqttPort;
  private readonly settings: FleetSettings;
  private readonly device: FleetDevice;
  private readonly topics: FleetTopics;
  private readonly outbox: Outbox;
  private readonly bucket: TokenBucket;
  private readonly desired = new DesiredConfig();
  private readonly commands: CommandTable;
  /** The interval the configuration file set, for when a desired override is withdrawn. */
  private readonly fileIntervalS: number;
  private intervalS: number;
  private session: Session | undefined;
  private lastStatus: FleetStatus = { state: "disconnected" };
  private started = false;
  private stopped = false;
  private loaded = false;
  /** Events before the outbox has loaded: built into it once it has. */
  private early: Array<(seq: number) => string> = [];
  private brokerIndex = 0;
  private attempts = 0;
  private retryTimer: TimerHandle | undefined;
  /** The outbox's birthSeq has not been offered to a broker that might have taken it. */
  private birthFresh = false;
  private edgeTimerSeq = 0;
  private statePending = false;
  private configQueued = false;
  private configChain: Promise<void> = Promise.resolve();

  constructor(o: {
    clock: Clock;
    random: Random;
    logger: Logger;
    port: MqttPort;
    settings: FleetSettings;
    device: FleetDevice;
    store: OutboxStore;
  }) {
    const s = o.settings;
    if (s.brokers.length === 0) throw new HandsetError("mqtt-config", "no MQTT broker configured");
    checkRange("mqtt.keepaliveS", s.keepaliveS, 5, 600);
    checkRange("mqtt.outboxRatePerS", s.outboxRatePerS, 1, 1_000);
    checkRange("telemetry.intervalS", s.intervalS, INTERVAL_RANGE_S.min, INTERVAL_RANGE_S.max);
    checkRange("mqtt.outboxSize", s.outboxSize, 1, 100_000);
    if (s.connectTimeoutMs !== undefined) checkRange("connectTimeoutMs", s.connectTimeoutMs, 100, 600_000);
    if (s.reconnectSpreadMs !== undefined) checkRange("reconnectSpreadMs", s.reconnectSpreadMs, 0, 3_600_000);
    if (s.backoff) {
      checkRange("backoff.baseMs", s.backoff.baseMs, 1, 3_600_000);
      checkRange("backoff.capMs", s.backoff.capMs, s.backoff.baseMs, 86_400_000);
    }
    this.clock = o.clock;
    this.random = o.random;
    this.log = o.logger.child("fleet");
    this.port = o.port;
    this.settings = { ...s, brokers: [...s.brokers] };
    this.device = o.device;
    this.topics = fleetTopics(s.prefix, s.deviceId, s.site);
    this.outbox = new Outbox({ store: o.store, capacity: s.outboxSize, clock: o.clock, logger: this.log });
    this.bucket = new TokenBucket(o.clock, s.outboxRatePerS);
    this.fileIntervalS = s.intervalS;
    this.intervalS = s.intervalS;
    this.commands = new CommandTable({
      logger: this.log,
      enabled: s.commands,
      host: {
        isIdle: () => this.isIdle(),
        run: (name, args) => this.device.run(name, args),
        ping: () => ({ pong: true, uptimeS: this.device.state().uptimeS, birthSeq: this.outbox.birthSeq }),
        reply: (to, payload) => this.reply(to, payload),
      },
    });
  }

  /** The latest status emitted. */
  get current(): FleetStatus {
    return this.lastStatus;
  }

  /** Loads the outbox and starts connecting; network trouble never makes it throw. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.outbox.load();
    this.loaded = true;
    for (const build of this.early.splice(0)) this.outbox.push(build);
    if (!this.stopped) this.connect();
  }

  /** Queues an event (QoS 1, through the outbox); returns at once. */
  event(type: string, fields?: EventFields): void {
    if (this.stopped) return;
    if (!isEventType(type)) {
      this.log.warn("event type is not a code; dropped", { code: "telemetry-bad-event" });
      return;
    }
    const now = this.clock.now();
    const build = (seq: number) => eventPayload({ seq, now, type, ...(fields ? { fields } : {}) });
    if (!this.loaded) {
      this.early.push(build);
      if (this.early.length > this.settings.outboxSize) this.early.shift();
      return;
    }
    this.outbox.push(build);
    this.drain();
  }

  /** The device's state changed: one retained state publish per turn, however many calls. */
  stateChanged(): void {
    if (this.statePending) return;
    this.statePending = true;
    void Promise.resolve()
      .then(() => {
        this.statePending = false;
        this.publishState();
      })
      .catch((err) => this.internal("state", err));
  }

  /** The device may have become idle: pending idle config first, then deferred commands. */
  idleChanged(): void {
    if (this.stopped || !this.isIdle()) return;
    if (Object.keys(this.desired.changes("idle")).length > 0) this.applyDesired();
    void this.configChain.then(() => this.commands.idleChanged()).catch((err) => this.internal("idle", err));
  }

  updateSettings(s: Partial<Pick<FleetSettings, "intervalS" | "commands">>): void {
    if (s.commands) {
      this.settings.commands = [...s.commands];
      this.commands.setEnabled(s.commands);
    }
    if (s.intervalS !== undefined && Number.isFinite(s.intervalS)) {
      const { min, max } = INTERVAL_RANGE_S;
      this.intervalS = Math.min(max, Math.max(min, Math.floor(s.intervalS)));
      if (this.session) this.armInterval(this.session);
    }
  }

  /** clean: the retained state becomes "offline", then DISCONNECT (no will); else the will fires. */
  async stop(o: { clean?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.commands.clear();
    const s = this.session;
    if (s) {
      this.endSession(s);
      if (o.clean) {
        const offline = offlinePayload(this.outbox.birthSeq, this.clock.now());
        await this.within(this.send(s, this.topics.state, offline, { qos: 1, retain: true }), "stop-offline");
        await this.within(
          Promise.resolve().then(() => s.conn.close(false)),
          "stop-disconnect",
        );
      } else
        await this.within(
          Promise.resolve().then(() => s.conn.close(true)),
          "stop-close",
        );
    }
    await this.outbox.flush();
    this.outbox.close();
    this.log.info("stopped", { code: "mqtt-stopped", clean: o.clean === true });
    this.setStatus({ state: "stopped" });
  }

  // ── connecting ──────────────────────────────────────────────────────────────────────────

  private connect(): void {
    void this.attempt().catch((err) => {
      // a bug, not the network: keep the phone's promise to never give up
      this.internal("connect", err);
      if (!this.stopped && !this.session && !this.retryTimer) this.retryAfter(this.nextBackoff());
    });
  }

  private async attempt(): Promise<void> {
    const url = this.settings.brokers[this.brokerIndex % this.settings.brokers.length]!;
    const broker = brokerLabel(url);
    this.setStatus({ state: "connecting", broker });
    if (!this.birthFresh) await this.outbox.advanceBirth();
    this.birthFresh = false;
    if (this.stopped) return;
    const birthSeq = this.outbox.birthSeq;
    const edgeTimers: EdgeTimers = { handles: new Map(), ended: false };
    const s = this.settings;
    const options: MqttConnectOptions = {
      url,
      clientId: s.deviceId,
      keepaliveS: s.keepaliveS,
      connectTimeoutMs: s.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      ...(s.username !== undefined ? { username: s.username } : {}),
      ...(s.password !== undefined ? { password: s.password } : {}),
      ...(s.ca ? { ca: s.ca } : {}),
      ...(s.cert !== undefined ? { cert: s.cert } : {}),
      ...(s.key !== undefined ? { key: s.key } : {}),
      ...(s.servername !== undefined ? { servername: s.servername } : {}),
      will: { topic: this.topics.state, payload: lostPayload(birthSeq), qos: 1, retain: true },
      sessionExpiryS: 0,
      timer: this.edgeTimer(edgeTimers),
    };
    let conn: MqttConnection;
    try {
      conn = await this.connectWithin(options, options.connectTimeoutMs + CONNECT_GRACE_MS);
    } catch (err) {
      endTimers(edgeTimers);
      if (this.stopped) return;
      const e = asHandsetError(err, "mqtt-unreachable");
      if (NO_SESSION.has(e.code)) this.birthFresh = true;
      this.brokerIndex++;
      const delay = this.nextBackoff();
      this.log.warn("connect failed", { code: e.code, broker, retryInMs: delay });
      this.setStatus({
        state: "disconnected",
        broker,
        error: { code: e.code, message: e.message },
        retryInMs: delay,
      });
      this.retryAfter(delay);
      return;
    }
    if (this.stopped) {
      endTimers(edgeTimers);
      void Promise.resolve()
        .then(() => conn.close(false))
        .catch((err) => this.internal("close", err));
      return;
    }
    this.established(conn, broker, birthSeq, edgeTimers);
  }

  /** port.connect with a deadline of our own; a connection that arrives late is closed. */
  private connectWithin(o: MqttConnectOptions, ms: number): Promise<MqttConnection> {
    return new Promise((resolve, reject) => {
      let done = false;
      const timer = this.clock.setTimer(ms, () => {
        done = true;
        reject(new HandsetError("mqtt-timeout", "no CONNACK in time"));
      });
      Promise.resolve()
        .then(() => this.port.connect(o))
        .then(
          (conn) => {
            if (!done) {
              done = true;
              timer.cancel();
              resolve(conn);
            } else void conn.close(true).catch((err) => this.internal("close", err));
          },
          (err: unknown) => {
            if (done) return;
            done = true;
            timer.cancel();
            reject(err);
          },
        );
    });
  }

  /** setInterval/clearInterval on the injected clock, for the edge's keep-alive pings. */
  private edgeTimer(timers: EdgeTimers): MqttConnectOptions["timer"] {
    return {
      set: (fn, ms) => {
        const id = ++this.edgeTimerSeq;
        const period = Math.max(MIN_EDGE_TIMER_MS, Number.isFinite(ms) ? ms : MIN_EDGE_TIMER_MS);
        const arm = (): void => {
          if (timers.ended) return;
          timers.handles.set(
            id,
            this.clock.setTimer(period, () => {
              if (!timers.handles.has(id)) return;
              arm();
              try {
                fn();
              } catch (err) {
                this.internal("edge-timer", err);
              }
            }),
          );
        };
        arm();
        return id;
      },
      clear: (id) => {
        timers.handles.get(id)?.cancel();
        timers.handles.delete(id);
      },
    };
  }

  private established(conn: MqttConnection, broker: string, birthSeq: number, edgeTimers: EdgeTimers): void {
    const now = this.clock.monotonic();
    const s: Session = {
      conn,
      broker,
      since: now,
      lastPacket: now,
      edgeTimers,
      inflight: false,
      backlog: this.outbox.size > 0,
    };
    this.session = s;
    conn.onPacket(() => {
      if (this.session === s) s.lastPacket = this.clock.monotonic();
    });
    conn.onMessage((m) => {
      if (this.session === s) this.incoming(m);
    });
    conn.onClose((reason) => this.lost(s, "mqtt-closed", reason));
    this.armWatchdog(s, this.watchdogMs());
    this.log.info("connected", { code: "mqtt-connected", broker, birthSeq });
    this.setStatus({ state: "connected", broker });
    const filters = [...this.topics.subscriptions];
    Promise.resolve()
      .then(() => conn.subscribe(filters, 1))
      .then(
        (granted) => {
          const refused = filters.filter((_, i) => (granted[i] ?? 128) >= 128);
          if (refused.length > 0)
            this.log.warn("subscriptions refused by the broker", { code: "mqtt-subscribe-refused", refused });
        },
        (err: unknown) => {
          if (this.session !== s) return;
          this.log.warn("subscribe failed", { code: asHandsetError(err, "mqtt-subscribe").code });
          this.drop(s, "mqtt-subscribe", "subscribe failed");
        },
      );
    this.publishState();
    this.armInterval(s);
    this.drain();
  }

  /** 1.5 × the keep-alive in force: the broker's Server Keep Alive (CONNACK) overrides ours. */
  private watchdogMs(): number {
    const inForce = this.session?.conn.keepaliveS ?? this.settings.keepaliveS;
    return inForce * 1000 * WATCHDOG_FACTOR;
  }

  /** Checks silence at its deadline instead of re-arming on every packet: one timer per session. */
  private armWatchdog(s: Session, ms: number): void {
    s.watchdog = this.clock.setTimer(ms, () => {
      if (this.session !== s) return;
      const limit = this.watchdogMs();
      const silent = this.clock.monotonic() - s.lastPacket;
      if (silent >= limit) {
        this.log.warn("broker silent for 1.5 × keep-alive; closing", {
          code: "mqtt-keepalive",
          broker: s.broker,
        });
        this.drop(s, "mqtt-keepalive", "broker silent");
      } else this.armWatchdog(s, limit - silent);
    });
  }

  private armInterval(s: Session): void {
    s.interval?.cancel();
    s.interval = this.clock.setTimer(this.intervalS * 1000, () => {
      if (this.session !== s) return;
      this.publishState();
      this.armInterval(s);
    });
  }

  /** Ends a session we gave up on: the socket is destroyed (the broker publishes the will). */
  private drop(s: Session, code: string, reason: string): void {
    void Promise.resolve()
      .then(() => s.conn.close(true))
      .catch((err) => this.internal("close", err));
    this.lost(s, code, reason);
  }

  private lost(s: Session, code: string, reason: string): void {
    if (this.session !== s) return;
    this.endSession(s);
    if (this.stopped) return;
    this.brokerIndex++;
    // A connection that lived a while resets the backoff and comes back after U(0, spread); one
    // that died at once (a flapping broker) also waits out the growing backoff.
    const window =
      this.settings.reconnectSpreadMs ??
      (this.settings.brokers.length > 1 ? DEFAULT_SPREAD_MS.cluster : DEFAULT_SPREAD_MS.single);
    const spread = Math.floor(this.random.unit() * window);
    const stable = this.clock.monotonic() - s.since >= (s.conn.keepaliveS ?? this.settings.keepaliveS) * 1000;
    if (stable) this.attempts = 0;
    const delay = stable ? spread : Math.max(spread, this.nextBackoff());
    this.log.warn("connection lost", { code, broker: s.broker, retryInMs: delay });
    this.setStatus({
      state: "disconnected",
      broker: s.broker,
      error: { code, message: reason },
      retryInMs: delay,
    });
    this.retryAfter(delay);
  }

  private endSession(s: Session): void {
    if (this.session === s) this.session = undefined;
    s.watchdog?.cancel();
    s.interval?.cancel();
    s.drainTimer?.cancel();
    endTimers(s.edgeTimers);
  }

  private nextBackoff(): number {
    return backoffDelay(this.attempts++, this.random, this.settings.backoff ?? DEFAULT_BACKOFF);
  }

  private retryAfter(ms: number): void {
    this.retryTimer?.cancel();
    this.retryTimer = this.clock.setTimer(ms, () => {
      this.retryTimer = undefined;
      if (!this.stopped) this.connect();
    });
  }

  // ── publishing ──────────────────────────────────────────────────────────────────────────

  /** One publish; a synchronous throw of the edge becomes a rejection. */
  private send(s: Session, topic: string, payload: string, o: MqttPublishOptions): Promise<void> {
    return Promise.resolve().then(() => s.conn.publish(topic, payload, o));
  }

  /** A publish whose failure is only logged (the next state or report supersedes it). */
  private publishQuietly(topic: string, payload: string, o: MqttPublishOptions, what: string): void {
    const s = this.session;
    if (!s) return;
    this.send(s, topic, payload, o).catch((err: unknown) => {
      this.log.warn("publish failed", { code: asHandsetError(err, "mqtt-publish").code, what });
    });
  }

  private publishState(): void {
    if (!this.session) return;
    let payload: string;
    try {
      payload = statePayload(this.device.state(), {
        birthSeq: this.outbox.birthSeq,
        outbox: { queued: this.outbox.size, dropped: this.outbox.dropped },
        now: this.clock.now(),
      });
    } catch (err) {
      this.internal("state", err);
      return;
    }
    this.publishQuietly(this.topics.state, payload, { qos: 1, retain: true }, "state");
  }

  /** Sends the oldest queued event, one in flight at a time, as fast as the bucket allows. */
  private drain(): void {
    const s = this.session;
    if (!s || s.inflight || s.drainTimer) return;
    const head = this.outbox.peek();
    if (!head) return;
    if (!this.bucket.take()) {
      s.drainTimer = this.clock.setTimer(Math.max(1, this.bucket.waitMs()), () => {
        s.drainTimer = undefined;
        if (this.session === s) this.drain();
      });
      return;
    }
    s.inflight = true;
    this.send(s, this.topics.event, head.payload, { qos: 1 }).then(
      () => {
        this.outbox.remove(head.seq); // acknowledged, even if the session ended meanwhile
        if (this.session !== s) return;
        s.inflight = false;
        if (s.backlog && this.outbox.size === 0) {
          s.backlog = false;
          this.stateChanged();
        }
        this.drain();
      },
      (err: unknown) => {
        if (this.session !== s) return;
        s.inflight = false;
        const e = asHandsetError(err, "mqtt-publish");
        if (e.code === "mqtt-publish-refused" || e.code === "mqtt-refused") {
          // the broker refused this event itself (ACL, size): retrying it would block the rest
          this.log.warn("event refused by the broker; dropped", { code: e.code, seq: head.seq });
          this.outbox.discard(head.seq);
          this.drain();
        } else {
          this.log.warn("event publish failed; reconnecting", { code: e.code, seq: head.seq });
          this.drop(s, e.code, "publish failed");
        }
      },
    );
  }

  private reply(to: { topic: string; correlationData?: Buffer }, payload: string): void {
    if (isFleetTopic(this.settings.prefix, to.topic) || /[#+\u0000]/.test(to.topic)) {
      this.log.warn("reply dropped: the response topic is a fleet topic", {
        code: "command-bad-response-topic",
      });
      return;
    }
    if (!this.session) {
      this.log.info("reply dropped: not connected", { code: "command-reply-offline" });
      return;
    }
    this.publishQuietly(
      to.topic,
      payload,
      {
        qos: 1,
        messageExpiryS: REPLY_EXPIRY_S,
        contentType: "application/json",
        ...(to.correlationData ? { correlationData: to.correlationData } : {}),
      },
      "reply",
    );
  }

  // ── incoming ────────────────────────────────────────────────────────────────────────────

  private incoming(m: MqttIncoming): void {
    try {
      const t = parseTopic(this.topics, m.topic);
      if (!t) {
        this.log.debug("message on a topic that is not this phone's; ignored", {
          code: "mqtt-foreign-topic",
        });
        return;
      }
      if (t.kind === "cmd") {
        this.commands.handle({
          name: t.name,
          payload: m.payload,
          retain: m.retain,
          ...(m.responseTopic ? { responseTopic: m.responseTopic } : {}),
          ...(m.correlationData ? { correlationData: m.correlationData } : {}),
        });
      } else {
        this.desired.set(t.layer, m.payload.toString("utf8"));
        this.applyDesired();
      }
    } catch (err) {
      this.internal("incoming", err);
    }
  }

  /** One config step at a time; messages arriving together (the retained layers) make one. */
  private applyDesired(): void {
    if (this.configQueued) return;
    this.configQueued = true;
    this.configChain = this.configChain
      .then(async () => {
        this.configQueued = false;
        await this.applyMode("live");
        if (this.isIdle()) await this.applyMode("idle");
        this.publishQuietly(
          this.topics.reported,
          reportedPayload(this.desired.report(), this.clock.now()),
          { qos: 1, retain: true },
          "reported",
        );
      })
      .catch((err) => this.internal("config", err));
  }

  private async applyMode(mode: ConfigMode): Promise<void> {
    const changes = this.desired.changes(mode);
    const keys = Object.keys(changes);
    if (keys.length === 0) return;
    try {
      await this.device.applyConfig(changes, mode);
    } catch (err) {
      const code = asHandsetError(err, "config-apply").code;
      this.desired.failed(changes, code);
      this.log.warn("config not applied", { code, mode, keys });
      return;
    }
    this.desired.committed(changes);
    this.log.info("config applied", { code: "config-applied", mode, keys });
    if ("telemetry.intervalS" in changes)
      this.updateSettings({
        intervalS: (changes["telemetry.intervalS"] as number | undefined) ?? this.fileIntervalS,
      });
  }

  // ── small helpers ───────────────────────────────────────────────────────────────────────

  private isIdle(): boolean {
    try {
      return this.device.isIdle();
    } catch {
      return false;
    }
  }

  private setStatus(s: FleetStatus): void {
    this.lastStatus = s;
    this.status.emit(s);
  }

  /** Waits for p at most STOP_TIMEOUT_MS on the clock; a failure or timeout is logged. */
  private within(p: Promise<void>, what: string): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = this.clock.setTimer(STOP_TIMEOUT_MS, () => {
        this.log.warn("gave up waiting", { code: "mqtt-timeout", what });
        resolve();
      });
      p.then(
        () => {
          timer.cancel();
          resolve();
        },
        (err: unknown) => {
          timer.cancel();
          this.log.warn("failed", { code: asHandsetError(err, "mqtt-publish").code, what });
          resolve();
        },
      );
    });
  }

  private internal(what: string, err: unknown): void {
    this.log.error("fleet agent fault", { code: asHandsetError(err).code, what });
  }
}
