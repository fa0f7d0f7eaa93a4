/**
 * Range checks for durations the registrar gives us, applied where they are parsed (issue 9 §3).
 * A hostile or broken server must never make the phone spin (zero, negative) or go silent for
 * ever (huge; Node also turns a timer over 2³¹−1 ms into 1 ms).
 *
 * - Expires (refresh planning): [60 s, 24 h]
 * - Retry-After: [backoff base (30 s), 1 h]; only from a verified (or pre-SA) answer
 * - ms-keep-alive timeout: [10 s, 10 min]
 *
 * Out-of-range values are clamped and reported once per owner (not at every refresh): see
 * `OnceReporter`.
 */
import { defaultBackoff } from "../../core/backoff.ts";
import type { Logger } from "../../core/logger.ts";

export interface RangeS {
  min: number;
  max: number;
}

export const EXPIRES_RANGE_S: RangeS = { min: 60, max: 86_400 };
export const RETRY_AFTER_RANGE_S: RangeS = { min: defaultBackoff.baseMs / 1000, max: 3_600 };
export const KEEP_ALIVE_RANGE_S: RangeS = { min: 10, max: 600 };

/**
 * A leading (optionally signed) decimal integer, as in `Retry-After: 120 (comment);duration=60`,
 * `Expires: 7200` or `timeout=300`. Undefined when there is none. Very long digit strings read
 * as ±Infinity-like huge numbers, which the clamp then bounds.
 */
export function parseSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^\s*([+-]?)(\d+)/.exec(value);
  if (!m) return undefined;
  const n = Number(m[2]);
  if (!Number.isFinite(n)) return m[1] === "-" ? -Number.MAX_SAFE_INTEGER : Number.MAX_SAFE_INTEGER;
  return m[1] === "-" ? -n : n;
}

export function clamp(value: number, range: RangeS): number {
  return Math.min(range.max, Math.max(range.min, value));
}

/** Logs an out-of-range value of each kind once, then stays quiet. */
export class OnceReporter {
  private readonly seen = new Set<string>();

  constructor(private readonly logger: Logger) {}

  /** Clamps `value` into `range`; logs the first out-of-range value of `what`. */
  clamp(what: string, value: number, range: RangeS): number {
    const v = clamp(value, range);
    if (v !== value && !this.seen.has(what)) {
      this.seen.add(what);
      this.logger.warn("registrar value out of range; clamped", {
        what,
        value,
        clampedTo: v,
        min: range.min,
        max: range.max,
      });
    }
    return v;
  }
}
