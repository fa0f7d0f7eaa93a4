/**
 * The PKCS#10 certificate request of GetAndPublishCert (digest §7): RSA public key, subject
 * CN=<user@domain>, no attributes, SHA-256 with RSA. node-forge assembles the ASN.1; the
 * signature over the CertificationRequestInfo DER is made by node:crypto (native, ~1 ms,
 * where forge's pure-JS RSA takes ~60 ms on x86 and far longer on a Pi).
 */
import { sign } from "node:crypto";
import forge from "node-forge";

export function createCsr(o: { publicKeyPem: string; privateKeyPem: string; commonName: string }): string {
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(o.publicKeyPem);
  csr.setSubject([{ name: "commonName", value: o.commonName, valueTagClass: forge.asn1.Type.UTF8 as never }]);
  // Present at run time, missing from @types/node-forge.
  const pki = forge.pki as typeof forge.pki & {
    getCertificationRequestInfo(csr: forge.pki.CertificateSigningRequest): forge.asn1.Asn1;
  };
  const info = pki.getCertificationRequestInfo(csr);
  const infoDer = Buffer.from(forge.asn1.toDer(info).getBytes(), "binary");
  const signature = sign("sha256", infoDer, o.privateKeyPem);
  const oid = forge.pki.oids["sha256WithRSAEncryption"]!;
  const signed = csr as forge.pki.CertificateSigningRequest & {
    certificationRequestInfo: forge.asn1.Asn1;
    signatureOid: string;
    signature: string;
  };
  signed.certificationRequestInfo = info;
  signed.signatureOid = oid;
  signed.siginfo.algorithmOid = oid;
  signed.signature = signature.toString("binary");
  return forge.pki.certificationRequestToPem(signed).replace(/\r\n/g, "\n");
}

/** The DER bytes of a PEM CSR (for the BinarySecurityToken). */
export function csrDer(csrPem: string): Buffer {
  const msg = forge.pem
    .decode(csrPem)
    .find((m) => m.type === "CERTIFICATE REQUEST" || m.type === "NEW CERTIFICATE REQUEST");
  if (!msg) throw new TypeError("not a PEM certificate request");
  return Buffer.from(msg.body, "binary");
}
