/**
 * `handset update SOURCE` / `handset update --request FILE`: installs a signed update bundle into
 * the inactive slot and asks the bootloader for a one-shot trial boot of it (the health check
 * after that boot commits it or goes back: `handset slot health`).
 *
 * SOURCE is a file or an http(s) URL. Order (nothing is written until every check passed):
 * phone not busy → which slot runs, and that the other one is free to write → keys → bundle
 * structure → signature → (requested version) → arch and sizes → payloads → write boot, then
 * system, each read back → trial reboot. For a file, every payload's sha256 is checked before the
 * first write. A URL is streamed (a bundle does not fit the data partition): its head is read and
 * checked as a file's is, then each 4 MiB chunk is checked against its signed digest before it is
 * written, and each payload read back against its whole sha256.
 *
 * --request FILE is the root half of a fleet update (firmware/update/update-request.ts): the
 * request is removed first (a failing update is not restarted by the path unit again and again),
 * the URL is installed, and result.json is left beside it, ok:true just before the trial reboot,
 * ok:false on any failure (and a non-zero exit).
 * autoboot.txt is never touched here: only a commit changes it.
 */

import { open, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Clock } from "../core/clock.ts";
import { asHandsetError, HandsetError } from "../core/errors.ts";
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
import {
  type BundleDownload,
  DEFAULT_IDLE_TIMEOUT_MS,
  displayUrl,
  openBundleDownload,
  readCaFile,
} from "../platform/bundle-download.ts";
import { nodeFileSystem } from "../platform/file-system.ts";
import {
  assertNotProtected,
  partitionBytes,
  sha256Range,
  writePayload,
  writeStreamedPayload,
} from "../platform/slot-writer.ts";
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
  readBundleHead,
} from "../update/bundle-format.ts";
import { type Disk, diskAt } from "../update/disk.ts";
import { isBusyStatus, parseSystemctlShow, type ServiceSample } from "../update/health.ts";
import { planUpdate, type Slot, slotStatus } from "../update/slots.ts";
import {
  encodeUpdateResult,
  MAX_CLOCK_OFFSET_MS,
  parseUpdateRequest,
  RESULT_FILE,
  requestIdOf,
  UpdateRequestError,
  updateResult,
} from "../update/update-request.ts";
import { type ArgSpec, type CommandSpec, parseFlags, seconds } from "./args.ts";
import type { Output } from "./output.ts";

export const PHONE_UNIT = "handset.service";

