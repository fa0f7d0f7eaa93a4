/**
 * WS-MetadataExchange for the Certificate Provisioning and Web Ticket services (digest §2):
 * fetch the WSDL (GET <url>/mex, else a SOAP 1.2 WS-Transfer Get POST), then read from it the
 * ticket issuer, the proof endpoint and the authentication ports. Elements are matched by
 * namespace + local name, never by prefix.
 */
import type { Document, Element } from "@xmldom/xmldom";
import type { Logger } from "../core/logger.ts";
import { ProvisioningError } from "./errors.ts";
import { type HttpClient, type HttpResponse, headerValue, joinUrl } from "./http.ts";
import { attr, child, children, descendant, descendants, escapeText, NS, text, tryParseXml } from "./xml.ts";

export const CERT_PROV_PROOF_PORT = "CertProvisioningServiceWebTicketProof_SHA1";
export const CERT_PROV_PROOF_POLICY = "CertProvisioningServiceWebTicketProof_SHA1_policy";
export const PIN_PORT = "WebTicketServicePin";
/** The certificate-authenticated port (WS-Security X.509 token, digest §2.3, §3.3). */
export const CERT_PORT = "WebTicketServiceCert";
const WS_TRANSFER_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get";
const ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous";
const WSP = [NS.wsp, NS.wsp15] as const;
const SP = [NS.sp, NS.sp2005] as const;
const WSA = [NS.wsa, NS.wsa2004] as const;
const SOAP_ADDRESS = [NS.wsdlSoap11, NS.wsdlSoap12] as const;

export interface CertProvMetadata {
  /** The Web Ticket Service URL named as the proof endpoint's ticket issuer. */
  webTicketUrl: string;
  /** The proof endpoint (…/WebTicket_Proof): GetAndPublishCert's URL and the RST's AppliesTo. */
  authUri: string;
  /** EndorsingSupportingTokens: holder-of-key, sign with the proof key; Signed…: bearer. */
  ticketMustBeSigned: boolean;
}

export interface WebTicketPort {
  name: string;
  address: string;
  /** The port's policy asserts HTTP Basic authentication. */
  basicAuth: boolean;
}

/** The SOAP 1.2 WS-Transfer Get that Microsoft clients POST to <service>/mex (digest §2.1). */
export function buildMexGetRequest(serviceUrl: string): string {
  return (
    `<s:Envelope xmlns:s="${NS.soap12}" xmlns:a="${NS.wsa}">` +
    "<s:Header>" +
    `<a:Action s:mustUnderstand="1">${WS_TRANSFER_GET}</a:Action>` +
    `<a:ReplyTo><a:Address>${ANONYMOUS}</a:Address></a:ReplyTo>` +
    `<a:To s:mustUnderstand="1">${escapeText(serviceUrl)}</a:To>` +
    "</s:Header>" +
    "<s:Body></s:Body>" +
    "</s:Envelope>"
  );
}

function wsdlIn(res: HttpResponse): Document | undefined {
  if (res.status !== 200) return undefined;
  const doc = res.body.trimStart().startsWith("<") ? tryParseXml(res.body) : undefined;
  return doc && definitionsOf(doc) ? doc : undefined;
}

/** The wsdl:definitions element: the root (GET) or inside wsx:Metadata (SOAP reply). */
function definitionsOf(doc: Document): Element | undefined {
  const root = doc.documentElement;
  if (root && root.localName === "definitions" && root.namespaceURI === NS.wsdl) return root;
  return descendant(doc, "definitions", NS.wsdl);
}

/**
 * Fetches a service's WSDL: GET <url>/mex first (what sipe does against real pools), then the
 * WS-Transfer Get POST when the GET answers anything but 200 + a WSDL. Transport failures
 * (unreachable, untrusted certificate, timeout) are not retried with POST.
 */
export async function fetchMetadata(
  http: HttpClient,
  serviceUrl: string,
  logger?: Logger,
): Promise<Document> {
  const mexUrl = joinUrl(serviceUrl, "mex");
  const get = await http.request({
    method: "GET",
    url: mexUrl,
    headers: { Accept: "text/xml, application/xml" },
  });
  const fromGet = wsdlIn(get);
  logger?.debug("mex GET", { url: mexUrl, status: get.status, wsdl: fromGet !== undefined });
  if (fromGet) return fromGet;
  const post = await http.request({
    method: "POST",
    url: mexUrl,
    headers: { "Content-Type": "application/soap+xml; charset=utf-8" },
    body: buildMexGetRequest(serviceUrl),
  });
  const fromPost = wsdlIn(post);
  logger?.debug("mex POST", { url: mexUrl, status: post.status, wsdl: fromPost !== undefined });
  if (fromPost) return fromPost;
  throw new ProvisioningError(
    "malformed-response",
    `No WSDL at ${mexUrl} (GET: HTTP ${get.status}, POST: HTTP ${post.status} ${headerValue(post.headers, "content-type") ?? ""})`.trim(),
    { status: post.status },
  );
}

