import { describe, expect, it } from "vitest";
import {
  ALAW_SILENCE,
  alawToLinear,
  decodeAlaw,
  decodeUlaw,
  encodeAlaw,
  encodeUlaw,
  linearToAlaw,
  linearToUlaw,
  PCMA,
  PCMU,
  ULAW_SILENCE,
  ulawToLinear,
} from "../../firmware/media/g711.ts";
import { amplitudeToDbfs, ToneDetector } from "../../firmware/media/tone.ts";

/** Segment (chord) number of a code word, undoing each law's bit inversion. */
const ulawSegment = (code: number) => ((~code & 0xff) >> 4) & 7;
const alawSegment = (code: number) => ((code ^ 0x55) >> 4) & 7;

describe("G.711 µ-law", () => {
  it("maps the known code words", () => {
    expect(linearToUlaw(0)).toBe(0xff);
    expect(ulawToLinear(0xff)).toBe(0);
    expect(ulawToLinear(0x7f)).toBe(0); // "negative zero"
    expect(linearToUlaw(-1)).toBe(0x7f);
    expect(linearToUlaw(32767)).toBe(0x80);
    expect(linearToUlaw(-32768)).toBe(0x00);
    expect(ulawToLinear(0x80)).toBe(32124);
    expect(ulawToLinear(0x00)).toBe(-32124);
    expect(ULAW_SILENCE).toBe(0xff);
  });

  it("changes segment exactly at the ITU decision values (14-bit 31, 95, 223, … scaled ×4)", () => {
    const starts = [124, 380, 892, 1916, 3964, 8060, 16252];
    starts.forEach((s, i) => {
      expect([s - 1, ulawSegment(linearToUlaw(s - 1))]).toEqual([s - 1, i]);
      expect([s, ulawSegment(linearToUlaw(s))]).toEqual([s, i + 1]);
      expect(ulawSegment(linearToUlaw(-s))).toBe(i + 1);
    });
    // Each segment's first and last reconstruction values.
    expect(ulawToLinear(0xef)).toBe(132); // segment 1, step 0
    expect(ulawToLinear(0xf0)).toBe(120); // segment 0, step 15
    expect(ulawToLinear(0x8f)).toBe(16764); // segment 7, step 0
  });

  it("clips at 32635, the top of the last segment", () => {
    expect(linearToUlaw(32635)).toBe(0x80);
    expect(linearToUlaw(32636)).toBe(0x80);
    // The last step of segment 7 is 1024 wide: x + 132 in [31744, 32767].
    expect(linearToUlaw(31612)).toBe(0x80);
    expect(linearToUlaw(31611)).toBe(0x81);
  });

  it("is symmetric: −x has x's code with the sign bit cleared", () => {
    for (let x = 1; x <= 32767; x++)
      if (linearToUlaw(-x) !== (linearToUlaw(x) & 0x7f)) throw new Error(`x=${x}`);
  });

  it("round-trips every 16-bit input within half a step of its segment", () => {
    for (let x = -32768; x <= 32767; x++) {
      const y = ulawToLinear(linearToUlaw(x));
      const m = Math.abs(x);
      // Step of segment s is 8 << s; its half is (m + 132) / 32 at most. Beyond the clip, ±32124.
      const bound = m > 32635 ? m - 32124 : Math.max(4, (m + 132) / 32);
      if (Math.abs(y - x) > bound) throw new Error(`x=${x} → ${y}, bound ${bound}`);
    }
  });

  it("decodes to a strictly ordered set, and every code but negative zero survives decode→encode", () => {
    for (let c = 0; c < 256; c++) {
      if (c === 0x7f) expect(linearToUlaw(ulawToLinear(c))).toBe(0xff);
      else expect(linearToUlaw(ulawToLinear(c))).toBe(c);
    }
    const values = Array.from({ length: 256 }, (_, c) => ulawToLinear(c));
    expect(new Set(values).size).toBe(255); // 0x7f and 0xff both 0
  });
});

