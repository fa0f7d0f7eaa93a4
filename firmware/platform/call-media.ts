/**
 * The real media port of a call (firmware/sip/session/media-port.ts): the offer/answer engine
 * (media/offer-answer.ts) decides what the SDP says, an AudioStream (media/audio-stream.ts) turns
 * the agreement into (S)RTP, and an RtpSocket (rtp-socket.ts) carries it over UDP between the
 * board's microphone and earpiece (hal/audio.ts) and the peer.
 *
 * Why a pool of bound sockets. The port's methods are synchronous (the call state machine answers
 * an INVITE in the same turn it arrives), yet an offer or answer must name the RTP port, and
 * binding a UDP socket in Node is asynchronous. So CallMediaPorts keeps `spares` socket pairs
 * bound ahead of time; each new call's port takes one at once and the pool binds a replacement in
 * the background. A call that finds the pool empty (more calls at once than spares, or the range
 * exhausted) gets a refusal from its first offer or answer: "No Media Available".
 *
 * Lifecycle of one port: the first agreement (our answer, or the answer we accepted, early or
 * final) builds the AudioStream, opens the audio endpoint and starts the socket's ticker; each
 * later agreement updates the stream in place (direction for hold, formats, keys: AudioStream
 * keeps SSRC, sequence numbers and the SRTP context of an unchanged key) and, only when the SDP
 * moved the peer, points the socket at the new address (a setRemote forgets the symmetric-RTP
 * latch, which must survive a hold). A refusal changes nothing: the old media plays on.
 *
 * Directions (RFC 3264 §8.4, RFC 6337 §5.3): our offers say sendonly while we hold, inactive when
 * the peer holds us too, recvonly while only the peer holds us, sendrecv otherwise; our answers
 * start from sendonly or sendrecv and let the engine mirror the offer.
 *
 * Codecs: G.722 (wideband, 16 kHz) and G.711 (PCMU, PCMA), offered in the configured order (put
 * G722 first to prefer it, as Lync-certified phones do); a call sends the first codec the
 * agreement lists and runs its audio at that codec's rate, which the microphone is asked for and
 * the earpiece's frames carry (hal/audio.ts). The tone tap listens at the frame's rate.
 *
 * Figures for a test command: `ports.live` lists the ports of the calls now up (newest last) and
 * `ports.onPort` reports each new one as the call is created (inside CallAgent.dial, and before
 * CallAgent.onIncoming listeners run), so the phone can pair a call with its port; `port.stats()`
 * gives packets, SRTP failures, codec, direction and, with `detectTones`, the tones heard.
 */
import type { Clock } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { AudioDevice, AudioEndpoint, AudioFrame, FrameSink, FrameSource } from "../hal/audio.ts";
import {
  type AudioCodecName,
  AudioStream,
  type AudioStreamEvent,
  type AudioStreamParams,
  type MediaDirection,
} from "../media/audio-stream.ts";
import type { DtmfDigit } from "../media/dtmf.ts";
import { MultipartError, selectSdpBody } from "../media/multipart.ts";
import {
  checkAnswer,
  type LocalOffer,
  LocalSession,
  type LocalTransport,
  type MediaCapabilities,
  type NegotiatedAudio,
  type OfferAnswerError,
} from "../media/offer-answer.ts";
import type { SdesCrypto, SdesKey, SdesSuite } from "../media/sdes.ts";
import {
  mediaConnection,
  mediaDirection,
  parseSdp,
  SdpError,
  type SessionDescription,
} from "../media/sdp.ts";
import { masterKeyFromInline, type SrtpPolicy } from "../media/srtp.ts";
import { ToneDetector } from "../media/tone.ts";
import type {
  MediaAgreement,
  MediaDescription,
  MediaPort,
  MediaPortFactory,
  MediaRefusal,
  OfferPurpose,
} from "../sip/session/media-port.ts";
import { type Endpoint, type RtpRemote, RtpSocket, type RtpSocketStats } from "./rtp-socket.ts";

