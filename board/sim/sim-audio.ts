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
 * No timers and no I/O: the call's media ticker pulls and pushes frames at its own pace.
 */
import {
  AUDIO_SAMPLE_RATE,
  type AudioDevice,
  type AudioEndpoint,
  type AudioFrame,
} from "../../firmware/hal/audio.ts";

/** What the microphone picks up. */
export type SimMicrophone =
  | { kind: "tone"; hz: number /** Default −12 dBFS. */; levelDbfs?: number }
  | {
      kind: "pcm";
      samples: Int16Array /** Play again from the start when done (default true). */;
      loop?: boolean;
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
}

export interface SimAudioDevice extends AudioDevice {
  /** Endpoints open now (one per call whose media runs). */
  readonly openEndpoints: number;
  /** Changes the signal; endpoints opened afterwards pick it up, open ones at once. */
  setMicrophone(m: SimMicrophone): void;
  speaker(): SimSpeakerState;
  /** The recorded playout, oldest first, at most recordMs of it. */
  recording(): Int16Array;
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
function producer(m: SimMicrophone): (samples: number) => Int16Array {
  switch (m.kind) {
    case "silence":
      return (n) => new Int16Array(n);
    case "tone": {
      if (!(m.hz > 0 && m.hz < AUDIO_SAMPLE_RATE / 2))
        throw new RangeError(`a ${m.hz} Hz tone does not fit ${AUDIO_SAMPLE_RATE} Hz sampling`);
      const amplitude = FULL_SCALE * 10 ** ((m.levelDbfs ?? DEFAULT_LEVEL_DBFS) / 20);
      const step = (2 * Math.PI * m.hz) / AUDIO_SAMPLE_RATE;
      let phase = 0;
      return (n) => {
        const out = new Int16Array(n);
        for (let i = 0; i < n; i++) {
          out[i] = Math.round(amplitude * Math.sin(phase));
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
      let at = 0;
      return (n) => {
        const out = new Int16Array(n);
        for (let i = 0; i < n && samples.length > 0; i++) {
          if (at >= samples.length) {
            if (!loop) break;
            at = 0;
          }
          out[i] = samples[at++]!;
        }
        return out;
      };
    }
  }
}

export function createSimAudio(o: SimAudioOptions = {}): SimAudioDevice {
  let microphone: SimMicrophone = o.microphone ?? { kind: "silence" };
  producer(microphone); // a bad tone is the caller's mistake: say so now, not on the first call
  const recordSamples = Math.round(((o.recordMs ?? 2000) * AUDIO_SAMPLE_RATE) / 1000);
  const recorded: Int16Array[] = [];
  let recordedSamples = 0;
  const frames: Record<AudioFrame["kind"], number> = { audio: 0, concealed: 0, filler: 0, idle: 0 };
  let levelDbfs: number | undefined;
  const open = new Set<{ retune(m: SimMicrophone): void }>();

  const record = (pcm: Int16Array) => {
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
    speaker: () => ({ frames: { ...frames }, levelDbfs }),
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
        source: { read: (samples) => (closed ? new Int16Array(samples) : read(samples)) },
        sink: {
          write(frame) {
            if (closed) return;
            frames[frame.kind]++;
            levelDbfs = levelOf(frame.pcm);
            if (recordSamples > 0) record(frame.pcm);
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
