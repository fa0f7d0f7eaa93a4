/**
 * The certificate lifecycle policy on a ManualClock: when renewal is planned, how it retries,
 * when it stops; plus the timer-length rule on a real setTimeout clock.
 */
import { describe, expect, it } from "vitest";
import {
  CertificateLifecycle,
  type CertLifecycleEvent,
  DAY_MS,
  RENEWAL_BACKOFF,
  renewalTime,
  type Validity,
  WAKE_MS,
} from "../../firmware/accounts/cert-lifecycle.ts";
import { type Clock, ManualClock, type TimerHandle } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CertificateRefusedError } from "../../firmware/provisioning/cert-auth-ticket.ts";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";

const MAX_TIMER = 2 ** 31 - 1;
const flush = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A ManualClock that remembers every timer length asked for. */
class RecordingClock extends ManualClock {
  readonly asked: number[] = [];
  override setTimer(ms: number, fn: () => void): TimerHandle {
    this.asked.push(ms);
    return super.setTimer(ms, fn);
  }
}

function setup(o: {
  lifetimeDays: number;
  renew?: () => Promise<void>;
  clock?: RecordingClock;
  ageDays?: number;
}) {
  const clock = o.clock ?? new RecordingClock();
  const start = clock.now() - (o.ageDays ?? 0) * DAY_MS;
  let validity: Validity | undefined = { notBefore: start, notAfter: start + o.lifetimeDays * DAY_MS };
  let calls = 0;
  const events: CertLifecycleEvent[] = [];
  const renewed = () => {
    // A successful renewal stores a new certificate of the same lifetime, issued now.
    validity = { notBefore: clock.now(), notAfter: clock.now() + o.lifetimeDays * DAY_MS };
  };
  const lifecycle = new CertificateLifecycle({
    clock,
    random: new SeededRandom(3),
    logger: silentLogger,
    renew: async () => {
      calls++;
      if (o.renew) await o.renew();
      renewed();
    },
    credential: () => validity,
  });
  lifecycle.events.on((e) => events.push(e));
  return {
    clock,
    lifecycle,
    events,
    calls: () => calls,
    validity: () => validity,
    clear: () => {
      validity = undefined;
    },
  };
}

describe("renewalTime", () => {
  const at = (days: number, t0 = Date.UTC(2026, 0, 1)) => t0 + days * DAY_MS;
  it("180-day certificate: 2/3 of the lifetime (day 120) beats 30 days before expiry (day 150)", () => {
    expect(renewalTime({ notBefore: at(0), notAfter: at(180) })).toBe(at(120));
  });
  it("60-day certificate: 30 days before expiry (day 30) beats 2/3 (day 40)", () => {
    expect(renewalTime({ notBefore: at(0), notAfter: at(60) })).toBe(at(30));
  });
  it("short certificates renew at their midpoint, never back to back", () => {
    expect(renewalTime({ notBefore: at(0), notAfter: at(20) })).toBe(at(10));
    expect(renewalTime({ notBefore: at(0), notAfter: at(1 / 3) })).toBe(at(1 / 6));
  });
});

