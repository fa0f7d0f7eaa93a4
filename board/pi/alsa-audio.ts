/**
 * The Pi's audio (hal/audio.ts) through ALSA's own command-line tools, arecord and aplay
 * (alsa-utils, shipped with Raspberry Pi OS): no native addon to build, and the same two programs
 * a user runs to check the handset (`arecord -L`, `arecord -D … | aplay -D …`).
 *
 * What the board needs (see also board/pi/profiles/handset-v1.json, "audio"):
 * - `sudo apt install alsa-utils` (Raspberry Pi OS Lite may lack it);
 * - a sound card with a microphone and an earpiece: a USB handset or USB sound card
 *   (CARD=Device for the common C-Media adapters), or an I²S codec HAT (WM8960, …) with its
 *   dtoverlay in /boot/firmware/config.txt;
 * - the PCM names from `arecord -L` / `aplay -L` in the profile's audio.capture / audio.playback,
 *   preferably `plughw:CARD=<name>,DEV=0`: the card's own clock, with ALSA's plug layer
 *   converting format and rate if the card cannot do 16 kHz mono S16_LE itself (`hw:` would
 *   refuse; `default` may go through dmix/PulseAudio and add latency);
 * - the phone's user in the `audio` group.
 *
 * One open() is one call's use of the card. It spawns, per direction, one child:
 *
 *   arecord -q -D <capture>  -t raw -f S16_LE -c 1 -r <rateHz> --buffer-time=<µs> --period-time=20000
 *   aplay   -q -D <playback> -t raw -f S16_LE -c 1 -r <rateHz> --buffer-time=<µs> --period-time=20000
 *
 * (alsa-utils aplay(1): -D PCM name, -t raw, -f sample format, -c channels, -r rate,
 * --buffer-time / --period-time in microseconds; no file name means stdout / stdin.) The card runs
 * at one rate, the profile's rateHz (16000 by default, so G.722 is wideband end to end); a call at
 * the other rate is resampled here (hal/audio.ts: the device resamples, never the call) by a
 * windowed-sinc low-pass and 2:1 decimation or 1:2 interpolation.
 *
 * Between each child and the 20 ms media ticker sits a ring (SampleRing) bounded to latencyMs:
 * - it starts (and restarts after running dry) only once it holds half of latencyMs, so the
 *   ticker's and the card's 20 ms periods can slide past each other without a gap;
 * - underrun (the ticker wants more than is there): what is there plus silence, counted;
 * - overrun (more than latencyMs queued): the oldest samples are dropped, counted;
 * - drift (the card's crystal against the Pi's clock, ~50–100 ppm, 3–6 ms a minute): the ring
 *   learns its resting fill over the first half second (where it rests depends on how the two
 *   20 ms periods interleave), and a smoothed fill that strays more than SLIP_MS from it drops or
 *   repeats one sample per frame until it is back, counted as slips. Inaudible, and latency stays
 *   bounded for hours.
 * Playback is paced by the capture: every sample arecord delivers lets one sample go to aplay,
 * so aplay is fed at the card's rate (capture and playback of one card share its clock) and the
 * drift lands in the playback ring, where the slips handle it. While arecord is down, a 20 ms
 * timer on the monotonic clock paces aplay instead.
 *
 * A desk phone never gives up, and the media ticker must never see an exception: a child that
 * exits or cannot be spawned is restarted after backoffDelay() (core/backoff.ts; the count resets
 * once a child has run for STABLE_MS), and meanwhile the source reads silence and the sink's audio
 * is dropped. read() and write() catch everything and fall back to silence.
 *
 * The card serves one call: a second open() while one endpoint holds it gets a silent endpoint
 * (a call on hold still needs one). close() kills both children (SIGTERM, SIGKILL after
 * KILL_AFTER_MS); `closed` settles once both have exited, and the next open() waits for that so
 * the PCM is free when its arecord starts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { type BackoffOptions, backoffDelay } from "../../firmware/core/backoff.ts";
import type { Clock, TimerHandle } from "../../firmware/core/clock.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import { type Random, SeededRandom } from "../../firmware/core/random.ts";
import type {
  AudioDevice,
  AudioEndpoint,
  AudioFrame,
  AudioSampleRate,
  FrameSink,
  FrameSource,
} from "../../firmware/hal/audio.ts";

/** The profile's audio section (board/pi/profile.ts validates it). */
export interface AlsaAudioProfile {
  /** ALSA PCM to record from, as `arecord -L` names it, e.g. "plughw:CARD=Device,DEV=0". */
  capture: string;
  /** ALSA PCM to play to, as `aplay -L` names it. */
  playback: string;
  /** The one rate the card runs at; calls at the other rate are resampled. */
  rateHz: AudioSampleRate;
  /** ALSA's buffer per direction and the bound of each ring (ms). */
  latencyMs: number;
  /** The tools (PATH lookup by default); tests point them at stand-ins. */
  arecordPath: string;
  aplayPath: string;
}

