/**
 * Power loss, for real: a child process saves identity records in a loop through the real
 * nodeFileSystem and is SIGKILLed at random moments (during startup, load and tmp cleanup, or
 * in the middle of the save loop). After every kill the parent loads the store and demands:
 * the old or the new record, never corrupt, never undefined once a record existed, the
 * sequence number never backwards, no acknowledged save lost, every generation file intact.
 *
 * SIGKILL proves the process-level recipe (tmp → rename ordering, no torn replacement, debris
 * cleanup); the kernel's page cache survives it, so the fsyncs are what carries the same
 * guarantee across a real power cut. Kills: HANDSET_POWERLOSS_KILLS (default 1000).
 * The writer is bundled once to plain .mjs with esbuild so a restart costs a bare node start.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readdir, rm, statfs, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { IdentityStore } from "../../firmware/store/identity-store.ts";
import { makePairs, type TestPair } from "./fixtures.ts";

const KILLS = Number(process.env["HANDSET_POWERLOSS_KILLS"] ?? 1000);
const LANES = 4;
const FS_TYPES: Record<number, string> = {
  61267: "ext2/3/4",
  16914836: "tmpfs",
  2435016766: "btrfs",
  1481003842: "xfs",
  2035054128: "overlayfs",
  801189825: "zfs",
};

let root: string;
let writer: string;
let pairsFile: string;
let pairs: TestPair[];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "handset-powerloss-"));
  pairs = (await makePairs(3)).pairs;
  pairsFile = join(root, "pairs.json");
  await writeFile(pairsFile, JSON.stringify(pairs));
  writer = join(root, "writer.mjs");
  await build({
    entryPoints: [resolve(import.meta.dirname, "power-loss-writer.ts")],
    outfile: writer,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    logLevel: "silent",
  });
}, 60_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

interface Stats {
  kills: number;
  beforeReady: number;
  debrisSeen: number;
  sawOld: number;
  sawNew: number;
  maxSeq: number;
  /** the writer's save() duration, as last estimated */
  saveMs: number;
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((res) => child.once("close", () => res()));
}

/** One lane: its own store directory, trials until the shared budget is spent. */
async function lane(id: number, budget: { left: number }, stats: Stats, failures: string[]): Promise<void> {
  const dir = join(root, `store-${id}`);
  const verifier = new IdentityStore(nodeFileSystem, dir);
  let lastSeq = -1; // -1: no record yet
  let saveMs = 30; // running estimate of one save() in the writer, as it reports them
  while (budget.left > 0 && failures.length === 0) {
    budget.left--;
    const child = spawn(process.execPath, [writer, dir, pairsFile], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
    });
    const closed = exited(child);
    // 30 %: cut during boot (tmp cleanup, load, first save); 70 %: cut in the save loop, at a
    // delay scaled to this machine's measured save time so that cuts land inside saves.
    const duringBoot = Math.random() < 0.3;
    let timer: NodeJS.Timeout | undefined;
    child.stdout!.on("data", (d: Buffer) => {
      const chunk = d.toString();
      out += chunk;
      for (const m of chunk.matchAll(/^saved \d+ ([\d.]+)$/gm)) saveMs = 0.8 * saveMs + 0.2 * Number(m[1]);
      if (timer) return;
      if (duringBoot ? out.startsWith("boot") : out.includes("ready ")) {
        const window = duringBoot ? 25 : 2.5 * saveMs;
        timer = setTimeout(() => child.kill("SIGKILL"), Math.random() * window);
      }
    });
    const guard = setTimeout(() => child.kill("SIGKILL"), 10_000); // a hung writer is a failure too
    await closed;
    clearTimeout(timer);
    clearTimeout(guard);
    stats.kills++;

    const lines = out.split("\n").filter((l) => l && l !== "boot");
    const ready = lines.find((l) => l.startsWith("ready "));
    if (!ready) stats.beforeReady++;
    if (err && !/^\s*$/.test(err)) failures.push(`lane ${id}: writer stderr: ${err.slice(0, 300)}`);
    const acked = Math.max(-1, ...lines.map((l) => Number(l.split(" ")[1])));
    stats.saveMs = Math.round(saveMs);

    if ((await readdir(dir).catch(() => [] as string[])).some((n) => n.includes(".tmp-"))) stats.debrisSeen++;
    const states = await verifier.inspect();
    for (const s of states)
      if (s.status !== "ok" && s.status !== "missing") failures.push(`lane ${id}: ${s.file} is ${s.status}`);
    const record = await verifier.load();
    const names = await readdir(dir).catch(() => [] as string[]);
    if (names.some((n) => n.includes(".tmp-") || n.includes("corrupt")))
      failures.push(`lane ${id}: left after load: ${names.join(",")}`);

    const everWritten = lastSeq >= 0 || acked >= 0;
    if (!record) {
      if (everWritten) failures.push(`lane ${id}: store empty after a record was written`);
      continue;
    }
    const seq = record.lastGoodTime ?? 0;
    const floor = Math.max(lastSeq, acked);
    if (seq < floor) failures.push(`lane ${id}: seq ${seq} went back (last ${lastSeq}, acked ${acked})`);
    if (seq > floor + 1) failures.push(`lane ${id}: seq ${seq} jumped (last ${lastSeq}, acked ${acked})`);
    if (seq > 0 && record.credential?.serial !== pairs[seq % pairs.length]!.serial)
      failures.push(`lane ${id}: seq ${seq} carries the wrong credential`);
    if (seq === acked) stats.sawOld++;
    else if (seq === acked + 1) stats.sawNew++;
    lastSeq = seq;
    stats.maxSeq = Math.max(stats.maxSeq, seq);
  }
}

describe("identity store under power loss (SIGKILL)", () => {
  it(`survives ${KILLS} kills at random moments`, async () => {
    const started = performance.now();
    const stats: Stats = {
      kills: 0,
      beforeReady: 0,
      debrisSeen: 0,
      sawOld: 0,
      sawNew: 0,
      maxSeq: 0,
      saveMs: 0,
    };
    const failures: string[] = [];
    const budget = { left: KILLS };
    await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i, budget, stats, failures)));
    const seconds = (performance.now() - started) / 1000;
    const fsType = (await statfs(root)).type;
    process.stdout.write(
      `power-loss: ${stats.kills} kills in ${seconds.toFixed(1)} s on ${tmpdir()} ` +
        `(${FS_TYPES[fsType] ?? `fs 0x${fsType.toString(16)}`}); ${JSON.stringify(stats)}\n`,
    );
    expect(failures).toEqual([]);
    expect(stats.kills).toBe(KILLS);
    // The kills must actually land in the interesting places, or the test proves nothing.
    if (KILLS >= 200) {
      expect(stats.debrisSeen).toBeGreaterThan(0);
      expect(stats.sawNew + stats.sawOld).toBeGreaterThan(KILLS / 2);
    }
  }, 600_000);
});
