/** The SDP line codec (RFC 4566) on Microsoft's descriptions (MS-SDPEXT and MS-SDP examples). */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  attributeValue,
  attributeValues,
  fmtpOf,
  hasAttribute,
  mediaConnection,
  mediaDirection,
  parseRtpmap,
  parseSdp,
  SdpError,
  serializeSdp,
} from "../../firmware/media/sdp.ts";
import { crlf, LYNC_OFFER } from "./sdp-samples.ts";

/** MS-SDP's message-syntax example (a=encryption:required on every stream), one line per field. */
const MS_SDP_EXAMPLE = crlf([
  "v=0",
  "o=username 0 0 IN IP4 157.59.134.89",
  "s=session",
  "c=IN IP4 157.59.134.89",
  "b=CT:1000",
  "t=0 0",
  "m=audio 56472 RTP/AVP 97 111 112 6 0 8 4 5 3 101",
  "k=base64:bhdsfsd78f7dssdfssfsd7sdfssa",
  "a=rtpmap:97 red/8000",
  "a=rtpmap:111 SIREN/16000",
  "a=fmtp:111 bitrate=16000",
  "a=rtpmap:112 G7221/16000",
  "a=fmtp:112 bitrate=24000",
  "a=rtpmap:6 DVI4/16000",
  "a=rtpmap:0 PCMU/8000",
  "a=rtpmap:8 PCMA/8000",
  "a=rtpmap:4 G723/8000",
  "a=rtpmap:5 DVI4/8000",
  "a=rtpmap:3 GSM/8000",
  "a=rtpmap:101 telephone-event/8000",
  "a=fmtp:101 0-16",
  "a=encryption:required",
  "m=video 33792 RTP/AVP 34 31",
  "k=base64:bhdsfsd78f7dssdfssfsd7sdfssa",
  "a=rtcp:33801",
  "a=rtpmap:34 H263/90000",
  "a=rtpmap:31 H261/90000",
  "a=encryption:required",
  "m=application 1503 tcp msdata",
  "a=sendonly",
  "a=encryption:required",
]);

/** Every optional field RFC 4566 §5 allows, in its place. */
const ALL_FIELDS = crlf([
  "v=0",
  "o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5",
  "s=SDP Seminar",
  "i=A Seminar on the session description protocol",
  "u=http://www.example.com/seminars/sdp.pdf",
  "e=j.doe@example.com (Jane Doe)",
  "p=+1 617 555-6011",
  "c=IN IP4 224.2.17.12/127",
  "b=AS:256",
  "t=2873397496 2873404696",
  "r=7d 1h 0 25h",
  "t=0 0",
  "z=2882844526 -1h 2898848070 0",
  "k=prompt",
  "a=recvonly",
  "a=tool:",
  "m=audio 49170/2 RTP/AVP 0",
  "i=main audio",
  "c=IN IP4 224.2.17.12/127",
  "c=IN IP4 224.2.17.13/127",
  "b=AS:64",
  "b=RR:0",
  "k=clear:secret",
  "a=rtpmap:0 PCMU/8000",
]);

function sdpError(f: () => unknown): SdpError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SdpError);
    expect(err).toBeInstanceOf(HandsetError);
    return err as SdpError;
  }
  throw new Error("expected an SdpError");
}