/** ALSA's period and the media frame: one wake-up of arecord per frame the ticker reads. */
export const ALSA_PERIOD_MS = 20;
export const DEFAULT_AUDIO_RATE: AudioSampleRate = 16000;
export const DEFAULT_AUDIO_LATENCY_MS = 60;
/** The least latencyMs: two periods, so that a primed ring (half of it) holds a whole frame. */
export const MIN_AUDIO_LATENCY_MS = 2 * ALSA_PERIOD_MS;
export const MAX_AUDIO_LATENCY_MS = 500;
/** How far the smoothed fill may stray from its resting fill before a sample is dropped or repeated. */
const SLIP_MS = 5;
/** Smoothing of the fill: about one second of 20 ms frames. */
const FILL_SMOOTHING = 1 / 50;
/** Frames over which a ring learns its resting fill (0.5 s). */
const SETTLE_PULLS = 25;
/** A child that ran this long before exiting restarts after the shortest backoff again. */
const STABLE_MS = 5000;
const KILL_AFTER_MS = 1000;
export const DEFAULT_RESTART_BACKOFF: BackoffOptions = { baseMs: 500, capMs: 10_000 };

function commonArgs(device: string, p: AlsaAudioProfile): string[] {
  return [
    "-q",
    "-D",
    device,
    "-t",
    "raw",
    "-f",
    "S16_LE",
    "-c",
    "1",
    "-r",
    String(p.rateHz),
    `--buffer-time=${p.latencyMs * 1000}`,
    `--period-time=${ALSA_PERIOD_MS * 1000}`,
  ];
}

/** arecord's argv (after the program name): raw S16_LE mono on stdout at the card's rate. */
export function arecordArgs(p: AlsaAudioProfile): string[] {
  return commonArgs(p.capture, p);
}

/** aplay's argv: raw S16_LE mono from stdin. */
export function aplayArgs(p: AlsaAudioProfile): string[] {
  return commonArgs(p.playback, p);
}

export interface RingStats {
  /** Times the consumer found the ring dry while it was playing (silence filled the gap). */
  underruns: number;
  /** Times the producer overfilled it (the oldest samples were dropped). */
  overruns: number;
  /** Samples dropped by overruns. */
  droppedSamples: number;
  /** Drift corrections: one sample dropped (fill too high) or repeated (too low). */
  slipsDropped: number;
  slipsInserted: number;
  /** Samples queued now. */
  fill: number;
}

/**
 * A bounded queue of samples between a producer and a consumer that run on different clocks
 * (see the header: priming, underrun, overrun, slips). `pull` always returns exactly n samples.
 */
