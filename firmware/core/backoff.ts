import type { Random } from "./random.ts";

/**
 * Retry delays for a phone that never gives up: min(cap, base·2ⁿ) scaled by U(0.5, 1) so
 * that a building full of phones does not come back in lock-step after a pool restart.
 */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const defaultBackoff: BackoffOptions = { baseMs: 30_000, capMs: 1_800_000 };

export function backoffDelay(attempt: number, random: Random, opts: BackoffOptions = defaultBackoff): number {
  const exp = Math.min(opts.capMs, opts.baseMs * 2 ** Math.min(attempt, 30));
  return Math.round(exp * (0.5 + random.unit() / 2));
}
