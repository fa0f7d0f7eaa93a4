/**
 * test/lab/ntlm.ts against the published vectors (ntlm-vectors.ts): MD4 (RFC 1320), RC4
 * (RFC 6229), and the [MS-NLMP] §4.2.4 NTLMv2 example, message by message; then the refusals a
 * hardened AD makes (NTLMv1, LM only, anonymous, a stale or tampered blob, a bad MIC).
 */
import { describe, expect, it } from "vitest";
import {
  AV_FLAG_MIC,
  AvId,
  challengeFor,
  encodeAvPairs,
  encodeChallenge,
  Flag,
  filetime,
  filetimeToMs,
  hmacMd5,
  md4,
  NtlmFormatError,
  ntlmv2Temp,
  ntowfv1,
  ntowfv2,
  ntProofStr,
  parseAuthenticate,
  parseAuthorization,
  parseAvPairs,
  parseNegotiate,
  rc4,
  upcase,
  utf16,
  verifyAuthenticate,
} from "../lab/ntlm.ts";
import * as V from "./ntlm-vectors.ts";

const hex = (b: Buffer) => b.toString("hex");

describe("primitives", () => {
  it("MD4 gives the RFC 1320 A.5 test suite (Node's OpenSSL 3 has no md4 without the legacy provider)", () => {
    for (const [input, digest] of V.MD4_SUITE) expect(hex(md4(Buffer.from(input))), input).toBe(digest);
    // Block-boundary lengths around the 56-byte padding edge.
    for (const n of [55, 56, 63, 64, 65, 119, 120]) expect(md4(Buffer.alloc(n, 0x61)).length).toBe(16);
  });

  it("RC4 gives the RFC 6229 keystream", () => {
    expect(hex(rc4(V.RC4_KEY, Buffer.alloc(16)))).toBe(hex(V.RC4_STREAM_0));
  });

  it("FILETIME round trips; 0 is 1601-01-01", () => {
    const t = Date.UTC(2026, 0, 2, 3, 4, 5);
    expect(filetimeToMs(filetime(t))).toBe(t);
    expect(filetimeToMs(Buffer.alloc(8))).toBe(Date.UTC(1601, 0, 1));
  });

  it("upcase keeps the length (ß stays ß)", () => {
    expect(upcase("user")).toBe("USER");
    expect(upcase("straße")).toBe("STRAßE");
  });
});

