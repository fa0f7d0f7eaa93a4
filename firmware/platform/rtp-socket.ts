/**
 * The media edge of a call: the UDP socket(s) one AudioStream (firmware/media/audio-stream.ts)
 * runs over, and the 20 ms ticker that feeds it frames from a source and hands its playout to a
 * sink. Thin on purpose: every decision about packets is the stream's; this file owns the socket,
 * the clock's timers, and where datagrams go.
 *
 * Ports. RTP binds an even port and RTCP the odd one above it (RFC 3550 §11): peers that see no
 * a=rtcp line (RFC 3605) send RTCP to RTP + 1, and some SBCs assume the pair. Both are bound up
 * front, before the offer goes out, because only the answer says whether the peer muxes RTCP onto
 * the RTP port (RFC 5761); the search starts at a random pair in the configured range, so that a
 * new call does not land on a port an old call's peer may still be sending to.
 *
 * Symmetric RTP (RFC 4961). Datagrams go first to the address and port of the SDP. Once a packet
 * from the peer arrives, we send to the address it came from instead: between us and the peer may
 * sit a NAT or a media relay that rewrote the source, and the SDP address may be private and
 * unreachable, so the only address known to reach the peer is the one its packets come from
 * (without this, calls through NAT have one-way audio). The latch moves only on a packet the
 * stream *authenticated*: anyone who can send us a datagram could otherwise redirect our audio to
 * themselves with a single forged packet. Under SRTP only the peer can make one, so the latch
 * follows it wherever it moves (NAT rebinding); with plain RTP it latches once, on the first packet
 * of the peer's SSRC, which is as much as plain RTP allows.
 *
 * Timers. Only here (DESIGN.md: platform owns timers), and through the Clock port, so a test may
 * drive it with a ManualClock. Each tick's deadline is start + n·ptime on the monotonic clock and
 * the next timer is armed against it, so a late timer does not delay the ones after it; ticks
 * missed in a stall are caught up (the peer's jitter buffer absorbs the burst) up to MAX_CATCH_UP,
 * beyond which the schedule restarts from now rather than flooding the peer with old audio.
 */
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import type { Random } from "../core/random.ts";
import type { FrameSink, FrameSource } from "../hal/audio.ts";
import type { AudioStream, AudioStreamStats, PlayoutFrame } from "../media/audio-stream.ts";
import type { DtmfDigit } from "../media/dtmf.ts";
import { type ToneComponent, ToneDetector, ToneGenerator } from "../media/tone.ts";

/** A common RTP range (RFC 3551 leaves it open); callers configure the phone's own. */
export const DEFAULT_RTP_PORT_RANGE = { min: 16384, max: 32767 } as const;
/** Ticks caught up after a stall before the schedule starts afresh. */
const MAX_CATCH_UP = 5;

export class RtpSocketError extends HandsetError {}

export interface RtpSocketOptions {
  /** Local address to bind (the one the SDP's c= line names). */
  address: string;
  portRange?: { min: number; max: number };
  /** Also bind RTP + 1 for RTCP (default true); false when rtcp-mux is certain. */
  rtcpPort?: boolean;
  /** Where in the range the search starts; without one it starts at the bottom. */
  random?: Random;
}

/** Where the SDP says the peer receives. */
export interface RtpRemote {
  address: string;
  port: number;
  /** The peer's a=rtcp port, default port + 1; ignored with rtcpMux. */
  rtcpPort?: number;
  /** a=rtcp-mux in the answer: RTCP shares the RTP port both ways. */
  rtcpMux?: boolean;
}

// The audio contract is the hardware's (firmware/hal/audio.ts); re-exported for this file's users.
export type { FrameSink, FrameSource };

export interface MediaOptions {
  stream: AudioStream;
  remote: RtpRemote;
  clock: Clock;
  source?: FrameSource;
  sink?: FrameSink;
}

export interface Endpoint {
  address: string;
  port: number;
}

export interface RtpSocketStats {
  local: { address: string; port: number; rtcpPort: number | undefined };
  /** Where RTP (and muxed RTCP) goes now. */
  destination: Endpoint | undefined;
  rtcpDestination: Endpoint | undefined;
  /** Whether the destination was learned from the peer's packets (symmetric RTP). */
  latched: boolean;
  rtcpLatched: boolean;
  datagramsIn: number;
  datagramsOut: number;
  /** Datagrams that arrived before start() or after stop(). */
  datagramsUnused: number;
  sendErrors: number;
  ticks: number;
  /** Ticks given up after a stall longer than the catch-up allows. */
  ticksSkipped: number;
  stream: AudioStreamStats | undefined;
}

// ── sources and sinks ───────────────────────────────────────────────────────────────────────