export class SampleRing {
  private readonly buf: Int16Array;
  private head = 0;
  private size = 0;
  private playing = false;
  private smoothed: number | undefined;
  /** The fill this run settled at; drift is a departure from it. */
  private reference: number | undefined;
  private settled = 0;
  private settleSum = 0;
  private readonly slack: number;
  readonly stats: Omit<RingStats, "fill"> = {
    underruns: 0,
    overruns: 0,
    droppedSamples: 0,
    slipsDropped: 0,
    slipsInserted: 0,
  };

  constructor(
    readonly capacity: number,
    /** The fill at which it starts (again) to give samples. */
    readonly prime: number,
    slack: number,
  ) {
    this.buf = new Int16Array(capacity);
    this.slack = slack;
  }

  get fill(): number {
    return this.size;
  }

  push(x: Int16Array): void {
    const cap = this.capacity;
    let src = x;
    let dropped = 0;
    if (src.length > cap) {
      dropped += src.length - cap;
      src = src.subarray(src.length - cap);
    }
    const over = this.size + src.length - cap;
    if (over > 0) {
      // The oldest go: the newest audio is the one the far end will hear soonest.
      this.head = (this.head + over) % cap;
      this.size -= over;
      dropped += over;
    }
    if (dropped > 0) {
      this.stats.overruns++;
      this.stats.droppedSamples += dropped;
    }
    const at = (this.head + this.size) % cap;
    const first = Math.min(src.length, cap - at);
    this.buf.set(src.subarray(0, first), at);
    this.buf.set(src.subarray(first), 0);
    this.size += src.length;
    if (!this.playing && this.size >= this.prime) {
      this.playing = true;
      this.smoothed = undefined;
      this.reference = undefined;
      this.settled = 0;
      this.settleSum = 0;
    }
  }

  pull(n: number): Int16Array {
    const out = new Int16Array(n);
    if (!this.playing || n <= 0) return out;
    let take = n;
    if (this.reference === undefined) {
      // Where the fill sits depends on how the two periods happen to interleave, not on drift:
      // learn it over the first frames, then hold it there.
      this.settleSum += this.size;
      if (++this.settled >= SETTLE_PULLS) {
        // Not so near the top that every burst overruns.
        this.reference = Math.min(this.settleSum / this.settled, this.capacity - 2 * this.slack);
        this.smoothed = this.reference;
      }
    } else {
      const s = this.smoothed! + (this.size - this.smoothed!) * FILL_SMOOTHING;
      this.smoothed = s;
      if (s > this.reference + this.slack && this.size > n) take = n + 1;
      else if (s < this.reference - this.slack && n > 1) take = n - 1;
    }
    if (this.size < take) {
      // Dry: play what is left, then wait until the ring is primed again.
      this.read(out, this.size);
      this.stats.underruns++;
      this.playing = false;
      return out;
    }
    if (take === n + 1) {
      const tmp = new Int16Array(take);
      this.read(tmp, take);
      out.set(tmp.subarray(0, n)); // the last sample of the frame goes
      this.stats.slipsDropped++;
      this.smoothed! -= 1;
    } else if (take === n - 1) {
      this.read(out, take);
      out[n - 1] = out[n - 2]!; // the last sample is said twice
      this.stats.slipsInserted++;
      this.smoothed! += 1;
    } else this.read(out, n);
    return out;
  }

  /** Empties the ring (a restarted child: what was queued belongs to the old stream). */
  reset(): void {
    this.head = 0;
    this.size = 0;
    this.playing = false;
    this.smoothed = undefined;
  }

  private read(into: Int16Array, n: number): void {
    const first = Math.min(n, this.capacity - this.head);
    into.set(this.buf.subarray(this.head, this.head + first), 0);
    into.set(this.buf.subarray(0, n - first), first);
    this.head = (this.head + n) % this.capacity;
    this.size -= n;
  }
}

