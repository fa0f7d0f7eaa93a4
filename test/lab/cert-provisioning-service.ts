/**
 * The lab pool's Certificate Provisioning Service: GetAndPublishCert at
 * `/CertProv/CertProvisioningService.svc/WebTicket_Proof` (webticket-certprov.md §6, §7, §9.5).
 *
 * What we verify, in order (any failure → 500 FailedAuthentication 28020 fault, §8):
 * 1. `SOAPAction: "http://schemas.microsoft.com/OCS/AuthWebServices/GetAndPublishCert"` (quoted),
 *    Content-Type text/xml, SOAP 1.1 envelope.
 * 2. strict mode: `wsa:To` = this endpoint and `wsa:Action` = GetAndPublishCert in soap:Header.
 * 3. `wsse:Security` holds a `saml:Assertion` whose AssertionID we issued and whose exc-c14n form
 *    equals the one we issued (byte-for-byte copy, modulo canonicalisation).
 * 4. `ds:Signature` present (EndorsingSupportingTokens), HMAC-SHA1 SignatureMethod, exc-c14n
 *    CanonicalizationMethod, KeyInfo/SecurityTokenReference/KeyIdentifier = the AssertionID, and a
 *    Reference to the `wsu:Timestamp` in the same header; DigestValue = SHA-1(exc-c14n(Timestamp)),
 *    SignatureValue = HMAC-SHA1(proofKey, exc-c14n(SignedInfo)).
 * 5. Timestamp not expired and not from the future (± clockSkewS); the ticket not expired. Both the
 *    copied-Lifetime timestamp (sipe) and a fresh one are accepted.
 * 6. Body `GetAndPublishCert` (ns …/AuthWebServices/) with DeviceId a braced GUID and Entity equal to
 *    the ticket user's SIP address WITHOUT "sip:" (case-insensitive; "sip:user@…" is refused, §7).
 * 7. Inner `RequestSecurityToken` in wst WITH the trailing slash; TokenType X509v3; a
 *    `wsse:BinarySecurityToken` ValueType …#PKCS10 holding a base64 DER CSR whose PKCS#10
 *    signature verifies, with an RSA key of 2048..16384 bits and subject CN equal to Entity
 *    (our decision: CN "user@domain"; "sip:user@domain" also accepted, as real pools read little
 *    more than the key).
 *
 * Then the certificate (CN=user@domain, SAN URI sip:user@domain, clientAuth, certValidityDays) is
 * issued by the lab CA and published to the user's directory record.
 *
 * Response (SYNTHETIC beyond sipe's read path, §7):
 * ```
 * <s:Envelope xmlns:s="…soap/envelope/"><s:Body>
 *  <GetAndPublishCertResponse xmlns="http://schemas.microsoft.com/OCS/AuthWebServices/">
 *   <wst:RequestSecurityTokenResponse xmlns:wst="…/ws-trust/200512/" xmlns:wsse="…secext-1.0.xsd"
 *       xmlns:wstep="http://schemas.microsoft.com/windows/pki/2009/01/enrollment">
 *    <wst:TokenType>…x509-token-profile-1.0#X509v3</wst:TokenType>
 *    <wstep:DispositionMessage xml:lang="en-US">Issued</wstep:DispositionMessage>
 *    <wsse:BinarySecurityToken ValueType="…x509-token-profile-1.0#PKCS7" EncodingType="…#Base64Binary">PKCS#7 (cert + CA)</wsse:BinarySecurityToken>
 *    <wst:RequestedSecurityToken>
 *     <wsse:BinarySecurityToken ValueType="…x509-token-profile-1.0#X509v3" EncodingType="…#Base64Binary">base64 DER cert</wsse:BinarySecurityToken>
 *    </wst:RequestedSecurityToken>
 *    <wstep:RequestID>echoed RequestID, or a new one</wstep:RequestID>
 *   </wst:RequestSecurityTokenResponse>
 *  </GetAndPublishCertResponse></s:Body></s:Envelope>
 * ```
 */
import { createHmac, randomUUID } from "node:crypto";
import type { Element } from "@xmldom/xmldom";
import forge from "node-forge";
import type { LabCa } from "./ca.ts";
import type { UserDirectory } from "./directory.ts";
import {
  byWsuId,
  child,
  childElements,
  decodeBase64,
  escapeXml,
  excC14n,
  NS,
  parseXml,
  path,
  SoapReject,
  safeEqual,
  sameEndpoint,
  text,
  URI,
} from "./soap.ts";
import {
  checkDigest,
  checkTimestamp,
  type IssuedTicket,
  type LabRequest,
  type LabResponse,
  soapFault28020,
  type WebServiceStats,
} from "./web-ticket-service.ts";

export interface CertProvisioningOptions {
  fqdn: string;
  ca: LabCa;
  directory: UserDirectory;
  proofUrl: string;
  tickets: Map<string, IssuedTicket>;
  certValidityDays: number;
  clockSkewS: number;
  now: () => number;
  requireWsaHeaders: boolean;
  stats: WebServiceStats;
  minKeyBits?: number;
  maxKeyBits?: number;
}

