/**
 * G.722 (firmware/media/g722.ts).
 *
 * The ITU-T's own digital test sequences (the G.722 test vectors zip) cannot be fetched here, so
 * they are not run. Instead:
 * - the tables are checked against what the Recommendation says of them (symmetry and unity gain
 *   of the QMF, the antilog table's formula, reconstruction levels inside their decision
 *   intervals, the 4-bit levels that are decision levels of the 6-bit quantizer);
 * - the codec's behaviour: tones at 1 kHz (lower band) and 6 kHz (upper band) come back with a
 *   measured SNR, silence stays silence, state carries across calls exactly, reset restores it,
 *   any octets decode;
 * - a bitstream fixture: the SHA-256 of the encoding of a fixed signal, and of the decoding of
 *   that encoding. Both hashes were cross-checked during development against libspandsp 0.0.6
 *   (the codec behind baresip's g722 module, an independent implementation that passes the ITU
 *   vectors), which produced the same bytes and the same samples. test/interop/baresip-call.test.ts
 *   calls baresip with G.722 both ways as the end-to-end proof.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  ANTILOG,
  G722_PAYLOAD_TYPE,
  G722_RTP_CLOCK_RATE,
  G722_SAMPLE_RATE,
  G722Decoder,
  G722Encoder,
  HIGH_INVERSE,
  LOW_DECISION_LEVELS,
  LOW_INVERSE_4BIT,
  LOW_INVERSE_6BIT,
  lowDifference6,
  QMF_COEFFICIENTS,
  quantizeHigh,
  quantizeLow,
} from "../../firmware/media/g722.ts";
import { generateTone } from "../../firmware/media/tone.ts";

const roundTrip = (pcm: Int16Array) => new G722Decoder().decode(new G722Encoder().encode(pcm));

/** The QMF pair's delay, in 16 kHz samples (found below by correlation, then relied on). */
const DELAY = 22;

/** Signal-to-noise ratio of `out` against `pcm` delayed by DELAY, over the settled part. */
function snrDb(pcm: Int16Array, out: Int16Array, from: number): number {
  let signal = 0;
  let noise = 0;
  for (let i = from; i < pcm.length; i++) {
    const x = pcm[i - DELAY]!;
    signal += x * x;
    noise += (out[i]! - x) ** 2;
  }
  return 10 * Math.log10(signal / noise);
}

/** A fixed test signal: tones in both bands and noise, the second half 12 dB quieter. */
function reference(): Int16Array {
  const n = 16000;
  const tones = generateTone(
    [
      { hz: 1004, levelDbfs: -10 },
      { hz: 6000, levelDbfs: -20 },
      { hz: 250, levelDbfs: -18 },
    ],
    n,
    { sampleRate: 16000 },
  );
  const out = new Int16Array(n);
  let seed = 1;
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    const noise = ((seed >>> 16) - 32768) >> 4;
    out[i] = Math.round((tones[i]! + noise) * (i < n / 2 ? 1 : 0.25));
  }
  return out;
}

const sha256 = (b: ArrayBufferView) =>
  createHash("sha256")
    .update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength))
    .digest("hex");

