/**
 * G.722 (ITU-T G.722, 2012 edition), 64 kbit/s, mode 1: 7 kHz audio at 16 kHz sampling, one octet
 * per pair of samples. Written from the Recommendation's description of the SB-ADPCM codec (its
 * clause 3 block diagrams and clause 6 computational details); pure, no I/O.
 *
 * The codec in four parts:
 * - Transmit QMF: a 24-tap quadrature mirror filter splits each input pair into one lower and one
 *   upper sub-band sample at 8 kHz (0–4 kHz and 4–8 kHz, the upper band spectrally folded).
 * - Lower sub-band ADPCM: a 60-level adaptive quantizer gives 6 bits (IL). Only the 4 most
 *   significant of them drive the inverse quantizer that feeds the predictor and the scale factor,
 *   so that a decoder running at 56 or 48 kbit/s (5 or 4 bits, the rest stolen for data) keeps the
 *   same predictor state as the encoder; the decoder's *output* uses all 6 bits in mode 1.
 * - Upper sub-band ADPCM: a 4-level quantizer, 2 bits (IH).
 * - Receive QMF: the mirror filter, back to 16 kHz.
 * Each band's predictor has two poles and six zeros, adapted by sign-sign gradient steps with
 * leakage; the step size adapts in the log domain (a leaky integrator of per-code weights, mapped
 * back through a 32-entry antilog table). Every operation is the Recommendation's 16-bit fixed
 * point with saturation, reproduced here with plain integer arithmetic: encoder and decoder must
 * agree bit for bit, or the two ends' predictors drift apart.
 *
 * The octet is IH in its two most significant bits and IL below (G.722 §1.4; RFC 3551 §4.5.2
 * sends the octets as they are, one per 125 µs). RTP quirk (RFC 3551 §4.5.2): the RTP clock of
 * G.722 runs at 8000 Hz though the codec samples at 16 kHz, so 20 ms is 320 samples, 160 octets,
 * and a timestamp step of 160.
 *
 * Input is 16-bit PCM; the QMF keeps all 16 bits (the Recommendation's 14-bit A/D is a hardware
 * assumption, not a format: its filter arithmetic simply carries two more low bits) and yields
 * 15-bit sub-band signals, as the Recommendation's does. Output is 16-bit.
 */

export const G722_PAYLOAD_TYPE = 9;
/** What the codec samples at. */
export const G722_SAMPLE_RATE = 16000;
/** What its RTP timestamps count at (RFC 3551 §4.5.2). */
export const G722_RTP_CLOCK_RATE = 8000;

/**
 * QMF coefficients h0…h23 (G.722 Table 11), scaled by 2^13: the filter is linear phase, so the
 * table is symmetric (h_i = h_{23−i}), and its taps sum to 2^13 (unity gain at DC).
 */
export const QMF_COEFFICIENTS: readonly number[] = [
  3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876, 3876, 951, -805, -210, 362, 32, -156, 12, 53,
  -11, -11, 3,
];

/**
 * Lower sub-band quantizer decision levels (G.722 Table 6, the Q6 column) for magnitude intervals
 * 1…30, in units of the scale factor / 4096 (level i is Q6[i] · DETL >> 12). Index 0 is the
 * bottom of interval 1.
 */
export const LOW_DECISION_LEVELS: readonly number[] = [
  0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023, 1121, 1219,
  1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
];

/** The 6-bit code of magnitude interval 1…30 for a negative difference (Table 6, ILN). */
const LOW_CODE_NEGATIVE: readonly number[] = [
  0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
  6, 5, 4,
];
/** … and for a positive one (Table 6, ILP). */
const LOW_CODE_POSITIVE: readonly number[] = [
  0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36,
  35, 34, 33, 32,
];

/**
 * 4-bit inverse quantizer output levels (Table 7, QQ4), for magnitude 0…7 of the truncated code;
 * in units of DETL / 4096 like the decision levels, ×8 in the arithmetic (Q15 products).
 */