/** Calls at once with a port ready: one talking, one on hold or waiting (call waiting, consult). */
const DEFAULT_SPARES = 2;
/**
 * The frame length we send and play. Our descriptions say a=ptime:20; a peer's other a=ptime is
 * a wish (RFC 4566 §6), and AudioStream runs one frame length both ways, so 20 ms it stays.
 */
const PTIME_MS = 20;
/** What AudioStream can encode and decode. */
const SENDABLE: ReadonlySet<string> = new Set<AudioCodecName>(["G722", "PCMU", "PCMA"]);
const NO_MEDIA = "No Media Available";
const NOT_ACCEPTABLE = "Not Acceptable Here";

export interface CallMediaOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  /** The address RTP binds to and the SDP's c= and o= lines name. IPv4. */
  address: string;
  /** The RTP port range (default rtp-socket's DEFAULT_RTP_PORT_RANGE). */
  portRange?: { min: number; max: number };
  /** Codecs (G722, PCMU, PCMA, most preferred first) and the SRTP policy. */
  capabilities: MediaCapabilities;
  /** The board's microphone and earpiece; opened per call. Absent: silence out, nothing played. */
  audio?: AudioDevice;
  /** Frequencies to listen for in what each call plays (a test command's "did audio arrive"). */
  detectTones?: readonly number[];
  /** Socket pairs kept bound for the next calls (default 2). */
  spares?: number;
  /** RTCP report interval (AudioStream's default 5 s). */
  rtcpIntervalMs?: number;
}

export interface CallMediaStats {
  /** unbound: no socket was free; ready: nothing agreed yet; streaming; closed. */
  state: "unbound" | "ready" | "streaming" | "closed";
  local: { address: string; port: number; rtcpPort: number | undefined } | undefined;
  /** Where our RTP goes now (the SDP's address, or the one learned from the peer's packets). */
  remote: Endpoint | undefined;
  latched: boolean;
  codec: AudioCodecName | undefined;
  /** Whether the stream is SRTP, and under which suite. */
  srtp: boolean;
  suite: SdesSuite | undefined;
  direction: MediaDirection | undefined;
  held: boolean;
  remoteHold: boolean;
  muted: boolean;
  /** RTP packets (SRTP when `srtp`) sent and accepted. */
  packetsOut: number;
  packetsIn: number;
  srtpAuthFailures: number;
  replaysDropped: number;
  lost: number;
  concealed: number;
  jitterMs: number;
  roundTripMs: number | undefined;
  /** With detectTones: received audio frames played, and in how many of them each tone was heard. */
  tones: { frames: number; heard: Record<number, number> } | undefined;
  /** Everything the socket and the stream count, for the curious. */
  socket: RtpSocketStats | undefined;
}

function refusal(code: string, reason: string, warning?: { code: number; text: string }): MediaRefusal {
  return warning ? { kind: "refused", code, reason, warning } : { kind: "refused", code, reason };
}

function refusalOf(err: OfferAnswerError): MediaRefusal {
  return refusal(err.code, err.reason, err.warning);
}

const receives = (d: MediaDirection): boolean => d === "sendrecv" || d === "recvonly";

/** Whether the peer's description holds us: it takes no media (sendonly, inactive, c=0.0.0.0). */
function peerHolds(sdp: SessionDescription, index: number): boolean {
  const media = sdp.media[index];
  if (!media) return false;
  return !receives(mediaDirection(sdp, media)) || mediaConnection(sdp, media)?.address === "0.0.0.0";
}

function srtpPolicy(suite: SdesSuite, key: SdesKey): SrtpPolicy {
  const { masterKey, masterSalt } = masterKeyFromInline(key.keySalt);
  // The key's lifetime (2^31 packets by default) outlasts any call at 50 packets a second.
  return key.mki ? { suite, masterKey, masterSalt, mki: key.mki } : { suite, masterKey, masterSalt };
}

