/**
 * Shared XML/SOAP helpers for the lab's web services (web ticket service, certificate
 * provisioning). Namespace-aware DOM parsing with @xmldom/xmldom, exclusive canonicalisation
 * with xml-crypto, and the fault shapes of ../shared/protocol/webticket-certprov.md §8.
 *
 * xml-crypto is loaded through createRequire with a small local type: its bundled .d.ts files
 * reference DOM lib types (Element, Node, XPathNSResolver) that our tsconfig (lib ES2022, no
 * DOM) does not provide, so importing it statically breaks `tsc` for the whole tree.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { createRequire } from "node:module";
import { DOMParser, type Document, type Element } from "@xmldom/xmldom";

export const NS = {
  soap11: "http://schemas.xmlsoap.org/soap/envelope/",
  soap12: "http://www.w3.org/2003/05/soap-envelope",
  wst: "http://docs.oasis-open.org/ws-sx/ws-trust/200512",
  wstSlash: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/",
  tns: "http://schemas.microsoft.com/OCS/AuthWebServices/",
  wstep: "http://schemas.microsoft.com/windows/pki/2009/01/enrollment",
  auth: "http://schemas.xmlsoap.org/ws/2006/12/authorization",
  wsse: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
  wsu: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
  wsp: "http://schemas.xmlsoap.org/ws/2004/09/policy",
  wsa: "http://www.w3.org/2005/08/addressing",
  saml: "urn:oasis:names:tc:SAML:1.0:assertion",
  af: "urn:component:Microsoft.Rtc.WebAuthentication.2010",
  ds: "http://www.w3.org/2000/09/xmldsig#",
  sp: "http://docs.oasis-open.org/ws-sx/ws-securitypolicy/200702",
  wsx: "http://schemas.xmlsoap.org/ws/2004/09/mex",
  wsdl: "http://schemas.xmlsoap.org/wsdl/",
  wsdlSoap: "http://schemas.xmlsoap.org/wsdl/soap/",
  wsaw: "http://www.w3.org/2006/05/addressing/wsdl",
  httpPolicy: "http://schemas.microsoft.com/ws/06/2004/policy/http",
  xsd: "http://www.w3.org/2001/XMLSchema",
  arrays: "http://schemas.microsoft.com/2003/10/Serialization/Arrays",
} as const;

export const URI = {
  rstIssueAction: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue",
  rstrcIssueFinal: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RSTRC/IssueFinal",
  samlTokenType: "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1",
  samlAssertionIdValueType: "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.0#SAMLAssertionID",
  symmetricKey: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/SymmetricKey",
  requestTypeIssue2005: "http://schemas.xmlsoap.org/ws/2005/02/trust/Issue",
  requestTypeIssue200512: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue",
  nonce: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Nonce",
  ckPsha1: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/CK/PSHA1",
  claimsDialect: "urn:component:Microsoft.Rtc.WebAuthentication.2010:authclaims",
  claimUri: "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/uri",
  getAndPublishCert: "http://schemas.microsoft.com/OCS/AuthWebServices/GetAndPublishCert",
  getAndPublishCertResponse: "http://schemas.microsoft.com/OCS/AuthWebServices/GetAndPublishCertResponse",
  x509v3: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3",
  pkcs7: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#PKCS7",
  pkcs10: "http://schemas.microsoft.com/OCS/AuthWebServices.xsd#PKCS10",
  base64Binary:
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#Base64Binary",
  transferGet: "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get",
  transferGetResponse: "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse",
  wsdlDialect: "http://schemas.xmlsoap.org/wsdl/",
  anonymous: "http://www.w3.org/2005/08/addressing/anonymous",
  excC14n: "http://www.w3.org/2001/10/xml-exc-c14n#",
  envelopedSignature: "http://www.w3.org/2000/09/xmldsig#enveloped-signature",
  hmacSha1: "http://www.w3.org/2000/09/xmldsig#hmac-sha1",
  rsaSha1: "http://www.w3.org/2000/09/xmldsig#rsa-sha1",
  rsaSha256: "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
  sha1: "http://www.w3.org/2000/09/xmldsig#sha1",
  sha256: "http://www.w3.org/2001/04/xmlenc#sha256",
} as const;

/** The minimal surface of xml-crypto we use (see the file header for why it is typed here). */
interface XmlCryptoModule {
  ExclusiveCanonicalization: new () => { process(node: unknown, options: object): string };
  SignedXml: new (options: {
    privateKey?: string | Buffer;
    publicCert?: string | Buffer;
    signatureAlgorithm?: string;
    canonicalizationAlgorithm?: string;
    idAttribute?: string;
  }) => {
    addReference(ref: { xpath: string; transforms: string[]; digestAlgorithm: string }): void;
    computeSignature(xml: string, options?: { location?: { reference: string; action: string } }): void;
    getSignedXml(): string;
  };
}

const requireCjs = createRequire(import.meta.url);
export const xmlCrypto = requireCjs("xml-crypto") as XmlCryptoModule;

/** A request we refuse; the services map it to their fault (lab reason kept for debugging). */
export class SoapReject extends Error {}

export function parseXml(text: string): Document {
  const parser = new DOMParser({
    onError: (level, message) => {
      if (level !== "warning") throw new SoapReject(`malformed XML: ${message}`);
    },
  });
  const doc = parser.parseFromString(text, "text/xml");
  if (!doc.documentElement) throw new SoapReject("malformed XML: no document element");
  return doc;
}

