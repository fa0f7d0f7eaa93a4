import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { DtmfDigit } from "../../firmware/media/dtmf.ts";
import { PCMA, PCMU } from "../../firmware/media/g711.ts";
import {
  amplitudeToDbfs,
  DTMF_HIGH_HZ,
  DTMF_LOW_HZ,
  DtmfToneDetector,
  dbfsToAmplitude,
  dtmfFrequencies,
  generateTone,
  goertzelAmplitude,
  rmsDbfs,
  TEST_TONE_HZ,
  ToneDetector,
  ToneGenerator,
} from "../../firmware/media/tone.ts";

const FRAME = 160; // 20 ms at 8 kHz
const DTMF_ALL = [...DTMF_LOW_HZ, ...DTMF_HIGH_HZ];
const KEYS = "123A456B789C*0#D".split("") as DtmfDigit[];

describe("tone generator", () => {
  it("makes a sine at the asked level", () => {
    const f = generateTone([{ hz: 1004, levelDbfs: -10 }], 8000);
    expect(rmsDbfs(f)).toBeCloseTo(-10, 1);
    expect(Math.max(...f)).toBeLessThanOrEqual(Math.round(dbfsToAmplitude(-10)));
    expect(Math.max(...f)).toBeGreaterThan(dbfsToAmplitude(-10) * 0.99);
  });

  it("continues its phase across frames", () => {
    const g = new ToneGenerator([
      { hz: 697, levelDbfs: -6 },
      { hz: 1209, levelDbfs: -6 },
    ]);
    const joined = new Int16Array([...g.next(80), ...g.next(80), ...g.next(37)]);
    const whole = generateTone(
      [
        { hz: 697, levelDbfs: -6 },
        { hz: 1209, levelDbfs: -6 },
      ],
      197,
    );
    expect([...joined]).toEqual([...whole]);
  });

  it("clips a sum beyond full scale instead of wrapping", () => {
    const f = generateTone(
      [
        { hz: 500, levelDbfs: 0 },
        { hz: 1500, levelDbfs: 0 },
      ],
      400,
    );
    expect(Math.max(...f)).toBe(32767);
    expect(Math.min(...f)).toBe(-32768);
  });

  it("converts between amplitude and dBFS", () => {
    expect(amplitudeToDbfs(32767)).toBe(0);
    expect(dbfsToAmplitude(-20)).toBeCloseTo(3276.7, 6);
    expect(rmsDbfs(new Int16Array(160))).toBe(Number.NEGATIVE_INFINITY);
    expect(rmsDbfs(new Int16Array())).toBe(Number.NEGATIVE_INFINITY);
  });
});

