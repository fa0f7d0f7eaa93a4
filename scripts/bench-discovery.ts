/**
 * Discovery benchmarks (measures, never asserts): DHCPINFORM round trip and one SNTP query,
 * over loopback against the lab responders, ~50 runs each, median and p99 in ms. Called from
 * scripts/bench.ts; `tsx scripts/bench-discovery.ts` prints the result alone.
 */
import { informOverUdp, sntpOverUdp } from "../firmware/commands/discover.ts";
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { SystemClock } from "../firmware/platform/system-clock.ts";
import { startDhcpResponder } from "../test/lab/dhcp-responder.ts";
import { startNtpResponder } from "../test/lab/ntp-responder.ts";
import { summarize } from "./bench-stats.ts";

const RUNS = 50;

const stats = (values: number[]) => summarize(values, 3);

export async function benchDiscovery(): Promise<Record<string, unknown>> {
  const clock = new SystemClock();
  const random = new CryptoRandom();
  const ntp = await startNtpResponder({ offsetMs: 250 });
  const dhcp = await startDhcpResponder({
    certProvUrl: "https://pool.lab.test:443/CertProv/CertProvisioningService.svc",
    registrarFqdn: "sba.lab.test",
    ntp: ["127.0.0.1"],
    timeOffsetS: 0,
  });
  try {
    const [host, p] = dhcp.address.split(":");
    const server = { host: host!, port: Number(p) };
    const [nh, np] = ntp.address.split(":");
    const ntpServer = { host: nh!, port: Number(np) };
    const inform: number[] = [];
    const sntp: number[] = [];
    const offsets: number[] = [];
    for (let i = 0; i < RUNS + 5; i++) {
      const t0 = performance.now();
      await informOverUdp({ server }, { clock, random, timeoutMs: 5000 });
      if (i >= 5) inform.push(performance.now() - t0);
    }
    for (let i = 0; i < RUNS + 5; i++) {
      const t0 = performance.now();
      const r = await sntpOverUdp(ntpServer, { clock, random, timeoutMs: 2000 });
      if (i >= 5) {
        sntp.push(performance.now() - t0);
        offsets.push(Math.abs(r.offsetMs - 250));
      }
    }
    return {
      dhcpInformRoundTripMs: stats(inform),
      sntpQueryMs: stats(sntp),
      sntpOffsetErrorMs: stats(offsets),
      note: "loopback, lab responders in-process; includes socket open/close per run",
    };
  } finally {
    await Promise.all([dhcp.stop(), ntp.stop()]);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(await benchDiscovery(), null, 2)}\n`);
}
