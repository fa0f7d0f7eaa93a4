/**
 * The pure pieces of issue 9 §2/§3: the ms-diagnostics table, the range checks, the tunnel
 * binding and the "auto" fall-back predicate.
 */
import { beforeAll, describe, expect, it } from "vitest";
import {
  diagnosticMeaning,
  LAB_DIAGNOSTIC,
  parseMsDiagnostics,
  refusesCertificate,
} from "../../firmware/sip/registration/diagnostics.ts";
import {
  clamp,
  EXPIRES_RANGE_S,
  parseSeconds,
  RETRY_AFTER_RANGE_S,
} from "../../firmware/sip/registration/limits.ts";
import { checkInnerCertificate, checkTargetname } from "../../firmware/sip/tls-dsk/channel-binding.ts";
import { CONTENT_ALERT, CONTENT_HANDSHAKE, encodeRecord } from "../../firmware/sip/tls-dsk/records.ts";
import { serverNeedsTls10 } from "../../firmware/sip/tls-dsk/version-fallback.ts";
import { type IssuedCert, LabCa } from "../lab/ca.ts";

describe("ms-diagnostics", () => {
  it("parses id, sub-id and quoted fields (with ; inside quotes)", () => {
    expect(
      parseMsDiagnostics('1000.2;reason="Final; handshake failed";source="fe.contoso.com";code=x'),
    ).toEqual({
      id: 1000,
      subId: 2,
      fields: { reason: "Final; handshake failed", source: "fe.contoso.com", code: "x" },
    });
    expect(parseMsDiagnostics('reason="no id"')).toBeUndefined();
    expect(parseMsDiagnostics("12345678901234567890;reason=x")).toBeUndefined();
  });

  it("meanings come from the ErrorId, never from the text", () => {
    expect(diagnosticMeaning(1000)).toBe("handshake-failed");
    expect(diagnosticMeaning(4010)).toBe("endpoint-id-missing");
    expect(diagnosticMeaning(LAB_DIAGNOSTIC.certificateRevoked)).toBe("certificate-revoked");
    // [MS-OCER] 1010 / 1012 are about next-hop trust and federation, not our certificate.
    expect(refusesCertificate(diagnosticMeaning(1010))).toBe(false);
    expect(refusesCertificate(diagnosticMeaning(1012))).toBe(false);
    expect(diagnosticMeaning(undefined)).toBe("unknown");
  });
});

describe("range checks", () => {
  it("reads signed leading integers and clamps", () => {
    expect(parseSeconds("120 (maintenance);duration=60")).toBe(120);
    expect(parseSeconds("-5")).toBe(-5);
    expect(parseSeconds("abc")).toBeUndefined();
    expect(clamp(parseSeconds("9".repeat(400))!, EXPIRES_RANGE_S)).toBe(86_400);
    expect(clamp(0, RETRY_AFTER_RANGE_S)).toBe(30);
    expect(clamp(1e9, RETRY_AFTER_RANGE_S)).toBe(3_600);
  });
});

describe("auto fall-back predicate", () => {
  const hello = (version: number) => {
    const body = Buffer.alloc(38);
    body.writeUInt16BE(version, 0);
    const msg = Buffer.concat([Buffer.from([2, 0, 0, body.length]), body]);
    return encodeRecord(CONTENT_HANDSHAKE, version, msg);
  };
  it("ServerHello < 1.2 or a protocol_version alert calls for the 1.0 profile; anything else does not", () => {
    expect(serverNeedsTls10(hello(0x0301))).toBe(true);
    expect(serverNeedsTls10(hello(0x0302))).toBe(true);
    expect(serverNeedsTls10(hello(0x0303))).toBe(false);
    expect(serverNeedsTls10(encodeRecord(CONTENT_ALERT, 0x0301, Buffer.from([2, 70])))).toBe(true);
    expect(serverNeedsTls10(encodeRecord(CONTENT_ALERT, 0x0303, Buffer.from([2, 40])))).toBe(false);
    expect(serverNeedsTls10(Buffer.from("garbage"))).toBe(false);
  });
});

describe("tunnel binding", () => {
  let pool: IssuedCert;
  let rekeyed: IssuedCert;
  beforeAll(async () => {
    const ca = await LabCa.create();
    [pool, rekeyed] = await Promise.all([
      ca.issueServer("pool.lab.test", []),
      ca.issueServer("pool.lab.test", []),
    ]);
  });

  it("targetname must be a DNS or IP name of the outer certificate", () => {
    expect(checkTargetname(pool.cert, "pool.lab.test")).toBeUndefined();
    expect(checkTargetname(pool.cert, "127.0.0.1")).toBeUndefined();
    expect(checkTargetname(pool.cert, "other.lab.test")?.code).toBe("tunnel-targetname-mismatch");
    expect(checkTargetname(pool.cert, "")?.code).toBe("tunnel-targetname-mismatch");
    expect(checkTargetname("", "pool.lab.test")?.code).toBe("tunnel-unbound");
  });

  it("the inner certificate must be the outer one or share its key", () => {
    expect(checkInnerCertificate(pool.cert, pool.cert)).toBeUndefined();
    expect(checkInnerCertificate(pool.cert, rekeyed.cert)?.code).toBe("tunnel-cert-mismatch");
    expect(checkInnerCertificate(pool.cert, Buffer.from("junk"))?.code).toBe("tunnel-cert-mismatch");
  });
});
