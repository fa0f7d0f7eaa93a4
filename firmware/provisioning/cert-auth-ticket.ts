/**
 * A web ticket for the phone's own certificate (digest §3.3; layout of the lab's `/Cert` port,
 * WSS X.509 Token Profile 1.0): the same RST as the PIN port, sent to the `WebTicketServiceCert`
 * port with a SOAP 1.1 header
 *
 *   <wsse:Security>
 *     <wsu:Timestamp wsu:Id="timestamp">  Created = now, Expires = now + 5 min
 *     <wsse:BinarySecurityToken wsu:Id="X509Token" ValueType=…#X509v3 EncodingType=…#Base64Binary>
 *     <ds:Signature>  SignedInfo: exc-c14n, RSA-SHA256, one Reference #timestamp
 *                     (exc-c14n transform, SHA-256 digest); KeyInfo → SecurityTokenReference
 *                     → Reference URI="#X509Token"
 *
 * signed with the certificate's private key. Used to renew the certificate without the PIN.
 *
 * Order of the exchange, as for the PIN port (web-ticket.ts): the RST goes first WITHOUT the
 * Security header; the port's refusal of that probe is its challenge (a 401, or the WS-Security
 * way of saying "no token": a 500 FailedAuthentication / 28020); then the signed header goes
 * once, with a Timestamp made at that moment. Only the answer to the signed request is a
 * verdict on the certificate: a refusal of the probe (which carried no certificate) never
 * counts as the certificate being refused.
 *
 * Refusals. A pool answers a token it will not accept with the generic §8 fault (HTTP 500,
 * FailedAuthentication, 28020 "No valid security token."), for a revoked or unpublished
 * certificate exactly as for any other token problem. We map:
 *   - reason / fault text / Warning saying "revoked" → "certificate-revoked";
 *   - any other FailedAuthentication / 28020 / 401 / 403 → "ticket-rejected";
 * and both are thrown as CertificateRefusedError, so that the renewal policy can tell "the
 * server will not take this certificate" from a ticket refused elsewhere (isCertificateRefusal).
 * 502/503/504 without a diagnostic → "server-unreachable"; transport failures come from the
 * HttpClient as they are.
 */
import { createHash, createPrivateKey, type KeyObject, sign, X509Certificate } from "node:crypto";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { describeFailure, type FailureReport } from "./diagnostics.ts";
import {
  CertificateRefusedError,
  isCertificateRefusal,
  ProvisioningError,
  type ProvisioningErrorDetails,
} from "./errors.ts";

export { CertificateRefusedError, isCertificateRefusal };

import type { HttpClient } from "./http.ts";
import {
  type CertProvMetadata,
  chooseCertPort,
  fetchMetadata,
  parseCertProvMetadata,
  parseWebTicketMetadata,
} from "./metadata.ts";
import { buildPinRst, issueTokenAfterChallenge, type WebTicket } from "./web-ticket.ts";
import { buildTimestamp } from "./wsse.ts";
import { excC14n, NS, parseXml } from "./xml.ts";

const EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#";
const RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
const SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256";
const X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
const BASE64_BINARY =
  "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#Base64Binary";
const TOKEN_ID = "X509Token";
const ENTROPY_BYTES = 32;
/** Validity of the request's Timestamp; the server allows its own clock skew on top. */
export const CERT_TIMESTAMP_TTL_MS = 5 * 60_000;

export interface CertTicketOptions {
  /** The WebTicketServiceCert port's address, from the Web Ticket WSDL. */
  portUrl: string;
  /** The relying party: the Cert Prov proof endpoint (…/WebTicket_Proof). */
  appliesTo: string;
  /** The phone's current client certificate and its private key (PEM). */
  certPem: string;
  keyPem: string;
  /** The phone's persistent UUID (no braces): the RST Context. */
  deviceId: string;
  random: Random;
  /** Wall clock for the Timestamp. */
  clock: Pick<Clock, "now">;
  logger?: Logger;
}

