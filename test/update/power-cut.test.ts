/**
 * A power cut during an update, for real: a child process runs `handset update` against
 * temp-file partitions with a payload of tens of MB and is SIGKILLed in the middle of writing
 * it. Then: the running slot is byte-identical, autoboot.txt is unchanged and valid, there is no
 * tryboot flag (the next boot is the old slot), the slot record says the write did not finish,
 * and a second update afterwards goes through.
 *
 * SIGKILL proves the process-level ordering (nothing but the inactive slot is touched before
 * the write is verified); the page cache survives it, so the fsyncs carry the same guarantee
 * across a real power cut.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAutoboot } from "../../firmware/update/autoboot.ts";
import {
  diskFlags,
  emulatedBoot,
  makeBundle,
  makeDisk,
  partitionHash,
  prefixHash,
  sha256,
  type TestDisk,
} from "./fixtures.ts";

const CHILD = resolve(import.meta.dirname, "update-child.ts");
const MIB = 2 ** 20;

let d: TestDisk;
beforeAll(async () => {
  d = await makeDisk({ bootBytes: 8 * MIB, systemBytes: 96 * MIB });
});
afterAll(async () => {
  await d?.cleanup();
});

function spawnUpdate(bundle: string): {
  child: ChildProcess;
  events: Array<Record<string, unknown>>;
  exited: Promise<{ code: number | null; signal: string | null }>;
} {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, bundle, ...diskFlags(d), "--json"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const events: Array<Record<string, unknown>> = [];
  let buf = "";
  child.stdout!.on("data", (c: Buffer) => {
    buf += c.toString();
    for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        child.emit("event", e);
      } catch {}
    }
  });
  child.stderr!.resume();
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) =>
    child.on("exit", (code, signal) => r({ code, signal })),
  );
  return { child, events, exited };
}

describe("power cut during an update", () => {
  it("SIGKILL mid-write: running slot identical, autoboot unchanged and valid, no tryboot flag; a second update succeeds", async () => {
    const boot = randomBytes(4 * MIB);
    const system = randomBytes(80 * MIB);
    const bundle = join(d.root, "big.bundle");
    await writeFile(bundle, makeBundle({ boot, system, key: d.privateKey }));
    const running = { boot: await partitionHash(d, "boot_a"), system: await partitionHash(d, "system_a") };
    const autoboot = await readFile(join(d.config, "autoboot.txt"));
    const autobootMtime = (await stat(join(d.config, "autoboot.txt"))).mtimeMs;

    const u = spawnUpdate(bundle);
    // Kill at the first progress report of the system payload: 16 of its 80 MiB are written.
    u.child.on("event", (e: Record<string, unknown>) => {
      if (e["event"] === "update.progress" && e["payload"] === "system") u.child.kill("SIGKILL");
    });
    const end = await u.exited;
    expect(end.signal, JSON.stringify(u.events.slice(-3))).toBe("SIGKILL");
    expect(u.events.some((e) => e["event"] === "update.written" && e["payload"] === "system")).toBe(false);

    expect(await partitionHash(d, "boot_a")).toBe(running.boot);
    expect(await partitionHash(d, "system_a")).toBe(running.system);
    expect(await readFile(join(d.config, "autoboot.txt"))).toEqual(autoboot);
    expect((await stat(join(d.config, "autoboot.txt"))).mtimeMs).toBe(autobootMtime);
    expect(parseAutoboot(autoboot.toString()).committed).toBe(2);
    await expect(stat(join(d.config, "tryboot"))).rejects.toThrow();
    // The slot written is marked unfinished, and its system partition is neither old nor new.
    const records = JSON.parse(await readFile(join(d.config, "handset-slots.json"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(records["b"]).toMatchObject({ version: "2.0.0", state: "writing" });
    expect(await prefixHash(d, "system_b", system.length)).not.toBe(sha256(system));
    // The next boot is the old slot.
    expect(await emulatedBoot(d)).toEqual({ partition: 2, tryboot: false });

    // Power back: the same update again goes through, and asks for the trial boot.
    const again = spawnUpdate(bundle);
    const end2 = await again.exited;
    expect(end2, JSON.stringify(again.events.slice(-3))).toEqual({ code: 0, signal: null });
    expect(again.events.find((e) => e["event"] === "child.command")).toMatchObject({
      cmd: "systemctl",
      args: ["reboot"],
    });
    expect(await prefixHash(d, "boot_b", boot.length)).toBe(sha256(boot));
    expect(await prefixHash(d, "system_b", system.length)).toBe(sha256(system));
    expect(await partitionHash(d, "system_a")).toBe(running.system);
    expect(await stat(join(d.config, "tryboot"))).toBeTruthy();
    const records2 = JSON.parse(await readFile(join(d.config, "handset-slots.json"), "utf8")) as Record<
      string,
      unknown
    >;
    expect(records2["b"]).toMatchObject({ state: "written" });
    expect(await emulatedBoot(d)).toEqual({ partition: 3, tryboot: true });
  }, 120_000);
});
