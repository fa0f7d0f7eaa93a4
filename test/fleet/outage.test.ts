/**
 * Issue 11 "Outages": the broker down for 10 minutes of simulated time while the phone lives on.
 *
 * Everything is real except time and the board: the lab (branch site: SBA at home, the pool across
 * the WAN), the phone's own services (firmware/commands/phone-services.ts) and Phone state machine,
 * the fleet link (firmware/commands/fleet-link.ts) with the real MQTT edge and the real file system
 * (the outbox is fleet-outbox.json in the store dir), a real mosquitto 2 with a password file and an
 * ACL, and mosquitto_sub as the independent subscriber that records every event. Time is one
 * ManualClock shared by the phone, its services and the link; it moves in small steps and never
 * while a SIP request, an MQTT CONNECT, a PUBACK or a PINGRESP is still on the wire.
 *
 * What it proves: while the broker is unreachable the phone keeps registering (refreshes, a
 * failover to the pool and the failback), every event of that time waits in flash, and once the
 * broker returns every event arrives exactly once in seq order (a QoS 1 redelivery of the one in
 * flight at the cut is the only repeat allowed), the outbox empties — also across a reboot of the
 * phone in the middle of the outage, with seq continuing.
 */
import { readFileSync } from "node:fs";
import { type AddressInfo, createServer, connect as netConnect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type FleetLink, OUTBOX_FILE, startFleetLink } from "../../firmware/commands/fleet-link.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { Phone, type PhoneEvent } from "../../firmware/phone/phone.ts";
import type { PhoneServices } from "../../firmware/phone/services.ts";
import type { Diagnostics } from "../../firmware/telemetry/diagnostics.ts";
import type { FleetSettings, FleetStatus } from "../../firmware/telemetry/fleet-agent.ts";
import type { OutboxSnapshot } from "../../firmware/telemetry/outbox.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { FakeDisplay, FakeHook, FakeIndicators, FakeKeys } from "../phone/fakes.ts";
import { isUp, makeRig, type Rig, settle, signedInStore } from "../scenarios/harness.ts";
import {
  hasMosquitto,
  MOSQUITTO_MISSING,
  type Mosquitto,
  mosquittoSub,
  type SubProcess,
  siteAcl,
  startMosquitto,
} from "../support/mosquitto.ts";
import { type Busy, drive, realSleep, waitReal, watchedPort } from "./sim-wire.ts";

const CI = process.env.CI === "true";
const PREFIX = "handset/v1";
const DEVICE = "phone-outage";
const PHONE_PASSWORD = "phone-outage-pw";
const OPERATOR_PASSWORD = "operator-outage-pw";
const EVENT_TOPIC = `${PREFIX}/${DEVICE}/event`;
const STATE_TOPIC = `${PREFIX}/${DEVICE}/state`;
const OUTAGE_MS = 10 * 60_000;
/** The lab registrars grant 120 s: the phone refreshes every 90 s, six times in the outage. */
const EXPIRES_S = 120;

const ACL = siteAcl(PREFIX);

/** The seqs of the events the broker has acknowledged (on the watched port). */
const ackedSeqs = (w: ReturnType<typeof watchedPort>) =>
  w.acked.filter((a) => a.topic === EVENT_TOPIC).map((a) => (JSON.parse(a.payload) as EventPayload).seq);

/**
 * A TCP relay in front of the broker that can swallow everything the broker sends: the way to
 * lose a PUBACK on the wire after the broker has taken (and forwarded) the event. down() stops
 * listening (a connection is then refused, as by a dead broker); up() listens on the same port.
 */
