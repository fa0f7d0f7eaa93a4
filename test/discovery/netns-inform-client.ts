/**
 * Run inside the client network namespace by peers.test.ts:
 *   ip netns exec <ns> node --import tsx test/discovery/netns-inform-client.ts <interface> [timeoutMs]
 * Sends a real DHCPINFORM from <interface>'s address on port 68 (platform/udp.ts + the
 * dhcp-inform core) and prints one JSON line with what came back.
 */
import { informOverUdp } from "../../firmware/commands/discover.ts";
import { toPlanProblem } from "../../firmware/discovery/discovery-plan.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";

const [iface, timeout] = process.argv.slice(2);
try {
  const r = await informOverUdp(
    { interface: iface! },
    { clock: new SystemClock(), random: new CryptoRandom(), timeoutMs: Number(timeout ?? "8000") },
  );
  const { problems, vendor, ...info } = r.info;
  process.stdout.write(
    `${JSON.stringify({
      ok: true,
      from: r.from,
      attempts: r.attempts,
      rttMs: r.rttMs,
      yiaddr: r.reply.yiaddr,
      ...info,
      vendor,
      options: [...r.reply.options.keys()],
      problems: problems.map(toPlanProblem),
    })}\n`,
  );
} catch (err) {
  process.stdout.write(
    `${JSON.stringify({ ok: false, code: (err as { code?: string }).code, message: String(err) })}\n`,
  );
  process.exitCode = 1;
}
