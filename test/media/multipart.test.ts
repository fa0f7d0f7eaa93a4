/** multipart/alternative bodies as Lync sends them for ms-proxy-2007fallback (MS-SIPRE §3.15.4.1). */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  MS_PROXY_FALLBACK,
  MultipartError,
  parseDisposition,
  parseMediaType,
  parseMultipart,
  selectSdpBody,
} from "../../firmware/media/multipart.ts";
import { attributeValue, parseSdp } from "../../firmware/media/sdp.ts";

const BOUNDARY = "----=_NextPart_000_001C_01D282D0.D2055920";
const CONTENT_TYPE = `multipart/alternative;boundary="${BOUNDARY}"`;

/** ICE draft 6 SDP: the part for Office Communicator 2007 peers (old-style candidates). */
const ICE6_SDP = [
  "v=0",
  "o=- 0 0 IN IP4 192.0.2.56",
  "s=session",
  "c=IN IP4 192.0.2.56",
  "b=CT:99980",
  "t=0 0",
  "m=audio 11650 RTP/SAVP 9 0 8 101",
  "a=candidate:d5lFvGToRDKh/UhyFNN9rharqthzUrF2FIRP+boPcnE 1 1Riht1AWk/x7TSyhrZQfDA UDP 0.830 192.0.2.57 31848 ",
  "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:ZPslBVcUEyl4NkQI4ls0w01yOEVCDCb0X6H8cSQp|2^31|1:1",
  "a=rtpmap:9 G722/8000",
  "a=rtpmap:101 telephone-event/8000",
  "a=fmtp:101 0-16",
];
/** ICE draft 19 SDP: the part a current endpoint answers, always last. */
const ICE19_SDP = [
  "v=0",
  "o=- 0 1 IN IP4 192.0.2.56",
  "s=session",
  "c=IN IP4 192.0.2.56",
  "b=CT:99980",
  "t=0 0",
  "a=x-devicecaps:audio:send,recv;video:send,recv",
  "m=audio 15676 RTP/SAVP 9 0 8 101",
  "a=x-ssrc-range:1330447912-1330447912",
  "a=label:main-audio",
  "a=ice-ufrag:M+7x",
  "a=ice-pwd:iqMvxVs03gM/jyhb9feLQ466",
  "a=candidate:1 1 UDP 2130706431 192.0.2.56 15676 typ host ",
  "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:ZPslBVcUEyl4NkQI4ls0w01yOEVCDCb0X6H8cSQp|2^31|1:1",
  "a=rtpmap:9 G722/8000",
  "a=rtpmap:101 telephone-event/8000",
  "a=fmtp:101 0-16",
];

function lyncBody(eol = "\r\n", { preamble = "", epilogue = eol } = {}): string {
  return [
    ...(preamble ? [preamble] : []),
    `--${BOUNDARY}`,
    "Content-Type: application/sdp",
    "Content-Transfer-Encoding: 7bit",
    "Content-ID: <620c23ac899ea6b8cc5ac222d052211d@lync.test>",
    `Content-Disposition: session; handling=optional; ${MS_PROXY_FALLBACK}`,
    "",
    ...ICE6_SDP,
    "",
    `--${BOUNDARY}`,
    "Content-Type: application/sdp",
    "Content-Transfer-Encoding: 7bit",
    "Content-ID: <37df6f7ddd9b0e56592077f652b025ce@lync.test>",
    "Content-Disposition: session; handling=optional",
    "",
    ...ICE19_SDP,
    "",
    `--${BOUNDARY}--`,
  ]
    .join(eol)
    .concat(epilogue);
}

function multipartError(f: () => unknown): MultipartError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(MultipartError);
    expect(err).toBeInstanceOf(HandsetError);
    return err as MultipartError;
  }
  throw new Error("expected a MultipartError");
}

const text = (b: Buffer) => b.toString("utf8");
const crlfLines = (l: string[]) => `${l.join("\r\n")}\r\n`;

