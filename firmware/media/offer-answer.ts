/**
 * The RFC 3264 offer/answer model for a phone's one audio stream, with Microsoft's way of making
 * SRTP optional (MS-SDPEXT) on top of SDES (RFC 4568).
 *
 * - createOffer: G.722 (9), PCMU (0), PCMA (8) in the caller's order, CN (13) and
 *   telephone-event/8000 (101, events 0-16); a=ptime:20, a=rtcp, a=label:main-audio and
 *   a=x-ssrc-range as Lync writes them; SRTP per policy:
 *     required → RTP/SAVP with a=crypto lines, a=encryption:required;
 *     optional → RTP/AVP with a=crypto lines, a=encryption:optional (MS-SDPEXT: AVP plus
 *                a=crypto is how an offer says "SRTP if you can");
 *     off      → RTP/AVP, no a=crypto, a=encryption:rejected.
 *   The o= session version goes up by one with every description this session produces.
 * - createAnswer: the first audio stream we can take, every other m= line rejected with port 0
 *   (RFC 3264 §6: same number and order of m= lines); common codecs in the offerer's order and
 *   with its payload types; telephone-event and CN if offered; the first a=crypto line we can use,
 *   answered with the same tag and suite and a key of our own; the direction mirrored
 *   (sendonly → recvonly, recvonly → sendonly, inactive → inactive); a=rtcp-mux repeated when offered
 *   (RFC 5761: the socket tells RTCP from RTP on one port anyway). Anything we cannot accept
 *   is a typed refusal the SIP layer turns into 488 Not Acceptable Here.
 * - checkAnswer: whether an answer to our offer keeps to it (formats we offered, a crypto tag
 *   and suite we offered, the profile our policy allows) and what was agreed.
 *
 * Pure: randomness (session id, SRTP keys) only from the Random port; no clock, no I/O.
 */
import { HandsetError } from "../core/errors.ts";
import type { Random } from "../core/random.ts";
import {
  formatCrypto,
  generateCrypto,
  parseCrypto,
  SDES_DEFAULT_LIFETIME,
  SDES_SUITES,
  type SdesCrypto,
  SdesError,
  type SdesKey,
  type SdesSuite,
} from "./sdes.ts";
import {
  attributeValue,
  attributeValues,
  type Direction,
  fmtpOf,
  hasAttribute,
  mediaConnection,
  mediaDirection,
  parseRtpmap,
  type SdpAttribute,
  SdpError,
  type SdpMedia,
  type SessionDescription,
  serializeSdp,
} from "./sdp.ts";

export type SrtpPolicy = "required" | "optional" | "off";
export type AudioCodec = "G722" | "PCMU" | "PCMA";

/**
 * Our codecs with their RFC 3551 static payload types. G.722 samples at 16 kHz but its RTP
 * clock is 8000 (RFC 3551 §4.5.2), hence G722/8000; an offer's G722/8000/2 (Lync's stereo
 * G.722, PT 117) is another format and is not taken for it.
 */
const AUDIO_CODECS: Readonly<Record<AudioCodec, { payloadType: number; clockRate: number }>> = {
  G722: { payloadType: 9, clockRate: 8000 },
  PCMU: { payloadType: 0, clockRate: 8000 },
  PCMA: { payloadType: 8, clockRate: 8000 },
};

/** Static payload types (RFC 3551 table 4) an offer may list without a=rtpmap. */
const STATIC_PAYLOAD_TYPES: Readonly<Record<string, { encoding: string; clockRate: number }>> = {
  "0": { encoding: "PCMU", clockRate: 8000 },
  "8": { encoding: "PCMA", clockRate: 8000 },
  "9": { encoding: "G722", clockRate: 8000 },
  "13": { encoding: "CN", clockRate: 8000 },
};

export const TELEPHONE_EVENT_PAYLOAD_TYPE = 101;
export const COMFORT_NOISE_PAYLOAD_TYPE = 13;
/** DTMF 0-9, *, #, A-D and flash (RFC 4733 §3.2): what Lync offers and what we send. */
export const TELEPHONE_EVENTS = "0-16";
/** When an offer names no events, RFC 4733 §7.1.1 says the receiver takes 0-15. */
const DEFAULT_REMOTE_EVENTS = "0-15";
export const PTIME = 20;
/** MS-SDPEXT labels the main audio stream so the other side can tell it from video, sharing, data. */
export const AUDIO_LABEL = "main-audio";
const PROFILE_PLAIN = "RTP/AVP";
const PROFILE_SECURE = "RTP/SAVP";

