/**
 * SRTP and SRTCP (RFC 3711) for the two SDES crypto suites a desk phone is offered (RFC 4568 §6.2):
 * AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32. Pure: packets in, packets out; the socket
 * and the SDP parser live elsewhere.
 *
 * - SrtpSender protects RTP (implicit index: ROC ‖ SEQ) and RTCP (explicit 31-bit SRTCP index,
 *   E flag always set, one counter per SSRC starting at 0 as §3.4 requires).
 * - SrtpReceiver unprotects both, with ROC/s_l estimation per SSRC (Appendix A) and a 64-packet
 *   replay window per SSRC for SRTP and another for SRTCP. Nothing about a packet (ROC, s_l,
 *   window, a new SSRC's state) is remembered until its tag has verified.
 *
 * Wire input never throws: a rejected packet is a typed result and a counter in `stats`. Only a
 * caller's mistake (a key of the wrong length, an unknown suite, a bad MKI setting) throws a
 * HandsetError.
 *
 * The _32 suite shortens only the SRTP tag: SRTCP keeps 80 bits with both suites, since RFC 3711
 * §5.2 forbids a shorter HMAC-SHA1 tag for SRTCP (RFC 4568 §6.2 keeps it so for this suite, and
 * libsrtp-based peers expect it). The MKI is not authenticated (§3.1): tags cover the packet up to
 * the MKI, never the MKI itself.
 */
import { createCipheriv, createHmac, timingSafeEqual } from "node:crypto";
import { HandsetError } from "../core/errors.ts";
import {
  counterIv,
  deriveSessionKeys,
  MASTER_KEY_LENGTH,
  MASTER_SALT_LENGTH,
  type SessionKeys,
  srtcpCounterIv,
} from "./srtp-kdf.ts";
import { commitIndex, estimateIndex, ReplayWindow, type RolloverState } from "./srtp-replay.ts";

export type SrtpSuite = "AES_CM_128_HMAC_SHA1_80" | "AES_CM_128_HMAC_SHA1_32";

/** Tag lengths in octets, per suite. */
export const SRTP_SUITES: Readonly<Record<SrtpSuite, { rtpTag: number; rtcpTag: number }>> = {
  AES_CM_128_HMAC_SHA1_80: { rtpTag: 10, rtcpTag: 10 },
  AES_CM_128_HMAC_SHA1_32: { rtpTag: 4, rtcpTag: 10 },
};

/** The 30 octets an SDES `inline:` key carries (base64-decoded): master key ‖ master salt. */
export const INLINE_KEY_LENGTH = MASTER_KEY_LENGTH + MASTER_SALT_LENGTH;

/**
 * An MKI as a=crypto writes it (`|<value>:<length>`): an integer and its width in octets
 * (1..128, RFC 4568 §6.1); on the wire, the value big-endian in exactly that many octets.
 */
export interface SrtpMki {
  readonly value: number | bigint;
  readonly length: number;
}

export interface SrtpPolicy {
  readonly suite: SrtpSuite;
  readonly masterKey: Uint8Array;
  readonly masterSalt: Uint8Array;
  /** Present when the offer carries an MKI; every packet then carries it too. */
  readonly mki?: SrtpMki;
}

export interface SrtpMasterKey {
  readonly masterKey: Buffer;
  readonly masterSalt: Buffer;
}

/** Splits the 30-octet SDES inline key into master key and master salt. */
export function masterKeyFromInline(inline: Uint8Array): SrtpMasterKey {
  if (inline.length !== INLINE_KEY_LENGTH)
    throw new HandsetError(
      "srtp-key-length",
      `SDES inline key must be ${INLINE_KEY_LENGTH} bytes (16 key + 14 salt), not ${inline.length}`,
    );
  return {
    masterKey: Buffer.from(inline.subarray(0, MASTER_KEY_LENGTH)),
    masterSalt: Buffer.from(inline.subarray(MASTER_KEY_LENGTH)),
  };
}

/** Why a packet was not accepted. */
export type UnprotectFailure = "short" | "mki" | "replay" | "too-old" | "bad-tag";

export type SrtpUnprotectResult =
  | { readonly ok: true; readonly packet: Buffer; readonly ssrc: number; readonly index: number }
  | { readonly ok: false; readonly reason: UnprotectFailure };