export function silenceSource(): FrameSource {
  return { read: (samples) => new Int16Array(samples) };
}

/** Tones at whatever rate the stream asks (8 or 16 kHz); a change of rate keeps the tone's time. */
export function toneSource(tones: readonly ToneComponent[]): FrameSource {
  let g: { rate: number; gen: ToneGenerator; at: number } | undefined;
  return {
    read(samples, rate) {
      if (!g || g.rate !== rate) {
        // Components above the new rate's Nyquist limit would alias: leave them out.
        const fit = tones.filter((t) => t.hz < rate / 2);
        const startSample = g ? Math.round((g.at * rate) / g.rate) : 0;
        g = { rate, gen: new ToneGenerator(fit, { sampleRate: rate, startSample }), at: startSample };
      }
      g.at += samples;
      return g.gen.next(samples);
    },
  };
}

/**
 * Plays PCM (a WAV file's samples, at `rate`, default 8000) once, then silence; or over and over
 * with loop. Read at another rate, it steps through the samples at the ratio (linear
 * interpolation: a test prompt, not hi-fi).
 */
export function pcmSource(pcm: Int16Array, o: { loop?: boolean; rate?: number } = {}): FrameSource {
  const own = o.rate ?? 8000;
  let at = 0;
  return {
    read(samples, rate) {
      const out = new Int16Array(samples);
      const step = own / rate;
      for (let i = 0; i < samples && pcm.length > 0; i++) {
        if (at >= pcm.length) {
          if (!o.loop) break;
          at -= pcm.length;
        }
        const k = Math.floor(at);
        const next = k + 1 < pcm.length ? pcm[k + 1]! : o.loop ? pcm[0]! : 0;
        out[i] = Math.round(pcm[k]! + (next - pcm[k]!) * (at - k));
        at += step;
      }
      return out;
    },
  };
}

/** Records what plays, for a WAV file or for inspection. */
export class PcmSink implements FrameSink {
  private readonly frames: Int16Array[] = [];

  write(frame: PlayoutFrame): void {
    this.frames.push(frame.pcm);
  }

  pcm(): Int16Array {
    const out = new Int16Array(this.frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of this.frames) {
      out.set(f, at);
      at += f.length;
    }
    return out;
  }
}

/** Counts, per frame kind, which of the given tones each played frame held (at the frame's rate). */
export class ToneSink implements FrameSink {
  private readonly detectors = new Map<number, ToneDetector>();
  /** One entry per frame: its kind and the tones heard, as "697+1209" (ascending), "" for none. */
  readonly heard: Array<{ kind: PlayoutFrame["kind"]; tones: string }> = [];

  constructor(
    private readonly frequencies: readonly number[],
    private readonly thresholdDbfs = -30,
  ) {
    new ToneDetector({ frequencies, thresholdDbfs, sampleRate: 16000 }); // a bad frequency: say so now
  }

  write(frame: PlayoutFrame): void {
    let detector = this.detectors.get(frame.rate);
    if (!detector) {
      // A narrowband frame cannot hold a tone above 4 kHz: listen only for those it can.
      const fit = this.frequencies.filter((f) => f < frame.rate / 2);
      detector = new ToneDetector({
        frequencies: fit,
        thresholdDbfs: this.thresholdDbfs,
        sampleRate: frame.rate,
      });
      this.detectors.set(frame.rate, detector);
    }
    const tones = detector
      .detect(frame.pcm)
      .map((l) => l.hz)
      .sort((a, b) => a - b)
      .join("+");
    this.heard.push({ kind: frame.kind, tones });
  }

  /** Of the frames that carried received audio, the share in which exactly `tones` was heard. */
  share(tones: string): number {
    const audio = this.heard.filter((h) => h.kind === "audio");
    return audio.length === 0 ? 0 : audio.filter((h) => h.tones === tones).length / audio.length;
  }
}

/** Several sinks at once (record and detect). */
export function teeSink(...sinks: FrameSink[]): FrameSink {
  return {
    write(f) {
      for (const s of sinks) s.write(f);
    },
  };
}

// ── the socket ─────────────────────────────────────────────────────────────────────────────

function bindUdp(address: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: address.includes(":") ? "udp6" : "udp4", reuseAddr: false });
    const fail = (err: Error) => {
      s.close();
      reject(err);
    };
    s.once("error", fail);
    s.bind({ address, port, exclusive: true }, () => {
      s.off("error", fail);
      resolve(s);
    });
  });
}

