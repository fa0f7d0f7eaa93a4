/** `npx tsx scripts/bench-storm.ts`: the full-stack storm alone (BENCH_STORM_PHONES, default 1000). */
import { stormAgainstLab } from "../test/scenarios/storm-lab.ts";

export async function benchStorm(phones = Number(process.env["BENCH_STORM_PHONES"] ?? 1000)) {
  return stormAgainstLab({ phones });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchStorm();
  process.stdout.write(`${JSON.stringify({ ...r, histogram: undefined }, null, 2)}\n`);
  process.exit(0);
}
