/** RFC 3264 offer/answer for one audio stream, with MS-SDPEXT's optional SRTP. */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  type AnswerOutcome,
  checkAnswer,
  type LocalOffer,
  LocalSession,
  type MediaCapabilities,
  type NegotiatedAudio,
  OfferAnswerError,
  type SrtpPolicy,
} from "../../firmware/media/offer-answer.ts";
import { parseCrypto } from "../../firmware/media/sdes.ts";
import {
  attributeValue,
  attributeValues,
  mediaDirection,
  parseSdp,
  type SessionDescription,
  serializeSdp,
} from "../../firmware/media/sdp.ts";
import { crlf, LYNC_KEY_2, LYNC_KEY_3, LYNC_OFFER } from "./sdp-samples.ts";

/** MS-SDP's example: a=encryption:required with a k= key and no a=crypto (OCS 2007 style). */
const MS_SDP_REQUIRED = crlf([
  "v=0",
  "o=username 0 0 IN IP4 157.59.134.89",
  "s=session",
  "c=IN IP4 157.59.134.89",
  "b=CT:1000",
  "t=0 0",
  "m=audio 56472 RTP/AVP 97 111 112 6 0 8 4 5 3 101",
  "k=base64:bhdsfsd78f7dssdfssfsd7sdfssa",
  "a=rtpmap:97 red/8000",
  "a=rtpmap:0 PCMU/8000",
  "a=rtpmap:8 PCMA/8000",
  "a=rtpmap:101 telephone-event/8000",
  "a=fmtp:101 0-16",
  "a=encryption:required",
]);

/** A minimal remote offer; `media` replaces the audio section's lines after m=. */
function offerWith(mLine: string, media: string[], session: string[] = []): SessionDescription {
  return parseSdp(
    crlf([
      "v=0",
      "o=- 5 5 IN IP4 198.51.100.7",
      "s=-",
      "c=IN IP4 198.51.100.7",
      "t=0 0",
      ...session,
      mLine,
      ...media,
    ]),
  );
}

const PLAIN_AUDIO = ["a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=rtpmap:101 telephone-event/8000"];
const cryptoLine = (tag: number, suite = "AES_CM_128_HMAC_SHA1_80", key = LYNC_KEY_2) =>
  `a=crypto:${tag} ${suite} inline:${key}|2^31`;

const caps = (srtp: SrtpPolicy, more: Partial<MediaCapabilities> = {}): MediaCapabilities => ({
  codecs: ["G722", "PCMU", "PCMA"],
  srtp,
  ...more,
});
const PHONE = { address: "192.0.2.10", port: 40000, ssrc: 0x1234abcd };
const PEER = { address: "192.0.2.20", port: 52000, ssrc: 7 };

function answered(outcome: AnswerOutcome): Extract<AnswerOutcome, { kind: "answer" }> {
  if (outcome.kind !== "answer") throw new Error(`refused: ${outcome.error.code} ${outcome.error.message}`);
  return outcome;
}

function refused(outcome: AnswerOutcome): OfferAnswerError {
  if (outcome.kind !== "refused") throw new Error("expected a refusal");
  expect(outcome.error).toBeInstanceOf(OfferAnswerError);
  expect(outcome.error).toBeInstanceOf(HandsetError);
  expect(outcome.error.status).toBe(488);
  return outcome.error;
}

function agreed(offer: LocalOffer, answer: SessionDescription | string): NegotiatedAudio {
  const check = checkAnswer(offer, typeof answer === "string" ? parseSdp(answer) : answer);
  if (check.kind !== "agreed") throw new Error(`mismatch: ${check.error.code} ${check.error.message}`);
  return check.media;
}

function mismatched(offer: LocalOffer, answer: SessionDescription | string): OfferAnswerError {
  const check = checkAnswer(offer, typeof answer === "string" ? parseSdp(answer) : answer);
  if (check.kind !== "mismatch") throw new Error("expected a mismatch");
  return check.error;
}

const lines = (body: string): string[] => body.split("\r\n");