describe("Goertzel detection", () => {
  it("measures a tone with whole cycles in the frame exactly, single-bin", () => {
    const f = generateTone([{ hz: 1000, levelDbfs: -12 }], FRAME); // 20 cycles in 160 samples
    expect(amplitudeToDbfs(goertzelAmplitude(f, 1000))).toBeCloseTo(-12, 1);
    expect(goertzelAmplitude(new Int16Array(), 1000)).toBe(0);
  });

  it("shows the leakage a per-bin threshold would misread, which the joint solve removes", () => {
    const f = generateTone([{ hz: 697, levelDbfs: -6 }], FRAME);
    // One bin on its own hears 697 Hz at 770 Hz barely 15 dB down: "present" at any usual threshold.
    expect(amplitudeToDbfs(goertzelAmplitude(f, 770))).toBeGreaterThan(-25);
    const levels = new ToneDetector({ frequencies: DTMF_ALL }).levels(f);
    expect(levels.find((l) => l.hz === 697)!.levelDbfs).toBeCloseTo(-6, 1);
    for (const l of levels) if (l.hz !== 697) expect(l.levelDbfs).toBeLessThan(-60);
  });

  it.each([
    ["µ-law", PCMU],
    ["A-law", PCMA],
  ])("finds 1004 Hz after a %s round trip, and reports no absent tone", (_law, codec) => {
    const candidates = [350, 440, 697, TEST_TONE_HZ, 1633, 2100, 2600, 3400];
    const detector = new ToneDetector({ frequencies: candidates, thresholdDbfs: -30 });
    const gen = new ToneGenerator([{ hz: TEST_TONE_HZ, levelDbfs: -10 }]);
    for (let frame = 0; frame < 50; frame++) {
      const heard = codec.decode(codec.encode(gen.next(FRAME)));
      const present = detector.detect(heard);
      expect(present.map((l) => l.hz)).toEqual([TEST_TONE_HZ]);
      expect(present[0]!.levelDbfs).toBeGreaterThan(-10.5);
      expect(present[0]!.levelDbfs).toBeLessThan(-9.5);
      // Codec noise leaves every absent candidate far below the threshold.
      for (const l of detector.levels(heard))
        if (l.hz !== TEST_TONE_HZ) expect(l.levelDbfs).toBeLessThan(-45);
    }
  });

  it("reports nothing in silence, in noise, or for a tone off the candidate list", () => {
    const detector = new ToneDetector({ frequencies: [TEST_TONE_HZ, 2000] });
    expect(detector.detect(new Int16Array(FRAME))).toEqual([]);
    const random = new SeededRandom(7);
    const noise = Int16Array.from({ length: FRAME }, () => Math.round((random.unit() - 0.5) * 2000)); // ≈ −27 dBFS rms
    expect(detector.detect(noise)).toEqual([]);
    expect(detector.detect(generateTone([{ hz: 3000, levelDbfs: -6 }], FRAME))).toEqual([]);
    expect(detector.detect(new Int16Array())).toEqual([]);
  });

  it("respects its threshold", () => {
    const quiet = generateTone([{ hz: TEST_TONE_HZ, levelDbfs: -40 }], FRAME);
    expect(new ToneDetector({ frequencies: [TEST_TONE_HZ] }).detect(quiet)).toEqual([]);
    const found = new ToneDetector({ frequencies: [TEST_TONE_HZ], thresholdDbfs: -45 }).detect(quiet);
    expect(found.map((l) => l.hz)).toEqual([TEST_TONE_HZ]);
    expect(found[0]!.levelDbfs).toBeCloseTo(-40, 0);
  });

  it("works on frames of any length, caching one solve per length", () => {
    const detector = new ToneDetector({ frequencies: [TEST_TONE_HZ, 1500] });
    for (const n of [80, 160, 240, 205, 160]) {
      const f = generateTone([{ hz: 1500, levelDbfs: -20 }], n);
      expect(detector.detect(f).map((l) => l.hz)).toEqual([1500]);
    }
  });

  it("refuses candidates at or beyond the band edges", () => {
    expect(() => new ToneDetector({ frequencies: [0] })).toThrow(RangeError);
    expect(() => new ToneDetector({ frequencies: [4000] })).toThrow(RangeError);
    expect(() => new ToneDetector({ frequencies: [12000], sampleRate: 16000 })).toThrow(RangeError);
  });
});

describe("DTMF tones (ITU-T Q.23)", () => {
  it("names each key's row and column", () => {
    expect(dtmfFrequencies("1")).toEqual([697, 1209]);
    expect(dtmfFrequencies("5")).toEqual([770, 1336]);
    expect(dtmfFrequencies("9")).toEqual([852, 1477]);
    expect(dtmfFrequencies("0")).toEqual([941, 1336]);
    expect(dtmfFrequencies("*")).toEqual([941, 1209]);
    expect(dtmfFrequencies("#")).toEqual([941, 1477]);
    expect(dtmfFrequencies("D")).toEqual([941, 1633]);
  });

  it.each(KEYS)("hears %s in one 20 ms frame as exactly its two frequencies, through µ-law", (digit) => {
    const [low, high] = dtmfFrequencies(digit);
    // A little twist, as real keypads have: the high group 2 dB louder.
    const pcm = generateTone(
      [
        { hz: low, levelDbfs: -12 },
        { hz: high, levelDbfs: -10 },
      ],
      FRAME,
    );
    const heard = PCMU.decode(PCMU.encode(pcm));
    const present = new ToneDetector({ frequencies: DTMF_ALL }).detect(heard);
    expect(present.map((l) => l.hz)).toEqual([low, high]);
    expect(new DtmfToneDetector().detect(heard)).toBe(digit);
  });

  it("hears no key in a single tone, in a chord of two low tones, or in the test tone", () => {
    const d = new DtmfToneDetector();
    expect(d.detect(generateTone([{ hz: 697, levelDbfs: -10 }], FRAME))).toBeUndefined();
    expect(
      d.detect(
        generateTone(
          [
            { hz: 697, levelDbfs: -10 },
            { hz: 770, levelDbfs: -10 },
          ],
          FRAME,
        ),
      ),
    ).toBeUndefined();
    expect(d.detect(generateTone([{ hz: TEST_TONE_HZ, levelDbfs: -10 }], FRAME))).toBeUndefined();
    expect(d.detect(new Int16Array(FRAME))).toBeUndefined();
  });
});