describe("parseSdp on Microsoft's descriptions", () => {
  it("reads the MS-SDPEXT client offer into typed fields", () => {
    const sdp = parseSdp(LYNC_OFFER);
    expect(sdp.origin).toEqual({
      username: "-",
      sessionId: "0",
      sessionVersion: "0",
      netType: "IN",
      addrType: "IP4",
      address: "172.24.32.152",
    });
    expect(sdp.connection).toEqual({ netType: "IN", addrType: "IP4", address: "172.24.32.152" });
    expect(sdp.bandwidths).toEqual([{ type: "CT", value: 99980 }]);
    expect(sdp.timings).toEqual([{ start: "0", stop: "0", repeats: [] }]);
    expect(attributeValue(sdp.attributes, "x-devicecaps")).toBe("audio:send,recv;video:send,recv");
    expect(sdp.media.map((m) => `${m.media} ${m.port} ${m.proto}`)).toEqual([
      "audio 50005 RTP/AVP",
      "video 50010 RTP/AVP",
    ]);
    const audio = sdp.media[0]!;
    expect(audio.formats).toEqual([
      "117",
      "114",
      "9",
      "111",
      "112",
      "115",
      "116",
      "8",
      "0",
      "97",
      "13",
      "118",
      "101",
    ]);
    expect(attributeValue(audio.attributes, "x-ssrc-range")).toBe("2634960950-2634960950");
    expect(attributeValue(audio.attributes, "label")).toBe("main-audio");
    expect(attributeValue(audio.attributes, "rtcp-fb")).toBe("* x-message app send:dsh recv:dsh");
    expect(hasAttribute(audio.attributes, "rtcp-rsize")).toBe(true);
    expect(attributeValue(audio.attributes, "rtcp-rsize")).toBeUndefined();
    expect(attributeValue(audio.attributes, "ice-ufrag")).toBe(" 6nxO");
    expect(attributeValues(audio.attributes, "candidate")).toHaveLength(9);
    expect(attributeValues(audio.attributes, "candidate")[0]).toBe(
      "1 1 UDP 2130706431 172.24.32.152 50005 typ host ",
    );
    expect(attributeValues(audio.attributes, "crypto").map((c) => c.split(" ")[0])).toEqual(["2", "3"]);
    expect(attributeValue(audio.attributes, "cryptoscale")).toMatch(/^1 client AES_CM_128_HMAC_SHA1_80 /);
    expect(fmtpOf(audio, "101")).toBe("0-16");
    expect(fmtpOf(audio, "114")).toBe("bitrate=29000");
    expect(fmtpOf(audio, "9")).toBeUndefined();
    expect(mediaDirection(sdp, audio)).toBe("sendrecv");
    expect(mediaConnection(sdp, audio)?.address).toBe("172.24.32.152");
  });

  it("keeps every attribute, in order, verbatim", () => {
    const sdp = parseSdp(LYNC_OFFER);
    const lines = LYNC_OFFER.split("\r\n").filter((l) => l.startsWith("a="));
    const got = [sdp.attributes, ...sdp.media.map((m) => m.attributes)]
      .flat()
      .map((a) => (a.value === undefined ? `a=${a.name}` : `a=${a.name}:${a.value}`));
    expect(got).toEqual(lines);
  });

  it("round-trips the MS-SDPEXT offer, the MS-SDP example and every RFC 4566 field byte for byte", () => {
    for (const text of [LYNC_OFFER, MS_SDP_EXAMPLE, ALL_FIELDS])
      expect(serializeSdp(parseSdp(text))).toBe(text);
  });

  it("reads MS-SDP's a=encryption, k= and the TCP application stream", () => {
    const sdp = parseSdp(MS_SDP_EXAMPLE);
    expect(sdp.media.map((m) => attributeValue(m.attributes, "encryption"))).toEqual([
      "required",
      "required",
      "required",
    ]);
    expect(sdp.media[0]!.key).toBe("base64:bhdsfsd78f7dssdfssfsd7sdfssa");
    expect(sdp.media[2]).toMatchObject({
      media: "application",
      port: 1503,
      proto: "tcp",
      formats: ["msdata"],
    });
    expect(mediaDirection(sdp, sdp.media[2]!)).toBe("sendonly");
    expect(attributeValue(sdp.media[1]!.attributes, "rtcp")).toBe("33801");
  });

  it("reads the optional fields: i u e p, multicast c=, r=, z=, k=, port count, a=name:", () => {
    const sdp = parseSdp(ALL_FIELDS);
    expect(sdp.info).toBe("A Seminar on the session description protocol");
    expect(sdp.emails).toEqual(["j.doe@example.com (Jane Doe)"]);
    expect(sdp.phones).toEqual(["+1 617 555-6011"]);
    expect(sdp.timings).toEqual([
      { start: "2873397496", stop: "2873404696", repeats: ["7d 1h 0 25h"] },
      { start: "0", stop: "0", repeats: [] },
    ]);
    expect(sdp.zone).toBe("2882844526 -1h 2898848070 0");
    expect(sdp.key).toBe("prompt");
    expect(attributeValue(sdp.attributes, "tool")).toBe("");
    const m = sdp.media[0]!;
    expect(m.port).toBe(49170);
    expect(m.portCount).toBe(2);
    expect(m.connections.map((c) => c.address)).toEqual(["224.2.17.12/127", "224.2.17.13/127"]);
    expect(m.bandwidths).toEqual([
      { type: "AS", value: 64 },
      { type: "RR", value: 0 },
    ]);
    expect(m.key).toBe("clear:secret");
    // Media level wins over the session's a=recvonly only when it says something.
    expect(mediaDirection(sdp, m)).toBe("recvonly");
  });

  it("accepts bare LF, a Buffer, a missing final line end and trailing blank lines; writes CRLF", () => {
    const lf = LYNC_OFFER.replaceAll("\r\n", "\n");
    expect(serializeSdp(parseSdp(lf))).toBe(LYNC_OFFER);
    expect(parseSdp(Buffer.from(LYNC_OFFER))).toEqual(parseSdp(LYNC_OFFER));
    expect(serializeSdp(parseSdp(LYNC_OFFER.slice(0, -2)))).toBe(LYNC_OFFER);
    expect(serializeSdp(parseSdp(`${LYNC_OFFER}\r\n\r\n`))).toBe(LYNC_OFFER);
  });

  it("keeps session ids beyond 2^53 exactly", () => {
    const text = crlf([
      "v=0",
      "o=- 4611686018427387903 18446744073709551615 IN IP4 192.0.2.1",
      "s=-",
      "t=0 0",
    ]);
    expect(parseSdp(text).origin.sessionVersion).toBe("18446744073709551615");
    expect(serializeSdp(parseSdp(text))).toBe(text);
  });
});