describe("createOffer", () => {
  it("SRTP optional: RTP/AVP with a=crypto, a=encryption:optional, our codecs and Lync's attributes", () => {
    const offer = new LocalSession(new SeededRandom(1)).createOffer(caps("optional"), PHONE);
    const l = lines(offer.body);
    expect(l[0]).toBe("v=0");
    expect(l[1]).toMatch(/^o=- [0-9]+ 0 IN IP4 192\.0\.2\.10$/);
    expect(l).toContain("s=session");
    expect(l).toContain("c=IN IP4 192.0.2.10");
    expect(l).toContain("t=0 0");
    expect(l).toContain("a=x-devicecaps:audio:send,recv");
    const m = l.indexOf("m=audio 40000 RTP/AVP 9 0 8 13 101");
    expect(m).toBeGreaterThan(0);
    expect(l.slice(m + 1, m + 3)).toEqual([
      `a=x-ssrc-range:${0x1234abcd}-${0x1234abcd}`,
      "a=label:main-audio",
    ]);
    const cryptos = l.filter((x) => x.startsWith("a=crypto:"));
    expect(cryptos.map((x) => x.split(" ").slice(0, 2).join(" "))).toEqual([
      "a=crypto:1 AES_CM_128_HMAC_SHA1_80",
      "a=crypto:2 AES_CM_128_HMAC_SHA1_32",
    ]);
    for (const c of cryptos) expect(c).toMatch(/ inline:[A-Za-z0-9+/]{40}\|2\^31$/);
    expect(l).toContain("a=encryption:optional");
    expect(l).toContain("a=rtcp:40001");
    for (const r of ["9 G722/8000", "0 PCMU/8000", "8 PCMA/8000", "13 CN/8000", "101 telephone-event/8000"])
      expect(l).toContain(`a=rtpmap:${r}`);
    expect(l).toContain("a=fmtp:101 0-16");
    expect(l).toContain("a=ptime:20");
    expect(l).toContain("a=sendrecv");
    // The body is the description, and parses back to it.
    expect(parseSdp(offer.body)).toEqual(offer.sdp);
    expect(serializeSdp(offer.sdp)).toBe(offer.body);
    // The two suites get different keys.
    const keys = offer.cryptos.map((c) => Buffer.from(c.keys[0]!.keySalt).toString("hex"));
    expect(new Set(keys).size).toBe(2);
  });

  it("SRTP required: RTP/SAVP and a=encryption:required; off: RTP/AVP, no a=crypto, a=encryption:rejected", () => {
    const required = new LocalSession(new SeededRandom(2)).createOffer(caps("required"), PHONE);
    expect(required.sdp.media[0]!.proto).toBe("RTP/SAVP");
    expect(attributeValue(required.sdp.media[0]!.attributes, "encryption")).toBe("required");
    expect(attributeValues(required.sdp.media[0]!.attributes, "crypto")).toHaveLength(2);
    const off = new LocalSession(new SeededRandom(2)).createOffer(caps("off"), PHONE);
    expect(off.sdp.media[0]!.proto).toBe("RTP/AVP");
    expect(attributeValues(off.sdp.media[0]!.attributes, "crypto")).toEqual([]);
    expect(attributeValue(off.sdp.media[0]!.attributes, "encryption")).toBe("rejected");
    expect(off.cryptos).toEqual([]);
  });

  it("follows the caller's codec order, suites, and leaves out CN and telephone-event on request", () => {
    const offer = new LocalSession(new SeededRandom(3)).createOffer(
      caps("optional", {
        codecs: ["PCMA", "G722"],
        comfortNoise: false,
        telephoneEvent: false,
        suites: ["AES_CM_128_HMAC_SHA1_32"],
      }),
      { ...PHONE, rtcpPort: 40009 },
    );
    const audio = offer.sdp.media[0]!;
    expect(audio.formats).toEqual(["8", "9"]);
    expect(attributeValues(audio.attributes, "rtpmap")).toEqual(["8 PCMA/8000", "9 G722/8000"]);
    expect(attributeValues(audio.attributes, "fmtp")).toEqual([]);
    expect(attributeValues(audio.attributes, "crypto").map((c) => parseCrypto(c).suite)).toEqual([
      "AES_CM_128_HMAC_SHA1_32",
    ]);
    expect(attributeValue(audio.attributes, "rtcp")).toBe("40009");
  });

  it("puts up the o= version by one per offer in a dialog; same id, same keys until rekey()", () => {
    const session = new LocalSession(new SeededRandom(4));
    expect(session.sessionVersion).toBeUndefined();
    const first = session.createOffer(caps("optional"), PHONE);
    const hold = session.createOffer(caps("optional"), PHONE, "sendonly");
    const resume = session.createOffer(caps("optional"), PHONE, "sendrecv");
    expect([first, hold, resume].map((o) => o.sdp.origin.sessionVersion)).toEqual(["0", "1", "2"]);
    expect(session.sessionVersion).toBe("2");
    expect(new Set([first, hold, resume].map((o) => o.sdp.origin.sessionId)).size).toBe(1);
    expect(first.sdp.origin.sessionId).toBe(session.sessionId);
    expect(mediaDirection(hold.sdp, hold.sdp.media[0]!)).toBe("sendonly");
    expect(mediaDirection(resume.sdp, resume.sdp.media[0]!)).toBe("sendrecv");
    const inactive = session.createOffer(caps("optional"), PHONE, "inactive");
    expect(mediaDirection(inactive.sdp, inactive.sdp.media[0]!)).toBe("inactive");
    expect(hold.cryptos).toEqual(first.cryptos);
    session.rekey();
    const rekeyed = session.createOffer(caps("optional"), PHONE);
    expect(rekeyed.cryptos[0]!.keys[0]!.keySalt).not.toEqual(first.cryptos[0]!.keys[0]!.keySalt);
    expect(rekeyed.sdp.origin.sessionVersion).toBe("4");
  });

  it("takes its session id and keys from the Random port only", () => {
    const a = new LocalSession(new SeededRandom(9)).createOffer(caps("optional"), PHONE);
    const b = new LocalSession(new SeededRandom(9)).createOffer(caps("optional"), PHONE);
    const c = new LocalSession(new SeededRandom(10)).createOffer(caps("optional"), PHONE);
    expect(a.body).toBe(b.body);
    expect(a.body).not.toBe(c.body);
  });

  it("refuses a configuration it cannot describe, as a HandsetError", () => {
    const session = new LocalSession(new SeededRandom(5));
    const bad: Array<[MediaCapabilities, typeof PHONE & { rtcpPort?: number }]> = [
      [caps("optional"), { ...PHONE, address: "fe80::1" }],
      [caps("optional"), { ...PHONE, address: "192.0.2.256" }],
      [caps("optional"), { ...PHONE, port: 0 }],
      [caps("optional"), { ...PHONE, port: 65535 }],
      [caps("optional"), { ...PHONE, ssrc: 2 ** 32 }],
      [caps("optional", { codecs: [] }), PHONE],
      [caps("optional", { codecs: ["PCMU", "PCMU"] }), PHONE],
      [caps("required", { suites: [] }), PHONE],
      // biome-ignore lint/suspicious/noExplicitAny: a configuration from outside the type system
      [caps("optional", { codecs: ["G729" as any] }), PHONE],
    ];
    for (const [c, t] of bad) {
      let caught: unknown;
      try {
        session.createOffer(c, t);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(HandsetError);
      expect((caught as HandsetError).code).toBe("media-config");
    }
    expect(session.sessionVersion).toBeUndefined();
  });
});

describe("createAnswer", () => {
  it("answers the MS-SDPEXT Lync offer: common codecs in its order, first usable a=crypto, video rejected", () => {
    const random = new SeededRandom(11);
    const a = answered(new LocalSession(random).createAnswer(parseSdp(LYNC_OFFER), caps("optional"), PHONE));
    expect(a.sdp.media).toHaveLength(2);
    const [audio, video] = a.sdp.media as [
      NonNullable<(typeof a.sdp.media)[0]>,
      NonNullable<(typeof a.sdp.media)[0]>,
    ];
    // MS-SDPEXT: taking SRTP offered with AVP and a=crypto, the answer says SAVP.
    expect(audio.proto).toBe("RTP/SAVP");
    expect(audio.port).toBe(40000);
    // 117 is stereo G.722 and 118 is CN at 16 kHz: neither is ours.
    expect(audio.formats).toEqual(["9", "8", "0", "13", "101"]);
    expect(attributeValues(audio.attributes, "rtpmap")).toEqual([
      "9 G722/8000",
      "8 PCMA/8000",
      "0 PCMU/8000",
      "13 CN/8000",
      "101 telephone-event/8000",
    ]);
    expect(attributeValue(audio.attributes, "fmtp")).toBe("101 0-16");
    const crypto = attributeValues(audio.attributes, "crypto").map(parseCrypto);
    expect(crypto).toHaveLength(1);
    expect(crypto[0]!.tag).toBe(2);
    expect(crypto[0]!.suite).toBe("AES_CM_128_HMAC_SHA1_80");
    expect(Buffer.from(crypto[0]!.keys[0]!.keySalt).toString("base64")).not.toBe(LYNC_KEY_2);
    expect(attributeValue(audio.attributes, "label")).toBe("main-audio");
    expect(attributeValue(audio.attributes, "sendrecv")).toBeUndefined();
    expect(audio.attributes.some((x) => x.name === "sendrecv")).toBe(true);
    expect(video).toMatchObject({
      media: "video",
      port: 0,
      proto: "RTP/AVP",
      formats: ["122", "121", "123"],
    });
    expect(video.attributes).toEqual([]);

    expect(a.media).toMatchObject({
      mediaIndex: 0,
      remoteAddress: "172.24.32.152",
      remotePort: 50005,
      remoteRtcpPort: 50009,
      direction: "sendrecv",
      remotePtime: 20,
      telephoneEvent: { payloadType: 101, events: "0-16" },
      comfortNoise: { payloadType: 13 },
      remoteSsrcRange: { first: 2634960950, last: 2634960950 },
    });
    expect(a.media.codecs.map((c) => `${c.name}/${c.payloadType}`)).toEqual(["G722/9", "PCMA/8", "PCMU/0"]);
    expect(Buffer.from(a.media.srtp!.remote.keySalt).toString("base64")).toBe(LYNC_KEY_2);
    expect(a.media.srtp!.remote.mki).toEqual({ value: 1n, length: 1 });
    expect(a.media.srtp!.local.keySalt).toEqual(crypto[0]!.keys[0]!.keySalt);
    expect(parseSdp(a.body)).toEqual(a.sdp);
  });

  it("answers with the offer's payload types and only our codecs", () => {
    const offer = offerWith("m=audio 4000 RTP/AVP 96 18 0", [
      "a=rtpmap:96 PCMA/8000",
      "a=rtpmap:18 G729/8000",
    ]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("off"), PHONE));
    expect(a.sdp.media[0]!.formats).toEqual(["96", "0"]);
    expect(a.media.codecs).toEqual([
      { name: "PCMA", payloadType: 96, clockRate: 8000 },
      { name: "PCMU", payloadType: 0, clockRate: 8000 },
    ]);
    expect(attributeValues(a.sdp.media[0]!.attributes, "rtpmap")).toEqual(["96 PCMA/8000", "0 PCMU/8000"]);
  });

  it("reads static payload types without rtpmap and encoding names in any case", () => {
    const offer = offerWith("m=audio 4000 RTP/AVP 9 13 100", ["a=rtpmap:100 Telephone-Event/8000"]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("off"), PHONE));
    expect(a.sdp.media[0]!.formats).toEqual(["9", "13", "100"]);
    // No fmtp: RFC 4733 takes events 0-15.
    expect(a.media.telephoneEvent).toEqual({ payloadType: 100, events: "0-15" });
    expect(attributeValue(a.sdp.media[0]!.attributes, "fmtp")).toBe("100 0-15");
  });

  it("keeps the telephone events both sides know, and drops telephone-event when none is common", () => {
    const some = offerWith("m=audio 4000 RTP/AVP 0 101", [
      "a=rtpmap:101 telephone-event/8000",
      "a=fmtp:101 0-11,16,66",
    ]);
    expect(
      answered(new LocalSession(new SeededRandom(1)).createAnswer(some, caps("off"), PHONE)).media
        .telephoneEvent,
    ).toEqual({ payloadType: 101, events: "0-11,16" });
    const none = offerWith("m=audio 4000 RTP/AVP 0 101", [
      "a=rtpmap:101 telephone-event/8000",
      "a=fmtp:101 66-70",
    ]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(none, caps("off"), PHONE));
    expect(a.media.telephoneEvent).toBeUndefined();
    expect(a.sdp.media[0]!.formats).toEqual(["0"]);
    const off = offerWith("m=audio 4000 RTP/AVP 0 13 101", PLAIN_AUDIO);
    const without = answered(
      new LocalSession(new SeededRandom(1)).createAnswer(
        off,
        caps("off", { telephoneEvent: false, comfortNoise: false }),
        PHONE,
      ),
    );
    expect(without.sdp.media[0]!.formats).toEqual(["0"]);
  });

  it("skips payload types whose rtpmap or events it cannot read, and odd a=rtcp and a=ptime values", () => {
    const offer = offerWith("m=audio 4000 RTP/AVP 96 0 101 x", [
      "a=rtpmap:96 PCMA",
      "a=rtpmap:0 PCMU/8000/1",
      "a=rtpmap:101 telephone-event/8000",
      "a=fmtp:101 0-x",
      "a=rtcp:not-a-port",
      "a=ptime:soon",
      "a=x-ssrc-range:9-3",
    ]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("off"), PHONE));
    expect(a.sdp.media[0]!.formats).toEqual(["0"]);
    expect(a.media).toMatchObject({
      remoteRtcpPort: 4001,
      remotePtime: undefined,
      telephoneEvent: undefined,
      remoteSsrcRange: undefined,
    });
  });

  it("mirrors the direction: sendonly → recvonly, recvonly → sendonly, inactive → inactive", () => {
    const cases: Array<[string[], string[], "sendrecv" | "sendonly" | "recvonly" | "inactive", string]> = [
      [[], ["a=sendonly"], "sendrecv", "recvonly"],
      [[], ["a=recvonly"], "sendrecv", "sendonly"],
      [[], ["a=inactive"], "sendrecv", "inactive"],
      [["a=sendonly"], [], "sendrecv", "recvonly"],
      [[], [], "sendonly", "sendonly"],
      [[], ["a=sendonly"], "sendonly", "inactive"],
    ];
    for (const [session, media, wish, expected] of cases) {
      const offer = offerWith("m=audio 4000 RTP/AVP 0", media, session);
      const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("off"), PHONE, wish));
      expect(a.media.direction, `${session} ${media} ${wish}`).toBe(expected);
      expect(mediaDirection(a.sdp, a.sdp.media[0]!)).toBe(expected);
    }
  });

  it("takes RFC 2543 hold (c=0.0.0.0) as 'do not send to me'", () => {
    const offer = offerWith("m=audio 4000 RTP/AVP 0", ["c=IN IP4 0.0.0.0"]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("off"), PHONE));
    expect(a.media.remoteAddress).toBe("0.0.0.0");
    expect(a.media.direction).toBe("recvonly");
  });

  it("SRTP policy against the offer", () => {
    const avpCrypto = offerWith("m=audio 4000 RTP/AVP 0", [cryptoLine(5)]);
    const savpCrypto = offerWith("m=audio 4000 RTP/SAVP 0", [cryptoLine(5)]);
    const avpPlain = offerWith("m=audio 4000 RTP/AVP 0", []);
    const answer = (offer: SessionDescription, policy: SrtpPolicy) =>
      new LocalSession(new SeededRandom(1)).createAnswer(offer, caps(policy), PHONE);

    for (const [offer, policy] of [
      [avpCrypto, "required"],
      [avpCrypto, "optional"],
      [savpCrypto, "required"],
      [savpCrypto, "optional"],
    ] as const) {
      const a = answered(answer(offer, policy));
      expect(a.sdp.media[0]!.proto).toBe("RTP/SAVP");
      expect(attributeValues(a.sdp.media[0]!.attributes, "crypto").map((c) => parseCrypto(c).tag)).toEqual([
        5,
      ]);
      expect(a.media.srtp?.tag).toBe(5);
    }
    for (const [offer, policy] of [
      [avpPlain, "optional"],
      [avpPlain, "off"],
      [avpCrypto, "off"],
    ] as const) {
      const a = answered(answer(offer, policy));
      expect(a.sdp.media[0]!.proto).toBe("RTP/AVP");
      expect(attributeValues(a.sdp.media[0]!.attributes, "crypto")).toEqual([]);
      expect(a.media.srtp).toBeUndefined();
    }
    expect(attributeValue(answered(answer(avpCrypto, "off")).sdp.media[0]!.attributes, "encryption")).toBe(
      "rejected",
    );

    const required = refused(answer(avpPlain, "required"));
    expect(required.code).toBe("srtp-required");
    expect(required.reason).toBe("Encryption Levels not compatible");
    expect(required.warning.code).toBe(302);
    expect(refused(answer(savpCrypto, "off")).code).toBe("srtp-not-supported");
  });

  it("skips a=crypto lines it cannot use and takes the first it can, in the offer's order", () => {
    const offer = offerWith("m=audio 4000 RTP/SAVP 0", [
      `a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:${LYNC_KEY_2}${LYNC_KEY_3}`,
      `a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:${LYNC_KEY_2} UNENCRYPTED_SRTP`,
      "a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:short",
      cryptoLine(4, "AES_CM_128_HMAC_SHA1_32", LYNC_KEY_3),
      cryptoLine(5),
    ]);
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("required"), PHONE));
    expect(a.media.srtp).toMatchObject({ tag: 4, suite: "AES_CM_128_HMAC_SHA1_32" });
    const only80 = new LocalSession(new SeededRandom(1)).createAnswer(
      offer,
      caps("required", { suites: ["AES_CM_128_HMAC_SHA1_80"] }),
      PHONE,
    );
    expect(answered(only80).media.srtp?.tag).toBe(5);
  });

  it("refuses SRTP that is required with keys it cannot use; goes plain when SRTP was only optional", () => {
    const unusable = [`a=crypto:1 AES_256_CM_HMAC_SHA1_80 inline:${LYNC_KEY_2}${LYNC_KEY_3}`];
    const savp = offerWith("m=audio 4000 RTP/SAVP 0", unusable);
    const avp = offerWith("m=audio 4000 RTP/AVP 0", unusable);
    const session = new LocalSession(new SeededRandom(1));
    expect(refused(session.createAnswer(savp, caps("optional"), PHONE)).code).toBe("no-acceptable-crypto");
    expect(refused(session.createAnswer(avp, caps("required"), PHONE)).code).toBe("no-acceptable-crypto");
    expect(answered(session.createAnswer(avp, caps("optional"), PHONE)).media.srtp).toBeUndefined();
    // a=encryption:rejected: the offerer will not do SRTP, whatever else it wrote.
    const rejecting = offerWith("m=audio 4000 RTP/AVP 0", [cryptoLine(1), "a=encryption:rejected"]);
    expect(refused(session.createAnswer(rejecting, caps("required"), PHONE)).code).toBe("srtp-required");
    expect(answered(session.createAnswer(rejecting, caps("optional"), PHONE)).media.srtp).toBeUndefined();
  });

  it("refuses MS-SDP's encryption:required offer with only a k= key: 488 Encryption Levels not compatible", () => {
    for (const policy of ["required", "optional", "off"] as const) {
      const err = refused(
        new LocalSession(new SeededRandom(1)).createAnswer(parseSdp(MS_SDP_REQUIRED), caps(policy), PHONE),
      );
      expect(err.reason).toBe("Encryption Levels not compatible");
      expect(err.code).toBe(
        policy === "off"
          ? "srtp-not-supported"
          : policy === "required"
            ? "srtp-required"
            : "no-acceptable-crypto",
      );
    }
  });

  it("refuses offers without a usable audio stream, with the RFC 3261 warning for each", () => {
    const session = new LocalSession(new SeededRandom(1));
    const cases: Array<[SessionDescription, string, number]> = [
      [offerWith("m=audio 4000 RTP/AVP 18", ["a=rtpmap:18 G729/8000"]), "no-common-codec", 305],
      [offerWith("m=audio 4000 RTP/AVP 96", []), "no-common-codec", 305],
      [offerWith("m=video 4000 RTP/AVP 34", []), "no-audio-stream", 304],
      [offerWith("m=audio 0 RTP/AVP 0", []), "no-audio-stream", 304],
      [offerWith("m=audio 4000 UDP/TLS/RTP/SAVPF 0", []), "unsupported-transport", 302],
      [offerWith("m=audio 4000 RTP/AVP 0", ["c=IN IP6 2001:db8::1"]), "unsupported-address", 301],
    ];
    for (const [offer, code, warning] of cases) {
      const err = refused(session.createAnswer(offer, caps("optional"), PHONE));
      expect(err.code).toBe(code);
      expect(err.warning.code).toBe(warning);
      expect(err.reason).toBe("Not Acceptable Here");
    }
    // A refusal sends no description, so the version does not move.
    expect(session.sessionVersion).toBeUndefined();
  });

  it("takes the first audio stream it can and rejects the others, keeping the m= lines in order", () => {
    const offer = parseSdp(
      crlf([
        "v=0",
        "o=- 5 5 IN IP4 198.51.100.7",
        "s=-",
        "c=IN IP4 198.51.100.7",
        "t=0 0",
        "m=audio 4000 RTP/AVP 18",
        "m=audio 4002 RTP/AVP 0",
        "a=ptime:30",
        "m=audio 4004 RTP/AVP 8",
        "m=x-data 4006 RTP/SAVP 127",
      ]),
    );
    const a = answered(new LocalSession(new SeededRandom(1)).createAnswer(offer, caps("optional"), PHONE));
    expect(a.sdp.media.map((m) => `${m.media} ${m.port} ${m.formats.join(",")}`)).toEqual([
      "audio 0 18",
      "audio 40000 0",
      "audio 0 8",
      "x-data 0 127",
    ]);
    expect(a.media).toMatchObject({ mediaIndex: 1, remotePort: 4002, remoteRtcpPort: 4003, remotePtime: 30 });
  });
});

