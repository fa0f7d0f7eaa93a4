/**
 * `npx tsx scripts/bench-bundle.ts`: the release bundle (issue 10), measured, never asserted.
 *
 * - size: handset.mjs, node_modules and the whole tar of each architecture, from a fresh
 *   `scripts/build.mjs` of the tree into a temporary folder (its wall time too);
 * - cold start: `handset register --help` as a whole process from the bundle (register itself needs
 *   a registrar and a certificate; --help loads the same module graph and exits, no network), vs
 *   `node -e 0` and vs today's development start through tsx (`node firmware/handset.mjs`);
 *   median of 11 interleaved runs each (target: bundle ≤ 2.5 × node -e 0);
 * - RSS after one simulated hour (as the service runs it: the median of three): a phone core (the real phone services: TLS-DSK registration,
 *   refreshes every 540 s, keep-alives, liveness) on a fake clock against the lab's SBA over real
 *   sockets, as the soak scenario runs it (test/scenarios/harness.ts), in a process of its own
 *   bundled like the firmware (the lab in another process), then process.memoryUsage().rss
 *   (target ≤ 60 MB); the same under tsx for comparison;
 * - image: size of each output and build seconds from dist/image/<arch>/MANIFEST.json, where
 *   `npm run image` has run.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import type { BuildOptions, Plugin } from "esbuild";
import type { Lab, LabReady } from "../test/lab/lab.ts";
import { isUp, makeRig, pass, register, signedInStore, waitStatus } from "../test/scenarios/harness.ts";

const ROOT = join(import.meta.dirname, "..");
const SELF = join(ROOT, "scripts/bench-bundle.ts");
const HOUR = 3_600_000;
const REFRESH = 540_000; // the lab registrar's Expires 600 s: min(600 − 30, 0.9 × 600) s
const MB = 2 ** 20;

type Arch = "amd64" | "arm64";
const HOST: Arch = process.arch === "arm64" ? "arm64" : "amd64";
const OTHER: Arch = HOST === "amd64" ? "arm64" : "amd64";
const CROSS_CXX: Record<Arch, string> = { amd64: "x86_64-linux-gnu-g++", arm64: "aarch64-linux-gnu-g++" };

const round = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;

function summary(values: number[]) {
  const s = [...values].sort((a, b) => a - b);
  return {
    n: s.length,
    median: round(s[Math.floor(s.length / 2)] ?? Number.NaN),
    min: round(s[0] ?? Number.NaN),
    max: round(s.at(-1) ?? Number.NaN),
  };
}

function duBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? duBytes(p) : statSync(p).size;
  }
  return n;
}

/** Interleaved rounds (the machine's noise falls on every command alike); the first two warm the caches. */
function coldStarts(commands: Record<string, string[]>, runs = 11, cwd = tmpdir()) {
  const times: Record<string, number[]> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
  const failures: Record<string, string> = {};
  for (let i = 0; i < runs + 2; i++) {
    for (const [name, argv] of Object.entries(commands)) {
      const t0 = performance.now();
      const r = spawnSync(process.execPath, argv, { cwd, encoding: "utf8" });
      const ms = performance.now() - t0;
      if (r.status !== 0) failures[name] = `exit ${r.status}: ${(r.stderr || r.stdout).split("\n")[0]}`;
      if (i >= 2) times[name]!.push(ms);
    }
  }
  return { times: Object.fromEntries(Object.entries(times).map(([k, v]) => [k, summary(v)])), failures };
}

/** A child process that prints one JSON line and stays until told to stop (or prints it and exits). */
async function childLine(
  argv: string[],
  env: Record<string, string> = {},
): Promise<{ line: Record<string, unknown>; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, argv, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  // Stopping waits for the child's exit: the lab removes its folders on SIGTERM.
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  const rl = createInterface({ input: child.stdout });
  for await (const line of rl) {
    if (line.startsWith("{")) return { line: JSON.parse(line) as Record<string, unknown>, stop };
  }
  throw new Error(`${argv.join(" ")} exited before its report`);
}

interface BuildModule {
  bundleOptions: () => BuildOptions;
  oneByteSource: (code: string) => string;
}

/**
 * The harness takes one function from test/lab/lab.ts (phoneNetwork: the lab's addresses as the
 * phone's config); the rest of the lab (its servers, and xml-crypto loaded at module scope) stays
 * out of the measured process: lab.ts becomes that one function, cut from its source.
 */
const labOnlyPhoneNetwork: Plugin = {
  name: "lab-phone-network-only",
  setup(b) {
    b.onLoad({ filter: /[/\\]test[/\\]lab[/\\]lab\.ts$/ }, (a) => {
      const text = readFileSync(a.path, "utf8");
      const m = /^export function phoneNetwork\([\s\S]*?\n\}\n/m.exec(text);
      if (!m) throw new Error(`${a.path}: no "export function phoneNetwork(…) {…}" to take`);
      return { contents: m[0], loader: "ts" };
    });
  },
};

