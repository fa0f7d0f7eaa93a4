/**
 * The XML toolbox of the provisioning client: a strict namespace-aware parser (@xmldom/xmldom),
 * element lookup by namespace + local name, exclusive canonicalization (xml-crypto) and the two
 * escaping functions every request builder uses. Nothing here parses XML by pattern matching.
 */
import { DOMParser, type Document, type Element, type Node } from "@xmldom/xmldom";
import { ExclusiveCanonicalization } from "xml-crypto/lib/exclusive-canonicalization.js";
import { ProvisioningError } from "./errors.ts";

export const NS = {
  soap11: "http://schemas.xmlsoap.org/soap/envelope/",
  soap12: "http://www.w3.org/2003/05/soap-envelope",
  wsdl: "http://schemas.xmlsoap.org/wsdl/",
  wsdlSoap11: "http://schemas.xmlsoap.org/wsdl/soap/",
  wsdlSoap12: "http://schemas.xmlsoap.org/wsdl/soap12/",
  wst: "http://docs.oasis-open.org/ws-sx/ws-trust/200512",
  wstCertProv: "http://docs.oasis-open.org/ws-sx/ws-trust/200512/",
  tns: "http://schemas.microsoft.com/OCS/AuthWebServices/",
  wstep: "http://schemas.microsoft.com/windows/pki/2009/01/enrollment",
  auth: "http://schemas.xmlsoap.org/ws/2006/12/authorization",
  wsse: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
  wsu: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
  wsp: "http://schemas.xmlsoap.org/ws/2004/09/policy",
  wsp15: "http://www.w3.org/ns/ws-policy",
  wsa: "http://www.w3.org/2005/08/addressing",
  wsa2004: "http://schemas.xmlsoap.org/ws/2004/08/addressing",
  saml: "urn:oasis:names:tc:SAML:1.0:assertion",
  af: "urn:component:Microsoft.Rtc.WebAuthentication.2010",
  ds: "http://www.w3.org/2000/09/xmldsig#",
  sp: "http://docs.oasis-open.org/ws-sx/ws-securitypolicy/200702",
  sp2005: "http://schemas.xmlsoap.org/ws/2005/07/securitypolicy",
  wsx: "http://schemas.xmlsoap.org/ws/2004/09/mex",
  httpPolicy: "http://schemas.microsoft.com/ws/06/2004/policy/http",
} as const;

/** Parses a whole XML document; anything not well-formed is a malformed-response. */
export function parseXml(text: string, what: string): Document {
  let doc: Document;
  try {
    doc = new DOMParser({
      onError: (level, message) => {
        if (level !== "warning") throw new Error(message);
      },
    }).parseFromString(text, "text/xml");
  } catch (err) {
    throw new ProvisioningError("malformed-response", `${what} is not well-formed XML`, { cause: err });
  }
  if (!doc.documentElement) throw new ProvisioningError("malformed-response", `${what} has no root element`);
  return doc;
}

/** Like parseXml, but answers undefined instead of throwing. */
export function tryParseXml(text: string): Document | undefined {
  try {
    return parseXml(text, "document");
  } catch {
    return undefined;
  }
}

function isElement(node: Node | null): node is Element {
  return node !== null && node.nodeType === 1;
}

function matches(el: Element, localName: string, ns?: string | readonly string[]): boolean {
  if (el.localName !== localName) return false;
  if (ns === undefined) return true;
  return typeof ns === "string" ? el.namespaceURI === ns : ns.includes(el.namespaceURI ?? "");
}

/** The element children of a node, optionally only those with this local name (and namespace). */
export function children(parent: Node, localName?: string, ns?: string | readonly string[]): Element[] {
  const out: Element[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling)
    if (isElement(n) && (localName === undefined || matches(n, localName, ns))) out.push(n);
  return out;
}

export function child(parent: Node, localName: string, ns?: string | readonly string[]): Element | undefined {
  return children(parent, localName, ns)[0];
}

