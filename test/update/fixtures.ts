/**
 * A phone's disk as plain files in a temp dir (DIR/<partition>, DIR/config/ as the mounted
 * config partition, DIR/proc/cmdline as the emulated bootloader leaves it), a real Ed25519 key
 * pair, bundles made from them, a fake systemctl, and the emulated bootloader itself (reads the
 * tryboot flag, deletes it, picks the partition from autoboot.txt, writes /proc/cmdline).
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes, sign } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOutput, type Output } from "../../firmware/commands/output.ts";
import { hostArch } from "../../firmware/commands/update.ts";
import type { RunCommand } from "../../firmware/platform/boot-control.ts";
import { parseAutoboot, renderAutoboot } from "../../firmware/update/autoboot.ts";
import {
  type Arch,
  digestPayload,
  encodeBundle,
  encodeHeader,
  makeHeader,
} from "../../firmware/update/bundle-format.ts";

export const ARCH: Arch = hostArch();
export const OTHER_ARCH: Arch = ARCH === "amd64" ? "arm64" : "amd64";

export const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

export interface TestKeys {
  dir: string;
  privateKey: KeyObject;
}

export function newKeyPair(): { privateKey: KeyObject; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicPem: publicKey.export({ type: "spki", format: "pem" }).toString() };
}

export interface TestDisk {
  root: string;
  disk: string;
  config: string;
  proc: string;
  keys: string;
  privateKey: KeyObject;
  /** Partition sizes. */
  bootBytes: number;
  systemBytes: number;
  cleanup(): Promise<void>;
}

export async function makeDisk(o: { bootBytes?: number; systemBytes?: number } = {}): Promise<TestDisk> {
  const root = await mkdtemp(join(tmpdir(), "handset-update-"));
  const disk = join(root, "disk");
  const config = join(disk, "config");
  const proc = join(root, "proc");
  const keys = join(root, "keys");
  await mkdir(config, { recursive: true });
  await mkdir(proc, { recursive: true });
  await mkdir(keys, { recursive: true });
  const bootBytes = o.bootBytes ?? 256 * 1024;
  const systemBytes = o.systemBytes ?? 1024 * 1024;
  for (const [name, size] of [
    ["boot_a", bootBytes],
    ["boot_b", bootBytes],
    ["system_a", systemBytes],
    ["system_b", systemBytes],
    ["data", 64 * 1024],
  ] as const)
    await writeFile(join(disk, name), randomBytes(size));
  await writeFile(join(config, "autoboot.txt"), renderAutoboot(2));
  await writeFile(
    join(proc, "cmdline"),
    "root=PARTLABEL=system_a ro handset.slot=a handset.boot_partition=2\n",
  );
  const { privateKey, publicPem } = newKeyPair();
  await writeFile(join(keys, "key-1.pem"), publicPem);
  return {
    root,
    disk,
    config,
    proc,
    keys,
    privateKey,
    bootBytes,
    systemBytes,
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
}

export interface BundleParts {
  version?: string;
  arch?: Arch;
  boot: Uint8Array;
  system: Uint8Array;
  /** undefined → 64 zero bytes (unsigned). */
  key: KeyObject | undefined;
}

export function makeBundle(p: BundleParts): Uint8Array {
  const header = makeHeader({
    version: p.version ?? "2.0.0",
    arch: p.arch ?? ARCH,
    payloads: [
      { name: "boot", ...digestPayload(p.boot) },
      { name: "system", ...digestPayload(p.system) },
    ],
  });
  const headerBytes = encodeHeader(header);
  const signature = p.key ? new Uint8Array(sign(null, headerBytes, p.key)) : new Uint8Array(64);
  return encodeBundle(headerBytes, signature, [p.boot, p.system]);
}

/** Every file of the disk: sha256 and mtime (a refused update leaves all of them as they were). */
export async function snapshot(d: TestDisk): Promise<Record<string, { sha256: string; mtimeMs: number }>> {
  const out: Record<string, { sha256: string; mtimeMs: number }> = {};
  for (const dir of [d.disk, d.config])
    for (const n of await readdir(dir)) {
      const p = join(dir, n);
      const s = await stat(p);
      if (s.isFile()) out[p] = { sha256: sha256(await readFile(p)), mtimeMs: s.mtimeMs };
    }
  return out;
}

export const partitionHash = async (d: TestDisk, name: string) => sha256(await readFile(join(d.disk, name)));

/** The first `n` bytes of a partition, hashed (what a payload of n bytes wrote). */
export const prefixHash = async (d: TestDisk, name: string, n: number) =>
  sha256((await readFile(join(d.disk, name))).subarray(0, n));

export async function committedPartition(d: TestDisk): Promise<number> {
  return parseAutoboot(await readFile(join(d.config, "autoboot.txt"), "utf8")).committed;
}

/**
 * The emulated bootloader (what the lead's harness plays): a `tryboot` flag on the config
 * partition is consumed and the [tryboot] partition starts with handset.tryboot=1; otherwise [all].
 */
export async function emulatedBoot(d: TestDisk): Promise<{ partition: number; tryboot: boolean }> {
  const ab = parseAutoboot(await readFile(join(d.config, "autoboot.txt"), "utf8"));
  const flag = join(d.config, "tryboot");
  let tryboot = false;
  try {
    await stat(flag);
    tryboot = true;
    await rm(flag);
  } catch {}
  const partition = tryboot ? ab.tryboot : ab.committed;
  const slot = partition === 2 ? "a" : "b";
  await writeFile(
    join(d.proc, "cmdline"),
    `root=PARTLABEL=system_${slot} ro handset.slot=${slot}${tryboot ? " handset.tryboot=1" : ""} handset.boot_partition=${partition}\n`,
  );
  return { partition, tryboot };
}

/** A systemctl that never touches the machine: `show` answers from `phone`, the rest is recorded. */
export function fakeSystemctl(phone: { active?: string; status: string; restarts?: number }) {
  const calls: string[][] = [];
  const run: RunCommand = async (cmd, args) => {
    calls.push([cmd, ...args]);
    if (cmd !== "systemctl") throw new Error(`unexpected command ${cmd}`);
    if (args[0] === "show")
      return `ActiveState=${phone.active ?? "active"}\nStatusText=${phone.status}\nNRestarts=${phone.restarts ?? 0}\n`;
    return "";
  };
  return { run, calls, phone };
}

/** Output into arrays: events (parsed JSON) and stderr lines. */
export function captureOutput(): { out: Output; events: Array<Record<string, unknown>>; errors: string[] } {
  const events: Array<Record<string, unknown>> = [];
  const errors: string[] = [];
  const out = createOutput(
    true,
    (l) => events.push(JSON.parse(l) as Record<string, unknown>),
    (l) => errors.push(l),
  );
  return { out, events, errors };
}

export const diskFlags = (d: TestDisk) => ["--disk", d.disk, "--proc", d.proc, "--keys", d.keys];
export const slotFlags = (d: TestDisk) => ["--disk", d.disk, "--proc", d.proc];