export const LOW_INVERSE_4BIT: readonly number[] = [0, 150, 323, 530, 786, 1121, 1612, 2557];
/** Magnitude (0…7) of each 4-bit code, and whether it is negative. Codes 0 and 15 both mean 0. */
const LOW_4BIT_MAGNITUDE: readonly number[] = [0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0];
const LOW_4BIT_NEGATIVE: readonly boolean[] = [
  false,
  true,
  true,
  true,
  true,
  true,
  true,
  true,
  false,
  false,
  false,
  false,
  false,
  false,
  false,
  false,
];

/**
 * 6-bit inverse quantizer output levels (Table 6, QQ6), for magnitude 0…30: each sits between two
 * decision levels of the encoder's Q6, which is what the tests check.
 */
export const LOW_INVERSE_6BIT: readonly number[] = [
  0, 17, 54, 91, 130, 170, 211, 254, 300, 347, 396, 447, 501, 558, 618, 682, 750, 822, 899, 982, 1072, 1170,
  1279, 1399, 1535, 1689, 1873, 2088, 2376, 2738, 3101,
];

/**
 * Each 6-bit code's magnitude index into LOW_INVERSE_6BIT and its sign (negative codes: 0–31 and
 * 62–63). Derived from the code tables rather than written out: a code the encoder makes for
 * interval m decodes to level m; the four codes it never makes (0–3) decode as the smallest
 * negative level, as Table 6 assigns them.
 */
const LOW_6BIT_LEVEL = new Int8Array(64);
const LOW_6BIT_NEGATIVE = new Uint8Array(64);
for (let code = 0; code < 4; code++) {
  LOW_6BIT_LEVEL[code] = 1;
  LOW_6BIT_NEGATIVE[code] = 1;
}
for (let m = 1; m <= 30; m++) {
  LOW_6BIT_LEVEL[LOW_CODE_NEGATIVE[m]!] = m;
  LOW_6BIT_NEGATIVE[LOW_CODE_NEGATIVE[m]!] = 1;
  LOW_6BIT_LEVEL[LOW_CODE_POSITIVE[m]!] = m;
}

/** Log scale factor weights for the lower band, by 4-bit code magnitude (Table 8, WL). */
export const LOW_LOG_WEIGHTS: readonly number[] = [-60, -30, 58, 172, 334, 538, 1198, 3042];

/** Antilog table (Table 9, ILB): ILB[i] = 2048 · 2^(i/32), rounded. */
export const ANTILOG: readonly number[] = [
  2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834, 2896, 2960,
  3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008,
];

/** Upper sub-band: the one decision level (Table 5, Q2 = 564), the inverse levels and weights. */
export const HIGH_DECISION_LEVEL = 564;
/** Inverse quantizer output (Table 5, QQ2) of codes 0…3: −large, −small, +large, +small. */
export const HIGH_INVERSE: readonly number[] = [-926, -202, 926, 202];
/** Log scale factor weights (Table 5, WH) of codes 0…3. */
const HIGH_LOG_WEIGHTS: readonly number[] = [798, -214, 798, -214];

/** Scale factors' initial values (and floors): DETL = 32, DETH = 8 (clause 6.2.1.3 / reset). */
export const LOW_INITIAL_SCALE = 32;
export const HIGH_INITIAL_SCALE = 8;
/** Log scale factor ceilings: 18432 (lower band, DETL up to 16384), 22528 (upper). */
const LOW_LOG_SCALE_MAX = 18432;
const HIGH_LOG_SCALE_MAX = 22528;

// ── 16-bit fixed point as the Recommendation defines it ────────────────────────────────────

/**
 * The phone's node runs TurboFan only for functions whose names start with this
 * (`--turbo-filter=dsp*` in image/rootfs/usr/bin/handset): the whole firmware unoptimised keeps a
 * registered phone under 60 MB (issue 10), but G.722's per-sample loops are 17× slower in the
 * interpreter (8.7 % of a core here instead of 0.5 %). What a dsp… function calls is inlined into
 * its optimised code whatever its name.
 */
export const DSP_PREFIX = "dsp";

function sat16(x: number): number {
  return x > 32767 ? 32767 : Math.max(x, -32768);
}

/** Saturating 16-bit add. */
function add(a: number, b: number): number {
  return sat16(a + b);
}

/** Q15 product: (a·b) >> 15, rounding toward −∞ as an arithmetic shift does, saturated. */
function mult(a: number, b: number): number {
  return sat16((a * b) >> 15);
}

