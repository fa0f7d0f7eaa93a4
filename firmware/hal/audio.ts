/**
 * Audio contract: the handset's microphone and earpiece (or speaker) as the call's media sees
 * them. A call reads one frame from the source and writes one frame to the sink every frame time
 * (20 ms), on the media ticker's schedule (firmware/platform/rtp-socket.ts), so a device adapts
 * its own buffering to that pace: a source returns exactly the samples asked for, padding with
 * silence when the capture ran dry, and a sink never blocks.
 *
 * Samples are 16-bit signed linear PCM, mono, at 8000 Hz: what G.711 carries. A board whose
 * hardware runs at another rate resamples inside its device; the call never sees another rate.
 */

/** Every source and sink runs at this rate. */
export const AUDIO_SAMPLE_RATE = 8000;

/** Audio into the call (the microphone): exactly `samples` samples each tick. */
export interface FrameSource {
  read(samples: number): Int16Array;
}

/**
 * One frame out of the call. The same shape as the media layer's playout frame (hal cannot
 * import media; the two agree structurally). audio: a received frame; concealed: a lost one made
 * up; filler: comfort noise or a DTMF event's slot; idle: nothing to play (silence in `pcm`).
 */
export interface AudioFrame {
  pcm: Int16Array;
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
