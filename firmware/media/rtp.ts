/**
 * RTP fixed header codec (RFC 3550 §5.1) and a sender that stamps sequence numbers and
 * timestamps. Pure: bytes in, bytes out.
 *
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |V=2|P|X|  CC   |M|     PT      |       sequence number         |
 * |                           timestamp                           |
 * |           synchronization source (SSRC) identifier            |
 * |            contributing source (CSRC) identifiers (CC × 32)   |
 * | [X] profile-defined (16) | length in 32-bit words (16) | data |
 * |  payload …                               | [P] padding … | count |
 *
 * Parsing never throws: datagrams come from anyone on the network, so a malformed one is a
 * typed result (`{ ok: false, error }`) that the caller counts and drops. Building does throw
 * (RangeError) on out-of-range fields: those come from our own code, so they are bugs.
 *
 * The parsed payload and extension data are views into the input buffer, not copies: a call
 * parses 50 packets a second each way, and copying buys nothing while the caller holds the
 * datagram. A caller that keeps a payload beyond that copies it.
 */

export const RTP_VERSION = 2;
/** 12 bytes: V/P/X/CC, M/PT, sequence, timestamp, SSRC. */
export const RTP_HEADER_BYTES = 12;

/** A header extension (RFC 3550 §5.3.1): skipped by media code, kept for whoever knows the profile. */
export interface RtpExtension {
  /** The 16 "defined by profile" bits (0xBEDE for RFC 8285 one-byte headers). */
  profile: number;
  /** The extension body, a multiple of 4 bytes, without its 4-byte extension header. */
  data: Uint8Array;
}

export interface RtpPacket {
  marker: boolean;
  /** 0–127. */
  payloadType: number;
  /** 0–65535, wraps. */
  sequenceNumber: number;
  /** 0–2³²−1, wraps, in the payload format's clock (8000 Hz for G.711 and telephone-event). */
  timestamp: number;
  ssrc: number;
  /** Up to 15 contributing sources (a mixer's inputs). */
  csrcs: number[];
  extension?: RtpExtension;
  /** The payload without header, CSRCs, extension or padding. */
  payload: Uint8Array;
  /** Padding bytes removed from the end (0 when P was clear); includes the count byte itself. */
  paddingBytes: number;
}

export type RtpParseError =
  | "too-short"
  | "bad-version"
  | "csrc-overflow"
  | "extension-overflow"
  | "bad-padding";

export type RtpParseResult =
  | { ok: true; packet: RtpPacket }
  | { ok: false; error: RtpParseError; detail: string };

const u16 = (b: Uint8Array, i: number) => (b[i]! << 8) | b[i + 1]!;
const u32 = (b: Uint8Array, i: number) =>
  ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;

function fail(error: RtpParseError, detail: string): RtpParseResult {
  return { ok: false, error, detail };
}

/** Parses one RTP packet. Every length in the header is checked against the datagram's size. */
export function parseRtp(bytes: Uint8Array): RtpParseResult {
  if (bytes.length < RTP_HEADER_BYTES)
    return fail("too-short", `${bytes.length} bytes, an RTP header needs ${RTP_HEADER_BYTES}`);
  const b0 = bytes[0]!;
  const version = b0 >> 6;
  if (version !== RTP_VERSION) return fail("bad-version", `version ${version}, expected 2`);
  const hasPadding = (b0 & 0x20) !== 0;
  const hasExtension = (b0 & 0x10) !== 0;
  const cc = b0 & 0x0f;
  const b1 = bytes[1]!;

  let at = RTP_HEADER_BYTES;
  if (at + cc * 4 > bytes.length)
    return fail("csrc-overflow", `CC=${cc} needs ${at + cc * 4} bytes, packet has ${bytes.length}`);
  const csrcs: number[] = [];
  for (let i = 0; i < cc; i++, at += 4) csrcs.push(u32(bytes, at));

  let extension: RtpExtension | undefined;
  if (hasExtension) {
    if (at + 4 > bytes.length)
      return fail("extension-overflow", `X set but no room for the 4-byte extension header`);
    const profile = u16(bytes, at);
    const words = u16(bytes, at + 2);
    const end = at + 4 + words * 4;
    if (end > bytes.length)
      return fail(
        "extension-overflow",
        `extension of ${words} words ends at ${end}, packet has ${bytes.length}`,
      );
    extension = { profile, data: bytes.subarray(at + 4, end) };
    at = end;
  }

  let paddingBytes = 0;
  if (hasPadding) {
    // The last octet counts the padding including itself (§5.1), so 0 is as invalid as a count
    // that reaches back into the header: RFC 3550 §A.1 drops both.
    paddingBytes = bytes[bytes.length - 1]!;
    if (paddingBytes === 0) return fail("bad-padding", "P set with a padding count of 0");
    if (paddingBytes > bytes.length - at)
      return fail(
        "bad-padding",
        `padding of ${paddingBytes} bytes exceeds the ${bytes.length - at} after the header`,
      );
  }

  const packet: RtpPacket = {
    marker: (b1 & 0x80) !== 0,
    payloadType: b1 & 0x7f,
    sequenceNumber: u16(bytes, 2),
    timestamp: u32(bytes, 4),
    ssrc: u32(bytes, 8),
    csrcs,
    payload: bytes.subarray(at, bytes.length - paddingBytes),
    paddingBytes,
  };
  if (extension) packet.extension = extension;
  return { ok: true, packet };
}

/** What encodeRtp needs; csrcs, extension and padding are optional. */
export interface RtpPacketInit {
  marker?: boolean;
  payloadType: number;
  sequenceNumber: number;
  timestamp: number;
  ssrc: number;
  csrcs?: readonly number[];
  extension?: RtpExtension;
  payload: Uint8Array;
  /** Total padding bytes to append (1–255, the count byte included); 0 or absent for none. */
  paddingBytes?: number;
}