/** The AudioStream settings of an agreement, or undefined when it holds no codec we can encode. */
function streamParams(m: NegotiatedAudio): AudioStreamParams | undefined {
  const usable = m.codecs.filter((c) => SENDABLE.has(c.name));
  const first = usable[0];
  if (!first) return undefined;
  return {
    payloadType: first.payloadType,
    codec: first.name as AudioCodecName,
    ptimeMs: PTIME_MS,
    receiveFormats: usable.map((c) => ({ payloadType: c.payloadType, codec: c.name as AudioCodecName })),
    ...(m.telephoneEvent ? { telephoneEventPt: m.telephoneEvent.payloadType } : {}),
    ...(m.comfortNoise ? { comfortNoisePt: m.comfortNoise.payloadType } : {}),
    ...(m.srtp
      ? {
          srtp: {
            send: srtpPolicy(m.srtp.suite, m.srtp.local),
            receive: srtpPolicy(m.srtp.suite, m.srtp.remote),
          },
        }
      : {}),
    direction: m.direction,
  };
}

function remoteOf(m: NegotiatedAudio): RtpRemote {
  return { address: m.remoteAddress, port: m.remotePort, rtcpPort: m.remoteRtcpPort, rtcpMux: m.rtcpMux };
}

const sameRemote = (a: RtpRemote, b: RtpRemote): boolean =>
  a.address === b.address && a.port === b.port && a.rtcpPort === b.rtcpPort && a.rtcpMux === b.rtcpMux;

/**
 * Our answer seen as an offer: what a refresh repeats (RFC 4028 §10) and the peer's answer to it
 * is checked against. Its one crypto line is the one we answered with, under the offer's tag.
 */
function answerAsOffer(
  sdp: SessionDescription,
  body: string,
  m: NegotiatedAudio,
  caps: MediaCapabilities,
  transport: LocalTransport,
): LocalOffer {
  const cryptos: SdesCrypto[] = m.srtp
    ? [{ tag: m.srtp.tag, suite: m.srtp.suite, keys: [m.srtp.local], sessionParams: [] }]
    : [];
  return {
    sdp,
    body,
    capabilities: caps,
    transport,
    direction: m.direction,
    mediaIndex: m.mediaIndex,
    cryptos,
  };
}

/** The SDP text of a SIP body: itself, or the part of a multipart body to answer. */
function sdpOf(body: string, contentType: string | undefined): SessionDescription {
  const type = contentType?.split(";")[0]?.trim().toLowerCase();
  const text =
    type === undefined || type === "application/sdp"
      ? body
      : selectSdpBody(contentType!, body).body.toString("utf8");
  return parseSdp(text);
}

/** The refusal for a body we cannot read, or undefined when the error is not about the body. */
function unreadable(err: unknown): MediaRefusal | undefined {
  if (err instanceof SdpError || err instanceof MultipartError)
    return refusal(err.code, NOT_ACCEPTABLE, { code: 399, text: err.message });
  return undefined;
}

function checkCapabilities(caps: MediaCapabilities): void {
  if (caps.codecs.length === 0) throw new HandsetError("media-config", "no audio codec configured");
  for (const c of caps.codecs)
    if (!SENDABLE.has(c))
      throw new HandsetError(
        "media-config",
        `codec ${c} cannot be sent: the audio stream encodes G.722 and G.711 only`,
      );
}

/**
 * Counts which of the listened-for tones each received frame held, detecting at the frame's rate
 * (a G.722 call plays 16 kHz frames; a narrowband frame is searched only for the tones below
 * 4 kHz, the ones it can hold).
 */
class ToneTap implements FrameSink {
  private readonly detectors = new Map<number, ToneDetector>();
  frames = 0;
  readonly heard: Record<number, number> = {};

  constructor(private readonly frequencies: readonly number[]) {
    // A frequency no call could carry is the caller's mistake: say so now, not on the first frame.
    new ToneDetector({ frequencies, sampleRate: 16000 });
    for (const f of frequencies) this.heard[f] = 0;
  }