/** The cert port refused the certificate itself (revoked, unpublished, expired, untrusted). */
function isoSeconds(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19)}Z`;
}

function canonicalOf(xml: string, what: string): string {
  return excC14n(parseXml(xml, what).documentElement!);
}

/** SignedInfo (ds prefix, explicit end tags) with one Reference to #timestamp. */
function buildSignedInfo(digestValue: string): string {
  return (
    `<ds:SignedInfo xmlns:ds="${NS.ds}">` +
    `<ds:CanonicalizationMethod Algorithm="${EXC_C14N}"></ds:CanonicalizationMethod>` +
    `<ds:SignatureMethod Algorithm="${RSA_SHA256}"></ds:SignatureMethod>` +
    `<ds:Reference URI="#timestamp">` +
    `<ds:Transforms><ds:Transform Algorithm="${EXC_C14N}"></ds:Transform></ds:Transforms>` +
    `<ds:DigestMethod Algorithm="${SHA256}"></ds:DigestMethod>` +
    `<ds:DigestValue>${digestValue}</ds:DigestValue>` +
    "</ds:Reference>" +
    "</ds:SignedInfo>"
  );
}

/**
 * The self-contained `<wsse:Security>` of the certificate port: Timestamp [created, expires],
 * the certificate as an X509v3 BinarySecurityToken, and an RSA-SHA256 signature over the
 * exc-c14n Timestamp made with `key`.
 */
export function buildX509SecurityHeader(o: {
  certDer: Buffer;
  key: KeyObject;
  created: number;
  expires: number;
}): string {
  const timestamp = buildTimestamp(
    `<wsu:Created>${isoSeconds(o.created)}</wsu:Created><wsu:Expires>${isoSeconds(o.expires)}</wsu:Expires>`,
  );
  const digestValue = createHash("sha256")
    .update(canonicalOf(timestamp, "Timestamp"), "utf8")
    .digest("base64");
  const signedInfo = canonicalOf(buildSignedInfo(digestValue), "SignedInfo");
  const signatureValue = sign("sha256", Buffer.from(signedInfo, "utf8"), o.key).toString("base64");
  return (
    `<wsse:Security xmlns:wsse="${NS.wsse}">` +
    timestamp +
    `<wsse:BinarySecurityToken xmlns:wsu="${NS.wsu}" wsu:Id="${TOKEN_ID}" ValueType="${X509V3}" EncodingType="${BASE64_BINARY}">` +
    o.certDer.toString("base64") +
    "</wsse:BinarySecurityToken>" +
    `<ds:Signature xmlns:ds="${NS.ds}">` +
    signedInfo +
    `<ds:SignatureValue>${signatureValue}</ds:SignatureValue>` +
    "<ds:KeyInfo><wsse:SecurityTokenReference>" +
    `<wsse:Reference URI="#${TOKEN_ID}" ValueType="${X509V3}"></wsse:Reference>` +
    "</wsse:SecurityTokenReference></ds:KeyInfo>" +
    "</ds:Signature>" +
    "</wsse:Security>"
  );
}

/** Maps a failed certificate-port RST to a typed error (see the header comment). */
export function certFailure(r: FailureReport): ProvisioningError {
  const id = r.diagnostic?.id;
  const details: ProvisioningErrorDetails = {
    status: r.status,
    ...(id !== undefined ? { diagnosticId: id } : {}),
    ...(r.reason ? { reason: r.reason } : {}),
  };
  if ((r.status === 502 || r.status === 503 || r.status === 504) && id === undefined)
    return new ProvisioningError(
      "server-unreachable",
      `Web ticket service unavailable (HTTP ${r.status})`,
      details,
    );
  const said = [r.reason, r.diagnostic?.fields["reason"], ...r.warnings.map((w) => w.text)].join(" ");
  if (/revoked/i.test(said))
    return new CertificateRefusedError(
      "certificate-revoked",
      `Certificate revoked: ${describeFailure(r)}`,
      details,
    );
  const refused =
    id === 28020 || r.faultCode === "FailedAuthentication" || r.status === 401 || r.status === 403;
  const message = `Certificate not accepted for a web ticket: ${describeFailure(r)}`;
  return refused
    ? new CertificateRefusedError("ticket-rejected", message, details)
    : new ProvisioningError("ticket-rejected", message, details);
}

function readCredential(certPem: string, keyPem: string): { certDer: Buffer; key: KeyObject } {
  try {
    const cert = new X509Certificate(certPem);
    const key = createPrivateKey(keyPem);
    if (!cert.checkPrivateKey(key)) throw new Error("certificate and key differ");
    return { certDer: cert.raw, key };
  } catch (err) {
    throw new ProvisioningError("cert-key-mismatch", "Stored certificate or key cannot be used", {
      cause: err,
    });
  }
}

/** True when a refusal of an unauthenticated request asks for a token (a challenge). */
function asksForCredentials(r: FailureReport): boolean {
  return (
    r.status === 401 ||
    (r.status === 500 && (r.diagnostic?.id === 28020 || r.faultCode === "FailedAuthentication"))
  );
}

/** One certificate-authenticated RST: probe, challenge, then the signed header once. */
export async function requestWebTicketWithCertificate(
  http: HttpClient,
  o: CertTicketOptions,
): Promise<WebTicket> {
  const { certDer, key } = readCredential(o.certPem, o.keyPem);
  const clientEntropy = Buffer.from(o.random.bytes(ENTROPY_BYTES));
  const rst = (header?: string) =>
    buildPinRst({
      appliesTo: o.appliesTo,
      deviceId: o.deviceId,
      clientEntropy,
      ...(header !== undefined ? { header } : {}),
    });
  o.logger?.info("requesting web ticket with certificate", { url: o.portUrl });
  return issueTokenAfterChallenge(http, {
    url: o.portUrl,
    probeBody: rst(),
    clientEntropy,
    onChallenge: (challenge) => {
      if (!asksForCredentials(challenge)) {
        // No certificate went with the probe: whatever this says, it is not about the certificate.
        const err = certFailure(challenge);
        throw err instanceof CertificateRefusedError
          ? new ProvisioningError("ticket-rejected", err.message, {
              status: challenge.status,
              ...(err.diagnosticId !== undefined ? { diagnosticId: err.diagnosticId } : {}),
              ...(err.reason !== undefined ? { reason: err.reason } : {}),
            })
          : err;
      }
      const created = o.clock.now();
      const header = buildX509SecurityHeader({
        certDer,
        key,
        created,
        expires: created + CERT_TIMESTAMP_TTL_MS,
      });
      return { body: rst(header) };
    },
    failure: certFailure,
    ...(o.logger ? { logger: o.logger } : {}),
  });
}

/** Cert Prov metadata → Web Ticket metadata → the certificate port (digest §2). */
export async function discoverCertEndpoint(
  http: HttpClient,
  certProvUrl: string,
  logger?: Logger,
): Promise<{ certProv: CertProvMetadata; certPortUrl: string }> {
  const certProv = parseCertProvMetadata(await fetchMetadata(http, certProvUrl, logger));
  const { ports } = parseWebTicketMetadata(await fetchMetadata(http, certProv.webTicketUrl, logger));
  const certPortUrl = chooseCertPort(ports);
  logger?.info("web ticket ports", { ports: ports.map((p) => p.name), cert: certPortUrl ?? null });
  if (!certPortUrl)
    throw new ProvisioningError(
      "malformed-response",
      `The web ticket service offers no certificate port (${certProv.webTicketUrl})`,
    );
  return { certProv, certPortUrl };
}