export interface MediaCapabilities {
  /** Our codecs, most preferred first (the order of our offers). */
  codecs: readonly AudioCodec[];
  /** Offer and accept telephone-event (RFC 4733); default true. */
  telephoneEvent?: boolean;
  /** Offer and accept CN (RFC 3389); default true. */
  comfortNoise?: boolean;
  srtp: SrtpPolicy;
  /** SDES suites we accept, preferred first; default AES_CM_128_HMAC_SHA1_80 then _32. */
  suites?: readonly SdesSuite[];
}

/** Where we receive media, and the one SSRC we send with (MS-SDPEXT §3.1.5.31: a range of one for audio). */
export interface LocalTransport {
  address: string;
  port: number;
  /** Default port + 1. */
  rtcpPort?: number;
  ssrc: number;
}

export interface NegotiatedCodec {
  name: AudioCodec;
  payloadType: number;
  clockRate: number;
}

export interface NegotiatedSrtp {
  suite: SdesSuite;
  tag: number;
  /** Our key: what we protect our packets with. */
  local: SdesKey;
  /** Their key: what we unprotect theirs with. */
  remote: SdesKey;
}

/** What the RTP/SRTP layers need once both sides have spoken. */
export interface NegotiatedAudio {
  /** Index of the audio m= line (the same in offer and answer). */
  mediaIndex: number;
  remoteAddress: string;
  remotePort: number;
  remoteRtcpPort: number;
  /** The common codecs; we send with the first. */
  codecs: NegotiatedCodec[];
  telephoneEvent: { payloadType: number; events: string } | undefined;
  comfortNoise: { payloadType: number } | undefined;
  /** Our direction: "sendonly" means we send and do not expect to receive. */
  direction: Direction;
  remotePtime: number | undefined;
  srtp: NegotiatedSrtp | undefined;
  /** The SSRCs the peer will send with (a=x-ssrc-range), when it says. */
  remoteSsrcRange: { first: number; last: number } | undefined;
  /**
   * RTCP shares the RTP port both ways (RFC 5761): the offer said a=rtcp-mux and the answer
   * repeated it. Our offers do not ask for it (both ports are bound anyway); our answers accept it.
   */
  rtcpMux: boolean;
}

export type OfferAnswerErrorCode =
  | "srtp-required"
  | "srtp-not-supported"
  | "no-acceptable-crypto"
  | "no-common-codec"
  | "no-audio-stream"
  | "unsupported-transport"
  | "unsupported-address"
  | "answer-media-count"
  | "answer-audio-rejected"
  | "answer-profile"
  | "answer-codec-not-offered"
  | "answer-crypto-mismatch"
  | "answer-srtp-missing"
  | "answer-unexpected-crypto";

/** RFC 3261 §20.43 warning codes, the one a 488 names. */
const WARNINGS = {
  address: 301,
  transport: 302,
  mediaType: 304,
  format: 305,
} as const;

/**
 * A description we cannot accept. For a refused offer the SIP layer answers `status` with
 * `reason` and a Warning header (`warning.code`, `warning.text`); for an answer that breaks our
 * offer it ends the session, and the same fields say why.
 */
export class OfferAnswerError extends HandsetError {
  declare readonly code: OfferAnswerErrorCode;
  readonly status = 488;
  readonly reason: string;
  readonly warning: { code: number; text: string };

  constructor(code: OfferAnswerErrorCode, text: string, warningCode: number, reason = "Not Acceptable Here") {
    super(code, text);
    this.reason = reason;
    this.warning = { code: warningCode, text };
  }
}

/** The reason phrase of MS-SDP's example 488 for an SRTP conflict (its protocol examples). */
const ENCRYPTION_REASON = "Encryption Levels not compatible";

export type AnswerOutcome =
  | { kind: "answer"; sdp: SessionDescription; body: string; media: NegotiatedAudio }
  | { kind: "refused"; error: OfferAnswerError };

export type AnswerCheck =
  | { kind: "agreed"; media: NegotiatedAudio }
  | { kind: "mismatch"; error: OfferAnswerError };

