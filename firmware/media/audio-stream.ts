/**
 * One negotiated audio stream of a call, end to end: PCM frames in, (S)RTP datagrams out; datagrams
 * in, PCM frames out. Pure, like the cores it joins (rtp, srtp, g711, dtmf, jitter-buffer, demux):
 * time reaches it only as `nowMs` arguments, randomness from the injected Random, and the socket
 * and the 20 ms ticker live in platform/rtp-socket.ts.
 *
 * Codecs and rates: G.711 (PCMU, PCMA) at 8 kHz and G.722 at 16 kHz. The stream runs at the rate
 * of the codec it sends (`sampleRate`, `frameSamples`: 160 or 320 samples per 20 ms), and its
 * playout frames carry that rate; the RTP clock is 8000 Hz for all three (RFC 3551 §4.5.2: G.722's
 * clock runs at half its sampling rate), so a 20 ms frame steps the timestamp by 160 either way and
 * the jitter buffer, RTCP and telephone-events need not know which codec plays. G.722 keeps
 * ADPCM state: one encoder per stream, one decoder per received codec (restarted with a new
 * remote SSRC). A packet of the other rate (the peer may send any codec of the answer) is
 * decoded at its own rate and resampled by two (a half-band filter) to the stream's.
 *
 * Sending: `sendFrame(pcm, nowMs)` encodes, numbers the packet (RtpSender) and protects it
 * (SrtpSender), or returns nothing when the direction does not send, the stream is muted, or an
 * RFC 4733 event is replacing the audio. The media clock advances with every frame whether or not
 * it is sent, so that after hold, mute or a digit the RTP timestamp still tells the peer how much
 * time passed (its jitter buffer would otherwise take the resumed audio for very late packets).
 * `sendDigit` returns the press's telephone-event packets with the offsets to send them at; with
 * no telephone-event negotiated it mixes the keypad tone into the outgoing audio instead.
 *
 * Receiving: `receive(bytes, nowMs)` tells RTP from RTCP from STUN and the rest (RFC 7983, demux.ts);
 * unprotects (a bad tag, a replay or a packet too old for the window is counted and dropped, and
 * nothing about it is remembered); parses; keeps to one remote SSRC; sends audio to the jitter
 * buffer and telephone-events to the DTMF receiver, whose reports come back as events. Nothing on
 * this path throws: every datagram may come from anyone.
 *
 * Playout: `playout(nowMs)`, once per frame time, pops the jitter buffer and decodes; a lost frame
 * is concealed (the jitter buffer repeats the last one, which is played quieter each time, then
 * silence).
 *
 * RTCP (RFC 3550 §6), minimal: `rtcp(nowMs)` returns a compound SR (or RR when we have not sent
 * since the last report) + SDES CNAME every 5 s, so the peer sees us alive even while we send no
 * RTP (hold, mute: many gateways end a call whose media went quiet). Incoming SR/RR give the
 * round-trip time (LSR/DLSR) and the peer's view of our loss. RTCP still flows when the direction
 * is inactive (RFC 3264 §5.1). The codec for SR/RR/SDES/BYE is here rather than in its own module
 * because this stream is its only user and only these four packet types are needed.
 *
 * Re-key (`update`, a re-INVITE's new SDP): direction, formats and keys change, the stream does
 * not: SSRC, sequence numbers and media clock carry on, and so does the jitter buffer. A changed
 * send key starts a new SRTP context; an unchanged one keeps its context, because a fresh context
 * under the same master key would start its rollover counter again at 0 and reuse keystream. A
 * changed receive key keeps the old context beside the new one until the peer has been heard under
 * the new key for a grace period, so that packets already in flight under the old key still play.
 */
import { Emitter } from "../core/emitter.ts";
import { HandsetError } from "../core/errors.ts";
import { hexToken, type Random } from "../core/random.ts";
import { classifyPacket, type PacketKind } from "./demux.ts";
import { type DtmfDigit, DtmfReceiver, type DtmfReport, dtmfPressPackets } from "./dtmf.ts";
import { PCMA, PCMU } from "./g711.ts";
import { G722Decoder, G722Encoder } from "./g722.ts";
import { JitterBuffer, type JitterBufferOptions, type JitterBufferStats } from "./jitter-buffer.ts";
import { parseRtp, RtpSender, seqDiff } from "./rtp.ts";
import { type SrtpPolicy, SrtpReceiver, SrtpSender, type UnprotectFailure } from "./srtp.ts";
import { dtmfFrequencies, ToneGenerator } from "./tone.ts";

export type AudioCodecName = "PCMU" | "PCMA" | "G722";
/** The rates a stream runs at: narrowband (G.711) and wideband (G.722). Equal to hal/audio.ts's. */
export type SampleRate = 8000 | 16000;
/** The SDP direction attribute, from our side: "sendonly" means we send and do not receive. */
export type MediaDirection = "sendrecv" | "sendonly" | "recvonly" | "inactive";

/** Our key (what we protect with) and the peer's (what we unprotect with), from a=crypto. */
export interface AudioStreamSrtp {
  send: SrtpPolicy;
  receive: SrtpPolicy;
}

/** What the SDP offer/answer settled for this stream. */
export interface AudioStreamParams {
  /** The payload type we send audio with. */
  payloadType: number;
  codec: AudioCodecName;
  /** Frame length; 20 ms unless the SDP says otherwise. */
  ptimeMs?: number;
  /**
   * Every audio format the peer may send us (RFC 3264 §6.1: any codec of the answer, not only
   * the one we picked). Defaults to the one we send.
   */
  receiveFormats?: ReadonlyArray<{ payloadType: number; codec: AudioCodecName }>;
  /** telephone-event's payload type, when negotiated. */
  telephoneEventPt?: number;
  /** CN's payload type, when negotiated: its packets play as silence. */
  comfortNoisePt?: number;
  /** Absent: plain RTP. */
  srtp?: AudioStreamSrtp;
  direction: MediaDirection;
}

export interface AudioStreamOptions {
  /** SSRC, first sequence number and first timestamp come from here (RFC 3550 §5.1: random). */
  random: Random;
  /** Our SSRC when the offer already announced it (a=x-ssrc-range); otherwise drawn. */
  ssrc?: number;
  /** RTCP CNAME; default a random per-call token (RFC 7022: no stable identifier on the wire). */
  cname?: string;
  /** Default 5000 ms. */
  rtcpIntervalMs?: number;
  /** Added to nowMs to give the wall clock an SR's NTP timestamp carries (default 0). */
  ntpOffsetMs?: number;
  /** Jitter-buffer settings beyond frame length and clock (its own defaults otherwise). */
  jitterBuffer?: Omit<JitterBufferOptions<unknown>, "silence" | "frameMs" | "clockRate">;
  /** How long packets under a replaced receive key are still accepted after the new key is heard (1000 ms). */
  rekeyGraceMs?: number;
}