/** 15-bit limiter of the reconstructed and the QMF's sub-band signals (LIMIT). */
function limit(x: number): number {
  return x > 16383 ? 16383 : Math.max(x, -16384);
}

/** The sign as the Recommendation takes it: the top bit, so 0 counts as positive. */
function negative(x: number): boolean {
  return x < 0;
}

/**
 * One sub-band's ADPCM state: the predictor (two poles a1, a2; six zeros b1…b6), its signal
 * history, and the quantizer's log and linear scale factors.
 */
class SubBand {
  /** Predicted signal, its pole part and its zero part (SL/SPL/SZL or SH/SPH/SZH). */
  s = 0;
  private sz = 0;
  /** Log scale factor (NBL/NBH) and the scale factor it maps to (DETL/DETH). */
  nb = 0;
  det: number;
  private a1 = 0;
  private a2 = 0;
  private readonly b = new Int32Array(7);
  /** Quantized differences, d[0] the newest (DLT/DH). */
  private readonly d = new Int32Array(7);
  /** Partially reconstructed signal (PLT/PH) and reconstructed signal (RLT/RH), newest first. */
  private p0 = 0;
  private p1 = 0;
  private p2 = 0;
  private r1 = 0;
  private r2 = 0;

  constructor(private readonly initialScale: number) {
    this.det = initialScale;
  }

  /**
   * The rest of one sample once its quantized difference `dq` and new log scale factor are
   * known: reconstruction, predictor adaptation (UPZERO, UPPOL2, UPPOL1) and the next
   * prediction (FILTEZ, FILTEP, PREDIC). Returns the reconstructed signal.
   */
  dspAdapt(dq: number, nb: number, det: number): number {
    this.nb = nb;
    this.det = det;
    const d = this.d;
    const b = this.b;
    // PARREC and RECONS.
    this.p0 = add(dq, this.sz);
    const r0 = add(this.s, dq);
    d[0] = dq;

    // UPZERO: each zero steps by ±128/32768 toward the sign agreement of the newest difference
    // with the one it weights, leaking by 1/256; no step at all when the difference is zero.
    const step = dq === 0 ? 0 : 128;
    const sg0 = negative(dq);
    for (let i = 6; i > 0; i--) {
      const leak = mult(b[i]!, 32640);
      b[i] = add(negative(d[i]!) === sg0 ? step : -step, leak);
      d[i] = d[i - 1]!;
    }

    // UPPOL2, then UPPOL1 (which is bounded by the new a2: stability of the pole pair).
    const s0 = negative(this.p0);
    const s1 = negative(this.p1);
    const s2 = negative(this.p2);
    const wd1 = sat16(this.a1 * 4);
    const wd2 = (s0 === s1 ? sat16(-wd1) : wd1) >> 7;
    let a2 = add(add(wd2, s0 === s2 ? 128 : -128), mult(this.a2, 32512));
    a2 = a2 > 12288 ? 12288 : Math.max(a2, -12288);
    this.a2 = a2;
    let a1 = add(s0 === s1 ? 192 : -192, mult(this.a1, 32640));
    const bound = 15360 - a2;
    a1 = a1 > bound ? bound : Math.max(a1, -bound);
    this.a1 = a1;
    this.p2 = this.p1;
    this.p1 = this.p0;

    // FILTEZ and FILTEP, then PREDIC.
    let sz = 0;
    for (let i = 6; i > 0; i--) sz = add(sz, mult(add(d[i]!, d[i]!), b[i]!));
    this.sz = sz;
    this.r2 = this.r1;
    this.r1 = r0;
    const sp = add(mult(this.a1, add(this.r1, this.r1)), mult(this.a2, add(this.r2, this.r2)));
    this.s = add(sp, sz);
    return r0;
  }

  reset(): void {
    this.s = 0;
    this.sz = 0;
    this.nb = 0;
    this.det = this.initialScale;
    this.a1 = 0;
    this.a2 = 0;
    this.b.fill(0);
    this.d.fill(0);
    this.p0 = this.p1 = this.p2 = 0;
    this.r1 = this.r2 = 0;
  }
}