describe("checkAnswer", () => {
  it("two phones agree end to end, each side unprotecting with the other's key", () => {
    const caller = new LocalSession(new SeededRandom(21));
    const callee = new LocalSession(new SeededRandom(22));
    const offer = caller.createOffer(caps("optional"), PHONE);
    const answer = answered(
      callee.createAnswer(parseSdp(offer.body), caps("optional", { codecs: ["PCMU", "G722"] }), PEER),
    );
    const media = agreed(offer, answer.body);
    expect(media.codecs.map((c) => c.name)).toEqual(["G722", "PCMU"]);
    expect(media).toMatchObject({
      remoteAddress: "192.0.2.20",
      remotePort: 52000,
      remoteRtcpPort: 52001,
      direction: "sendrecv",
      telephoneEvent: { payloadType: 101, events: "0-16" },
      comfortNoise: { payloadType: 13 },
      remoteSsrcRange: { first: 7, last: 7 },
    });
    expect(media.srtp?.tag).toBe(1);
    expect(media.srtp?.suite).toBe("AES_CM_128_HMAC_SHA1_80");
    expect(media.srtp?.local.keySalt).toEqual(answer.media.srtp?.remote.keySalt);
    expect(media.srtp?.remote.keySalt).toEqual(answer.media.srtp?.local.keySalt);
    expect(media.srtp?.local.keySalt).not.toEqual(media.srtp?.remote.keySalt);
    expect(answer.sdp.media[0]!.proto).toBe("RTP/SAVP");
  });

  it("hold and resume: our sendonly answered recvonly, then sendrecv again", () => {
    const caller = new LocalSession(new SeededRandom(23));
    const callee = new LocalSession(new SeededRandom(24));
    for (const [ours, theirs] of [
      ["sendonly", "recvonly"],
      ["inactive", "inactive"],
      ["sendrecv", "sendrecv"],
    ] as const) {
      const offer = caller.createOffer(caps("required"), PHONE, ours);
      const answer = answered(callee.createAnswer(parseSdp(offer.body), caps("required"), PEER));
      expect(answer.media.direction).toBe(theirs);
      expect(agreed(offer, answer.sdp).direction).toBe(ours);
    }
    expect(caller.sessionVersion).toBe("2");
    expect(callee.sessionVersion).toBe("2");
  });

  it("accepts a plain answer to an optional offer, and an RFC 4568-style AVP answer with a=crypto", () => {
    const offer = new LocalSession(new SeededRandom(25)).createOffer(caps("optional"), PHONE);
    const head = ["v=0", "o=- 1 1 IN IP4 192.0.2.20", "s=-", "c=IN IP4 192.0.2.20", "t=0 0"];
    expect(agreed(offer, crlf([...head, "m=audio 5000 RTP/AVP 0"])).srtp).toBeUndefined();
    const withCrypto = agreed(
      offer,
      crlf([...head, "m=audio 5000 RTP/AVP 0", cryptoLine(2, "AES_CM_128_HMAC_SHA1_32")]),
    );
    expect(withCrypto.srtp).toMatchObject({ tag: 2, suite: "AES_CM_128_HMAC_SHA1_32" });
    expect(Buffer.from(withCrypto.srtp!.remote.keySalt).toString("base64")).toBe(LYNC_KEY_2);
    expect(withCrypto.srtp!.local).toEqual(offer.cryptos[1]!.keys[0]);
    expect(withCrypto.codecs).toEqual([{ name: "PCMU", payloadType: 0, clockRate: 8000 }]);
    expect(withCrypto.telephoneEvent).toBeUndefined();
  });

  it("catches answers that break the offer", () => {
    const head = ["v=0", "o=- 1 1 IN IP4 192.0.2.20", "s=-", "c=IN IP4 192.0.2.20", "t=0 0"];
    const optional = new LocalSession(new SeededRandom(26)).createOffer(caps("optional"), PHONE);
    const required = new LocalSession(new SeededRandom(27)).createOffer(caps("required"), PHONE);
    const off = new LocalSession(new SeededRandom(28)).createOffer(caps("off"), PHONE);
    const cases: Array<[LocalOffer, string[], string]> = [
      [optional, ["m=audio 5000 RTP/AVP 0", "m=video 0 RTP/AVP 34"], "answer-media-count"],
      [optional, [], "answer-media-count"],
      [optional, ["m=video 5000 RTP/AVP 34"], "answer-media-count"],
      [optional, ["m=audio 0 RTP/AVP 0"], "answer-audio-rejected"],
      [optional, ["m=audio 5000 RTP/AVP 18", "a=rtpmap:18 G729/8000"], "answer-codec-not-offered"],
      [optional, ["m=audio 5000 RTP/AVP 0", "a=rtpmap:0 PCMA/8000"], "answer-codec-not-offered"],
      [optional, ["m=audio 5000 RTP/AVP 0 101", "a=rtpmap:101 CN/8000"], "answer-codec-not-offered"],
      [optional, ["m=audio 5000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"], "no-common-codec"],
      [optional, ["m=audio 5000 RTP/SAVP 0", cryptoLine(9)], "answer-crypto-mismatch"],
      [
        optional,
        ["m=audio 5000 RTP/SAVP 0", cryptoLine(1, "AES_CM_128_HMAC_SHA1_32")],
        "answer-crypto-mismatch",
      ],
      [optional, ["m=audio 5000 RTP/SAVP 0", cryptoLine(1), cryptoLine(2)], "answer-crypto-mismatch"],
      [
        optional,
        ["m=audio 5000 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:nope"],
        "answer-crypto-mismatch",
      ],
      [optional, ["m=audio 5000 RTP/SAVP 0", `${cryptoLine(1)} KDR=1`], "answer-crypto-mismatch"],
      [optional, ["m=audio 5000 RTP/SAVP 0"], "answer-srtp-missing"],
      [optional, ["m=audio 5000 UDP/TLS/RTP/SAVPF 0"], "answer-profile"],
      [optional, ["m=audio 5000 RTP/AVP 0", "c=IN IP6 2001:db8::2"], "unsupported-address"],
      [required, ["m=audio 5000 RTP/AVP 0", cryptoLine(1)], "answer-profile"],
      [required, ["m=audio 5000 RTP/SAVP 0"], "answer-srtp-missing"],
      [off, ["m=audio 5000 RTP/SAVP 0", cryptoLine(1)], "answer-profile"],
      [off, ["m=audio 5000 RTP/AVP 0", cryptoLine(1)], "answer-unexpected-crypto"],
    ];
    for (const [offer, media, code] of cases) {
      const err = mismatched(offer, crlf([...head, ...media]));
      expect(err, media.join(" | ")).toBeInstanceOf(OfferAnswerError);
      expect(err.code, media.join(" | ")).toBe(code);
    }
  });
});