export type AudioStreamEvent =
  | { type: "dtmf"; digit: DtmfDigit; timestamp: number }
  | { type: "dtmf-end"; digit: DtmfDigit; timestamp: number; durationMs: number }
  /** The peer's SSRC, first heard or changed (a transfer behind a gateway, a restarted source). */
  | { type: "remote-ssrc"; ssrc: number; previous: number | undefined }
  /** The peer said RTCP BYE. */
  | { type: "bye"; ssrc: number }
  /** An SR or RR about us arrived; roundTripMs when it carried an LSR. */
  | { type: "rtcp-report"; fractionLost: number; cumulativeLost: number; roundTripMs: number | undefined };

export interface ReceiveOutcome {
  kind: PacketKind;
  /**
   * True when the datagram is the peer's: it verified under SRTP (or, for plain RTP, parsed and
   * came from the remote SSRC). Symmetric RTP latches only onto such packets.
   */
  authenticated: boolean;
  /** Why it was dropped or ignored, when it was. */
  reason?: string;
  events: AudioStreamEvent[];
}

export interface PlayoutFrame {
  pcm: Int16Array;
  /** The rate of `pcm`: the stream's (its send codec's). */
  rate: SampleRate;
  /** audio: a received frame; concealed: a lost one made up; filler: CN or a DTMF event's slot; idle: nothing to play. */
  kind: "audio" | "concealed" | "filler" | "idle";
}

/** One packet of a key press, to be sent `atMs` after the sendDigit call. */
export interface DigitPacket {
  atMs: number;
  bytes: Uint8Array;
}

export interface AudioStreamStats {
  ssrc: number;
  remoteSsrc: number | undefined;
  packetsSent: number;
  /** Datagram bytes, SRTP overhead included. */
  bytesSent: number;
  packetsReceived: number;
  bytesReceived: number;
  /** RFC 3550 §A.3: packets the peer sent that never arrived (expected − received, ≥ 0). */
  lost: number;
  /** Arrived after their playout slot had passed. */
  late: number;
  /** Frames played that were made up (repeat or silence). */
  concealed: number;
  duplicates: number;
  reordered: number;
  srtpBadTag: number;
  /** Replays and packets older than the replay window. */
  srtpReplayed: number;
  /** RTP/RTCP that did not parse, or SRTP too short or with an unknown MKI. */
  malformed: number;
  stun: number;
  /** Other non-media datagrams (DTLS, ZRTP, TURN channel data, garbage). */
  ignored: number;
  /** Authentic packets of another SSRC while the current one is still talking. */
  otherSsrc: number;
  unknownPayloadType: number;
  /** Packets our own SRTP context refused to protect (a bug if ever non-zero). */
  sendRefused: number;
  digitsSent: number;
  digitsReceived: number;
  /** RFC 3550 interarrival jitter of the peer's packets. */
  jitterMs: number;
  /** Audio the jitter buffer holds ahead of playout: its share of mouth-to-ear delay now. */
  jitterBufferDelayMs: number;
  jitterBufferTargetMs: number;
  rtcpSent: number;
  rtcpReceived: number;
  /** From the last SR/RR that answered one of our SRs. */
  roundTripMs: number | undefined;
  /** What the peer last reported of our stream: fraction 0–1 and cumulative count. */
  remoteFractionLost: number | undefined;
  remoteCumulativeLost: number | undefined;
  playout: JitterBufferStats;
}

/** The RTP clock of every codec here (G.722's included, RFC 3551 §4.5.2). */
const CLOCK_RATE = 8000;
const DEFAULT_PTIME = 20;
const DEFAULT_RTCP_INTERVAL_MS = 5000;
const DEFAULT_REKEY_GRACE_MS = 1000;
/** Default key press length: Q.24 asks ≥ 40 ms; 100 ms survives a lost packet or two. */
const DEFAULT_DIGIT_MS = 100;
/** In-band digits need a pause between them, or two equal digits read as one long tone (Q.24: ≥ 40 ms). */
const INBAND_GAP_MS = 60;
/** In-band keypad tone level per component: −10 dBFS, well above any detector's threshold, below clipping. */
const INBAND_LEVEL_DBFS = -10;
/** A new remote SSRC takes over only once the current one has been quiet this many frames. */
const SSRC_TAKEOVER_FRAMES = 3;
/** Seconds between 1900 (NTP's epoch) and 1970. */
const NTP_UNIX_OFFSET_S = 2_208_988_800;
/** RFC 3550 §A.1: a jump this far is a restart only if the next packet follows it. */
const MAX_DROPOUT = 3000;
const MAX_MISORDER = 100;

const RTCP_SR = 200;
const RTCP_RR = 201;
const RTCP_SDES = 202;
const RTCP_BYE = 203;

interface AudioPayload {
  codec: AudioCodecName;
  bytes: Uint8Array;
}

/** A codec as the stream uses it: its rate, and coders made per stream (G.722's carry state). */
interface CodecSpec {
  rate: SampleRate;
  /** Samples each payload octet stands for. */
  samplesPerOctet: 1 | 2;
  encoder(): (pcm: Int16Array) => Uint8Array;
  decoder(): (bytes: Uint8Array) => Int16Array;
}

const CODECS: Readonly<Record<AudioCodecName, CodecSpec>> = {
  PCMU: {
    rate: 8000,
    samplesPerOctet: 1,
    encoder: () => (pcm) => PCMU.encode(pcm),
    decoder: () => (bytes) => PCMU.decode(bytes),
  },
  PCMA: {
    rate: 8000,
    samplesPerOctet: 1,
    encoder: () => (pcm) => PCMA.encode(pcm),
    decoder: () => (bytes) => PCMA.decode(bytes),
  },
  G722: {
    rate: 16000,
    samplesPerOctet: 2,
    encoder: () => {
      const e = new G722Encoder();
      // G.722 codes pairs; a frame is always even (20 ms is 320 samples), a stray odd sample is dropped.
      return (pcm) => e.encode(pcm.length % 2 === 0 ? pcm : pcm.subarray(0, pcm.length - 1));
    },
    decoder: () => {
      const d = new G722Decoder();
      return (bytes) => d.decode(bytes);
    },
  },
};

