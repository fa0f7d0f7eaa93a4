/**
 * The emulated board: a disk image of ours booted under qemu (TCG: this machine's KVM is not
 * usable), with the part of the Raspberry Pi firmware that matters to the A/B slots played by
 * this file, between power cycles, on the image itself:
 *
 * - it reads autoboot.txt on the config partition (mtools, at the partition's offset) and a
 *   one-shot `tryboot` flag file there (what `reboot "0 tryboot"` is on a Pi): with the flag, it
 *   deletes the flag and boots autoboot.txt's [tryboot] partition once, else [all]'s;
 * - from that boot partition it reads config.txt's `[partition=N] cmdline=` and that command
 *   line, and boots its vmlinuz and initrd.img, appending what the Pi firmware reports in the
 *   device tree as `handset.boot_partition=N` (and `handset.tryboot=1`);
 * - a reboot inside the guest ends qemu (-no-reboot); the test decides to power on again.
 *
 * The guest's console (kernel, systemd, and the phone's JSON events through journald's
 * forward_to_console) is kept; a root debug shell on a virtio console (systemd.debug_shell=,
 * given only on this emulated command line, never in the image) runs commands for the test.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { connect, type Socket } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export type Arch = "amd64" | "arm64";

export interface Partition {
  name: string;
  start: number;
  size: number;
}

/** The GPT of a disk image (sfdisk --json), in bytes. */
export async function partitions(disk: string): Promise<Map<string, Partition>> {
  const { stdout } = await run("sfdisk", ["--json", disk]);
  const table = JSON.parse(stdout).partitiontable as {
    sectorsize?: number;
    partitions: Array<{ name?: string; start: number; size: number }>;
  };
  const ss = table.sectorsize ?? 512;
  const out = new Map<string, Partition>();
  for (const p of table.partitions)
    if (p.name) out.set(p.name, { name: p.name, start: p.start * ss, size: p.size * ss });
  return out;
}

/** An mtools image spec: the FAT file system at a partition's offset inside the disk. */
const fatAt = (disk: string, p: Partition) => `${disk}@@${p.start}`;

export async function fatRead(disk: string, p: Partition, file: string): Promise<string | undefined> {
  try {
    const { stdout } = await run("mtype", ["-i", fatAt(disk, p), `::${file}`], { maxBuffer: 1 << 20 });
    return stdout;
  } catch {
    return undefined;
  }
}

export async function fatCopyOut(disk: string, p: Partition, file: string, to: string): Promise<void> {
  await run("mcopy", ["-o", "-n", "-i", fatAt(disk, p), `::${file}`, to]);
}

async function fatDelete(disk: string, p: Partition, file: string): Promise<void> {
  await run("mdel", ["-i", fatAt(disk, p), `::${file}`]);
}

/** The Pi firmware's choice: which boot partition, and whether this is the one-shot trial. */
export async function chooseBoot(
  disk: string,
): Promise<{ partition: 2 | 3; tryboot: boolean; autoboot: string }> {
  const parts = await partitions(disk);
  const config = parts.get("config");
  if (!config) throw new Error(`${disk}: no config partition`);
  const autoboot = (await fatRead(disk, config, "autoboot.txt")) ?? "";
  const sections: Record<string, Record<string, string>> = {};
  let section = "all";
  for (const raw of autoboot.split(/\r?\n/)) {
    const line = raw.trim();
    const s = /^\[(\w+)\]$/.exec(line);
    if (s) section = s[1]!;
    else if (line.includes("=")) {
      const [k, v] = line.split("=", 2) as [string, string];
      const keys = sections[section] ?? {};
      keys[k.trim()] = v.trim();
      sections[section] = keys;
    }
  }
  const num = (v: string | undefined) => (v === "3" ? 3 : 2) as 2 | 3;
  const flag = await fatRead(disk, config, "tryboot");
  if (flag !== undefined) {
    // One shot: the Pi firmware forgets tryboot at the next reset, whatever happens.
    await fatDelete(disk, config, "tryboot");
    return { partition: num(sections["tryboot"]?.["boot_partition"]), tryboot: true, autoboot };
  }
  return { partition: num(sections["all"]?.["boot_partition"]), tryboot: false, autoboot };
}