describe("CertificateLifecycle schedule", () => {
  it("a 180-day certificate renews at day 120, not a millisecond earlier, with no timer over 2^31−1 ms", async () => {
    const t = setup({ lifetimeDays: 180 });
    t.lifecycle.start();
    expect(t.clock.pendingTimers()).toBe(1);
    t.clock.advance(120 * DAY_MS - 1);
    await flush();
    expect(t.calls()).toBe(0);
    expect(t.events).toEqual([]);
    t.clock.advance(1);
    await flush();
    expect(t.calls()).toBe(1);
    expect(t.events[0]).toEqual({ type: "renewal-due", attempt: 1 });
    expect(t.events[1]).toEqual({ type: "renewed", notAfter: t.validity()!.notAfter });
    expect(Math.max(...t.clock.asked)).toBeLessThanOrEqual(Math.min(WAKE_MS, MAX_TIMER));
    // The next renewal is planned 120 days after this one.
    expect(t.clock.pendingTimers()).toBe(1);
    t.clock.advance(120 * DAY_MS - 1);
    await flush();
    expect(t.calls()).toBe(1);
    t.clock.advance(1);
    await flush();
    expect(t.calls()).toBe(2);
    t.lifecycle.stop();
  });

  it("a 60-day certificate renews at day 30", async () => {
    const t = setup({ lifetimeDays: 60 });
    t.lifecycle.start();
    t.clock.advance(30 * DAY_MS - 1);
    await flush();
    expect(t.calls()).toBe(0);
    t.clock.advance(1);
    await flush();
    expect(t.calls()).toBe(1);
    t.lifecycle.stop();
  });

  it("renews at once when the renewal point has passed", async () => {
    const t = setup({ lifetimeDays: 180, ageDays: 170 });
    t.lifecycle.start();
    t.clock.advance(0);
    await flush();
    expect(t.calls()).toBe(1);
    t.lifecycle.stop();
  });

  it("follows the wall clock: an SNTP correction forward brings the renewal within a day", async () => {
    const t = setup({ lifetimeDays: 180 });
    t.lifecycle.start();
    t.clock.setWallClock(t.clock.now() + 119 * DAY_MS);
    t.clock.advance(DAY_MS - 1);
    await flush();
    expect(t.calls()).toBe(0);
    t.clock.advance(DAY_MS);
    await flush();
    expect(t.calls()).toBe(1);
    t.lifecycle.stop();
  });

  it("stays idle without a credential", () => {
    const t = setup({ lifetimeDays: 180 });
    t.clear();
    t.lifecycle.start();
    expect(t.clock.pendingTimers()).toBe(0);
  });

  it("never asks a real setTimeout clock for more than 2^31−1 ms and does not fire early", async () => {
    const asked: number[] = [];
    const handles = new Set<ReturnType<typeof setTimeout>>();
    const real: Clock = {
      now: () => Date.now(),
      monotonic: () => performance.now(),
      setTimer: (ms, fn) => {
        asked.push(ms);
        const h = setTimeout(() => {
          handles.delete(h);
          fn();
        }, ms);
        handles.add(h);
        return {
          cancel: () => {
            clearTimeout(h);
            handles.delete(h);
          },
        };
      },
    };
    let calls = 0;
    const lifecycle = new CertificateLifecycle({
      clock: real,
      random: new SeededRandom(1),
      logger: silentLogger,
      renew: async () => {
        calls++;
      },
      credential: () => ({ notBefore: Date.now(), notAfter: Date.now() + 180 * DAY_MS }),
    });
    lifecycle.start();
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(calls).toBe(0);
    expect(asked.length).toBe(1);
    expect(asked[0]).toBeLessThanOrEqual(MAX_TIMER);
    lifecycle.stop();
    expect(handles.size).toBe(0);
  });
});