/**
 * Half-band low-pass for resampling by two: a 31-tap windowed sinc (Blackman) cut at a quarter of
 * the higher rate. Only a packet in the other codec's rate goes through it, so plain and short
 * beats optimal; it keeps a 1 kHz tone within a fraction of a dB and images 50 dB down or more.
 */
const HALF_BAND: Float64Array = (() => {
  const taps = 31;
  const mid = (taps - 1) / 2;
  const h = new Float64Array(taps);
  let sum = 0;
  for (let i = 0; i < taps; i++) {
    const t = i - mid;
    const sinc = t === 0 ? 0.5 : Math.sin((Math.PI * t) / 2) / (Math.PI * t);
    const w =
      0.42 - 0.5 * Math.cos((2 * Math.PI * i) / (taps - 1)) + 0.08 * Math.cos((4 * Math.PI * i) / (taps - 1));
    h[i] = sinc * w;
    sum += h[i]!;
  }
  for (let i = 0; i < taps; i++) h[i]! /= sum;
  return h;
})();

/** Resampling by two, up or down, keeping the filter's history from one frame to the next. */
class Resampler {
  private readonly history = new Float64Array(HALF_BAND.length);
  private at = 0;

  constructor(private readonly up: boolean) {}

  run(input: Int16Array): Int16Array {
    const out = new Int16Array(this.up ? input.length * 2 : input.length >> 1);
    const h = HALF_BAND;
    const n = h.length;
    const push = (x: number) => {
      this.history[this.at] = x;
      this.at = (this.at + 1) % n;
    };
    const filtered = () => {
      let acc = 0;
      // history[at] is the oldest sample; the taps are symmetric, so their order does not matter.
      for (let i = 0; i < n; i++) acc += h[i]! * this.history[(this.at + i) % n]!;
      return acc;
    };
    const clamp = (x: number) => (x >= 32767 ? 32767 : x <= -32768 ? -32768 : Math.round(x));
    if (this.up) {
      // Zero-stuffing halves the level; the filter's gain of 2 restores it.
      for (let i = 0; i < input.length; i++) {
        push(input[i]!);
        out[2 * i] = clamp(2 * filtered());
        push(0);
        out[2 * i + 1] = clamp(2 * filtered());
      }
    } else {
      for (let i = 0; i < out.length; i++) {
        push(input[2 * i]!);
        push(input[2 * i + 1]!);
        out[i] = clamp(filtered());
      }
    }
    return out;
  }
}

/** A received codec's decoder, with the resampler to the stream's rate when the rates differ. */
interface ReceiveDecoder {
  decode: (bytes: Uint8Array) => Int16Array;
  resampler: Resampler | undefined;
  rate: SampleRate;
}

const sends = (d: MediaDirection) => d === "sendrecv" || d === "sendonly";
const receives = (d: MediaDirection) => d === "sendrecv" || d === "recvonly";

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function samePolicy(a: SrtpPolicy | undefined, b: SrtpPolicy | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  if (a.suite !== b.suite || !sameBytes(a.masterKey, b.masterKey) || !sameBytes(a.masterSalt, b.masterSalt))
    return false;
  if (!a.mki || !b.mki) return !a.mki && !b.mki;
  return a.mki.length === b.mki.length && BigInt(a.mki.value) === BigInt(b.mki.value);
}

function checkPayloadType(name: string, pt: number | undefined): void {
  if (pt !== undefined && (!Number.isInteger(pt) || pt < 0 || pt > 127))
    throw new HandsetError("media-params", `${name} ${pt} is not an RTP payload type (0..127)`);
}

function checkParams(p: AudioStreamParams): void {
  checkPayloadType("payload type", p.payloadType);
  checkPayloadType("telephone-event payload type", p.telephoneEventPt);
  checkPayloadType("CN payload type", p.comfortNoisePt);
  for (const f of p.receiveFormats ?? []) checkPayloadType("receive payload type", f.payloadType);
  if (!Object.hasOwn(CODECS, p.codec))
    throw new HandsetError("media-params", `codec ${p.codec} is neither G.711 nor G.722`);
  for (const f of p.receiveFormats ?? [])
    if (!Object.hasOwn(CODECS, f.codec))
      throw new HandsetError("media-params", `receive codec ${f.codec} is neither G.711 nor G.722`);
  const ptime = p.ptimeMs ?? DEFAULT_PTIME;
  if (!Number.isInteger((ptime * CLOCK_RATE) / 1000) || ptime <= 0 || ptime > 200)
    throw new HandsetError("media-params", `ptime ${ptime} ms is not a whole number of samples up to 200 ms`);
}

/** RFC 3550 §A.1 reception statistics for one remote SSRC. */
class ReceptionStats {
  private baseSeq = 0;
  private maxSeq = 0;
  private cycles = 0;
  private badSeq: number | undefined;
  received = 0;
  private expectedPrior = 0;
  private receivedPrior = 0;
  private started = false;

  /** Counts one packet; a jump is believed once the next packet follows it (§A.1's probation, shortened). */
  update(seq: number): void {
    if (!this.started) {
      this.restart(seq);
      this.received = 1;
      return;
    }
    const delta = seqDiff(seq, this.maxSeq);
    if (delta > 0 && delta < MAX_DROPOUT) {
      if (seq < this.maxSeq) this.cycles += 65536;
      this.maxSeq = seq;
    } else if (delta <= -MAX_MISORDER || delta >= MAX_DROPOUT) {
      if (this.badSeq === seq) {
        // Two in a row: the sender restarted its numbering. Start counting afresh.
        this.restart(seq);
      } else {
        this.badSeq = (seq + 1) & 0xffff;
        return;
      }
    }
    // Duplicates and reordered packets within MAX_MISORDER count as received (§A.3 accepts the overcount).
    this.received++;
  }

  private restart(seq: number): void {
    this.baseSeq = seq;
    this.maxSeq = seq;
    this.cycles = 0;
    this.badSeq = undefined;
    this.received = 0;
    this.expectedPrior = 0;
    this.receivedPrior = 0;
    this.started = true;
  }

  get extendedMax(): number {
    return this.cycles + this.maxSeq;
  }

  get expected(): number {
    return this.started ? this.extendedMax - this.baseSeq + 1 : 0;
  }

  get lost(): number {
    return Math.max(0, this.expected - this.received);
  }

