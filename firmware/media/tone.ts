/**
 * Tones into 16-bit PCM, and which known frequencies a PCM frame contains. Used by tests and by
 * `call-test` to prove that audio crossed a call end to end: send 1004 Hz, find 1004 Hz.
 *
 * Levels are in dBFS for a sine: 0 dBFS is a sine whose peak is 32767. (G.711's 0 dBm0 sits
 * about 3 dB below that; the codec's full-scale sine is +3.17 dBm0 for µ-law, +3.14 for A-law.)
 *
 * Detection runs one Goertzel filter per candidate frequency (one multiply-add per sample each,
 * cheaper than an FFT when only a handful of frequencies matter). A short frame smears every
 * tone into its neighbours: in a 20 ms frame at 8 kHz a DTMF tone leaks only 13 dB down into the
 * next DTMF frequency, 73 Hz away, so a plain per-bin threshold would report tones that are
 * absent. The detector therefore solves for all candidates together: the Goertzel outputs are the
 * frame's inner products with each candidate's cosine and sine, and one small linear solve (the
 * candidates' Gram matrix, inverted once per frame length) removes what each candidate's
 * neighbours contribute. For a frame that is a sum of candidate tones the levels come out exact
 * whatever the frame length; candidates closer together than sampleRate / frameLength cannot be
 * told apart within one frame and share the energy.
 */
import type { DtmfDigit } from "./dtmf.ts";

const FULL_SCALE = 32767;

/** The usual test tone. 1004 Hz rather than 1000 Hz: at 8 kHz a 1000 Hz sine repeats every 8
 * samples and so exercises only 8 codec levels; 1004 Hz walks through all of them. */
export const TEST_TONE_HZ = 1004;

/** ITU-T Q.23 keypad frequencies: the row (low group) and column (high group) of each key. */
export const DTMF_LOW_HZ = [697, 770, 852, 941] as const;
export const DTMF_HIGH_HZ = [1209, 1336, 1477, 1633] as const;
const KEYPAD: readonly (readonly DtmfDigit[])[] = [
  ["1", "2", "3", "A"],
  ["4", "5", "6", "B"],
  ["7", "8", "9", "C"],
  ["*", "0", "#", "D"],
];

/** The two frequencies of a DTMF key: [low group, high group]. */
export function dtmfFrequencies(digit: DtmfDigit): [number, number] {
  for (let r = 0; r < 4; r++) {
    const c = KEYPAD[r]!.indexOf(digit);
    if (c >= 0) return [DTMF_LOW_HZ[r]!, DTMF_HIGH_HZ[c]!];
  }
  // DtmfDigit is a closed union; this is unreachable for well-typed callers.
  throw new RangeError(`not a DTMF digit: ${digit}`);
}

export function dbfsToAmplitude(dbfs: number): number {
  return FULL_SCALE * 10 ** (dbfs / 20);
}

/** A sine's peak amplitude as dBFS; −Infinity for 0. */
export function amplitudeToDbfs(amplitude: number): number {
  return 20 * Math.log10(amplitude / FULL_SCALE);
}

/** A frame's RMS level in dBFS on the sine scale (a full-scale sine reads 0), −Infinity if silent. */
export function rmsDbfs(frame: Int16Array): number {
  if (frame.length === 0) return Number.NEGATIVE_INFINITY;
  let sum = 0;
  for (const s of frame) sum += s * s;
  return amplitudeToDbfs(Math.sqrt(sum / frame.length) * Math.SQRT2);
}

export interface ToneComponent {
  hz: number;
  /** The sine's peak level; components add, and a sum beyond full scale clips. */
  levelDbfs: number;
}

/**
 * A continuous sine or multi-tone source, one frame at a time. The phase is computed from the
 * running sample index rather than accumulated, so frames join without clicks and the tone does
 * not drift over a long call.
 */
export class ToneGenerator {
  private readonly sampleRate: number;
  private readonly parts: Array<{ w: number; a: number }>;
  private n = 0;

  constructor(tones: readonly ToneComponent[], o: { sampleRate?: number; startSample?: number } = {}) {
    this.sampleRate = o.sampleRate ?? 8000;
    this.n = o.startSample ?? 0;
    this.parts = tones.map((t) => ({
      w: (2 * Math.PI * t.hz) / this.sampleRate,
      a: dbfsToAmplitude(t.levelDbfs),
    }));
  }

