/**
 * The bootloader's edge (thin): what this boot is (device tree on a Pi, /proc/cmdline on the
 * emulated board), autoboot.txt on the config partition (read with recovery, written as
 * .new → fsync → rename → fsync dir), the emulated board's one-shot `tryboot` flag, the reboots,
 * and systemctl. Every path has a root a test replaces, and every command runs through `run`,
 * which a test replaces too: no test reboots anything or calls the real systemctl.
 */
import { execFile } from "node:child_process";
import { open, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { HandsetError } from "../core/errors.ts";
import {
  AUTOBOOT_FILE,
  AUTOBOOT_NEW_FILE,
  type Autoboot,
  type AutobootChoice,
  type BootPartition,
  chooseAutoboot,
  parseAutoboot,
  renderAutoboot,
} from "../update/autoboot.ts";
import { bootInfoFromCmdline, bootInfoFromDeviceTree } from "../update/boot-info.ts";
import { type BootInfo, parseSlotRecords, type SlotRecords } from "../update/slots.ts";
import { syncDir } from "./file-system.ts";

/** Runs a program; resolves with its standard output, rejects on a non-zero exit. */
export type RunCommand = (cmd: string, args: string[]) => Promise<string>;

export const runCommand: RunCommand = (cmd, args) =>
  new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: "utf8", timeout: 30_000 }, (err, stdout, stderr) => {
      if (err)
        reject(
          new HandsetError(
            "command-failed",
            `${cmd} ${args.join(" ")}: ${(stderr || err.message).split("\n")[0]}`,
            { cause: err },
          ),
        );
      else resolve(stdout);
    });
  });

export const TRYBOOT_FLAG = "tryboot";
export const SLOT_RECORDS_FILE = "handset-slots.json";

async function readOptional(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

async function writeSynced(path: string, data: string): Promise<void> {
  const fh = await open(path, "w", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** What this boot is. `procDir` is /proc (a test passes a directory of its own). */
export async function readBootInfo(procDir = "/proc"): Promise<BootInfo> {
  const bl = join(procDir, "device-tree", "chosen", "bootloader");
  if (await exists(bl)) {
    const part = await readOptional(join(bl, "partition"));
    if (!part) throw new HandsetError("boot-unknown", `${bl}/partition is missing`);
    return bootInfoFromDeviceTree(await readOptional(join(bl, "tryboot")), part);
  }
  const cmdline = await readOptional(join(procDir, "cmdline"));
  if (!cmdline) throw new HandsetError("boot-unknown", `no ${procDir}/cmdline`);
  return bootInfoFromCmdline(cmdline.toString("utf8"));
}

/** autoboot.txt's content, from whichever of autoboot.txt / .new is valid (not repaired). */
export async function inspectAutoboot(configDir: string): Promise<AutobootChoice> {
  const main = await readOptional(join(configDir, AUTOBOOT_FILE));
  const next = await readOptional(join(configDir, AUTOBOOT_NEW_FILE));
  return chooseAutoboot(main?.toString("latin1"), next?.toString("latin1"));
}

/**
 * autoboot.txt's content, after bringing the partition back to one good autoboot.txt: a
 * finished .new whose rename was lost (autoboot.txt damaged) is renamed over it; a .new that
 * never reached its rename (autoboot.txt valid, and what the firmware reads) is removed.
 */
export async function loadAutoboot(configDir: string): Promise<Autoboot> {
  const choice = await inspectAutoboot(configDir);
  if (choice.repair === "rename-new") {
    await rename(join(configDir, AUTOBOOT_NEW_FILE), join(configDir, AUTOBOOT_FILE));
    await syncDir(configDir);
  } else if (choice.repair === "remove-new") {
    await rm(join(configDir, AUTOBOOT_NEW_FILE), { force: true });
    await syncDir(configDir);
  }
  return choice.autoboot;
}

/**
 * Commits `committed`: autoboot.txt.new (written, fsynced), then renamed over autoboot.txt, then
 * the directory fsynced. Repairs first (loadAutoboot), so that the only good copy is never the
 * one being overwritten. Reads the result back.
 */
export async function writeAutoboot(configDir: string, committed: BootPartition): Promise<Autoboot> {
  await loadAutoboot(configDir);
  const text = renderAutoboot(committed);
  const next = join(configDir, AUTOBOOT_NEW_FILE);
  await writeSynced(next, text);
  await syncDir(configDir);
  await rename(next, join(configDir, AUTOBOOT_FILE));
  await syncDir(configDir);
  const back = await readFile(join(configDir, AUTOBOOT_FILE), "latin1");
  const parsed = parseAutoboot(back);
  if (parsed.committed !== committed)
    throw new HandsetError("autoboot-write-failed", "autoboot.txt does not read back as written");
  return parsed;
}

export async function trybootFlagExists(configDir: string): Promise<boolean> {
  return exists(join(configDir, TRYBOOT_FLAG));
}

async function removeTrybootFlag(configDir: string): Promise<void> {
  if (!(await trybootFlagExists(configDir))) return;
  await rm(join(configDir, TRYBOOT_FLAG), { force: true });
  await syncDir(configDir);
}

export interface Rebooter {
  /** The next boot only starts autoboot.txt's [tryboot] partition. */
  trial(): Promise<void>;
  /** A plain reboot: the firmware starts [all], the committed slot. */
  plain(): Promise<void>;
}

/**
 * Reboots as the board wants them: a Pi's firmware takes `systemctl reboot "0 tryboot"`; the
 * emulated bootloader reads an empty `tryboot` file on the config partition (and deletes it).
 */
export function rebooter(o: { board: BootInfo["board"]; configDir: string; run?: RunCommand }): Rebooter {
  const run = o.run ?? runCommand;
  return {
    async trial() {
      if (o.board === "pi") {
        await run("systemctl", ["reboot", "0 tryboot"]);
        return;
      }
      await writeSynced(join(o.configDir, TRYBOOT_FLAG), "");
      await syncDir(o.configDir);
      await run("systemctl", ["reboot"]);
    },
    async plain() {
      if (o.board === "emulated") await removeTrybootFlag(o.configDir);
      await run("systemctl", ["reboot"]);
    },
  };
}

export async function readSlotRecords(configDir: string): Promise<SlotRecords> {
  return parseSlotRecords((await readOptional(join(configDir, SLOT_RECORDS_FILE)))?.toString("utf8"));
}

/** Informational record of what each slot holds (tmp → fsync → rename → fsync dir). */
export async function writeSlotRecords(configDir: string, records: SlotRecords): Promise<void> {
  const path = join(configDir, SLOT_RECORDS_FILE);
  const tmp = `${path}.new`;
  await writeSynced(tmp, `${JSON.stringify(records)}\n`);
  await rename(tmp, path);
  await syncDir(configDir);
}
