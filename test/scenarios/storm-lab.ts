/**
 * The storm against the lab, full stack: N phone cores (Account + Registration + TLS-DSK over
 * real TLS) in one process, all registered to the lab pool, which then restarts. Simulated time
 * (one fake clock for every phone) moves a second at a time, and only once the wire is quiet, so
 * the per-second arrival histogram is what the phones' backoff decided, not what this machine's
 * CPU could absorb. Used by test/scenarios/storm.test.ts and `npm run bench`.
 */

import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { Account, type AccountStatus } from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { FlowConnector } from "../../firmware/sip/flow.ts";
import { startLab } from "../lab/lab.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function stormAgainstLab(o: { phones: number; seed?: number; batch?: number }) {
  const phones = o.phones;
  const lab = await startLab({ site: "hq", expires: 3600 });
  const clock = new ManualClock(Date.now());
  const cert = readFileSync(lab.ready.testClient.cert, "utf8");
  const key = readFileSync(lab.ready.testClient.key, "utf8");
  const notAfter = new Date(new X509Certificate(cert).validTo).getTime();
  const real = tlsFlowConnector({ ca: [lab.ca.cert] });
  let restarted = false;
  const arrivals: number[] = [];
  let connecting = 0;
  const connect: FlowConnector = async (t) => {
    if (restarted) arrivals.push(clock.monotonic());
    connecting++;
    try {
      return await real(t);
    } finally {
      connecting--;
    }
  };
  const up = new Set<number>();
  const accounts: Account[] = [];
  const [host, port] = lab.ready.pool.split(":");
  const t0 = performance.now();
  for (let i = 0; i < phones; i++) {
    // Seeded in tests (the histogram is then reproducible), the kernel's CSPRNG in the bench.
    const random = o.seed !== undefined ? new SeededRandom(o.seed * 100_003 + i) : new CryptoRandom();
    const hex = i.toString(16).padStart(10, "0");
    const account = new Account(
      {
        clock,
        random,
        logger: silentLogger,
        connect,
        engineFactory: createTlsDskEngine,
        endpoint: {
          aor: lab.ready.testClient.uri,
          epid: hex,
          instanceId: `00000000-0000-4000-8000-${hex.padStart(12, "0")}`,
        },
        credentials: () => ({ cert, key, notAfter }),
        trustedRoots: [lab.ca.cert],
        innerTls: "1.2",
      },
      [{ host: host!, port: Number(port), serverName: lab.ready.names.pool, source: "static" }],
    );
    account.status.on((s: AccountStatus) => {
      if (s.state === "registered" || s.state === "limited") up.add(i);
      else up.delete(i);
    });
    accounts.push(account);
  }
  const settleUntil = async (pred: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!pred() && Date.now() < end) await sleep(20);
  };
  // The first registrations go in batches: a thousand simultaneous tunnelled handshakes in one
  // process would only measure this machine. The storm under test is the return after a restart.
  const batch = o.batch ?? 50;
  for (let i = 0; i < phones; i += batch) {
    for (const a of accounts.slice(i, i + batch)) a.start();
    await settleUntil(() => up.size >= Math.min(phones, i + batch), 60_000);
  }
  await settleUntil(() => up.size === phones, 300_000);
  const initialMs = performance.now() - t0;
  const registeredBefore = up.size;

  restarted = true;
  await lab.pool.stop();
  await lab.pool.start();
  await settleUntil(() => up.size === 0, 30_000);
  const t1 = performance.now();
  for (let s = 0; s < 130 && up.size < phones; s++) {
    clock.advance(1_000);
    // Let every phone that arrived this second finish its registration before time moves on.
    await settleUntil(() => connecting === 0 && up.size >= arrivals.length, 60_000);
  }
  const recoveryMs = performance.now() - t1;
  const reRegistered = up.size;
  const perSecond = new Map<number, number>();
  for (const a of arrivals)
    perSecond.set(Math.floor(a / 1000), (perSecond.get(Math.floor(a / 1000)) ?? 0) + 1);
  const counts = [...perSecond.values()];
  for (const a of accounts) await a.stop();
  await lab.stop();
  return {
    phones,
    registered_before_restart: registeredBefore,
    initial_registration_wall_ms: Math.round(initialMs),
    re_registered_after_restart: reRegistered,
    recovery_wall_ms: Math.round(recoveryMs),
    first_arrival_s: Math.min(...arrivals) / 1000,
    last_arrival_s: Math.max(...arrivals) / 1000,
    worst_second_share: Math.max(...counts) / phones,
    histogram: [...perSecond.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([second, n]) => ({ second, phones: n })),
  };
}
