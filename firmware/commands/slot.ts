/**
 * `handset slot status|commit|health`: the A/B slots after an update.
 *
 * - status: which slot runs, whether this boot is a trial, what autoboot.txt says, what each
 *   slot holds (as the last update recorded it);
 * - commit: the running slot becomes the committed one (autoboot.txt [all]); a no-op when it is;
 * - health: run by a systemd oneshot after every boot. Not a trial → exit 0 at once. A trial →
 *   wait (up to --window-min) for the phone to be healthy (firmware/update/health.ts), then
 *   commit; or, unhealthy, reboot WITHOUT tryboot so the firmware starts the old slot again.
 */
import { HandsetError } from "../core/errors.ts";
import {
  loadAutoboot,
  type Rebooter,
  readBootInfo,
  readSlotRecords,
  rebooter,
  trybootFlagExists,
  writeAutoboot,
} from "../platform/boot-control.ts";
import { diskAt } from "../update/disk.ts";
import {
  DEFAULT_WINDOW_MIN,
  healthWindowMs,
  MAX_WINDOW_MIN,
  MIN_WINDOW_MIN,
  watchHealth,
} from "../update/health.ts";
import { afterHealth, commitTarget, slotStatus } from "../update/slots.ts";
import { type CommandSpec, parseFlags, wholeNumber } from "./args.ts";
import type { Output } from "./output.ts";
import { defaultUpdateDeps, probePhone, readSlots, type UpdateDeps } from "./update.ts";

export const SLOT_SPEC = {
  summary: "the A/B system slots: status, commit the running slot, post-boot health check",
  synopsis: ["status [--disk DIR]", "commit [--disk DIR]", "health [--window-min N] [--disk DIR]"],
  flags: {
    disk: {
      type: "string",
      arg: "DIR",
      help: "partitions as DIR/<name> and the config partition as DIR/config/ (default: the phone's disk)",
    },
    proc: { type: "string", arg: "DIR", help: "where /proc is (the boot's facts; default /proc)" },
    "window-min": {
      type: "string",
      arg: "N",
      help: `health: minutes the new slot has to get registered (${MIN_WINDOW_MIN}-${MAX_WINDOW_MIN}, default ${DEFAULT_WINDOW_MIN})`,
    },
  },
  notes: [
    "health: healthy = handset.service active, its status registered or limited, no restart;",
    "then the trial slot is committed. Otherwise a plain reboot returns to the committed slot.",
  ],
} as const satisfies CommandSpec;

export interface SlotDeps extends UpdateDeps {
  /** How often the health check looks at the phone (ms). */
  pollMs: number;
}

export async function slotCommand(
  argv: string[],
  out: Output,
  deps: Partial<SlotDeps> = {},
  reboot?: Rebooter,
): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "status" && sub !== "commit" && sub !== "health")
    throw new HandsetError("usage", 'slot needs "status", "commit" or "health" (handset slot --help)');
  const f = parseFlags(rest, SLOT_SPEC.flags);
  const d = defaultUpdateDeps(deps);
  const disk = diskAt(typeof f["disk"] === "string" ? f["disk"] : undefined);
  const procDir = typeof f["proc"] === "string" ? f["proc"] : "/proc";
  const windowMs = healthWindowMs(
    wholeNumber(f, "window-min", DEFAULT_WINDOW_MIN, { min: MIN_WINDOW_MIN, max: MAX_WINDOW_MIN }),
  );

  if (sub === "status") {
    const { boot, choice, status } = await readSlots(disk, procDir);
    out.event({
      event: "slot.status",
      running: status.running,
      committed: status.committed,
      inactive: status.inactive,
      state: status.state,
      trial: status.state === "trial",
      board: boot.board,
      bootPartition: boot.bootPartition,
      autoboot: { committed: choice.autoboot.committed, tryboot: choice.autoboot.tryboot, from: choice.from },
      ...(boot.board === "emulated" ? { trybootFlag: await trybootFlagExists(disk.configDir) } : {}),
      slots: await readSlotRecords(disk.configDir),
    });
    return 0;
  }

  // commit and health may repair autoboot.txt (a lost rename) before they read it.
  const boot = await readBootInfo(procDir);
  const status = slotStatus(boot, await loadAutoboot(disk.configDir));

  if (sub === "commit") {
    const to = commitTarget(status);
    if (to !== undefined) await writeAutoboot(disk.configDir, to);
    out.event({ event: "slot.commit", slot: status.running, changed: to !== undefined });
    return 0;
  }

  if (status.state !== "trial") {
    out.event({ event: "slot.health", trial: false, slot: status.running, state: status.state });
    return 0;
  }
  out.event({
    event: "slot.health",
    trial: true,
    slot: status.running,
    fallback: status.committed,
    windowMin: windowMs / 60_000,
  });
  const verdict = await watchHealth({
    clock: d.clock,
    probe: () => probePhone(d.run),
    windowMs,
    ...(deps.pollMs !== undefined ? { pollMs: deps.pollMs } : {}),
  });
  const next = afterHealth(status, verdict.verdict);
  if (next.action === "commit") {
    await writeAutoboot(disk.configDir, next.partition);
    out.event({
      event: "slot.commit",
      slot: status.running,
      changed: true,
      status: verdict.verdict === "healthy" ? verdict.statusText : undefined,
      afterMs: Math.round(verdict.elapsedMs),
    });
    return 0;
  }
  const reason = verdict.verdict === "unhealthy" ? verdict.reason : "unhealthy";
  out.event({
    event: "slot.rollback",
    slot: status.running,
    to: status.committed,
    reason,
    afterMs: Math.round(verdict.elapsedMs),
  });
  await (reboot ?? rebooter({ board: boot.board, configDir: disk.configDir, run: d.run })).plain();
  throw new HandsetError(
    "slot-unhealthy",
    `slot ${status.running} failed its health check (${reason}): rebooting into slot ${status.committed}`,
  );
}