  write(frame: AudioFrame): void {
    if (frame.kind !== "audio") return;
    this.frames++;
    let detector = this.detectors.get(frame.rate);
    if (!detector) {
      const fit = this.frequencies.filter((f) => f < frame.rate / 2);
      detector = new ToneDetector({ frequencies: fit, sampleRate: frame.rate });
      this.detectors.set(frame.rate, detector);
    }
    for (const l of detector.detect(frame.pcm)) this.heard[l.hz] = (this.heard[l.hz] ?? 0) + 1;
  }
}

/** One call's media. Made by CallMediaPorts; the MediaPort methods are the session's. */
export class CallMediaPort implements MediaPort {
  /** DTMF received, SSRC changes, RTCP reports and BYE, from the stream once it runs. */
  readonly events = new Emitter<AudioStreamEvent>();
  /** Settles when the sockets are released after close(). */
  readonly closed: Promise<void>;

  private readonly session: LocalSession;
  private readonly ssrc: number;
  private readonly log: Logger;
  private pending: LocalOffer | undefined;
  /**
   * Our description that stands, seen as an offer (for refreshes), and what it agreed; for an
   * answer, also the o= of the offer it answered and our hold wish then.
   */
  private current:
    | { offer: LocalOffer; media: NegotiatedAudio; answered?: { origin: string; held: boolean } }
    | undefined;
  /** The agreement an answer just replaced, for a rollback when that answer could not be sent. */
  private undo: { previous: CallMediaPort["current"] } | undefined;
  private held = false;
  private remoteHold = false;
  private muted = false;
  /** connected(): the call is answered. Until then the microphone sends silence. */
  private answered = false;
  /** Our first description was an answer: an incoming call, which stays unheard while it rings. */
  private incoming: boolean | undefined;
  private stream: AudioStream | undefined;
  private codec: AudioCodecName | undefined;
  private remote: RtpRemote | undefined;
  private endpoint: AudioEndpoint | undefined;
  private tap: ToneTap | undefined;
  private offStream: (() => void) | undefined;
  private isClosed = false;
  private release!: () => void;

  /** @internal CallMediaPorts makes ports. */
  constructor(
    private readonly o: CallMediaOptions,
    private readonly sock: RtpSocket | undefined,
    private readonly onClose: (p: CallMediaPort) => void,
  ) {
    this.session = new LocalSession(o.random);
    this.ssrc = Buffer.from(o.random.bytes(4)).readUInt32BE(0);
    this.log = o.logger.child("call-media");
    this.closed = new Promise((resolve) => {
      this.release = resolve;
    });
    if (!sock) this.release();
  }

  // ── MediaPort ─────────────────────────────────────────────────────────────────────────────

  createOffer(o: { purpose: OfferPurpose }): MediaDescription | MediaRefusal {
    const transport = this.transport();
    if (!transport) return refusal(this.isClosed ? "closed" : "no-media-port", NO_MEDIA);
    this.undo = undefined;
    this.incoming ??= false;
    if (o.purpose === "refresh" && this.current) {
      // RFC 4028 §10: the same description, o= version and all.
      this.pending = this.current.offer;
      return { kind: "sdp", sdp: this.current.offer.body };
    }
    this.pending = this.session.createOffer(this.o.capabilities, transport, this.offerDirection());
    return { kind: "sdp", sdp: this.pending.body };
  }