describe("MS-NLMP §4.2.4 NTLMv2, from the §4.2.1 inputs", () => {
  const key = ntowfv2(V.PASSWORD, V.USER, V.DOMAIN);
  const temp = ntlmv2Temp(V.TIME, V.CLIENT_CHALLENGE, V.V2_TARGET_INFO);
  const proof = ntProofStr(key, V.SERVER_CHALLENGE, temp);

  it("NTOWFv1 (§4.2.2.1.2) and NTOWFv2 (§4.2.4.1.1)", () => {
    expect(hex(ntowfv1(V.PASSWORD))).toBe(hex(V.NTOWFV1));
    expect(hex(key)).toBe(hex(V.NTOWFV2));
    // Only the user is upper-cased; the domain is taken as given.
    expect(hex(ntowfv2(V.PASSWORD, "user", V.DOMAIN))).toBe(hex(V.NTOWFV2));
    expect(hex(ntowfv2(V.PASSWORD, V.USER, "DOMAIN"))).not.toBe(hex(V.NTOWFV2));
  });

  it("NTProofStr (§4.2.4.2.2), Session Base Key (§4.2.4.1.2), LMv2 (§4.2.4.2.1), encrypted key (§4.2.4.2.3)", () => {
    expect(hex(proof)).toBe(hex(V.NT_PROOF_STR));
    const base = hmacMd5(key, proof);
    expect(hex(base)).toBe(hex(V.V2_SESSION_BASE_KEY));
    expect(hex(hmacMd5(key, V.SERVER_CHALLENGE, V.CLIENT_CHALLENGE))).toBe(hex(V.LMV2_RESPONSE));
    expect(hex(rc4(base, V.RANDOM_SESSION_KEY))).toBe(hex(V.V2_ENCRYPTED_SESSION_KEY));
  });

  it("the AV pairs and CHALLENGE_MESSAGE encoders give the §4.2.4.3 bytes", () => {
    expect(
      hex(
        encodeAvPairs([
          [AvId.NbDomainName, utf16(V.DOMAIN)],
          [AvId.NbComputerName, utf16(V.SERVER_NAME)],
        ]),
      ),
    ).toBe(hex(V.V2_TARGET_INFO));
    const msg = encodeChallenge({
      flags: V.V2_CHALLENGE_FLAGS,
      serverChallenge: V.SERVER_CHALLENGE,
      targetName: utf16(V.SERVER_NAME),
      targetInfo: V.V2_TARGET_INFO,
      version: V.V2_CHALLENGE_MESSAGE.subarray(48, 56),
    });
    expect(hex(msg)).toBe(hex(V.V2_CHALLENGE_MESSAGE));
    expect(parseAvPairs(V.V2_TARGET_INFO)).toEqual([
      [AvId.NbDomainName, utf16(V.DOMAIN)],
      [AvId.NbComputerName, utf16(V.SERVER_NAME)],
    ]);
  });

  it("parses the §4.2.4.3 AUTHENTICATE_MESSAGE and verifies it with the password", () => {
    const auth = parseAuthenticate(V.V2_AUTHENTICATE_MESSAGE);
    expect(auth).toMatchObject({ user: "User", domain: "Domain", workstation: "COMPUTER" });
    expect(auth.flags >>> 0).toBe(V.V2_AUTHENTICATE_FLAGS);
    expect(auth.mic).toBeUndefined(); // the payload starts at 0x48: no room for a MIC
    expect(hex(auth.lmResponse)).toBe(hex(Buffer.concat([V.LMV2_RESPONSE, V.CLIENT_CHALLENGE])));
    expect(hex(auth.ntResponse)).toBe(hex(Buffer.concat([V.NT_PROOF_STR, temp])));
    const verdict = verifyAuthenticate(auth, {
      serverChallenge: V.SERVER_CHALLENGE,
      passwordFor: (u, d) => (u === "User" && d === "Domain" ? V.PASSWORD : undefined),
    });
    expect(verdict.ok).toBe(true);
    if (!verdict.ok) return;
    expect(hex(verdict.sessionBaseKey)).toBe(hex(V.V2_SESSION_BASE_KEY));
    // KEY_EXCH: the exported session key is RC4(SessionBaseKey, EncryptedRandomSessionKey).
    expect(hex(verdict.exportedSessionKey)).toBe(hex(V.RANDOM_SESSION_KEY));
  });

  it("a wrong password, an unknown user, another server challenge or a flipped bit is refused", () => {
    const auth = parseAuthenticate(V.V2_AUTHENTICATE_MESSAGE);
    const base = { serverChallenge: V.SERVER_CHALLENGE, passwordFor: () => V.PASSWORD };
    expect(verifyAuthenticate(auth, { ...base, passwordFor: () => "Passw0rd" })).toMatchObject({
      ok: false,
      refusal: "bad-response",
    });
    expect(verifyAuthenticate(auth, { ...base, passwordFor: () => undefined })).toMatchObject({
      ok: false,
      refusal: "unknown-user",
    });
    expect(
      verifyAuthenticate(auth, { ...base, serverChallenge: Buffer.from("0123456789abcdee", "hex") }),
    ).toMatchObject({ ok: false, refusal: "bad-response" });
    const tampered = Buffer.from(V.V2_AUTHENTICATE_MESSAGE);
    tampered[0x84 + 16 + 16] = 0xab; // a client-challenge byte inside the blob
    expect(verifyAuthenticate(parseAuthenticate(tampered), base)).toMatchObject({
      ok: false,
      refusal: "bad-response",
    });
  });

  it("the blob's time is checked when a clock is given (the §4.2.4 blob says 1601)", () => {
    const auth = parseAuthenticate(V.V2_AUTHENTICATE_MESSAGE);
    expect(
      verifyAuthenticate(auth, {
        serverChallenge: V.SERVER_CHALLENGE,
        passwordFor: () => V.PASSWORD,
        nowMs: Date.now(),
      }),
    ).toMatchObject({ ok: false, refusal: "stale" });
  });
});