describe("CertificateLifecycle failures", () => {
  it("retries with growing, jittered backoff while unreachable, keeps going, then succeeds", async () => {
    let failures = 4;
    const t = setup({
      lifetimeDays: 180,
      renew: async () => {
        if (failures-- > 0) throw new ProvisioningError("server-unreachable", "down");
      },
    });
    t.lifecycle.start();
    t.clock.advance(120 * DAY_MS);
    await flush();
    for (let n = 0; n < 4; n++) {
      const failed = t.events.filter((e) => e.type === "renewal-failed");
      expect(failed).toHaveLength(n + 1);
      const last = failed[n] as Extract<CertLifecycleEvent, { type: "renewal-failed" }>;
      const exp = Math.min(RENEWAL_BACKOFF.capMs, RENEWAL_BACKOFF.baseMs * 2 ** n);
      expect(last).toMatchObject({ code: "server-unreachable", attempt: n + 1 });
      expect(last.retryInMs).toBeGreaterThanOrEqual(exp / 2);
      expect(last.retryInMs).toBeLessThanOrEqual(exp);
      t.clock.advance(last.retryInMs - 1);
      await flush();
      expect(t.calls()).toBe(n + 1);
      t.clock.advance(1);
      await flush();
    }
    expect(t.calls()).toBe(5);
    expect(t.events.at(-1)).toMatchObject({ type: "renewed" });
    expect(t.clock.pendingTimers()).toBe(1);
    t.lifecycle.stop();
    expect(t.clock.pendingTimers()).toBe(0);
  });

  it("retries at most every 6 hours, and gives up only when the certificate lapses", async () => {
    const t = setup({
      lifetimeDays: 180,
      renew: async () => {
        throw new ProvisioningError("server-unreachable", "down");
      },
    });
    t.lifecycle.start();
    const notAfter = t.validity()!.notAfter;
    t.clock.advance(120 * DAY_MS);
    await flush();
    // Each failure's retry is a new timer; step through them one by one for 60 days and more.
    for (let i = 0; i < 2000 && t.lifecycle.started; i++) {
      t.clock.advance(RENEWAL_BACKOFF.capMs);
      await flush();
    }
    const failed = t.events.filter((e) => e.type === "renewal-failed");
    expect(failed.length).toBeGreaterThan(60 * 4); // ≥ 4 a day for 60 days
    expect(Math.max(...failed.map((e) => (e as { retryInMs: number }).retryInMs))).toBeLessThanOrEqual(
      RENEWAL_BACKOFF.capMs,
    );
    expect(t.clock.now()).toBeGreaterThanOrEqual(notAfter);
    expect(t.events.at(-1)).toEqual({ type: "expired", notAfter });
    expect(t.lifecycle.started).toBe(false);
    expect(t.clock.pendingTimers()).toBe(0);
  });

  it.each([
    ["certificate-revoked", new ProvisioningError("certificate-revoked", "revoked")],
    ["ticket-rejected", new CertificateRefusedError("ticket-rejected", "28020 at /Cert")],
  ])("a certificate refusal (%s) reports revoked and stops", async (code, err) => {
    const t = setup({
      lifetimeDays: 180,
      renew: async () => {
        throw err;
      },
    });
    t.lifecycle.start();
    t.clock.advance(120 * DAY_MS);
    await flush();
    expect(t.events).toEqual([
      { type: "renewal-due", attempt: 1 },
      { type: "revoked", code },
    ]);
    expect(t.clock.pendingTimers()).toBe(0);
    expect(t.lifecycle.started).toBe(false);
  });

  it("a ticket refused elsewhere (not the certificate port) is retried, not treated as revoked", async () => {
    const t = setup({
      lifetimeDays: 180,
      renew: async () => {
        throw new ProvisioningError("ticket-rejected", "refused by cert prov");
      },
    });
    t.lifecycle.start();
    t.clock.advance(120 * DAY_MS);
    await flush();
    expect(t.events.at(-1)).toMatchObject({ type: "renewal-failed", code: "ticket-rejected" });
    expect(t.clock.pendingTimers()).toBe(1);
    t.lifecycle.stop();
  });

  it("stop() leaves no timers, also while a renewal is in flight", async () => {
    let release: () => void = () => {};
    const t = setup({
      lifetimeDays: 180,
      renew: () =>
        new Promise<void>((resolve) => {
          release = resolve;
        }),
    });
    t.lifecycle.start();
    t.lifecycle.stop();
    expect(t.clock.pendingTimers()).toBe(0);
    t.lifecycle.start();
    t.clock.advance(120 * DAY_MS);
    await flush();
    expect(t.calls()).toBe(1);
    t.lifecycle.stop();
    release();
    await flush();
    expect(t.clock.pendingTimers()).toBe(0);
    expect(t.events.map((e) => e.type)).toEqual(["renewal-due"]);
  });
});