export type SrtcpUnprotectResult =
  | {
      readonly ok: true;
      readonly packet: Buffer;
      readonly ssrc: number;
      readonly index: number;
      /** The E flag: false when the peer sent this compound packet in the clear (§3.4). */
      readonly encrypted: boolean;
    }
  | { readonly ok: false; readonly reason: UnprotectFailure };

/**
 * Why the sender refused: a malformed packet from our own RTP stack ("short"), an index it has
 * already protected ("replay") or that lies behind its window ("too-old") — either would reuse
 * keystream — or an SRTCP index about to wrap 2^31 under the same key ("exhausted", §9.2).
 */
export type ProtectFailure = "short" | "replay" | "too-old" | "exhausted";

export type ProtectResult =
  | { readonly ok: true; readonly packet: Buffer }
  | { readonly ok: false; readonly reason: ProtectFailure };

/** Counters for one direction of one kind of traffic; callers read them, never reset them. */
export interface SrtpCounters {
  received: number;
  accepted: number;
  short: number;
  mki: number;
  replayed: number;
  tooOld: number;
  badTag: number;
}

export interface SrtpSenderCounters {
  protected: number;
  refused: number;
}

const newCounters = (): SrtpCounters => ({
  received: 0,
  accepted: 0,
  short: 0,
  mki: 0,
  replayed: 0,
  tooOld: 0,
  badTag: 0,
});

const SRTCP_INDEX_LIMIT = 0x8000_0000;
const RTP_HEADER = 12;
const RTCP_HEADER = 8;
const SRTCP_TRAILER = 4;

/** One master key ready for use: its session keys and the MKI that names it on the wire. */
interface Keying {
  readonly rtp: SessionKeys;
  readonly rtcp: SessionKeys;
  readonly mki: Buffer;
}

function suiteOf(policy: SrtpPolicy): { rtpTag: number; rtcpTag: number } {
  const suite = Object.hasOwn(SRTP_SUITES, policy.suite) ? SRTP_SUITES[policy.suite] : undefined;
  if (!suite) throw new HandsetError("srtp-suite", `unsupported SRTP crypto suite ${String(policy.suite)}`);
  return suite;
}