describe("G.722 tables", () => {
  it("the QMF is linear phase (symmetric) with unity gain at DC (taps sum to 2^13)", () => {
    expect(QMF_COEFFICIENTS).toHaveLength(24);
    for (let i = 0; i < 24; i++) expect(QMF_COEFFICIENTS[i]).toBe(QMF_COEFFICIENTS[23 - i]);
    expect(QMF_COEFFICIENTS.reduce((a, b) => a + b, 0)).toBe(8192);
    // Each polyphase half carries half the gain: what lets the two sub-bands add back up.
    const even = QMF_COEFFICIENTS.filter((_, i) => i % 2 === 0).reduce((a, b) => a + b, 0);
    expect(even).toBe(4096);
  });

  it("the antilog table is 2048 · 2^(i/32), rounded", () => {
    expect(ANTILOG).toHaveLength(32);
    for (const [i, v] of ANTILOG.entries()) expect(v).toBe(Math.round(2048 * 2 ** (i / 32)));
  });

  it("decision levels rise; each 6-bit output level sits inside its interval", () => {
    expect(LOW_DECISION_LEVELS).toHaveLength(30);
    for (let m = 1; m < 30; m++) {
      expect(LOW_DECISION_LEVELS[m]!).toBeGreaterThan(LOW_DECISION_LEVELS[m - 1]!);
      expect(LOW_INVERSE_6BIT[m]!).toBeGreaterThanOrEqual(LOW_DECISION_LEVELS[m - 1]!);
      expect(LOW_INVERSE_6BIT[m]!).toBeLessThan(LOW_DECISION_LEVELS[m]!);
    }
    // The 30th interval is open above; its level lies beyond the last decision level.
    expect(LOW_INVERSE_6BIT[30]!).toBeGreaterThan(LOW_DECISION_LEVELS[29]!);
  });

  it("the 4-bit levels are 6-bit decision levels: four 6-bit intervals merge into one 4-bit one", () => {
    for (let k = 1; k < 8; k++) expect(LOW_INVERSE_4BIT[k]).toBe(LOW_DECISION_LEVELS[4 * k]);
  });

  it("the quantizer uses each of the 60 codes 4…63 and keeps the sign in the top bits", () => {
    const det = 1024;
    const seen = new Set<number>();
    for (let el = -20000; el <= 20000; el += 3) {
      const code = quantizeLow(el, det);
      seen.add(code);
      // The top four bits (what a 48 kbit/s decoder keeps) still say the sign: 1–7 negative,
      // 8–14 positive, 15 the zero level the smallest magnitudes of either sign fold into.
      const r = code >> 2;
      if (r !== 15) expect([el < 0, r >= 1 && r <= 7]).toEqual([el < 0, el < 0]);
    }
    expect(seen.size).toBe(60);
    expect(Math.min(...seen)).toBe(4);
    expect(Math.max(...seen)).toBe(63);
    // Larger magnitudes never get a smaller reconstruction.
    let previous = -1;
    for (let el = 0; el < 20000; el += 7) {
      const d = lowDifference6(quantizeLow(el, det), det);
      expect(d).toBeGreaterThanOrEqual(previous);
      previous = d;
    }
  });

  it("the upper band's two decision halves and four levels", () => {
    expect(HIGH_INVERSE).toEqual([-926, -202, 926, 202]);
    const det = 1000;
    const edge = (564 * 8 * det) >> 15; // 137
    expect(quantizeHigh(edge, det)).toBe(2);
    expect(quantizeHigh(edge - 1, det)).toBe(3);
    expect(quantizeHigh(0, det)).toBe(3);
    // Negative magnitudes are one's complement: −1 is as small as 0.
    expect(quantizeHigh(-1, det)).toBe(1);
    expect(quantizeHigh(-edge - 1, det)).toBe(0);
    expect(quantizeHigh(-edge, det)).toBe(1);
  });
});

