import { describe, expect, it } from "vitest";
import { AuthError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { parseAuthHeader } from "../../firmware/sip/grammar/auth-params.ts";
import type { SipMessage } from "../../firmware/sip/message/message.ts";
import { addHeader, header, headers, removeHeader, setHeader } from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import {
  type MacAlg,
  macAlgForCipher,
  macHex,
  SecurityAssociation,
} from "../../firmware/sip/tls-dsk/security-association.ts";
import { crlf, FixedRandom, REALM, VA, VA_REQUEST, VA_RESPONSE } from "./tls-dsk-fixtures.ts";

const code = (c: string) => expect.objectContaining({ code: c });

const saA = (
  over: { mac?: MacAlg; opaque?: string; realm?: string; targetname?: string; version?: number } = {},
) =>
  new SecurityAssociation({
    realm: over.realm ?? REALM,
    targetname: over.targetname ?? VA.targetname,
    opaque: over.opaque ?? "4A3F2C1B",
    version: over.version ?? 4,
    clientKey: VA.clientKey,
    serverKey: VA.serverKey,
    mac: over.mac ?? "sha1",
    expiresAt: Date.UTC(2030, 0, 1),
  });

/** A phone/registrar pair sharing one set of keys. */
const pair = (mac: MacAlg = "sha1") => ({ phone: saA({ mac }), pool: saA({ mac }) });

const invite = (): SipMessage =>
  parseMessage(
    crlf([
      "INVITE sip:bob@contoso.test SIP/2.0",
      "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKinv",
      "Max-Forwards: 70",
      'From: "Alice" <sip:alice@contoso.test>;tag=aaa;epid=e1',
      "To: <sip:bob@contoso.test>",
      "Call-ID: call-1",
      "CSeq: 1 INVITE",
      "P-Preferred-Identity: <sip:alice@contoso.test>, <tel:+14255550100>",
      "Content-Length: 0",
    ]),
  );

const ok200 = (): SipMessage =>
  parseMessage(
    crlf([
      "SIP/2.0 200 OK",
      "Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bKreg",
      "From: <sip:alice@contoso.test>;tag=2528623633;epid=1d7c9d3f2b",
      "To: <sip:alice@contoso.test>;tag=pool99",
      "Call-ID: reg-1",
      "CSeq: 7 REGISTER",
      "Expires: 7200",
      "Content-Length: 0",
    ]),
  );

describe("MACs (known answers)", () => {
  const km = Buffer.from(
    "948ec3478c1f730527884c487afb5c190e5caa63038b95d25e51212aac42b107aeb25bc7797dd7639945e474c411544bbdf52620e2680c41ee9f3ccee452211b",
    "hex",
  );
  const ck = km.subarray(0, 32);
  const sk = km.subarray(32, 64);
  const req =
    "<TLS-DSK><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><><><><>";
  const rsp =
    "<TLS-DSK><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>";

  it("§5.3 HMAC-SHA1 and HMAC-MD5", () => {
    expect(macHex("sha1", ck, req)).toBe("66b3c0a96159ee4bff0a83bb5e88d653bbee72fb");
    expect(macHex("sha1", sk, rsp)).toBe("88ec052c966d89fa963ed3770bf4a2915481e279");
    expect(macHex("md5", ck, req)).toBe("ebed85701ab948df9cf70f05a962d315");
    expect(macHex("md5", sk, rsp)).toBe("3f6f68faa72a7b3fe0186b252c60b94c");
  });

  it("Vector A response and rspauth from the buffers", () => {
    expect(macHex("sha1", VA.clientKey, VA.requestBuffer).toUpperCase()).toBe(VA.response);
    expect(macHex("sha1", VA.serverKey, VA.responseBuffer).toUpperCase()).toBe(VA.rspauth);
  });
});

describe("macAlgForCipher", () => {
  it.each([
    ["AES128-SHA", "sha1"],
    ["AES256-SHA", "sha1"],
    ["RC4-SHA", "sha1"],
    ["RC4-MD5", "md5"],
    ["EXP-RC4-MD5", "md5"],
    ["TLS_RSA_WITH_AES_128_CBC_SHA", "sha1"],
    ["TLS_RSA_WITH_RC4_128_MD5", "md5"],
    ["TLS_RSA_EXPORT_WITH_RC4_40_MD5", "md5"],
    ["ECDHE-RSA-AES128-GCM-SHA256", "sha1"],
    ["TLS_AES_128_GCM_SHA256", "sha1"],
    ["", "sha1"],
  ] as const)("%s → %s", (name, alg) => {
    expect(macAlgForCipher(name)).toBe(alg);
  });
});

describe("SecurityAssociation: Vector A end to end", () => {
  it("sign() reproduces sipe's response for the signed REGISTER", () => {
    const msg = parseMessage(VA_REQUEST);
    saA().sign(msg, new FixedRandom(VA.crand), { includeVersion: true });
    const value = header(msg, "Authorization");
    expect(value).toBe(
      `TLS-DSK qop="auth", opaque="4A3F2C1B", realm="SIP Communications Service", targetname="fe01.contoso.test", version=4, crand="8b073c11", cnum="1", response="${VA.response}"`,
    );
  });

  it("verify() accepts the pool's rspauth, in upper and lower case", () => {
    expect(saA().verify(parseMessage(VA_RESPONSE))).toEqual({ ok: true });
    const lower = parseMessage(VA_RESPONSE.replace(VA.rspauth, VA.rspauth.toLowerCase()));
    expect(saA().verify(lower)).toEqual({ ok: true });
  });

  it("verifyClient() accepts sipe's signed REGISTER", () => {
    const msg = parseMessage(VA_REQUEST);
    addHeader(
      msg,
      "Authorization",
      `TLS-DSK qop="auth", opaque="4A3F2C1B", realm="SIP Communications Service", targetname="fe01.contoso.test", version=4, crand="8b073c11", cnum="1", response="${VA.response.toLowerCase()}"`,
    );
    expect(saA().verifyClient(msg)).toEqual({ cnum: 1 });
  });
});

describe("SecurityAssociation: round trips and counters", () => {
  it("sign → verifyClient, cnum counting from 1 per SA; no version unless asked", () => {
    const { phone, pool } = pair();
    const rnd = new SeededRandom(7);
    for (let n = 1; n <= 3; n++) {
      const msg = invite();
      phone.sign(msg, rnd);
      const a = parseAuthHeader(header(msg, "Authorization") ?? "");
      expect(a.params.get("cnum")).toBe(String(n));
      expect(a.params.get("crand")).toMatch(/^[0-9a-f]{8}$/);
      expect(a.params.get("response")).toMatch(/^[0-9A-F]{40}$/);
      expect(a.params.has("version")).toBe(false);
      expect(pool.verifyClient(msg)).toEqual({ cnum: n });
    }
    expect(phone.cnum).toBe(3);
    expect(saA().cnum).toBe(0);
  });

  it("re-signing replaces the Authorization header (fresh crand/cnum)", () => {
    const { phone, pool } = pair();
    const msg = invite();
    phone.sign(msg, new SeededRandom(1));
    phone.sign(msg, new SeededRandom(2));
    expect(headers(msg, "Authorization")).toHaveLength(1);
    expect(pool.verifyClient(msg).cnum).toBe(2);
  });

  it("signs responses the phone sends (status included) and honours headerName", () => {
    const { phone, pool } = pair();
    const msg = ok200();
    phone.sign(msg, new SeededRandom(3), { headerName: "Proxy-Authorization" });
    expect(header(msg, "Authorization")).toBeUndefined();
    expect(pool.verifyClient(msg).cnum).toBe(1);
    // A different status code is a different buffer.
    (msg as { status: number }).status = 202;
    expect(() => pool.verifyClient(msg)).toThrow(code("response-invalid"));
  });

  it("signAsServer → verify; snum counts; rspauth lower-case; header shape", () => {
    const { phone, pool } = pair();
    const rnd = new SeededRandom(11);
    for (let n = 1; n <= 2; n++) {
      const msg = ok200();
      pool.signAsServer(msg, rnd);
      const ai = parseAuthHeader(header(msg, "Authentication-Info") ?? "");
      expect(ai.scheme).toBe("TLS-DSK");
      expect(Object.fromEntries(ai.params)).toMatchObject({
        qop: "auth",
        opaque: "4A3F2C1B",
        snum: String(n),
        targetname: VA.targetname,
        realm: REALM,
        version: "4",
      });
      expect(ai.params.get("rspauth")).toMatch(/^[0-9a-f]{40}$/);
      expect(phone.verify(msg)).toEqual({ ok: true });
    }
  });

  it("server-signed requests verify too (e.g. BENOTIFY from the pool)", () => {
    const { phone, pool } = pair();
    const msg = invite();
    pool.signAsServer(msg, new SeededRandom(5));
    expect(phone.verify(msg)).toEqual({ ok: true });
  });

  it("Proxy-Authentication-Info is accepted", () => {
    const { phone, pool } = pair();
    const msg = ok200();
    pool.signAsServer(msg, new SeededRandom(5), { headerName: "Proxy-Authentication-Info" });
    expect(phone.verify(msg)).toEqual({ ok: true });
  });

  it("md5 SAs produce 32-hex MACs and round-trip", () => {
    const { phone, pool } = pair("md5");
    const req = invite();
    phone.sign(req, new SeededRandom(9));
    expect(parseAuthHeader(header(req, "Authorization") ?? "").params.get("response")).toMatch(
      /^[0-9A-F]{32}$/,
    );
    expect(pool.verifyClient(req).cnum).toBe(1);
    const rsp = ok200();
    pool.signAsServer(rsp, new SeededRandom(9));
    expect(phone.verify(rsp)).toEqual({ ok: true });
    // A sha1 SA with the same keys rejects the md5 MAC (length check).
    expect(() => saA().verify(rsp)).toThrow(code("rspauth-invalid"));
  });
});

describe("SecurityAssociation: failures are typed", () => {
  const signedByPool = (): SipMessage => {
    const msg = ok200();
    saA().signAsServer(msg, new SeededRandom(21));
    return msg;
  };
  const withAi = (mutate: (v: string) => string): SipMessage => {
    const msg = signedByPool();
    setHeader(msg, "Authentication-Info", mutate(header(msg, "Authentication-Info") ?? ""));
    return msg;
  };

  it("wrong rspauth → rspauth-invalid (flipped digit, truncated, non-hex, empty)", () => {
    const flip = (v: string) =>
      v.replace(/rspauth="([0-9a-f])/, (_m, d: string) => `rspauth="${d === "0" ? "1" : "0"}`);
    expect(() => saA().verify(withAi(flip))).toThrow(code("rspauth-invalid"));
    expect(() =>
      saA().verify(withAi((v) => v.replace(/rspauth="([0-9a-f]{38})[0-9a-f]{2}"/, 'rspauth="$1"'))),
    ).toThrow(code("rspauth-invalid"));
    expect(() => saA().verify(withAi((v) => v.replace(/rspauth="[0-9a-f]{2}/, 'rspauth="zz')))).toThrow(
      code("rspauth-invalid"),
    );
    expect(() => saA().verify(withAi((v) => v.replace(/rspauth="[0-9a-f]+"/, 'rspauth=""')))).toThrow(
      code("rspauth-invalid"),
    );
  });

  it("tampering with a covered header after signing → invalid", () => {
    const msg = signedByPool();
    setHeader(msg, "Expires", "3600");
    expect(() => saA().verify(msg)).toThrow(code("rspauth-invalid"));

    const req = invite();
    saA().sign(req, new SeededRandom(4));
    addHeader(req, "Expires", "0");
    expect(() => saA().verifyClient(req)).toThrow(code("response-invalid"));
  });

  it("uncovered headers may change (e.g. Via) without breaking the signature", () => {
    const msg = signedByPool();
    setHeader(msg, "Via", "SIP/2.0/TLS 10.9.9.9:5061;branch=z9hG4bKother");
    expect(saA().verify(msg)).toEqual({ ok: true });
  });

  it("missing Authentication-Info or rspauth → rspauth-missing", () => {
    expect(() => saA().verify(ok200())).toThrow(code("rspauth-missing"));
    expect(() => saA().verify(withAi((v) => v.replace(/rspauth="[0-9a-f]+", /, "")))).toThrow(
      code("rspauth-missing"),
    );
  });

  it("realm / targetname / opaque / scheme mismatch → sa-mismatch", () => {
    expect(() => saA({ realm: "Other Realm" }).verify(signedByPool())).toThrow(code("sa-mismatch"));
    expect(() => saA({ targetname: "fe02.contoso.test" }).verify(signedByPool())).toThrow(
      code("sa-mismatch"),
    );
    expect(() => saA({ opaque: "DEADBEEF" }).verify(signedByPool())).toThrow(code("sa-mismatch"));
    expect(() => saA().verify(withAi((v) => v.replace(/realm="[^"]*"/, "")))).toThrow(code("sa-mismatch"));
    const ntlm = ok200();
    addHeader(
      ntlm,
      "Authentication-Info",
      'NTLM rspauth="0100", srand="1", snum="1", realm="x", targetname="y"',
    );
    expect(() => saA().verify(ntlm)).toThrow(code("sa-mismatch"));
  });

  it("an absent opaque in Authentication-Info is tolerated", () => {
    const msg = ok200();
    const noOpaque = saA({ opaque: "" });
    noOpaque.signAsServer(msg, new SeededRandom(8));
    expect(header(msg, "Authentication-Info")).not.toContain("opaque");
    expect(saA().verify(msg)).toEqual({ ok: true });
  });

  it("malformed Authentication-Info or missing srand/snum → auth-header-malformed", () => {
    expect(() => saA().verify(withAi((v) => `${v}, broken="`))).toThrow(code("auth-header-malformed"));
    expect(() => saA().verify(withAi((v) => v.replace(/snum="\d+", /, "")))).toThrow(
      code("auth-header-malformed"),
    );
  });

  it("verifyClient: no Authorization or an unsigned handshake leg → response-missing", () => {
    expect(() => saA().verifyClient(invite())).toThrow(code("response-missing"));
    const leg = invite();
    addHeader(
      leg,
      "Authorization",
      'TLS-DSK qop="auth", realm="SIP Communications Service", targetname="fe01.contoso.test", gssapi-data="FgMB", version=4',
    );
    expect(() => saA().verifyClient(leg)).toThrow(code("response-missing"));
  });

  it("verifyClient: wrong key, realm or non-decimal cnum", () => {
    const req = invite();
    new SecurityAssociation({
      realm: REALM,
      targetname: VA.targetname,
      opaque: "4A3F2C1B",
      version: 4,
      clientKey: VA.serverKey,
      serverKey: VA.clientKey,
      expiresAt: 0,
    }).sign(req, new SeededRandom(1));
    expect(() => saA().verifyClient(req)).toThrow(code("response-invalid"));
    expect(() => saA({ realm: "nope" }).verifyClient(req)).toThrow(code("sa-mismatch"));
    setHeader(req, "Authorization", (header(req, "Authorization") ?? "").replace(/cnum="1"/, 'cnum="x1"'));
    expect(() => saA().verifyClient(req)).toThrow(code("auth-header-malformed"));
  });

  it("every failure is an AuthError", () => {
    const msg = ok200();
    removeHeader(msg, "Expires");
    try {
      saA().verify(msg);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(AuthError);
    }
  });
});

describe("SecurityAssociation: misc", () => {
  it("exposes its identity and expiry, defaults mac to sha1", () => {
    const sa = new SecurityAssociation({
      realm: REALM,
      targetname: "t",
      opaque: "o",
      version: 4,
      clientKey: VA.clientKey,
      serverKey: VA.serverKey,
      expiresAt: 1000,
    });
    expect([sa.protocol, sa.realm, sa.targetname, sa.opaque, sa.version, sa.mac, sa.expiresAt]).toEqual([
      "TLS-DSK",
      REALM,
      "t",
      "o",
      4,
      "sha1",
      1000,
    ]);
    expect(sa.isExpired(999)).toBe(false);
    expect(sa.isExpired(1000)).toBe(true);
  });

  it("rejects empty keys", () => {
    expect(
      () =>
        new SecurityAssociation({
          realm: REALM,
          targetname: "t",
          opaque: "",
          version: 4,
          clientKey: Buffer.alloc(0),
          serverKey: VA.serverKey,
          expiresAt: 0,
        }),
    ).toThrow(code("tls-dsk-keys"));
  });
});