describe("refusals a hardened AD makes", () => {
  const pw = { serverChallenge: V.SERVER_CHALLENGE, passwordFor: () => V.PASSWORD };

  it("NTLMv1: the §4.2.2.3 AUTHENTICATE_MESSAGE (24-byte NT response) is refused", () => {
    const auth = parseAuthenticate(V.V1_AUTHENTICATE_MESSAGE);
    expect(auth.ntResponse.length).toBe(24);
    expect(verifyAuthenticate(auth, pw)).toMatchObject({ ok: false, refusal: "ntlmv1" });
  });

  it("LM only and anonymous are refused", () => {
    const v2 = parseAuthenticate(V.V2_AUTHENTICATE_MESSAGE);
    expect(verifyAuthenticate({ ...v2, ntResponse: Buffer.alloc(0) }, pw)).toMatchObject({
      refusal: "lm-only",
    });
    expect(
      verifyAuthenticate(
        { ...v2, user: "", domain: "", ntResponse: Buffer.alloc(0), lmResponse: Buffer.alloc(1) },
        pw,
      ),
    ).toMatchObject({ refusal: "anonymous" });
  });

  it("a malformed message throws NtlmFormatError; a short NT response is refused", () => {
    expect(() => parseAuthenticate(Buffer.from("NTLMSSP\0\x03\0\0\0", "latin1"))).toThrow(NtlmFormatError);
    expect(() => parseNegotiate(V.V2_CHALLENGE_MESSAGE)).toThrow(NtlmFormatError);
    const bad = Buffer.from(V.V2_AUTHENTICATE_MESSAGE);
    bad.writeUInt32LE(0x1000, 40); // UserNameFields.BufferOffset, far outside the message
    expect(() => parseAuthenticate(bad)).toThrow(NtlmFormatError);
    const v2 = parseAuthenticate(V.V2_AUTHENTICATE_MESSAGE);
    expect(verifyAuthenticate({ ...v2, ntResponse: v2.ntResponse.subarray(0, 40) }, pw)).toMatchObject({
      refusal: "malformed",
    });
  });
});

