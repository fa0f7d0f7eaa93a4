/**
 * The phone's side of issue 9 §1: SNTP unanswered never blocks the phone, it works on the saved
 * floor and retries SNTP in the background; a failure that is only about time before the clock is
 * set (`clock-invalid`) shows "Time not set", keeps the typed PIN, is never a sign-in verdict,
 * and is retried at once when SNTP answers. And the ClockService steps back to SNTP time when the
 * OS clock was far ahead, so certificates are checked at SNTP time, not held at the OS's.
 */
import { afterEach, describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { ClockService } from "../../firmware/discovery/clock-service.ts";
import { Phone, type PhoneEvent } from "../../firmware/phone/phone.ts";
import { FakeDisplay, FakeHook, FakeIndicators, FakeKeys, FakeServices, flush } from "../phone/fakes.ts";

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

function phoneRig() {
  const clock = new ManualClock();
  const keys = new FakeKeys();
  const display = new FakeDisplay();
  const services = new FakeServices();
  const events: PhoneEvent[] = [];
  const phone = new Phone({
    keys,
    display,
    indicators: new FakeIndicators(),
    hook: new FakeHook(),
    services,
    clock,
    random: new SeededRandom(7),
    logger: createLogger(() => {}),
    // The phone's own retry from `failed` is far away: only the clock-set can bring it back soon.
    options: {
      autoRetry: { baseMs: 600_000, capMs: 600_000 },
      clockRetry: { baseMs: 10_000, capMs: 10_000 },
    },
  });
  phone.events.on((e) => events.push(e));
  stop = () => phone.stop();
  const states = () => events.flatMap((e) => (e.event === "state" ? [e.state] : []));
  return { clock, keys, display, services, phone, events, states };
}

describe("clock-invalid before the clock is set", () => {
  it("shows 'Time not set', keeps the PIN, and signs in at once when SNTP answers", async () => {
    const r = phoneRig();
    r.services.clockScript = [new HandsetError("clock-unset", "no SNTP answer")];
    r.services.signInScript = [
      new HandsetError("clock-invalid", "server certificate not yet valid by the clock"),
    ];
    r.phone.start();
    await flush();
    expect(r.phone.state).toBe("sign-in-required"); // not blocked on SNTP
    r.keys.type("4711#1234#");
    await flush();
    expect(r.phone.state).toBe("failed");
    expect(r.display.text[0]).toBe("Time not set");
    // The background SNTP retry (5–10 s) answers: the sign-in goes again at once, with the same PIN.
    r.clock.advance(10_000);
    await flush();
    expect(r.states().slice(r.states().lastIndexOf("failed"))).toEqual([
      "failed",
      "discovering",
      "clock-set",
      "signing-in",
      "provisioned",
      "registering",
    ]);
    expect(r.services.signInCalls.map((c) => c.pin)).toEqual(["1234", "1234"]);
    // Never a sign-in verdict.
    const afterPin = r.states().slice(r.states().indexOf("signing-in"));
    expect(afterPin).not.toContain("sign-in-required");
  });

  it("a registration failing with clock-invalid is restarted at once when SNTP answers", async () => {
    const r = phoneRig();
    r.services.clockScript = [new HandsetError("clock-unset", "no SNTP answer")];
    r.phone.start();
    await flush();
    r.keys.type("4711#1234#");
    await flush();
    r.services.registration.report({
      state: "failed",
      error: { code: "clock-invalid", message: "Time not set: registrar certificate" },
      retryInMs: 600_000,
    });
    expect(r.phone.state).toBe("failed");
    expect(r.display.text[0]).toBe("Time not set");
    const registers = r.services.calls.filter((c) => c === "register").length;
    r.clock.advance(10_000);
    await flush();
    expect(r.services.calls.filter((c) => c === "register").length).toBe(registers + 1);
    expect(r.phone.state).toBe("registering");
  });
});

describe("ClockService: SNTP over the OS", () => {
  it("steps back to SNTP time when the OS clock was 400 days ahead (no hold for a year)", async () => {
    const real = Date.UTC(2026, 11, 2);
    const base = new ManualClock(real + 400 * 86_400_000);
    const svc = new ClockService({ base });
    expect(svc.now()).toBe(real + 400 * 86_400_000); // readers saw the OS time before SNTP
    const e = await svc.set({ offsetMs: -400 * 86_400_000 });
    expect(svc.now()).toBe(real);
    expect(e).toMatchObject({ type: "clock-set", heldMs: 0, steppedMs: 400 * 86_400_000 });
  });

  it("never saves the OS clock's word as the last good time before SNTP answered", async () => {
    const saved: number[] = [];
    const base = new ManualClock(Date.UTC(2028, 0, 1)); // OS far ahead, nothing restored
    const svc = new ClockService({
      base,
      store: { load: async () => undefined, save: async (t) => void saved.push(t) },
    });
    await svc.save();
    expect(saved).toEqual([]);
    const floored = new ClockService({
      base,
      store: { load: async () => Date.UTC(2026, 0, 1), save: async (t) => void saved.push(t) },
    });
    await floored.restore();
    base.advance(1000);
    await floored.save();
    expect(saved).toEqual([Date.UTC(2026, 0, 1) + 1000]); // the floor advanced, not the OS time
  });

  it("a second SNTP answer measured against the base does not undo the first", async () => {
    const base = new ManualClock(Date.UTC(2028, 0, 1));
    const svc = new ClockService({ base });
    await svc.set({ offsetMs: -1000 * 86_400_000 });
    const t = svc.now();
    // SNTP measures against measurementClock() (the base): the same offset again.
    expect(svc.measurementClock()).toBe(base);
    await svc.set({ offsetMs: -1000 * 86_400_000 });
    expect(svc.now()).toBe(t);
  });
});