async function startRelay(brokerPort: number) {
  let server: Server | undefined;
  let port = 0;
  const sockets = new Set<Socket>();
  const relay = {
    swallow: false,
    get url() {
      return `mqtt://127.0.0.1:${port}`;
    },
    async up(): Promise<void> {
      const s = createServer((client) => {
        const upstream = netConnect({ host: "127.0.0.1", port: brokerPort });
        const end = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        sockets.add(client);
        sockets.add(upstream);
        client.on("data", (d) => upstream.write(d));
        upstream.on("data", (d) => {
          if (!relay.swallow) client.write(d);
        });
        for (const x of [client, upstream]) {
          x.on("close", end);
          x.on("error", end);
        }
      });
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.listen(port, "127.0.0.1", () => resolve());
      });
      port = (s.address() as AddressInfo).port;
      server = s;
    },
    async down(): Promise<void> {
      const s = server;
      server = undefined;
      for (const x of sockets) x.destroy();
      sockets.clear();
      if (s) await new Promise<void>((r) => s.close(() => r()));
    },
  };
  await relay.up();
  return relay;
}

interface Seen {
  retain: boolean;
  qos: number;
  topic: string;
  payload: string;
}

/** mosquitto_sub's "%r %q %t %p" lines. */
function parseLines(lines: string[]): Seen[] {
  return lines.map((l) => {
    const [r, q, topic, ...rest] = l.split(" ");
    return { retain: r === "1", qos: Number(q), topic: topic ?? "", payload: rest.join(" ") };
  });
}

type EventPayload = { v: number; seq: number; ts: string; type: string } & Record<string, unknown>;

const eventsOf = (seen: Seen[]) =>
  seen
    .filter((m) => m.topic === EVENT_TOPIC)
    .map((m) => ({ ...m, event: JSON.parse(m.payload) as EventPayload }));

/**
 * QoS 1 semantics over what the subscriber got: the first sight of each seq runs 1, 2, 3, … with
 * no gap and no step back; a seq seen again must be a byte-for-byte redelivery of the same event.
 */
function checkDelivery(payloads: string[]): { bySeq: Map<number, string>; duplicates: number } {
  const bySeq = new Map<number, string>();
  const order: number[] = [];
  let duplicates = 0;
  for (const p of payloads) {
    const seq = (JSON.parse(p) as EventPayload).seq;
    const first = bySeq.get(seq);
    if (first !== undefined) {
      expect(p, `seq ${seq} seen again with other content`).toBe(first);
      duplicates++;
      continue;
    }
    bySeq.set(seq, p);
    order.push(seq);
  }
  expect(order).toEqual(order.map((_, i) => i + 1));
  return { bySeq, duplicates };
}

function readOutbox(storeDir: string): OutboxSnapshot {
  return JSON.parse(readFileSync(join(storeDir, OUTBOX_FILE), "utf8")) as OutboxSnapshot;
}

/** Queued entries in flash; -1 before the first save. */
function queuedInFlash(storeDir: string): number {
  try {
    return readOutbox(storeDir).entries.length;
  } catch {
    return -1;
  }
}

/** One boot of the phone: its services and Phone on the rig's clock, with the fleet link on the same clock. */
interface Node {
  rig: Rig;
  phone: Phone;
  link: FleetLink;
  /** Every event the link handed the agent (type), in order. */
  queued: () => string[];
  phoneEvents: PhoneEvent[];
  fleet: Array<FleetStatus & { at: number }>;
  logs: LogRecord[];
  watch: ReturnType<typeof watchedPort>;
  busy: Busy;
}