describe("CHALLENGE_MESSAGE for a NEGOTIATE_MESSAGE", () => {
  const id = { nbDomain: "LAB", nbComputer: "POOL", dnsDomain: "lab.test", dnsComputer: "pool.lab.test" };
  const negotiate = (flags: number) => {
    const b = Buffer.alloc(32);
    Buffer.from("NTLMSSP\0", "latin1").copy(b);
    b.writeUInt32LE(1, 8);
    b.writeUInt32LE(flags >>> 0, 12);
    return parseNegotiate(b);
  };

  it("names the domain, computer, DNS names and a timestamp; echoes what the client asked for", () => {
    const now = Date.UTC(2026, 4, 1);
    const asked =
      Flag.UNICODE | Flag.NTLM | Flag.EXTENDED_SESSIONSECURITY | Flag.KEY_EXCH | Flag.N128 | Flag.SIGN;
    const c = challengeFor(negotiate(asked), id, V.SERVER_CHALLENGE, now);
    const msg = c.message;
    expect(msg.readUInt32LE(8)).toBe(2);
    const flags = msg.readUInt32LE(20);
    for (const f of [
      Flag.UNICODE,
      Flag.NTLM,
      Flag.EXTENDED_SESSIONSECURITY,
      Flag.KEY_EXCH,
      Flag.N128,
      Flag.SIGN,
      Flag.TARGET_INFO,
      Flag.TARGET_TYPE_DOMAIN,
      Flag.REQUEST_TARGET,
      Flag.VERSION,
    ])
      expect(flags & f, `flag ${f.toString(16)}`).toBe(f);
    expect(flags & Flag.SEAL).toBe(0);
    expect(hex(msg.subarray(24, 32))).toBe(hex(V.SERVER_CHALLENGE));
    const tn = msg.subarray(msg.readUInt32LE(16), msg.readUInt32LE(16) + msg.readUInt16LE(12));
    expect(tn.toString("utf16le")).toBe("LAB");
    const ti = msg.subarray(msg.readUInt32LE(44), msg.readUInt32LE(44) + msg.readUInt16LE(40));
    const pairs = new Map(parseAvPairs(ti));
    expect(pairs.get(AvId.NbDomainName)?.toString("utf16le")).toBe("LAB");
    expect(pairs.get(AvId.NbComputerName)?.toString("utf16le")).toBe("POOL");
    expect(pairs.get(AvId.DnsDomainName)?.toString("utf16le")).toBe("lab.test");
    expect(pairs.get(AvId.DnsComputerName)?.toString("utf16le")).toBe("pool.lab.test");
    expect(filetimeToMs(pairs.get(AvId.Timestamp)!)).toBe(now);
    expect(hex(c.timestamp)).toBe(hex(filetime(now)));
  });

  it("a MIC, when MsvAvFlags claims one, must match NEGOTIATE ‖ CHALLENGE ‖ AUTHENTICATE", () => {
    // Build an AUTHENTICATE with MsvAvFlags = MIC over a lab challenge, from the §4.2.4 inputs.
    const now = Date.UTC(2026, 4, 1);
    const neg = negotiate(Flag.UNICODE | Flag.NTLM | Flag.EXTENDED_SESSIONSECURITY);
    const c = challengeFor(neg, id, V.SERVER_CHALLENGE, now);
    const ti = c.message.subarray(
      c.message.readUInt32LE(44),
      c.message.readUInt32LE(44) + c.message.readUInt16LE(40),
    );
    const pairs = parseAvPairs(ti);
    const flagsAv = Buffer.alloc(4);
    flagsAv.writeUInt32LE(AV_FLAG_MIC);
    const serverInfo = encodeAvPairs([...pairs, [AvId.Flags, flagsAv]]);
    const key = ntowfv2(V.PASSWORD, V.USER, V.DOMAIN);
    const temp = ntlmv2Temp(c.timestamp, V.CLIENT_CHALLENGE, serverInfo);
    const proof = ntProofStr(key, c.serverChallenge, temp);
    const nt = Buffer.concat([proof, temp]);
    const payload = [
      Buffer.alloc(24),
      nt,
      utf16(V.DOMAIN),
      utf16(V.USER),
      utf16(V.WORKSTATION),
      Buffer.alloc(0),
    ];
    const header = Buffer.alloc(88);
    Buffer.from("NTLMSSP\0", "latin1").copy(header);
    header.writeUInt32LE(3, 8);
    let off = 88;
    payload.forEach((p, i) => {
      header.writeUInt16LE(p.length, 12 + i * 8);
      header.writeUInt16LE(p.length, 14 + i * 8);
      header.writeUInt32LE(off, 16 + i * 8);
      off += p.length;
    });
    header.writeUInt32LE(c.flags, 60);
    const unsigned = Buffer.concat([header, ...payload]);
    const base = hmacMd5(key, proof);
    const mic = hmacMd5(base, neg.raw, c.message, unsigned);
    const signed = Buffer.from(unsigned);
    mic.copy(signed, 72);
    const opts = {
      serverChallenge: c.serverChallenge,
      passwordFor: () => V.PASSWORD,
      nowMs: now,
      sentTimestamp: c.timestamp,
      negotiate: neg.raw,
      challenge: c.message,
    };
    expect(verifyAuthenticate(parseAuthenticate(signed), opts)).toMatchObject({ ok: true });
    const badMic = Buffer.from(signed);
    badMic[80] = (badMic[80] ?? 0) ^ 1;
    expect(verifyAuthenticate(parseAuthenticate(badMic), opts)).toMatchObject({ refusal: "mic" });
    expect(verifyAuthenticate(parseAuthenticate(unsigned), opts)).toMatchObject({ refusal: "mic" });
    // The echoed MsvAvTimestamp must be the one this server sent.
    expect(
      verifyAuthenticate(parseAuthenticate(signed), { ...opts, sentTimestamp: filetime(now + 1000) }),
    ).toMatchObject({ refusal: "timestamp-mismatch" });
  });
});

describe("HTTP Authorization header", () => {
  it("NTLM and Negotiate tokens; anything else is not ours", () => {
    const t = V.V2_AUTHENTICATE_MESSAGE.toString("base64");
    expect(parseAuthorization(`NTLM ${t}`)).toEqual({ scheme: "NTLM", token: V.V2_AUTHENTICATE_MESSAGE });
    expect(parseAuthorization(`negotiate ${t}`)?.scheme).toBe("Negotiate");
    expect(parseAuthorization("Basic dTpw")).toBeUndefined();
    expect(parseAuthorization(undefined)).toBeUndefined();
    expect(parseAuthorization("NTLM")).toBeUndefined();
  });
});