function encodeMki(mki: SrtpMki | undefined): Buffer {
  if (!mki) return Buffer.alloc(0);
  const { length } = mki;
  if (!Number.isInteger(length) || length < 1 || length > 128)
    throw new HandsetError("srtp-mki", `MKI length must be 1..128 octets, not ${length}`);
  let v: bigint;
  try {
    v = BigInt(mki.value);
  } catch {
    throw new HandsetError("srtp-mki", `MKI value ${String(mki.value)} is not an integer`);
  }
  if (v < 0n || v >= 1n << BigInt(8 * length))
    throw new HandsetError("srtp-mki", `MKI value ${v} does not fit in ${length} octets`);
  const out = Buffer.alloc(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function keyingOf(policy: SrtpPolicy): Keying {
  const keys = deriveSessionKeys(policy.masterKey, policy.masterSalt);
  return { rtp: keys.rtp, rtcp: keys.rtcp, mki: encodeMki(policy.mki) };
}

const asBuffer = (b: Uint8Array): Buffer =>
  Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** HMAC-SHA1 over the parts, in order (§4.2.1); callers truncate. */
function hmacSha1(key: Buffer, a: Uint8Array, b: Uint8Array): Buffer {
  return createHmac("sha1", key).update(a).update(b).digest();
}

function rocBytes(roc: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(roc >>> 0, 0);
  return b;
}

/** Octets of fixed header, CSRCs and header extension, or undefined if they overrun `end`. */
function rtpHeaderLength(p: Buffer, end: number): number | undefined {
  if (end < RTP_HEADER) return undefined;
  let n = RTP_HEADER + 4 * ((p[0] as number) & 0x0f);
  if ((p[0] as number) & 0x10) {
    if (n + 4 > end) return undefined;
    n += 4 + 4 * p.readUInt16BE(n + 2);
  }
  return n <= end ? n : undefined;
}

/** XORs the AES-CM keystream for `iv` onto `src[from, to)` and writes it into `out` at `from`. */
function applyKeystream(key: Buffer, iv: Buffer, src: Buffer, from: number, to: number, out: Buffer): void {
  if (to <= from) return;
  const cipher = createCipheriv("aes-128-ctr", key, iv);
  out.set(cipher.update(src.subarray(from, to)), from);
}

interface SenderStream extends RolloverState {
  readonly window: ReplayWindow;
}

export interface SrtpSenderOptions {
  /**
   * The first SRTCP index for each SSRC. RFC 3711 §3.4 says 0; libsrtp's sender uses 1 for its
   * first packet, so its published vectors carry 1. Only tests should need to set this.
   */
  readonly initialSrtcpIndex?: number;
}

/** The sending half of an SRTP crypto context: one master key, any number of SSRCs. */
export class SrtpSender {
  readonly stats: { rtp: SrtpSenderCounters; rtcp: SrtpSenderCounters } = {
    rtp: { protected: 0, refused: 0 },
    rtcp: { protected: 0, refused: 0 },
  };
  private keying: Keying;
  private readonly suite: SrtpSuite;
  private readonly rtpTag: number;
  private readonly rtcpTag: number;
  private readonly streams = new Map<number, SenderStream>();
  private readonly srtcpIndex = new Map<number, number>();
  private readonly initialSrtcpIndex: number;

  constructor(policy: SrtpPolicy, options: SrtpSenderOptions = {}) {
    const suite = suiteOf(policy);
    this.suite = policy.suite;
    this.rtpTag = suite.rtpTag;
    this.rtcpTag = suite.rtcpTag;
    this.keying = keyingOf(policy);
    const first = options.initialSrtcpIndex ?? 0;
    if (!Number.isInteger(first) || first < 0 || first >= SRTCP_INDEX_LIMIT)
      throw new HandsetError("srtp-srtcp-index", `initial SRTCP index must be 0..2^31-1, not ${first}`);
    this.initialSrtcpIndex = first;
  }

  /**
   * Switches to a new master key (a re-key announced with a new MKI). ROC, s_l and SRTCP
   * indices carry on: §3.3.1 and §3.4 forbid resetting them on a re-key.
   */
  rekey(policy: SrtpPolicy): void {
    suiteOf(policy);
    if (policy.suite !== this.suite)
      throw new HandsetError("srtp-policy", "a re-key keeps the context's crypto suite");
    const keying = keyingOf(policy);
    if (keying.mki.length !== this.keying.mki.length || keying.mki.length === 0)
      throw new HandsetError("srtp-mki", "a re-key needs an MKI of the context's MKI length");
    this.keying = keying;
  }

  /** RTP packet → SRTP packet (header ‖ encrypted payload ‖ MKI ‖ tag). */
  protectRtp(rtp: Uint8Array): ProtectResult {
    const p = asBuffer(rtp);
    const headerLength = rtpHeaderLength(p, p.length);
    if (headerLength === undefined) return this.refuse("rtp", "short");
    const ssrc = p.readUInt32BE(8);
    const seq = p.readUInt16BE(2);
    let stream = this.streams.get(ssrc);
    if (!stream) {
      stream = { roc: 0, highestSeq: undefined, window: new ReplayWindow() };
      this.streams.set(ssrc, stream);
    }
    // The sender runs the receiver's estimate against its own s_l: that is what increments the
    // ROC on a wrap, and it tells a repeated index (a two-time pad) from a new one.
    const e = estimateIndex(stream, seq);
    const verdict = stream.window.check(e.index);
    if (verdict !== "ok") return this.refuse("rtp", verdict);

    const { rtp: keys, mki } = this.keying;
    const out = Buffer.allocUnsafe(p.length + mki.length + this.rtpTag);
    p.copy(out, 0, 0, headerLength);
    applyKeystream(
      keys.encryptionKey,
      counterIv(keys.salt, ssrc, e.roc, seq),
      p,
      headerLength,
      p.length,
      out,
    );
    mki.copy(out, p.length);
    hmacSha1(keys.authKey, out.subarray(0, p.length), rocBytes(e.roc)).copy(
      out,
      p.length + mki.length,
      0,
      this.rtpTag,
    );
    commitIndex(stream, e);
    stream.window.accept(e.index);
    this.stats.rtp.protected++;
    return { ok: true, packet: out };
  }

  /** RTCP compound packet → SRTCP packet (header ‖ encrypted rest ‖ E+index ‖ MKI ‖ tag). */
  protectRtcp(rtcp: Uint8Array): ProtectResult {
    const p = asBuffer(rtcp);
    if (p.length < RTCP_HEADER) return this.refuse("rtcp", "short");
    const ssrc = p.readUInt32BE(4);
    const index = this.srtcpIndex.get(ssrc) ?? this.initialSrtcpIndex;
    if (index >= SRTCP_INDEX_LIMIT) return this.refuse("rtcp", "exhausted");

    const { rtcp: keys, mki } = this.keying;
    const trailerAt = p.length;
    const out = Buffer.allocUnsafe(trailerAt + SRTCP_TRAILER + mki.length + this.rtcpTag);
    p.copy(out, 0, 0, RTCP_HEADER);
    applyKeystream(
      keys.encryptionKey,
      srtcpCounterIv(keys.salt, ssrc, index),
      p,
      RTCP_HEADER,
      trailerAt,
      out,
    );
    out.writeUInt32BE((SRTCP_INDEX_LIMIT | index) >>> 0, trailerAt);
    const authEnd = trailerAt + SRTCP_TRAILER;
    mki.copy(out, authEnd);
    createHmac("sha1", keys.authKey)
      .update(out.subarray(0, authEnd))
      .digest()
      .copy(out, authEnd + mki.length, 0, this.rtcpTag);
    this.srtcpIndex.set(ssrc, index + 1);
    this.stats.rtcp.protected++;
    return { ok: true, packet: out };
  }

  private refuse(kind: "rtp" | "rtcp", reason: ProtectFailure): ProtectResult {
    this.stats[kind].refused++;
    return { ok: false, reason };
  }
}

interface ReceiverStream extends RolloverState {
  readonly window: ReplayWindow;
}

/**
 * The receiving half of an SRTP crypto context. With MKIs it may hold several master keys (one
 * per MKI, all of the same MKI length, as §3.2.1 requires for a context's lifetime), so a re-key
 * announced by the peer keeps the per-SSRC ROC, s_l and windows.
 */
export class SrtpReceiver {
  readonly stats: { rtp: SrtpCounters; rtcp: SrtpCounters } = { rtp: newCounters(), rtcp: newCounters() };
  private readonly suite: SrtpSuite;
  private readonly rtpTag: number;
  private readonly rtcpTag: number;
  private readonly mkiLength: number;
  /** By MKI in hex; the single key under "" when the context has no MKI. */
  private readonly keys = new Map<string, Keying>();
  private readonly rtpStreams = new Map<number, ReceiverStream>();
  private readonly rtcpWindows = new Map<number, ReplayWindow>();

  constructor(policies: SrtpPolicy | readonly SrtpPolicy[]) {
    const list: readonly SrtpPolicy[] = Array.isArray(policies) ? policies : [policies as SrtpPolicy];
    const first = list[0];
    if (!first) throw new HandsetError("srtp-policy", "an SRTP receiver needs at least one master key");
    const suite = suiteOf(first);
    this.suite = first.suite;
    this.rtpTag = suite.rtpTag;
    this.rtcpTag = suite.rtcpTag;
    this.mkiLength = first.mki?.length ?? 0;
    for (const policy of list) this.addKey(policy);
  }

  /** Accepts packets under one more master key, named by its MKI (a re-key). */
  addKey(policy: SrtpPolicy): void {
    suiteOf(policy);
    if (policy.suite !== this.suite)
      throw new HandsetError("srtp-policy", "all master keys of one SRTP context use the same suite");
    const keying = keyingOf(policy);
    if (keying.mki.length !== this.mkiLength)
      throw new HandsetError(
        "srtp-mki",
        "all master keys of one SRTP context carry an MKI of the same length",
      );
    const id = keying.mki.toString("hex");
    if (this.keys.has(id))
      throw new HandsetError(
        "srtp-mki",
        id === "" ? "a second master key needs an MKI" : `MKI ${id} given twice`,
      );
    this.keys.set(id, keying);
  }

  /** Stops accepting packets under the key this MKI names (the old key, once a re-key settled). */
  removeKey(mki: SrtpMki): boolean {
    return this.keys.delete(encodeMki(mki).toString("hex"));
  }

  unprotectRtp(srtp: Uint8Array): SrtpUnprotectResult {
    const c = this.stats.rtp;
    c.received++;
    const p = asBuffer(srtp);
    const end = p.length - this.mkiLength - this.rtpTag;
    const headerLength = rtpHeaderLength(p, end);
    if (headerLength === undefined) return fail(c, "short");
    const keying = this.keyFor(p, end);
    if (!keying) return fail(c, "mki");

    const ssrc = p.readUInt32BE(8);
    const seq = p.readUInt16BE(2);
    const stream = this.rtpStreams.get(ssrc) ?? { roc: 0, highestSeq: undefined, window: new ReplayWindow() };
    const e = estimateIndex(stream, seq);
    const verdict = stream.window.check(e.index);
    if (verdict !== "ok") return fail(c, verdict);

    const keys = keying.rtp;
    const expected = hmacSha1(keys.authKey, p.subarray(0, end), rocBytes(e.roc));
    if (!tagMatches(expected, p.subarray(end + this.mkiLength))) return fail(c, "bad-tag");

    const out = Buffer.allocUnsafe(end);
    p.copy(out, 0, 0, headerLength);
    applyKeystream(keys.encryptionKey, counterIv(keys.salt, ssrc, e.roc, seq), p, headerLength, end, out);
    commitIndex(stream, e);
    stream.window.accept(e.index);
    this.rtpStreams.set(ssrc, stream);
    c.accepted++;
    return { ok: true, packet: out, ssrc, index: e.index };
  }

  unprotectRtcp(srtcp: Uint8Array): SrtcpUnprotectResult {
    const c = this.stats.rtcp;
    c.received++;
    const p = asBuffer(srtcp);
    const end = p.length - this.mkiLength - this.rtcpTag;
    const trailerAt = end - SRTCP_TRAILER;
    if (trailerAt < RTCP_HEADER) return fail(c, "short");
    const keying = this.keyFor(p, end);
    if (!keying) return fail(c, "mki");

    const ssrc = p.readUInt32BE(4);
    const word = p.readUInt32BE(trailerAt);
    const encrypted = word >= SRTCP_INDEX_LIMIT;
    const index = word & 0x7fff_ffff;
    const window = this.rtcpWindows.get(ssrc) ?? new ReplayWindow();
    const verdict = window.check(index);
    if (verdict !== "ok") return fail(c, verdict);

    const keys = keying.rtcp;
    const expected = createHmac("sha1", keys.authKey).update(p.subarray(0, end)).digest();
    if (!tagMatches(expected, p.subarray(end + this.mkiLength))) return fail(c, "bad-tag");

    const out = Buffer.allocUnsafe(trailerAt);
    p.copy(out, 0, 0, encrypted ? RTCP_HEADER : trailerAt);
    if (encrypted)
      applyKeystream(
        keys.encryptionKey,
        srtcpCounterIv(keys.salt, ssrc, index),
        p,
        RTCP_HEADER,
        trailerAt,
        out,
      );
    window.accept(index);
    this.rtcpWindows.set(ssrc, window);
    c.accepted++;
    return { ok: true, packet: out, ssrc, index, encrypted };
  }

  /** The master key the packet's MKI names (the only key when the context has no MKI). */
  private keyFor(p: Buffer, end: number): Keying | undefined {
    if (this.mkiLength === 0) return this.keys.get("");
    return this.keys.get(p.toString("hex", end, end + this.mkiLength));
  }
}

function tagMatches(expected: Buffer, received: Buffer): boolean {
  return timingSafeEqual(expected.subarray(0, received.length), received);
}

function fail(c: SrtpCounters, reason: UnprotectFailure): { ok: false; reason: UnprotectFailure } {
  if (reason === "short") c.short++;
  else if (reason === "mki") c.mki++;
  else if (reason === "replay") c.replayed++;
  else if (reason === "too-old") c.tooOld++;
  else c.badTag++;
  return { ok: false, reason };
}