  answerOffer(sdp: string, o: { contentType?: string } = {}): MediaDescription | MediaRefusal {
    const transport = this.transport();
    if (!transport) return refusal(this.isClosed ? "closed" : "no-media-port", NO_MEDIA);
    this.incoming ??= true;
    let offer: SessionDescription;
    try {
      offer = sdpOf(sdp, o.contentType);
    } catch (err) {
      const r = unreadable(err);
      if (r) return r;
      throw err;
    }
    const origin = `${offer.origin.sessionId} ${offer.origin.sessionVersion}`;
    const standing = this.current;
    if (standing?.answered && standing.answered.origin === origin && standing.answered.held === this.held) {
      // The offer we answered last, again (RFC 4028 §10 refresh): RFC 3264 §8 lets the answer
      // repeat too, o= version and all, and nothing about the media changes.
      this.undo = undefined;
      return {
        kind: "sdp",
        sdp: standing.offer.body,
        remoteHold: peerHolds(offer, standing.media.mediaIndex),
      };
    }
    const outcome = this.session.createAnswer(
      offer,
      this.o.capabilities,
      transport,
      this.held ? "sendonly" : "sendrecv",
    );
    if (outcome.kind === "refused") {
      this.log.info("offer refused", { code: outcome.error.code });
      return refusalOf(outcome.error);
    }
    const params = streamParams(outcome.media);
    if (!params)
      return refusal("no-common-codec", NOT_ACCEPTABLE, { code: 305, text: "no audio codec in common" });
    const previous = this.current;
    const remoteHold = peerHolds(offer, outcome.media.mediaIndex);
    this.apply(outcome.media, params, remoteHold);
    this.current = {
      offer: answerAsOffer(outcome.sdp, outcome.body, outcome.media, this.o.capabilities, transport),
      media: outcome.media,
      answered: { origin, held: this.held },
    };
    this.undo = { previous };
    return { kind: "sdp", sdp: outcome.body, remoteHold };
  }

  acceptAnswer(sdp: string, o: { contentType?: string } = {}): MediaAgreement | MediaRefusal {
    const offer = this.pending;
    if (!offer || this.isClosed) return refusal("no-offer", "no offer outstanding");
    // The exchange ends here, agreed or not (media-port.ts: acceptAnswer ends the offer).
    this.pending = undefined;
    this.undo = undefined;
    let answer: SessionDescription;
    try {
      answer = sdpOf(sdp, o.contentType);
    } catch (err) {
      const r = unreadable(err);
      if (r) return r;
      throw err;
    }
    const check = checkAnswer(offer, answer);
    if (check.kind === "mismatch") {
      this.log.info("answer refused", { code: check.error.code });
      return refusalOf(check.error);
    }
    const params = streamParams(check.media);
    if (!params)
      return refusal("no-common-codec", NOT_ACCEPTABLE, { code: 305, text: "no audio codec in common" });
    const remoteHold = peerHolds(answer, check.media.mediaIndex);
    this.apply(check.media, params, remoteHold);
    this.current = { offer, media: check.media };
    return { kind: "agreed", remoteHold };
  }

  rollback(): void {
    this.pending = undefined;
    const undo = this.undo;
    this.undo = undefined;
    if (!undo) return;
    // An answer of ours that never left: the agreement before it stands again.
    this.current = undo.previous;
    const params = undo.previous && streamParams(undo.previous.media);
    if (undo.previous && params)
      this.apply(
        undo.previous.media,
        params,
        peerHolds(undo.previous.offer.sdp, undo.previous.media.mediaIndex),
      );
    else this.stopStream();
  }

