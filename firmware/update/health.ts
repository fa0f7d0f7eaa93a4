/**
 * Is the new slot good? (pure; time from the injected Clock, the service's state from a probe).
 *
 * Healthy: the phone service is active, its systemd StatusText (the phone sends STATUS=<state>)
 * starts with "registered" or "limited", and it has not restarted since the check began
 * (NRestarts unchanged). Unhealthy: a restart, or the window (default 10 min) elapsing without
 * one healthy sample. The check samples every `pollMs` and decides at the first healthy sample.
 *
 * The same StatusText says when an update must wait: while the phone signs in (its certificate
 * and store are being written) or is in a call, `handset update` refuses (update-busy).
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";

/** The phone states (firmware/phone/lifecycle.ts) in which the phone is working. */
export const HEALTHY_STATES = ["registered", "limited"] as const;
/**
 * States in which an update would hurt: a sign-in in progress (the phone's lifecycle), and a
 * call (the names the call states will carry: the phone has none yet).
 */
export const BUSY_STATES = ["signing-in", "in-call", "ringing", "dialing", "call"] as const;

export const DEFAULT_WINDOW_MIN = 10;
export const MIN_WINDOW_MIN = 1;
export const MAX_WINDOW_MIN = 120;
export const DEFAULT_POLL_MS = 5_000;

/** The state word a StatusText starts with ("registered registrar=… primary" → "registered"). */
export function phoneStateOf(statusText: string): string {
  return statusText
    .trim()
    .split(/[\s:;,()]/, 1)[0]!
    .toLowerCase();
}

export const isHealthyStatus = (statusText: string): boolean =>
  (HEALTHY_STATES as readonly string[]).includes(phoneStateOf(statusText));

export const isBusyStatus = (statusText: string): boolean =>
  (BUSY_STATES as readonly string[]).includes(phoneStateOf(statusText));

/** One look at the phone service. */
export interface ServiceSample {
  activeState: string;
  statusText: string;
  /** Undefined when systemd did not say. */
  nRestarts: number | undefined;
}

/** Parses `systemctl show -p ActiveState -p StatusText -p NRestarts UNIT` (KEY=VALUE lines). */
export function parseSystemctlShow(stdout: string): ServiceSample {
  const props: Record<string, string> = {};
  for (const line of stdout.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) props[line.slice(0, i)] = line.slice(i + 1).replace(/\r$/, "");
  }
  const n = props["NRestarts"];
  return {
    activeState: props["ActiveState"] ?? "",
    statusText: props["StatusText"] ?? "",
    nRestarts: n !== undefined && /^\d+$/.test(n) ? Number(n) : undefined,
  };
}

/** The window in minutes from a flag or config, range-checked. */
export function healthWindowMs(minutes: number): number {
  if (!(Number.isInteger(minutes) && minutes >= MIN_WINDOW_MIN && minutes <= MAX_WINDOW_MIN))
    throw new HandsetError(
      "usage",
      `the health window must be a whole number of minutes from ${MIN_WINDOW_MIN} to ${MAX_WINDOW_MIN}, got ${minutes}`,
    );
  return minutes * 60_000;
}

export type HealthVerdict =
  | { verdict: "healthy"; elapsedMs: number; statusText: string }
  | { verdict: "unhealthy"; elapsedMs: number; reason: string; last?: ServiceSample };

export type Judgement = HealthVerdict | { verdict: "wait" };

/**
 * One sample judged: `baseline` is NRestarts at the start of the check (undefined when the first
 * sample had none), `elapsedMs` the monotonic time since then.
 */
export function judge(
  sample: ServiceSample | undefined,
  baseline: number | undefined,
  elapsedMs: number,
  windowMs: number,
): Judgement {
  if (sample && baseline !== undefined && sample.nRestarts !== undefined && sample.nRestarts > baseline)
    return {
      verdict: "unhealthy",
      elapsedMs,
      reason: `the phone service restarted (NRestarts ${baseline} → ${sample.nRestarts})`,
      last: sample,
    };
  if (
    sample &&
    sample.activeState === "active" &&
    isHealthyStatus(sample.statusText) &&
    (baseline === undefined || sample.nRestarts === baseline)
  )
    return { verdict: "healthy", elapsedMs, statusText: sample.statusText };
  if (elapsedMs >= windowMs)
    return {
      verdict: "unhealthy",
      elapsedMs,
      reason: sample
        ? `not registered within ${Math.round(windowMs / 60_000)} min (service ${sample.activeState || "unknown"}, status "${sample.statusText}")`
        : `no answer from systemd within ${Math.round(windowMs / 60_000)} min`,
      ...(sample ? { last: sample } : {}),
    };
  return { verdict: "wait" };
}

/**
 * Samples the service until a verdict: the first sample sets the NRestarts baseline; then every
 * `pollMs` until healthy or the window is over (one last sample at the window's end). A probe
 * that throws counts as a sample saying nothing (not healthy).
 */
export function watchHealth(o: {
  clock: Clock;
  probe: () => Promise<ServiceSample>;
  windowMs: number;
  pollMs?: number;
  onSample?: (s: ServiceSample | undefined, elapsedMs: number) => void;
}): Promise<HealthVerdict> {
  const pollMs = o.pollMs ?? DEFAULT_POLL_MS;
  const start = o.clock.monotonic();
  let baseline: number | undefined;
  let first = true;
  let timer: TimerHandle | undefined;
  return new Promise<HealthVerdict>((resolve) => {
    const fail = (err: unknown) =>
      resolve({
        verdict: "unhealthy",
        elapsedMs: o.clock.monotonic() - start,
        reason: `health check failed: ${err instanceof Error ? err.message : String(err)}`,
      });
    const step = async (): Promise<void> => {
      let sample: ServiceSample | undefined;
      try {
        sample = await o.probe();
      } catch {
        sample = undefined;
      }
      const elapsed = o.clock.monotonic() - start;
      if (first) {
        first = false;
        baseline = sample?.nRestarts;
      }
      o.onSample?.(sample, elapsed);
      const j = judge(sample, baseline, elapsed, o.windowMs);
      if (j.verdict !== "wait") {
        resolve(j);
        return;
      }
      const wait = Math.max(0, Math.min(pollMs, o.windowMs - elapsed));
      timer = o.clock.setTimer(wait, () => {
        timer = undefined;
        step().catch(fail);
      });
    };
    step().catch(fail);
  }).finally(() => timer?.cancel());
}
