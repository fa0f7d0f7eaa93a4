/** The health decision on a manual clock, and the state names it shares with the phone. */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { PHONE_STATES } from "../../firmware/phone/lifecycle.ts";
import {
  BUSY_STATES,
  HEALTHY_STATES,
  healthWindowMs,
  isBusyStatus,
  isHealthyStatus,
  judge,
  parseSystemctlShow,
  type ServiceSample,
  watchHealth,
} from "../../firmware/update/health.ts";

const sample = (statusText: string, nRestarts = 0, activeState = "active"): ServiceSample => ({
  activeState,
  statusText,
  nRestarts,
});

async function run(clock: ManualClock, p: Promise<unknown>, step = 5_000): Promise<void> {
  let done = false;
  void p.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  for (let i = 0; !done && i < 10_000; i++) {
    for (let k = 0; k < 5; k++) await Promise.resolve();
    const next = clock.nextTimerIn();
    if (!done && next !== undefined) clock.advance(Math.min(next, step));
  }
}

describe("update health", () => {
  it("the states it reads are the phone's own (lifecycle.ts), the call states aside", () => {
    for (const s of HEALTHY_STATES) expect(PHONE_STATES).toContain(s);
    expect(PHONE_STATES).toContain("signing-in");
    expect(BUSY_STATES).toContain("signing-in");
  });

  it("reads StatusText by its first word", () => {
    expect(isHealthyStatus("registered")).toBe(true);
    expect(isHealthyStatus("registered registrar=sba:5061 primary")).toBe(true);
    expect(isHealthyStatus("limited (backup registrar)")).toBe(true);
    expect(isHealthyStatus("registering")).toBe(false);
    expect(isHealthyStatus("sign-in-required")).toBe(false);
    expect(isHealthyStatus("")).toBe(false);
    expect(isBusyStatus("signing-in")).toBe(true);
    expect(isBusyStatus("in-call 4711")).toBe(true);
    expect(isBusyStatus("sign-in-required")).toBe(false);
    expect(isBusyStatus("registered")).toBe(false);
  });

  it("parses systemctl show", () => {
    expect(parseSystemctlShow("ActiveState=active\nStatusText=registered x=1\nNRestarts=2\n")).toEqual({
      activeState: "active",
      statusText: "registered x=1",
      nRestarts: 2,
    });
    expect(parseSystemctlShow("")).toEqual({ activeState: "", statusText: "", nRestarts: undefined });
  });

  it("judges: healthy, wait, unhealthy on a restart, unhealthy after the window", () => {
    expect(judge(sample("registered"), 0, 1000, 60_000).verdict).toBe("healthy");
    expect(judge(sample("registered", 0, "activating"), 0, 1000, 60_000).verdict).toBe("wait");
    expect(judge(sample("registering"), 0, 59_999, 60_000).verdict).toBe("wait");
    expect(judge(sample("registering"), 0, 60_000, 60_000).verdict).toBe("unhealthy");
    expect(judge(sample("registered", 1), 0, 1000, 60_000).verdict).toBe("unhealthy");
    expect(judge(undefined, 0, 60_000, 60_000).verdict).toBe("unhealthy");
  });

  it("watches on the clock: healthy as soon as registered", async () => {
    const clock = new ManualClock();
    let status = "registering";
    const p = watchHealth({
      clock,
      probe: async () => sample(status),
      windowMs: 600_000,
      pollMs: 5_000,
      onSample: (_s, t) => {
        if (t >= 120_000) status = "registered";
      },
    });
    await run(clock, p);
    const v = await p;
    expect(v).toMatchObject({ verdict: "healthy" });
    expect(v.elapsedMs).toBeGreaterThanOrEqual(120_000);
    expect(v.elapsedMs).toBeLessThanOrEqual(125_000);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("watches on the clock: the default-length window runs out at exactly 10 min", async () => {
    const clock = new ManualClock();
    const p = watchHealth({
      clock,
      probe: async () => sample("sign-in-required"),
      windowMs: healthWindowMs(10),
      pollMs: 7_000,
    });
    await run(clock, p, 7_000);
    expect(await p).toMatchObject({ verdict: "unhealthy", elapsedMs: 600_000 });
  });

  it("a probe that fails is not healthy (systemd not answering)", async () => {
    const clock = new ManualClock();
    const p = watchHealth({
      clock,
      probe: async () => {
        throw new Error("no bus");
      },
      windowMs: 60_000,
    });
    await run(clock, p);
    expect(await p).toMatchObject({ verdict: "unhealthy", elapsedMs: 60_000 });
  });

  it("the window is range-checked", () => {
    expect(healthWindowMs(1)).toBe(60_000);
    for (const m of [0, 121, 1.5, Number.NaN]) expect(() => healthWindowMs(m)).toThrow(HandsetError);
  });
});
