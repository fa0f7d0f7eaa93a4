/** Message model, header accessors, parser details and serialize → parse round trips. */
import { describe, expect, it } from "vitest";
import { HandsetError, SipParseError } from "../../firmware/core/errors.ts";
import {
  addHeader,
  header,
  headerKey,
  headerList,
  headers,
  removeHeader,
  request,
  response,
  setHeader,
} from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";

const CRLF = "\r\n";
const lines = (...l: string[]): string => l.join(CRLF);

const REGISTER = lines(
  "REGISTER sip:lab.test SIP/2.0",
  "v: SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bK776asdhds;rport",
  "Max-Forwards: 70",
  'f: "Desk 4711" <sip:4711@lab.test>;tag=1928301774',
  "t: <sip:4711@lab.test>",
  "i: a84b4c76e66710@10.0.0.2",
  "CSEQ: 314159 REGISTER",
  'm: <sip:4711@10.0.0.2:5061;transport=tls>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1',
  "Supported: path,",
  "  outbound, gruu",
  'Authorization: TLS-DSK qop="auth", realm="SIP Communications Service", opaque="9A2B,C", crand="1a2b", cnum="1"',
  "k: replaces",
  "l: 0",
  "",
  "",
);

describe("header accessors", () => {
  const msg = parseMessage(REGISTER);

  it("finds headers case-insensitively and through compact forms, both ways", () => {
    expect(header(msg, "Via")).toBe("SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bK776asdhds;rport");
    expect(header(msg, "v")).toBe(header(msg, "VIA"));
    expect(header(msg, "cseq")).toBe("314159 REGISTER");
    expect(header(msg, "Call-ID")).toBe("a84b4c76e66710@10.0.0.2");
    expect(header(msg, "I")).toBe("a84b4c76e66710@10.0.0.2");
    expect(header(msg, "From")).toBe('"Desk 4711" <sip:4711@lab.test>;tag=1928301774');
    expect(header(msg, "content-length")).toBe("0");
    expect(header(msg, "Nope")).toBeUndefined();
    for (const [c, long] of Object.entries({
      i: "call-id",
      m: "contact",
      e: "content-encoding",
      l: "content-length",
      c: "content-type",
      f: "from",
      s: "subject",
      k: "supported",
      t: "to",
      v: "via",
      o: "event",
      r: "refer-to",
      b: "referred-by",
      u: "allow-events",
      x: "session-expires",
      a: "accept-contact",
      j: "reject-contact",
      d: "request-disposition",
      y: "identity",
      n: "identity-info",
    })) {
      expect(headerKey(c)).toBe(long);
      expect(headerKey(c.toUpperCase())).toBe(long);
    }
  });

  it("keeps names as received and unfolds values to one space per fold", () => {
    expect(msg.headers.map((h) => h.name)).toContain("CSEQ");
    expect(header(msg, "Supported")).toBe("path, outbound, gruu");
    expect(headers(msg, "Supported")).toEqual(["path, outbound, gruu", "replaces"]);
    expect(headerList(msg, "k")).toEqual(["path", "outbound", "gruu", "replaces"]);
  });

  it("headerList splits only at top-level commas", () => {
    expect(headerList(msg, "Authorization")).toEqual([
      'TLS-DSK qop="auth"',
      'realm="SIP Communications Service"',
      'opaque="9A2B,C"',
      'crand="1a2b"',
      'cnum="1"',
    ]);
    const m = parseMessage(
      lines(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/TLS a.example;branch=z9hG4bK1",
        "CSeq: 1 REGISTER",
        'Contact: "Doe, John" <sip:j,k@a;x=1>;expires=60, <sip:k@b>',
        "Contact: sip:l@c",
        'P-Quoted: "a \\" , b", c',
        "Content-Length: 0",
        "",
        "",
      ),
    );
    expect(headerList(m, "m")).toEqual(['"Doe, John" <sip:j,k@a;x=1>;expires=60', "<sip:k@b>", "sip:l@c"]);
    expect(headerList(m, "P-Quoted")).toEqual(['"a \\" , b"', "c"]);
  });

  it("setHeader / addHeader / removeHeader", () => {
    const m = parseMessage(REGISTER);
    setHeader(m, "Supported", "outbound");
    expect(headers(m, "k")).toEqual(["outbound"]);
    expect(m.headers.findIndex((h) => h.name === "Supported")).toBe(7);
    setHeader(m, "Expires", "3600");
    expect(m.headers[m.headers.length - 1]).toEqual({ name: "Expires", value: "3600" });
    addHeader(m, "Route", "<sip:a;lr>");
    addHeader(m, "Route", "<sip:b;lr>");
    expect(headerList(m, "route")).toEqual(["<sip:a;lr>", "<sip:b;lr>"]);
    removeHeader(m, "Contact");
    expect(header(m, "m")).toBeUndefined();
    removeHeader(m, "v");
    expect(headers(m, "Via")).toEqual([]);
  });
});