const BRACED_GUID = /^\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}$/;

export class CertProvisioningService {
  constructor(private readonly o: CertProvisioningOptions) {}

  handleGetAndPublishCert(req: LabRequest): LabResponse {
    try {
      return this.process(req);
    } catch (e) {
      if (e instanceof SoapReject) {
        this.o.stats.proofFailures++;
        return soapFault28020(this.o.fqdn, e.message);
      }
      throw e;
    }
  }

  private process(req: LabRequest): LabResponse {
    if (req.headers.soapaction !== `"${URI.getAndPublishCert}"`) {
      throw new SoapReject(`SOAPAction must be "${URI.getAndPublishCert}"`);
    }
    if (!/^text\/xml\s*(;|$)/i.test(String(req.headers["content-type"] ?? ""))) {
      throw new SoapReject("Content-Type must be text/xml (SOAP 1.1)");
    }
    const doc = parseXml(req.body);
    const env = doc.documentElement!;
    if (env.namespaceURI !== NS.soap11 || env.localName !== "Envelope") {
      throw new SoapReject("not a SOAP 1.1 envelope");
    }
    const header = child(env, NS.soap11, "Header");
    if (!header) throw new SoapReject("no soap:Header");
    if (this.o.requireWsaHeaders) {
      const to = text(child(header, NS.wsa, "To"));
      if (!sameEndpoint(to, this.o.proofUrl, this.o.fqdn))
        throw new SoapReject(`wsa:To ${to || "(missing)"}`);
      const action = text(child(header, NS.wsa, "Action"));
      if (action !== URI.getAndPublishCert) throw new SoapReject(`wsa:Action ${action || "(missing)"}`);
    }
    const security = child(header, NS.wsse, "Security");
    if (!security) throw new SoapReject("no wsse:Security");
    const ticket = this.verifyProof(security);

    const body = child(env, NS.soap11, "Body");
    const gapc = body && child(body, NS.tns, "GetAndPublishCert");
    if (!gapc) throw new SoapReject("no GetAndPublishCert in the body");
    const deviceId = gapc.getAttribute("DeviceId") ?? "";
    if (!BRACED_GUID.test(deviceId)) throw new SoapReject("DeviceId must be a GUID in braces");
    const entity = gapc.getAttribute("Entity") ?? "";
    const userAtDomain = ticket.user.uri.replace(/^sip:/i, "");
    if (entity.toLowerCase() !== userAtDomain.toLowerCase()) {
      throw new SoapReject(`Entity ${entity || "(missing)"} is not the ticket's user ${userAtDomain}`);
    }
    const rst = child(gapc, NS.wstSlash, "RequestSecurityToken");
    if (!rst) {
      if (child(gapc, NS.wst, "RequestSecurityToken")) {
        throw new SoapReject("inner RequestSecurityToken must use wst 200512/ WITH trailing slash");
      }
      throw new SoapReject("no inner RequestSecurityToken");
    }
    if (text(child(rst, NS.wstSlash, "TokenType")) !== URI.x509v3)
      throw new SoapReject("TokenType must be X509v3");
    const bst = childElements(rst, NS.wsse, "BinarySecurityToken").find(
      (b) => b.getAttribute("ValueType") === URI.pkcs10,
    );
    if (!bst) throw new SoapReject("no PKCS10 BinarySecurityToken");
    const der = decodeBase64(text(bst));
    if (!der) throw new SoapReject("CSR is not base64");
    const publicKeyPem = this.checkCsr(der, userAtDomain);
    const requestId = text(child(rst, NS.wstep, "RequestID")) || randomUUID();

    const now = this.o.now();
    const issued = this.o.ca.signPublicKey(publicKeyPem, {
      commonName: userAtDomain,
      uris: [`sip:${userAtDomain}`],
      clientAuth: true,
      days: this.o.certValidityDays,
      notBefore: new Date(now - 3600_000),
    });
    this.o.directory.publish(ticket.user, issued.cert);
    this.o.stats.certsIssued++;
    return {
      status: 200,
      headers: { "Content-Type": "text/xml; charset=utf-8" },
      body: this.response(issued.cert, requestId),
    };
  }