/** SCALEL / SCALEH: the scale factor of a log scale factor, 32 steps an octave via ILB. */
function scale(nb: number, shift: number): number {
  const wd1 = (nb >> 6) & 31;
  const wd2 = shift - (nb >> 11);
  // At the top of the range the shift goes negative: the antilog is then shifted left.
  const wd3 = wd2 >= 0 ? ANTILOG[wd1]! >> wd2 : ANTILOG[wd1]! << -wd2;
  return wd3 << 2;
}

/** INVQAL: the lower band's 4-bit quantized difference, from the 6-bit code's top 4 bits. */
function lowDifference4(code: number, det: number): number {
  const ril = code >> 2;
  const q = LOW_INVERSE_4BIT[LOW_4BIT_MAGNITUDE[ril]!]! << 3;
  return mult(det, LOW_4BIT_NEGATIVE[ril] ? -q : q);
}

/** LOGSCL: the lower band's next log scale factor (leak 127/128, weight by code). */
function lowLogScale(code: number, nb: number): number {
  const v = mult(nb, 32512) + LOW_LOG_WEIGHTS[LOW_4BIT_MAGNITUDE[code >> 2]!]!;
  return v < 0 ? 0 : Math.min(v, LOW_LOG_SCALE_MAX);
}

/** LOGSCH. */
function highLogScale(code: number, nb: number): number {
  const v = mult(nb, 32512) + HIGH_LOG_WEIGHTS[code]!;
  return v < 0 ? 0 : Math.min(v, HIGH_LOG_SCALE_MAX);
}

/** INVQAH: the upper band's quantized difference. */
function highDifference(code: number, det: number): number {
  return mult(HIGH_INVERSE[code]! << 3, det);
}

/** The magnitude the quantizers compare: |x|, or one's complement (−x − 1) for negative x. */
function magnitude(x: number): number {
  return x >= 0 ? x : -x - 1;
}

/** QUANTL: the 6-bit code of a lower band difference. */
export function quantizeLow(el: number, det: number): number {
  const wd = magnitude(el);
  let m = 1;
  // Interval m is [Q6[m−1], Q6[m]) in units of det / 4096; the 30th is open above.
  while (m < 30 && wd >= (LOW_DECISION_LEVELS[m]! * 8 * det) >> 15) m++;
  return el < 0 ? LOW_CODE_NEGATIVE[m]! : LOW_CODE_POSITIVE[m]!;
}

/** QUANTH: the 2-bit code of an upper band difference. */
export function quantizeHigh(eh: number, det: number): number {
  const large = magnitude(eh) >= (HIGH_DECISION_LEVEL * 8 * det) >> 15;
  if (eh < 0) return large ? 0 : 1;
  return large ? 2 : 3;
}

/** INVQBL in mode 1: the lower band's 6-bit quantized difference (the decoder's output path). */
export function lowDifference6(code: number, det: number): number {
  const q = LOW_INVERSE_6BIT[LOW_6BIT_LEVEL[code & 63]!]! << 3;
  return mult(det, LOW_6BIT_NEGATIVE[code & 63] ? -q : q);
}

/** The ADPCM encoder of one stream (state carries from call to call: frames join seamlessly). */
export class G722Encoder {
  private readonly low = new SubBand(LOW_INITIAL_SCALE);
  private readonly high = new SubBand(HIGH_INITIAL_SCALE);
  /** The QMF's input history, newest first. */
  private readonly x = new Int32Array(24);

  /** 16 kHz PCM (an even number of samples) → one octet per pair. */
  encode(pcm: Int16Array, out: Uint8Array = new Uint8Array(pcm.length >> 1)): Uint8Array {
    if (pcm.length % 2 !== 0)
      throw new RangeError(`G.722 encodes sample pairs: ${pcm.length} samples is an odd count`);
    if (out.length < pcm.length >> 1)
      throw new RangeError(`output holds ${out.length} octets, need ${pcm.length >> 1}`);
    return this.dspEncode(pcm, out);
  }