export function childElements(parent: Element, ns?: string, local?: string): Element[] {
  const out: Element[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    if (n.nodeType !== 1) continue;
    const el = n as Element;
    if (ns !== undefined && el.namespaceURI !== ns) continue;
    if (local !== undefined && el.localName !== local) continue;
    out.push(el);
  }
  return out;
}

export function child(parent: Element, ns: string, local: string): Element | undefined {
  return childElements(parent, ns, local)[0];
}

/** Follows a path of [ns, local] child steps; undefined when any step is missing. */
export function path(parent: Element, ...steps: Array<[string, string]>): Element | undefined {
  let cur: Element | undefined = parent;
  for (const [ns, local] of steps) {
    if (!cur) return undefined;
    cur = child(cur, ns, local);
  }
  return cur;
}

export function descendants(root: Element | Document, ns: string, local: string): Element[] {
  const list = root.getElementsByTagNameNS(ns, local);
  const out: Element[] = [];
  for (let i = 0; i < list.length; i++) {
    const el = list.item(i);
    if (el) out.push(el);
  }
  return out;
}

export function text(el: Element | undefined): string {
  return (el?.textContent ?? "").trim();
}

/** Finds the element whose wsu:Id equals id (WS-Security references are "#id"). */
export function byWsuId(root: Element | Document, id: string): Element | undefined {
  const all = root.getElementsByTagName("*");
  for (let i = 0; i < all.length; i++) {
    const el = all.item(i);
    if (el?.getAttributeNS(NS.wsu, "Id") === id) return el;
  }
  return undefined;
}

/** Exclusive XML canonicalisation (no comments, no inclusive prefixes) of one element. */
export function excC14n(el: Element): string {
  return new xmlCrypto.ExclusiveCanonicalization().process(el, {});
}

export function escapeXml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&apos;");
}

/** P_SHA1 (TLS 1.0 construction): A(0)=seed, A(i)=HMAC(secret, A(i-1)), out = HMAC(secret, A(i)‖seed)…  */
export function pSha1(secret: Buffer, seed: Buffer, length: number): Buffer {
  const out: Buffer[] = [];
  let total = 0;
  let a = seed;
  while (total < length) {
    a = createHmac("sha1", secret).update(a).digest();
    const block = createHmac("sha1", secret)
      .update(Buffer.concat([a, seed]))
      .digest();
    out.push(block);
    total += block.length;
  }
  return Buffer.concat(out).subarray(0, length);
}

export function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Strict base64 (whitespace allowed between groups): undefined if anything else is present. */
export function decodeBase64(s: string): Buffer | undefined {
  const compact = s.replace(/\s+/g, "");
  if (compact.length === 0 || compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(compact)) {
    return undefined;
  }
  return Buffer.from(compact, "base64");
}

/** xs:dateTime in UTC with second precision and a Z, as WCF writes Lifetime. */
export function isoSeconds(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}

export const DIAG_NO_VALID_TOKEN = "No valid security token.";

export function xMsDiagnostics(id: number, fqdn: string, reason: string, faultcode?: string): string {
  const base = `${id};source="${fqdn}";reason="${reason}"`;
  return faultcode ? `${base};faultcode="${faultcode}"` : base;
}

/** The §8 SOAP 1.1 FailedAuthentication fault with an OCSDiagnosticsFault detail. */
export function failedAuthenticationFault(errorId: number, reason: string): string {
  const r = escapeXml(reason);
  return (
    `<s:Envelope xmlns:s="${NS.soap11}"><s:Body><s:Fault>` +
    `<faultcode xmlns:a="${NS.wsse}">a:FailedAuthentication</faultcode>` +
    `<faultstring xml:lang="en-US">${r}</faultstring>` +
    `<detail><OCSDiagnosticsFault xmlns="${NS.af}" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">` +
    `<Ms-Diagnostics-Fault><ErrorId>${errorId}</ErrorId><Reason>${r}</Reason></Ms-Diagnostics-Fault>` +
    `<NameValuePairs xmlns:a="${NS.arrays}"/>` +
    `</OCSDiagnosticsFault></detail></s:Fault></s:Body></s:Envelope>`
  );
}

/** A SOAP 1.2 sender fault (used by the mex endpoint for a wrong WS-Transfer action). */
export function soap12Fault(subcode: string, reason: string): string {
  return (
    `<s:Envelope xmlns:s="${NS.soap12}" xmlns:a="${NS.wsa}"><s:Body><s:Fault>` +
    `<s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>${escapeXml(subcode)}</s:Value></s:Subcode></s:Code>` +
    `<s:Reason><s:Text xml:lang="en-US">${escapeXml(reason)}</s:Text></s:Reason>` +
    `</s:Fault></s:Body></s:Envelope>`
  );
}

/** Compares a URL a client sent with one we published: same scheme, port and path; host may be our FQDN. */
export function sameEndpoint(sent: string, published: string, fqdn: string): boolean {
  let a: URL;
  let b: URL;
  try {
    a = new URL(sent);
    b = new URL(published);
  } catch {
    return false;
  }
  const hostOk = a.hostname.toLowerCase() === b.hostname.toLowerCase() || a.hostname.toLowerCase() === fqdn;
  return (
    hostOk &&
    a.protocol === b.protocol &&
    a.port === b.port &&
    a.pathname.toLowerCase() === b.pathname.toLowerCase() &&
    a.search === b.search
  );
}