describe("parseMessage details", () => {
  const base = (start: string, ...hdrs: string[]): string =>
    lines(start, "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 OPTIONS", ...hdrs, "", "");

  const rejects = (text: string | Buffer, re: RegExp, code = "sip-parse"): void => {
    let err: unknown;
    try {
      parseMessage(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SipParseError);
    expect((err as SipParseError).code).toBe(code);
    expect((err as SipParseError).message).toMatch(re);
  };

  it("accepts a minimal request and response, string or Buffer, leading CRLFs", () => {
    expect(parseMessage(base("OPTIONS sip:a@b SIP/2.0")).kind).toBe("request");
    expect(parseMessage(Buffer.from(`\r\n\r\n${base("SIP/2.0 200 OK")}`))).toMatchObject({
      kind: "response",
      status: 200,
      reason: "OK",
    });
    expect(parseMessage(base("SIP/2.0 180")).kind).toBe("response");
  });

  it("rejects malformed start lines and versions", () => {
    rejects(base("OPTIONS sip:a@b SIP/3.0"), /version/, "sip-version");
    rejects(base("OPTIONS sip:a@b HTTP/1.1"), /malformed SIP version/);
    rejects(base("SIP/2.0 700 Nope"), /100-699/);
    rejects(base("SIP/2.0 099 Nope"), /100-699/);
    rejects(base("SIP/2.0 20 OK"), /status code/);
    rejects(base("OPTIONS sip:a@b"), /Method SP/);
    rejects(base("OPT<IONS sip:a@b SIP/2.0"), /invalid method/);
    rejects(base("OPTIONS sip:a@[::1 SIP/2.0"), /IPv6/);
    rejects(base("OPTIONS sip:a@b:99999 SIP/2.0"), /port/);
    rejects(base("OPTIONS sip:a%4@b SIP/2.0"), /escape/);
  });

  it("rejects bad header syntax", () => {
    rejects(base("OPTIONS sip:a@b SIP/2.0", "Bad Name: x"), /header name/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "NoColon"), /without ":"/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "X: a\nb"), /bare CR or LF/);
    rejects(lines("OPTIONS sip:a@b SIP/2.0", " folded: x", "", ""), /continuation/);
    rejects("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", /empty line/);
    rejects(Buffer.from([...Buffer.from("OPTIONS sip:a@b SIP/2.0\r\nX: "), 0xff, 13, 10, 13, 10]), /UTF-8/);
    rejects("", /empty/);
    rejects("\r\n\r\n", /empty/);
  });

  it("checks mandatory headers and header values", () => {
    rejects(lines("OPTIONS sip:a@b SIP/2.0", "CSeq: 1 OPTIONS", "", ""), /missing Via/);
    rejects(lines("OPTIONS sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h", "", ""), /missing CSeq/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "Max-Forwards: 256"), /Max-Forwards/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "Expires: 4294967296"), /Expires/);
    expect(header(parseMessage(base("OPTIONS sip:a@b SIP/2.0", "Expires: 4294967295")), "Expires")).toBe(
      "4294967295",
    );
    rejects(base("OPTIONS sip:a@b SIP/2.0", "To: <sip:a@b"), /unterminated "<"/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "From: <sip:a@b>;tag="), /empty value/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "Contact: <sip:a@b>, "), /empty element/);
    rejects(base("OPTIONS sip:a@b SIP/2.0", "Call-ID: a b"), /Call-ID/);
    rejects(base("INVITE sip:a@b SIP/2.0"), /does not match/);
    expect(
      header(
        parseMessage(base("REGISTER sip:a SIP/2.0", "Contact: *").replace("1 OPTIONS", "1 REGISTER")),
        "m",
      ),
    ).toBe("*");
  });

  it("frames the body by Content-Length", () => {
    const msg = (cl: string, body: string): string =>
      `${lines("OPTIONS sip:a@b SIP/2.0", "Via: SIP/2.0/UDP h", "CSeq: 1 OPTIONS", `Content-Length: ${cl}`, "", "")}${body}`;
    expect(parseMessage(msg("3", "abcdef")).body.toString()).toBe("abc");
    expect(parseMessage(msg("0003", "abc")).body.toString()).toBe("abc");
    rejects(msg("7", "abc"), /larger than/, "sip-content-length");
    rejects(msg("x", "abc"), /invalid Content-Length/, "sip-content-length");
    rejects(msg("99999999999999999999", "abc"), /invalid Content-Length/, "sip-content-length");
    expect(parseMessage(`${msg("3", "abc").replace("\r\n\r\n", "\r\nl: 3\r\n\r\n")}`).body.length).toBe(3);
  });
});