describe("G.722 codec", () => {
  it("names its RTP quirk: 16 kHz audio on an 8000 Hz clock, 160 octets per 20 ms", () => {
    expect(G722_PAYLOAD_TYPE).toBe(9);
    expect(G722_SAMPLE_RATE).toBe(16000);
    expect(G722_RTP_CLOCK_RATE).toBe(8000);
    const frame = new G722Encoder().encode(new Int16Array(320));
    expect(frame).toHaveLength(160);
    expect(new G722Decoder().decode(frame)).toHaveLength(320);
  });

  it("encodes the fixed signal to the bytes libspandsp makes, and decodes them to its samples", () => {
    const bytes = new G722Encoder().encode(reference());
    expect(sha256(bytes)).toBe("d2038a8dcff8d6e79c48a5d7fce6a8f5c272bb11a9af53d0b3561cf904771ed2");
    expect(sha256(new G722Decoder().decode(bytes))).toBe(
      "64dfc2685cad7776080d00f29e0aa2d1e222ef5113827a77da20a24a34158e80",
    );
  });

  it("delays by the QMF pair's 22 samples", () => {
    // A chirp does not repeat, so only the true delay correlates (a tone would alias by its period).
    const n = 4000;
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++)
      pcm[i] = Math.round(8000 * Math.sin(2 * Math.PI * (100 + 0.4 * i) * (i / 16000)));
    const out = roundTrip(pcm);
    let best = { lag: -1, c: Number.NEGATIVE_INFINITY };
    for (let lag = 0; lag < 64; lag++) {
      let c = 0;
      for (let i = 64; i < n; i++) c += pcm[i - lag]! * out[i]!;
      if (c > best.c) best = { lag, c };
    }
    expect(best.lag).toBe(DELAY);
  });

  /*
   * SNR thresholds. Measured on this implementation (and the same on libspandsp, being bit for
   * bit the same): a 1 kHz tone 43.5 dB at −30 dBFS, 47 dB at −12, 48 dB at −3; a 6 kHz tone
   * 26–28 dB. The lower band has 6 bits and a well-predicted tone, hence ~45 dB; the upper band
   * has 2 bits (four levels), where the textbook 6 dB a bit plus the predictor's gain gives the
   * mid-20s. The thresholds sit ~4 dB under the worst measurement so that a real regression
   * (a wrong table entry costs 10 dB or more; a broken band, all of it) fails and rounding
   * changes do not.
   */
  it.each([
    { hz: 1000, dbfs: -12, min: 40 },
    { hz: 1000, dbfs: -30, min: 39 },
    { hz: 6000, dbfs: -12, min: 22 },
    { hz: 6000, dbfs: -30, min: 21 },
  ])("a $hz Hz tone at $dbfs dBFS comes back above $min dB SNR", ({ hz, dbfs, min }) => {
    const pcm = generateTone([{ hz, levelDbfs: dbfs }], 16000, { sampleRate: 16000 });
    // The first quarter second lets the scale factors and predictors settle.
    expect(snrDb(pcm, roundTrip(pcm), 4000)).toBeGreaterThan(min);
  });

  it("keeps the upper band: a 6 kHz tone is not lost to the lower band (as 8 kHz sampling would lose it)", () => {
    const pcm = generateTone([{ hz: 6000, levelDbfs: -12 }], 8000, { sampleRate: 16000 });
    const out = roundTrip(pcm).subarray(2000);
    let sum = 0;
    for (const s of out) sum += s * s;
    const rmsDbfs = 20 * Math.log10((Math.sqrt(sum / out.length) * Math.SQRT2) / 32767);
    expect(Math.abs(rmsDbfs - -12)).toBeLessThan(0.5);
  });

  it("silence starts as 0xFA and decodes to within a few LSB of silence", () => {
    const bytes = new G722Encoder().encode(new Int16Array(3200));
    // IH 3 (the smallest positive upper level) and IL 58: at the smallest scale factor the
    // lowest three decision levels round to zero, so a zero difference falls in interval 4,
    // whose 4-bit level is not zero; the predictor then wanders by an LSB or two.
    expect(bytes[0]).toBe(0xfa);
    const out = new G722Decoder().decode(bytes);
    for (const s of out) expect(Math.abs(s)).toBeLessThanOrEqual(4);
  });

  it("a fading signal decays back to near silence", () => {
    const pcm = new Int16Array(16000);
    pcm.set(generateTone([{ hz: 1004, levelDbfs: -6 }], 4000, { sampleRate: 16000 }));
    const out = roundTrip(pcm);
    for (const s of out.subarray(8000)) expect(Math.abs(s)).toBeLessThanOrEqual(4);
  });

  it("is deterministic: two encoders, two decoders, the same bytes and samples", () => {
    const pcm = reference();
    const a = new G722Encoder().encode(pcm);
    const b = new G722Encoder().encode(pcm);
    expect(b).toEqual(a);
    expect(new G722Decoder().decode(a)).toEqual(new G722Decoder().decode(b));
  });

  it("carries state across calls: 20 ms chunks (and odd-sized ones) equal one call", () => {
    const pcm = reference();
    const whole = new G722Encoder().encode(pcm);
    for (const chunk of [320, 2, 34, 1000]) {
      const enc = new G722Encoder();
      const parts: number[] = [];
      for (let at = 0; at < pcm.length; at += chunk) parts.push(...enc.encode(pcm.subarray(at, at + chunk)));
      expect(Uint8Array.from(parts)).toEqual(whole);
      const dec = new G722Decoder();
      const samples: number[] = [];
      for (let at = 0; at < whole.length; at += chunk / 2)
        samples.push(...dec.decode(whole.subarray(at, at + chunk / 2)));
      expect(Int16Array.from(samples)).toEqual(new G722Decoder().decode(whole));
    }
  });

  it("reset returns to the initial state", () => {
    const pcm = reference();
    const enc = new G722Encoder();
    const first = enc.encode(pcm);
    enc.encode(generateTone([{ hz: 3000, levelDbfs: -3 }], 1000, { sampleRate: 16000 }));
    enc.reset();
    expect(enc.encode(pcm)).toEqual(first);
    const dec = new G722Decoder();
    const out = dec.decode(first);
    dec.decode(new SeededRandom(3).bytes(500));
    dec.reset();
    expect(dec.decode(first)).toEqual(out);
  });

  it("refuses an odd number of samples (G.722 codes pairs) and outputs too small", () => {
    expect(() => new G722Encoder().encode(new Int16Array(321))).toThrow(RangeError);
    expect(() => new G722Encoder().encode(new Int16Array(320), new Uint8Array(159))).toThrow(RangeError);
    expect(() => new G722Decoder().decode(new Uint8Array(160), new Int16Array(319))).toThrow(RangeError);
  });

  it("fuzz: any octets decode without throwing, every sample within int16, twice the length", () => {
    const random = new SeededRandom(722);
    for (let round = 0; round < 50; round++) {
      const bytes = random.bytes(1 + ((round * 37) % 400));
      const dec = new G722Decoder();
      const out = dec.decode(bytes);
      expect(out).toHaveLength(bytes.length * 2);
      for (const s of out) expect(Number.isInteger(s) && s >= -32768 && s <= 32767).toBe(true);
    }
    // Worst cases for the saturations: every code at its most negative or most positive.
    for (const fill of [0x00, 0x04, 0x20, 0xff, 0xc0, 0x3f]) {
      const out = new G722Decoder().decode(new Uint8Array(2000).fill(fill));
      for (const s of out) expect(s >= -32768 && s <= 32767).toBe(true);
    }
  });

  it("fuzz: full-scale and random PCM encode to one octet per pair", () => {
    const random = new SeededRandom(16);
    const noise = new Int16Array(random.bytes(8000).buffer);
    expect(new G722Encoder().encode(noise)).toHaveLength(2000);
    const square = Int16Array.from({ length: 4000 }, (_, i) => (i % 10 < 5 ? 32767 : -32768));
    const out = roundTrip(square);
    expect(out).toHaveLength(4000);
  });
});