export const UPDATE_SPEC = {
  summary: "install a signed update bundle (file or http(s) URL) into the inactive slot and trial-boot it",
  synopsis: [
    "BUNDLE [--keys DIR] [--disk DIR] [--proc DIR] [--no-reboot]",
    "URL [--ca PEM] [--clock-offset-ms N] [--idle-timeout S] [--keys DIR] [--disk DIR] [--proc DIR] [--no-reboot]",
    "--request FILE [--idle-timeout S] [--keys DIR] [--disk DIR] [--proc DIR] [--no-reboot]",
  ],
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
    ca: {
      type: "string",
      arg: "PEM",
      help: "the roots an https server's certificate must chain to (default: Node's bundled roots)",
    },
    "clock-offset-ms": {
      type: "string",
      arg: "N",
      help: "check the server certificate at the OS time + N ms (the phone's clock minus the OS's; default 0)",
    },
    "idle-timeout": {
      type: "string",
      arg: "S",
      help: `a download that sends nothing for S seconds has failed (default ${DEFAULT_IDLE_TIMEOUT_MS / 1000})`,
    },
    request: {
      type: "string",
      arg: "FILE",
      help: "install what a fleet request (JSON) asks for; FILE is removed, DIR(FILE)/result.json written",
    },
  },
  notes: [
    "Refused (update-busy) while the phone signs in or is in a call. From a file nothing is written",
    "until the signature, the arch, the sizes and every payload's sha256 verified. From a URL",
    "(streamed; Content-Length required) the same checks of the signed head come first; then each",
    "4 MiB chunk is written only after it matched its signed digest. A bad chunk stops the install",
    "before it is written, but the chunks before it, each verified, may already be in the inactive",
    "slot: it stays marked `writing` and no trial boot is asked for.",
    "--request: result.json beside FILE (0644) says ok:true just before the trial boot, or ok:false",
    "with the error's code (and the command exits 1). The trial boot starts the new slot once;",
    "`handset slot health` after it commits the slot or reboots back to the old one.",
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

/** Where the bundle comes from: a file (hashed whole before any write) or a stream. */
type Source =
  | { kind: "file"; path: string }
  | { kind: "url"; url: URL; ca?: string[]; clockOffsetMs: number };

interface InstallOptions {
  source: Source;
  disk: Disk;
  procDir: string;
  keysDir: string;
  noReboot: boolean;
  idleTimeoutMs: number;
  /** The version the bundle must carry (a fleet request's), checked before anything is written. */
  expectVersion?: string;
  /** Called once the slot is written and verified, just before the trial boot (or --no-reboot). */
  onReady?: (r: { version: string; slot: Slot }) => Promise<void>;
  /** What is known so far, for a failure's report. */
  learned?: { version?: string; slot?: Slot };
}

function progressReporter(out: Output, payload: PayloadName, partition: string, size: number) {
  let reported = 0;
  return (n: number) => {
    if (n - reported >= 16 * 2 ** 20 || n === size) {
      reported = n;
      out.event({ event: "update.progress", payload, partition, bytes: n, of: size });
    }
  };
}

async function install(o: InstallOptions, out: Output, d: UpdateDeps, reboot?: Rebooter): Promise<number> {
  const { disk, source } = o;
  const learned = o.learned ?? {};

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
  const { boot, choice, status } = await readSlots(disk, o.procDir);
  const plan = planUpdate(status, choice.autoboot);
  learned.slot = plan.target;

  // 3. Keys, bundle, signature, version, arch, sizes (and for a file the digests): all before
  // anything is written.
  const keys = await loadUpdateKeys(o.keysDir);
  let download: BundleDownload | undefined;
  let version: string;
  try {
    let head: BundleHead;
    if (source.kind === "file") head = await readHead(source.path);
    else {
      const offset = source.clockOffsetMs;
      download = await openBundleDownload(source.url, {
        ...(source.ca ? { ca: source.ca } : {}),
        clock: { now: () => d.clock.now() + offset },
        idleTimeoutMs: o.idleTimeoutMs,
      });
      out.event({ event: "update.download", url: displayUrl(source.url), bytes: download.size });
      head = await readBundleHead((n) => download!.read(n), download.size);
    }
    if (head.unsigned) throw new HandsetError("update-unsigned", "the update bundle is not signed");
    const signer = verifyEd25519(keys, head.headerBytes, head.signature);
    if (!signer)
      throw new HandsetError("update-bad-signature", "the update bundle's signature matches no update key");
    version = head.header.version;
    learned.version = version;
    if (o.expectVersion !== undefined && version !== o.expectVersion)
      throw new HandsetError(
        "update-version-mismatch",
        `the update bundle is version ${version}, the request asked for ${o.expectVersion}`,
      );
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
    if (source.kind === "file") {
      const digests = {} as Record<PayloadName, string>;
      for (const p of payloadRanges(head)) digests[p.name] = await sha256Range(source.path, p.start, p.size);
      checkPayloadDigests(head, digests);
    } else {
      // Both targets, before the first is written: a streamed boot payload is not written when
      // the system one could not be.
      for (const t of Object.values(targets)) await assertNotProtected(t, protectedPaths);
    }
    out.event({
      event: "update.verified",
      version,
      arch: head.header.arch,
      key: signer.file,
      slot: plan.target,
      // From a URL only the signed head is verified here; the payloads are, chunk by chunk, as they come.
      ...(source.kind === "file" ? { ms: Math.round(d.clock.monotonic() - started) } : { stream: true }),
    });

    // 4. Write the inactive slot, each payload read back.
    const records = await readSlotRecords(disk.configDir);
    records[plan.target] = { version, state: "writing" };
    await writeSlotRecords(disk.configDir, records);
    const written: Partial<Record<PayloadName, { size: number; sha256: string }>> = {};
    for (const p of payloadRanges(head)) {
      const t0 = d.clock.monotonic();
      const onProgress = progressReporter(out, p.name, plan.partitions[p.name], p.size);
      const r =
        source.kind === "file"
          ? await writePayload({
              source: source.path,
              start: p.start,
              size: p.size,
              sha256: p.sha256,
              target: targets[p.name],
              protected: protectedPaths,
              preverified: true,
              onProgress,
            })
          : await writeStreamedPayload({
              payload: p,
              chunkBytes: head.header.chunkBytes,
              read: (n) => download!.read(n),
              target: targets[p.name],
              protected: protectedPaths,
              onProgress,
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
    records[plan.target] = { version, state: "written", payloads: written };
    await writeSlotRecords(disk.configDir, records);
  } finally {
    download?.close();
  }

  // 5. The trial boot (autoboot.txt [tryboot] names the slot just written).
  await o.onReady?.({ version, slot: plan.target });
  const next =
    boot.board === "pi"
      ? 'systemctl reboot "0 tryboot"'
      : "tryboot flag on the config partition, then systemctl reboot";
  if (o.noReboot) {
    out.event({
      event: "update.ready",
      slot: plan.target,
      version,
      next: `trial boot of slot ${plan.target} (${next}); not rebooting (--no-reboot)`,
    });
    return 0;
  }
  out.event({ event: "update.reboot", slot: plan.target, version, how: next });
  await (reboot ?? rebooter({ board: boot.board, configDir: disk.configDir, run: d.run })).trial();
  return 0;
}

function clockOffset(v: string | boolean | undefined): number {
  if (v === undefined) return 0;
  const text = String(v);
  const n = /^-?\d{1,13}$/.test(text) ? Number(text) : Number.NaN;
  if (!(Math.abs(n) <= MAX_CLOCK_OFFSET_MS))
    throw new HandsetError(
      "usage",
      `--clock-offset-ms must be whole milliseconds within ±10 years, got "${text}"`,
    );
  return n;
}

const isUrl = (s: string) => /^https?:\/\//i.test(s);

function parseUrl(text: string): URL {
  try {
    return new URL(text);
  } catch {
    throw new HandsetError("usage", `not a URL: ${text.slice(0, 80)}`);
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
  const str = (name: string) => (typeof f[name] === "string" ? (f[name] as string) : undefined);
  const base = {
    disk: diskAt(str("disk")),
    procDir: str("proc") ?? "/proc",
    keysDir: str("keys") ?? DEFAULT_UPDATE_KEYS_DIR,
    noReboot: f["no-reboot"] === true,
    idleTimeoutMs: Math.round(seconds(f, "idle-timeout", DEFAULT_IDLE_TIMEOUT_MS / 1000, 3600) * 1000),
  };
  const d = defaultUpdateDeps(deps);
  const request = str("request");
  if (request !== undefined) {
    if (args.length > 0 || f["ca"] !== undefined || f["clock-offset-ms"] !== undefined)
      throw new HandsetError(
        "usage",
        "--request FILE takes no SOURCE, --ca or --clock-offset-ms: the request says them",
      );
    return requestCommand(request, base, out, d, reboot);
  }
  if (args.length !== 1)
    throw new HandsetError("usage", "update needs one BUNDLE file or URL (handset update --help)");
  const arg = args[0]!;
  let source: Source;
  if (isUrl(arg)) {
    const ca = str("ca");
    source = {
      kind: "url",
      url: parseUrl(arg),
      clockOffsetMs: clockOffset(f["clock-offset-ms"]),
      ...(ca !== undefined ? { ca: await readCaFile(ca) } : {}),
    };
  } else {
    if (f["ca"] !== undefined || f["clock-offset-ms"] !== undefined)
      throw new HandsetError("usage", "--ca and --clock-offset-ms are for an https URL, not a file");
    source = { kind: "file", path: arg };
  }
  return install({ ...base, source }, out, d, reboot);
}

/**
 * `--request FILE`: take the request (remove it), install its URL, leave result.json beside it.
 * A missing FILE is no request: nothing is answered (a previous result is not overwritten).
 */
async function requestCommand(
  file: string,
  base: Omit<InstallOptions, "source">,
  out: Output,
  d: UpdateDeps,
  reboot?: Rebooter,
): Promise<number> {
  const bytes = await nodeFileSystem.readFile(file);
  if (bytes === undefined) throw new UpdateRequestError(`there is no request at ${file}`);
  // Taken before anything else can fail: the path unit starts this again while the file exists.
  await nodeFileSystem.remove(file);
  const text = bytes.toString("utf8");
  let id = requestIdOf(text);
  let offset = 0;
  const learned: { version?: string; slot?: Slot } = {};
  const answer = (r: Parameters<typeof updateResult>[0]) =>
    nodeFileSystem.writeFileAtomic(
      join(dirname(file), RESULT_FILE),
      Buffer.from(encodeUpdateResult(updateResult(r))),
      0o644,
    );
  try {
    const req = parseUpdateRequest(text);
    id = req.id;
    offset = req.clockOffsetMs;
    const url = new URL(req.url);
    out.event({
      event: "update.request",
      id,
      url: displayUrl(url),
      ...(req.version !== undefined ? { version: req.version } : {}),
    });
    const ca = req.ca !== undefined ? await readCaFile(req.ca) : undefined;
    return await install(
      {
        ...base,
        source: { kind: "url", url, clockOffsetMs: offset, ...(ca ? { ca } : {}) },
        ...(req.version !== undefined ? { expectVersion: req.version } : {}),
        learned,
        onReady: (r) =>
          answer({ id, ok: true, version: r.version, slot: r.slot, at: d.clock.now() + offset }),
      },
      out,
      d,
      reboot,
    );
  } catch (err) {
    // Also after ok:true when the reboot itself failed: the last word is what happened.
    const e = asHandsetError(err);
    await answer({
      id,
      ok: false,
      version: learned.version,
      slot: learned.slot,
      code: e.code,
      message: e.message,
      at: d.clock.now() + offset,
    }).catch((w: unknown) =>
      out.event({ event: "warning", message: `${RESULT_FILE} not written: ${(w as Error).message}` }),
    );
    throw err;
  }
}