describe("G.711 A-law", () => {
  it("maps the known code words", () => {
    expect(linearToAlaw(0)).toBe(0xd5);
    expect(alawToLinear(0xd5)).toBe(8); // the smallest positive value: A-law has no zero
    expect(alawToLinear(0x55)).toBe(-8);
    expect(linearToAlaw(-1)).toBe(0x55);
    expect(linearToAlaw(32767)).toBe(0xaa);
    expect(linearToAlaw(-32768)).toBe(0x2a);
    expect(alawToLinear(0xaa)).toBe(32256);
    expect(alawToLinear(0x2a)).toBe(-32256);
    expect(ALAW_SILENCE).toBe(0xd5);
  });

  it("changes segment exactly at the ITU decision values (13-bit 32, 64, 128, … scaled ×8)", () => {
    const starts = [256, 512, 1024, 2048, 4096, 8192, 16384];
    starts.forEach((s, i) => {
      expect([s - 1, alawSegment(linearToAlaw(s - 1))]).toEqual([s - 1, i]);
      expect([s, alawSegment(linearToAlaw(s))]).toEqual([s, i + 1]);
      expect(alawSegment(linearToAlaw(-s - 1))).toBe(i + 1);
    });
    // Segments 0 and 1 share the finest step (16 on this scale): 248 and 264 are neighbours.
    expect(alawToLinear(linearToAlaw(250))).toBe(248);
    expect(alawToLinear(linearToAlaw(260))).toBe(264);
  });

  it("mirrors by one's complement: ~x has x's code with the sign bit flipped", () => {
    for (let x = 0; x <= 32767; x++)
      if (linearToAlaw(~x) !== (linearToAlaw(x) ^ 0x80)) throw new Error(`x=${x}`);
  });

  it("round-trips every 16-bit input within half a step of its segment", () => {
    for (let x = -32768; x <= 32767; x++) {
      const y = alawToLinear(linearToAlaw(x));
      const m = x < 0 ? ~x : x; // the magnitude the law quantises
      const bound = Math.max(8, m / 32) + (x < 0 ? 1 : 0);
      if (Math.abs(y - x) > bound) throw new Error(`x=${x} → ${y}, bound ${bound}`);
    }
  });

  it("every code survives decode→encode", () => {
    for (let c = 0; c < 256; c++) expect(linearToAlaw(alawToLinear(c))).toBe(c);
  });
});

describe("G.711 frames", () => {
  it("encodes and decodes arrays, optionally into the caller's buffers", () => {
    const pcm = Int16Array.of(0, 1000, -1000, 32767, -32768);
    expect([...encodeUlaw(pcm)]).toEqual([...pcm].map(linearToUlaw));
    expect([...encodeAlaw(pcm)]).toEqual([...pcm].map(linearToAlaw));
    const out = new Int16Array(8);
    expect(decodeUlaw(encodeUlaw(pcm), out)).toBe(out);
    // 1000 lies in µ-law segment 3, step 1 (956…1019), reconstructed at its middle, 988.
    expect([...out.subarray(0, 5)]).toEqual([0, 988, -988, 32124, -32124]);
    expect([...decodeAlaw(encodeAlaw(pcm))]).toEqual([8, 1008, -1008, 32256, -32256]);
    expect(() => encodeUlaw(pcm, new Uint8Array(2))).toThrow(RangeError);
    expect(() => decodeAlaw(new Uint8Array(3), new Int16Array(2))).toThrow(RangeError);
  });

  it("saturates out-of-range scalars instead of wrapping them", () => {
    expect(linearToUlaw(40000)).toBe(linearToUlaw(32767));
    expect(linearToAlaw(-1e9)).toBe(linearToAlaw(-32768));
    expect(linearToUlaw(Number.NaN)).toBe(0xff);
    expect(linearToAlaw(12.6)).toBe(linearToAlaw(13));
  });

  it("names the RTP/AVP static payload types", () => {
    expect([PCMU.payloadType, PCMA.payloadType]).toEqual([0, 8]);
    expect([PCMU.silence, PCMA.silence]).toEqual([0xff, 0xd5]);
  });

  // The digital milliwatt (G.711 Tables 5 and 6): eight code words that repeat into a 1 kHz
  // sine at 0 dBm0, i.e. 3.17 dB (µ) / 3.14 dB (A) below the law's full-scale sine.
  it.each([
    ["µ-law", PCMU, [0x1e, 0x0b, 0x0b, 0x1e, 0x9e, 0x8b, 0x8b, 0x9e], -3.17],
    ["A-law", PCMA, [0x34, 0x21, 0x21, 0x34, 0xb4, 0xa1, 0xa1, 0xb4], -3.14],
  ])("decodes the %s digital milliwatt as 1 kHz at 0 dBm0", (_law, codec, cycle, expectedDbfs) => {
    const codes = Uint8Array.from({ length: 160 }, (_, i) => cycle[i % 8]!);
    const pcm = codec.decode(codes);
    const [level] = new ToneDetector({ frequencies: [1000] }).levels(pcm);
    expect(level!.levelDbfs).toBeGreaterThan(expectedDbfs - 0.3);
    expect(level!.levelDbfs).toBeLessThan(expectedDbfs + 0.3);
    expect(amplitudeToDbfs(Math.max(...pcm))).toBeLessThan(0);
  });
});
