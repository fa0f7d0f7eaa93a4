/**
 * The one summary every bench figure of repeated runs uses: nearest-rank percentiles (the value
 * at rank ⌈p/100 · n⌉ of the sorted runs, so a p99 is always a measured run, never interpolated).
 */

/** The nearest-rank percentile `p` (0–100) of ascending `sorted` values; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1);
  return sorted[Math.max(0, i)]!;
}

export interface Summary {
  n: number;
  median: number;
  p95: number;
  p99: number;
  min: number;
  max: number;
}

/** n, median, p95, p99, min and max of `values`, rounded to `decimals` (default 2). */
export function summarize(values: readonly number[], decimals = 2): Summary {
  const s = [...values].sort((a, b) => a - b);
  const k = 10 ** decimals;
  const round = (v: number) => Math.round(v * k) / k;
  return {
    n: s.length,
    median: round(percentile(s, 50)),
    p95: round(percentile(s, 95)),
    p99: round(percentile(s, 99)),
    min: round(s[0] ?? Number.NaN),
    max: round(s[s.length - 1] ?? Number.NaN),
  };
}