  private verifyProof(security: Element): IssuedTicket {
    const assertions = childElements(security, NS.saml, "Assertion");
    if (assertions.length !== 1) throw new SoapReject("wsse:Security must hold exactly one saml:Assertion");
    const assertion = assertions[0]!;
    const assertionId = assertion.getAttribute("AssertionID") ?? "";
    const ticket = this.o.tickets.get(assertionId);
    if (!ticket) throw new SoapReject(`unknown AssertionID ${assertionId || "(missing)"}`);
    if (excC14n(assertion) !== ticket.canonical)
      throw new SoapReject("Assertion differs from the one issued");

    const signature = child(security, NS.ds, "Signature");
    if (!signature) throw new SoapReject("no ds:Signature (the ticket must be endorsed with the proof key)");
    const signedInfo = child(signature, NS.ds, "SignedInfo");
    if (!signedInfo) throw new SoapReject("no ds:SignedInfo");
    if (child(signedInfo, NS.ds, "CanonicalizationMethod")?.getAttribute("Algorithm") !== URI.excC14n) {
      throw new SoapReject("CanonicalizationMethod must be exc-c14n");
    }
    if (child(signedInfo, NS.ds, "SignatureMethod")?.getAttribute("Algorithm") !== URI.hmacSha1) {
      throw new SoapReject("SignatureMethod must be hmac-sha1");
    }
    const keyId = path(
      signature,
      [NS.ds, "KeyInfo"],
      [NS.wsse, "SecurityTokenReference"],
      [NS.wsse, "KeyIdentifier"],
    );
    if (!keyId || text(keyId) !== assertionId) {
      throw new SoapReject("KeyInfo must identify the Assertion by its AssertionID");
    }
    const timestamp = child(security, NS.wsu, "Timestamp");
    if (!timestamp) throw new SoapReject("no wsu:Timestamp");
    const refs = childElements(signedInfo, NS.ds, "Reference");
    if (refs.length !== 1) throw new SoapReject("SignedInfo must have exactly one Reference");
    const uri = refs[0]!.getAttribute("URI") ?? "";
    if (!uri.startsWith("#") || byWsuId(security, uri.slice(1)) !== timestamp) {
      throw new SoapReject("Reference must point at the wsu:Timestamp");
    }
    checkDigest(refs[0]!, timestamp, false);
    const expected = createHmac("sha1", ticket.proofKey).update(excC14n(signedInfo)).digest();
    const got = decodeBase64(text(child(signature, NS.ds, "SignatureValue")));
    if (!got || !safeEqual(got, expected)) throw new SoapReject("SignatureValue mismatch (wrong proof key?)");

    const now = this.o.now();
    const skew = this.o.clockSkewS * 1000;
    checkTimestamp(timestamp, now, skew);
    if (ticket.expiresMs < now - skew) throw new SoapReject("web ticket expired");
    return ticket;
  }

  /** Parses and checks the PKCS#10; returns its public key as PEM. */
  private checkCsr(der: Buffer, userAtDomain: string): string {
    let csr: forge.pki.CertificateSigningRequest;
    try {
      csr = forge.pki.certificationRequestFromAsn1(forge.asn1.fromDer(der.toString("binary")));
    } catch {
      throw new SoapReject("CSR is not a PKCS#10 request (or not RSA)");
    }
    let ok = false;
    try {
      ok = csr.verify();
    } catch {
      ok = false;
    }
    if (!ok) throw new SoapReject("CSR signature does not verify");
    const key = csr.publicKey as forge.pki.rsa.PublicKey | null;
    if (!key?.n) throw new SoapReject("CSR key is not RSA");
    const bits = key.n.bitLength();
    const min = this.o.minKeyBits ?? 2048;
    const max = this.o.maxKeyBits ?? 16384;
    if (bits < min || bits > max) throw new SoapReject(`CSR key is ${bits} bits; allowed ${min}..${max}`);
    const cn = String(csr.subject.getField("CN")?.value ?? "");
    const cnBare = cn.replace(/^sip:/i, "").toLowerCase();
    if (cnBare !== userAtDomain.toLowerCase())
      throw new SoapReject(`CSR CN ${cn || "(missing)"} is not ${userAtDomain}`);
    return forge.pki.publicKeyToPem(key);
  }

  private response(certPem: string, requestId: string): string {
    const cert = forge.pki.certificateFromPem(certPem);
    const certDer = forge.asn1.toDer(forge.pki.certificateToAsn1(cert)).getBytes();
    const p7 = forge.pkcs7.createSignedData();
    p7.addCertificate(cert);
    p7.addCertificate(forge.pki.certificateFromPem(this.o.ca.cert));
    const p7Der = forge.asn1.toDer(p7.toAsn1()).getBytes();
    const b64 = (bin: string) => Buffer.from(bin, "binary").toString("base64");
    return (
      `<s:Envelope xmlns:s="${NS.soap11}"><s:Body>` +
      `<GetAndPublishCertResponse xmlns="${NS.tns}">` +
      `<wst:RequestSecurityTokenResponse xmlns:wst="${NS.wstSlash}" xmlns:wsse="${NS.wsse}" xmlns:wstep="${NS.wstep}">` +
      `<wst:TokenType>${URI.x509v3}</wst:TokenType>` +
      `<wstep:DispositionMessage xml:lang="en-US">Issued</wstep:DispositionMessage>` +
      `<wsse:BinarySecurityToken ValueType="${URI.pkcs7}" EncodingType="${URI.base64Binary}">${b64(p7Der)}</wsse:BinarySecurityToken>` +
      `<wst:RequestedSecurityToken>` +
      `<wsse:BinarySecurityToken ValueType="${URI.x509v3}" EncodingType="${URI.base64Binary}">${b64(certDer)}</wsse:BinarySecurityToken>` +
      `</wst:RequestedSecurityToken>` +
      `<wstep:RequestID>${escapeXml(requestId)}</wstep:RequestID>` +
      `</wst:RequestSecurityTokenResponse></GetAndPublishCertResponse></s:Body></s:Envelope>`
    );
  }
}
