/**
 * Issue 9 §3: the Clock port handles any delay. Node turns a timer over 2³¹−1 ms into 1 ms, so
 * a server-given 3e9 ms reached setTimeout as a 1 ms spin; NaN and negative delays count as 0.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { MAX_PLATFORM_TIMER_MS, ManualClock, timerDelay } from "../../firmware/core/clock.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";

afterEach(() => {
  vi.useRealTimers();
});

describe("SystemClock: long timers are chained", () => {
  it("a 3e9 ms timer does not fire within a short real wait", async () => {
    const clock = new SystemClock();
    let fired = 0;
    const t = clock.setTimer(3e9, () => fired++);
    await new Promise((r) => setTimeout(r, 60));
    t.cancel();
    expect(fired).toBe(0);
  });

  it("a 3e9 ms timer fires once, when 3e9 ms of (fake) monotonic time have passed, not before", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const clock = new SystemClock();
    const start = clock.monotonic();
    const firedAt: number[] = [];
    clock.setTimer(3e9, () => firedAt.push(clock.monotonic() - start));
    vi.advanceTimersByTime(MAX_PLATFORM_TIMER_MS + 1);
    expect(firedAt).toEqual([]);
    vi.advanceTimersByTime(3e9 - MAX_PLATFORM_TIMER_MS - 2);
    expect(firedAt).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(firedAt).toEqual([3e9]);
    vi.advanceTimersByTime(1e10);
    expect(firedAt).toHaveLength(1);
  });

  it("a chained timer can be cancelled at any link of the chain", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const clock = new SystemClock();
    let fired = 0;
    const t = clock.setTimer(1e10, () => fired++);
    vi.advanceTimersByTime(3 * MAX_PLATFORM_TIMER_MS);
    t.cancel();
    vi.advanceTimersByTime(1e10);
    expect(fired).toBe(0);
  });

  it("NaN and negative delays fire once on a later turn, never synchronously; +Infinity never fires", () => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] });
    const clock = new SystemClock();
    const fired: string[] = [];
    clock.setTimer(Number.NaN, () => fired.push("nan"));
    clock.setTimer(-5_000, () => fired.push("negative"));
    clock.setTimer(Number.POSITIVE_INFINITY, () => fired.push("infinity"));
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(0);
    expect(fired.sort()).toEqual(["nan", "negative"]);
    vi.advanceTimersByTime(10 * MAX_PLATFORM_TIMER_MS);
    expect(fired).toHaveLength(2);
  });
});

describe("ManualClock keeps the same contract", () => {
  it("fires a 3e9 ms timer exactly at 3e9", () => {
    const clock = new ManualClock();
    const firedAt: number[] = [];
    clock.setTimer(3e9, () => firedAt.push(clock.monotonic()));
    clock.advance(3e9 - 1);
    expect(firedAt).toEqual([]);
    clock.advance(1);
    expect(firedAt).toEqual([3e9]);
  });

  it("NaN and negative delays count as 0; +Infinity never fires and is not the next timer", () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    clock.setTimer(Number.POSITIVE_INFINITY, () => fired.push("infinity"));
    expect(clock.nextTimerIn()).toBeUndefined();
    clock.setTimer(Number.NaN, () => fired.push("nan"));
    clock.setTimer(-1, () => fired.push("negative"));
    expect(clock.nextTimerIn()).toBe(0);
    clock.advance(0);
    expect(fired).toEqual(["nan", "negative"]);
    clock.advance(1e15);
    expect(fired).toEqual(["nan", "negative"]);
    expect(clock.monotonic()).toBe(1e15);
  });

  it("a 0 ms timer re-armed from its own callback fails the test instead of hanging it", () => {
    const clock = new ManualClock();
    // Bounded, so that a clock without the guard fails this test rather than hanging it.
    let left = 100_000;
    const spin = () => {
      if (left-- > 0) clock.setTimer(0, spin);
    };
    spin();
    const limit = ManualClock.maxFiringsPerInstant;
    ManualClock.maxFiringsPerInstant = 1_000;
    try {
      expect(() => clock.advance(1)).toThrow(/timers fired at one instant/);
    } finally {
      ManualClock.maxFiringsPerInstant = limit;
    }
  });

  it("timerDelay reads the contract", () => {
    expect([Number.NaN, -1, 0, 5, Number.POSITIVE_INFINITY].map(timerDelay)).toEqual([
      0,
      0,
      0,
      5,
      Number.POSITIVE_INFINITY,
    ]);
  });
});
