/**
 * The simulated board's audio (hal/audio.ts): a microphone that plays a test signal and a speaker
 * that records what the call plays, so two simulated phones can prove a call carries audio both
 * ways (one phone's microphone at 1 kHz, the other's at 1.4 kHz, each heard at the other end).
 *
 * The microphone makes samples and nothing more: a sine (a phase accumulator is a few lines, and
 * board/ may import only hal and core, not the media layer's tone generator) or given PCM (a WAV
 * file's samples, read by the caller). The speaker keeps counts, the level of the last frame and
 * a bounded recording. Telling *which* tone arrived is not the board's job: the call's media port
 * (firmware/platform/call-media.ts, `detectTones`) taps the sink with the media layer's Goertzel
 * detector, which works the same over this speaker or a real one.
 *
 * Rates (hal/audio.ts): the call asks for 8 kHz or 16 kHz with every read. The tone keeps its
 * frequency at either rate (its phase advances by 2π·hz/rate a sample) and is continuous across a
 * change of rate; a tone above the narrowband limit (a 6 kHz test of G.722's upper band) is
 * silent in a narrowband call, as a real microphone's anti-alias filter would make it. Given PCM
 * has a rate of its own and is read at the asked rate by linear interpolation (a test signal, not
 * hi-fi). The speaker records at the rate of the frames it plays; a change of rate starts the
 * recording afresh, so that a recording is always at one rate (`recordingRate`).
 *
 * No timers and no I/O: the call's media ticker pulls and pushes frames at its own pace.
 */
import {
  type AudioDevice,
  type AudioEndpoint,
  type AudioFrame,
  type AudioSampleRate,
  NARROWBAND_RATE,
  WIDEBAND_RATE,
} from "../../firmware/hal/audio.ts";

/** What the microphone picks up. */
export type SimMicrophone =
  | { kind: "tone"; hz: number /** Default −12 dBFS. */; levelDbfs?: number }
  | {
      kind: "pcm";
      samples: Int16Array /** Play again from the start when done (default true). */;
      loop?: boolean /** The rate of `samples` (default 8000). */;
      rate?: AudioSampleRate;
    }
  | { kind: "silence" };

export interface SimAudioOptions {
  microphone?: SimMicrophone;
  /** How much of the played audio the speaker keeps, newest last (default 2000 ms). */
  recordMs?: number;
}

export interface SimSpeakerState {
  /** Frames written, per kind. */
  frames: Record<AudioFrame["kind"], number>;
  /** RMS level of the last frame written, dBFS (−Infinity for silence, undefined before any). */
  levelDbfs: number | undefined;
  /** The rate of the last frame written (undefined before any). */
  rate: AudioSampleRate | undefined;
}

export interface SimAudioDevice extends AudioDevice {
  /** Endpoints open now (one per call whose media runs). */
  readonly openEndpoints: number;
  /** Changes the signal; endpoints opened afterwards pick it up, open ones at once. */
  setMicrophone(m: SimMicrophone): void;
  speaker(): SimSpeakerState;
  /** The recorded playout, oldest first, at most recordMs of it, at recordingRate. */
  recording(): Int16Array;
  /** The rate of recording() (8000 before anything played). */
  readonly recordingRate: AudioSampleRate;
}

const DEFAULT_LEVEL_DBFS = -12;
const FULL_SCALE = 32767;

function levelOf(pcm: Int16Array): number {
  if (pcm.length === 0) return Number.NEGATIVE_INFINITY;
  let sum = 0;
  for (const s of pcm) sum += s * s;
  const rms = Math.sqrt(sum / pcm.length);
  return rms === 0 ? Number.NEGATIVE_INFINITY : 20 * Math.log10(rms / FULL_SCALE);
}