/** What we remember of an offer we sent, to check the answer against. */
export interface LocalOffer {
  readonly sdp: SessionDescription;
  readonly body: string;
  readonly capabilities: MediaCapabilities;
  readonly transport: LocalTransport;
  readonly direction: Direction;
  readonly mediaIndex: number;
  /** Our a=crypto lines, empty when the policy is off. */
  readonly cryptos: readonly SdesCrypto[];
}

const IPV4 =
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;

const sends = (d: Direction): boolean => d === "sendrecv" || d === "sendonly";
const receives = (d: Direction): boolean => d === "sendrecv" || d === "recvonly";
function directionOf(send: boolean, receive: boolean): Direction {
  if (send) return receive ? "sendrecv" : "sendonly";
  return receive ? "recvonly" : "inactive";
}

function configError(message: string): HandsetError {
  return new HandsetError("media-config", message);
}

function checkLocal(caps: MediaCapabilities, t: LocalTransport): void {
  if (!IPV4.test(t.address)) throw configError(`local media address ${t.address} is not IPv4`);
  for (const [what, port] of [
    ["port", t.port],
    ["RTCP port", t.rtcpPort ?? t.port + 1],
  ] as const)
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw configError(`local ${what} ${port} is not 1..65535`);
  if (!Number.isInteger(t.ssrc) || t.ssrc < 0 || t.ssrc > 0xffffffff)
    throw configError(`SSRC ${t.ssrc} is not a 32-bit value`);
  if (caps.codecs.length === 0) throw configError("no audio codec configured");
  if (new Set(caps.codecs).size !== caps.codecs.length) throw configError("an audio codec is listed twice");
  for (const c of caps.codecs) if (!Object.hasOwn(AUDIO_CODECS, c)) throw configError(`unknown codec ${c}`);
  if (caps.srtp !== "off" && suitesOf(caps).length === 0)
    throw configError("SRTP enabled with no crypto suite");
}

const suitesOf = (caps: MediaCapabilities): readonly SdesSuite[] => caps.suites ?? SDES_SUITES;
const wantsTelephoneEvent = (caps: MediaCapabilities): boolean => caps.telephoneEvent ?? true;
const wantsComfortNoise = (caps: MediaCapabilities): boolean => caps.comfortNoise ?? true;

/** MS-SDP's a=encryption word for our policy. */
const ENCRYPTION_WORD: Readonly<Record<SrtpPolicy, string>> = {
  required: "required",
  optional: "optional",
  off: "rejected",
};

// ---- telephone-event lists ("0-15,66,70", RFC 4733 §2.4.1) ----

function parseEvents(text: string): Set<number> | undefined {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^([0-9]{1,3})(?:-([0-9]{1,3}))?$/.exec(part.trim());
    if (!m) return undefined;
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo || hi > 255) return undefined;
    for (let e = lo; e <= hi; e++) out.add(e);
  }
  return out;
}