describe("parseMultipart", () => {
  it("splits Lync's body into its two application/sdp parts with headers and exact bodies", () => {
    const parts = parseMultipart(CONTENT_TYPE, Buffer.from(lyncBody()));
    expect(parts).toHaveLength(2);
    expect(parts.map((p) => `${p.contentType.type}/${p.contentType.subtype}`)).toEqual([
      "application/sdp",
      "application/sdp",
    ]);
    expect(parts[0]!.headers.map((h) => h.name)).toEqual([
      "Content-Type",
      "Content-Transfer-Encoding",
      "Content-ID",
      "Content-Disposition",
    ]);
    expect(parts[0]!.disposition).toEqual({
      type: "session",
      params: new Map([
        ["handling", "optional"],
        [MS_PROXY_FALLBACK, ""],
      ]),
    });
    expect(parts[1]!.disposition?.params.has(MS_PROXY_FALLBACK)).toBe(false);
    // The CRLF before each delimiter belongs to the delimiter: each body is the SDP, CRLF-ended.
    expect(text(parts[0]!.body)).toBe(crlfLines(ICE6_SDP));
    expect(text(parts[1]!.body)).toBe(crlfLines(ICE19_SDP));
  });

  it("ignores a preamble and an epilogue, and reads LF-only bodies the same", () => {
    const framed = parseMultipart(
      CONTENT_TYPE,
      lyncBody("\r\n", {
        preamble: "This is a multi-part message in MIME format.\r\n",
        epilogue: "\r\ntrailing junk\r\n",
      }),
    );
    expect(framed.map((p) => text(p.body))).toEqual([crlfLines(ICE6_SDP), crlfLines(ICE19_SDP)]);
    const lf = parseMultipart(CONTENT_TYPE, lyncBody("\n"));
    expect(lf.map((p) => text(p.body))).toEqual([`${ICE6_SDP.join("\n")}\n`, `${ICE19_SDP.join("\n")}\n`]);
  });

  it("allows transport padding after a delimiter, folded part headers, empty parts and header-only parts", () => {
    const body = [
      "--b  \t",
      "Content-Type: text/plain;",
      "\tcharset=utf-8",
      "",
      "one",
      "--b",
      "",
      "--b",
      "Content-Type: application/octet-stream",
      "",
      "--bx is content, not a delimiter",
      "--b",
      "Content-Type: application/octet-stream",
      "--b-- \t",
      "",
    ].join("\r\n");
    const parts = parseMultipart("multipart/mixed; boundary=b", body);
    expect(parts).toHaveLength(4);
    expect(parts[0]!.contentType.params.get("charset")).toBe("utf-8");
    expect(text(parts[0]!.body)).toBe("one");
    expect(parts[1]!.headers).toEqual([]);
    expect(parts[1]!.contentType).toMatchObject({ type: "text", subtype: "plain" });
    expect(text(parts[1]!.body)).toBe("");
    expect(text(parts[2]!.body)).toBe("--bx is content, not a delimiter");
    // Headers and no blank line: a part with no body (RFC 2046 §5.1.1 allows it).
    expect(parts[3]!.headers.map((h) => h.name)).toEqual(["Content-Type"]);
    expect(text(parts[3]!.body)).toBe("");
  });

  it("refuses what it cannot delimit or read, with a typed error", () => {
    const cases: Array<[string, string, string]> = [
      ["multipart/alternative", lyncBody(), "multipart-boundary"],
      ['multipart/alternative; boundary=""', lyncBody(), "multipart-boundary"],
      [`multipart/alternative; boundary="${"x".repeat(71)}"`, lyncBody(), "multipart-boundary"],
      ['multipart/alternative; boundary="ends in space "', lyncBody(), "multipart-boundary"],
      ['multipart/alternative; boundary="bad<char>"', lyncBody(), "multipart-boundary"],
      ['multipart/alternative; boundary="unterminated', lyncBody(), "multipart-content-type"],
      ["multipart/alternative; boundary=a; boundary=b", lyncBody(), "multipart-content-type"],
      ["multipart/alternative; boundary=a b", lyncBody(), "multipart-content-type"],
      ["multipart", lyncBody(), "multipart-content-type"],
      ["application/sdp", lyncBody(), "multipart-content-type"],
      [`multipart/alternative; boundary="other"`, lyncBody(), "multipart-no-parts"],
      ["multipart/alternative; bo(undary=x", lyncBody(), "multipart-content-type"],
      ['multipart/alternative; boundary="x"y', lyncBody(), "multipart-content-type"],
      [CONTENT_TYPE, `--${BOUNDARY}--\r\n`, "multipart-no-parts"],
      [CONTENT_TYPE, "", "multipart-no-parts"],
      [CONTENT_TYPE, lyncBody().replace(`--${BOUNDARY}--`, ""), "multipart-unterminated"],
      [CONTENT_TYPE, lyncBody().slice(0, 400), "multipart-unterminated"],
      [CONTENT_TYPE, `--${BOUNDARY}\r\nv=0\r\n\r\nx\r\n--${BOUNDARY}--`, "multipart-part-header"],
      [CONTENT_TYPE, `--${BOUNDARY}\r\n continued\r\n\r\nx\r\n--${BOUNDARY}--`, "multipart-part-header"],
      [
        CONTENT_TYPE,
        `--${BOUNDARY}\r\nContent-Type: nonsense\r\n\r\nx\r\n--${BOUNDARY}--`,
        "multipart-content-type",
      ],
    ];
    for (const [contentType, body, code] of cases)
      expect(
        multipartError(() => parseMultipart(contentType, body)).code,
        `${contentType} ${body.slice(0, 30)}`,
      ).toBe(code);
  });
});