  hold(on: boolean): void {
    this.held = on;
  }

  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.pending = undefined;
    this.stopStream();
    this.onClose(this);
    if (this.sock)
      this.sock
        .close()
        .catch((err: unknown) => this.log.warn("RTP socket did not close", { error: String(err) }))
        .finally(() => this.release());
  }

  // ── beyond the session's contract: the phone's ───────────────────────────────────────────

  /** Mute: the microphone is still read (its buffer must not overflow) but silence is sent. */
  connected(): void {
    this.answered = true;
  }

  setMuted(on: boolean): void {
    this.muted = on;
  }

  get isMuted(): boolean {
    return this.muted;
  }

  /** A key press (RFC 4733 events when negotiated, in-band tones otherwise); false before media runs. */
  sendDigit(digit: DtmfDigit, durationMs?: number): boolean {
    if (!this.stream || !this.sock || this.isClosed) return false;
    this.sock.sendDigit(digit, durationMs);
    return true;
  }

  stats(): CallMediaStats {
    const socket = this.sock && !this.isClosed ? this.sock.stats() : undefined;
    const s = this.stream?.stats();
    const srtp = this.current?.media.srtp;
    return {
      state: this.isClosed ? "closed" : !this.sock ? "unbound" : this.stream ? "streaming" : "ready",
      local: this.sock
        ? { address: this.sock.address, port: this.sock.port, rtcpPort: this.sock.rtcpPort }
        : undefined,
      remote: socket?.destination,
      latched: socket?.latched ?? false,
      codec: this.stream ? this.codec : undefined,
      srtp: srtp !== undefined,
      suite: srtp?.suite,
      direction: this.stream?.direction,
      held: this.held,
      remoteHold: this.remoteHold,
      muted: this.muted,
      packetsOut: s?.packetsSent ?? 0,
      packetsIn: s?.packetsReceived ?? 0,
      srtpAuthFailures: s?.srtpBadTag ?? 0,
      replaysDropped: s?.srtpReplayed ?? 0,
      lost: s?.lost ?? 0,
      concealed: s?.concealed ?? 0,
      jitterMs: s?.jitterMs ?? 0,
      roundTripMs: s?.roundTripMs,
      tones: this.tap ? { frames: this.tap.frames, heard: { ...this.tap.heard } } : undefined,
      socket,
    };
  }

  // ── inside ───────────────────────────────────────────────────────────────────────────────

  private transport(): LocalTransport | undefined {
    if (!this.sock || this.isClosed) return undefined;
    const t: LocalTransport = { address: this.sock.address, port: this.sock.port, ssrc: this.ssrc };
    return this.sock.rtcpPort === undefined ? t : { ...t, rtcpPort: this.sock.rtcpPort };
  }

  private offerDirection(): MediaDirection {
    if (this.held) return this.remoteHold ? "inactive" : "sendonly";
    return this.remoteHold ? "recvonly" : "sendrecv";
  }

  private apply(m: NegotiatedAudio, params: AudioStreamParams, remoteHold: boolean): void {
    this.remoteHold = remoteHold;
    this.codec = params.codec;
    const remote = remoteOf(m);
    const sock = this.sock!;
    this.log.info("media agreed", {
      remote: `${remote.address}:${remote.port}`,
      codec: params.codec,
      srtp: m.srtp?.suite ?? "off",
      direction: params.direction,
    });
    if (this.stream) {
      this.stream.update(params);
      if (!sameRemote(remote, this.remote!)) sock.setRemote(remote);
      this.remote = remote;
      return;
    }
    const stream = new AudioStream(params, {
      random: this.o.random,
      ssrc: this.ssrc,
      // SR timestamps are wall time; the stream counts on the monotonic clock.
      ntpOffsetMs: this.o.clock.now() - this.o.clock.monotonic(),
      ...(this.o.rtcpIntervalMs !== undefined ? { rtcpIntervalMs: this.o.rtcpIntervalMs } : {}),
    });
    this.stream = stream;
    this.remote = remote;
    this.offStream = stream.events.on((e) => this.events.emit(e));
    this.endpoint = this.o.audio?.open();
    this.tap =
      this.o.detectTones && this.o.detectTones.length > 0 ? new ToneTap(this.o.detectTones) : undefined;
    sock.start({ stream, remote, clock: this.o.clock, source: this.microphone(), sink: this.earpiece() });
  }

  /** The endpoint's source, held to the frame length and silenced while muted. */
  private microphone(): FrameSource {
    const source = this.endpoint?.source;
    return {
      read: (samples, rate) => {
        const pcm = source?.read(samples, rate);
        // Not before the answer: a ringing phone's room is not the caller's business. Not on our
        // hold either: sendonly lets us send (music on hold), but the person who pressed Hold
        // expects not to be heard.
        if (this.muted || this.held || !this.answered || !pcm) return new Int16Array(samples);
        if (pcm.length === samples) return pcm;
        // A device that delivers another length would stretch or shrink the media clock.
        const out = new Int16Array(samples);
        out.set(pcm.subarray(0, samples));
        return out;
      },
    };
  }

  private earpiece(): FrameSink {
    const sinks = [this.endpoint?.sink, this.tap].filter((s): s is FrameSink => s !== undefined);
    return {
      write: (frame) => {
        // An incoming call is heard once answered; an outgoing one plays early media (ringback).
        if (this.incoming && !this.answered) return;
        for (const s of sinks) s.write(frame);
      },
    };
  }

  private stopStream(): void {
    if (!this.stream) return;
    this.sock?.stop();
    this.offStream?.();
    this.endpoint?.close();
    this.stream = undefined;
    this.remote = undefined;
    this.endpoint = undefined;
    this.offStream = undefined;
  }
}

