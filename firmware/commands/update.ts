/**
 * `handset update BUNDLE [--keys DIR] [--disk DIR] [--proc DIR] [--no-reboot]`: installs a
 * signed update bundle into the inactive slot and asks the bootloader for a one-shot trial boot
 * of it (the health check after that boot commits it or goes back: `handset slot health`).
 *
 * Order (nothing is written until every check passed): phone not busy → which slot runs, and
 * that the other one is free to write → keys → bundle structure → signature → arch and sizes →
 * every payload's sha256 → write boot, then system, each read back → trial reboot.
 * autoboot.txt is never touched here: only a commit changes it.
 */

import { open, stat } from "node:fs/promises";
import type { Clock } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import {
  inspectAutoboot,
  type Rebooter,
  type RunCommand,
  readBootInfo,
  readSlotRecords,
  rebooter,
  runCommand,
  writeSlotRecords,
} from "../platform/boot-control.ts";
import { partitionBytes, sha256Range, writePayload } from "../platform/slot-writer.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { DEFAULT_UPDATE_KEYS_DIR, loadUpdateKeys, verifyEd25519 } from "../platform/update-keys.ts";
import {
  type Arch,
  type BundleHead,
  checkBundleFits,
  checkPayloadDigests,
  MAX_HEAD_BYTES,
  type PayloadName,
  parseBundleHead,
  payloadRanges,
} from "../update/bundle-format.ts";
import { type Disk, diskAt } from "../update/disk.ts";
import { isBusyStatus, parseSystemctlShow, type ServiceSample } from "../update/health.ts";
import { planUpdate, slotStatus } from "../update/slots.ts";
import { type ArgSpec, type CommandSpec, parseFlags } from "./args.ts";
import type { Output } from "./output.ts";

export const PHONE_UNIT = "handset.service";

export const UPDATE_SPEC = {
  summary: "install a signed update bundle into the inactive slot and trial-boot it",
  synopsis: ["BUNDLE [--keys DIR] [--disk DIR] [--no-reboot]"],
  flags: {
    keys: {
      type: "string",
      arg: "DIR",
      help: `the Ed25519 public keys (*.pem) updates must be signed with (default ${DEFAULT_UPDATE_KEYS_DIR})`,
    },
    disk: {
      type: "string",
      arg: "DIR",
      help: "partitions as DIR/<name> and the config partition as DIR/config/ (default: the phone's disk)",
    },
    proc: { type: "string", arg: "DIR", help: "where /proc is (the boot's facts; default /proc)" },
    "no-reboot": { type: "boolean", help: "write and verify, then only say what would happen next" },
  },
  notes: [
    "Refused (update-busy) while the phone signs in or is in a call; nothing is written until the",
    "signature, the arch, the sizes and every payload's sha256 verified. The trial boot starts the",
    "new slot once; `handset slot health` after it commits the slot or reboots back to the old one.",
  ],
} as const satisfies CommandSpec;

/** What the commands reach outside through; tests replace each. */
export interface UpdateDeps {
  /** Runs systemctl (the phone's state, reboots). */
  run: RunCommand;
  /** This board's arch. */
  arch: Arch;
  clock: Clock;
}

export function hostArch(arch: string = process.arch): Arch {
  if (arch === "arm64") return "arm64";
  if (arch === "x64") return "amd64";
  throw new HandsetError("update-wrong-arch", `no handset image for ${arch}`);
}

export function defaultUpdateDeps(o: Partial<UpdateDeps> = {}): UpdateDeps {
  return {
    run: o.run ?? runCommand,
    arch: o.arch ?? hostArch(),
    clock: o.clock ?? new SystemClock(),
  };
}

/** Splits the positional arguments from the flags (a string flag's value is not positional). */
export function positionals(argv: string[], spec: ArgSpec): { args: string[]; flags: string[] } {
  const args: string[] = [];
  const flags: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("-") && a !== "-") {
      flags.push(a);
      const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
      if (name && spec[name]?.type === "string" && i + 1 < argv.length) flags.push(argv[++i]!);
    } else args.push(a);
  }
  return { args, flags };
}

/** The phone service's state from systemd. */
export async function probePhone(run: RunCommand): Promise<ServiceSample> {
  return parseSystemctlShow(
    await run("systemctl", ["show", "-p", "ActiveState", "-p", "StatusText", "-p", "NRestarts", PHONE_UNIT]),
  );
}

/** The boot's facts, autoboot.txt (read only) and the slots' states. */
export async function readSlots(disk: Disk, procDir: string) {
  const boot = await readBootInfo(procDir);
  const choice = await inspectAutoboot(disk.configDir);
  return { boot, choice, status: slotStatus(boot, choice.autoboot) };
}