/** A microphone's sample producer; its state (phase, position) is per endpoint. */
function producer(m: SimMicrophone): (samples: number, rate: AudioSampleRate) => Int16Array {
  switch (m.kind) {
    case "silence":
      return (n) => new Int16Array(n);
    case "tone": {
      if (!(m.hz > 0 && m.hz < WIDEBAND_RATE / 2))
        throw new RangeError(`a ${m.hz} Hz tone does not fit ${WIDEBAND_RATE} Hz sampling`);
      const amplitude = FULL_SCALE * 10 ** ((m.levelDbfs ?? DEFAULT_LEVEL_DBFS) / 20);
      let phase = 0;
      return (n, rate) => {
        const out = new Int16Array(n);
        const step = (2 * Math.PI * m.hz) / rate;
        // Above the rate's Nyquist limit the tone cannot be sampled: the band filter removes it.
        const a = m.hz < rate / 2 ? amplitude : 0;
        for (let i = 0; i < n; i++) {
          out[i] = Math.round(a * Math.sin(phase));
          phase += step;
        }
        // Kept small so that a long call does not lose precision in the sine's argument.
        phase %= 2 * Math.PI;
        return out;
      };
    }
    case "pcm": {
      const { samples } = m;
      const loop = m.loop ?? true;
      const own = m.rate ?? NARROWBAND_RATE;
      // Position in the PCM's own samples; fractional when read at another rate.
      let at = 0;
      return (n, rate) => {
        const out = new Int16Array(n);
        const step = own / rate;
        for (let i = 0; i < n && samples.length > 0; i++) {
          if (at >= samples.length) {
            if (!loop) break;
            at -= samples.length;
          }
          const k = Math.floor(at);
          const next = k + 1 < samples.length ? samples[k + 1]! : loop ? samples[0]! : 0;
          out[i] = Math.round(samples[k]! + (next - samples[k]!) * (at - k));
          at += step;
        }
        return out;
      };
    }
  }
}

export function createSimAudio(o: SimAudioOptions = {}): SimAudioDevice {
  let microphone: SimMicrophone = o.microphone ?? { kind: "silence" };
  producer(microphone); // a bad tone is the caller's mistake: say so now, not on the first call
  const recordMs = o.recordMs ?? 2000;
  let recordingRate: AudioSampleRate = NARROWBAND_RATE;
  let recordSamples = Math.round((recordMs * recordingRate) / 1000);
  const recorded: Int16Array[] = [];
  let recordedSamples = 0;
  const frames: Record<AudioFrame["kind"], number> = { audio: 0, concealed: 0, filler: 0, idle: 0 };
  let levelDbfs: number | undefined;
  let lastRate: AudioSampleRate | undefined;
  const open = new Set<{ retune(m: SimMicrophone): void }>();

  const record = (pcm: Int16Array, rate: AudioSampleRate) => {
    if (rate !== recordingRate) {
      // One recording, one rate: what played before the change is dropped.
      recordingRate = rate;
      recordSamples = Math.round((recordMs * rate) / 1000);
      recorded.length = 0;
      recordedSamples = 0;
    }
    recorded.push(pcm.slice());
    recordedSamples += pcm.length;
    while (recorded.length > 1 && recordedSamples - recorded[0]!.length >= recordSamples)
      recordedSamples -= recorded.shift()!.length;
  };

  return {
    name: "sim-audio",
    get openEndpoints() {
      return open.size;
    },
    setMicrophone(m) {
      producer(m);
      microphone = m;
      for (const e of open) e.retune(m);
    },
    speaker: () => ({ frames: { ...frames }, levelDbfs, rate: lastRate }),
    get recordingRate() {
      return recordingRate;
    },
    recording() {
      const out = new Int16Array(recordedSamples);
      let at = 0;
      for (const f of recorded) {
        out.set(f, at);
        at += f.length;
      }
      return out.subarray(Math.max(0, recordedSamples - recordSamples));
    },
    open(): AudioEndpoint {
      let read = producer(microphone);
      let closed = false;
      const handle = {
        retune(m: SimMicrophone) {
          read = producer(m);
        },
      };
      open.add(handle);
      return {
        source: { read: (samples, rate) => (closed ? new Int16Array(samples) : read(samples, rate)) },
        sink: {
          write(frame) {
            if (closed) return;
            frames[frame.kind]++;
            levelDbfs = levelOf(frame.pcm);
            lastRate = frame.rate;
            if (recordMs > 0) record(frame.pcm, frame.rate);
          },
        },
        close() {
          closed = true;
          open.delete(handle);
        },
      };
    },
  };
}