/** config.txt's command-line file for a partition (`[partition=N]` … `cmdline=FILE`). */
export function cmdlineFileFor(configTxt: string, partition: number): string {
  let active = true;
  let file = "cmdline.txt";
  for (const raw of configTxt.split(/\r?\n/)) {
    const line = raw.trim();
    const f = /^\[(.+)\]$/.exec(line);
    if (f) {
      const filter = f[1]!;
      active = filter === "all" || filter === `partition=${partition}`;
      continue;
    }
    if (active && line.startsWith("cmdline=")) file = line.slice("cmdline=".length).trim();
  }
  return file;
}

export interface GuestEvent {
  [key: string]: unknown;
  event: string;
}

export interface BootOptions {
  arch: Arch;
  disk: string;
  /** Where the console log, the kernel copy and the debug-shell socket go. */
  workDir: string;
  /** Extra disks (raw files), e.g. an update bundle on an ext4 "USB stick". */
  extraDisks?: string[];
  memoryMiB?: number;
}

export interface Boot {
  partition: 2 | 3;
  tryboot: boolean;
  cmdline: string;
  /** The console so far. */
  console(): string;
  /** The phone's JSON events so far (from the journal on the console), in order. */
  events(): GuestEvent[];
  /** Waits for an event matching `pred` that arrives after `from` events (default: any). */
  waitForEvent(pred: (e: GuestEvent) => boolean, timeoutMs: number, from?: number): Promise<GuestEvent>;
  /** Waits for the console to match. */
  waitForConsole(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  /** Runs a shell command as root in the guest (the debug shell); its output and status. */
  shell(command: string, timeoutMs?: number): Promise<{ out: string; code: number }>;
  /** Resolves when qemu ends (guest reboot or power-off), with its exit code. */
  exited: Promise<number | null>;
  /** Pulls the plug. */
  kill(): Promise<void>;
}

/**
 * amd64 runs on one vCPU: under multi-threaded TCG an x86 guest kernel patching its own text
 * (static keys, text_poke_bp's int3) on two vCPUs at once was seen to die in early boot with
 * "Oops: int3" in sched_clock_cpu and "Kernel panic - not syncing: Fatal exception in interrupt"
 * (CI, stop 19: one boot in six). One vCPU has no second CPU to race with. arm64 (the board's
 * arch, several cores on a Pi) keeps two; its boots have not shown it.
 */
const QEMU: Record<Arch, { bin: string; args: string[]; console: string; smp: number }> = {
  amd64: { bin: "qemu-system-x86_64", args: ["-machine", "q35", "-cpu", "max"], console: "ttyS0", smp: 1 },
  arm64: {
    bin: "qemu-system-aarch64",
    args: ["-machine", "virt", "-cpu", "max"],
    console: "ttyAMA0",
    smp: 2,
  },
};

/** Powers the board on: the firmware's choice of slot, then qemu. */
export async function powerOn(o: BootOptions): Promise<Boot> {
  await mkdir(o.workDir, { recursive: true });
  const choice = await chooseBoot(o.disk);
  const parts = await partitions(o.disk);
  const bootPart = parts.get(choice.partition === 2 ? "boot_a" : "boot_b");
  if (!bootPart) throw new Error(`${o.disk}: no boot partition ${choice.partition}`);
  const kdir = await mkdtemp(join(o.workDir, "kernel-"));
  const configTxt = (await fatRead(o.disk, bootPart, "config.txt")) ?? "";
  const cmdFile = cmdlineFileFor(configTxt, choice.partition);
  const baseCmdline = ((await fatRead(o.disk, bootPart, cmdFile)) ?? "").trim();
  if (!baseCmdline) throw new Error(`boot partition ${choice.partition}: no ${cmdFile}`);
  await fatCopyOut(o.disk, bootPart, "vmlinuz", join(kdir, "vmlinuz"));
  await fatCopyOut(o.disk, bootPart, "initrd.img", join(kdir, "initrd.img"));

  const q = QEMU[o.arch];
  const cmdline = [
    // The Pi's console names (serial0, tty1) mean nothing here; the emulated UART is the console.
    ...baseCmdline.split(/\s+/).filter((w) => !w.startsWith("console=") && w !== "quiet"),
    `console=${q.console}`,
    `handset.boot_partition=${choice.partition}`,
    ...(choice.tryboot ? ["handset.tryboot=1"] : []),
    "panic=-1",
    "systemd.journald.forward_to_console=1",
    "systemd.debug_shell=/dev/hvc0",
    "systemd.show_status=0",
  ].join(" ");
  const sock = join(o.workDir, `shell-${process.pid}-${Date.now()}.sock`);
  const args = [
    ...q.args,
    "-accel",
    "tcg",
    "-m",
    String(o.memoryMiB ?? 1024),
    "-smp",
    String(q.smp),
    "-nographic",
    "-no-reboot",
    "-kernel",
    join(kdir, "vmlinuz"),
    "-initrd",
    join(kdir, "initrd.img"),
    "-append",
    cmdline,
    "-drive",
    `file=${o.disk},format=raw,if=none,id=d0,cache=writeback`,
    "-device",
    "virtio-blk-pci,drive=d0",
    ...(o.extraDisks ?? []).flatMap((d, i) => [
      "-drive",
      `file=${d},format=raw,if=none,id=x${i},readonly=on`,
      "-device",
      `virtio-blk-pci,drive=x${i}`,
    ]),
    "-netdev",
    "user,id=n0",
    "-device",
    "virtio-net-pci,netdev=n0",
    "-device",
    "virtio-serial-pci",
    "-chardev",
    `socket,id=dbg,path=${sock},server=on,wait=off`,
    "-device",
    "virtconsole,chardev=dbg",
    "-object",
    "rng-random,filename=/dev/urandom,id=rng0",
    "-device",
    "virtio-rng-pci,rng=rng0",
  ];
  const log: WriteStream = createWriteStream(join(o.workDir, `console-${Date.now()}.log`));
  const child: ChildProcess = spawn(q.bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  const waiters = new Set<() => void>();
  const onData = (b: Buffer) => {
    text += b.toString("utf8");
    log.write(b);
    for (const w of waiters) w();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      log.end();
      // Before the waiters look: a guest that panicked (panic=-1, -no-reboot) ends every wait at
      // once as "qemu ended first" instead of running out its timeout.
      done = true;
      for (const w of waiters) w();
      void rm(kdir, { recursive: true, force: true }).catch(() => {});
      resolve(code);
    });
  });

  const events = (): GuestEvent[] => {
    const out: GuestEvent[] = [];
    for (const line of text.split(/\r?\n/)) {
      const i = line.indexOf('{"event":');
      if (i < 0) continue;
      try {
        out.push(JSON.parse(line.slice(i).trim()) as GuestEvent);
      } catch {
        // a line cut by the console's wrapping or by another message: not an event
      }
    }
    return out;
  };

  const until = <T>(probe: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const v = probe();
        if (v !== undefined) {
          finish();
          resolve(v);
        } else if (done) {
          finish();
          reject(new Error(`${what}: qemu ended first\n${tail(text)}`));
        }
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`${what}: not within ${timeoutMs} ms\n${tail(text)}`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        waiters.delete(check);
      };
      waiters.add(check);
      check();
    });

  let shellSocket: Socket | undefined;
  let shellText = "";
  let shellSeq = 0;
  let shellReady = false;
  const shellWaiters = new Set<() => void>();
  const openShell = async (): Promise<Socket> => {
    if (shellSocket) return shellSocket;
    // qemu makes the socket as it starts: until then, try again.
    let s: Socket | undefined;
    for (let i = 0; !s; i++) {
      const c = connect(sock);
      try {
        await once(c, "connect");
        s = c;
      } catch (err) {
        c.destroy();
        if (i > 100 || done) throw err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    s.on("data", (b: Buffer) => {
      shellText += b.toString("utf8");
      for (const w of shellWaiters) w();
    });
    s.on("error", () => {});
    shellSocket = s;
    return s;
  };

  const boot: Boot = {
    partition: choice.partition,
    tryboot: choice.tryboot,
    cmdline,
    console: () => text,
    events,
    waitForEvent: (pred, timeoutMs, from = 0) =>
      until(() => events().slice(from).find(pred), timeoutMs, "event"),
    waitForConsole: (re, timeoutMs) => until(() => text.match(re) ?? undefined, timeoutMs, `console ${re}`),
    async shell(command, timeoutMs = 60_000) {
      const s = await openShell();
      const deadline = Date.now() + timeoutMs;
      const waitOutput = () =>
        new Promise<void>((r) => {
          const w = () => {
            shellWaiters.delete(w);
            clearTimeout(t);
            r();
          };
          const t = setTimeout(w, 500);
          shellWaiters.add(w);
        });
      // Markers are printed from two pieces, so the tty's echo of a command line never matches.
      const id = `${process.pid}x${++shellSeq}`;
      if (!shellReady) {
        // The debug shell starts early in boot and may miss input sent before it: probe until
        // it answers. Then, once, echo off and wait (up to a minute) for the data and config
        // partitions, so that a command sees the system the phone runs in.
        const wait = async (marker: string, line: string, repeatMs: number) => {
          let sent = 0;
          while (!shellText.includes(marker)) {
            if (done) throw new Error(`shell ${command}: qemu ended before the debug shell answered`);
            if (Date.now() > deadline)
              throw new Error(
                `shell ${command}: the debug shell never answered; it printed: ${JSON.stringify(shellText.slice(-2000))}`,
              );
            if (sent === 0 || Date.now() - sent > repeatMs) {
              s.write(line);
              sent = Date.now();
            }
            await waitOutput();
          }
        };
        await wait(`__P_${id}__`, `printf '__P_%s__\\n' '${id}'\n`, 3_000);
        await wait(
          `__R_${id}__`,
          `stty -echo; i=0; while [ $i -lt 60 ] && { ! mountpoint -q /var/lib/handset || ! mountpoint -q /boot/firmware; }; do sleep 1; i=$((i+1)); done; printf '__R_%s__\\n' '${id}'\n`,
          Number.POSITIVE_INFINITY,
        );
        shellReady = true;
      }
      const end = new RegExp(`__E_${id}_(\\d+)__`);
      const start = shellText.length;
      s.write(`${command}; printf '__E_%s_%s__\\n' '${id}' "$?"\n`);
      for (;;) {
        const m = end.exec(shellText.slice(start));
        if (m) {
          // Without the terminal's escapes (bracketed paste, colours) and carriage returns, and
          // without the echoed command line.
          const out = shellText
            .slice(start, start + m.index!)
            .replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "")
            .replace(/\r/g, "")
            .split("\n")
            .filter((l) => !l.includes(`'${id}'`) && !/__[PR]_/.test(l) && !/^\S+@\S+:.*# ?$/.test(l))
            .join("\n");
          return { out: out.trim(), code: Number(m[1]) };
        }
        if (done) throw new Error(`shell ${command}: qemu ended`);
        if (Date.now() > deadline) throw new Error(`shell ${command}: no answer in ${timeoutMs} ms`);
        await waitOutput();
      }
    },
    exited,
    async kill() {
      shellSocket?.destroy();
      if (!done) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
  return boot;
}

function tail(s: string, lines = 40): string {
  return s.split(/\r?\n/).slice(-lines).join("\n");
}

/** Writes a directory tree as the disk's data partition (ext4, owners and modes kept). */
export async function writeDataPartition(disk: string, tree: string, workDir: string): Promise<void> {
  const parts = await partitions(disk);
  const data = parts.get("data");
  if (!data) throw new Error(`${disk}: no data partition`);
  const img = join(workDir, `data-${Date.now()}.ext4`);
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-L", "data", "-d", tree, img, `${data.size / 1024}k`]);
  await run("dd", [
    `if=${img}`,
    `of=${disk}`,
    "bs=1M",
    `seek=${data.start / (1 << 20)}`,
    "conv=notrunc,sparse",
    "status=none",
  ]);
  await rm(img, { force: true });
}

/** An ext4 image holding some files: the "USB stick" an update arrives on. */
export async function makeStick(tree: string, out: string): Promise<void> {
  let bytes = 0;
  for (const f of await readdirFiles(tree)) bytes += (await stat(f)).size;
  const kib = Math.ceil((bytes * 1.1 + 16 * 2 ** 20) / 1024);
  await run("mke2fs", ["-q", "-F", "-t", "ext4", "-d", tree, out, `${kib}k`]);
}

async function readdirFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await readdirFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}