function checkInt(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new RangeError(`RTP ${name} ${v} is not in 0..${max}`);
}

/** Serialises a packet. Throws RangeError on field values no packet can carry (a caller's bug). */
export function encodeRtp(p: RtpPacketInit): Uint8Array {
  const csrcs = p.csrcs ?? [];
  const padding = p.paddingBytes ?? 0;
  checkInt("payload type", p.payloadType, 0x7f);
  checkInt("sequence number", p.sequenceNumber, 0xffff);
  checkInt("timestamp", p.timestamp, 0xffffffff);
  checkInt("SSRC", p.ssrc, 0xffffffff);
  if (csrcs.length > 15) throw new RangeError(`RTP carries at most 15 CSRCs, got ${csrcs.length}`);
  for (const c of csrcs) checkInt("CSRC", c, 0xffffffff);
  checkInt("padding", padding, 0xff);
  const ext = p.extension;
  if (ext) {
    checkInt("extension profile", ext.profile, 0xffff);
    if (ext.data.length % 4 !== 0 || ext.data.length / 4 > 0xffff)
      throw new RangeError(`RTP extension data must be whole 32-bit words, got ${ext.data.length} bytes`);
  }

  const extBytes = ext ? 4 + ext.data.length : 0;
  const total = RTP_HEADER_BYTES + csrcs.length * 4 + extBytes + p.payload.length + padding;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out[0] = (RTP_VERSION << 6) | (padding > 0 ? 0x20 : 0) | (ext ? 0x10 : 0) | csrcs.length;
  out[1] = (p.marker ? 0x80 : 0) | p.payloadType;
  view.setUint16(2, p.sequenceNumber);
  view.setUint32(4, p.timestamp);
  view.setUint32(8, p.ssrc);
  let at = RTP_HEADER_BYTES;
  for (const c of csrcs) {
    view.setUint32(at, c);
    at += 4;
  }
  if (ext) {
    view.setUint16(at, ext.profile);
    view.setUint16(at + 2, ext.data.length / 4);
    out.set(ext.data, at + 4);
    at += extBytes;
  }
  out.set(p.payload, at);
  if (padding > 0) out[total - 1] = padding;
  return out;
}

/** a − b for 16-bit sequence numbers, in −32768..32767: which came first across a wrap. */
export function seqDiff(a: number, b: number): number {
  return ((((a - b) & 0xffff) + 0x8000) & 0xffff) - 0x8000;
}

/** a − b for 32-bit RTP timestamps, as a signed 32-bit number. */
export function tsDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export interface RtpSenderOptions {
  ssrc: number;
  payloadType: number;
  /**
   * First sequence number and timestamp. RFC 3550 §5.1 wants both random, so that a stream is
   * hard to spoof into and known-plaintext attacks on SRTP get no foothold; the caller draws them
   * from its Random port (this core has none of its own).
   */
  initialSequence: number;
  initialTimestamp: number;
  csrcs?: readonly number[];
}

/**
 * Numbers one outgoing stream. Each packet takes the next sequence number; the timestamp moves
 * with the media clock, not with packets: `frame()` advances it by the frame's sample count,
 * `packet()` sends at a timestamp the caller names (RFC 4733 events keep their start timestamp
 * while their packets go out), and `advance()` moves it over time in which nothing was sent.
 */
export class RtpSender {
  readonly ssrc: number;
  readonly payloadType: number;
  private seq: number;
  private ts: number;
  private readonly csrcs: readonly number[];

  constructor(o: RtpSenderOptions) {
    checkInt("SSRC", o.ssrc, 0xffffffff);
    checkInt("payload type", o.payloadType, 0x7f);
    checkInt("sequence number", o.initialSequence, 0xffff);
    checkInt("timestamp", o.initialTimestamp, 0xffffffff);
    this.ssrc = o.ssrc;
    this.payloadType = o.payloadType;
    this.seq = o.initialSequence;
    this.ts = o.initialTimestamp;
    this.csrcs = o.csrcs ?? [];
  }

  /** The sequence number the next packet will carry. */
  get nextSequence(): number {
    return this.seq;
  }

  /** The media timestamp of the next frame. */
  get nextTimestamp(): number {
    return this.ts;
  }

  /** A media frame at the current timestamp; then the timestamp advances by `samples`. */
  frame(payload: Uint8Array, samples: number, opts: { marker?: boolean } = {}): Uint8Array {
    const bytes = this.packet(payload, { timestamp: this.ts, marker: opts.marker ?? false });
    this.advance(samples);
    return bytes;
  }

  /**
   * A packet at an explicit timestamp, optionally of another payload type sharing this stream's
   * numbering (telephone-event rides the audio stream's SSRC and sequence, RFC 4733 §2.1).
   */
  packet(payload: Uint8Array, o: { timestamp: number; marker?: boolean; payloadType?: number }): Uint8Array {
    const bytes = encodeRtp({
      marker: o.marker ?? false,
      payloadType: o.payloadType ?? this.payloadType,
      sequenceNumber: this.seq,
      timestamp: o.timestamp >>> 0,
      ssrc: this.ssrc,
      csrcs: this.csrcs,
      payload,
    });
    this.seq = (this.seq + 1) & 0xffff;
    return bytes;
  }

  /** Moves the media clock on by `samples` without sending (silence suppression, a DTMF event). */
  advance(samples: number): void {
    if (!Number.isInteger(samples) || samples < 0)
      throw new RangeError(`cannot advance by ${samples} samples`);
    this.ts = (this.ts + samples) >>> 0;
  }
}