/** The hour's process, bundled with the firmware's esbuild options (scripts/build.mjs). */
async function bundleHourProbe(dir: string): Promise<string> {
  const build = (await import(pathToFileURL(join(ROOT, "scripts/build.mjs")).href)) as BuildModule;
  const esbuild = await import("esbuild");
  const opts = build.bundleOptions();
  const r = await esbuild.build({
    ...opts,
    stdin: { contents: 'import "./scripts/bench-bundle.ts";\n', resolveDir: ROOT, sourcefile: "hour.ts" },
    external: [...(opts.external ?? []), "esbuild"],
    plugins: [...(opts.plugins ?? []), labOnlyPhoneNetwork],
    metafile: true,
  });
  const lab = Object.keys(r.metafile!.inputs).filter(
    (p) => p.startsWith("test/lab/") && p !== "test/lab/lab.ts",
  );
  if (lab.length > 0) throw new Error(`the hour's process would load the lab: ${lab.join(", ")}`);
  const file = join(dir, "hour.mjs");
  writeFileSync(file, build.oneByteSource(r.outputFiles![0]!.text));
  return file;
}

/** The node flags the image's /usr/bin/handset runs the firmware with (one place says them). */
export function serviceNodeFlags(): string[] {
  const wrapper = readFileSync(join(ROOT, "image/rootfs/usr/bin/handset"), "utf8");
  const m = /^NODE_FLAGS="([^"]*)"$/m.exec(wrapper);
  if (!m) throw new Error("image/rootfs/usr/bin/handset has no NODE_FLAGS line");
  return m[1]!.split(/\s+/).filter(Boolean);
}

/** RSS at exit of a whole process (median of 3): what Node alone and the loaded bundle cost. */
function rssAtExitMb(argv: string[]): number {
  const hook =
    'data:text/javascript,process.on("exit",()=>process.stderr.write("rss="+process.memoryUsage().rss+"\\n"))';
  const v: number[] = [];
  for (let i = 0; i < 3; i++) {
    const r = spawnSync(process.execPath, ["--import", hook, ...argv], { cwd: tmpdir(), encoding: "utf8" });
    const m = /rss=(\d+)/.exec(r.stderr);
    if (m) v.push(Number(m[1]) / MB);
  }
  return summary(v).median;
}

async function rssAfterHour(dir: string, bundle: string): Promise<Record<string, unknown>> {
  const lab = await childLine(["--import", "tsx", SELF, "--bench-bundle-lab"]);
  try {
    const env = { HANDSET_BENCH_LAB: JSON.stringify(lab.line) };
    const probe = await bundleHourProbe(dir);
    const flags = serviceNodeFlags();
    // As the image runs it (the service's node flags), and with node's defaults for comparison.
    // Three runs as the service runs (the figure the goal is checked against: their median);
    // one each of the others.
    const runs: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 3; i++)
      runs.push((await childLine([...flags, probe, "--bench-bundle-hour"], env)).line);
    const rss = (r: Record<string, unknown>) => r["rss_mb"] as number;
    const bundled = {
      line: { ...[...runs].sort((a, b) => rss(a) - rss(b))[1]!, rss_mb_runs: runs.map(rss) },
    };
    const bundledDefaults = await childLine([probe, "--bench-bundle-hour"], env);
    const tsx = await childLine(["--import", "tsx", SELF, "--bench-bundle-hour"], env);
    return {
      note: "phone core, real phone services on a fake clock, lab SBA over loopback TLS; lab in its own process",
      service_node_flags: flags,
      bundled: bundled.line,
      bundled_node_defaults: bundledDefaults.line,
      tsx: tsx.line,
      baseline_rss_at_exit_mb: {
        node_e_0: rssAtExitMb(["-e", "0"]),
        bundle_version: rssAtExitMb([bundle, "--version"]),
        bundle_version_service_flags: rssAtExitMb([...flags, bundle, "--version"]),
      },
      probe_bytes: statSync(probe).size,
    };
  } finally {
    await lab.stop();
  }
}

function imageFigures(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const arch of ["amd64", "arm64"] as const) {
    let m: { buildSeconds?: number; outputs?: Record<string, { size: number }> };
    try {
      m = JSON.parse(readFileSync(join(ROOT, "dist/image", arch, "MANIFEST.json"), "utf8"));
    } catch {
      out[arch] = "not built";
      continue;
    }
    out[arch] = {
      build_seconds: m.buildSeconds,
      outputs_bytes: Object.fromEntries(Object.entries(m.outputs ?? {}).map(([k, v]) => [k, v.size])),
    };
  }
  return out;
}

