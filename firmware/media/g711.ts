/**
 * G.711 (ITU-T G.711) µ-law and A-law, between 16-bit linear PCM and 8-bit code words.
 *
 * Both laws are piecewise-linear approximations of a logarithm: 8 segments (chords), each
 * twice as wide as the one before, 16 steps per segment. A code word is sign, 3-bit segment,
 * 4-bit step; µ-law then inverts all bits, A-law inverts the even bits (XOR 0x55), so that a
 * quiet line does not send long runs of zeros (which old T1/E1 clock recovery needed).
 *
 * The standard's uniform scales are 14 bits (µ-law) and 13 bits (A-law); here they are scaled to
 * 16 bits, which leaves the segment edges at 4× (µ) and 8× (A) the standard's values:
 *   µ-law segment starts (magnitude): 0, 124, 380, 892, 1916, 3964, 8060, 16252; clip at 32635.
 *   A-law segment starts (magnitude): 0, 256, 512, 1024, 2048, 4096, 8192, 16384.
 * Each decoded value is the middle of its step, so the round-trip error is at most half a step.
 *
 * µ-law is symmetric in magnitude (x and −x share a code but for the sign). A-law's decision
 * levels sit half a step off zero, so its mirror is the one's complement: x and −x−1 share a
 * code but for the sign, and there is no code for 0 (0 decodes as +8, 0xD5).
 *
 * The encoder is a 64 Ki-entry table per law, computed once at module load from the segment
 * rules below: a call encodes 8000 samples a second each way, and a lookup is the cheapest thing
 * a Pi can do per sample. The decoder is a 256-entry table.
 */

/** RTP/AVP static payload types (RFC 3551 §6). */
export const PCMU_PAYLOAD_TYPE = 0;
export const PCMA_PAYLOAD_TYPE = 8;
export const G711_SAMPLE_RATE = 8000;

/** The code word for silence: µ-law 0xFF (→ 0), A-law 0xD5 (→ +8, the smallest magnitude). */
export const ULAW_SILENCE = 0xff;
export const ALAW_SILENCE = 0xd5;

const ULAW_BIAS = 0x84; // 132 = 33 << 2: the 14-bit law's bias of 33, on the 16-bit scale
const ULAW_CLIP = 32635; // the top of segment 7: (32 << 10) − 1 − 132

function ulawFromLinear(x: number): number {
  const negative = x < 0;
  let m = negative ? -x : x;
  if (m > ULAW_CLIP) m = ULAW_CLIP;
  m += ULAW_BIAS;
  // The segment is the position of the highest set bit above bit 7 (bias makes it at least bit 7).
  let segment = 7;
  for (let bit = 0x4000; (m & bit) === 0 && segment > 0; bit >>= 1) segment--;
  const step = (m >> (segment + 3)) & 0x0f;
  return ~((negative ? 0x80 : 0) | (segment << 4) | step) & 0xff;
}

function linearFromUlaw(code: number): number {
  const u = ~code & 0xff;
  const segment = (u & 0x70) >> 4;
  const t = (((u & 0x0f) << 3) + ULAW_BIAS) << segment;
  return u & 0x80 ? ULAW_BIAS - t : t - ULAW_BIAS;
}

function alawFromLinear(x: number): number {
  // Positive values carry the sign bit (0x80) before the even-bit inversion, hence 0xD5 = 0x80 ^ 0x55.
  const mask = x >= 0 ? 0xd5 : 0x55;
  const v = (x >= 0 ? x : ~x) >> 3; // 13-bit magnitude, 0..4095
  let segment = 0;
  while (segment < 7 && v >= 32 << segment) segment++;
  // Segments 0 and 1 share the finest step (2 on the 13-bit scale); above, the step doubles.
  const step = (segment < 2 ? v >> 1 : v >> segment) & 0x0f;
  return ((segment << 4) | step) ^ mask;
}

function linearFromAlaw(code: number): number {
  const a = code ^ 0x55;
  const segment = (a & 0x70) >> 4;
  let t = (a & 0x0f) << 4;
  if (segment === 0) t += 8;
  else t = (t + 0x108) << (segment - 1);
  return a & 0x80 ? t : -t;
}