/**
 * The low-pass for 16 kHz ⇄ 8 kHz: a 63-tap Blackman-windowed sinc at 16 kHz, cut-off 3.7 kHz
 * (flat to ~3 kHz, below −70 dB from ~4.5 kHz), unity gain at DC. 63 multiply-adds per sample
 * at 8 kHz: nothing for a Pi.
 */
const TAPS = 63;
const LOW_PASS: Float64Array = (() => {
  const h = new Float64Array(TAPS);
  const fc = 3700 / 16000;
  const mid = (TAPS - 1) / 2;
  let sum = 0;
  for (let i = 0; i < TAPS; i++) {
    const t = i - mid;
    const sinc = t === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * t) / (Math.PI * t);
    const w =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (TAPS - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (TAPS - 1));
    h[i] = sinc * w;
    sum += h[i]!;
  }
  for (let i = 0; i < TAPS; i++) h[i]! /= sum;
  return h;
})();

function clamp16(v: number): number {
  const r = Math.round(v);
  return Math.min(32767, Math.max(-32768, r));
}

/** The low-pass at 16 kHz with the history that makes consecutive frames one stream. */
class LowPass {
  private hist = new Float64Array(TAPS - 1);

  /** Filters x (16 kHz), returning every `step`-th output scaled by gain. */
  run(x: Float64Array, step: 1 | 2, gain: number): Int16Array {
    const w = new Float64Array(this.hist.length + x.length);
    w.set(this.hist);
    w.set(x, this.hist.length);
    const out = new Int16Array(Math.floor(x.length / step));
    for (let o = 0; o < out.length; o++) {
      const end = o * step + TAPS - 1; // newest input of this output
      let acc = 0;
      for (let k = 0; k < TAPS; k++) acc += LOW_PASS[k]! * w[end - k]!;
      out[o] = clamp16(acc * gain);
    }
    this.hist = w.slice(w.length - (TAPS - 1));
    return out;
  }
}

/** 16 kHz → 8 kHz: low-pass, keep every other sample. */
export class Decimator {
  private readonly lp = new LowPass();
  process(x: Int16Array): Int16Array {
    return this.lp.run(Float64Array.from(x), 2, 1);
  }
}

/** 8 kHz → 16 kHz: a zero between samples, low-pass (gain 2 makes up for the zeros). */
export class Interpolator {
  private readonly lp = new LowPass();
  process(x: Int16Array): Int16Array {
    const u = new Float64Array(x.length * 2);
    for (let i = 0; i < x.length; i++) u[2 * i] = x[i]!;
    return this.lp.run(u, 1, 2);
  }
}

/** Converts a stream between the call's rate and the card's, keeping filter state per direction. */
class RateBridge {
  private rate: AudioSampleRate | undefined;
  private down = new Decimator();
  private up = new Interpolator();

  constructor(private readonly deviceRate: AudioSampleRate) {}

  /** Samples at `from` → samples at `to`; one of the two is the device rate. */
  convert(x: Int16Array, from: AudioSampleRate, to: AudioSampleRate): Int16Array {
    const callRate = from === this.deviceRate ? to : from;
    if (callRate !== this.rate) {
      // A codec change mid-call: old filter history would smear the previous rate into the new.
      this.rate = callRate;
      this.down = new Decimator();
      this.up = new Interpolator();
    }
    if (from === to) return x;
    return from > to ? this.down.process(x) : this.up.process(x);
  }
}

function isRate(r: number): r is AudioSampleRate {
  return r === 8000 || r === 16000;
}

/** Exactly n samples: cut or padded with silence. */
function exactly(x: Int16Array, n: number): Int16Array {
  if (x.length === n) return x;
  const out = new Int16Array(n);
  out.set(x.subarray(0, n));
  return out;
}

interface ChildOptions {
  role: "arecord" | "aplay";
  path: string;
  args: string[];
  clock: Clock;
  random: Random;
  backoff: BackoffOptions;
  logger: Logger;
  onStdout?: (chunk: Buffer) => void;
  /** A new child runs (the first or a restarted one). */
  onStart?: () => void;
}

