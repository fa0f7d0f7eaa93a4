/**
 * The A/B slots and the decisions over them (pure). A slot is a boot partition (kernel, initrd,
 * cmdline) plus a system partition (erofs root):
 *
 *   slot a = boot_a (partition 2) + system_a (4)      slot b = boot_b (3) + system_b (5)
 *
 * The life of an update:
 *   committed(A) ─ update writes B ─► trial boot of B (tryboot, once)
 *       ├─ health OK      ─► commit: autoboot [all] = B        ─► committed(B)
 *       └─ health fails,
 *          power cut, or
 *          crash          ─► plain reboot: firmware boots [all] ─► committed(A) (B is left inactive)
 *
 * Nothing but `commit` ever changes which slot is committed, and nothing ever writes the running
 * slot, nor the committed slot while a trial runs (it is the way back).
 */
import { HandsetError } from "../core/errors.ts";
import type { Autoboot, BootPartition } from "./autoboot.ts";
import type { PayloadName } from "./bundle-format.ts";

export type Slot = "a" | "b";

export interface SlotPartitions {
  boot: string;
  system: string;
  bootPartition: BootPartition;
}

export const SLOTS: Readonly<Record<Slot, SlotPartitions>> = {
  a: { boot: "boot_a", system: "system_a", bootPartition: 2 },
  b: { boot: "boot_b", system: "system_b", bootPartition: 3 },
};

export const otherSlot = (s: Slot): Slot => (s === "a" ? "b" : "a");
export const slotOfPartition = (p: BootPartition): Slot => (p === 2 ? "a" : "b");

/** The partition label each payload of a bundle goes to, in a slot. */
export function payloadPartition(slot: Slot, payload: PayloadName): string {
  return payload === "boot" ? SLOTS[slot].boot : SLOTS[slot].system;
}

/** What the bootloader told the running system (device tree on a Pi, /proc/cmdline emulated). */
export interface BootInfo {
  board: "pi" | "emulated";
  /** The boot partition the firmware started. */
  bootPartition: BootPartition;
  /** The firmware started this boot as a one-shot trial ([tryboot]). */
  tryboot: boolean;
}

export type SlotState = "committed" | "trial" | "unexpected";

export interface SlotStatus {
  running: Slot;
  inactive: Slot;
  /** The slot autoboot.txt [all] names. */
  committed: Slot;
  /**
   * committed: running the committed slot; trial: a tryboot of the other slot, not yet
   * committed; unexpected: running a slot autoboot does not name, without tryboot (someone
   * edited autoboot.txt, or booted by hand) — neither updated nor committed automatically.
   */
  state: SlotState;
}

export function slotStatus(boot: BootInfo, autoboot: Autoboot): SlotStatus {
  const running = slotOfPartition(boot.bootPartition);
  const committed = slotOfPartition(autoboot.committed);
  const state: SlotState = running === committed ? "committed" : boot.tryboot ? "trial" : "unexpected";
  return { running, inactive: otherSlot(running), committed, state };
}

export interface UpdatePlan {
  target: Slot;
  partitions: Record<PayloadName, string>;
  /** Partitions that must never be opened for writing (the running slot). */
  protected: string[];
}

/**
 * Where an update goes: the inactive slot, and only when it is the one a trial boot would start
 * (the running slot is the committed one). During a trial the inactive slot is the committed
 * fallback, so an update then is refused (`update-trial-pending`).
 */
export function planUpdate(status: SlotStatus, autoboot: Autoboot): UpdatePlan {
  if (status.state === "trial")
    throw new HandsetError(
      "update-trial-pending",
      `slot ${status.running} is on trial and slot ${status.committed} is the way back: commit (handset slot commit) or reboot first`,
    );
  if (status.state !== "committed")
    throw new HandsetError(
      "update-slot-mismatch",
      `running slot ${status.running}, but autoboot.txt commits slot ${status.committed}: handset slot commit first`,
    );
  const target = status.inactive;
  if (slotOfPartition(autoboot.tryboot) !== target)
    throw new HandsetError("update-slot-mismatch", "autoboot.txt [tryboot] does not name the inactive slot");
  return {
    target,
    partitions: { boot: SLOTS[target].boot, system: SLOTS[target].system },
    protected: [SLOTS[status.running].boot, SLOTS[status.running].system],
  };
}

/**
 * `slot commit`: the autoboot content that makes the running slot the committed one, or
 * undefined when it already is (a no-op).
 */
export function commitTarget(status: SlotStatus): BootPartition | undefined {
  return status.running === status.committed ? undefined : SLOTS[status.running].bootPartition;
}

export type HealthOutcome = "healthy" | "unhealthy";

export type AfterHealth =
  | { action: "none"; reason: string }
  | { action: "commit"; partition: BootPartition }
  | { action: "rollback"; to: Slot };

/** What the post-boot health check does with its verdict. */
export function afterHealth(status: SlotStatus, verdict: HealthOutcome): AfterHealth {
  if (status.state !== "trial") return { action: "none", reason: `not a trial boot (${status.state})` };
  if (verdict === "healthy") return { action: "commit", partition: SLOTS[status.running].bootPartition };
  return { action: "rollback", to: status.committed };
}

/**
 * What each slot holds, as the update records it (informational: never used for a decision).
 * `writing` marks a slot whose write began and has not been verified: a power cut leaves it so.
 */
export interface SlotRecord {
  version: string;
  state: "writing" | "written";
  payloads?: Partial<Record<PayloadName, { size: number; sha256: string }>>;
}

export type SlotRecords = Partial<Record<Slot, SlotRecord>>;

export function parseSlotRecords(text: string | undefined): SlotRecords {
  if (text === undefined) return {};
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== "object" || v === null) return {};
    const out: SlotRecords = {};
    for (const s of ["a", "b"] as const) {
      const r = (v as Record<string, unknown>)[s] as Record<string, unknown> | undefined;
      if (r && typeof r["version"] === "string" && (r["state"] === "writing" || r["state"] === "written"))
        out[s] = r as unknown as SlotRecord;
    }
    return out;
  } catch {
    return {};
  }
}
