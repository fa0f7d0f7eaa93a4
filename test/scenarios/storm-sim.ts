/**
 * The storm simulation shared by the scenario test and `npm run bench`: N phone cores (one
 * Account each, the registrar policy of firmware/accounts) on one fake clock, all losing their
 * registrar at the same instant. The registrar side is a stub that records when each phone
 * comes back; what the policy decides is exactly that moment.
 */
import { Account } from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { TransportError } from "../../firmware/core/errors.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { Flow } from "../../firmware/sip/flow.ts";

export function stormArrivals(phones: number, seed = 42): { arrivals: number[]; clock: ManualClock } {
  const clock = new ManualClock(Date.UTC(2026, 10, 28, 9, 0, 0));
  const arrivals: number[] = [];
  const attempts = new Map<number, number>();
  for (let i = 0; i < phones; i++) {
    const account = new Account(
      {
        clock,
        random: new SeededRandom(seed * 100_003 + i),
        logger: silentLogger,
        connect: () => {
          const n = (attempts.get(i) ?? 0) + 1;
          attempts.set(i, n);
          // Attempt 1 meets the restarting pool; attempt 2 is the phone's return: record it and
          // leave it pending (what happens after arrival is the registrar's business).
          if (n === 1) return Promise.reject(new TransportError("connection-reset", "pool restarting"));
          arrivals.push(clock.monotonic());
          return new Promise<Flow>(() => {});
        },
        engineFactory: () => {
          throw new Error("not reached");
        },
        endpoint: {
          aor: `sip:${i}@lab.test`,
          epid: "0000000000",
          instanceId: "00000000-0000-4000-8000-000000000000",
        },
        credentials: () => undefined,
        trustedRoots: [],
        innerTls: "auto",
      },
      [{ host: "pool.lab.test", port: 5061, source: "dhcp" }],
    );
    account.start();
  }
  return { arrivals, clock };
}

export function histogram(arrivals: number[], bucketMs = 1000): Map<number, number> {
  const h = new Map<number, number>();
  for (const t of arrivals) h.set(Math.floor(t / bucketMs), (h.get(Math.floor(t / bucketMs)) ?? 0) + 1);
  return h;
}