/** Makes the media ports of calls over a pool of pre-bound RTP sockets (see the header). */
export class CallMediaPorts {
  /** Hand this to CallAgent: `new CallAgent({ …, media: ports.factory })`. */
  readonly factory: MediaPortFactory = () => this.create();

  private readonly spares: RtpSocket[] = [];
  private readonly target: number;
  private readonly livePorts = new Set<CallMediaPort>();
  private readonly created = new Emitter<CallMediaPort>();
  private readonly log: Logger;
  private filling: Promise<void> | undefined;
  private isClosed = false;

  private constructor(private readonly o: CallMediaOptions) {
    checkCapabilities(o.capabilities);
    this.target = o.spares ?? DEFAULT_SPARES;
    this.log = o.logger.child("call-media");
  }

  /** Validates the options and binds the first spares (a bind failure other than a busy port throws). */
  static async open(o: CallMediaOptions): Promise<CallMediaPorts> {
    const ports = new CallMediaPorts(o);
    await ports.bindSpares();
    return ports;
  }

  /** The ports of calls not yet closed, oldest first. */
  get live(): readonly CallMediaPort[] {
    return [...this.livePorts];
  }

  /** Sockets bound and waiting for a call. */
  get ready(): number {
    return this.spares.length;
  }

  /** Reports each new port, synchronously, as its call is created. */
  onPort(listener: (port: CallMediaPort) => void): () => void {
    return this.created.on(listener);
  }

  /** One call's port, with a socket from the pool (or none: its offers and answers are refused). */
  create(): CallMediaPort {
    const sock = this.isClosed ? undefined : this.spares.shift();
    if (!sock && !this.isClosed) this.log.warn("no RTP socket ready for a new call");
    const port = new CallMediaPort(this.o, sock, (p) => {
      this.livePorts.delete(p);
    });
    if (sock) this.livePorts.add(port);
    this.refill();
    this.created.emit(port);
    return port;
  }

  /** Resolves once the pool has been refilled (or has given up for now). */
  async settled(): Promise<void> {
    while (this.filling) await this.filling;
  }

  /** Closes every port and spare; the factory makes only refusing ports afterwards. */
  async close(): Promise<void> {
    this.isClosed = true;
    await this.settled();
    const ports = [...this.livePorts];
    for (const p of ports) p.close();
    await Promise.all([...ports.map((p) => p.closed), ...this.spares.splice(0).map((s) => s.close())]);
  }

  private refill(): void {
    if (this.filling || this.isClosed || this.spares.length >= this.target) return;
    this.filling = this.bindSpares()
      .catch((err: unknown) => this.log.warn("RTP sockets not bound", { error: String(err) }))
      .finally(() => {
        this.filling = undefined;
      });
  }

  private async bindSpares(): Promise<void> {
    while (!this.isClosed && this.spares.length < this.target) {
      const sock = await RtpSocket.open({
        address: this.o.address,
        random: this.o.random,
        ...(this.o.portRange ? { portRange: this.o.portRange } : {}),
      });
      if (this.isClosed) {
        await sock.close();
        return;
      }
      this.spares.push(sock);
    }
  }
}

/** The factory maker: `const ports = await callMediaPorts(o); new CallAgent({ …, media: ports.factory })`. */
export function callMediaPorts(o: CallMediaOptions): Promise<CallMediaPorts> {
  return CallMediaPorts.open(o);
}
