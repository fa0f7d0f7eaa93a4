/**
 * The fleet session (firmware/telemetry/fleet-agent.ts) on a scripted broker and a manual clock:
 * CONNECT contents and the will, broker rotation, backoff, reconnect spread, the keep-alive
 * watchdog, birthSeq, per-connection handlers, clean stop, and events through a long outage.
 */
import { describe, expect, it } from "vitest";
import { BROKERS, connected, harness, MemoryOutboxStore, settle, T } from "./fake-mqtt.ts";

const willSeq = (h: { port: { connects: Array<{ options: { will: { payload: string } } }> } }, i: number) =>
  JSON.parse(h.port.connects[i]!.options.will.payload).birthSeq as number;

describe("fleet agent: connecting", () => {
  it("CONNECTs with the will, credentials and keep-alive, subscribes, publishes retained state", async () => {
    const h = await connected({
      settings: { username: "phone-1", password: "pw", servername: "mqtt.lab.test" },
    });
    const o = h.port.connects[0]!.options;
    expect(o).toMatchObject({
      url: BROKERS[0],
      clientId: "phone-1",
      keepaliveS: 30,
      connectTimeoutMs: 10_000,
      username: "phone-1",
      password: "pw",
      servername: "mqtt.lab.test",
      sessionExpiryS: 0,
      will: { topic: T.state, payload: '{"v":1,"state":"lost","birthSeq":1}', qos: 1, retain: true },
    });
    expect(h.conn.subscriptions).toEqual([[...T.subscriptions]]);
    const state = h.port.published.find((p) => p.topic === T.state)!;
    expect(state.o).toMatchObject({ qos: 1, retain: true });
    expect(JSON.parse(state.payload)).toMatchObject({ v: 1, state: "registered", birthSeq: 1 });
    expect(h.statuses).toEqual([
      { state: "connecting", broker: "mqtts://mqtt1.lab.test:8883" },
      { state: "connected", broker: "mqtts://mqtt1.lab.test:8883" },
    ]);
  });

  it("rotates through the broker list on every failure and loss", async () => {
    const h = harness();
    h.port.refuse("mqtt-unreachable").accept();
    await h.agent.start();
    await h.run(2_000);
    expect(h.port.connects.map((c) => [c.options.url, c.outcome])).toEqual([
      [BROKERS[0], "refuse"],
      [BROKERS[1], "accept"],
    ]);
    h.port.current!.drop();
    await h.run(30_000);
    expect(h.port.connects.map((c) => c.options.url)).toEqual([BROKERS[0], BROKERS[1], BROKERS[0]]);
    expect(h.statuses.find((s) => s.state === "disconnected")).toMatchObject({
      broker: "mqtts://mqtt1.lab.test:8883",
      error: { code: "mqtt-unreachable" },
    });
  });

  it("the backoff grows from 1 s and is capped at a minute, with jitter", async () => {
    const h = harness();
    h.port.fallback = { kind: "refuse", code: "mqtt-refused" };
    await h.agent.start();
    await h.run(20 * 60_000);
    const at = h.port.connects.map((c) => c.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    for (const [i, g] of gaps.entries()) {
      const full = Math.min(60_000, 1_000 * 2 ** i);
      expect(g, `gap ${i}`).toBeGreaterThanOrEqual(full / 2);
      expect(g, `gap ${i}`).toBeLessThanOrEqual(full);
    }
    expect(gaps.length).toBeGreaterThan(20);
    expect(new Set(gaps.slice(8)).size).toBeGreaterThan(5); // jittered, not lock-step
    const retry = h.statuses.filter((s) => s.state === "disconnected").map((s) => s.retryInMs);
    expect(retry.slice(0, gaps.length)).toEqual(gaps);
  });

  it("our own CONNECT deadline: a broker that never answers is given up on, and a late answer closed", async () => {
    const h = harness({ settings: { connectTimeoutMs: 5_000 } });
    h.port.hang();
    await h.agent.start();
    await h.run(5_999);
    expect(h.port.connects).toHaveLength(1);
    await h.run(1);
    expect(h.statuses.at(-1)).toMatchObject({ state: "disconnected", error: { code: "mqtt-timeout" } });
    await h.run(1_000);
    expect(h.port.connects).toHaveLength(2);
    expect(h.port.current?.options.url).toBe(BROKERS[1]);
  });

  it("after losing an established connection the first attempt waits U(0, 29 s)", async () => {
    const delays: number[] = [];
    for (let seed = 1; seed <= 40; seed++) {
      const h = await connected({ seed });
      await h.run(120_000); // a connection that lived
      h.conn.drop();
      const lostAt = h.clock.monotonic();
      await h.run(30_000);
      expect(h.port.connects).toHaveLength(2);
      delays.push(h.port.connects[1]!.at - lostAt);
      expect(h.statuses.at(-3)).toMatchObject({ state: "disconnected", retryInMs: delays.at(-1) });
    }
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThanOrEqual(29_000);
    // spread over the window: no second holds more than a few of the 40 phones
    expect(Math.max(...delays) - Math.min(...delays)).toBeGreaterThan(20_000);
    const perSecond = new Map<number, number>();
    for (const d of delays)
      perSecond.set(Math.floor(d / 1000), (perSecond.get(Math.floor(d / 1000)) ?? 0) + 1);
    expect(Math.max(...perSecond.values())).toBeLessThanOrEqual(5);
  });

  it("a flapping broker (connections that die at once) meets the growing backoff too", async () => {
    const h = await connected({ settings: { reconnectSpreadMs: 0 } });
    const at: number[] = [];
    for (let i = 0; i < 8; i++) {
      h.port.current!.drop();
      await h.run(61_000);
      at.push(h.port.connects.at(-1)!.at);
    }
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    expect(gaps.at(-1)).toBeGreaterThanOrEqual(30_000);
  });

  it("broker URLs with user info never reach the status or the logs", async () => {
    const h = await connected({ settings: { brokers: ["mqtts://phone:s3cr3t-pw@mqtt1.lab.test:8883"] } });
    h.conn.drop();
    await h.run(30_000);
    expect(JSON.stringify([h.statuses, h.logs])).not.toContain("s3cr3t");
    expect(h.statuses[0]).toEqual({ state: "connecting", broker: "mqtts://mqtt1.lab.test:8883" });
  });

  it("refuses settings out of range", () => {
    expect(() => harness({ settings: { brokers: [] } })).toThrow(/broker/);
    expect(() => harness({ settings: { keepaliveS: 1 } })).toThrow(/keepaliveS/);
    expect(() => harness({ settings: { intervalS: 0 } })).toThrow(/intervalS/);
    expect(() => harness({ settings: { outboxRatePerS: 0 } })).toThrow(/outboxRatePerS/);
    expect(() => harness({ settings: { deviceId: "org" } })).toThrow(/device id/);
  });
});

describe("fleet agent: watchdog and keep-alive", () => {
  it("pings run on the injected clock and keep a quiet connection up for hours", async () => {
    const h = await connected();
    await h.run(6 * 3_600_000);
    expect(h.conn.open).toBe(true);
    expect(h.port.connects).toHaveLength(1);
  });

  it("a connection silent for 1.5 × keep-alive is force-closed, not a millisecond before", async () => {
    const h = await connected();
    await h.run(10_000);
    h.conn.packet(); // the last word from the broker, at 10 s
    h.conn.silent = true;
    await h.run(44_999);
    expect(h.conn.open).toBe(true);
    await h.run(1);
    expect(h.conn.closed).toEqual({ force: true, by: "client" });
    expect(h.logs.map((l) => l.fields?.code)).toContain("mqtt-keepalive");
    expect(h.statuses.at(-1)).toMatchObject({ state: "disconnected", error: { code: "mqtt-keepalive" } });
    await h.run(30_000);
    expect(h.port.connects).toHaveLength(2);
    expect(h.port.current?.options.url).toBe(BROKERS[1]);
  });

  it("the edge's timers end with its connection: a late set() arms nothing", async () => {
    const h = await connected();
    const { timer } = h.conn.options;
    let fired = 0;
    timer.set(() => fired++, 1_000);
    await h.run(3_500);
    expect(fired).toBe(3);
    h.conn.drop();
    await h.run(30_000);
    const pending = h.clock.pendingTimers();
    timer.set(() => fired++, 1_000);
    expect(h.clock.pendingTimers()).toBe(pending);
    await h.run(10_000);
    expect(fired).toBe(3);
  });

  it("every packet feeds the watchdog", async () => {
    const h = await connected();
    h.conn.silent = true;
    for (let i = 0; i < 20; i++) {
      await h.run(40_000);
      h.conn.silent = false;
      h.conn.packet();
      h.conn.silent = true;
    }
    expect(h.conn.open).toBe(true);
  });
});

describe("fleet agent: birthSeq", () => {
  it("increments per connection, is in flash before CONNECT, in the will and in the state", async () => {
    const store = new MemoryOutboxStore();
    const h = harness({ store });
    const flashAtConnect: number[] = [];
    h.port.onConnect = () => flashAtConnect.push(store.saved?.birthSeq ?? -1);
    await h.agent.start();
    await settle();
    h.port.current!.drop();
    await h.run(30_000);
    expect(h.port.connects.map((_, i) => willSeq(h, i))).toEqual([1, 2]);
    expect(flashAtConnect).toEqual([1, 2]);
    expect(h.port.payloads(T.state).map((p) => p.birthSeq)).toEqual([1, 2]);
  });

  it("a refused CONNECT keeps the number (no session began); a timed-out one uses it up", async () => {
    const h = harness();
    h.port.refuse("mqtt-auth").refuse("mqtt-unreachable").hang().accept();
    await h.agent.start();
    await h.run(30_000);
    expect(h.port.connects.map((c) => c.outcome)).toEqual(["refuse", "refuse", "hang", "accept"]);
    expect(h.port.connects.map((_, i) => willSeq(h, i))).toEqual([1, 1, 1, 2]);
  });

  it("continues across a restart", async () => {
    const store = new MemoryOutboxStore();
    const a = await connected({ store });
    await a.agent.stop({ clean: true });
    const b = await connected({ store });
    expect(willSeq(b, 0)).toBe(2);
  });
});

describe("fleet agent: one connection at a time", () => {
  it("50 reconnects stack no handlers, timers or subscriptions", async () => {
    const h = await connected();
    const timersOnFirst = h.clock.pendingTimers();
    for (let i = 0; i < 50; i++) {
      h.port.current!.drop();
      await h.run(120_000);
      expect(h.port.current, `reconnect ${i}`).toBeDefined();
    }
    expect(h.port.connections).toHaveLength(51);
    for (const c of h.port.connections) expect(c.subscriptions).toHaveLength(1);
    expect(h.clock.pendingTimers()).toBe(timersOnFirst);
    // a ping on the current connection: exactly one reply
    h.port.current!.deliver({ topic: T.cmd("ping"), payload: "", responseTopic: "ops/r" });
    // the same on an old connection's handler (were anything to hold it): nothing
    h.port.connections[3]!.deliverStale({ topic: T.cmd("ping"), payload: "", responseTopic: "ops/r" });
    await settle();
    expect(h.port.published.filter((p) => p.topic === "ops/r")).toHaveLength(1);
  });

  it("stateChanged() publishes once per turn; the state is republished every intervalS", async () => {
    const h = await connected();
    const n = () => h.port.published.filter((p) => p.topic === T.state).length;
    expect(n()).toBe(1);
    for (let i = 0; i < 10; i++) h.agent.stateChanged();
    await settle();
    expect(n()).toBe(2);
    h.device.current = { ...h.device.current, state: "limited", limited: true };
    h.agent.stateChanged();
    await settle();
    expect(h.port.payloads(T.state).at(-1)).toMatchObject({ state: "limited", limited: true });
    await h.run(900_000);
    expect(n()).toBe(6);
    h.agent.updateSettings({ intervalS: 60 });
    await h.run(600_000);
    expect(n()).toBe(16);
  });

  it("stateChanged() while disconnected publishes nothing and throws nothing", async () => {
    const h = harness();
    h.port.fallback = { kind: "refuse", code: "mqtt-unreachable" };
    await h.agent.start();
    h.agent.stateChanged();
    h.agent.event("state", { state: "registered" });
    await h.run(5_000);
    expect(h.port.published).toEqual([]);
  });

  it("a clean stop leaves retained offline and DISCONNECTs (no will); a plain stop lets the will fire", async () => {
    const h = await connected();
    await h.agent.stop({ clean: true });
    const last = h.port.published.at(-1)!;
    expect(last.topic).toBe(T.state);
    expect(last.o).toMatchObject({ qos: 1, retain: true });
    expect(JSON.parse(last.payload)).toMatchObject({ v: 1, state: "offline", birthSeq: 1 });
    expect(h.conn.closed).toEqual({ force: false, by: "client" });
    expect(h.statuses.at(-1)).toEqual({ state: "stopped" });
    await h.run(600_000);
    expect(h.port.connects).toHaveLength(1);
    expect(h.clock.pendingTimers()).toBe(0);

    const g = await connected();
    await g.agent.stop();
    expect(g.port.payloads(T.state).map((p) => p.state)).toEqual(["registered"]);
    expect(g.conn.closed).toEqual({ force: true, by: "client" });
  });

  it("a clean stop against a broker that stopped answering gives up after 5 s", async () => {
    const h = await connected();
    h.conn.silent = true;
    const stopping = h.agent.stop({ clean: true });
    await h.run(5_000);
    await stopping;
    expect(h.conn.closed?.force).toBe(false);
  });
});

describe("fleet agent: events and the outbox", () => {
  it("sends events QoS 1, one in flight, the next only after the PUBACK", async () => {
    const h = await connected();
    h.conn.autoAck = false;
    for (let i = 0; i < 5; i++) h.agent.event("call.ended", { n: i });
    await settle();
    const events = () => h.port.published.filter((p) => p.topic === T.event);
    for (let i = 0; i < 5; i++) {
      expect(events()).toHaveLength(i + 1);
      expect(h.conn.unacked).toBe(1);
      h.conn.ack();
      await settle();
    }
    expect(events().map((p) => JSON.parse(p.payload).n)).toEqual([0, 1, 2, 3, 4]);
    expect(events()[0]!.o).toEqual({ qos: 1 });
  });

  it("never blocks the caller, even on a broker that has stopped acknowledging", async () => {
    const h = await connected({ settings: { outboxSize: 1_000 } });
    h.conn.silent = true;
    for (let i = 0; i < 500; i++) {
      h.agent.event("tick", { i });
      h.agent.stateChanged();
    }
    await settle();
    expect(h.conn.unacked).toBeLessThanOrEqual(3); // one event, one state, maybe the first state
    expect(h.port.published.filter((p) => p.topic === T.event)).toHaveLength(1);
  });

  it("drains a backlog at mqtt.outboxRatePerS", async () => {
    const h = harness({ settings: { outboxRatePerS: 10, outboxSize: 1_000 } });
    h.port.refuse("mqtt-unreachable");
    await h.agent.start();
    for (let i = 0; i < 100; i++) h.agent.event("tick", { i });
    await h.run(20_000);
    const sent = h.port.published.filter((p) => p.topic === T.event);
    expect(sent).toHaveLength(100);
    const t0 = h.port.connects[1]!.at;
    // a second's worth at once, then one every 100 ms
    expect(sent.map((p) => p.at - t0)).toEqual(sent.map((_, i) => Math.max(0, (i - 9) * 100)));
  });

  it("a 10-minute outage: events queued in flash, then delivered in order, exactly once", async () => {
    const h = await connected({ settings: { outboxSize: 1_000 } });
    h.port.fallback = { kind: "refuse", code: "mqtt-unreachable" };
    h.conn.drop("broker gone");
    let sent = 0;
    for (let t = 0; t < 600_000; t += 5_000) {
      h.agent.event("registration.refreshed", { n: sent++ });
      await h.run(5_000);
    }
    expect(h.port.connects.length).toBeGreaterThan(5); // kept trying the whole time
    expect(h.port.published.filter((p) => p.topic === T.event)).toEqual([]);
    await settle();
    expect(h.store.saved?.entries).toHaveLength(120);
    h.port.fallback = { kind: "accept" };
    await h.run(70_000);
    const events = h.port.payloads(T.event);
    expect(events.map((e) => e.n)).toEqual([...Array(120).keys()]);
    expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
    expect(h.store.saved?.entries).toEqual([]);
    expect(h.port.payloads(T.state).at(-1)).toMatchObject({ outbox: { queued: 0, dropped: 0 } });
  });

  it("an event unacknowledged when the connection drops is sent again on the next one (QoS 1)", async () => {
    const h = await connected();
    h.conn.autoAck = false;
    h.agent.event("a");
    h.agent.event("b");
    await settle();
    h.conn.drop();
    await h.run(30_000);
    await settle();
    const seqs = h.port.published
      .filter((p) => p.topic === T.event)
      .map((p) => [p.conn, JSON.parse(p.payload).seq]);
    expect(seqs).toEqual([
      [0, 1],
      [1, 1],
      [1, 2],
    ]);
  });

  it("seq continues across a restart, and what was queued is delivered by the next run", async () => {
    const store = new MemoryOutboxStore();
    const a = harness({ store });
    a.port.fallback = { kind: "refuse", code: "mqtt-unreachable" };
    await a.agent.start();
    a.agent.event("x");
    a.agent.event("y");
    await a.agent.stop();
    const b = await connected({ store });
    b.agent.event("z");
    await b.run(1_000);
    expect(b.port.payloads(T.event).map((e) => [e.seq, e.type])).toEqual([
      [1, "x"],
      [2, "y"],
      [3, "z"],
    ]);
  });

  it("events before start() are kept and numbered after the saved ones", async () => {
    const store = new MemoryOutboxStore({ v: 1, nextSeq: 41, birthSeq: 3, dropped: 2, entries: [] });
    const h = harness({ store });
    h.agent.event("booted");
    await h.agent.start();
    await h.run(100);
    expect(h.port.payloads(T.event)).toMatchObject([{ seq: 41, type: "booted" }]);
    expect(h.port.payloads(T.state)[0]).toMatchObject({ birthSeq: 4, outbox: { dropped: 2 } });
  });

  it("when the outbox overflows, the oldest go and the state reports how many", async () => {
    const h = harness({ settings: { outboxSize: 10 } });
    h.port.refuse("mqtt-unreachable");
    await h.agent.start();
    for (let i = 0; i < 25; i++) h.agent.event("tick", { i });
    await h.run(2_000);
    expect(h.port.payloads(T.event).map((e) => e.i)).toEqual([15, 16, 17, 18, 19, 20, 21, 22, 23, 24]);
    expect(h.port.payloads(T.state)[0]).toMatchObject({ outbox: { dropped: 15 } });
  });

  it("an event the broker refuses is dropped and counted; any other publish failure reconnects", async () => {
    const h = await connected();
    h.conn.refuseTopic = /\/event$/;
    h.agent.event("a");
    h.agent.event("b");
    await settle();
    expect(h.conn.open).toBe(true);
    expect(h.store.saved?.dropped).toBe(2);
    h.conn.refuseTopic = undefined;
    h.conn.autoAck = false;
    h.agent.event("c");
    await settle();
    h.conn.drop(); // the publish of c rejects with mqtt-closed
    await h.run(30_000);
    expect(h.port.payloads(T.event).map((e) => e.type)).toEqual(["a", "b", "c", "c"]);
  });

  it("a bad event type is dropped with a log line; event() never throws", async () => {
    const h = await connected();
    expect(() => h.agent.event("Not A Code")).not.toThrow();
    await settle();
    expect(h.port.payloads(T.event)).toEqual([]);
    expect(h.logs.map((l) => l.fields?.code)).toContain("telemetry-bad-event");
  });
});