  /** The 8-bit fraction lost since the last call (§A.3), and the interval's counters move on. */
  takeFraction(): number {
    const expectedInterval = this.expected - this.expectedPrior;
    const receivedInterval = this.received - this.receivedPrior;
    this.expectedPrior = this.expected;
    this.receivedPrior = this.received;
    const lostInterval = expectedInterval - receivedInterval;
    return expectedInterval === 0 || lostInterval <= 0
      ? 0
      : Math.floor((lostInterval << 8) / expectedInterval);
  }

  get hasData(): boolean {
    return this.started;
  }
}

/** An NTP timestamp for a wall-clock time in ms: [seconds since 1900, fraction of 2^32]. */
function ntpOf(ms: number): [number, number] {
  const seconds = Math.floor(ms / 1000);
  const frac = Math.floor(((ms - seconds * 1000) / 1000) * 2 ** 32);
  return [(seconds + NTP_UNIX_OFFSET_S) >>> 0, frac >>> 0];
}

/** The middle 32 bits of the NTP timestamp (§6.4.1 LSR), in 1/65536 s. */
function ntpMiddle(ms: number): number {
  const [sec, frac] = ntpOf(ms);
  return (((sec & 0xffff) << 16) | (frac >>> 16)) >>> 0;
}

export class AudioStream {
  readonly ssrc: number;
  readonly cname: string;
  /** DTMF, SSRC changes, BYE and RTCP reports, as they arrive (the same ones receive() returns). */
  readonly events = new Emitter<AudioStreamEvent>();

  private params: AudioStreamParams;
  private codecName: AudioCodecName;
  private encodeFrame: (pcm: Int16Array) => Uint8Array;
  private rate: SampleRate;
  private ptimeMs: number;
  /** Samples per frame at the stream's rate, and the RTP timestamp step of a frame (8 kHz clock). */
  private samplesPerFrame: number;
  private rtpFrameStep: number;
  private formats = new Map<number, AudioCodecName>();
  /** Decoders of the codecs the peer sends, made on first use; a new remote SSRC starts them over. */
  private decoders = new Map<AudioCodecName, ReceiveDecoder>();
  private muted = false;

  private readonly random: Random;
  private readonly sender: RtpSender;
  private srtpTx: SrtpSender | undefined;
  private srtpRx: SrtpReceiver | undefined;
  /** The previous receive context after a re-key, kept for packets still in flight under it. */
  private retiring: { rx: SrtpReceiver; newKeyHeardAt: number | undefined } | undefined;
  private readonly rekeyGraceMs: number;

  private readonly jitterOptions: AudioStreamOptions["jitterBuffer"];
  private jb: JitterBuffer<AudioPayload | null>;
  private dtmfRx = new DtmfReceiver();
  private reception = new ReceptionStats();
  private remoteSsrc: number | undefined;
  private lastRemoteAtMs = Number.NEGATIVE_INFINITY;
  /** The last audio packet queued: DTMF packets' slots are timed from it (see fillerTimestamp). */
  private lastAudio: { seq: number; ts: number } | undefined;
  private concealRun = 0;

  /** Where the media clock stood at the last sendFrame, to time SRs and digits between frames. */
  private lastFrame: { ts: number; atMs: number } | undefined;
  private marker = true;
  /** RFC 4733 events in flight: audio is withheld for the frames of ticks fromMs…untilMs. */
  private eventWindow: { fromMs: number; untilMs: number } | undefined;
  private digitBusyUntilMs = Number.NEGATIVE_INFINITY;
  private inband: Array<{ startMs: number; endMs: number; tone: ToneGenerator }> = [];

  private readonly rtcpIntervalMs: number;
  private readonly ntpOffsetMs: number;
  private nextRtcpAtMs: number | undefined;
  private sentSinceReport = false;
  private senderPackets = 0;
  private senderOctets = 0;
  /** The peer's last SR: its NTP middle bits and when it arrived, for our LSR/DLSR. */
  private lastRemoteSr: { middle: number; atMs: number } | undefined;

  private readonly c = {
    packetsSent: 0,
    bytesSent: 0,
    packetsReceived: 0,
    bytesReceived: 0,
    srtpBadTag: 0,
    srtpReplayed: 0,
    malformed: 0,
    stun: 0,
    ignored: 0,
    otherSsrc: 0,
    unknownPayloadType: 0,
    sendRefused: 0,
    digitsSent: 0,
    digitsReceived: 0,
    rtcpSent: 0,
    rtcpReceived: 0,
  };
  private roundTripMs: number | undefined;
  private remoteFractionLost: number | undefined;
  private remoteCumulativeLost: number | undefined;

  constructor(params: AudioStreamParams, o: AudioStreamOptions) {
    checkParams(params);
    this.random = o.random;
    const u32 = () => Buffer.from(this.random.bytes(4)).readUInt32BE(0);
    this.ssrc = o.ssrc ?? u32();
    const seq = Buffer.from(this.random.bytes(2)).readUInt16BE(0);
    this.sender = new RtpSender({
      ssrc: this.ssrc,
      payloadType: params.payloadType,
      initialSequence: seq,
      initialTimestamp: u32(),
    });
    this.cname = o.cname ?? hexToken(this.random, 8);
    this.rtcpIntervalMs = o.rtcpIntervalMs ?? DEFAULT_RTCP_INTERVAL_MS;
    this.ntpOffsetMs = o.ntpOffsetMs ?? 0;
    this.rekeyGraceMs = o.rekeyGraceMs ?? DEFAULT_REKEY_GRACE_MS;
    this.jitterOptions = o.jitterBuffer;
    this.params = params;
    this.codecName = params.codec;
    this.encodeFrame = CODECS[params.codec].encoder();
    this.rate = CODECS[params.codec].rate;
    this.ptimeMs = params.ptimeMs ?? DEFAULT_PTIME;
    this.samplesPerFrame = (this.ptimeMs * this.rate) / 1000;
    this.rtpFrameStep = (this.ptimeMs * CLOCK_RATE) / 1000;
    this.jb = this.newJitterBuffer();
    this.applyFormats(params);
    this.srtpTx = params.srtp ? new SrtpSender(params.srtp.send) : undefined;
    this.srtpRx = params.srtp ? new SrtpReceiver(params.srtp.receive) : undefined;
  }

  get direction(): MediaDirection {
    return this.params.direction;
  }

  /** Samples sendFrame takes and playout gives per frame, at sampleRate: 160 for G.711, 320 for G.722 (20 ms). */
  get frameSamples(): number {
    return this.samplesPerFrame;
  }