/** One ALSA tool kept running: spawned, watched, restarted with backoff, killed on stop. */
class SupervisedChild {
  private child: ChildProcess | undefined;
  private startedAt = 0;
  private attempt = 0;
  private retry: TimerHandle | undefined;
  private stopping = false;
  private blocked = false;
  private exited: Promise<void> = Promise.resolve();
  restarts = 0;
  /** Samples aplay could not take (its pipe was full), dropped. */
  blockedSamples = 0;

  constructor(private readonly o: ChildOptions) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  start(): void {
    if (this.stopping || this.child) return;
    const o = this.o;
    let child: ChildProcess;
    try {
      child = spawn(o.path, o.args, {
        stdio: o.role === "arecord" ? ["ignore", "pipe", "pipe"] : ["pipe", "ignore", "pipe"],
      });
    } catch (err) {
      this.down(undefined, err);
      return;
    }
    this.child = child;
    this.startedAt = o.clock.monotonic();
    this.blocked = false;
    let stderr = "";
    let done = false;
    let settle: () => void = () => {};
    this.exited = new Promise<void>((r) => {
      settle = r;
    });
    const gone = (code: number | null, signal: NodeJS.Signals | null, err?: unknown) => {
      if (done) return;
      done = true;
      settle();
      if (this.child === child) this.child = undefined;
      this.down({ code, signal, stderr: stderr.trim() }, err);
    };
    child.on("error", (err) => {
      // A spawn that failed (ENOENT, EACCES) never emits exit; a running child's error does not end it.
      if (child.pid === undefined) gone(null, null, err);
    });
    child.on("exit", (code, signal) => gone(code, signal));
    child.stderr?.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString("utf8")).slice(-500);
    });
    child.stdin?.on("error", () => {}); // EPIPE from a dying aplay: its exit restarts it
    child.stdin?.on("drain", () => {
      this.blocked = false;
    });
    if (o.onStdout) child.stdout?.on("data", o.onStdout);
    child.stdout?.on("error", () => {});
    if (child.pid !== undefined) {
      o.logger.info(`${o.role} started`, { pid: child.pid, args: o.args.join(" ") });
      o.onStart?.();
    }
  }

  /** Writes to aplay's stdin; false (and the samples are dropped) while its pipe is full. */
  write(buf: Buffer): boolean {
    const stdin = this.child?.stdin;
    if (!stdin?.writable) return false;
    if (this.blocked) {
      this.blockedSamples += buf.length / 2;
      return false;
    }
    if (!stdin.write(buf)) this.blocked = true;
    return true;
  }

  /** Stops for good: no restart, SIGTERM, SIGKILL if it lingers; settles once it has exited. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.retry?.cancel();
    this.retry = undefined;
    const child = this.child;
    if (!child) return;
    const exited = this.exited;
    child.kill("SIGTERM");
    const hard = this.o.clock.setTimer(KILL_AFTER_MS, () => child.kill("SIGKILL"));
    await exited;
    hard.cancel();
  }

  private down(
    exit: { code: number | null; signal: NodeJS.Signals | null; stderr: string } | undefined,
    err?: unknown,
  ): void {
    if (this.stopping) return;
    const o = this.o;
    if (o.clock.monotonic() - this.startedAt >= STABLE_MS) this.attempt = 0;
    const delay = backoffDelay(this.attempt++, o.random, o.backoff);
    this.restarts++;
    o.logger.warn(`${o.role} stopped; restarting`, {
      ...(exit ?? {}),
      ...(err ? { error: err instanceof Error ? err.message : String(err) } : {}),
      path: o.path,
      retryInMs: delay,
    });
    this.retry = o.clock.setTimer(delay, () => {
      this.retry = undefined;
      this.start();
    });
  }
}

export interface AlsaAudioStats {
  capture: RingStats & { restarts: number; running: boolean };
  playback: RingStats & { restarts: number; running: boolean; blockedSamples: number };
}

/** An endpoint of this device: the contract plus what tests and diagnostics look at. */
export interface AlsaEndpoint extends AudioEndpoint {
  /** True for the silent endpoint a second concurrent open() gets. */
  readonly silent: boolean;
  /** Settles once both children have exited after close(). */
  readonly closed: Promise<void>;
  stats(): AlsaAudioStats;
  /** The children's process ids now (undefined while one is down). */
  pids(): { arecord: number | undefined; aplay: number | undefined };
}