describe("rtcp-mux (RFC 5761)", () => {
  it("an offer's a=rtcp-mux is repeated in the answer and agreed; an answer cannot add it", () => {
    const callee = new LocalSession(new SeededRandom(41));
    const muxed = offerWith("m=audio 5000 RTP/AVP 0", ["a=rtpmap:0 PCMU/8000", "a=rtcp-mux"]);
    const a = answered(callee.createAnswer(muxed, caps("optional"), PHONE));
    expect(a.media.rtcpMux).toBe(true);
    expect(lines(a.body)).toContain("a=rtcp-mux");
    const plain = answered(
      callee.createAnswer(offerWith("m=audio 5000 RTP/AVP 0", []), caps("optional"), PHONE),
    );
    expect(plain.media.rtcpMux).toBe(false);
    expect(lines(plain.body)).not.toContain("a=rtcp-mux");

    // Our offers keep RTCP on its own port, so a muxing answer is taken without mux.
    const caller = new LocalSession(new SeededRandom(42));
    const offer = caller.createOffer(caps("off"), PHONE);
    const answer = crlf([
      "v=0",
      "o=- 5 5 IN IP4 198.51.100.7",
      "s=-",
      "c=IN IP4 198.51.100.7",
      "t=0 0",
      "m=audio 5000 RTP/AVP 0",
      "a=rtcp-mux",
    ]);
    expect(agreed(offer, answer).rtcpMux).toBe(false);
  });
});