  /** The rate of the audio in and out: the send codec's (8000 for G.711, 16000 for G.722). */
  get sampleRate(): SampleRate {
    return this.rate;
  }

  get codec(): AudioCodecName {
    return this.codecName;
  }

  get frameMs(): number {
    return this.ptimeMs;
  }

  /** Whether the stream is SRTP: an authenticated packet then proves it came from the peer. */
  get secure(): boolean {
    return this.srtpRx !== undefined;
  }

  get isMuted(): boolean {
    return this.muted;
  }

  /** Mute sends no RTP (RTCP goes on, so the peer knows we are still here). */
  setMuted(muted: boolean): void {
    this.muted = muted;
  }

  /** Hold and resume: the direction alone, everything else as negotiated. */
  setDirection(direction: MediaDirection): void {
    this.update({ ...this.params, direction });
  }

  /**
   * A new SDP for the same stream (re-INVITE, UPDATE): new direction, formats or keys; the SSRC,
   * numbering, media clock and jitter buffer carry on.
   */
  update(params: AudioStreamParams): void {
    checkParams(params);
    const old = this.params;
    if ((params.ptimeMs ?? DEFAULT_PTIME) !== this.ptimeMs) {
      this.ptimeMs = params.ptimeMs ?? DEFAULT_PTIME;
      this.rtpFrameStep = (this.ptimeMs * CLOCK_RATE) / 1000;
      this.jb = this.newJitterBuffer();
    }
    this.params = params;
    if (params.codec !== this.codecName) {
      // A new codec starts its encoder afresh (the peer's decoder for it starts fresh too). The
      // rate may change with it (G.722 ↔ G.711): the frame length follows, the RTP clock does not.
      this.codecName = params.codec;
      this.encodeFrame = CODECS[params.codec].encoder();
      if (CODECS[params.codec].rate !== this.rate) {
        this.rate = CODECS[params.codec].rate;
        this.decoders = new Map();
      }
    }
    this.samplesPerFrame = (this.ptimeMs * this.rate) / 1000;
    this.applyFormats(params);
    if (!samePolicy(old.srtp?.send, params.srtp?.send))
      this.srtpTx = params.srtp ? new SrtpSender(params.srtp.send) : undefined;
    if (!samePolicy(old.srtp?.receive, params.srtp?.receive)) {
      // Keep the replaced context for stragglers; a context older than that is gone for good.
      this.retiring = this.srtpRx ? { rx: this.srtpRx, newKeyHeardAt: undefined } : undefined;
      this.srtpRx = params.srtp ? new SrtpReceiver(params.srtp.receive) : undefined;
    }
    // Stale audio must not play when receiving resumes, and a restarted send marks a talkspurt.
    if (receives(old.direction) && !receives(params.direction)) this.jb.reset();
    if (!sends(old.direction) && sends(params.direction)) this.marker = true;
  }

  /**
   * One frame of our audio (ptime's worth of samples at sampleRate). Returns the datagram to send,
   * or undefined when nothing goes out this frame.
   */
  sendFrame(pcm: Int16Array, nowMs: number): Uint8Array | undefined {
    this.lastFrame = { ts: this.sender.nextTimestamp, atMs: nowMs };
    // The RTP clock counts 8000 a second whatever the codec samples at.
    const samples = Math.round((pcm.length * CLOCK_RATE) / this.rate);
    const half = this.ptimeMs / 2;
    const w = this.eventWindow;
    const inEvent = w !== undefined && nowMs > w.fromMs - half && nowMs < w.untilMs + half;
    if (w && nowMs >= w.untilMs + half) this.eventWindow = undefined;
    if (!sends(this.params.direction) || this.muted || inEvent) {
      this.sender.advance(samples);
      this.marker = true;
      return undefined;
    }
    const payload = this.encodeFrame(this.inbandTone(pcm, nowMs));
    const rtp = this.sender.packet(payload, {
      timestamp: this.sender.nextTimestamp,
      marker: this.marker,
      payloadType: this.params.payloadType,
    });
    this.sender.advance(samples);
    this.marker = false;
    return this.protect(rtp, payload.length);
  }

  /**
   * A key press. With telephone-event: the RFC 4733 packets (their sequence numbers and keys taken
   * now), each with the offset from nowMs to send it at, the first at once; call it on a frame
   * tick, before that tick's sendFrame. Audio frames are withheld meanwhile, since the events
   * replace them one for one. A press while another is still going starts when it ends.
   * Without telephone-event the tone goes in-band and this returns []. Nothing when we do not send.
   */
  sendDigit(digit: DtmfDigit, nowMs: number, durationMs = DEFAULT_DIGIT_MS): DigitPacket[] {
    if (!sends(this.params.direction) || !(durationMs > 0)) return [];
    const startMs = Math.max(nowMs, this.digitBusyUntilMs);
    const te = this.params.telephoneEventPt;
    this.c.digitsSent++;
    if (te === undefined) {
      const [low, high] = dtmfFrequencies(digit);
      const tone = new ToneGenerator(
        [
          { hz: low, levelDbfs: INBAND_LEVEL_DBFS },
          { hz: high, levelDbfs: INBAND_LEVEL_DBFS },
        ],
        { sampleRate: this.rate },
      );
      this.inband.push({ startMs, endMs: startMs + durationMs, tone });
      this.digitBusyUntilMs = startMs + durationMs + INBAND_GAP_MS;
      return [];
    }
    // Updates every ptime, each taking the slot of the audio frame it replaces. The first goes out
    // at the key-down tick itself (dtmfPressPackets times it one interval later): its sequence
    // number is taken now, so an audio frame sent before it would carry a higher number yet
    // leave earlier. Its duration field is one interval ahead of the truth, which no receiver minds.
    const interval = this.ptimeMs;
    const press = dtmfPressPackets(digit, {
      startTimestamp: this.mediaTimestampAt(startMs),
      durationMs,
      intervalMs: interval,
      clockRate: CLOCK_RATE,
    });
    const out: DigitPacket[] = [];
    for (const p of press) {
      const rtp = this.sender.packet(p.payload, {
        timestamp: p.timestamp,
        marker: p.marker,
        payloadType: te,
      });
      const bytes = this.protect(rtp, p.payload.length);
      if (bytes) out.push({ atMs: startMs - nowMs + p.atMs - interval, bytes });
    }
    const lastAt = startMs + (press[press.length - 1]?.atMs ?? interval) - interval;
    // A press queued behind this one starts on the next tick: audio stays withheld across both.
    const w = this.eventWindow;
    this.eventWindow = { fromMs: w && w.untilMs + interval >= startMs ? w.fromMs : startMs, untilMs: lastAt };
    this.digitBusyUntilMs = lastAt + interval;
    this.marker = true;
    return out;
  }

