/**
 * `npm run bench`: measures, never asserts. Prints a table and writes bench-results/bench.json.
 *
 * - registration: full TLS-DSK registration on loopback (TLS connect, challenge, tunnelled
 *   handshake, signed REGISTER, verified 200), median and p99, against the lab in a child process
 *   so that this process's CPU is the phone's alone;
 * - openssl: the same machine's `openssl s_time -new` full-handshake time against the same
 *   registrar port, for comparison (target: registration ≤ 3× this);
 * - refresh CPU: process CPU time per signed refresh with its verified 200 (target ≤ 5 ms);
 * - failover storm (bench-failover.ts): 1 000 phones, primary and backup, the primary dies,
 *   refuses REGISTER, returns: worst second at the backup, flaps, failback spread;
 * - release bundle (bench-bundle.ts): bundle and tar sizes, cold start of the bundled
 *   `handset register --help` vs `node -e 0` and vs tsx, RSS after one simulated hour, image sizes;
 * - fleet (bench-fleet.ts): 1 000 phone cores against one mosquitto: connects/s, QoS 1 messages/s,
 *   CPU per message, the reconnect histogram after a broker restart and its worst second.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { lcdBytesPerUpdate } from "../board/pi/lcd-bench.ts";
import { openStore, signInDeps } from "../firmware/commands/identity.ts";
import { endpointForCert, registerOnce } from "../firmware/commands/register.ts";
import { silentLogger } from "../firmware/core/logger.ts";
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { SystemClock } from "../firmware/platform/system-clock.ts";
import { signIn } from "../firmware/provisioning/resumable-sign-in.ts";
import type { LabReady } from "../test/lab/lab.ts";
import { benchAudioStream } from "./bench-audio.ts";
import { benchBundle, serviceNodeFlags } from "./bench-bundle.ts";
import { benchCallSetup } from "./bench-call.ts";
import { benchDiscovery } from "./bench-discovery.ts";
import { benchFailover } from "./bench-failover.ts";
import { benchFleet } from "./bench-fleet.ts";
import { benchG722 } from "./bench-g722.ts";
import { benchOutage } from "./bench-outage.ts";
import { benchSrtp } from "./bench-srtp.ts";
import { summarize } from "./bench-stats.ts";
import { benchStorm } from "./bench-storm.ts";

const ROOT = join(import.meta.dirname, "..");

const stats = (values: number[]) => summarize(values);

async function startLabProcess(): Promise<{ ready: LabReady; stop: () => void }> {
  const child = spawn(
    process.execPath,
    [join(ROOT, "test/dev/handset-dev.mjs"), "lab", "--site", "hq", "--json"],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const rl = createInterface({ input: child.stdout });
  for await (const line of rl) {
    const e = JSON.parse(line) as { event: string };
    if (e.event === "lab.ready") return { ready: e as LabReady, stop: () => child.kill("SIGTERM") };
  }
  throw new Error("lab exited before lab.ready");
}

function opensslHandshakeMs(hostPort: string, caPath: string): number | undefined {
  const r = spawnSync("openssl", ["s_time", "-connect", hostPort, "-new", "-time", "3", "-CAfile", caPath], {
    encoding: "utf8",
  });
  if (r.error) return undefined;
  const m =
    /(\d+) connections in ([\d.]+)s/.exec(r.stdout) ?? /(\d+) connections in ([\d.]+) real/.exec(r.stdout);
  if (!m) return undefined;
  return (Number(m[2]) * 1000) / Number(m[1]);
}

/** Wall time of a whole `openssl s_client` handshake (process start included), as a person would time it. */
function opensslClientMs(hostPort: string, caPath: string): ReturnType<typeof stats> | undefined {
  const times: number[] = [];
  for (let i = 0; i < 15; i++) {
    const t0 = performance.now();
    const r = spawnSync(
      "openssl",
      ["s_client", "-connect", hostPort, "-CAfile", caPath, "-verify_return_error"],
      {
        input: "",
        encoding: "utf8",
      },
    );
    if (r.error) return undefined;
    times.push(performance.now() - t0);
  }
  return stats(times);
}