  /** The next `samples` samples. */
  next(samples: number): Int16Array {
    const out = new Int16Array(samples);
    for (let i = 0; i < samples; i++, this.n++) {
      let v = 0;
      for (const p of this.parts) v += p.a * Math.sin(p.w * this.n);
      out[i] = v >= FULL_SCALE ? FULL_SCALE : v <= -32768 ? -32768 : Math.round(v);
    }
    return out;
  }
}

/** `samples` samples of the given tones, from sample index 0. */
export function generateTone(
  tones: readonly ToneComponent[],
  samples: number,
  o: { sampleRate?: number } = {},
): Int16Array {
  return new ToneGenerator(tones, o).next(samples);
}

/**
 * The frame's correlation with cos(ωn) and sin(ωn), n = 0…N−1, by the Goertzel recurrence
 * s[n] = x[n] + 2cos(ω)·s[n−1] − s[n−2]: after the last sample, s[N−1] − e^(−jω)·s[N−2] is the
 * frame's DFT at ω rotated by ω(N−1), which is undone at the end.
 */
function goertzelInner(frame: Int16Array, w: number): { c: number; s: number } {
  const coeff = 2 * Math.cos(w);
  let s1 = 0;
  let s2 = 0;
  for (let i = 0; i < frame.length; i++) {
    const s0 = frame[i]! + coeff * s1 - s2;
    s2 = s1;
    s1 = s0;
  }
  // y = s1 − e^(−jω)·s2 = Σ x[n]·e^(jω(N−1−n)); X(ω) = e^(−jω(N−1))·y = Σ x[n]·e^(−jωn).
  const yr = s1 - Math.cos(w) * s2;
  const yi = Math.sin(w) * s2;
  const rot = -w * (frame.length - 1);
  const xr = yr * Math.cos(rot) - yi * Math.sin(rot);
  const xi = yr * Math.sin(rot) + yi * Math.cos(rot);
  return { c: xr, s: -xi };
}

/**
 * The plain single-bin Goertzel estimate of a sine's peak amplitude at `hz`: 2·|X(ω)|/N. Exact
 * for a tone with whole cycles in the frame; neighbours leak into it (see ToneDetector).
 */
export function goertzelAmplitude(frame: Int16Array, hz: number, sampleRate = 8000): number {
  if (frame.length === 0) return 0;
  const { c, s } = goertzelInner(frame, (2 * Math.PI * hz) / sampleRate);
  return (2 * Math.hypot(c, s)) / frame.length;
}

export interface ToneDetectorOptions {
  /** The candidates, each strictly between 0 and sampleRate / 2. */
  frequencies: readonly number[];
  sampleRate?: number;
  /** A candidate is present when its level reaches this (default −30 dBFS). */
  thresholdDbfs?: number;
}

export interface ToneLevel {
  hz: number;
  levelDbfs: number;
}

/** Which candidate frequencies a frame holds, and at what level. */
export class ToneDetector {
  readonly frequencies: readonly number[];
  readonly sampleRate: number;
  readonly thresholdDbfs: number;
  private readonly w: number[];
  /** The inverse Gram matrix for each frame length met so far (calls use one or two). */
  private readonly inverses = new Map<number, Float64Array>();

  constructor(o: ToneDetectorOptions) {
    this.sampleRate = o.sampleRate ?? 8000;
    this.thresholdDbfs = o.thresholdDbfs ?? -30;
    for (const f of o.frequencies)
      if (!(f > 0 && f < this.sampleRate / 2))
        throw new RangeError(`tone ${f} Hz is not between 0 and ${this.sampleRate / 2} Hz`);
    this.frequencies = [...o.frequencies];
    this.w = this.frequencies.map((f) => (2 * Math.PI * f) / this.sampleRate);
  }