describe("selectSdpBody", () => {
  it("takes the ICE-19 part of Lync's body, not the ms-proxy-2007fallback one", () => {
    const chosen = selectSdpBody(CONTENT_TYPE, Buffer.from(lyncBody()));
    expect(chosen.fallback).toBe(false);
    expect(text(chosen.body)).toBe(crlfLines(ICE19_SDP));
    expect(chosen.part?.headers.find((h) => h.name === "Content-ID")?.value).toContain("37df6f7d");
    const sdp = parseSdp(chosen.body);
    expect(sdp.media[0]!.port).toBe(15676);
    expect(attributeValue(sdp.media[0]!.attributes, "x-ssrc-range")).toBe("1330447912-1330447912");
  });

  it("does the same with LF line ends, a preamble and an epilogue", () => {
    const body = lyncBody("\n", { preamble: "preamble", epilogue: "\nepilogue" });
    expect(parseSdp(selectSdpBody(CONTENT_TYPE, body).body).media[0]!.port).toBe(15676);
  });

  it("reads the media type case-insensitively, with spaces and an unquoted boundary", () => {
    const body = lyncBody().replaceAll(BOUNDARY, "simple-boundary_1");
    const chosen = selectSdpBody("Multipart/Alternative ; Boundary = simple-boundary_1 ; x-other=1", body);
    expect(parseSdp(chosen.body).origin.sessionVersion).toBe("1");
  });

  it("of several current alternatives takes the last, the preferred one (RFC 2046 §5.1.4)", () => {
    const body = lyncBody().replace(`; ${MS_PROXY_FALLBACK}`, "");
    const chosen = selectSdpBody(CONTENT_TYPE, body);
    expect(chosen.fallback).toBe(false);
    expect(parseSdp(chosen.body).media[0]!.port).toBe(15676);
    const reversed = [
      `--${BOUNDARY}`,
      "Content-Type: application/sdp",
      "",
      ...ICE19_SDP,
      `--${BOUNDARY}`,
      "Content-Type: application/sdp",
      "",
      ...ICE6_SDP,
      `--${BOUNDARY}--`,
    ].join("\r\n");
    expect(parseSdp(selectSdpBody(CONTENT_TYPE, reversed).body).media[0]!.port).toBe(11650);
  });

  it("falls back to the ms-proxy-2007fallback part when it is the only SDP", () => {
    const body = [
      `--${BOUNDARY}`,
      "Content-Type: application/sdp",
      `Content-Disposition: session; handling=optional; ${MS_PROXY_FALLBACK}`,
      "",
      ...ICE6_SDP,
      `--${BOUNDARY}`,
      "Content-Type: text/plain",
      "",
      "not for us",
      `--${BOUNDARY}--`,
    ].join("\r\n");
    const chosen = selectSdpBody(CONTENT_TYPE, body);
    expect(chosen.fallback).toBe(true);
    expect(parseSdp(chosen.body).media[0]!.port).toBe(11650);
  });

  it("takes the whole body when it is application/sdp", () => {
    const sdp = crlfLines(ICE19_SDP);
    const chosen = selectSdpBody("application/SDP", Buffer.from(sdp));
    expect(chosen).toEqual({ body: Buffer.from(sdp), part: undefined, fallback: false });
  });

  it("finds the alternative inside MS-SIPRE's three-level multipart/mixed with a call context", () => {
    const inner = lyncBody();
    const body = [
      "--outer",
      `Content-Type: ${CONTENT_TYPE}`,
      "",
      inner,
      "--outer",
      "Content-Type: application/ms-call-context+xml",
      "Content-Disposition: render; handling=optional",
      "",
      "<callContext/>",
      "--outer--",
      "",
    ].join("\r\n");
    const chosen = selectSdpBody('multipart/mixed; boundary="outer"', body);
    expect(chosen.fallback).toBe(false);
    expect(parseSdp(chosen.body).media[0]!.port).toBe(15676);
  });

  it("skips an SDP part whose disposition is not session", () => {
    const body = [
      "--b",
      "Content-Type: application/sdp",
      "Content-Disposition: render",
      "",
      ...ICE6_SDP,
      "--b",
      "Content-Type: application/sdp",
      "",
      ...ICE19_SDP,
      "--b--",
    ].join("\r\n");
    expect(parseSdp(selectSdpBody("multipart/mixed; boundary=b", body).body).origin.sessionVersion).toBe("1");
    const renderOnly = [
      "--b",
      "Content-Type: application/sdp",
      "Content-Disposition: render",
      "",
      "x",
      "--b--",
    ];
    expect(
      multipartError(() => selectSdpBody("multipart/alternative; boundary=b", renderOnly.join("\r\n"))).code,
    ).toBe("multipart-no-sdp");
  });

  it("refuses bodies that carry no SDP it can read", () => {
    const noSdp = ["--b", "Content-Type: text/plain", "", "hello", "--b--"].join("\r\n");
    expect(multipartError(() => selectSdpBody("multipart/alternative; boundary=b", noSdp)).code).toBe(
      "multipart-no-sdp",
    );
    expect(multipartError(() => selectSdpBody("text/plain", "hello")).code).toBe("multipart-content-type");
    expect(multipartError(() => selectSdpBody("nonsense", "hello")).code).toBe("multipart-content-type");
    const base64 = lyncBody().replaceAll(
      "Content-Transfer-Encoding: 7bit",
      "Content-Transfer-Encoding: base64",
    );
    expect(multipartError(() => selectSdpBody(CONTENT_TYPE, base64)).code).toBe("multipart-encoding");
    // Nesting beyond MS-SIPRE's three levels.
    let body = crlfLines(ICE19_SDP);
    let type = "application/sdp";
    for (let i = 0; i < 4; i++) {
      body = [`--n${i}`, `Content-Type: ${type}`, "", body, `--n${i}--`].join("\r\n");
      type = `multipart/mixed; boundary=n${i}`;
    }
    expect(multipartError(() => selectSdpBody(type, body)).code).toBe("multipart-depth");
  });

  it("never throws anything but a MultipartError on truncated or damaged bodies", () => {
    const random = new SeededRandom(2046);
    const bytes = Buffer.from(lyncBody());
    for (let n = 0; n < 600; n++) {
      const copy = Buffer.from(bytes.subarray(0, Math.floor(random.unit() * (bytes.length + 1))));
      if (copy.length > 0 && n % 2 === 1)
        copy[Math.floor(random.unit() * copy.length)] = Math.floor(random.unit() * 256);
      try {
        selectSdpBody(CONTENT_TYPE, copy);
      } catch (err) {
        expect(err, `case ${n}`).toBeInstanceOf(MultipartError);
      }
    }
  });
});

describe("media type and disposition parameters", () => {
  it("unquote values and lower-case names", () => {
    expect(parseMediaType('Multipart/Alternative; BOUNDARY="a\\"b"; charset=UTF-8;')).toEqual({
      type: "multipart",
      subtype: "alternative",
      params: new Map([
        ["boundary", 'a"b'],
        ["charset", "UTF-8"],
      ]),
    });
    expect(parseDisposition('Session; Handling=optional; ms-proxy-2007fallback; x="semi;colon"')).toEqual({
      type: "session",
      params: new Map([
        ["handling", "optional"],
        [MS_PROXY_FALLBACK, ""],
        ["x", "semi;colon"],
      ]),
    });
    expect(multipartError(() => parseDisposition("")).code).toBe("multipart-content-type");
    expect(multipartError(() => parseMediaType("text/")).code).toBe("multipart-content-type");
  });
});
