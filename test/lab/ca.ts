/**
 * The lab's certificate authority: a real X.509 CA (RSA-2048, SHA-256) that issues the pool's
 * and the SBA's server certificates and the users' client certificates. Keys come from Node's
 * native generator; certificates are assembled and signed with node-forge.
 */
import { generateKeyPair, randomBytes } from "node:crypto";
import { promisify } from "node:util";
import forge from "node-forge";

const generateKeyPairAsync = promisify(generateKeyPair);

export interface KeyPairPem {
  publicKey: string;
  privateKey: string;
}

export interface IssuedCert {
  cert: string;
  key: string;
  serial: string;
  notAfter: Date;
}

export async function newRsaKey(bits = 2048): Promise<KeyPairPem> {
  return generateKeyPairAsync("rsa", {
    modulusLength: bits,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
}

function serialHex(): string {
  const b = randomBytes(16);
  b[0] = (b[0] ?? 0) & 0x7f; // positive INTEGER
  return b.toString("hex");
}

export interface CertSpec {
  commonName: string;
  dnsNames?: string[];
  ips?: string[];
  uris?: string[];
  days?: number;
  notBefore?: Date;
  serverAuth?: boolean;
  clientAuth?: boolean;
}

export class LabCa {
  private constructor(
    readonly cert: string,
    private readonly forgeKey: forge.pki.rsa.PrivateKey,
    private readonly forgeCert: forge.pki.Certificate,
  ) {}

  static async create(commonName = "Handset Lab Root CA", days = 3650): Promise<LabCa> {
    const kp = await newRsaKey();
    const key = forge.pki.privateKeyFromPem(kp.privateKey) as forge.pki.rsa.PrivateKey;
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(kp.publicKey);
    cert.serialNumber = serialHex();
    const now = new Date();
    cert.validity.notBefore = new Date(now.getTime() - 24 * 3600_000);
    cert.validity.notAfter = new Date(now.getTime() + days * 24 * 3600_000);
    const subject = [
      { name: "commonName", value: commonName },
      { name: "organizationName", value: "Handset Lab" },
    ];
    cert.setSubject(subject);
    cert.setIssuer(subject);
    cert.setExtensions([
      { name: "basicConstraints", cA: true, critical: true },
      { name: "keyUsage", keyCertSign: true, cRLSign: true, critical: true },
      { name: "subjectKeyIdentifier" },
    ]);
    cert.sign(key, forge.md.sha256.create());
    return new LabCa(forge.pki.certificateToPem(cert), key, cert);
  }

  /** Signs a certificate for a public key we were given (a CSR's, or one we generated). */
  signPublicKey(publicKeyPem: string, spec: CertSpec): IssuedCert {
    const cert = forge.pki.createCertificate();
    cert.publicKey = forge.pki.publicKeyFromPem(publicKeyPem);
    const serial = serialHex();
    cert.serialNumber = serial;
    const notBefore = spec.notBefore ?? new Date(Date.now() - 3600_000);
    cert.validity.notBefore = notBefore;
    cert.validity.notAfter = new Date(notBefore.getTime() + (spec.days ?? 180) * 24 * 3600_000);
    cert.setSubject([{ name: "commonName", value: spec.commonName }]);
    cert.setIssuer(this.forgeCert.subject.attributes);
    const altNames = [
      ...(spec.dnsNames ?? []).map((value) => ({ type: 2, value })),
      ...(spec.ips ?? []).map((ip) => ({ type: 7, ip })),
      ...(spec.uris ?? []).map((value) => ({ type: 6, value })),
    ];
    const extensions: object[] = [
      { name: "basicConstraints", cA: false },
      { name: "keyUsage", digitalSignature: true, keyEncipherment: true, critical: true },
      { name: "extKeyUsage", serverAuth: spec.serverAuth ?? false, clientAuth: spec.clientAuth ?? false },
      {
        name: "authorityKeyIdentifier",
        keyIdentifier: this.forgeCert.generateSubjectKeyIdentifier().getBytes(),
      },
    ];
    if (altNames.length > 0) extensions.push({ name: "subjectAltName", altNames });
    cert.setExtensions(extensions);
    cert.sign(this.forgeKey, forge.md.sha256.create());
    return { cert: forge.pki.certificateToPem(cert), key: "", serial, notAfter: cert.validity.notAfter };
  }

  async issue(spec: CertSpec): Promise<IssuedCert> {
    const kp = await newRsaKey();
    return { ...this.signPublicKey(kp.publicKey, spec), key: kp.privateKey };
  }

  /** A TLS server certificate (SIP registrar, web services), 398 days like a public CA's (CA/B Forum). */
  issueServer(commonName: string, dnsNames: string[], ips: string[] = ["127.0.0.1"]): Promise<IssuedCert> {
    return this.issue({ commonName, dnsNames: [commonName, ...dnsNames], ips, serverAuth: true, days: 398 });
  }

  /** A user's client certificate, as the certificate provisioning service would issue it. */
  issueClient(userAtDomain: string, days = 180): Promise<IssuedCert> {
    return this.issue({ commonName: userAtDomain, uris: [`sip:${userAtDomain}`], clientAuth: true, days });
  }
}

/** SHA-256 fingerprint of a PEM certificate's DER, lower-case hex: how the lab publishes certificates. */
export function certFingerprint(pem: string): string {
  const der = forge.asn1.toDer(forge.pki.certificateToAsn1(forge.pki.certificateFromPem(pem))).getBytes();
  return forge.md.sha256.create().update(der).digest().toHex();
}
