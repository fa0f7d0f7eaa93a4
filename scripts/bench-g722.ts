/**
 * G.722's CPU cost (measures, never asserts): encode and decode of one second of 16 kHz audio
 * (16000 samples → 8000 octets → 16000 samples) in 20 ms frames, as a call runs it each way. A
 * speech-like signal (two tones, one in each sub-band, plus noise) so that both quantizers and
 * predictors work as they do on a voice. process.cpuUsage() (user + system), median of five runs
 * of 10 s of audio each, reported per second of audio and as a share of one core.
 *
 * `npx tsx scripts/bench-g722.ts` prints the result alone; scripts/bench.ts calls benchG722().
 */
import { G722Decoder, G722Encoder } from "../firmware/media/g722.ts";
import { ToneGenerator } from "../firmware/media/tone.ts";

const FRAME = 320;
const SECONDS = 10;

export interface G722Bench {
  /** CPU ms to encode one second of audio (16000 samples). */
  encode_cpu_ms_per_audio_s: number;
  decode_cpu_ms_per_audio_s: number;
  /** Both, per second: what one call costs the phone (it encodes its side, decodes the peer's). */
  encode_plus_decode_cpu_ms_per_audio_s: number;
  /** The same as a share of one core, percent. */
  core_percent: number;
  runs: number;
}

export async function benchG722(): Promise<G722Bench> {
  const tones = new ToneGenerator(
    [
      { hz: 440, levelDbfs: -14 },
      { hz: 5200, levelDbfs: -26 },
    ],
    { sampleRate: 16000 },
  );
  const frames: Int16Array[] = [];
  let seed = 9;
  for (let i = 0; i < (SECONDS * 16000) / FRAME; i++) {
    const f = tones.next(FRAME);
    for (let j = 0; j < FRAME; j++) {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      f[j] = f[j]! + (((seed >>> 16) - 32768) >> 6);
    }
    frames.push(f);
  }
  const cpu = (f: () => void) => {
    const t = process.cpuUsage();
    f();
    const d = process.cpuUsage(t);
    return (d.user + d.system) / 1000;
  };
  const enc: number[] = [];
  const dec: number[] = [];
  for (let run = 0; run < 6; run++) {
    const e = new G722Encoder();
    const coded: Uint8Array[] = [];
    const te = cpu(() => {
      for (const f of frames) coded.push(e.encode(f));
    });
    const d = new G722Decoder();
    let check = 0;
    const td = cpu(() => {
      for (const c of coded) check += d.decode(c)[0]!;
    });
    if (!Number.isFinite(check)) throw new Error("decoder produced nothing");
    // The first run warms the JIT; it is not counted.
    if (run > 0) {
      enc.push(te / SECONDS);
      dec.push(td / SECONDS);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const round = (x: number) => Math.round(x * 1000) / 1000;
  const both = median(enc.map((x, i) => x + dec[i]!));
  return {
    encode_cpu_ms_per_audio_s: round(median(enc)),
    decode_cpu_ms_per_audio_s: round(median(dec)),
    encode_plus_decode_cpu_ms_per_audio_s: round(both),
    core_percent: round(both / 10),
    runs: enc.length,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  benchG722().then((r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`));
}