export interface AlsaAudioDevice extends AudioDevice {
  readonly profile: AlsaAudioProfile;
  open(): AlsaEndpoint;
  /** The endpoint holding the card, if any. */
  readonly active: AlsaEndpoint | undefined;
  /** Closes the active endpoint and waits until every child has exited (board stop). */
  close(): Promise<void>;
}

export interface AlsaAudioOptions {
  profile: AlsaAudioProfile;
  clock: Clock;
  logger?: Logger;
  random?: Random;
  restartBackoff?: BackoffOptions;
}

function emptyRing(): RingStats {
  return { underruns: 0, overruns: 0, droppedSamples: 0, slipsDropped: 0, slipsInserted: 0, fill: 0 };
}

function silentEndpoint(): AlsaEndpoint {
  return {
    silent: true,
    closed: Promise.resolve(),
    source: { read: (samples) => new Int16Array(Math.max(0, samples | 0)) },
    sink: { write: () => {} },
    close: () => {},
    stats: () => ({
      capture: { ...emptyRing(), restarts: 0, running: false },
      playback: { ...emptyRing(), restarts: 0, running: false, blockedSamples: 0 },
    }),
    pids: () => ({ arecord: undefined, aplay: undefined }),
  };
}

export function createAlsaAudio(o: AlsaAudioOptions): AlsaAudioDevice {
  const { profile, clock } = o;
  const logger = o.logger ?? silentLogger;
  const random = o.random ?? new SeededRandom(process.pid);
  const backoff = o.restartBackoff ?? DEFAULT_RESTART_BACKOFF;
  let active: AlsaEndpoint | undefined;
  /** The last endpoint's children exiting: the PCM is busy until then. */
  let released: Promise<void> = Promise.resolve();

  const openEndpoint = (): AlsaEndpoint => {
    const rate = profile.rateHz;
    const perMs = rate / 1000;
    const ring = () =>
      new SampleRing(
        Math.round(profile.latencyMs * perMs),
        Math.round((profile.latencyMs / 2) * perMs),
        SLIP_MS * perMs,
      );
    const captureRing = ring();
    const playbackRing = ring();
    const toCall = new RateBridge(rate);
    const toCard = new RateBridge(rate);
    let closed = false;
    let carry: Buffer | undefined;
    let lastPaced = clock.monotonic();
    let owed = 0;
    let pacer: TimerHandle | undefined;

    const pump = (n: number) => {
      const pcm = playbackRing.pull(n);
      if (!aplay.running) return;
      const buf = Buffer.alloc(pcm.length * 2);
      for (let i = 0; i < pcm.length; i++) buf.writeInt16LE(pcm[i]!, 2 * i);
      aplay.write(buf);
    };

    const onCapture = (chunk: Buffer) => {
      if (closed) return;
      const bytes = carry ? Buffer.concat([carry, chunk]) : chunk;
      const n = bytes.length >> 1;
      carry = bytes.length & 1 ? Buffer.from(bytes.subarray(2 * n)) : undefined;
      const pcm = new Int16Array(n);
      for (let i = 0; i < n; i++) pcm[i] = bytes.readInt16LE(2 * i);
      captureRing.push(pcm);
      // The card's clock paces the earpiece too (see the header).
      lastPaced = clock.monotonic();
      owed = 0;
      pump(n);
    };

    const pace = () => {
      pacer = undefined;
      if (closed) return;
      const now = clock.monotonic();
      // Only while arecord is silent: otherwise its samples pace aplay.
      if (now - lastPaced >= 2 * ALSA_PERIOD_MS) {
        owed += (now - lastPaced) * perMs;
        lastPaced = now;
        const n = Math.floor(owed);
        owed -= n;
        if (n > 0) pump(n);
      }
      pacer = clock.setTimer(ALSA_PERIOD_MS, pace);
    };

    const arecord = new SupervisedChild({
      role: "arecord",
      path: profile.arecordPath,
      args: arecordArgs(profile),
      clock,
      random,
      backoff,
      logger,
      onStdout: onCapture,
      onStart: () => {
        // A new stream: half a sample left from the old one would shift every sample by a byte.
        carry = undefined;
        captureRing.reset();
      },
    });
    const aplay = new SupervisedChild({
      role: "aplay",
      path: profile.aplayPath,
      args: aplayArgs(profile),
      clock,
      random,
      backoff,
      logger,
    });

    const source: FrameSource = {
      read(samples, callRate) {
        const n = Math.max(0, samples | 0);
        try {
          if (closed || !isRate(callRate)) return new Int16Array(n);
          const pcm = captureRing.pull(Math.round((n * rate) / callRate));
          return exactly(toCall.convert(pcm, rate, callRate), n);
        } catch (err) {
          logger.error("audio read failed; silence", { error: String(err) });
          return new Int16Array(n);
        }
      },
    };
    const sink: FrameSink = {
      write(frame: AudioFrame) {
        try {
          if (closed || !isRate(frame.rate)) return;
          playbackRing.push(toCard.convert(frame.pcm, frame.rate, rate));
        } catch (err) {
          logger.error("audio write failed; dropped", { error: String(err) });
        }
      },
    };

    let settleClosed: () => void = () => {};
    const closedP = new Promise<void>((r) => {
      settleClosed = r;
    });
    const endpoint: AlsaEndpoint = {
      silent: false,
      closed: closedP,
      source,
      sink,
      close() {
        if (closed) return;
        closed = true;
        pacer?.cancel();
        pacer = undefined;
        if (active === endpoint) active = undefined;
        const done = Promise.all([arecord.stop(), aplay.stop()]).then(
          () => {
            logger.info("audio closed");
            settleClosed();
          },
          (err: unknown) => {
            logger.error("audio close failed", { error: String(err) });
            settleClosed();
          },
        );
        released = done;
      },
      stats: () => ({
        capture: {
          ...captureRing.stats,
          fill: captureRing.fill,
          restarts: arecord.restarts,
          running: arecord.running,
        },
        playback: {
          ...playbackRing.stats,
          fill: playbackRing.fill,
          restarts: aplay.restarts,
          running: aplay.running,
          blockedSamples: aplay.blockedSamples,
        },
      }),
      pids: () => ({ arecord: arecord.pid, aplay: aplay.pid }),
    };

    // The previous call's children may still hold the PCM for a moment.
    void released
      .then(() => {
        if (closed) return;
        arecord.start();
        aplay.start();
        lastPaced = clock.monotonic();
        pacer = clock.setTimer(ALSA_PERIOD_MS, pace);
      })
      .catch((err: unknown) => logger.error("audio start failed", { error: String(err) }));
    return endpoint;
  };

  return {
    name: `alsa:${profile.capture}`,
    profile,
    get active() {
      return active;
    },
    open(): AlsaEndpoint {
      if (active) {
        logger.warn("audio busy: a second call gets silence");
        return silentEndpoint();
      }
      try {
        active = openEndpoint();
        return active;
      } catch (err) {
        logger.error("audio open failed; silence", { error: String(err) });
        return silentEndpoint();
      }
    },
    async close() {
      active?.close();
      await released;
    },
  };
}