async function main(): Promise<void> {
  const lab = await startLabProcess();
  try {
    const { ready } = lab;
    const [host, port] = ready.pool.split(":");
    const cert = readFileSync(ready.testClient.cert, "utf8");
    const key = readFileSync(ready.testClient.key, "utf8");
    const ca = [readFileSync(ready.ca, "utf8")];
    const endpoint = endpointForCert(ready.testClient.uri, cert);
    const base = {
      registrar: { host: host!, port: Number(port) },
      endpoint,
      cert,
      key,
      ca,
      timeoutMs: 20_000,
    };

    const results: Record<string, unknown> = {};
    for (const innerTls of ["1.2", "1.0"] as const) {
      const times: number[] = [];
      for (let i = 0; i < 25; i++) {
        const t0 = performance.now();
        let t1 = 0;
        await registerOnce({
          ...base,
          innerTls,
          refreshes: 0,
          onEvent: (e) => {
            if (e.event === "state" && e["state"] === "registered") t1 = performance.now();
          },
        });
        if (i >= 3) times.push(t1 - t0); // the first few warm up the JIT
      }
      results[`registration_ms_tls${innerTls}`] = stats(times);
    }

    const refreshes = 300;
    let cpuStart = process.cpuUsage();
    let wallStart = 0;
    await registerOnce({
      ...base,
      innerTls: "1.2",
      refreshes,
      onEvent: (e) => {
        if (e.event === "state" && e["state"] === "registered") {
          cpuStart = process.cpuUsage();
          wallStart = performance.now();
        }
      },
    });
    const cpu = process.cpuUsage(cpuStart);
    results["refresh_cpu_ms_per_refresh"] =
      Math.round(((cpu.user + cpu.system) / 1000 / refreshes) * 1000) / 1000;
    results["refresh_wall_ms_per_refresh"] =
      Math.round(((performance.now() - wallStart) / refreshes) * 1000) / 1000;

    const ossl = opensslHandshakeMs(ready.pool, ready.ca);
    results["openssl_s_time_handshake_ms"] = ossl ?? "openssl not installed";
    const client = opensslClientMs(ready.pool, ready.ca);
    results["openssl_s_client_ms"] = client ?? "openssl not installed";
    const reg = results["registration_ms_tls1.2"] as { median: number };
    if (client)
      results["registration_over_s_client_ratio"] = Math.round((reg.median / client.median) * 100) / 100;
    if (ossl)
      results["registration_over_s_time_handshake_ratio"] = Math.round((reg.median / ossl) * 100) / 100;
    results["targets"] = {
      registration_over_s_client_ratio: "≤ 3",
      refresh_cpu_ms_per_refresh: "≤ 5",
      pin_to_certificate_stored_ms: "≤ 600 (median)",
    };
    results["machine"] = { node: process.version, platform: `${process.platform}-${process.arch}` };

    // PIN entered → certificate stored, and the share of it spent generating the key pair.
    const signInTimes: number[] = [];
    const keyTimes: number[] = [];
    for (let i = 0; i < 12; i++) {
      const random = new CryptoRandom();
      const store = openStore(mkdtempSync(join(tmpdir(), "handset-bench-store-")), random);
      const deps = signInDeps({ store, ca, random, clock: new SystemClock(), logger: silentLogger });
      const generate = deps.generateKeyPair;
      deps.generateKeyPair = async () => {
        const k0 = performance.now();
        const kp = await generate();
        keyTimes.push(performance.now() - k0);
        return kp;
      };
      const t0 = performance.now();
      await signIn(deps, { certProvUrl: ready.certProv, extension: "4711", pin: "1234", trustedRoots: ca });
      signInTimes.push(performance.now() - t0);
    }
    const signInStats = stats(signInTimes.slice(2));
    const keyStats = stats(keyTimes.slice(2));
    results["pin_to_certificate_stored_ms"] = signInStats;
    results["key_generation_ms"] = keyStats;
    results["key_generation_share_of_sign_in"] =
      Math.round((keyStats.median / signInStats.median) * 100) / 100;

    results["discovery"] = await benchDiscovery();
    results["lcd_serial_bytes"] = lcdBytesPerUpdate();
    results["outage"] = await benchOutage();
    results["storm_full_stack"] = await benchStorm();
    results["failover_storm"] = await benchFailover();
    results["bundle"] = await benchBundle();
    results["fleet"] = await benchFleet();
    // The image runs node with TurboFan for dsp… functions only (image/rootfs/usr/bin/handset):
    // the service_node_flags figures are the ones that count on the phone.
    results["srtp_call"] = {
      note: "a two-way G.711 call's SRTP (protect + unprotect, 50 packets/s each way); goal < 1 % of one core",
      in_this_process: await benchSrtp(),
      service_node_flags: underServiceFlags("scripts/bench-srtp.ts"),
    };
    results["audio_call"] = {
      note: "the whole audio path of a two-way SRTP G.711 call (encode, protect, unprotect, jitter buffer, decode) and the jitter buffer's added delay",
      in_this_process: await benchAudioStream(),
      service_node_flags: underServiceFlags("scripts/bench-audio.ts"),
    };
    results["call_setup"] = await benchCallSetup();
    results["g722_codec"] = {
      note: "G.722 encode + decode of one second of 16 kHz audio each (one call's codec work)",
      in_this_process: await benchG722(),
      service_node_flags: underServiceFlags("scripts/bench-g722.ts"),
    };

    mkdirSync(join(ROOT, "bench-results"), { recursive: true });
    writeFileSync(join(ROOT, "bench-results/bench.json"), `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
  } finally {
    lab.stop();
  }
}

/** A bench script that prints its JSON, in a process of its own with the service's node flags. */
function underServiceFlags(script: string): unknown {
  const r = spawnSync(process.execPath, [...serviceNodeFlags(), "--import", "tsx", join(ROOT, script)], {
    cwd: ROOT,
    encoding: "utf8",
  });
  if (r.status !== 0) return `${script} failed: ${r.stderr.split("\n")[0]}`;
  return JSON.parse(r.stdout) as unknown;
}

await main();
// A benchmark measures and leaves: the lab's and the phones' sockets may still be winding down.
process.exit(0);
