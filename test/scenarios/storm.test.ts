/**
 * Scenario 8, the storm: 1 000 phone cores in one process on a fake clock, all losing their
 * registrar at the same instant (a pool restart). Their returns must be spread by the backoff
 * jitter: no second in which more than 5 % of them arrive. (The registrar side is a stub that
 * records arrival times; the full TLS-DSK storm against the lab runs in `npm run bench`.)
 */
import { describe, expect, it } from "vitest";
import { stormAgainstLab } from "./storm-lab.ts";
import { histogram, stormArrivals } from "./storm-sim.ts";

describe("storm after a pool restart", () => {
  it("1 000 phones come back spread by the jitter: no second holds more than 5 %", async () => {
    const phones = 1000;
    const { arrivals, clock } = stormArrivals(phones);
    await new Promise((r) => setImmediate(r)); // let the first (failing) connects settle
    for (let s = 0; s < 120; s++) {
      clock.advance(1000);
      await Promise.resolve();
    }
    expect(arrivals).toHaveLength(phones);
    const perSecond = [...histogram(arrivals).values()];
    const worst = Math.max(...perSecond);
    expect(worst / phones).toBeLessThanOrEqual(0.05);
    // RFC 5626 §4.5 with 1 consecutive failure: min(1800, 30·2¹) × U(0.5, 1) = 30–60 s.
    expect(Math.min(...arrivals)).toBeGreaterThanOrEqual(30_000);
    expect(Math.max(...arrivals)).toBeLessThanOrEqual(60_000);
  });

  it("full stack: 1 000 phone cores registered to the lab pool return after its restart, spread by the jitter", {
    timeout: 300_000,
  }, async () => {
    const r = await stormAgainstLab({ phones: 1000, seed: 7 });
    expect(r.registered_before_restart).toBe(1000);
    expect(r.re_registered_after_restart).toBe(1000);
    expect(r.worst_second_share).toBeLessThanOrEqual(0.05);
    expect(r.first_arrival_s).toBeGreaterThanOrEqual(30);
    expect(r.last_arrival_s).toBeLessThanOrEqual(60);
  });
});
