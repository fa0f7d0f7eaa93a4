import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import {
  ClockService,
  type ClockServiceEvent,
  type LastGoodTimeStore,
} from "../../firmware/discovery/clock-service.ts";

class MemoryStore implements LastGoodTimeStore {
  constructor(public value?: number) {}
  saves = 0;
  async load() {
    return this.value;
  }
  async save(ms: number) {
    this.value = ms;
    this.saves++;
  }
}

const BOOT_1970 = 0;
const LAST_GOOD = Date.UTC(2026, 2, 1);

describe("ClockService", () => {
  it("restores the last good time at boot and keeps it ticking on monotonic time", async () => {
    const base = new ManualClock(BOOT_1970);
    const svc = new ClockService({ base, store: new MemoryStore(LAST_GOOD) });
    const events: ClockServiceEvent[] = [];
    svc.on((e) => events.push(e));
    expect(await svc.restore()).toBe(LAST_GOOD);
    base.advance(5000);
    expect(svc.now()).toBe(LAST_GOOD + 5000);
    expect(events).toEqual([{ type: "restored", epochMs: LAST_GOOD }]);
    expect(svc.isSet()).toBe(false);
  });

  it("SNTP sets the clock, emits clock-set and saves it as the last good time", async () => {
    const base = new ManualClock(BOOT_1970);
    const store = new MemoryStore(LAST_GOOD);
    const svc = new ClockService({ base, store });
    await svc.restore();
    const events: ClockServiceEvent[] = [];
    svc.on((e) => events.push(e));
    const offset = LAST_GOOD + 86_400_000;
    await svc.set({ offsetMs: offset, server: "192.0.2.1:123" });
    expect(svc.now()).toBe(offset);
    expect(events).toEqual([
      {
        type: "clock-set",
        offsetMs: offset,
        server: "192.0.2.1:123",
        source: "sntp",
        epochMs: offset,
        heldMs: 0,
      },
    ]);
    expect(store.value).toBe(offset);
    expect(svc.isSet()).toBe(true);
  });

  it("never goes backwards: a backward correction holds time still until it catches up", async () => {
    const base = new ManualClock(LAST_GOOD);
    const svc = new ClockService({ base });
    const t0 = svc.now();
    const e = await svc.set({ offsetMs: -3000 });
    expect(e.type === "clock-set" && e.heldMs).toBe(3000);
    expect(svc.now()).toBe(t0);
    base.advance(2000);
    expect(svc.now()).toBe(t0);
    base.advance(2000);
    expect(svc.now()).toBe(t0 + 1000);
    base.setWallClock(base.now() - 60_000); // the base clock itself steps back
    expect(svc.now()).toBe(t0 + 1000);
  });

  it("a restored floor ahead of SNTP time is dropped at clock-set, without stepping back", async () => {
    const base = new ManualClock(BOOT_1970);
    const svc = new ClockService({ base, store: new MemoryStore(LAST_GOOD + 10_000) });
    await svc.restore();
    const before = svc.now();
    await svc.set({ offsetMs: LAST_GOOD });
    expect(svc.now()).toBe(before);
    base.advance(10_001);
    expect(svc.now()).toBe(LAST_GOOD + 10_001);
  });

  it("saves periodically and survives a failing store", async () => {
    const base = new ManualClock(LAST_GOOD);
    const store = new MemoryStore();
    const svc = new ClockService({ base, store });
    await svc.set({ offsetMs: 0 });
    svc.startPeriodicSave(1000);
    base.advance(3000);
    await Promise.resolve();
    expect(store.saves).toBe(4);
    svc.stopPeriodicSave();
    expect(base.pendingTimers()).toBe(0);
    const broken = new ClockService({
      base,
      store: {
        load: () => Promise.reject(new Error("flash")),
        save: () => Promise.reject(new Error("flash")),
      },
    });
    expect(await broken.restore()).toBeUndefined();
    await expect(broken.set({ offsetMs: 1 })).resolves.toMatchObject({ type: "clock-set" });
  });
});
