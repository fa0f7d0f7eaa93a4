/**
 * What the bootloader tells the running system (pure parsing):
 * - a Raspberry Pi: /proc/device-tree/chosen/bootloader/tryboot and …/partition, each a 4-byte
 *   big-endian number (tryboot 1 = this is a one-shot trial boot);
 * - the emulated board (no …/chosen/bootloader): the emulated bootloader appends
 *   `handset.tryboot=1 handset.boot_partition=N` (trial) or `handset.boot_partition=N` to the
 *   kernel command line.
 */
import { HandsetError } from "../core/errors.ts";
import type { BootPartition } from "./autoboot.ts";
import type { BootInfo } from "./slots.ts";

const unknown = (message: string) => new HandsetError("boot-unknown", message);

function partition(n: number, where: string): BootPartition {
  if (n === 2 || n === 3) return n;
  throw unknown(`${where}: boot partition ${n} is neither slot (2 = a, 3 = b)`);
}

/** A device-tree cell: a 4-byte big-endian number. */
export function deviceTreeNumber(bytes: Uint8Array, what: string): number {
  if (bytes.length !== 4) throw unknown(`device tree ${what}: ${bytes.length} bytes, expected 4`);
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, false);
}

export function bootInfoFromDeviceTree(tryboot: Uint8Array | undefined, part: Uint8Array): BootInfo {
  return {
    board: "pi",
    bootPartition: partition(deviceTreeNumber(part, "partition"), "device tree"),
    tryboot: tryboot !== undefined && deviceTreeNumber(tryboot, "tryboot") === 1,
  };
}

/** Reads the emulated bootloader's words from /proc/cmdline. */
export function bootInfoFromCmdline(cmdline: string): BootInfo {
  const words = new Map<string, string>();
  for (const w of cmdline.trim().split(/\s+/)) {
    const i = w.indexOf("=");
    if (i > 0) words.set(w.slice(0, i), w.slice(i + 1));
  }
  const p = words.get("handset.boot_partition");
  const slot = words.get("handset.slot");
  let bootPartition: BootPartition;
  if (p !== undefined) {
    if (!/^\d{1,3}$/.test(p)) throw unknown(`/proc/cmdline: handset.boot_partition=${p} is not a number`);
    bootPartition = partition(Number(p), "/proc/cmdline");
  } else if (slot === "a" || slot === "b") bootPartition = slot === "a" ? 2 : 3;
  else throw unknown("/proc/cmdline names no handset.boot_partition: cannot tell which slot is running");
  return { board: "emulated", bootPartition, tryboot: words.get("handset.tryboot") === "1" };
}
