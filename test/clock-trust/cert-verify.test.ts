/**
 * The pure server-chain check (firmware/sip/tls-dsk/cert-verify.ts) every TLS edge runs at the
 * phone's clock: path to a configured root, CA flag on issuers, purpose (EKU, key usage), name,
 * validity; "time" only when nothing else is wrong, so that before SNTP a good chain at a wrong
 * clock is clock-invalid and a bad chain is still untrusted.
 */
import { X509Certificate } from "node:crypto";
import forge from "node-forge";
import { beforeAll, describe, expect, it } from "vitest";
import {
  isClockInvalid,
  keyUsageBits,
  opensslVerdictAcceptable,
  verifyServerChain,
} from "../../firmware/sip/tls-dsk/cert-verify.ts";
import { type IssuedCert, LabCa, newRsaKey } from "../lab/ca.ts";

const DAY = 86_400_000;
const NAME = "pool.lab.test";

/** A certificate with exactly the extensions given, signed by `issuer` (forge). */
async function custom(o: {
  issuerCert: string;
  issuerKey: string;
  cn: string;
  extensions: object[];
  notBefore?: Date;
  days?: number;
}): Promise<IssuedCert> {
  const kp = await newRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(kp.publicKey);
  cert.serialNumber = "0a1b2c";
  cert.validity.notBefore = o.notBefore ?? new Date(Date.now() - DAY);
  cert.validity.notAfter = new Date(cert.validity.notBefore.getTime() + (o.days ?? 30) * DAY);
  cert.setSubject([{ name: "commonName", value: o.cn }]);
  cert.setIssuer(forge.pki.certificateFromPem(o.issuerCert).subject.attributes);
  cert.setExtensions(o.extensions);
  cert.sign(forge.pki.privateKeyFromPem(o.issuerKey) as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return {
    cert: forge.pki.certificateToPem(cert),
    key: kp.privateKey,
    serial: "0a1b2c",
    notAfter: cert.validity.notAfter,
  };
}

/** A self-signed root whose key we hold (LabCa keeps its key private). */
async function root(cn: string): Promise<IssuedCert> {
  const kp = await newRsaKey();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(kp.publicKey);
  cert.serialNumber = "01";
  cert.validity.notBefore = new Date(Date.now() - DAY);
  cert.validity.notAfter = new Date(Date.now() + 3650 * DAY);
  cert.setSubject([{ name: "commonName", value: cn }]);
  cert.setIssuer([{ name: "commonName", value: cn }]);
  cert.setExtensions([
    { name: "basicConstraints", cA: true, critical: true },
    { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(kp.privateKey) as forge.pki.rsa.PrivateKey, forge.md.sha256.create());
  return {
    cert: forge.pki.certificateToPem(cert),
    key: kp.privateKey,
    serial: "01",
    notAfter: cert.validity.notAfter,
  };
}

const san = { name: "subjectAltName", altNames: [{ type: 2, value: NAME }] };
const serverKu = { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true };

let r: IssuedCert;
let ca: LabCa;
let good: IssuedCert;
let mid: IssuedCert;
let midNotCa: IssuedCert;
let underMid: IssuedCert;
let underNotCa: IssuedCert;
let clientOnly: IssuedCert;
let signOnlyKu: IssuedCert;

beforeAll(async () => {
  r = await root("Test Root");
  ca = await LabCa.create();
  good = await ca.issueServer(NAME, []);
  [mid, midNotCa, clientOnly, signOnlyKu] = await Promise.all([
    custom({
      issuerCert: r.cert,
      issuerKey: r.key,
      cn: "Test Intermediate",
      extensions: [
        { name: "basicConstraints", cA: true, critical: true },
        { name: "keyUsage", keyCertSign: true, critical: true },
      ],
    }),
    custom({
      issuerCert: r.cert,
      issuerKey: r.key,
      cn: "Not A CA",
      extensions: [{ name: "basicConstraints", cA: false }],
    }),
    custom({
      issuerCert: r.cert,
      issuerKey: r.key,
      cn: NAME,
      extensions: [serverKu, { name: "extKeyUsage", clientAuth: true }, san],
    }),
    custom({
      issuerCert: r.cert,
      issuerKey: r.key,
      cn: NAME,
      extensions: [{ name: "keyUsage", keyCertSign: true, critical: true }, san],
    }),
  ]);
  [underMid, underNotCa] = await Promise.all([
    custom({ issuerCert: mid.cert, issuerKey: mid.key, cn: NAME, extensions: [serverKu, san] }),
    custom({ issuerCert: midNotCa.cert, issuerKey: midNotCa.key, cn: NAME, extensions: [serverKu, san] }),
  ]);
});

const der = (pem: string) => new X509Certificate(pem).raw;

describe("verifyServerChain", () => {
  it("accepts a lab server certificate at a time inside its validity, with its name", () => {
    expect(
      verifyServerChain({ chain: [der(good.cert)], roots: [ca.cert], at: Date.now(), name: { host: NAME } }),
    ).toBeNull();
    expect(
      verifyServerChain({
        chain: [der(good.cert)],
        roots: [ca.cert],
        at: Date.now(),
        name: { host: "127.0.0.1" },
      }),
    ).toBeNull();
  });

  it("says 'time' only when the chain is otherwise good, at either end of the validity", () => {
    for (const at of [Date.now() - 2 * DAY, Date.now() + 500 * DAY])
      expect(verifyServerChain({ chain: [der(good.cert)], roots: [ca.cert], at })?.kind).toBe("time");
  });

  it("an untrusted chain is 'untrusted' even when the time is also wrong (never masked as time)", () => {
    expect(
      verifyServerChain({ chain: [der(good.cert)], roots: [r.cert], at: Date.now() + 500 * DAY })?.kind,
    ).toBe("untrusted");
  });

  it("follows an intermediate with CA:TRUE, refuses one without", () => {
    expect(
      verifyServerChain({ chain: [der(underMid.cert), der(mid.cert)], roots: [r.cert], at: Date.now() }),
    ).toBeNull();
    expect(verifyServerChain({ chain: [der(underMid.cert)], roots: [r.cert], at: Date.now() })?.kind).toBe(
      "untrusted",
    );
    expect(
      verifyServerChain({
        chain: [der(underNotCa.cert), der(midNotCa.cert)],
        roots: [r.cert],
        at: Date.now(),
      })?.kind,
    ).toBe("untrusted");
  });

  it("refuses a leaf whose EKU lacks serverAuth, or whose key usage does not allow TLS", () => {
    expect(verifyServerChain({ chain: [der(clientOnly.cert)], roots: [r.cert], at: Date.now() })?.kind).toBe(
      "usage",
    );
    expect(verifyServerChain({ chain: [der(signOnlyKu.cert)], roots: [r.cert], at: Date.now() })?.kind).toBe(
      "usage",
    );
    expect(keyUsageBits(new X509Certificate(good.cert))).toBe(0b101); // digitalSignature | keyEncipherment
    expect(keyUsageBits(new X509Certificate(ca.cert))).toBe(0b1100000); // keyCertSign | cRLSign
  });

  it("reads key usage from the DER itself: both octets of the bit string, none without the extension", async () => {
    const all = await custom({
      issuerCert: r.cert,
      issuerKey: r.key,
      cn: NAME,
      extensions: [
        { name: "keyUsage", digitalSignature: true, keyAgreement: true, decipherOnly: true, critical: true },
        san,
      ],
    });
    // bit 0 digitalSignature, bit 4 keyAgreement, bit 8 decipherOnly (the second content octet).
    expect(keyUsageBits(new X509Certificate(all.cert))).toBe(0b1_0001_0001);
    expect(keyUsageBits(new X509Certificate(midNotCa.cert))).toBeUndefined();
    expect(keyUsageBits(new X509Certificate(signOnlyKu.cert))).toBe(0b10_0000);
  });

  it("refuses a wrong name", () => {
    expect(
      verifyServerChain({
        chain: [der(good.cert)],
        roots: [ca.cert],
        at: Date.now(),
        name: { host: "sba.lab.test" },
      })?.kind,
    ).toBe("name");
  });

  it("clock-invalid only for a time problem while the clock is not set", () => {
    const time = { kind: "time" as const, message: "x" };
    expect(isClockInvalid(time, { now: () => 0, isSet: () => false })).toBe(true);
    expect(isClockInvalid(time, { now: () => 0, isSet: () => true })).toBe(false);
    expect(isClockInvalid(time, { now: () => 0 })).toBe(false);
    expect(isClockInvalid({ kind: "untrusted", message: "x" }, { now: () => 0, isSet: () => false })).toBe(
      false,
    );
  });

  it("keeps OpenSSL's verdict except for time codes", () => {
    expect(opensslVerdictAcceptable(true, null)).toBe(true);
    expect(opensslVerdictAcceptable(false, "CERT_HAS_EXPIRED")).toBe(true);
    expect(opensslVerdictAcceptable(false, "CERT_NOT_YET_VALID")).toBe(true);
    expect(opensslVerdictAcceptable(false, "UNABLE_TO_VERIFY_LEAF_SIGNATURE")).toBe(false);
    expect(opensslVerdictAcceptable(false, "ERR_TLS_CERT_ALTNAME_INVALID")).toBe(false);
  });
});
