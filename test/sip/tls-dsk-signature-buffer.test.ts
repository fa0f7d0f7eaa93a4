import { describe, expect, it } from "vitest";
import { parseAuthHeader } from "../../firmware/sip/grammar/auth-params.ts";
import type { SipMessage } from "../../firmware/sip/message/message.ts";
import { header } from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import type { BufferAuth } from "../../firmware/sip/tls-dsk/signature-buffer.ts";
import { signatureBuffer } from "../../firmware/sip/tls-dsk/signature-buffer.ts";
import {
  crlf,
  NTLM_REQUEST,
  NTLM_REQUEST_BUFFER,
  NTLM_RESPONSE,
  NTLM_RESPONSE_BUFFER,
  OCPSTN_200,
  OCPSTN_BUFFER,
  REALM,
  V2_BUFFER,
  V2_RESPONSE,
  VA,
  VA_REQUEST,
  VA_RESPONSE,
} from "./tls-dsk-fixtures.ts";

/** Buffer auth taken from the message's own auth header, as a verifier would. */
function authFrom(msg: SipMessage, headerName: string, version: number, randParam: string, numParam: string) {
  const value = header(msg, headerName);
  if (value === undefined) throw new Error(`no ${headerName}`);
  const c = parseAuthHeader(value);
  return {
    protocol: c.scheme,
    rand: c.params.get(randParam) ?? "",
    num: c.params.get(numParam) ?? "",
    realm: c.params.get("realm") ?? "",
    targetname: c.params.get("targetname") ?? "",
    version,
  } satisfies BufferAuth;
}

const auth = (over: Partial<BufferAuth> = {}): BufferAuth => ({
  protocol: "TLS-DSK",
  rand: "r",
  num: "1",
  realm: REALM,
  targetname: "t",
  version: 4,
  ...over,
});

describe("signature buffer: known vectors (byte-exact)", () => {
  it("§5.1 NTLM REGISTER request (16-field, no status)", () => {
    const msg = parseMessage(NTLM_REQUEST);
    expect(signatureBuffer(msg, authFrom(msg, "Proxy-Authorization", 4, "crand", "cnum"))).toBe(
      NTLM_REQUEST_BUFFER,
    );
  });

  it("§5.1 NTLM 200 OK (display name dropped, To tag, Expires, status)", () => {
    const msg = parseMessage(NTLM_RESPONSE);
    expect(signatureBuffer(msg, authFrom(msg, "Authentication-Info", 4, "srand", "snum"))).toBe(
      NTLM_RESPONSE_BUFFER,
    );
  });

  it("§5.1 version 2 (13-field layout: no To URI, no PAI)", () => {
    const msg = parseMessage(V2_RESPONSE);
    expect(signatureBuffer(msg, authFrom(msg, "Authentication-Info", 2, "srand", "snum"))).toBe(V2_BUFFER);
  });

  it("§5.2 MS-OCPSTN INVITE 200 (upper-case header names, PAI, Session-Expires ignored)", () => {
    const msg = parseMessage(OCPSTN_200);
    expect(signatureBuffer(msg, authFrom(msg, "Authentication-Info", 4, "srand", "snum"))).toBe(
      OCPSTN_BUFFER,
    );
  });

  it("Vector A request buffer", () => {
    const msg = parseMessage(VA_REQUEST);
    expect(signatureBuffer(msg, auth({ rand: VA.crand, num: "1", targetname: VA.targetname }))).toBe(
      VA.requestBuffer,
    );
  });

  it("Vector A response buffer", () => {
    const msg = parseMessage(VA_RESPONSE);
    expect(signatureBuffer(msg, authFrom(msg, "Authentication-Info", 4, "srand", "snum"))).toBe(
      VA.responseBuffer,
    );
  });
});

const reg = (extra: string[], cseq = "2 REGISTER"): string =>
  crlf([
    "REGISTER sip:contoso.test SIP/2.0",
    "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1",
    "Call-ID: cid",
    `CSeq: ${cseq}`,
    ...extra,
    "Content-Length: 0",
  ]);