  /** One datagram from the media socket(s). Never throws. */
  receive(bytes: Uint8Array, nowMs: number): ReceiveOutcome {
    const kind = classifyPacket(bytes);
    if (kind === "rtp") return this.receiveRtp(bytes, nowMs);
    if (kind === "rtcp") return this.receiveRtcp(bytes, nowMs);
    if (kind === "stun") this.c.stun++;
    else this.c.ignored++;
    return { kind, authenticated: false, reason: "not-media", events: [] };
  }

  /** The next frame to play; call once per frame time. */
  playout(nowMs: number): PlayoutFrame {
    const rate = this.rate;
    if (!receives(this.params.direction))
      return { pcm: new Int16Array(this.samplesPerFrame), rate, kind: "idle" };
    const out = this.jb.pop(nowMs);
    if (out.kind === "idle") {
      this.concealRun = 0;
      return { pcm: new Int16Array(this.samplesPerFrame), rate, kind: "idle" };
    }
    if (out.kind === "frame") {
      this.concealRun = 0;
      if (!out.payload) return { pcm: new Int16Array(this.samplesPerFrame), rate, kind: "filler" };
      return { pcm: this.decode(out.payload, 1), rate, kind: "audio" };
    }
    // A repeated frame, halved each time: a lost packet becomes a short fade, not a stutter. (For
    // G.722 the repeat runs through the decoder again, so its ADPCM state moves on with it.)
    this.concealRun++;
    const pcm = out.payload
      ? this.decode(out.payload, 0.5 ** this.concealRun)
      : new Int16Array(this.samplesPerFrame);
    return { pcm, rate, kind: "concealed" };
  }

  /** The compound RTCP packet due at nowMs (first call: at once; then every interval), or undefined. */
  rtcp(nowMs: number): Uint8Array | undefined {
    if (this.nextRtcpAtMs !== undefined && nowMs < this.nextRtcpAtMs) return undefined;
    this.nextRtcpAtMs = nowMs + this.rtcpIntervalMs;
    return this.protectRtcp(this.compound(nowMs, false));
  }

  /** RTCP BYE (with its report), for the end of the call. */
  bye(nowMs: number): Uint8Array | undefined {
    return this.protectRtcp(this.compound(nowMs, true));
  }

  stats(): AudioStreamStats {
    const jb = this.jb.stats();
    return {
      ssrc: this.ssrc,
      remoteSsrc: this.remoteSsrc,
      ...this.c,
      lost: this.reception.lost,
      late: jb.late,
      concealed: jb.concealed,
      duplicates: jb.duplicates,
      reordered: jb.reordered,
      jitterMs: jb.jitterMs,
      jitterBufferDelayMs: this.jb.delayMs,
      jitterBufferTargetMs: this.jb.targetDelayMs,
      roundTripMs: this.roundTripMs,
      remoteFractionLost: this.remoteFractionLost,
      remoteCumulativeLost: this.remoteCumulativeLost,
      playout: jb,
    };
  }

  // ── sending ────────────────────────────────────────────────────────────────────────────────

  private protect(rtp: Uint8Array, payloadLength: number): Uint8Array | undefined {
    let bytes = rtp;
    if (this.srtpTx) {
      const r = this.srtpTx.protectRtp(rtp);
      if (!r.ok) {
        this.c.sendRefused++;
        return undefined;
      }
      bytes = r.packet;
    }
    this.c.packetsSent++;
    this.c.bytesSent += bytes.length;
    this.senderPackets++;
    this.senderOctets += payloadLength;
    this.sentSinceReport = true;
    return bytes;
  }

  /** The RTP timestamp of an instant, on our media clock. */
  private mediaTimestampAt(ms: number): number {
    const f = this.lastFrame;
    if (!f) return this.sender.nextTimestamp;
    return (f.ts + Math.round(((ms - f.atMs) * CLOCK_RATE) / 1000)) >>> 0;
  }

  /** The frame to encode: ours, or an in-band keypad tone while one is due. */
  private inbandTone(pcm: Int16Array, nowMs: number): Int16Array {
    if (this.inband.length === 0) return pcm;
    const half = this.ptimeMs / 2;
    while (this.inband.length > 0 && nowMs >= this.inband[0]!.endMs - half) this.inband.shift();
    const d = this.inband[0];
    if (!d || nowMs < d.startMs - half) return pcm;
    return d.tone.next(pcm.length);
  }

  // ── receiving ──────────────────────────────────────────────────────────────────────────────

  private receiveRtp(bytes: Uint8Array, nowMs: number): ReceiveOutcome {
    let plain = bytes;
    let owned = false;
    if (this.srtpRx) {
      const r = this.unprotect(bytes, nowMs, "rtp");
      if (!r.ok) return this.dropped("rtp", r.reason);
      plain = r.packet;
      owned = true;
    }
    const parsed = parseRtp(plain);
    if (!parsed.ok) {
      this.c.malformed++;
      return { kind: "rtp", authenticated: false, reason: parsed.error, events: [] };
    }
    const p = parsed.packet;
    const events: AudioStreamEvent[] = [];
    if (!this.takeSsrc(p.ssrc, nowMs, events)) {
      this.c.otherSsrc++;
      return { kind: "rtp", authenticated: Boolean(this.srtpRx), reason: "other-ssrc", events };
    }
    this.lastRemoteAtMs = nowMs;
    this.reception.update(p.sequenceNumber);
    this.c.packetsReceived++;
    this.c.bytesReceived += bytes.length;
    const outcome: ReceiveOutcome = { kind: "rtp", authenticated: true, events };
    if (!receives(this.params.direction)) {
      // The peer has not caught up with our hold yet; its packets are genuine but do not play.
      outcome.reason = "not-receiving";
      return this.emitAll(outcome);
    }
    const codec = this.formats.get(p.payloadType);
    if (codec) {
      // A plain datagram's payload is a view into the socket's buffer; the jitter buffer keeps it.
      const payload = owned ? p.payload : p.payload.slice();
      this.jb.push(
        { sequenceNumber: p.sequenceNumber, timestamp: p.timestamp, payload: { codec, bytes: payload } },
        nowMs,
      );
      if (!this.lastAudio || seqDiff(p.sequenceNumber, this.lastAudio.seq) > 0)
        this.lastAudio = { seq: p.sequenceNumber, ts: p.timestamp };
    } else if (p.payloadType === this.params.telephoneEventPt) {
      for (const r of this.dtmfRx.receive(p)) events.push(this.dtmfEvent(r));
      this.jb.push(
        {
          sequenceNumber: p.sequenceNumber,
          timestamp: this.fillerTimestamp(p.sequenceNumber, p.timestamp),
          payload: null,
        },
        nowMs,
      );
    } else if (p.payloadType === this.params.comfortNoisePt) {
      this.jb.push({ sequenceNumber: p.sequenceNumber, timestamp: p.timestamp, payload: null }, nowMs);
    } else {
      this.c.unknownPayloadType++;
      outcome.reason = "unknown-payload-type";
    }
    return this.emitAll(outcome);
  }