describe("parseSdp refuses what it cannot read, with a typed error and the line", () => {
  const base = [
    "v=0",
    "o=- 1 1 IN IP4 192.0.2.1",
    "s=-",
    "c=IN IP4 192.0.2.1",
    "t=0 0",
    "m=audio 4000 RTP/AVP 0",
  ];
  const withLine = (i: number, line: string) => crlf([...base.slice(0, i), line, ...base.slice(i + 1)]);
  const cases: Array<[string, string, string, number | undefined]> = [
    ["empty", "", "sdp-missing-field", undefined],
    ["only blank lines", "\r\n\r\n", "sdp-missing-field", undefined],
    ["no v=", crlf(base.slice(1)), "sdp-version", 1],
    ["v=1", withLine(0, "v=1"), "sdp-version", 1],
    ["o= with five fields", withLine(1, "o=- 1 IN IP4 192.0.2.1"), "sdp-origin", 2],
    ["o= with a double space", withLine(1, "o=-  1 1 IN IP4 192.0.2.1"), "sdp-origin", 2],
    ["o= id not decimal", withLine(1, "o=- 0x1 1 IN IP4 192.0.2.1"), "sdp-origin", 2],
    ["no o=", crlf([base[0]!, ...base.slice(2)]), "sdp-missing-field", 2],
    ["no s=", crlf([...base.slice(0, 2), ...base.slice(3)]), "sdp-missing-field", 3],
    ["no t=", crlf([...base.slice(0, 4), base[5]!]), "sdp-missing-field", 5],
    ["a line without =", withLine(3, "c IN IP4 192.0.2.1"), "sdp-syntax", 4],
    ["an upper-case type", withLine(3, "C=IN IP4 192.0.2.1"), "sdp-syntax", 4],
    ["space before =", withLine(3, "c =IN IP4 192.0.2.1"), "sdp-syntax", 4],
    ["an unknown type letter", crlf([...base, "x=whatever"]), "sdp-unknown-type", 7],
    ["t= after a=", crlf([...base.slice(0, 4), "a=recvonly", "t=0 0", base[5]!]), "sdp-order", 6],
    ["z= inside a media section", crlf([...base, "z=0 0"]), "sdp-order", 7],
    ["two i= in a media section", crlf([...base, "i=a", "i=b"]), "sdp-order", 8],
    ["o= nettype not a token", withLine(1, 'o=- 1 1 I"N IP4 192.0.2.1'), "sdp-origin", 2],
    ["c= addrtype not a token", withLine(3, "c=IN IP(4) 192.0.2.1"), "sdp-connection", 4],
    ["c= with two fields", withLine(3, "c=IN 192.0.2.1"), "sdp-connection", 4],
    ["b= not numeric", crlf([...base.slice(0, 4), "b=CT:lots", ...base.slice(4)]), "sdp-bandwidth", 5],
    ["b= without type", crlf([...base.slice(0, 4), "b=:5", ...base.slice(4)]), "sdp-bandwidth", 5],
    ["t= with one field", withLine(4, "t=0"), "sdp-timing", 5],
    ["m= port out of range", withLine(5, "m=audio 70000 RTP/AVP 0"), "sdp-media", 6],
    ["m= without a format", withLine(5, "m=audio 4000 RTP/AVP"), "sdp-media", 6],
    ["m= port count 0", withLine(5, "m=audio 4000/0 RTP/AVP 0"), "sdp-media", 6],
    ["m= broken proto", withLine(5, "m=audio 4000 RTP//AVP 0"), "sdp-media", 6],
    ["a= name with a space", crlf([...base, "a=bad name:1"]), "sdp-attribute", 7],
    ["a= with an empty name", crlf([...base, "a=:1"]), "sdp-attribute", 7],
    ["a blank line in the middle", crlf([...base.slice(0, 3), "", ...base.slice(3)]), "sdp-syntax", 4],
    ["a bare CR", crlf([...base.slice(0, 3), "i=a\rb", ...base.slice(3)]), "sdp-syntax", 4],
    ["a NUL", crlf([...base.slice(0, 3), "i=a\0b", ...base.slice(3)]), "sdp-syntax", 4],
  ];
  for (const [name, text, code, line] of cases)
    it(name, () => {
      const err = sdpError(() => parseSdp(text));
      expect(err.code).toBe(code);
      expect(err.line).toBe(line);
      if (line !== undefined) expect(err.message).toContain(`line ${line}`);
    });

  it("refuses bytes that are not UTF-8", () => {
    const bytes = Buffer.concat([
      Buffer.from(crlf(base.slice(0, 2))),
      Buffer.from([0x73, 0x3d, 0xc3, 0x28, 0x0d, 0x0a]),
    ]);
    expect(sdpError(() => parseSdp(bytes)).code).toBe("sdp-encoding");
  });

  it("throws only SdpError on any truncation or byte flip of a real offer", () => {
    const random = new SeededRandom(4566);
    const bytes = Buffer.from(LYNC_OFFER);
    for (let n = 0; n < 600; n++) {
      const copy = Buffer.from(bytes.subarray(0, Math.floor(random.unit() * bytes.length)));
      if (copy.length > 0 && n % 2 === 0)
        copy[Math.floor(random.unit() * copy.length)] = Math.floor(random.unit() * 256);
      try {
        const sdp = parseSdp(copy);
        // What parses, serializes back to something that parses the same.
        expect(parseSdp(serializeSdp(sdp))).toEqual(sdp);
      } catch (err) {
        expect(err, `case ${n}`).toBeInstanceOf(SdpError);
      }
    }
  });
});