function policyId(p: Element): string | undefined {
  return attr(p, "Id");
}

/** A policy referenced from an element by wsp:PolicyReference URI="#id", or an inline wsp:Policy. */
function policiesOf(defs: Element, holder: Element | undefined): Element[] {
  if (!holder) return [];
  const out = children(holder, "Policy", WSP);
  for (const ref of children(holder, "PolicyReference", WSP)) {
    const uri = attr(ref, "URI") ?? "";
    const id = uri.startsWith("#") ? uri.slice(1) : uri;
    const hit = descendants(defs, "Policy", WSP).find((p) => policyId(p) === id);
    if (hit) out.push(hit);
  }
  return out;
}

function localPart(qname: string): string {
  return qname.slice(qname.indexOf(":") + 1);
}

interface WsdlPort {
  name: string;
  address?: string;
  binding?: Element;
  element: Element;
}

function wsdlPorts(defs: Element): WsdlPort[] {
  const bindings = children(defs, "binding", NS.wsdl);
  return descendants(defs, "port", NS.wsdl).map((port) => {
    const address = children(port, "address", SOAP_ADDRESS)
      .map((a) => attr(a, "location"))
      .find(Boolean);
    const bindingName = localPart(attr(port, "binding") ?? "");
    const binding = bindings.find((b) => attr(b, "name") === bindingName);
    return {
      name: attr(port, "name") ?? "",
      element: port,
      ...(address ? { address } : {}),
      ...(binding ? { binding } : {}),
    };
  });
}

function issuerIn(policy: Element): { address: string; endorsing: boolean } | undefined {
  for (const [container, endorsing] of [
    ["EndorsingSupportingTokens", true],
    ["SignedSupportingTokens", false],
  ] as const) {
    for (const tokens of descendants(policy, container, SP)) {
      for (const issued of descendants(tokens, "IssuedToken", SP)) {
        const issuer = child(issued, "Issuer", SP);
        const address = issuer ? text(child(issuer, "Address", WSA)) : "";
        if (address) return { address, endorsing };
      }
    }
  }
  return undefined;
}

/** Cert Prov WSDL → Web Ticket URL, proof endpoint and whether tickets are holder-of-key (§2.2). */
export function parseCertProvMetadata(doc: Document): CertProvMetadata {
  const defs = definitionsOf(doc);
  if (!defs)
    throw new ProvisioningError("malformed-response", "Certificate provisioning metadata has no WSDL");
  const port = wsdlPorts(defs).find((p) => p.name === CERT_PROV_PROOF_PORT);
  if (!port?.address)
    throw new ProvisioningError(
      "malformed-response",
      `Certificate provisioning metadata has no ${CERT_PROV_PROOF_PORT} port address`,
    );
  const wanted = CERT_PROV_PROOF_POLICY.toLowerCase();
  const candidates = [
    ...descendants(defs, "Policy", WSP).filter((p) => policyId(p)?.toLowerCase() === wanted),
    ...policiesOf(defs, port.binding),
    ...policiesOf(defs, port.element),
  ];
  for (const policy of candidates) {
    const issuer = issuerIn(policy);
    if (issuer)
      return { webTicketUrl: issuer.address, authUri: port.address, ticketMustBeSigned: issuer.endorsing };
  }
  throw new ProvisioningError(
    "malformed-response",
    "Certificate provisioning metadata names no ticket issuer for the proof endpoint",
  );
}

function assertsBasic(policies: Element[]): boolean {
  return policies.some((p) => descendants(p, "BasicAuthentication").length > 0);
}

/** Web Ticket WSDL → its ports, with whether each one's policy asserts HTTP Basic (§2.3). */
export function parseWebTicketMetadata(doc: Document): { ports: WebTicketPort[] } {
  const defs = definitionsOf(doc);
  if (!defs) throw new ProvisioningError("malformed-response", "Web ticket metadata has no WSDL");
  const ports = wsdlPorts(defs)
    .filter((p): p is WsdlPort & { address: string } => p.address !== undefined)
    .map((p) => ({
      name: p.name,
      address: p.address,
      basicAuth: assertsBasic([...policiesOf(defs, p.binding), ...policiesOf(defs, p.element)]),
    }));
  return { ports };
}

/** The PIN port: by its name, else the first port whose policy asserts Basic; never a guessed path. */
export function choosePinPort(ports: WebTicketPort[]): string | undefined {
  return (ports.find((p) => p.name === PIN_PORT) ?? ports.find((p) => p.basicAuth))?.address;
}

/** The certificate port, by its name only (its policy shape is unconfirmed); never a guessed path. */
export function chooseCertPort(ports: WebTicketPort[]): string | undefined {
  return ports.find((p) => p.name === CERT_PORT)?.address;
}
