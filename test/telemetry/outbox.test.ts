/**
 * firmware/telemetry/outbox.ts and rate-limit.ts: bounds, drop-oldest with a counter, flash round
 * trip with seq and birthSeq continuity, serialised and coalesced saves, retry after a failed
 * save; and the token bucket that paces a backlog.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { createLogger, type LogRecord, silentLogger } from "../../firmware/core/logger.ts";
import { Outbox } from "../../firmware/telemetry/outbox.ts";
import { TokenBucket } from "../../firmware/telemetry/rate-limit.ts";
import { MemoryOutboxStore, run, settle } from "./fake-mqtt.ts";

function outbox(
  store = new MemoryOutboxStore(),
  capacity = 5,
  clock = new ManualClock(),
  logs?: LogRecord[],
) {
  const logger = logs ? createLogger((r) => logs.push(r)) : silentLogger;
  return { box: new Outbox({ store, capacity, clock, logger }), store, clock };
}

const ev = (seq: number) => `{"seq":${seq}}`;

describe("outbox", () => {
  it("numbers events, keeps at most its capacity, drops the oldest and counts them", async () => {
    const { box } = outbox();
    await box.load();
    for (let i = 0; i < 8; i++) box.push(ev);
    expect(box.size).toBe(5);
    expect(box.dropped).toBe(3);
    expect(box.peek()).toEqual({ seq: 4, payload: '{"seq":4}' });
  });

  it("removes only the oldest, only by its seq (after its PUBACK)", async () => {
    const { box } = outbox();
    await box.load();
    box.push(ev);
    box.push(ev);
    box.remove(2); // not the oldest: ignored
    expect(box.size).toBe(2);
    box.remove(1);
    expect(box.peek()?.seq).toBe(2);
    box.discard(2);
    expect(box.size).toBe(0);
    expect(box.dropped).toBe(1);
  });

  it("survives a restart: entries, dropped counter, seq and birthSeq continue", async () => {
    const store = new MemoryOutboxStore();
    const a = outbox(store).box;
    await a.load();
    expect(await a.advanceBirth()).toBe(1);
    for (let i = 0; i < 7; i++) a.push(ev);
    a.remove(3);
    await a.flush();
    expect(store.saved).toMatchObject({ v: 1, nextSeq: 8, birthSeq: 1, dropped: 2 });

    const b = outbox(store).box;
    await b.load();
    expect(b.size).toBe(4);
    expect(b.dropped).toBe(2);
    expect(b.birthSeq).toBe(1);
    expect(b.push(ev).seq).toBe(8);
    expect(await b.advanceBirth()).toBe(2);
    expect(b.peek()?.seq).toBe(4);
  });

  it("a smaller capacity after a restart drops (and counts) the oldest saved entries", async () => {
    const store = new MemoryOutboxStore();
    const a = outbox(store, 10).box;
    await a.load();
    for (let i = 0; i < 10; i++) a.push(ev);
    await a.flush();
    const b = outbox(store, 4).box;
    await b.load();
    expect(b.size).toBe(4);
    expect(b.dropped).toBe(6);
    expect(b.peek()?.seq).toBe(7);
  });

  it("a damaged snapshot starts empty, with a log line", async () => {
    const logs: LogRecord[] = [];
    const store = new MemoryOutboxStore({ v: 1, nextSeq: -1 } as never);
    const { box } = outbox(store, 5, new ManualClock(), logs);
    await box.load();
    expect(box.size).toBe(0);
    expect(logs.map((l) => l.fields?.code)).toContain("outbox-damaged");
    // entries with a bad shape are dropped (counted); seq continues after the highest good one
    const s2 = new MemoryOutboxStore({
      v: 1,
      nextSeq: 3,
      birthSeq: 2,
      dropped: 0,
      entries: [{ seq: 9, payload: "x" }, { seq: "a" } as never, { seq: 4, payload: "y" }],
    });
    const b = outbox(s2).box;
    await b.load();
    expect(b.peek()?.seq).toBe(4);
    expect(b.dropped).toBe(1);
    expect(b.push(ev).seq).toBe(10);
  });

  it("never runs two saves at once and coalesces changes made meanwhile into one more", async () => {
    const store = new MemoryOutboxStore();
    store.manual = true;
    const { box } = outbox(store, 100);
    await box.load();
    box.push(ev);
    box.push(ev); // the same turn: one save
    await settle();
    expect(store.heldCount).toBe(1);
    for (let i = 0; i < 20; i++) box.push(ev);
    await settle();
    expect(store.heldCount).toBe(1);
    store.release();
    await settle();
    expect(store.heldCount).toBe(1); // exactly one more, holding all 22
    store.release();
    await box.flush();
    expect(store.saves).toBe(2);
    expect(store.maxActive).toBe(1);
    expect(store.saved?.entries).toHaveLength(22);
  });

  it("a failed save is logged, never thrown, and retried on the clock", async () => {
    const logs: LogRecord[] = [];
    const store = new MemoryOutboxStore();
    store.failing = true;
    const clock = new ManualClock();
    const { box } = outbox(store, 5, clock, logs);
    await box.load();
    box.push(ev);
    await box.flush();
    expect(store.saved).toBeUndefined();
    expect(logs.filter((l) => l.fields?.code === "store-io")).toHaveLength(1);
    expect(await box.advanceBirth()).toBe(1); // flash broken: the session still gets its number
    store.failing = false;
    await run(clock, 1_000);
    expect(store.saved).toMatchObject({ birthSeq: 1, entries: [{ seq: 1 }] });
  });

  it("failed saves back off, doubling up to a minute", async () => {
    const store = new MemoryOutboxStore();
    store.failing = true;
    const clock = new ManualClock();
    const { box } = outbox(store, 5, clock);
    await box.load();
    box.push(ev);
    await settle();
    const gaps: number[] = [];
    for (let i = 0; i < 9; i++) {
      gaps.push(clock.nextTimerIn()!);
      await run(clock, clock.nextTimerIn()!);
    }
    expect(gaps).toEqual([1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    box.close();
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("token bucket", () => {
  it("allows a second's worth at once, then the rate", () => {
    const clock = new ManualClock();
    const b = new TokenBucket(clock, 20);
    let n = 0;
    while (b.take()) n++;
    expect(n).toBe(20);
    expect(b.waitMs()).toBe(50);
    clock.advance(49);
    expect(b.take()).toBe(false);
    clock.advance(1);
    expect(b.take()).toBe(true);
    clock.advance(10_000); // a quiet hour buys no more than one second's burst
    n = 0;
    while (b.take()) n++;
    expect(n).toBe(20);
  });

  it("paces 200 takes at 20/s over about 9 s", () => {
    const clock = new ManualClock();
    const b = new TokenBucket(clock, 20);
    let sent = 0;
    while (sent < 200) {
      if (b.take()) sent++;
      else clock.advance(b.waitMs());
    }
    expect(clock.monotonic()).toBe(9_000);
  });
});
