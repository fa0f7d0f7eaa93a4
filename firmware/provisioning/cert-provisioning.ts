/**
 * GetAndPublishCert (digest §6, §7): the CSR goes to the Cert Prov proof endpoint inside a SOAP
 * 1.1 envelope whose header carries WS-Addressing and the web ticket's wsse:Security; the
 * answer's RequestedSecurityToken/BinarySecurityToken is the DER client certificate, with the
 * chain (PKCS#7) as a sibling token when the server sends one.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import forge from "node-forge";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { csrDer } from "./csr.ts";
import { describeFailure, readFailure } from "./diagnostics.ts";
import { ProvisioningError } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import type { WebTicket } from "./web-ticket.ts";
import { buildSecurityHeader } from "./wsse.ts";
import {
  attr,
  child,
  children,
  descendant,
  escapeAttr,
  escapeText,
  NS,
  parseXml,
  text,
  uuidFrom,
} from "./xml.ts";

export const GET_AND_PUBLISH_CERT_ACTION =
  "http://schemas.microsoft.com/OCS/AuthWebServices/GetAndPublishCert";
const ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous";
const X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3";
const PKCS7 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#PKCS7";
const ISSUE = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue";
const PKCS10 = "http://schemas.microsoft.com/OCS/AuthWebServices.xsd#PKCS10";
const BASE64_BINARY =
  "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#Base64Binary";

export interface GetAndPublishCertOptions {
  /** The proof endpoint (…/WebTicket_Proof). */
  authUri: string;
  ticket: WebTicket;
  ticketMustBeSigned: boolean;
  csrPem: string;
  /** The phone's UUID without braces; sent braced as DeviceId. */
  deviceId: string;
  /** The user's sip: URI (or user@domain); sent without the scheme as Entity. */
  entity: string;
  random: Random;
  logger?: Logger;
}

/** base64 in 76-character lines, each preceded by CRLF, as sipe sends the CSR. */
function base64Lines(der: Buffer): string {
  const b64 = der.toString("base64");
  let out = "";
  for (let i = 0; i < b64.length; i += 76) out += `\r\n${b64.slice(i, i + 76)}`;
  return `${out}\r\n`;
}

function stripSip(uri: string): string {
  return uri.replace(/^sips?:/i, "");
}

export function buildGetAndPublishCert(o: {
  authUri: string;
  securityHeader: string;
  messageId: string;
  requestId: string;
  deviceId: string;
  entity: string;
  csrDer: Buffer;
}): string {
  return (
    '<?xml version="1.0" encoding="utf-8"?>' +
    `<soap:Envelope xmlns:soap="${NS.soap11}" xmlns:wsa="${NS.wsa}" xmlns:wsse="${NS.wsse}" xmlns:wsu="${NS.wsu}" xmlns:saml="${NS.saml}">` +
    "<soap:Header>" +
    `<wsa:To>${escapeText(o.authUri)}</wsa:To>` +
    `<wsa:ReplyTo><wsa:Address>${ANONYMOUS}</wsa:Address></wsa:ReplyTo>` +
    `<wsa:MessageID>uuid:${o.messageId}</wsa:MessageID>` +
    `<wsa:Action>${GET_AND_PUBLISH_CERT_ACTION}</wsa:Action>` +
    o.securityHeader +
    "</soap:Header>" +
    "<soap:Body>" +
    `<GetAndPublishCert xmlns="${NS.tns}" xmlns:wst="${NS.wstCertProv}" xmlns:wstep="${NS.wstep}"` +
    ` DeviceId="{${escapeAttr(o.deviceId)}}" Entity="${escapeAttr(o.entity)}">` +
    "<wst:RequestSecurityToken>" +
    `<wst:TokenType>${X509V3}</wst:TokenType>` +
    `<wst:RequestType>${ISSUE}</wst:RequestType>` +
    `<wsse:BinarySecurityToken ValueType="${PKCS10}" EncodingType="${BASE64_BINARY}">${base64Lines(o.csrDer)}</wsse:BinarySecurityToken>` +
    `<wstep:RequestID>${o.requestId}</wstep:RequestID>` +
    "</wst:RequestSecurityToken>" +
    "</GetAndPublishCert>" +
    "</soap:Body>" +
    "</soap:Envelope>"
  );
}

function derToPem(der: string): string {
  return forge.pki
    .certificateToPem(forge.pki.certificateFromAsn1(forge.asn1.fromDer(der)))
    .replace(/\r\n/g, "\n");
}

function certsOfToken(b64: string, valueType: string | undefined): string[] {
  const der = Buffer.from(b64.replace(/\s+/g, ""), "base64").toString("binary");
  if (der.length === 0) return [];
  if (valueType === PKCS7) {
    const msg = forge.pkcs7.messageFromAsn1(forge.asn1.fromDer(der)) as forge.pkcs7.PkcsSignedData;
    return msg.certificates.map((c) => forge.pki.certificateToPem(c).replace(/\r\n/g, "\n"));
  }
  try {
    return [derToPem(der)];
  } catch {
    const msg = forge.pkcs7.messageFromAsn1(forge.asn1.fromDer(der)) as forge.pkcs7.PkcsSignedData;
    return msg.certificates.map((c) => forge.pki.certificateToPem(c).replace(/\r\n/g, "\n"));
  }
}