  /** The per-sample loop: named dsp… so the service's V8 optimises it (see DSP_PREFIX). */
  private dspEncode(pcm: Int16Array, out: Uint8Array): Uint8Array {
    const x = this.x;
    const h = QMF_COEFFICIENTS;
    const low = this.low;
    const high = this.high;
    for (let n = 0, o = 0; n < pcm.length; n += 2, o++) {
      // Transmit QMF: shift the pair in, newest at x[0]; even taps weigh the later sample of each
      // pair, odd taps the earlier one; their sum is the lower band, their difference the upper.
      x.copyWithin(2, 0, 22);
      x[1] = pcm[n]!;
      x[0] = pcm[n + 1]!;
      let even = 0;
      let odd = 0;
      for (let i = 0; i < 24; i += 2) {
        even += h[i]! * x[i]!;
        odd += h[i + 1]! * x[i + 1]!;
      }
      const xl = limit((even + odd) >> 14);
      const xh = limit((even - odd) >> 14);

      // Lower band.
      const el = sat16(xl - low.s);
      const il = quantizeLow(el, low.det);
      const dl = lowDifference4(il, low.det);
      const nbl = lowLogScale(il, low.nb);
      low.dspAdapt(dl, nbl, scale(nbl, 8));

      // Upper band.
      const eh = sat16(xh - high.s);
      const ih = quantizeHigh(eh, high.det);
      const dh = highDifference(ih, high.det);
      const nbh = highLogScale(ih, high.nb);
      high.dspAdapt(dh, nbh, scale(nbh, 10));

      out[o] = (ih << 6) | il;
    }
    return out;
  }

  /** Back to the initial state (the Recommendation's reset): for a new stream. */
  reset(): void {
    this.low.reset();
    this.high.reset();
    this.x.fill(0);
  }
}

/** The ADPCM decoder of one stream, mode 1 (all 6 lower band bits are audio). */
export class G722Decoder {
  private readonly low = new SubBand(LOW_INITIAL_SCALE);
  private readonly high = new SubBand(HIGH_INITIAL_SCALE);
  /** The receive QMF's histories of rL − rH and rL + rH, newest first. */
  private readonly xd = new Int32Array(12);
  private readonly xs = new Int32Array(12);

  /** Octets → 16 kHz PCM, two samples each. Any octet is valid: nothing here throws on content. */
  decode(codes: Uint8Array, out: Int16Array = new Int16Array(codes.length * 2)): Int16Array {
    if (out.length < codes.length * 2)
      throw new RangeError(`output holds ${out.length} samples, need ${codes.length * 2}`);
    return this.dspDecode(codes, out);
  }

  /** The per-octet loop: named dsp… so the service's V8 optimises it (see DSP_PREFIX). */
  private dspDecode(codes: Uint8Array, out: Int16Array): Int16Array {
    const h = QMF_COEFFICIENTS;
    const low = this.low;
    const high = this.high;
    const xd = this.xd;
    const xs = this.xs;
    for (let n = 0, o = 0; n < codes.length; n++, o += 2) {
      const code = codes[n]!;
      const il = code & 63;
      const ih = code >> 6;

      // Lower band: the output takes the 6-bit difference; the predictor, as in the encoder, the 4-bit one.
      const rl = limit(add(low.s, lowDifference6(il, low.det)));
      const dl = lowDifference4(il, low.det);
      const nbl = lowLogScale(il, low.nb);
      low.dspAdapt(dl, nbl, scale(nbl, 8));

      // Upper band: its reconstructed signal is the output.
      const dh = highDifference(ih, high.det);
      const nbh = highLogScale(ih, high.nb);
      const rh = limit(high.dspAdapt(dh, nbh, scale(nbh, 10)));

      // Receive QMF: the difference through the even taps gives the earlier output sample, the
      // sum through the odd taps the later one (the mirror of the transmit side's pairing).
      xd.copyWithin(1, 0, 11);
      xs.copyWithin(1, 0, 11);
      xd[0] = rl - rh;
      xs[0] = rl + rh;
      let first = 0;
      let second = 0;
      for (let i = 0; i < 12; i++) {
        first += h[2 * i]! * xd[i]!;
        second += h[2 * i + 1]! * xs[i]!;
      }
      out[o] = sat16(first >> 11);
      out[o + 1] = sat16(second >> 11);
    }
    return out;
  }

  reset(): void {
    this.low.reset();
    this.high.reset();
    this.xd.fill(0);
    this.xs.fill(0);
  }
}
