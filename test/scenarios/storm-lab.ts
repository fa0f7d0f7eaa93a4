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
import { refuseRegister } from "./harness.ts";

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

/**
 * The failover storm against the lab, full stack (issue 9 §4; `npm run bench`): N phone cores
 * homed on the pool with the SBA as backup, over real TLS and TLS-DSK. The pool stops (every flow
 * reset in one instant); the phones hand over to the SBA; the pool comes back refusing REGISTER
 * (503 after the TLS connect, test/scenarios/harness.ts refuseRegister) for `refuseS` seconds;
 * then it answers, and the phones fail back through their side registrations. Simulated time moves
 * a second at a time, only once the lab has fallen quiet.
 */
export async function failoverStormAgainstLab(o: {
  phones: number;
  seed?: number;
  batch?: number;
  refuseS?: number;
}) {
  const phones = o.phones;
  const lab = await startLab({ site: "hq", expires: 3600 });
  const clock = new ManualClock(Date.now());
  const cert = readFileSync(lab.ready.testClient.cert, "utf8");
  const key = readFileSync(lab.ready.testClient.key, "utf8");
  const notAfter = new Date(new X509Certificate(cert).validTo).getTime();
  let phase: "registering" | "dead" | "refusing" | "back" = "registering";
  const seen = { refused: 0 };
  const base = refuseRegister(
    () => lab.ready.pool,
    () => phase === "refusing",
    seen,
  )(tlsFlowConnector({ ca: [lab.ca.cert] }));
  let deathAt = 0;
  let backAt = 0;
  const backupArrivals: number[] = [];
  const homeArrivals: number[] = [];
  let connecting = 0;
  const connect: FlowConnector = async (t) => {
    const k = `${t.host}:${t.port}`;
    if (phase !== "registering" && k === lab.ready.sba) backupArrivals.push(clock.monotonic() - deathAt);
    if (phase === "back" && k === lab.ready.pool) homeArrivals.push(clock.monotonic() - backAt);
    connecting++;
    try {
      return await base(t);
    } finally {
      connecting--;
    }
  };
  const where = new Map<number, string | undefined>();
  let flaps = 0;
  const accounts: Account[] = [];
  const [poolHost, poolPort] = lab.ready.pool.split(":");
  const [sbaHost, sbaPort] = lab.ready.sba.split(":");
  for (let i = 0; i < phones; i++) {
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
      [
        {
          host: poolHost!,
          port: Number(poolPort),
          serverName: lab.ready.names.pool,
          source: "redirect-primary",
        },
        { host: sbaHost!, port: Number(sbaPort), serverName: lab.ready.names.sba, source: "redirect-backup" },
      ],
    );
    account.status.on((s: AccountStatus) => {
      const now = s.state === "registered" || s.state === "limited" ? s.registrar : undefined;
      if (phase === "refusing" && where.get(i) === lab.ready.sba && now !== lab.ready.sba) flaps++;
      where.set(i, now);
    });
    accounts.push(account);
  }
  const on = (k: string) => [...where.values()].filter((w) => w === k).length;
  const settleUntil = async (pred: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!pred() && Date.now() < end) await sleep(20);
  };
  /** Until nothing moves at either registrar for a few polls (real I/O done for this second). */
  const quiet = async () => {
    const snap = () => JSON.stringify([lab.pool.stats, lab.sba.stats, connecting, [...where.values()]]);
    let last = snap();
    let still = 0;
    const end = Date.now() + 60_000;
    while (still < 3 && Date.now() < end) {
      await sleep(15);
      const now = snap();
      still = now === last && connecting === 0 ? still + 1 : 0;
      last = now;
    }
  };
  const t0 = performance.now();
  const batch = o.batch ?? 50;
  for (let i = 0; i < phones; i += batch) {
    for (const a of accounts.slice(i, i + batch)) a.start();
    await settleUntil(() => on(lab.ready.pool) >= Math.min(phones, i + batch), 60_000);
  }
  const initialMs = performance.now() - t0;
  const onPoolBefore = on(lab.ready.pool);

  phase = "dead";
  deathAt = clock.monotonic();
  await lab.pool.stop();
  await settleUntil(() => on(lab.ready.pool) === 0, 30_000);
  const t1 = performance.now();
  for (let s = 0; s < 60 && on(lab.ready.sba) < phones; s++) {
    clock.advance(1_000);
    await quiet();
  }
  const failoverWallMs = performance.now() - t1;
  const onSbaAfterDeath = on(lab.ready.sba);

  phase = "refusing";
  await lab.pool.start();
  const refuseS = o.refuseS ?? 180;
  for (let s = 0; s < refuseS; s++) {
    clock.advance(1_000);
    await quiet();
  }
  const onSbaWhileRefusing = on(lab.ready.sba);

  phase = "back";
  backAt = clock.monotonic();
  const t2 = performance.now();
  for (let s = 0; s < 120 && on(lab.ready.pool) < phones; s++) {
    clock.advance(1_000);
    await quiet();
  }
  const failbackWallMs = performance.now() - t2;
  await quiet();
  const result = {
    phones,
    registered_on_pool_before: onPoolBefore,
    initial_registration_wall_ms: Math.round(initialMs),
    registered_on_sba_after_death: onSbaAfterDeath,
    failover_wall_ms: Math.round(failoverWallMs),
    backup_arrivals: backupArrivals.length,
    first_backup_arrival_s: Math.min(...backupArrivals) / 1000,
    last_backup_arrival_s: Math.max(...backupArrivals) / 1000,
    backup_worst_second_share: worstShare(backupArrivals, phones),
    refused_registers_while_refusing: seen.refused,
    flaps_while_refusing: flaps,
    registered_on_sba_while_pool_refuses: onSbaWhileRefusing,
    registered_on_pool_after_return: on(lab.ready.pool),
    failback_wall_ms: Math.round(failbackWallMs),
    failback_worst_second_share: worstShare(homeArrivals, phones),
    bindings_left_on_sba: lab.sba.bindingCount,
    bindings_on_pool: lab.pool.bindingCount,
  };
  for (const a of accounts) await a.stop();
  await lab.stop();
  return result;
}

function worstShare(times: number[], phones: number): number {
  const h = new Map<number, number>();
  for (const t of times) h.set(Math.floor(t / 1000), (h.get(Math.floor(t / 1000)) ?? 0) + 1);
  return h.size ? Math.max(...h.values()) / phones : 0;
}