/** Reads GetAndPublishCertResponse/RequestSecurityTokenResponse/RequestedSecurityToken/BinarySecurityToken. */
export function parseGetAndPublishCertResponse(body: string): { certPem: string; chainPems: string[] } {
  const doc = parseXml(body, "Certificate provisioning response");
  const response = descendant(doc, "GetAndPublishCertResponse");
  const rstr = response ? descendant(response, "RequestSecurityTokenResponse") : undefined;
  const requested = rstr ? child(rstr, "RequestedSecurityToken") : undefined;
  const token = requested ? descendant(requested, "BinarySecurityToken") : undefined;
  if (!rstr || !token) {
    const disposition = rstr ? text(descendant(rstr, "DispositionMessage")) : "";
    throw new ProvisioningError(
      disposition ? "cert-request-rejected" : "malformed-response",
      disposition
        ? `Certificate not issued: ${disposition}`
        : "Certificate provisioning response has no BinarySecurityToken",
      disposition ? { reason: disposition } : {},
    );
  }
  let leafAndMore: string[];
  let chain: string[] = [];
  try {
    leafAndMore = certsOfToken(text(token), attr(token, "ValueType"));
    for (const sibling of children(rstr, "BinarySecurityToken"))
      chain = chain.concat(certsOfToken(text(sibling), attr(sibling, "ValueType")));
  } catch (err) {
    throw new ProvisioningError("malformed-response", "Issued certificate cannot be decoded", { cause: err });
  }
  const certPem = leafAndMore[0];
  if (!certPem) throw new ProvisioningError("malformed-response", "Issued certificate token is empty");
  const seen = new Set([certPem]);
  const chainPems = [...leafAndMore.slice(1), ...chain].filter((p) => !seen.has(p) && seen.add(p));
  return { certPem, chainPems };
}

export async function getAndPublishCert(
  http: HttpClient,
  o: GetAndPublishCertOptions,
): Promise<{ certPem: string; chainPems: string[] }> {
  const body = buildGetAndPublishCert({
    authUri: o.authUri,
    securityHeader: buildSecurityHeader(o.ticket, { signed: o.ticketMustBeSigned }),
    messageId: uuidFrom(o.random.bytes(16)),
    requestId: uuidFrom(o.random.bytes(16)),
    deviceId: o.deviceId.replace(/^\{|\}$/g, ""),
    entity: stripSip(o.entity),
    csrDer: csrDer(o.csrPem),
  });
  o.logger?.info("requesting certificate", { url: o.authUri, entity: stripSip(o.entity) });
  const res = await http.request({
    method: "POST",
    url: o.authUri,
    headers: { "Content-Type": "text/xml; charset=utf-8", SOAPAction: `"${GET_AND_PUBLISH_CERT_ACTION}"` },
    body,
  });
  if (res.status !== 200) {
    const r = readFailure(res);
    const details = {
      status: r.status,
      ...(r.diagnostic ? { diagnosticId: r.diagnostic.id } : {}),
      ...(r.reason ? { reason: r.reason } : {}),
    };
    o.logger?.warn("certificate refused", { status: res.status, diagnosticId: r.diagnostic?.id });
    if ((res.status === 502 || res.status === 503 || res.status === 504) && !r.diagnostic)
      throw new ProvisioningError(
        "server-unreachable",
        `Certificate service unavailable (HTTP ${res.status})`,
        details,
      );
    // A refused ticket (FailedAuthentication / 28020) means: get a new ticket, not a new CSR.
    const ticketProblem = r.faultCode === "FailedAuthentication" || r.diagnostic?.id === 28020;
    throw new ProvisioningError(
      ticketProblem ? "ticket-rejected" : "cert-request-rejected",
      `${ticketProblem ? "Web ticket refused by certificate service" : "Certificate request refused"}: ${describeFailure(r)}`,
      details,
    );
  }
  const issued = parseGetAndPublishCertResponse(res.body);
  o.logger?.info("certificate issued", { chain: issued.chainPems.length });
  return issued;
}

/** Throws cert-key-mismatch unless the certificate's public key belongs to this private key. */
export function assertCertMatchesKey(certPem: string, privateKeyPem: string): void {
  let matches = false;
  try {
    matches = new X509Certificate(certPem).checkPrivateKey(createPrivateKey(privateKeyPem));
  } catch (err) {
    throw new ProvisioningError("cert-key-mismatch", "Certificate or key cannot be read", { cause: err });
  }
  if (!matches)
    throw new ProvisioningError("cert-key-mismatch", "Issued certificate is not for this phone's key");
}