  /**
   * The media time a telephone-event packet's slot stands for. Every packet of a press carries the
   * press's start, so its own timestamp would look ever later to the jitter buffer's transit
   * estimate; events replace audio frames one for one, so the slot's time follows from the last
   * audio packet and the sequence distance to it.
   */
  private fillerTimestamp(seq: number, ts: number): number {
    if (!this.lastAudio) return ts;
    return (this.lastAudio.ts + seqDiff(seq, this.lastAudio.seq) * this.rtpFrameStep) >>> 0;
  }

  private dtmfEvent(r: DtmfReport): AudioStreamEvent {
    if (r.kind === "digit") {
      this.c.digitsReceived++;
      return { type: "dtmf", digit: r.digit, timestamp: r.timestamp };
    }
    return { type: "dtmf-end", digit: r.digit, timestamp: r.timestamp, durationMs: r.durationMs };
  }

  /** Whether a packet of this SSRC is the peer's stream; a new SSRC takes over once the old one went quiet. */
  private takeSsrc(ssrc: number, nowMs: number, events: AudioStreamEvent[]): boolean {
    if (ssrc === this.remoteSsrc) return true;
    if (this.remoteSsrc !== undefined && nowMs - this.lastRemoteAtMs < SSRC_TAKEOVER_FRAMES * this.ptimeMs)
      return false;
    const previous = this.remoteSsrc;
    this.remoteSsrc = ssrc;
    if (previous !== undefined) {
      this.jb.reset();
      this.dtmfRx = new DtmfReceiver();
      this.decoders = new Map();
      this.reception = new ReceptionStats();
      this.lastAudio = undefined;
      this.lastRemoteSr = undefined;
    }
    events.push({ type: "remote-ssrc", ssrc, previous });
    return true;
  }

  private unprotect(
    bytes: Uint8Array,
    nowMs: number,
    kind: "rtp" | "rtcp",
  ): { ok: true; packet: Uint8Array } | { ok: false; reason: UnprotectFailure } {
    const rx = this.srtpRx!;
    const r = kind === "rtp" ? rx.unprotectRtp(bytes) : rx.unprotectRtcp(bytes);
    const old = this.retiring;
    if (r.ok) {
      if (old) {
        old.newKeyHeardAt ??= nowMs;
        if (nowMs - old.newKeyHeardAt >= this.rekeyGraceMs) this.retiring = undefined;
      }
      return r;
    }
    if (old && (r.reason === "bad-tag" || r.reason === "mki")) {
      const o = kind === "rtp" ? old.rx.unprotectRtp(bytes) : old.rx.unprotectRtcp(bytes);
      return o;
    }
    return r;
  }

  private dropped(kind: PacketKind, reason: UnprotectFailure): ReceiveOutcome {
    if (reason === "bad-tag") this.c.srtpBadTag++;
    else if (reason === "replay" || reason === "too-old") this.c.srtpReplayed++;
    else this.c.malformed++;
    return { kind, authenticated: false, reason, events: [] };
  }

  private emitAll(outcome: ReceiveOutcome): ReceiveOutcome {
    for (const e of outcome.events) this.events.emit(e);
    return outcome;
  }

  private decode(p: AudioPayload, gain: number): Int16Array {
    const n = this.samplesPerFrame;
    const spec = CODECS[p.codec];
    let d = this.decoders.get(p.codec);
    if (!d) {
      d = {
        decode: spec.decoder(),
        resampler: spec.rate === this.rate ? undefined : new Resampler(spec.rate < this.rate),
        rate: spec.rate,
      };
      this.decoders.set(p.codec, d);
    }
    // A peer's frame of another length is cut or padded to ours rather than upsetting the device.
    const codecSamples = (this.ptimeMs * spec.rate) / 1000;
    const octets = codecSamples / spec.samplesPerOctet;
    const decoded = d.decode(p.bytes.length <= octets ? p.bytes : p.bytes.subarray(0, octets));
    let pcm = decoded;
    if (decoded.length !== codecSamples) {
      pcm = new Int16Array(codecSamples);
      pcm.set(decoded);
    }
    if (d.resampler) pcm = d.resampler.run(pcm);
    if (pcm.length !== n) {
      const fitted = new Int16Array(n);
      fitted.set(pcm.subarray(0, n));
      pcm = fitted;
    }
    if (gain !== 1) for (let i = 0; i < n; i++) pcm[i] = Math.round(pcm[i]! * gain);
    return pcm;
  }

  private applyFormats(p: AudioStreamParams): void {
    this.formats = new Map();
    const list = p.receiveFormats ?? [{ payloadType: p.payloadType, codec: p.codec }];
    for (const f of list) this.formats.set(f.payloadType, f.codec);
  }

  private newJitterBuffer(): JitterBuffer<AudioPayload | null> {
    return new JitterBuffer<AudioPayload | null>({
      ...this.jitterOptions,
      frameMs: this.ptimeMs,
      clockRate: CLOCK_RATE,
      silence: null,
    });
  }

  // ── RTCP ───────────────────────────────────────────────────────────────────────────────────

  private protectRtcp(compound: Uint8Array): Uint8Array | undefined {
    let bytes = compound;
    if (this.srtpTx) {
      const r = this.srtpTx.protectRtcp(compound);
      if (!r.ok) {
        this.c.sendRefused++;
        return undefined;
      }
      bytes = r.packet;
    }
    this.c.rtcpSent++;
    return bytes;
  }

