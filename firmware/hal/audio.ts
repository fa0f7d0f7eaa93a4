/**
 * Audio contract: the handset's microphone and earpiece (or speaker) as the call's media sees
 * them. A call reads one frame from the source and writes one frame to the sink every frame time
 * (20 ms), on the media ticker's schedule (firmware/platform/rtp-socket.ts), so a device adapts
 * its own buffering to that pace: a source returns exactly the samples asked for, padding with
 * silence when the capture ran dry, and a sink never blocks.
 *
 * Samples are 16-bit signed linear PCM, mono, at the rate of the call's codec: 8000 Hz for G.711
 * (narrowband), 16000 Hz for G.722 (wideband). The call names the rate with every read and every
 * frame, because it can change mid-call (a re-INVITE from G.722 to G.711) and because only the
 * device knows how to get the best signal at either rate: a codec chip that runs at 16 kHz
 * decimates for a narrowband call, one that runs at 8 kHz cannot do wideband and upsamples. A
 * board whose hardware runs at another rate resamples inside its device; the call never does it
 * for the device (resampling twice, once each side, would only cost quality).
 */

/** The rates a call asks for: 8000 (G.711) or 16000 (G.722). */
export type AudioSampleRate = 8000 | 16000;
export const NARROWBAND_RATE: AudioSampleRate = 8000;
export const WIDEBAND_RATE: AudioSampleRate = 16000;
/** Every rate a source must serve and a sink must play. */
export const AUDIO_SAMPLE_RATES: readonly AudioSampleRate[] = [NARROWBAND_RATE, WIDEBAND_RATE];

/** Audio into the call (the microphone): exactly `samples` samples at `rate` each tick. */
export interface FrameSource {
  read(samples: number, rate: AudioSampleRate): Int16Array;
}

/**
 * One frame out of the call. The same shape as the media layer's playout frame (hal cannot
 * import media; the two agree structurally). audio: a received frame; concealed: a lost one made
 * up; filler: comfort noise or a DTMF event's slot; idle: nothing to play (silence in `pcm`).
 */
export interface AudioFrame {
  pcm: Int16Array;
  /** The rate of `pcm`; the same for every frame of a call unless its codec changes. */
  rate: AudioSampleRate;
  kind: "audio" | "concealed" | "filler" | "idle";
}

/** Audio out of the call (the earpiece), one frame each tick. */
export interface FrameSink {
  write(frame: AudioFrame): void;
}

/** One call's use of the audio hardware: opened when its media starts, closed when it ends. */
export interface AudioEndpoint {
  source: FrameSource;
  sink: FrameSink;
  /** Releases the hardware; the endpoint is not used afterwards. */
  close(): void;
}

/**
 * The board's audio hardware. open() is called once per call whose media starts; a device that
 * can serve only one call at a time (one ALSA PCM) hands the second caller silence rather than
 * throw, since a call on hold still needs an endpoint.
 */
export interface AudioDevice {
  readonly name: string;
  open(): AudioEndpoint;
}