function buildEncoder(f: (x: number) => number): Uint8Array {
  const table = new Uint8Array(65536);
  // Indexed by the sample's 16-bit two's-complement pattern, so Int16Array values index directly.
  for (let i = 0; i < 65536; i++) table[i] = f(i >= 32768 ? i - 65536 : i);
  return table;
}

function buildDecoder(f: (code: number) => number): Int16Array {
  const table = new Int16Array(256);
  for (let i = 0; i < 256; i++) table[i] = f(i);
  return table;
}

const ULAW_ENCODE = buildEncoder(ulawFromLinear);
const ALAW_ENCODE = buildEncoder(alawFromLinear);
const ULAW_DECODE = buildDecoder(linearFromUlaw);
const ALAW_DECODE = buildDecoder(linearFromAlaw);

/** A number as a 16-bit sample: rounded and clamped, so out-of-range input saturates, never wraps. */
function toSample(x: number): number {
  if (Number.isNaN(x)) return 0;
  if (x <= -32768) return -32768;
  if (x >= 32767) return 32767;
  return Math.round(x);
}

export function linearToUlaw(sample: number): number {
  return ULAW_ENCODE[toSample(sample) & 0xffff]!;
}

export function ulawToLinear(code: number): number {
  return ULAW_DECODE[code & 0xff]!;
}

export function linearToAlaw(sample: number): number {
  return ALAW_ENCODE[toSample(sample) & 0xffff]!;
}

export function alawToLinear(code: number): number {
  return ALAW_DECODE[code & 0xff]!;
}

function encodeWith(table: Uint8Array, pcm: Int16Array, out: Uint8Array): Uint8Array {
  if (out.length < pcm.length) throw new RangeError(`output holds ${out.length} codes, need ${pcm.length}`);
  for (let i = 0; i < pcm.length; i++) out[i] = table[pcm[i]! & 0xffff]!;
  return out;
}

function decodeWith(table: Int16Array, codes: Uint8Array, out: Int16Array): Int16Array {
  if (out.length < codes.length)
    throw new RangeError(`output holds ${out.length} samples, need ${codes.length}`);
  for (let i = 0; i < codes.length; i++) out[i] = table[codes[i]!]!;
  return out;
}

/** PCM → µ-law; `out` (at least as long as pcm) lets a caller reuse one buffer per frame. */
export function encodeUlaw(pcm: Int16Array, out: Uint8Array = new Uint8Array(pcm.length)): Uint8Array {
  return encodeWith(ULAW_ENCODE, pcm, out);
}

export function decodeUlaw(codes: Uint8Array, out: Int16Array = new Int16Array(codes.length)): Int16Array {
  return decodeWith(ULAW_DECODE, codes, out);
}

export function encodeAlaw(pcm: Int16Array, out: Uint8Array = new Uint8Array(pcm.length)): Uint8Array {
  return encodeWith(ALAW_ENCODE, pcm, out);
}

export function decodeAlaw(codes: Uint8Array, out: Int16Array = new Int16Array(codes.length)): Int16Array {
  return decodeWith(ALAW_DECODE, codes, out);
}

export type G711Law = "ulaw" | "alaw";

/** The two laws behind one shape, for code that picks by the negotiated payload type. */
export interface G711Codec {
  readonly law: G711Law;
  readonly payloadType: number;
  readonly silence: number;
  encode(pcm: Int16Array, out?: Uint8Array): Uint8Array;
  decode(codes: Uint8Array, out?: Int16Array): Int16Array;
}

export const PCMU: G711Codec = {
  law: "ulaw",
  payloadType: PCMU_PAYLOAD_TYPE,
  silence: ULAW_SILENCE,
  encode: encodeUlaw,
  decode: decodeUlaw,
};

export const PCMA: G711Codec = {
  law: "alaw",
  payloadType: PCMA_PAYLOAD_TYPE,
  silence: ALAW_SILENCE,
  encode: encodeAlaw,
  decode: decodeAlaw,
};