describe("serializeMessage", () => {
  it("writes start line, headers in order, Content-Length, body; parse gives it back", () => {
    const body = "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\n";
    const req = request(
      "INVITE",
      "sip:4712@lab.test",
      [
        ["Via", "SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKabc"],
        ["Max-Forwards", "70"],
        ["From", '"Désk" <sip:4711@lab.test>;tag=x'],
        ["To", "<sip:4712@lab.test>"],
        ["Call-ID", "c1@10.0.0.2"],
        ["CSeq", "1 INVITE"],
        ["Content-Length", "999"],
        ["Content-Type", "application/sdp"],
      ],
      body,
    );
    const wire = serializeMessage(req);
    expect(wire.toString()).toBe(
      lines(
        "INVITE sip:4712@lab.test SIP/2.0",
        "Via: SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKabc",
        "Max-Forwards: 70",
        'From: "Désk" <sip:4711@lab.test>;tag=x',
        "To: <sip:4712@lab.test>",
        "Call-ID: c1@10.0.0.2",
        "CSeq: 1 INVITE",
        `Content-Length: ${Buffer.byteLength(body)}`,
        "Content-Type: application/sdp",
        "",
        body,
      ),
    );
    const back = parseMessage(wire);
    expect(back).toEqual({
      ...req,
      headers: req.headers.map((h) =>
        h.name === "Content-Length" ? { ...h, value: String(Buffer.byteLength(body)) } : h,
      ),
    });
    expect(serializeMessage(back).equals(wire)).toBe(true);
  });

  it("appends Content-Length when absent, drops duplicates, keeps compact names", () => {
    const res = response(200, "OK", [
      ["v", "SIP/2.0/UDP h;branch=z9hG4bK1"],
      ["CSeq", "1 OPTIONS"],
    ]);
    expect(serializeMessage(res).toString()).toBe(
      lines(
        "SIP/2.0 200 OK",
        "v: SIP/2.0/UDP h;branch=z9hG4bK1",
        "CSeq: 1 OPTIONS",
        "Content-Length: 0",
        "",
        "",
      ),
    );
    addHeader(res, "l", "5");
    addHeader(res, "Content-Length", "7");
    res.body = Buffer.from([0, 1, 2]);
    const wire = serializeMessage(res);
    expect(wire.toString("latin1")).toContain("\r\nl: 3\r\n\r\n");
    expect(wire.toString("latin1")).not.toContain("Content-Length");
    expect(parseMessage(wire).body).toEqual(Buffer.from([0, 1, 2]));
  });

  it("round-trips every header of a parsed message byte-exactly (folds aside)", () => {
    const m = parseMessage(REGISTER);
    const again = parseMessage(serializeMessage(m));
    expect(again.headers).toEqual(m.headers);
  });

  it("refuses header injection", () => {
    const r = request("OPTIONS", "sip:a@b", [["X", "a\r\nVia: evil"]]);
    expect(() => serializeMessage(r)).toThrow(HandsetError);
    expect(() => serializeMessage(request("OPTIONS", "sip:a@b", [["Bad Name", "x"]]))).toThrow(/header name/);
    expect(() => serializeMessage(response(1000, "x", []))).toThrow(/status/);
  });
});