describe("helpers", () => {
  it("mediaDirection: media level, then session level, then sendrecv; conflicts are errors", () => {
    const head = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"];
    const sdp = (session: string[], media: string[]) =>
      parseSdp(crlf([...head, ...session, "m=audio 4000 RTP/AVP 0", ...media]));
    const dir = (session: string[], media: string[]) => {
      const s = sdp(session, media);
      return mediaDirection(s, s.media[0]!);
    };
    expect(dir([], [])).toBe("sendrecv");
    expect(dir(["a=inactive"], [])).toBe("inactive");
    expect(dir(["a=inactive"], ["a=sendonly"])).toBe("sendonly");
    expect(dir([], ["a=recvonly", "a=recvonly"])).toBe("recvonly");
    const s = sdp([], ["a=sendonly", "a=recvonly"]);
    expect(sdpError(() => mediaDirection(s, s.media[0]!)).code).toBe("sdp-attribute");
  });

  it("parseRtpmap reads encoding, clock and channels, and refuses malformed values", () => {
    expect(parseRtpmap("117 G722/8000/2")).toEqual({
      payloadType: 117,
      encoding: "G722",
      clockRate: 8000,
      channels: 2,
    });
    expect(parseRtpmap("101 telephone-event/8000")).toEqual({
      payloadType: 101,
      encoding: "telephone-event",
      clockRate: 8000,
      channels: undefined,
    });
    for (const bad of ["128 X/8000", "9 G722", "9 G722/0", "9  G722/8000", "x G722/8000", "9 G722/8000/"])
      expect(sdpError(() => parseRtpmap(bad)).code).toBe("sdp-attribute");
  });

  it("serializeSdp refuses fields that would break the line structure", () => {
    const sdp = parseSdp(MS_SDP_EXAMPLE);
    sdp.sessionName = "two\r\nlines";
    expect(sdpError(() => serializeSdp(sdp)).code).toBe("sdp-serialize");
    const bad = parseSdp(MS_SDP_EXAMPLE);
    bad.media[0]!.attributes.push({ name: "no good", value: "x" });
    expect(sdpError(() => serializeSdp(bad)).code).toBe("sdp-serialize");
    const noTiming = parseSdp(MS_SDP_EXAMPLE);
    noTiming.timings = [];
    expect(sdpError(() => serializeSdp(noTiming)).code).toBe("sdp-serialize");
    const noFormat = parseSdp(MS_SDP_EXAMPLE);
    noFormat.media[0]!.formats = [];
    expect(sdpError(() => serializeSdp(noFormat)).code).toBe("sdp-serialize");
  });
});