  /** SR or RR, SDES CNAME, and BYE when asked: the smallest compound packet §6.1 allows. */
  private compound(nowMs: number, bye: boolean): Uint8Array {
    const blocks = this.reportBlock(nowMs);
    const isSender = this.sentSinceReport;
    this.sentSinceReport = false;
    const parts: Uint8Array[] = [];
    if (isSender) {
      const sr = new Uint8Array(28 + blocks.length);
      const v = new DataView(sr.buffer);
      const [sec, frac] = ntpOf(nowMs + this.ntpOffsetMs);
      v.setUint32(4, this.ssrc);
      v.setUint32(8, sec);
      v.setUint32(12, frac);
      v.setUint32(16, this.mediaTimestampAt(nowMs));
      v.setUint32(20, this.senderPackets >>> 0);
      v.setUint32(24, this.senderOctets >>> 0);
      sr.set(blocks, 28);
      parts.push(withHeader(sr, RTCP_SR, blocks.length / 24));
    } else {
      const rr = new Uint8Array(8 + blocks.length);
      new DataView(rr.buffer).setUint32(4, this.ssrc);
      rr.set(blocks, 8);
      parts.push(withHeader(rr, RTCP_RR, blocks.length / 24));
    }
    const name = new TextEncoder().encode(this.cname).subarray(0, 255);
    // Chunk: SSRC, CNAME item, then at least one null octet (END), padded to a 32-bit boundary.
    const sdesLength = 4 + Math.ceil((4 + 2 + name.length + 1) / 4) * 4;
    const sdes = new Uint8Array(sdesLength);
    new DataView(sdes.buffer).setUint32(4, this.ssrc);
    sdes[8] = 1;
    sdes[9] = name.length;
    sdes.set(name, 10);
    parts.push(withHeader(sdes, RTCP_SDES, 1));
    if (bye) {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setUint32(4, this.ssrc);
      parts.push(withHeader(b, RTCP_BYE, 1));
    }
    const total = parts.reduce((n, p) => n + p.length, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** One report block about the peer's stream, or none before we have heard it. */
  private reportBlock(nowMs: number): Uint8Array {
    if (this.remoteSsrc === undefined || !this.reception.hasData) return new Uint8Array(0);
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setUint32(0, this.remoteSsrc);
    const lost = Math.min(this.reception.lost, 0x7fffff);
    v.setUint32(4, ((this.reception.takeFraction() << 24) | lost) >>> 0);
    v.setUint32(8, this.reception.extendedMax >>> 0);
    v.setUint32(12, Math.round((this.jb.stats().jitterMs * CLOCK_RATE) / 1000) >>> 0);
    const sr = this.lastRemoteSr;
    if (sr) {
      v.setUint32(16, sr.middle);
      v.setUint32(20, Math.round((nowMs - sr.atMs) * 65.536) >>> 0);
    }
    return b;
  }

  private receiveRtcp(bytes: Uint8Array, nowMs: number): ReceiveOutcome {
    let plain = bytes;
    if (this.srtpRx) {
      const r = this.unprotect(bytes, nowMs, "rtcp");
      if (!r.ok) return this.dropped("rtcp", r.reason);
      plain = r.packet;
    }
    const events: AudioStreamEvent[] = [];
    if (!this.parseCompound(plain, nowMs, events)) {
      this.c.malformed++;
      return { kind: "rtcp", authenticated: false, reason: "malformed", events };
    }
    this.c.rtcpReceived++;
    return this.emitAll({ kind: "rtcp", authenticated: true, events });
  }

  /** Reads SR, RR and BYE out of a compound packet; false if its framing is broken. */
  private parseCompound(p: Uint8Array, nowMs: number, events: AudioStreamEvent[]): boolean {
    const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
    let at = 0;
    let any = false;
    while (at + 4 <= p.length) {
      if (p[at]! >> 6 !== 2) return false;
      const count = p[at]! & 0x1f;
      const type = p[at + 1]!;
      const end = at + (v.getUint16(at + 2) + 1) * 4;
      if (end > p.length) return false;
      if ((type === RTCP_SR || type === RTCP_RR) && end >= at + 8) {
        let blocksAt = at + 8;
        if (type === RTCP_SR) {
          if (end < at + 28) return false;
          const sec = v.getUint32(at + 8);
          const frac = v.getUint32(at + 12);
          this.lastRemoteSr = { middle: (((sec & 0xffff) << 16) | (frac >>> 16)) >>> 0, atMs: nowMs };
          blocksAt = at + 28;
        }
        for (let i = 0; i < count && blocksAt + 24 * (i + 1) <= end; i++)
          this.takeReportBlock(v, blocksAt + 24 * i, nowMs, events);
      } else if (type === RTCP_BYE) {
        for (let i = 0; i < count && at + 8 + 4 * i <= end; i++)
          events.push({ type: "bye", ssrc: v.getUint32(at + 4 + 4 * i) });
      }
      any = true;
      at = end;
    }
    return any && at === p.length;
  }

  private takeReportBlock(v: DataView, at: number, nowMs: number, events: AudioStreamEvent[]): void {
    if (v.getUint32(at) !== this.ssrc) return;
    const word = v.getUint32(at + 4);
    const fraction = (word >>> 24) / 256;
    // The cumulative count is a signed 24-bit number (duplicates can make it negative).
    const cumulative = ((word & 0xffffff) << 8) >> 8;
    const lsr = v.getUint32(at + 16);
    const dlsr = v.getUint32(at + 20);
    let rtt: number | undefined;
    if (lsr !== 0) {
      const units = (ntpMiddle(nowMs + this.ntpOffsetMs) - lsr - dlsr) | 0;
      // A negative round trip is a peer's clock arithmetic gone wrong, not news about the network.
      if (units >= 0) rtt = (units * 1000) / 65536;
    }
    this.remoteFractionLost = fraction;
    this.remoteCumulativeLost = cumulative;
    if (rtt !== undefined) this.roundTripMs = rtt;
    events.push({
      type: "rtcp-report",
      fractionLost: fraction,
      cumulativeLost: cumulative,
      roundTripMs: rtt,
    });
  }
}

/** Fills in an RTCP common header (V=2, count, type, length in words − 1) on a body built with room for it. */
function withHeader(p: Uint8Array, type: number, count: number): Uint8Array {
  p[0] = 0x80 | (count & 0x1f);
  p[1] = type;
  new DataView(p.buffer, p.byteOffset, p.byteLength).setUint16(2, p.length / 4 - 1);
  return p;
}
