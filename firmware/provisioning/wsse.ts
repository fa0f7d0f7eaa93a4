/**
 * The WS-Security header that carries a web ticket (digest §6): a wsu:Timestamp holding the
 * ticket's Lifetime, the SAML assertion, and — for holder-of-key endpoints — an XML signature
 * (HMAC-SHA1 with the proof key) over the exclusive-c14n SignedInfo whose one Reference digests
 * the Timestamp. Digests are computed over real exclusive canonicalization (xml-crypto), not
 * over the bytes we happened to write.
 */
import { createHash, createHmac } from "node:crypto";
import type { WebTicket } from "./web-ticket.ts";
import { escapeText, excC14n, NS, parseXml } from "./xml.ts";

const EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#";
const HMAC_SHA1 = "http://www.w3.org/2000/09/xmldsig#hmac-sha1";
const SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1";
const SAML11_TOKEN = "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1";
const SAML_ASSERTION_ID = "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.0#SAMLAssertionID";

/** `<wsu:Timestamp xmlns:wsu=… wsu:Id="timestamp">` + the Lifetime's Created/Expires. */
export function buildTimestamp(lifetimeXml: string): string {
  return `<wsu:Timestamp xmlns:wsu="${NS.wsu}" wsu:Id="timestamp">${lifetimeXml}</wsu:Timestamp>`;
}

function canonicalOf(xml: string, what: string): string {
  return excC14n(parseXml(xml, what).documentElement!);
}

/** SignedInfo (default namespace xmldsig#, explicit end tags) with one Reference to #timestamp. */
export function buildSignedInfo(digestValue: string): string {
  return (
    `<SignedInfo xmlns="${NS.ds}">` +
    `<CanonicalizationMethod Algorithm="${EXC_C14N}"></CanonicalizationMethod>` +
    `<SignatureMethod Algorithm="${HMAC_SHA1}"></SignatureMethod>` +
    `<Reference URI="#timestamp">` +
    `<Transforms><Transform Algorithm="${EXC_C14N}"></Transform></Transforms>` +
    `<DigestMethod Algorithm="${SHA1}"></DigestMethod>` +
    `<DigestValue>${digestValue}</DigestValue>` +
    "</Reference>" +
    "</SignedInfo>"
  );
}

export interface ProofSignature {
  digestValue: string;
  signatureValue: string;
  /** The canonical SignedInfo bytes that were MACed. */
  signedInfo: string;
}

/** Digest of the Timestamp and HMAC-SHA1 of the canonical SignedInfo, with the proof key. */
export function signTimestamp(timestampXml: string, proofKey: Buffer): ProofSignature {
  const digestValue = createHash("sha1")
    .update(canonicalOf(timestampXml, "Timestamp"), "utf8")
    .digest("base64");
  const signedInfo = canonicalOf(buildSignedInfo(digestValue), "SignedInfo");
  const signatureValue = createHmac("sha1", proofKey).update(signedInfo, "utf8").digest("base64");
  return { digestValue, signatureValue, signedInfo };
}

/**
 * `<wsse:Security>` with Timestamp, Assertion and (if `signed`) the proof-of-possession
 * Signature. Self-contained: every prefix it uses is declared inside it.
 */
export function buildSecurityHeader(ticket: WebTicket, o: { signed: boolean }): string {
  const timestamp = buildTimestamp(ticket.lifetimeXml);
  let signature = "";
  if (o.signed) {
    const sig = signTimestamp(timestamp, ticket.proofKey);
    signature =
      `<Signature xmlns="${NS.ds}">` +
      sig.signedInfo +
      `<SignatureValue>${sig.signatureValue}</SignatureValue>` +
      "<KeyInfo>" +
      `<wsse:SecurityTokenReference wsse:TokenType="${SAML11_TOKEN}">` +
      `<wsse:KeyIdentifier ValueType="${SAML_ASSERTION_ID}">${escapeText(ticket.assertionId)}</wsse:KeyIdentifier>` +
      "</wsse:SecurityTokenReference>" +
      "</KeyInfo>" +
      "</Signature>";
  }
  return `<wsse:Security xmlns:wsse="${NS.wsse}">${timestamp}${ticket.assertionXml}${signature}</wsse:Security>`;
}