async function boot(lab: Lab, storeDir: string, settings: FleetSettings, wallClock?: number): Promise<Node> {
  const rig = await makeRig(lab, storeDir, { failbackProbeMs: 60_000 });
  // A reboot does not send the phone's clock back (the store keeps the last good time).
  if (wallClock !== undefined) rig.clock.setWallClock(Math.max(wallClock, rig.clock.now()));
  const real = rig.services as PhoneServices & { diagnostics(): Promise<Diagnostics> };
  expect(typeof real.diagnostics).toBe("function");
  // The real services, with every registration status also noted on the rig (its time included).
  const services: PhoneServices & { diagnostics(): Promise<Diagnostics> } = {
    version: real.version,
    discover: () => real.discover(),
    setClock: (d) => real.setClock(d),
    identity: () => real.identity(),
    signIn: (r) => real.signIn(r),
    register: (d, onStatus) =>
      real.register(d, (s) => {
        rig.statuses.push({ ...s, at: rig.clock.monotonic() });
        onStatus(s);
      }),
    reprovision: () => real.reprovision(),
    signOut: () => real.signOut(),
    factoryReset: () => real.factoryReset(),
    networkInfo: () => real.networkInfo(),
    diagnostics: () => real.diagnostics(),
  };
  const logs: LogRecord[] = [];
  const logger = createLogger((r) => logs.push(r));
  const display = new FakeDisplay();
  const watch = watchedPort(rig.clock);
  let phone: Phone | undefined;
  const link = await startFleetLink({
    settings,
    storeDir,
    clock: rig.clock,
    random: new SeededRandom(11),
    logger,
    version: services.version,
    core: () => (phone ? { phone, services } : undefined),
    screen: () => display.text,
    restartCore: async () => {},
    reboot: () => {},
    port: watch.port,
  });
  const spy = vi.spyOn(link.agent, "event");
  const fleet: Node["fleet"] = [];
  link.agent.status.on((s) => fleet.push({ ...s, at: rig.clock.monotonic() }));
  const ph = new Phone({
    keys: new FakeKeys(),
    display,
    indicators: new FakeIndicators(),
    hook: new FakeHook(),
    services,
    clock: rig.clock,
    random: new SeededRandom(5),
    logger,
  });
  phone = ph;
  const phoneEvents: PhoneEvent[] = [];
  ph.events.on((e) => {
    phoneEvents.push(e);
    link.onPhoneEvent(e);
  });
  ph.start();
  // Discovery, SNTP and the identity are real I/O: no simulated time passes until registration.
  await waitReal("the phone to start registering", () =>
    ["registering", "registered", "limited", "failed"].includes(ph.state),
  );
  // A connection attempt (its birthSeq written to flash first, then CONNECT) is real I/O too.
  const busy: Busy = () =>
    rig.busy() ? "sip" : (watch.busy() ?? (link.status()?.state === "connecting" ? "connecting" : undefined));
  expect(await drive(rig.clock, busy, 120_000, { until: () => rig.statuses.some(isUp) })).toBe(true);
  return {
    rig,
    phone: ph,
    link,
    queued: () => spy.mock.calls.map((c) => c[0]),
    phoneEvents,
    fleet,
    logs,
    watch,
    busy,
  };
}

async function shutdown(lab: Lab, n: Node): Promise<void> {
  await n.link.stop();
  await n.phone.stop();
  await settle(lab, n.rig);
}

const settingsFor = (url: string): FleetSettings => ({
  brokers: [url],
  prefix: PREFIX,
  deviceId: DEVICE,
  username: DEVICE,
  password: PHONE_PASSWORD,
  keepaliveS: 30,
  commands: ["ping"],
  outboxSize: 1_000,
  outboxRatePerS: 20,
  intervalS: 300,
});

const subscribe = async (broker: Mosquitto): Promise<SubProcess> => {
  const sub = mosquittoSub(broker, {
    username: "operator",
    password: OPERATOR_PASSWORD,
    topics: [EVENT_TOPIC, STATE_TOPIC],
    qos: 1,
  });
  await sub.subscribed;
  return sub;
};

/** Time (simulated) the phone spent not registered between `from` and `to`, from its statuses. */
function downtime(rig: Rig, from: number, to: number): number {
  let down = 0;
  let since: number | undefined;
  const before = rig.statuses.filter((s) => s.at <= from).at(-1);
  if (before && !isUp(before)) since = from;
  for (const s of rig.statuses.filter((x) => x.at > from && x.at <= to)) {
    if (!isUp(s) && since === undefined) since = s.at;
    if (isUp(s) && since !== undefined) {
      down += s.at - since;
      since = undefined;
    }
  }
  return since === undefined ? down : down + (to - since);
}