/** Every descendant element with this local name (and namespace), in document order. */
export function descendants(root: Node, localName: string, ns?: string | readonly string[]): Element[] {
  const out: Element[] = [];
  const walk = (n: Node) => {
    for (let c = n.firstChild; c; c = c.nextSibling) {
      if (!isElement(c)) continue;
      if (matches(c, localName, ns)) out.push(c);
      walk(c);
    }
  };
  walk(root);
  return out;
}

export function descendant(
  root: Node,
  localName: string,
  ns?: string | readonly string[],
): Element | undefined {
  return descendants(root, localName, ns)[0];
}

/** Follows a path of local names (any namespace) from an element; the first match at each step. */
export function path(root: Element, ...localNames: string[]): Element | undefined {
  let at: Element | undefined = root;
  for (const name of localNames) {
    if (!at) return undefined;
    at = child(at, name);
  }
  return at;
}

/** An attribute by local name, whatever its prefix (WSDL and policy attributes vary). */
export function attr(el: Element, localName: string): string | undefined {
  const attrs = el.attributes;
  for (let i = 0; i < attrs.length; i++) {
    const a = attrs.item(i);
    if (a && (a.localName ?? a.name) === localName && a.prefix !== "xmlns" && a.name !== "xmlns")
      return a.value;
  }
  return undefined;
}

export function text(el: Element | undefined): string {
  return (el?.textContent ?? "").trim();
}

const c14n = new ExclusiveCanonicalization();

/** Exclusive XML canonicalization (without comments) of one element, in its document context. */
export function excC14n(el: Element): string {
  return c14n.process(el as unknown as globalThis.Element, {});
}

/**
 * The exact source text of an element, recovered through the parser's locator (the parser
 * records where each node starts; the element ends where the next node in document order
 * begins, less the end tags of the ancestors it closes). The result is accepted only if it
 * re-parses on its own to the same canonical form; otherwise the element's exclusive-c14n
 * form (self-contained, signature-preserving) is returned.
 */
export function sourceOf(el: Element, source: string): string {
  const canonical = excC14n(el);
  const normalized = source.replace(/\r\n?/g, "\n"); // XML 1.0 §2.11 line-end handling, as the parser sees it
  const lineStarts = [0];
  for (let i = 0; i < normalized.length; i++) if (normalized[i] === "\n") lineStarts.push(i + 1);
  const offsetOf = (n: Node): number | undefined => {
    const line = n.lineNumber;
    const column = n.columnNumber;
    if (!line || !column) return undefined;
    const start = lineStarts[line - 1];
    return start === undefined ? undefined : start + column - 1;
  };
  const start = offsetOf(el);
  if (start === undefined) return canonical;
  let end: number | undefined;
  const closing: string[] = [];
  for (let n: Node | null = el; n && n.nodeType !== 9; n = n.parentNode) {
    if (n !== el && isElement(n)) closing.push(n.tagName);
    if (n.nextSibling) {
      end = offsetOf(n.nextSibling);
      break;
    }
  }
  if (end === undefined) end = normalized.length;
  let slice = normalized.slice(start, end).trimEnd();
  for (const name of closing) {
    const tail = `</${name}`;
    const idx = slice.lastIndexOf(tail);
    if (idx < 0) return canonical;
    slice = slice.slice(0, idx).trimEnd();
  }
  const reparsed = tryParseXml(slice);
  if (!reparsed?.documentElement || excC14n(reparsed.documentElement) !== canonical) return canonical;
  return slice;
}

export function escapeText(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

export function escapeAttr(s: string): string {
  return escapeText(s)
    .replace(/"/g, "&quot;")
    .replace(/\r/g, "&#xD;")
    .replace(/\n/g, "&#xA;")
    .replace(/\t/g, "&#x9;");
}

/** Formats 16 random bytes as an RFC 4122 version-4 UUID (lower case, no braces). */
export function uuidFrom(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.subarray(0, 16));
  b[6] = ((b[6] ?? 0) & 0x0f) | 0x40;
  b[8] = ((b[8] ?? 0) & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
