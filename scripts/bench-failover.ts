/**
 * `npx tsx scripts/bench-failover.ts`: the failover storm alone (issue 9 §4), policy core — N phone
 * cores (BENCH_FAILOVER_PHONES, default 1000) homed on a primary with a backup; the primary dies
 * (reset: every flow closed at once; silent: each phone's liveness probe finds it), comes back
 * refusing REGISTER, then answers. Measures, never asserts: arrivals per second at the backup,
 * flaps while the primary refuses, failback spread, bindings left on the backup, wall and CPU time.
 * Then the same storm full stack against the lab (real TLS, TLS-DSK; BENCH_FAILOVER_LAB_PHONES,
 * default 1000; 0 skips it): pool primary, SBA backup, the pool stops, refuses REGISTER, returns.
 */
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { failoverStorm } from "../test/scenarios/storm-failover.ts";
import { failoverStormAgainstLab } from "../test/scenarios/storm-lab.ts";

export async function benchFailover(phones = Number(process.env["BENCH_FAILOVER_PHONES"] ?? 1000)) {
  const out: Record<string, unknown> = {};
  for (const death of ["reset", "silent"] as const) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    // The kernel's CSPRNG, as on a phone (the test uses seeded generators for reproducibility).
    const r = await failoverStorm({ phones, death, random: () => new CryptoRandom() });
    const cpu = process.cpuUsage(cpu0);
    out[death] = {
      ...r,
      histogram: undefined,
      wall_ms: Math.round(performance.now() - t0),
      cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
  }
  const labPhones = Number(process.env["BENCH_FAILOVER_LAB_PHONES"] ?? 1000);
  if (labPhones > 0) {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await failoverStormAgainstLab({ phones: labPhones });
    const cpu = process.cpuUsage(cpu0);
    out["full_stack"] = {
      ...r,
      wall_ms: Math.round(performance.now() - t0),
      cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
      rss_mb: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
  }
  return out;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchFailover();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  process.exit(0);
}