  /** Every candidate's level in the frame, in the order given. */
  levels(frame: Int16Array): ToneLevel[] {
    const k = this.frequencies.length;
    if (frame.length === 0 || k === 0) return this.frequencies.map((hz) => ({ hz, levelDbfs: -Infinity }));
    const b = new Float64Array(2 * k);
    for (let i = 0; i < k; i++) {
      const { c, s } = goertzelInner(frame, this.w[i]!);
      b[2 * i] = c;
      b[2 * i + 1] = s;
    }
    const inv = this.inverseFor(frame.length);
    const m = 2 * k;
    return this.frequencies.map((hz, i) => {
      let ac = 0;
      let as = 0;
      for (let j = 0; j < m; j++) {
        ac += inv[2 * i * m + j]! * b[j]!;
        as += inv[(2 * i + 1) * m + j]! * b[j]!;
      }
      return { hz, levelDbfs: amplitudeToDbfs(Math.hypot(ac, as)) };
    });
  }

  /** The candidates at or above the threshold. */
  detect(frame: Int16Array): ToneLevel[] {
    return this.levels(frame).filter((l) => l.levelDbfs >= this.thresholdDbfs);
  }

  private inverseFor(n: number): Float64Array {
    const hit = this.inverses.get(n);
    if (hit) return hit;
    const k = this.w.length;
    const m = 2 * k;
    // Basis: cos(ω_i·t), sin(ω_i·t) for t = 0…n−1; G = BᵀB.
    const basis: Float64Array[] = [];
    for (const w of this.w) {
      const c = new Float64Array(n);
      const s = new Float64Array(n);
      for (let t = 0; t < n; t++) {
        c[t] = Math.cos(w * t);
        s[t] = Math.sin(w * t);
      }
      basis.push(c, s);
    }
    const g = new Float64Array(m * m);
    for (let i = 0; i < m; i++)
      for (let j = i; j < m; j++) {
        let sum = 0;
        const bi = basis[i]!;
        const bj = basis[j]!;
        for (let t = 0; t < n; t++) sum += bi[t]! * bj[t]!;
        g[i * m + j] = sum;
        g[j * m + i] = sum;
      }
    // A whisper of ridge keeps the solve finite when two candidates are closer than the frame
    // can resolve (or a frame is a single sample); it moves well-separated results by ~1e-9.
    for (let i = 0; i < m; i++) g[i * m + i]! += 1e-9 * n;
    const inv = invert(g, m);
    this.inverses.set(n, inv);
    return inv;
  }
}

/**
 * Gauss–Jordan inverse of an m×m symmetric positive-definite matrix (a Gram matrix with its
 * ridge). Such a matrix needs no pivoting: every pivot stays positive.
 */
function invert(a: Float64Array, m: number): Float64Array {
  const w = Float64Array.from(a);
  const inv = new Float64Array(m * m);
  for (let i = 0; i < m; i++) inv[i * m + i] = 1;
  for (let col = 0; col < m; col++) {
    const p = w[col * m + col]!;
    for (let c = 0; c < m; c++) {
      w[col * m + c]! /= p;
      inv[col * m + c]! /= p;
    }
    for (let r = 0; r < m; r++) {
      if (r === col) continue;
      const f = w[r * m + col]!;
      if (f === 0) continue;
      for (let c = 0; c < m; c++) {
        w[r * m + c]! -= f * w[col * m + c]!;
        inv[r * m + c]! -= f * inv[col * m + c]!;
      }
    }
  }
  return inv;
}

/**
 * A keypad tone in a frame: exactly one low-group and one high-group frequency present, and no
 * other. Frames of 20 ms or more suit it (a key press lasts at least 40 ms, Q.24).
 */
export class DtmfToneDetector {
  private readonly detector: ToneDetector;

  constructor(o: { sampleRate?: number; thresholdDbfs?: number } = {}) {
    this.detector = new ToneDetector({ ...o, frequencies: [...DTMF_LOW_HZ, ...DTMF_HIGH_HZ] });
  }

  detect(frame: Int16Array): DtmfDigit | undefined {
    const present = this.detector.detect(frame).map((l) => l.hz);
    const low = present.filter((hz) => (DTMF_LOW_HZ as readonly number[]).includes(hz));
    const high = present.filter((hz) => (DTMF_HIGH_HZ as readonly number[]).includes(hz));
    if (low.length !== 1 || high.length !== 1) return undefined;
    return KEYPAD[DTMF_LOW_HZ.indexOf(low[0] as (typeof DTMF_LOW_HZ)[number])]![
      DTMF_HIGH_HZ.indexOf(high[0] as (typeof DTMF_HIGH_HZ)[number])
    ];
  }
}