function closeUdp(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      s.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

/** Errors that mean "this port, not this address": try the next pair. */
const PORT_TAKEN = new Set(["EADDRINUSE", "EACCES"]);

export class RtpSocket {
  readonly address: string;
  readonly port: number;
  readonly rtcpPort: number | undefined;

  private readonly rtp: Socket;
  private readonly rtcpSocket: Socket | undefined;
  private media: MediaOptions | undefined;
  private destination: Endpoint | undefined;
  private rtcpDestination: Endpoint | undefined;
  private latched = false;
  private rtcpLatched = false;
  private rtcpMux = false;
  private timer: TimerHandle | undefined;
  private nextTickAt = 0;
  private readonly digits: Array<{ digit: DtmfDigit; durationMs: number | undefined }> = [];
  private readonly pending: Array<{ at: number; bytes: Uint8Array }> = [];
  private closed = false;
  private readonly c = {
    datagramsIn: 0,
    datagramsOut: 0,
    datagramsUnused: 0,
    sendErrors: 0,
    ticks: 0,
    ticksSkipped: 0,
  };

  private constructor(address: string, rtp: Socket, rtcp: Socket | undefined) {
    this.address = address;
    this.rtp = rtp;
    this.rtcpSocket = rtcp;
    this.port = rtp.address().port;
    this.rtcpPort = rtcp?.address().port;
    rtp.on("message", (msg, rinfo) => this.onDatagram(msg, rinfo, "rtp"));
    rtcp?.on("message", (msg, rinfo) => this.onDatagram(msg, rinfo, "rtcp"));
    // An ICMP error or a send failure must not end the call (nor the process): count and go on.
    rtp.on("error", () => this.c.sendErrors++);
    rtcp?.on("error", () => this.c.sendErrors++);
  }

  /** Binds an even RTP port (and RTCP on the odd one above) in the range. */
  static async open(o: RtpSocketOptions): Promise<RtpSocket> {
    const range = o.portRange ?? DEFAULT_RTP_PORT_RANGE;
    const withRtcp = o.rtcpPort ?? true;
    const first = range.min + (range.min & 1);
    const last = withRtcp ? range.max - 1 : range.max;
    const pairs = last >= first ? Math.floor((last - first) / 2) + 1 : 0;
    if (pairs === 0)
      throw new RtpSocketError(
        "rtp-port-range",
        `no even port in ${range.min}..${range.max} with room for RTCP`,
      );
    const start = o.random ? Math.floor(o.random.unit() * pairs) : 0;
    for (let i = 0; i < pairs; i++) {
      const port = first + 2 * ((start + i) % pairs);
      let rtp: Socket | undefined;
      try {
        rtp = await bindUdp(o.address, port);
        const rtcp = withRtcp ? await bindUdp(o.address, port + 1) : undefined;
        return new RtpSocket(o.address, rtp, rtcp);
      } catch (err) {
        if (rtp) await closeUdp(rtp);
        const code = (err as NodeJS.ErrnoException).code ?? "";
        if (!PORT_TAKEN.has(code))
          throw new RtpSocketError(
            "rtp-bind",
            `cannot bind UDP ${o.address}:${port}: ${(err as Error).message}`,
            {
              cause: err,
            },
          );
      }
    }
    throw new RtpSocketError(
      "rtp-ports-exhausted",
      `every port pair in ${range.min}..${range.max} is in use`,
    );
  }

  /** Starts the stream: sends to `remote` and ticks every ptime from now. */
  start(m: MediaOptions): void {
    if (this.closed) throw new RtpSocketError("rtp-closed", "the RTP socket is closed");
    this.stopTicker();
    this.media = m;
    this.setRemote(m.remote);
    this.nextTickAt = m.clock.monotonic();
    this.tick();
  }

  /**
   * A new SDP for the peer (re-INVITE moved its media, or said rtcp-mux). Learned addresses are
   * forgotten: the new SDP is the peer's word on where it is now.
   */
  setRemote(remote: RtpRemote): void {
    this.rtcpMux = remote.rtcpMux ?? false;
    this.destination = { address: remote.address, port: remote.port };
    this.rtcpDestination = this.rtcpMux
      ? undefined
      : { address: remote.address, port: remote.rtcpPort ?? remote.port + 1 };
    this.latched = false;
    this.rtcpLatched = false;
    if (this.media) this.media = { ...this.media, remote };
  }

  /** A key press, sent from the next tick on. */
  sendDigit(digit: DtmfDigit, durationMs?: number): void {
    this.digits.push({ digit, durationMs });
  }

  /** Stops the ticker; with bye (default), tells the peer with an RTCP BYE. The sockets stay bound. */
  stop(o: { bye?: boolean } = {}): void {
    const m = this.media;
    this.stopTicker();
    if (m && (o.bye ?? true)) this.sendRtcp(m.stream.bye(m.clock.monotonic()));
    this.media = undefined;
    this.pending.length = 0;
    this.digits.length = 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.stop({ bye: false });
    this.closed = true;
    await Promise.all([closeUdp(this.rtp), this.rtcpSocket ? closeUdp(this.rtcpSocket) : Promise.resolve()]);
  }

  stats(): RtpSocketStats {
    return {
      local: { address: this.address, port: this.port, rtcpPort: this.rtcpPort },
      destination: this.destination,
      rtcpDestination: this.rtcpMux ? this.destination : this.rtcpDestination,
      latched: this.latched,
      rtcpLatched: this.rtcpMux ? this.latched : this.rtcpLatched,
      ...this.c,
      stream: this.media?.stream.stats(),
    };
  }

  // ── inside ─────────────────────────────────────────────────────────────────────────────────

  private onDatagram(msg: Buffer, rinfo: RemoteInfo, via: "rtp" | "rtcp"): void {
    this.c.datagramsIn++;
    const m = this.media;
    if (!m) {
      this.c.datagramsUnused++;
      return;
    }
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    const outcome = m.stream.receive(bytes, m.clock.monotonic());
    if (!outcome.authenticated) return;
    const from = { address: rinfo.address, port: rinfo.port };
    // See the header: follow the peer under SRTP, latch once under plain RTP.
    if (via === "rtp") {
      if (!this.latched || (m.stream.secure && !sameEndpoint(from, this.destination))) {
        this.destination = from;
        this.latched = true;
      }
    } else if (outcome.kind === "rtcp") {
      if (!this.rtcpLatched || (m.stream.secure && !sameEndpoint(from, this.rtcpDestination))) {
        this.rtcpDestination = from;
        this.rtcpLatched = true;
      }
    }
  }

  private readonly tick = (): void => {
    const m = this.media;
    if (!m) return;
    const frameMs = m.stream.frameMs;
    const now = m.clock.monotonic();
    if (now - this.nextTickAt > MAX_CATCH_UP * frameMs) {
      this.c.ticksSkipped += Math.floor((now - this.nextTickAt) / frameMs);
      this.nextTickAt = now;
    }
    // Half a millisecond of slack: a timer that fires a hair early still runs its tick.
    while (this.nextTickAt <= now + 0.5 && this.media === m) {
      this.runTick(m, this.nextTickAt);
      this.nextTickAt += frameMs;
    }
    if (this.media === m) this.timer = m.clock.setTimer(this.nextTickAt - m.clock.monotonic(), this.tick);
  };

  /** One frame time: digits, due event packets, our frame out, the peer's frame to the sink, RTCP. */
  private runTick(m: MediaOptions, t: number): void {
    this.c.ticks++;
    const { stream } = m;
    // A digit starts on a tick and before its frame, as AudioStream.sendDigit asks.
    for (const d of this.digits.splice(0))
      for (const p of stream.sendDigit(d.digit, t, d.durationMs))
        this.pending.push({ at: t + p.atMs, bytes: p.bytes });
    while (this.pending.length > 0 && this.pending[0]!.at <= t + 0.5)
      this.sendRtp(this.pending.shift()!.bytes);
    const frame = (m.source ?? SILENCE).read(stream.frameSamples, stream.sampleRate);
    const bytes = stream.sendFrame(frame, t);
    if (bytes) this.sendRtp(bytes);
    const played = stream.playout(t);
    m.sink?.write(played);
    // RTCP on the real time, not the tick's: a late tick would understate DLSR and so inflate the
    // peer's round-trip estimate by our own lateness.
    const rtcp = stream.rtcp(m.clock.monotonic());
    if (rtcp) this.sendRtcp(rtcp);
  }

  private sendRtp(bytes: Uint8Array): void {
    this.sendTo(this.rtp, this.destination, bytes);
  }

  private sendRtcp(bytes: Uint8Array | undefined): void {
    if (!bytes) return;
    if (this.rtcpMux || !this.rtcpSocket) this.sendTo(this.rtp, this.destination, bytes);
    else this.sendTo(this.rtcpSocket, this.rtcpDestination, bytes);
  }

  private sendTo(socket: Socket, to: Endpoint | undefined, bytes: Uint8Array): void {
    if (!to || this.closed) return;
    this.c.datagramsOut++;
    try {
      socket.send(bytes, to.port, to.address, (err) => {
        if (err) this.c.sendErrors++;
      });
    } catch {
      // A closed socket or an address node:dgram refuses: the call carries on, counted.
      this.c.sendErrors++;
    }
  }

  private stopTicker(): void {
    this.timer?.cancel();
    this.timer = undefined;
  }
}

const SILENCE = silenceSource();

function sameEndpoint(a: Endpoint, b: Endpoint | undefined): boolean {
  return b !== undefined && a.address === b.address && a.port === b.port;
}