describe.skipIf(!hasMosquitto && !CI)(
  `the broker down for 10 minutes (simulated)${hasMosquitto ? "" : ` — skipped: ${MOSQUITTO_MISSING}`}`,
  () => {
    let lab: Lab;
    let broker: Mosquitto | undefined;
    const nodes: Node[] = [];
    const subs: SubProcess[] = [];
    const relays: Array<Awaited<ReturnType<typeof startRelay>>> = [];

    beforeAll(async () => {
      if (!hasMosquitto) throw new Error(MOSQUITTO_MISSING);
      lab = await startLab({ site: "branch", expires: EXPIRES_S });
    });

    afterEach(async () => {
      for (const n of nodes.splice(0)) await shutdown(lab, n).catch(() => {});
      // mosquitto_sub may sit out a SIGTERM while it waits for the broker; the exit hook kills it.
      for (const s of subs.splice(0)) await Promise.race([s.stop(), realSleep(5_000)]);
      for (const r of relays.splice(0)) await r.down();
      await broker?.dispose();
      broker = undefined;
      lab.wan.restore();
      await lab.sba.start();
      await lab.pool.start();
    });

    afterAll(async () => {
      await lab?.stop();
    });

    const startBroker = async () => {
      broker = await startMosquitto({
        users: [
          { username: DEVICE, password: PHONE_PASSWORD },
          { username: "operator", password: OPERATOR_PASSWORD },
        ],
        acl: ACL,
      });
      return broker;
    };

    /** Boots, registers, and waits until every event so far is at the subscriber and out of flash. */
    const bootConnected = async (b: Mosquitto, sub: SubProcess, storeDir: string, url = b.url) => {
      const n = await boot(lab, storeDir, settingsFor(url));
      nodes.push(n);
      const delivered = await drive(n.rig.clock, n.busy, 30_000, {
        until: () =>
          n.link.status()?.state === "connected" && ackedSeqs(n.watch).length === n.queued().length,
      });
      expect(delivered, `boot events not delivered: ${JSON.stringify(n.link.status())}`).toBe(true);
      await waitReal(
        "the subscriber to see the boot events",
        () => eventsOf(parseLines(sub.lines())).length === n.queued().length,
      );
      await waitReal("the outbox in flash to empty", () => queuedInFlash(storeDir) === 0, 5_000);
      return n;
    };

    /** The broker is back: a fresh subscriber, then simulated time until the backlog has arrived. */
    const reconnectAndDrain = async (
      b: Mosquitto,
      n: Node,
      storeDir: string,
      total: number,
      afterRestart: () => Promise<void> = async () => {},
    ) => {
      await b.restart();
      await afterRestart();
      const sub = await subscribe(b);
      subs.push(sub);
      const t0 = n.rig.clock.monotonic();
      const delivered = await drive(n.rig.clock, n.busy, 120_000, {
        until: () => ackedSeqs(n.watch).includes(total),
      });
      expect(delivered, `backlog not delivered: ${JSON.stringify(n.fleet.slice(-3))}`).toBe(true);
      const backoffCapMs = 60_000;
      // The agent was backing off (capped at 60 s): it is back within one capped wait.
      expect(n.rig.clock.monotonic() - t0).toBeLessThanOrEqual(backoffCapMs + 1_000);
      await waitReal("the subscriber to see the backlog", () =>
        eventsOf(parseLines(sub.lines())).some((e) => e.event.seq === total),
      );
      await waitReal("the outbox in flash to empty", () => readOutbox(storeDir).entries.length === 0, 5_000);
      return sub;
    };

    it("events of the outage wait in flash and arrive in order, none lost; SIP registers throughout", {
      timeout: 120_000,
    }, async () => {
      const b = await startBroker();
      const storeDir = await signedInStore(lab);
      const sub1 = await subscribe(b);
      subs.push(sub1);
      const relay = await startRelay(b.port);
      relays.push(relay);
      const n = await bootConnected(b, sub1, storeDir, relay.url);
      const { rig, link } = n;
      expect(eventsOf(parseLines(sub1.lines())).at(-1)?.event).toMatchObject({
        type: "state",
        to: "registered",
        registrar: lab.ready.sba,
      });
      const firstState = parseLines(sub1.lines())
        .filter((m) => m.topic === STATE_TOPIC)
        .map((m) => JSON.parse(m.payload) as Record<string, unknown>)
        .at(-1);
      const birthBefore = firstState?.["birthSeq"] as number;

      // One more event reaches the broker (and the subscriber), but its PUBACK is lost on the way
      // back: the broker dies with it in flight. QoS 1 says: sent again.
      relay.swallow = true;
      link.onCertificate({ type: "renewed" });
      await waitReal("the subscriber to get the event in flight", () =>
        eventsOf(parseLines(sub1.lines())).some((e) => e.event.seq === n.queued().length),
      );
      const before = eventsOf(parseLines(sub1.lines()));
      const inFlight = before.at(-1)!;
      expect(inFlight.event).toMatchObject({ type: "certificate", lifecycle: "renewed" });
      expect(ackedSeqs(n.watch)).not.toContain(inFlight.event.seq);

      // ── the broker goes away ──
      await b.stop();
      await waitReal("the agent to notice", () => link.status()?.state !== "connected");
      await relay.down();
      const t0 = rig.clock.monotonic();
      const statusMark = rig.statuses.length;
      const sba0 = lab.sba.stats.registered;
      const pool0 = lab.pool.stats.registered;
      const attempts0 = n.watch.attempts.length;
      const queued0 = n.queued().length;
      const fleet0 = n.fleet.length;

      // Two minutes of plain refreshes, and a certificate lifecycle event (as phone.ts forwards it).
      expect(await drive(rig.clock, n.busy, 60_000)).toBe(true);
      link.onCertificate({ type: "renewal-due" });
      expect(await drive(rig.clock, n.busy, 60_000)).toBe(true);
      // The SBA dies: the phone hands over to the pool (U(0, 40 s)), limited.
      await lab.sba.stop();
      const onPool = await drive(rig.clock, n.busy, 90_000, {
        until: () => rig.statuses.slice(statusMark).some((s) => s.state === "limited"),
      });
      expect(onPool).toBe(true);
      expect(rig.statuses.at(-1)).toMatchObject({
        state: "limited",
        registrar: lab.ready.pool,
        primary: false,
      });
      expect(await drive(rig.clock, n.busy, 60_000)).toBe(true);
      // The SBA returns: the fail-back probe (60 s) brings the phone home.
      await lab.sba.start();
      const home = rig.statuses.length;
      const back = await drive(rig.clock, n.busy, 150_000, {
        until: () => rig.statuses.slice(home).some((s) => s.state === "registered" && s.primary === true),
      });
      expect(back).toBe(true);
      expect(await drive(rig.clock, n.busy, t0 + OUTAGE_MS - rig.clock.monotonic())).toBe(true);
      await settle(lab, rig);
      const t1 = rig.clock.monotonic();
      expect(t1 - t0).toBe(OUTAGE_MS);

      // MQTT never blocked SIP: refreshes went on, at the SBA and then at the pool, and the only
      // gap was the hand-over after the SBA died.
      const during = rig.statuses.slice(statusMark);
      expect(during.filter((s) => s.state === "failed" || s.state === "sign-in-required")).toEqual([]);
      expect(lab.sba.stats.registered - sba0).toBeGreaterThanOrEqual(3);
      expect(lab.pool.stats.registered - pool0).toBeGreaterThanOrEqual(1);
      expect(downtime(rig, t0, t1)).toBeLessThanOrEqual(45_000);
      expect(rig.statuses.at(-1)).toMatchObject({
        state: "registered",
        registrar: lab.ready.sba,
        primary: true,
      });
      expect(n.phone.state).toBe("registered");
      // The agent never connected, and retried with backoff, not in a loop.
      expect(n.fleet.slice(fleet0).filter((s) => s.state === "connected")).toEqual([]);
      const tries = n.watch.attempts.length - attempts0;
      expect(tries).toBeGreaterThanOrEqual(5);
      expect(tries).toBeLessThanOrEqual(25);

      // Flash holds every event of the outage, in seq order, after the last one delivered.
      const total = n.queued().length;
      const outage = n.queued().slice(queued0);
      expect(outage).toEqual(expect.arrayContaining(["state", "failover", "failback", "certificate"]));
      await waitReal("the outbox to be saved", () => readOutbox(storeDir).nextSeq === total + 1, 5_000);
      const flash = readOutbox(storeDir);
      // The one in flight at the cut is still there, first.
      expect(flash.entries[0]).toEqual({ seq: inFlight.event.seq, payload: inFlight.payload });
      expect(flash.entries.map((e) => e.seq)).toEqual(
        Array.from({ length: total - inFlight.event.seq + 1 }, (_, i) => inFlight.event.seq + i),
      );
      expect(flash.dropped).toBe(0);
      const types = flash.entries.map((e) => JSON.parse(e.payload) as EventPayload);
      expect(types).toContainEqual(
        expect.objectContaining({ type: "state", to: "limited", registrar: lab.ready.pool, primary: false }),
      );
      expect(types).toContainEqual(expect.objectContaining({ type: "failover", to: lab.ready.pool }));
      expect(types).toContainEqual(
        expect.objectContaining({ type: "state", to: "registered", registrar: lab.ready.sba, primary: true }),
      );
      expect(types).toContainEqual(
        expect.objectContaining({ type: "failback", from: lab.ready.pool, to: lab.ready.sba }),
      );
      expect(types).toContainEqual(
        expect.objectContaining({ type: "certificate", lifecycle: "renewal-due" }),
      );

      // ── the broker is back ──
      const sub2 = await reconnectAndDrain(b, n, storeDir, total, async () => {
        relay.swallow = false;
        await relay.up();
      });
      const after = eventsOf(parseLines(sub2.lines()));
      expect(after.every((e) => e.qos === 1)).toBe(true);
      const { bySeq, duplicates } = checkDelivery([...before, ...after].map((e) => e.payload));
      expect(bySeq.size).toBe(total);
      // Exactly one repeat: the event whose PUBACK was lost, byte for byte.
      expect(duplicates).toBe(1);
      expect(after[0]?.payload).toBe(inFlight.payload);
      // What arrived is exactly what waited in flash, built when it happened.
      for (const e of flash.entries) expect(bySeq.get(e.seq)).toBe(e.payload);
      const ts = [...bySeq.values()].map((p) => Date.parse((JSON.parse(p) as EventPayload).ts));
      expect(ts).toEqual([...ts].sort((a, c) => a - c));
      // The retained state on the returned broker: home again, a new session.
      await waitReal("the state on the broker", () =>
        parseLines(sub2.lines()).some((m) => m.topic === STATE_TOPIC),
      );
      const state = parseLines(sub2.lines())
        .filter((m) => m.topic === STATE_TOPIC)
        .map((m) => JSON.parse(m.payload) as Record<string, unknown>)
        .at(-1);
      expect(state).toMatchObject({ state: "registered", registrar: lab.ready.sba, primary: true });
      expect(state?.["birthSeq"]).toBeGreaterThan(birthBefore);
      expect(n.logs.filter((l) => l.level === "error")).toEqual([]);
    });

    it("a reboot in the middle of the outage: the queued events survive it, seq continues", {
      timeout: 120_000,
    }, async () => {
      const b = await startBroker();
      const storeDir = await signedInStore(lab);
      const sub1 = await subscribe(b);
      subs.push(sub1);
      const first = await bootConnected(b, sub1, storeDir);
      const before = eventsOf(parseLines(sub1.lines()));

      // SIGKILL this time: no goodbye to anyone.
      await b.kill();
      await waitReal("the agent to notice", () => first.link.status()?.state !== "connected");
      const t0 = first.rig.clock.monotonic();
      await lab.sba.stop();
      expect(
        await drive(first.rig.clock, first.busy, 90_000, {
          until: () => first.phone.state === "limited",
        }),
      ).toBe(true);
      expect(await drive(first.rig.clock, first.busy, 30_000)).toBe(true);
      const firstTotal = first.queued().length;
      await waitReal("the outbox to be saved", () => readOutbox(storeDir).nextSeq === firstTotal + 1, 5_000);
      const elapsed = first.rig.clock.monotonic() - t0;

      // The phone process goes away and starts again from the same flash.
      nodes.splice(nodes.indexOf(first), 1);
      await shutdown(lab, first);
      const kept = readOutbox(storeDir);
      const lastSeen = Math.max(...before.map((e) => e.event.seq));
      expect(kept.entries.length).toBeGreaterThan(0);
      expect(kept.entries[0]!.seq).toBe(lastSeen + 1);
      expect(kept.entries.at(-1)!.seq).toBe(firstTotal);

      const second = await boot(lab, storeDir, settingsFor(b.url), first.rig.clock.now());
      nodes.push(second);
      const { rig } = second;
      expect(rig.statuses.find(isUp)).toMatchObject({ state: "limited", registrar: lab.ready.pool });
      // The rest of the ten minutes: the SBA returns, the phone goes home.
      await lab.sba.start();
      expect(
        await drive(rig.clock, second.busy, 150_000, {
          until: () => second.phone.state === "registered",
        }),
      ).toBe(true);
      const rest = OUTAGE_MS - elapsed - rig.clock.monotonic();
      if (rest > 0) expect(await drive(rig.clock, second.busy, rest)).toBe(true);
      await settle(lab, rig);
      expect(second.phone.state).toBe("registered");
      expect(second.fleet.filter((s) => s.state === "connected")).toEqual([]);

      const total = firstTotal + second.queued().length;
      await waitReal("the outbox to be saved", () => readOutbox(storeDir).nextSeq === total + 1, 5_000);
      const flash = readOutbox(storeDir);
      // The entries from before the reboot are still there, unchanged, and the new boot's follow.
      expect(flash.entries.slice(0, kept.entries.length)).toEqual(kept.entries);
      expect(flash.entries.map((e) => e.seq)).toEqual(
        Array.from({ length: total - kept.entries[0]!.seq + 1 }, (_, i) => kept.entries[0]!.seq + i),
      );
      const rebooted = flash.entries.map((e) => JSON.parse(e.payload) as EventPayload);
      expect(rebooted.find((e) => e.to === "booting")?.seq).toBe(firstTotal + 1);
      expect(flash.birthSeq).toBeGreaterThan(kept.birthSeq);

      const sub2 = await reconnectAndDrain(b, second, storeDir, total);
      const after = eventsOf(parseLines(sub2.lines()));
      const { bySeq, duplicates } = checkDelivery([...before, ...after].map((e) => e.payload));
      expect(bySeq.size).toBe(total);
      expect(duplicates).toBeLessThanOrEqual(1);
      for (const e of flash.entries) expect(bySeq.get(e.seq)).toBe(e.payload);
      const states = [...bySeq.values()]
        .map((p) => JSON.parse(p) as EventPayload)
        .filter((e) => e.type === "state")
        .map((e) => e.to);
      // Both boots' stories, in the order they happened.
      expect(states.indexOf("limited")).toBeLessThan(states.lastIndexOf("booting"));
      expect(states.at(-1)).toBe("registered");
      expect([...first.logs, ...second.logs].filter((l) => l.level === "error")).toEqual([]);
    });
  },
);