function formatEvents(events: Iterable<number>): string {
  const sorted = [...events].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j++;
    parts.push(i === j ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

// ---- reading a remote media section ----

interface MatchedFormats {
  codecs: NegotiatedCodec[];
  telephoneEvent: { payloadType: number; events: string } | undefined;
  comfortNoise: { payloadType: number } | undefined;
}

/** The offered formats we can use, in the order the m= line lists them. */
function matchFormats(media: SdpMedia, caps: MediaCapabilities): MatchedFormats {
  const rtpmaps = new Map<string, { encoding: string; clockRate: number; channels: number }>();
  for (const v of attributeValues(media.attributes, "rtpmap")) {
    try {
      const r = parseRtpmap(v);
      if (!rtpmaps.has(`${r.payloadType}`))
        rtpmaps.set(`${r.payloadType}`, {
          encoding: r.encoding,
          clockRate: r.clockRate,
          channels: r.channels ?? 1,
        });
    } catch (err) {
      // A payload type whose rtpmap we cannot read is one we cannot use; the rest stand.
      if (!(err instanceof SdpError)) throw err;
    }
  }
  const out: MatchedFormats = { codecs: [], telephoneEvent: undefined, comfortNoise: undefined };
  for (const fmt of media.formats) {
    if (!/^[0-9]{1,3}$/.test(fmt) || Number(fmt) > 127) continue;
    const known = STATIC_PAYLOAD_TYPES[fmt];
    const map = rtpmaps.get(fmt) ?? (known ? { ...known, channels: 1 } : undefined);
    if (map === undefined || map.channels !== 1 || map.clockRate !== 8000) continue;
    const encoding = map.encoding.toUpperCase(); // encoding names are case-insensitive (RFC 4855 §3)
    const payloadType = Number(fmt);
    if (encoding === "TELEPHONE-EVENT") {
      if (!wantsTelephoneEvent(caps) || out.telephoneEvent) continue;
      const offered = parseEvents(fmtpOf(media, fmt) ?? DEFAULT_REMOTE_EVENTS);
      const ours = parseEvents(TELEPHONE_EVENTS)!;
      const common = offered ? [...offered].filter((e) => ours.has(e)) : [];
      if (common.length > 0) out.telephoneEvent = { payloadType, events: formatEvents(common) };
    } else if (encoding === "CN") {
      if (wantsComfortNoise(caps) && !out.comfortNoise) out.comfortNoise = { payloadType };
    } else {
      const name = caps.codecs.find((c) => c === encoding);
      if (name && !out.codecs.some((c) => c.name === name))
        out.codecs.push({ name, payloadType, clockRate: 8000 });
    }
  }
  return out;
}

function rtcpPortOf(media: SdpMedia): number {
  // a=rtcp:<port> [<nettype> <addrtype> <address>] (RFC 3605); without it, port + 1.
  const m = /^([0-9]{1,5})(?: |$)/.exec(attributeValue(media.attributes, "rtcp") ?? "");
  const port = m ? Number(m[1]) : media.port + 1;
  return port >= 1 && port <= 65535 ? port : media.port + 1;
}

const muxes = (media: SdpMedia): boolean => hasAttribute(media.attributes, "rtcp-mux");

function ptimeOf(media: SdpMedia): number | undefined {
  const v = attributeValue(media.attributes, "ptime");
  return v !== undefined && /^[0-9]{1,4}$/.test(v) && Number(v) > 0 ? Number(v) : undefined;
}

function ssrcRangeOf(media: SdpMedia): { first: number; last: number } | undefined {
  const m = /^([0-9]{1,10})-([0-9]{1,10})$/.exec(attributeValue(media.attributes, "x-ssrc-range") ?? "");
  if (!m) return undefined;
  const first = Number(m[1]);
  const last = Number(m[2]);
  return first <= last && last <= 0xffffffff ? { first, last } : undefined;
}

/** MS-SDP a=encryption, media level first, then session level. */
function encryptionOf(sdp: SessionDescription, media: SdpMedia): string | undefined {
  return attributeValue(media.attributes, "encryption") ?? attributeValue(sdp.attributes, "encryption");
}

/** A line our SRTP stack can honour: one key, no session parameter that changes the protocol. */
function usableCrypto(c: SdesCrypto, suites: readonly SdesSuite[]): boolean {
  return (
    suites.includes(c.suite) &&
    c.keys.length === 1 &&
    c.sessionParams.every((p) => p.startsWith("-") || p.startsWith("WSH="))
  );
}

/** The parsed a=crypto lines of a section; ones we cannot read are skipped (RFC 4568 §7.1.2). */
function cryptosOf(media: SdpMedia): { lines: number; parsed: SdesCrypto[] } {
  const values = attributeValues(media.attributes, "crypto");
  const parsed: SdesCrypto[] = [];
  for (const v of values) {
    try {
      parsed.push(parseCrypto(v));
    } catch (err) {
      if (!(err instanceof SdesError)) throw err;
    }
  }
  return { lines: values.length, parsed };
}

function remoteAddressOf(sdp: SessionDescription, media: SdpMedia): string | undefined {
  const c = mediaConnection(sdp, media);
  return c && c.netType === "IN" && c.addrType === "IP4" && IPV4.test(c.address) ? c.address : undefined;
}

/** The other side's direction, counting RFC 2543's hold (c=0.0.0.0: do not send to me). */
function remoteDirection(sdp: SessionDescription, media: SdpMedia, address: string): Direction {
  const d = mediaDirection(sdp, media);
  return address === "0.0.0.0" ? directionOf(sends(d), false) : d;
}

// ---- writing our descriptions ----

function rtpmapLines(formats: MatchedFormats, events: string | undefined): SdpAttribute[] {
  const out: SdpAttribute[] = formats.codecs.map((c) => ({
    name: "rtpmap",
    value: `${c.payloadType} ${c.name}/${c.clockRate}`,
  }));
  if (formats.comfortNoise)
    out.push({ name: "rtpmap", value: `${formats.comfortNoise.payloadType} CN/8000` });
  if (formats.telephoneEvent) {
    const pt = formats.telephoneEvent.payloadType;
    out.push({ name: "rtpmap", value: `${pt} telephone-event/8000` });
    out.push({ name: "fmtp", value: `${pt} ${events ?? formats.telephoneEvent.events}` });
  }
  return out;
}

/**
 * The audio section's attributes, in the order Lync 2013 writes them: SSRC range and label
 * first, then keys, then formats, then packetization and direction.
 */
function audioAttributes(
  transport: LocalTransport,
  policy: SrtpPolicy,
  cryptos: readonly SdesCrypto[],
  formats: MatchedFormats,
  direction: Direction,
  rtcpMux = false,
): SdpAttribute[] {
  return [
    { name: "x-ssrc-range", value: `${transport.ssrc}-${transport.ssrc}` },
    { name: "label", value: AUDIO_LABEL },
    ...cryptos.map((c) => ({ name: "crypto", value: formatCrypto(c) })),
    { name: "encryption", value: ENCRYPTION_WORD[policy] },
    { name: "rtcp", value: `${transport.rtcpPort ?? transport.port + 1}` },
    ...(rtcpMux ? [{ name: "rtcp-mux", value: undefined }] : []),
    ...rtpmapLines(formats, undefined),
    { name: "ptime", value: `${PTIME}` },
    { name: direction, value: undefined },
  ];
}

/** Formats in m= order: the codecs, CN, telephone-event, or as the offer ordered them. */
function formatList(formats: MatchedFormats, order?: readonly string[]): string[] {
  const pts = [
    ...formats.codecs.map((c) => `${c.payloadType}`),
    ...(formats.comfortNoise ? [`${formats.comfortNoise.payloadType}`] : []),
    ...(formats.telephoneEvent ? [`${formats.telephoneEvent.payloadType}`] : []),
  ];
  return order ? order.filter((f) => pts.includes(f)) : pts;
}

/**
 * One side of a dialog's media: the o= line (session id from Random, version up by one for every
 * description produced) and the SRTP master keys we send with. Keys are drawn from Random the
 * first time a suite is used and kept for the dialog, so a hold or resume re-INVITE does not
 * re-key; rekey() draws new ones for the next description.
 */
export class LocalSession {
  readonly sessionId: string;
  private version = -1n;
  private readonly keys = new Map<SdesSuite, Uint8Array>();

  constructor(private readonly random: Random) {
    // RFC 4566 §5.2 suggests an NTP timestamp for the id; a core has no clock, and a random
    // 48-bit number is as unique and stays within what every peer parses.
    this.sessionId = BigInt(`0x${Buffer.from(random.bytes(6)).toString("hex")}`).toString();
  }

  /** The o= version of the last description produced, undefined before the first. */
  get sessionVersion(): string | undefined {
    return this.version < 0n ? undefined : this.version.toString();
  }

  /** Fresh SRTP keys for the next offer or answer. */
  rekey(): void {
    this.keys.clear();
  }

  private crypto(tag: number, suite: SdesSuite): SdesCrypto {
    let key = this.keys.get(suite);
    if (!key) {
      key = generateCrypto(this.random, tag, suite).keys[0]!.keySalt;
      this.keys.set(suite, key);
    }
    return {
      tag,
      suite,
      keys: [{ keySalt: key, lifetime: SDES_DEFAULT_LIFETIME, mki: undefined }],
      sessionParams: [],
    };
  }

  private describe(address: string, media: SdpMedia[]): { sdp: SessionDescription; body: string } {
    const sdp: SessionDescription = {
      origin: {
        username: "-",
        sessionId: this.sessionId,
        sessionVersion: (this.version + 1n).toString(),
        netType: "IN",
        addrType: "IP4",
        address,
      },
      sessionName: "session",
      info: undefined,
      uri: undefined,
      emails: [],
      phones: [],
      connection: { netType: "IN", addrType: "IP4", address },
      bandwidths: [],
      timings: [{ start: "0", stop: "0", repeats: [] }],
      zone: undefined,
      key: undefined,
      // MS-SDPEXT device capabilities: a desk phone sends and receives audio, and has no video.
      attributes: [{ name: "x-devicecaps", value: "audio:send,recv" }],
      media,
    };
    const body = serializeSdp(sdp);
    this.version++;
    return { sdp, body };
  }

  /** A new offer (initial, hold with "sendonly"/"inactive", resume with "sendrecv"). */
  createOffer(
    caps: MediaCapabilities,
    transport: LocalTransport,
    direction: Direction = "sendrecv",
  ): LocalOffer {
    checkLocal(caps, transport);
    const formats: MatchedFormats = {
      codecs: caps.codecs.map((name) => ({ name, ...AUDIO_CODECS[name] })),
      comfortNoise: wantsComfortNoise(caps) ? { payloadType: COMFORT_NOISE_PAYLOAD_TYPE } : undefined,
      telephoneEvent: wantsTelephoneEvent(caps)
        ? { payloadType: TELEPHONE_EVENT_PAYLOAD_TYPE, events: TELEPHONE_EVENTS }
        : undefined,
    };
    const cryptos = caps.srtp === "off" ? [] : suitesOf(caps).map((suite, i) => this.crypto(i + 1, suite));
    const audio: SdpMedia = {
      media: "audio",
      port: transport.port,
      portCount: undefined,
      proto: caps.srtp === "required" ? PROFILE_SECURE : PROFILE_PLAIN,
      formats: formatList(formats),
      info: undefined,
      connections: [],
      bandwidths: [],
      key: undefined,
      attributes: audioAttributes(transport, caps.srtp, cryptos, formats, direction),
    };
    const { sdp, body } = this.describe(transport.address, [audio]);
    return { sdp, body, capabilities: caps, transport, direction, mediaIndex: 0, cryptos };
  }

  /** Our answer to a remote offer, or the reason we refuse it (488). */
  createAnswer(
    offer: SessionDescription,
    caps: MediaCapabilities,
    transport: LocalTransport,
    direction: Direction = "sendrecv",
  ): AnswerOutcome {
    checkLocal(caps, transport);
    let firstRefusal: OfferAnswerError | undefined;
    for (const [index, media] of offer.media.entries()) {
      if (media.media !== "audio" || media.port === 0) continue;
      const taken = this.takeAudio(offer, index, caps, transport, direction);
      if (taken instanceof OfferAnswerError) {
        firstRefusal ??= taken;
        continue;
      }
      const sections = offer.media.map((m, i) => (i === index ? taken.section : rejected(m)));
      const { sdp, body } = this.describe(transport.address, sections);
      return { kind: "answer", sdp, body, media: taken.media };
    }
    return {
      kind: "refused",
      error:
        firstRefusal ??
        new OfferAnswerError("no-audio-stream", "the offer has no audio stream", WARNINGS.mediaType),
    };
  }

  private takeAudio(
    offer: SessionDescription,
    index: number,
    caps: MediaCapabilities,
    transport: LocalTransport,
    wish: Direction,
  ): { section: SdpMedia; media: NegotiatedAudio } | OfferAnswerError {
    const media = offer.media[index]!;
    if (media.proto !== PROFILE_PLAIN && media.proto !== PROFILE_SECURE)
      return new OfferAnswerError(
        "unsupported-transport",
        `audio over ${media.proto} is not supported`,
        WARNINGS.transport,
      );
    const address = remoteAddressOf(offer, media);
    if (address === undefined)
      return new OfferAnswerError(
        "unsupported-address",
        "the audio stream has no IPv4 address",
        WARNINGS.address,
      );
    const formats = matchFormats(media, caps);
    if (formats.codecs.length === 0)
      return new OfferAnswerError("no-common-codec", "no audio codec in common", WARNINGS.format);

    const srtp = this.chooseSrtp(offer, media, caps);
    if (srtp instanceof OfferAnswerError) return srtp;
    const ours = srtp && this.crypto(srtp.tag, srtp.suite);

    const theirs = remoteDirection(offer, media, address);
    const direction = directionOf(receives(theirs) && sends(wish), sends(theirs) && receives(wish));
    // RFC 5761 §5.1.1: the answerer that can mux says so, and then must.
    const rtcpMux = muxes(media);
    const section: SdpMedia = {
      media: "audio",
      port: transport.port,
      portCount: undefined,
      // MS-SDPEXT: the answer to AVP-with-a=crypto that takes SRTP says SAVP.
      proto: srtp ? PROFILE_SECURE : PROFILE_PLAIN,
      formats: formatList(formats, media.formats),
      info: undefined,
      connections: [],
      bandwidths: [],
      key: undefined,
      attributes: audioAttributes(transport, caps.srtp, ours ? [ours] : [], formats, direction, rtcpMux),
    };
    return {
      section,
      media: {
        mediaIndex: index,
        remoteAddress: address,
        remotePort: media.port,
        remoteRtcpPort: rtcpPortOf(media),
        codecs: formats.codecs,
        telephoneEvent: formats.telephoneEvent,
        comfortNoise: formats.comfortNoise,
        direction,
        remotePtime: ptimeOf(media),
        srtp: srtp &&
          ours && { suite: srtp.suite, tag: srtp.tag, local: ours.keys[0]!, remote: srtp.keys[0]! },
        remoteSsrcRange: ssrcRangeOf(media),
        rtcpMux,
      },
    };
  }

  /** The offered a=crypto line we take (undefined: plain RTP), or why the policies clash. */
  private chooseSrtp(
    offer: SessionDescription,
    media: SdpMedia,
    caps: MediaCapabilities,
  ): SdesCrypto | undefined | OfferAnswerError {
    const encryption = encryptionOf(offer, media);
    const offerRequires = media.proto === PROFILE_SECURE || encryption === "required";
    const offerRefuses = encryption === "rejected" && media.proto !== PROFILE_SECURE;
    const { lines, parsed } = cryptosOf(media);
    const usable = offerRefuses ? undefined : parsed.find((c) => usableCrypto(c, suitesOf(caps)));
    const clash = (code: OfferAnswerErrorCode, text: string) =>
      new OfferAnswerError(code, text, WARNINGS.transport, ENCRYPTION_REASON);

    switch (caps.srtp) {
      case "required":
        if (offerRefuses || lines === 0)
          return clash("srtp-required", "SRTP is required and the offer has no a=crypto");
        return usable ?? clash("no-acceptable-crypto", "no a=crypto line in the offer is one we support");
      case "optional":
        if (usable) return usable;
        if (offerRequires)
          return clash("no-acceptable-crypto", "the offer requires SRTP with keys we cannot use");
        return undefined;
      case "off":
        if (offerRequires) return clash("srtp-not-supported", "the offer requires SRTP and SRTP is off");
        return undefined;
    }
  }
}

/** A rejected stream in an answer: port 0, the offer's media, profile and formats (RFC 3264 §6). */
function rejected(m: SdpMedia): SdpMedia {
  return {
    media: m.media,
    port: 0,
    portCount: undefined,
    proto: m.proto,
    formats: m.formats,
    info: undefined,
    connections: [],
    bandwidths: [],
    key: undefined,
    attributes: [],
  };
}

/** Whether an answer keeps to our offer, and what it agrees to. */
export function checkAnswer(offer: LocalOffer, answer: SessionDescription): AnswerCheck {
  const mismatch = (
    code: OfferAnswerErrorCode,
    text: string,
    warning: number = WARNINGS.format,
  ): AnswerCheck => ({
    kind: "mismatch",
    error: new OfferAnswerError(code, text, warning),
  });
  if (answer.media.length !== offer.sdp.media.length)
    return mismatch("answer-media-count", "the answer does not have one m= line per offered m= line");
  const index = offer.mediaIndex;
  const ours = offer.sdp.media[index]!;
  const m = answer.media[index]!;
  if (m.media !== "audio") return mismatch("answer-media-count", "the answer's audio m= line is not audio");
  if (m.port === 0)
    return mismatch("answer-audio-rejected", "the answer rejects the audio stream", WARNINGS.mediaType);

  const policy = offer.capabilities.srtp;
  const profiles =
    policy === "required"
      ? [PROFILE_SECURE]
      : policy === "optional"
        ? [PROFILE_PLAIN, PROFILE_SECURE]
        : [PROFILE_PLAIN];
  if (!profiles.includes(m.proto))
    return mismatch(
      "answer-profile",
      `the answer's profile ${m.proto} does not fit our offer`,
      WARNINGS.transport,
    );

  // Every format must be one we offered, and mean what it meant in our offer (RFC 3264 §6.1).
  const offered = matchFormats(ours, offer.capabilities);
  for (const fmt of m.formats) {
    if (!ours.formats.includes(fmt))
      return mismatch(
        "answer-codec-not-offered",
        `the answer uses payload type ${fmt}, which we did not offer`,
      );
  }
  const answered = matchFormats(m, offer.capabilities);
  const agrees = (a: { payloadType: number } | undefined, o: { payloadType: number } | undefined) =>
    a === undefined || a.payloadType === o?.payloadType;
  for (const c of answered.codecs) {
    if (!offered.codecs.some((o) => o.name === c.name && o.payloadType === c.payloadType))
      return mismatch(
        "answer-codec-not-offered",
        `the answer maps payload type ${c.payloadType} to another codec`,
      );
  }
  if (
    !agrees(answered.telephoneEvent, offered.telephoneEvent) ||
    !agrees(answered.comfortNoise, offered.comfortNoise)
  )
    return mismatch(
      "answer-codec-not-offered",
      "the answer maps telephone-event or CN to another payload type",
    );
  if (answered.codecs.length === 0)
    return mismatch("no-common-codec", "the answer keeps no audio codec of ours");

  const address = remoteAddressOf(answer, m);
  if (address === undefined)
    return mismatch("unsupported-address", "the answer's audio stream has no IPv4 address", WARNINGS.address);

  const srtp = agreedSrtp(offer, m);
  if (srtp instanceof OfferAnswerError) return { kind: "mismatch", error: srtp };

  const theirs = remoteDirection(answer, m, address);
  const direction = directionOf(
    sends(offer.direction) && receives(theirs),
    receives(offer.direction) && sends(theirs),
  );
  return {
    kind: "agreed",
    media: {
      mediaIndex: index,
      remoteAddress: address,
      remotePort: m.port,
      remoteRtcpPort: rtcpPortOf(m),
      codecs: answered.codecs,
      telephoneEvent: answered.telephoneEvent,
      comfortNoise: answered.comfortNoise,
      direction,
      remotePtime: ptimeOf(m),
      srtp,
      remoteSsrcRange: ssrcRangeOf(m),
      // Only what both said (RFC 5761 §5.1.1): an answer cannot mux what the offer kept apart.
      rtcpMux: muxes(ours) && muxes(m),
    },
  };
}

function agreedSrtp(offer: LocalOffer, m: SdpMedia): NegotiatedSrtp | undefined | OfferAnswerError {
  const fail = (code: OfferAnswerErrorCode, text: string) =>
    new OfferAnswerError(code, text, WARNINGS.transport, ENCRYPTION_REASON);
  const values = attributeValues(m.attributes, "crypto");
  if (offer.cryptos.length === 0) {
    if (values.length > 0)
      return fail("answer-unexpected-crypto", "the answer has a=crypto and we offered none");
    return undefined;
  }
  if (values.length === 0) {
    if (offer.capabilities.srtp === "required" || m.proto === PROFILE_SECURE)
      return fail("answer-srtp-missing", "the answer has no a=crypto and SRTP is required");
    return undefined;
  }
  // The answer accepts exactly one of the offered lines (RFC 4568 §7.1.2).
  if (values.length > 1) return fail("answer-crypto-mismatch", "the answer has more than one a=crypto line");
  let theirs: SdesCrypto;
  try {
    theirs = parseCrypto(values[0]!);
  } catch (err) {
    if (!(err instanceof SdesError)) throw err;
    return fail("answer-crypto-mismatch", `the answer's a=crypto is unusable: ${err.message}`);
  }
  const ours = offer.cryptos.find((c) => c.tag === theirs.tag);
  if (!ours)
    return fail("answer-crypto-mismatch", `the answer's crypto tag ${theirs.tag} is not one we offered`);
  if (ours.suite !== theirs.suite)
    return fail(
      "answer-crypto-mismatch",
      `the answer's tag ${theirs.tag} names ${theirs.suite}, we offered ${ours.suite}`,
    );
  if (!usableCrypto(theirs, [ours.suite]))
    return fail(
      "answer-crypto-mismatch",
      "the answer's a=crypto has several keys or session parameters we do not support",
    );
  return { suite: ours.suite, tag: ours.tag, local: ours.keys[0]!, remote: theirs.keys[0]! };
}