async function readHead(path: string): Promise<BundleHead> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new Error("not a file");
    size = s.size;
  } catch (err) {
    throw new HandsetError("update-malformed", `update bundle ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const fh = await open(path, "r");
  try {
    const want = Math.min(size, MAX_HEAD_BYTES);
    const buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await fh.read(buf, got, want - got, got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return parseBundleHead(new Uint8Array(buf.buffer, buf.byteOffset, got), size);
  } finally {
    await fh.close();
  }
}

export async function updateCommand(
  argv: string[],
  out: Output,
  deps: Partial<UpdateDeps> = {},
  reboot?: Rebooter,
): Promise<number> {
  const { args, flags } = positionals(argv, UPDATE_SPEC.flags);
  const f = parseFlags(flags, UPDATE_SPEC.flags);
  if (args.length !== 1)
    throw new HandsetError("usage", "update needs one BUNDLE file (handset update --help)");
  const bundle = args[0]!;
  const d = defaultUpdateDeps(deps);
  const disk = diskAt(typeof f["disk"] === "string" ? f["disk"] : undefined);
  const procDir = typeof f["proc"] === "string" ? f["proc"] : "/proc";

  // 1. The phone must not be in the middle of something.
  let phone: ServiceSample | undefined;
  try {
    phone = await probePhone(d.run);
  } catch (err) {
    out.event({ event: "warning", message: `phone state unknown (${(err as Error).message}): going on` });
  }
  if (phone && isBusyStatus(phone.statusText))
    throw new HandsetError("update-busy", `the phone is busy (${phone.statusText.trim()}): try again later`);

  // 2. Which slot runs; the other one must be the free one.
  const { boot, choice, status } = await readSlots(disk, procDir);
  const plan = planUpdate(status, choice.autoboot);

  // 3. Keys, bundle, signature, arch, sizes, digests: all before anything is written.
  const keys = await loadUpdateKeys(typeof f["keys"] === "string" ? f["keys"] : DEFAULT_UPDATE_KEYS_DIR);
  const head = await readHead(bundle);
  if (head.unsigned) throw new HandsetError("update-unsigned", "the update bundle is not signed");
  const signer = verifyEd25519(keys, head.headerBytes, head.signature);
  if (!signer)
    throw new HandsetError("update-bad-signature", "the update bundle's signature matches no update key");
  const targets = {
    boot: disk.partition(plan.partitions.boot),
    system: disk.partition(plan.partitions.system),
  };
  const protectedPaths = plan.protected.map((p) => disk.partition(p));
  const room: Record<PayloadName, number> = {
    boot: await partitionBytes(targets.boot),
    system: await partitionBytes(targets.system),
  };
  checkBundleFits(head, { arch: d.arch, partitionBytes: room });
  const started = d.clock.monotonic();
  const digests = {} as Record<PayloadName, string>;
  for (const p of payloadRanges(head)) digests[p.name] = await sha256Range(bundle, p.start, p.size);
  checkPayloadDigests(head, digests);
  out.event({
    event: "update.verified",
    version: head.header.version,
    arch: head.header.arch,
    key: signer.file,
    slot: plan.target,
    ms: Math.round(d.clock.monotonic() - started),
  });

  // 4. Write the inactive slot, each payload read back.
  const records = await readSlotRecords(disk.configDir);
  records[plan.target] = { version: head.header.version, state: "writing" };
  await writeSlotRecords(disk.configDir, records);
  const written: Partial<Record<PayloadName, { size: number; sha256: string }>> = {};
  for (const p of payloadRanges(head)) {
    const t0 = d.clock.monotonic();
    let reported = 0;
    const r = await writePayload({
      source: bundle,
      start: p.start,
      size: p.size,
      sha256: p.sha256,
      target: targets[p.name],
      protected: protectedPaths,
      preverified: true,
      onProgress: (n) => {
        if (n - reported >= 16 * 2 ** 20 || n === p.size) {
          reported = n;
          out.event({
            event: "update.progress",
            payload: p.name,
            partition: plan.partitions[p.name],
            bytes: n,
            of: p.size,
          });
        }
      },
    });
    written[p.name] = { size: r.bytes, sha256: r.sha256 };
    out.event({
      event: "update.written",
      payload: p.name,
      partition: plan.partitions[p.name],
      bytes: r.bytes,
      ms: Math.round(d.clock.monotonic() - t0),
    });
  }
  records[plan.target] = { version: head.header.version, state: "written", payloads: written };
  await writeSlotRecords(disk.configDir, records);

  // 5. The trial boot (autoboot.txt [tryboot] names the slot just written).
  const next =
    boot.board === "pi"
      ? 'systemctl reboot "0 tryboot"'
      : "tryboot flag on the config partition, then systemctl reboot";
  if (f["no-reboot"] === true) {
    out.event({
      event: "update.ready",
      slot: plan.target,
      version: head.header.version,
      next: `trial boot of slot ${plan.target} (${next}); not rebooting (--no-reboot)`,
    });
    return 0;
  }
  out.event({ event: "update.reboot", slot: plan.target, version: head.header.version, how: next });
  await (reboot ?? rebooter({ board: boot.board, configDir: disk.configDir, run: d.run })).trial();
  return 0;
}