describe("signature buffer: field rules", () => {
  it("de-REGISTER: Expires 0 ends …<><><0>, and requests have no 16th field", () => {
    const msg = parseMessage(reg(["From: <sip:a@x>;tag=1", "To: <sip:a@x>", "Expires: 0"]));
    const b = signatureBuffer(msg, auth());
    expect(b.endsWith("<sip:a@x><><><><0>")).toBe(true);
    expect(b.match(/</g)?.length).toBe(15);
  });

  it("From/To without brackets: URI up to the first ';', tag from header params", () => {
    const msg = parseMessage(reg(["From: sip:a@x;tag=abc;epid=9", "To: sip:b@y ;tag=XyZ"]));
    expect(signatureBuffer(msg, auth())).toBe(
      `<TLS-DSK><r><1><${REALM}><t><cid><2><REGISTER><sip:a@x><abc><sip:b@y><XyZ><><><>`,
    );
  });

  it("URI parameters stay in the URI and are never taken for the tag", () => {
    const msg = parseMessage(
      reg(["From: <sip:a@x;tag=uri-param;user=phone>;epid=1;tag=real", "To: <sip:b@y;tag=only-uri>"]),
    );
    expect(signatureBuffer(msg, auth())).toContain(
      "<sip:a@x;tag=uri-param;user=phone><real><sip:b@y;tag=only-uri><>",
    );
  });

  it("quoted display names containing '<', ';' and ',' are dropped", () => {
    const msg = parseMessage(reg(['From: "Smith; <J>, Jr" <sip:j@x>;tag=7', 'To: "\\"Q\\"" <sip:q@x>']));
    expect(signatureBuffer(msg, auth())).toContain("<sip:j@x><7><sip:q@x><>");
  });

  it("compact header forms (f, t, i) are honoured", () => {
    const msg = parseMessage(
      crlf([
        "REGISTER sip:x SIP/2.0",
        "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1",
        "f: <sip:a@x>;tag=1",
        "t: <sip:a@x>",
        "i: compact-cid",
        "CSeq: 9 REGISTER",
        "l: 0",
      ]),
    );
    expect(signatureBuffer(msg, auth())).toBe(
      `<TLS-DSK><r><1><${REALM}><t><compact-cid><9><REGISTER><sip:a@x><1><sip:a@x><><><><>`,
    );
  });

  it("PAI: two comma-separated values, either order", () => {
    const msg = parseMessage(
      reg([
        "From: <sip:a@x>",
        "To: <sip:a@x>",
        'P-Asserted-Identity: <tel:+14255550100>, "A" <sip:a@x;user=phone>',
      ]),
    );
    expect(signatureBuffer(msg, auth())).toContain("<sip:a@x;user=phone><tel:+14255550100><>");
  });

  it("PAI: two header lines, sips and a bare tel: value", () => {
    const msg = parseMessage(
      reg([
        "From: <sip:a@x>",
        "To: <sip:a@x>",
        "P-Asserted-Identity: <sips:a@x>",
        "P-Asserted-Identity: tel:+1425",
      ]),
    );
    expect(signatureBuffer(msg, auth())).toContain("<sips:a@x><tel:+1425><>");
  });

  it("P-Preferred-Identity is used only when PAI is absent", () => {
    const ppiOnly = parseMessage(
      reg(["From: <sip:a@x>", "To: <sip:a@x>", "P-Preferred-Identity: <sip:pref@x>"]),
    );
    expect(signatureBuffer(ppiOnly, auth())).toContain("<sip:pref@x><><>");
    const both = parseMessage(
      reg([
        "From: <sip:a@x>",
        "To: <sip:a@x>",
        "P-Preferred-Identity: <sip:pref@x>",
        "P-Asserted-Identity: <sip:asserted@x>",
      ]),
    );
    expect(signatureBuffer(both, auth())).toContain("<sip:asserted@x><><>");
  });

  it("Expires comes only from the Expires header (not Session-Expires or Contact expires)", () => {
    const msg = parseMessage(
      reg([
        "From: <sip:a@x>",
        "To: <sip:a@x>",
        "Session-Expires: 720;refresher=uac",
        "Contact: <sip:10.0.0.1>;expires=3600",
      ]),
    );
    expect(signatureBuffer(msg, auth()).endsWith("<><><>")).toBe(true);
  });

  it("responses take the method from CSeq and append the status code", () => {
    const msg = parseMessage(
      crlf([
        "SIP/2.0 202 Accepted",
        "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1",
        "From: <sip:pool@x>;tag=p1",
        "To: <sip:a@x>;tag=a1",
        "Call-ID: n1",
        "CSeq: 44 BENOTIFY",
        "Content-Length: 0",
      ]),
    );
    expect(signatureBuffer(msg, auth())).toBe(
      `<TLS-DSK><r><1><${REALM}><t><n1><44><BENOTIFY><sip:pool@x><p1><sip:a@x><a1><><><><202>`,
    );
  });

  it("values keep their case as received; the auth fields are used verbatim", () => {
    const msg = parseMessage(reg(["From: <SIP:Alice@Contoso.TEST>;TAG=AbC", "To: <sip:a@x>"], "7 REGISTER"));
    expect(
      signatureBuffer(msg, auth({ protocol: "TLS-DSK", rand: "ABCDEF01", num: "12", targetname: "FE" })),
    ).toBe(
      `<TLS-DSK><ABCDEF01><12><${REALM}><FE><cid><7><REGISTER><SIP:Alice@Contoso.TEST><AbC><sip:a@x><><><><>`,
    );
  });
});