export async function benchBundle(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const dir = mkdtempSync(join(tmpdir(), "handset-bench-bundle-"));
  try {
    const cross = spawnSync("sh", ["-c", `command -v ${CROSS_CXX[OTHER]}`]).status === 0;
    const t0 = performance.now();
    const b = spawnSync(
      process.execPath,
      ["scripts/build.mjs", "--arch", cross ? "all" : HOST, "--out", join(dir, "bundle")],
      { cwd: ROOT, encoding: "utf8" },
    );
    if (b.status !== 0) throw new Error(`scripts/build.mjs failed: ${b.stderr}`);
    out["build_seconds"] = round((performance.now() - t0) / 1000, 2);

    const sizes: Record<string, unknown> = {};
    for (const arch of ["amd64", "arm64"] as const) {
      if (arch !== HOST && !cross) {
        sizes[arch] = `not built: ${CROSS_CXX[arch]} is missing`;
        continue;
      }
      const a = join(dir, "bundle", arch);
      sizes[arch] = {
        handset_mjs_bytes: statSync(join(a, "handset.mjs")).size,
        node_modules_bytes: duBytes(join(a, "node_modules")),
        tar_bytes: statSync(join(dir, "bundle", `${arch}.tar`)).size,
      };
    }
    out["size"] = sizes;

    const bundle = join(dir, "bundle", HOST, "handset.mjs");
    const cs = coldStarts({
      node_e_0: ["-e", "0"],
      bundle_register_help: [bundle, "register", "--help"],
      service_register_help: [...serviceNodeFlags(), bundle, "register", "--help"],
      tsx_register_help: [join(ROOT, "firmware/handset.mjs"), "register", "--help"],
    });
    const median = (k: string) => (cs.times[k] as { median: number }).median;
    out["cold_start_ms"] = {
      command:
        "handset register --help (register needs a registrar; --help is the whole process without one)",
      ...cs.times,
      ...(Object.keys(cs.failures).length > 0 ? { failures: cs.failures } : {}),
      bundle_over_node_ratio: round(median("bundle_register_help") / median("node_e_0"), 2),
      service_over_node_ratio: round(median("service_register_help") / median("node_e_0"), 2),
      tsx_over_node_ratio: round(median("tsx_register_help") / median("node_e_0"), 2),
      tsx_over_bundle_ratio: round(median("tsx_register_help") / median("bundle_register_help"), 2),
    };

    out["rss_after_simulated_hour"] = await rssAfterHour(dir, bundle);
    out["image"] = imageFigures();
    out["targets"] = {
      bundle_over_node_ratio: "≤ 2.5",
      rss_after_simulated_hour_mb: "≤ 60 (bundled: as the image's service runs it)",
    };
    out["machine"] = { node: process.version, platform: `${process.platform}-${process.arch}` };
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ── the two child processes ─────────────────────────────────────────────────────────────────────

/** The lab (expires 600 s, as the soak), with a signed-in store for the phone; until SIGTERM. */
async function labProcess(): Promise<void> {
  const { startLab } = await import("../test/lab/lab.ts");
  const lab = await startLab({ site: "branch", expires: 600 });
  const storeDir = await signedInStore(lab);
  process.stdout.write(`${JSON.stringify({ ...lab.ready, storeDir })}\n`);
  await new Promise<void>((resolve) => process.once("SIGTERM", () => resolve()));
  await lab.stop();
  rmSync(storeDir, { recursive: true, force: true });
  process.exit(0);
}

/** One simulated hour of a registered phone core; prints its RSS and exits. */
async function hourProcess(): Promise<void> {
  const ready = JSON.parse(process.env["HANDSET_BENCH_LAB"] ?? "") as LabReady & { storeDir: string };
  // The harness reads the lab's counters to know when the wire is quiet; across processes they
  // stay still, and the wire watch alone says when a request is in flight.
  const still = { stats: {} };
  const lab = {
    ready,
    ca: { cert: readFileSync(ready.ca, "utf8") },
    sba: still,
    pool: still,
    wan: { stats: { bytesToBranch: 0, bytesToCentre: 0 } },
  } as unknown as Lab;
  const rig = await makeRig(lab, ready.storeDir);
  register(rig);
  await waitStatus(rig, isUp);
  const atRegistered = process.memoryUsage().rss;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const from = rig.statuses.length;
  await pass(lab, rig, HOUR, REFRESH);
  const cpu = process.cpuUsage(cpu0);
  const m = process.memoryUsage();
  const after = rig.statuses.slice(from);
  const report = {
    rss_mb: round(m.rss / MB),
    rss_at_registered_mb: round(atRegistered / MB),
    heap_used_mb: round(m.heapUsed / MB),
    external_mb: round(m.external / MB),
    registrations_in_hour: after.filter(isUp).length,
    not_up_in_hour: after.filter((s) => !isUp(s)).map((s) => s.state),
    wall_ms: Math.round(performance.now() - t0),
    cpu_ms: Math.round((cpu.user + cpu.system) / 1000),
  };
  await rig.handle?.stop();
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(0);
}

if (process.argv.includes("--bench-bundle-lab")) await labProcess();
else if (process.argv.includes("--bench-bundle-hour")) await hourProcess();
else if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await benchBundle();
  process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  process.exit(0);
}
