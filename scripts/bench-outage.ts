import { createSimBoard } from "../board/sim/index.ts";
import { openStore } from "../firmware/commands/identity.ts";
import { createPhoneServices } from "../firmware/commands/phone-services.ts";
import { silentLogger } from "../firmware/core/logger.ts";
import { ClockService } from "../firmware/discovery/clock-service.ts";
import { startPhone } from "../firmware/main.ts";
import type { RegistrationStatus } from "../firmware/phone/services.ts";
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { SystemClock } from "../firmware/platform/system-clock.ts";
import { phoneNetwork, startLab } from "../test/lab/lab.ts";
import { signedInStore } from "../test/scenarios/harness.ts";
import { histogram, stormArrivals } from "../test/scenarios/storm-sim.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) return false;
    await sleep(5);
  }
  return true;
}

export async function benchOutage(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const lab = await startLab({ site: "branch" });
  try {
    const storeDir = await signedInStore(lab);

    // Start with the WAN cut → registered on the SBA.
    lab.wan.cut();
    const boots: number[] = [];
    for (let i = 0; i < 5; i++) {
      let up = false;
      const t0 = performance.now();
      const phone = await startPhone({
        config: {
          storeDir,
          trustedRoots: [lab.ca.cert],
          network: phoneNetwork(lab.ready),
        },
        board: createSimBoard({ clock: new SystemClock() }),
        logger: silentLogger,
        onEvent: (e) => {
          if (e.event === "state" && (e.state === "registered" || e.state === "limited")) up = true;
        },
      });
      if (await until(() => up, 30_000)) boots.push(performance.now() - t0);
      await phone.stop();
    }
    lab.wan.restore();
    boots.sort((a, b) => a - b);
    out["start_with_wan_cut_to_registered_on_sba_ms"] = {
      n: boots.length,
      median: Math.round(boots[Math.floor(boots.length / 2)] ?? Number.NaN),
      max: Math.round(boots.at(-1) ?? Number.NaN),
    };

    // Blackholed home registrar → registered on the backup, default liveness settings.
    const random = new CryptoRandom();
    const statuses: Array<RegistrationStatus & { t: number }> = [];
    const services = createPhoneServices({
      config: { hosts: lab.ready.hosts },
      store: openStore(storeDir, random),
      trustedRoots: [lab.ca.cert],
      clock: new ClockService({ base: new SystemClock() }),
      random,
      logger: silentLogger,
    });
    await services.identity();
    const handle = services.register(
      {
        registrars: [
          { host: "pool.lab.test", port: 5061, source: "static" },
          { host: "sba.lab.test", port: 5061, source: "static" },
        ],
        ntpServers: [],
      },
      (s) => statuses.push({ ...s, t: performance.now() }),
    );
    await until(() => statuses.some((s) => s.state === "registered"), 20_000);
    const t0 = performance.now();
    lab.wan.cut();
    const ok = await until(
      () => statuses.some((s) => s.t > t0 && s.state === "limited" && s.registrar === lab.ready.sba),
      90_000,
    );
    const onBackup = statuses.find((s) => s.t > t0 && s.state === "limited");
    out["blackholed_home_to_registered_on_backup_ms"] = ok
      ? Math.round(onBackup!.t - t0)
      : "not reached in 90 s";
    await handle.stop();
    lab.wan.restore();
  } finally {
    await lab.stop();
  }

  const { arrivals, clock } = stormArrivals(1000);
  await sleep(0);
  for (let s = 0; s < 120; s++) {
    clock.advance(1000);
    await Promise.resolve();
  }
  const h = histogram(arrivals);
  const perSecond = [...h.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => ({ second: s, phones: n }));
  out["storm_1000_phones"] = {
    arrived: arrivals.length,
    first_s: Math.min(...arrivals) / 1000,
    last_s: Math.max(...arrivals) / 1000,
    worst_second_share: Math.max(...perSecond.map((p) => p.phones)) / 1000,
    histogram: perSecond,
  };
  return out;
}
