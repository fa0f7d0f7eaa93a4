/**
 * autoboot.txt on the config partition, as the Raspberry Pi firmware reads it (pure):
 *
 *   [all]
 *   tryboot_a_b=1
 *   boot_partition=2      ← the committed slot (2 = boot_a, 3 = boot_b)
 *   [tryboot]
 *   boot_partition=3      ← what a "0 tryboot" reboot starts, once
 *
 * The parser is strict: exactly these two sections, each once, exactly these keys, the two
 * partitions different, and the file ends with a newline. Any prefix of a rendered file is
 * therefore refused, which is how a half-written file (FAT, power cut) is told from a good one.
 * Comment lines (#) and blank lines are allowed; anything else (another section, another key,
 * a NUL from an unwritten cluster) is refused: a file this code cannot read whole is a file it
 * must not rewrite.
 *
 * Writing is autoboot.txt.new (fsync) → rename over autoboot.txt (fsync the directory). FAT
 * gives no atomic rename, so a load looks at both (chooseAutoboot).
 */
import { HandsetError } from "../core/errors.ts";

export type BootPartition = 2 | 3;

export interface Autoboot {
  /** [all] boot_partition: the committed slot. */
  committed: BootPartition;
  /** [tryboot] boot_partition: the slot a trial boot starts. */
  tryboot: BootPartition;
}

export const AUTOBOOT_FILE = "autoboot.txt";
export const AUTOBOOT_NEW_FILE = "autoboot.txt.new";

const bad = (message: string) => new HandsetError("autoboot-malformed", `autoboot.txt: ${message}`);

const otherPartition = (p: BootPartition): BootPartition => (p === 2 ? 3 : 2);

function partitionValue(v: string, section: string): BootPartition {
  if (v === "2" || v === "3") return Number(v) as BootPartition;
  throw bad(`[${section}] boot_partition=${v} is not 2 or 3`);
}

/** Parses autoboot.txt strictly; throws autoboot-malformed with the first fault. */
export function parseAutoboot(text: string): Autoboot {
  if (text.length === 0) throw bad("empty");
  if (text.length > 4096) throw bad("too long");
  if (!text.endsWith("\n")) throw bad("does not end with a newline (half-written?)");
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text))
    throw bad("holds control characters (half-written?)");
  const sections: Record<string, Record<string, string>> = {};
  let current: Record<string, string> | undefined;
  let currentName = "";
  const lines = text.slice(0, -1).split("\n");
  for (const raw of lines) {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const section = /^\[([^\]]*)\]$/.exec(line);
    if (section) {
      const name = section[1]!;
      if (name !== "all" && name !== "tryboot") throw bad(`unknown section [${name}]`);
      if (sections[name]) throw bad(`section [${name}] appears twice`);
      currentName = name;
      current = sections[name] = {};
      continue;
    }
    const kv = /^([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (!kv) throw bad(`cannot read line "${line}"`);
    if (!current) throw bad(`"${line}" comes before any section`);
    const [, key, value] = kv as unknown as [string, string, string];
    const allowed = currentName === "all" ? ["tryboot_a_b", "boot_partition"] : ["boot_partition"];
    if (!allowed.includes(key)) throw bad(`unknown key "${key}" in [${currentName}]`);
    if (Object.hasOwn(current, key)) throw bad(`"${key}" appears twice in [${currentName}]`);
    current[key] = value.trim();
  }
  const all = sections["all"];
  const tryboot = sections["tryboot"];
  if (!all) throw bad("no [all] section");
  if (!tryboot) throw bad("no [tryboot] section (half-written?)");
  if (all["tryboot_a_b"] !== "1") throw bad("[all] needs tryboot_a_b=1");
  if (all["boot_partition"] === undefined) throw bad("[all] has no boot_partition");
  if (tryboot["boot_partition"] === undefined) throw bad("[tryboot] has no boot_partition");
  const committed = partitionValue(all["boot_partition"], "all");
  const trial = partitionValue(tryboot["boot_partition"], "tryboot");
  if (trial === committed) throw bad("[all] and [tryboot] name the same partition");
  return { committed, tryboot: trial };
}

/** The file that commits `committed` (the other partition is the next trial). */
export function renderAutoboot(committed: BootPartition): string {
  return `[all]\ntryboot_a_b=1\nboot_partition=${committed}\n[tryboot]\nboot_partition=${otherPartition(committed)}\n`;
}

function tryParse(text: string | undefined): Autoboot | HandsetError | undefined {
  if (text === undefined) return undefined;
  try {
    return parseAutoboot(text);
  } catch (err) {
    if (err instanceof HandsetError) return err;
    throw err;
  }
}

export interface AutobootChoice {
  autoboot: Autoboot;
  /** Which file holds it. */
  from: "autoboot.txt" | "autoboot.txt.new";
  /**
   * What brings the partition back to one good autoboot.txt: rename .new over it (the rename of
   * a finished write was lost, and autoboot.txt itself is damaged), remove a stale .new (a write
   * that never reached its rename: the firmware reads autoboot.txt, so that is the truth), or
   * nothing.
   */
  repair: "none" | "rename-new" | "remove-new";
}

/**
 * Which autoboot content is the real one, given the text of autoboot.txt and of
 * autoboot.txt.new (undefined: no such file). autoboot.txt wins whenever it is valid (it is what
 * the Pi firmware reads); .new only when autoboot.txt is missing or unreadable. Throws
 * autoboot-malformed when neither is valid.
 */
export function chooseAutoboot(main: string | undefined, next: string | undefined): AutobootChoice {
  const m = tryParse(main);
  const n = tryParse(next);
  if (m && !(m instanceof HandsetError))
    return { autoboot: m, from: AUTOBOOT_FILE, repair: next === undefined ? "none" : "remove-new" };
  if (n && !(n instanceof HandsetError))
    return { autoboot: n, from: AUTOBOOT_NEW_FILE, repair: "rename-new" };
  if (m instanceof HandsetError) throw m;
  throw bad(main === undefined ? "missing" : "unreadable");
}
