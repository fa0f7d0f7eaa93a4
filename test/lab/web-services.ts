/**
 * The lab pool's web services over real HTTPS (webticket-certprov.md §9): metadata (mex), the Web
 * Ticket Service (web-ticket-service.ts) and Certificate Provisioning (cert-provisioning-service.ts).
 *
 * Routes (paths case-insensitive, query ignored except where noted):
 *   GET|POST /CertProv/CertProvisioningService.svc/mex   WSDL (GET raw; POST WS-Transfer Get → SOAP 1.2)
 *   GET|POST /WebTicket/WebTicketService.svc/mex         WSDL (same)
 *   GET  <service>.svc?wsdl                               raw WSDL (WCF convenience)
 *   POST /WebTicket/WebTicketService.svc                  WinNegotiate port: NTLM (401 Negotiate, NTLM)
 *   POST <pinPath>                                        PIN port (HTTP Basic), if pinAuthEnabled
 *   POST /WebTicket/WebTicketService.svc/Cert             certificate-authenticated RST
 *   POST /CertProv/CertProvisioningService.svc/WebTicket_Proof   GetAndPublishCert
 *   GET  /WebTicket/Issuer/?purpose=proof                 harmless 200, empty body (unexplained, §1.3)
 * `challenge: "first"` makes the web ticket ports insist on an unauthenticated request (and its
 * challenge) before credentials, as a real pool's IIS log shows phones doing (web-ticket-service.ts).
 * `webAuth` ("both" by default) says which of the PIN port and NTLM on the WinNegotiate port work:
 * "pin" keeps the WinNegotiate port a bare 401 (the old lab), "ntlm" drops the PIN port (as
 * pinAuthEnabled: false). NTLM is per connection: the request's socket is what it authenticates.
 * `requests` is the lab's IIS log: method, path, the Basic user name, the NTLM "DOMAIN\user" of an
 * authenticated request, or "-", status.
 * Every response carries X-MS-Server-Fqdn; mex responses set an affinity cookie, and request
 * cookies are accepted and ignored. HTTP keep-alive is on.
 */
import { randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { LabCa } from "./ca.ts";
import { CertProvisioningService } from "./cert-provisioning-service.ts";
import type { UserDirectory } from "./directory.ts";
import { child, NS, parseXml, SoapReject, sameEndpoint, soap12Fault, text, URI } from "./soap.ts";
import {
  type ChallengeMode,
  type LabResponse,
  type WebAuthMode,
  type WebServiceStats,
  WebTicketService,
} from "./web-ticket-service.ts";
import { certProvWsdl, mexResponse, webTicketWsdl } from "./wsdl.ts";

export interface WebServicesOptions {
  ca: LabCa;
  directory: UserDirectory;
  /** "pool.lab.test": the server certificate carries it plus IP SAN 127.0.0.1. */
  fqdn: string;
  /** Default "/WebTicket/WebTicketService.svc/Pin". */
  pinPath?: string;
  /** UsePinAuth; false → no PIN port in the web ticket WSDL (and its path answers 404). */
  pinAuthEnabled?: boolean;
  /** Default 5; the account locks after that many consecutive failures. */
  maxLogonAttempts?: number;
  /** Default 180. */
  certValidityDays?: number;
  /** Default 8 h. */
  ticketLifetimeS?: number;
  /** Default 300. */
  clockSkewS?: number;
  now?: () => number;
  strict?: { requireWsaHeaders?: boolean };
  /** Optional E.164 phone numbers per extension, accepted as PIN login names (with or without "+"). */
  phoneNumbers?: Record<string, string>;
  /** "on-demand" (default) or "first": see web-ticket-service.ts. */
  challenge?: ChallengeMode;
  /** "both" (default), "pin" (no NTLM) or "ntlm" (no PIN port): see web-ticket-service.ts. */
  webAuth?: WebAuthMode;
  /** NTLM ServerChallenge source (8 bytes; default random), e.g. a fixed one in a test. */
  ntlmChallenge?: () => Buffer;
  /** Listen port (default 0 = ephemeral) and host (default 127.0.0.1). */
  port?: number;
  host?: string;
}

export interface WebServices {
  baseUrl: string;
  certProvUrl: string;
  webTicketUrl: string;
  stats: WebServiceStats;
  /** The IIS-style request log (last 1000 requests). */
  requests: IisLogEntry[];
  setReachable(up: boolean): void;
  /** Administrator action (Unlock-CsClientPin): clears the failure counter for a login. */
  unlockPin(login: string): void;
  stop(): Promise<void>;
}

export interface IisLogEntry {
  method: string;
  path: string;
  /** The Basic user name or the NTLM "DOMAIN\\user", as IIS logs it; "-" for a request without one. */
  user: string;
  status: number;
}

function basicUser(auth: string | undefined): string {
  const m = typeof auth === "string" ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(auth) : null;
  if (!m) return "-";
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon < 0 ? "-" : decoded.slice(0, colon) || "-";
}

const CERTPROV_PATH = "/CertProv/CertProvisioningService.svc";
const WEBTICKET_PATH = "/WebTicket/WebTicketService.svc";
const MAX_BODY = 1 << 20;

/** NetBIOS names are the first DNS label, upper case, at most 15 characters. */
export function ntlmIdentity(fqdn: string, domain: string) {
  const nb = (name: string) => (name.split(".")[0] ?? name).toUpperCase().slice(0, 15);
  return { nbDomain: nb(domain), nbComputer: nb(fqdn), dnsDomain: domain, dnsComputer: fqdn };
}

export async function startWebServices(o: WebServicesOptions): Promise<WebServices> {
  const serverCert = await o.ca.issueServer(o.fqdn, [], ["127.0.0.1"]);
  const stats: WebServiceStats = {
    mexRequests: 0,
    pinFailures: 0,
    ticketsIssued: 0,
    certsIssued: 0,
    proofFailures: 0,
    challenges: 0,
    preemptiveIgnored: 0,
    ntlmChallenges: 0,
    ntlmFailures: 0,
  };
  const requests: IisLogEntry[] = [];
  const sockets = new Set<Socket>();
  let reachable = true;
  const server = https.createServer({ cert: serverCert.cert, key: serverCert.key, keepAlive: true });
  server.keepAliveTimeout = 30_000;
  server.on("connection", (s: Socket) => {
    if (!reachable) {
      s.destroy();
      return;
    }
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const baseUrl = `https://127.0.0.1:${port}`;
  const certProvUrl = `${baseUrl}${CERTPROV_PATH}`;
  const webTicketUrl = `${baseUrl}${WEBTICKET_PATH}`;
  const proofUrl = `${certProvUrl}/WebTicket_Proof`;
  const webAuth = o.webAuth ?? "both";
  const pinEnabled = (o.pinAuthEnabled ?? true) && webAuth !== "ntlm";
  const pinPath = o.pinPath ?? `${WEBTICKET_PATH}/Pin`;
  const certPath = `${WEBTICKET_PATH}/Cert`;
  const now = o.now ?? Date.now;
  const clockSkewS = o.clockSkewS ?? 300;

  const webTicket = new WebTicketService({
    fqdn: o.fqdn,
    ca: o.ca,
    directory: o.directory,
    signingCert: serverCert.cert,
    signingKey: serverCert.key,
    webTicketUrl,
    relyingParties: [proofUrl],
    maxLogonAttempts: o.maxLogonAttempts ?? 5,
    ticketLifetimeS: o.ticketLifetimeS ?? 8 * 3600,
    clockSkewS,
    now,
    phoneNumbers: o.phoneNumbers,
    challenge: o.challenge,
    webAuth,
    ntlmIdentity: ntlmIdentity(o.fqdn, o.directory.domain),
    ntlmChallenge: o.ntlmChallenge,
    stats,
  });
  const certProv = new CertProvisioningService({
    fqdn: o.fqdn,
    ca: o.ca,
    directory: o.directory,
    proofUrl,
    tickets: webTicket.tickets,
    certValidityDays: o.certValidityDays ?? 180,
    clockSkewS,
    now,
    requireWsaHeaders: o.strict?.requireWsaHeaders ?? true,
    stats,
  });
  const certProvDoc = () => certProvWsdl({ certProvUrl, webTicketUrl });
  const webTicketDoc = () =>
    webTicketWsdl({
      webTicketUrl,
      pinUrl: pinEnabled ? `${baseUrl}${pinPath}` : undefined,
      certUrl: `${baseUrl}${certPath}`,
    });

  const notFound = (): LabResponse => ({
    status: 404,
    headers: { "Content-Type": "text/html; charset=utf-8" },
    body: "<!DOCTYPE html><html><body><h1>404 - File or directory not found.</h1></body></html>",
  });
  const methodNotAllowed = (allow: string): LabResponse => ({
    status: 405,
    headers: { Allow: allow, "Content-Type": "text/plain; charset=utf-8" },
    body: "Method not allowed",
  });

  function mex(
    method: string,
    body: string,
    wsdl: string,
    targetNs: string,
    serviceUrl: string,
  ): LabResponse {
    stats.mexRequests++;
    const cookie = `LabPoolAffinity=${randomBytes(8).toString("hex")}; path=/; secure; HttpOnly`;
    if (method === "GET") {
      return {
        status: 200,
        headers: { "Content-Type": "text/xml; charset=utf-8", "Set-Cookie": cookie },
        body: `<?xml version="1.0" encoding="utf-8"?>${wsdl}`,
      };
    }
    const soap12 = "application/soap+xml; charset=utf-8";
    const fault = (sub: string, reason: string): LabResponse => ({
      status: 500,
      headers: { "Content-Type": soap12 },
      body: soap12Fault(sub, reason),
    });
    let relatesTo: string | undefined;
    try {
      const env = parseXml(body).documentElement!;
      if (env.namespaceURI !== NS.soap12 || env.localName !== "Envelope") {
        return fault("a:InvalidMessage", "mex POST must be a SOAP 1.2 envelope");
      }
      const header = child(env, NS.soap12, "Header");
      const action = header ? text(child(header, NS.wsa, "Action")) : "";
      if (action !== URI.transferGet) {
        return fault("a:ActionNotSupported", `The message with Action '${action}' cannot be processed.`);
      }
      const to = header ? text(child(header, NS.wsa, "To")) : "";
      if (to && !sameEndpoint(to, serviceUrl, o.fqdn) && !sameEndpoint(to, `${serviceUrl}/mex`, o.fqdn)) {
        return fault("a:DestinationUnreachable", `wsa:To ${to} is not this service`);
      }
      relatesTo = header ? text(child(header, NS.wsa, "MessageID")) || undefined : undefined;
    } catch (e) {
      if (e instanceof SoapReject) return fault("a:InvalidMessage", e.message);
      throw e;
    }
    return {
      status: 200,
      headers: { "Content-Type": soap12, "Set-Cookie": cookie },
      body: mexResponse(wsdl, targetNs, relatesTo),
    };
  }

  function route(method: string, rawUrl: string, req: IncomingMessage, body: string): LabResponse {
    const url = new URL(rawUrl, baseUrl);
    const p = url.pathname.toLowerCase().replace(/\/+$/, "");
    const lreq = { headers: req.headers, body, connection: req.socket };
    const isGetPost = method === "GET" || method === "POST";
    if (p === `${CERTPROV_PATH}/mex`.toLowerCase()) {
      return isGetPost
        ? mex(method, body, certProvDoc(), NS.tns, certProvUrl)
        : methodNotAllowed("GET, POST");
    }
    if (p === `${WEBTICKET_PATH}/mex`.toLowerCase()) {
      return isGetPost
        ? mex(method, body, webTicketDoc(), "http://tempuri.org/", webTicketUrl)
        : methodNotAllowed("GET, POST");
    }
    if (method === "GET" && url.searchParams.has("wsdl")) {
      if (p === CERTPROV_PATH.toLowerCase()) return mex("GET", "", certProvDoc(), NS.tns, certProvUrl);
      if (p === WEBTICKET_PATH.toLowerCase()) return mex("GET", "", webTicketDoc(), "", webTicketUrl);
    }
    if (p === "/webticket/issuer") {
      return method === "GET"
        ? { status: 200, headers: { "Content-Type": "text/plain; charset=utf-8" }, body: "" }
        : methodNotAllowed("GET");
    }
    if (p === `${CERTPROV_PATH}/WebTicket_Proof`.toLowerCase()) {
      return method === "POST" ? certProv.handleGetAndPublishCert(lreq) : methodNotAllowed("POST");
    }
    if (pinEnabled && p === pinPath.toLowerCase().replace(/\/+$/, "")) {
      return method === "POST" ? webTicket.handlePin(lreq) : methodNotAllowed("POST");
    }
    if (p === certPath.toLowerCase()) {
      return method === "POST" ? webTicket.handleCert(lreq) : methodNotAllowed("POST");
    }
    if (p === WEBTICKET_PATH.toLowerCase()) {
      return method === "POST" ? webTicket.handleNegotiate(lreq) : methodNotAllowed("POST");
    }
    return notFound();
  }

  function send(res: ServerResponse, r: LabResponse): void {
    res.statusCode = r.status;
    res.setHeader("X-MS-Server-Fqdn", o.fqdn);
    res.setHeader("Cache-Control", "private");
    res.setHeader("X-Content-Type-Options", "nosniff");
    for (const [k, v] of Object.entries(r.headers)) res.setHeader(k, v);
    const buf = Buffer.from(r.body, "utf8");
    res.setHeader("Content-Length", buf.length);
    res.end(buf);
  }

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) tooBig = true;
      else chunks.push(c);
    });
    req.on("end", () => {
      if (tooBig) {
        send(res, { status: 413, headers: { "Content-Type": "text/plain" }, body: "Request too large" });
        return;
      }
      let r: LabResponse;
      try {
        r = route(req.method ?? "GET", req.url ?? "/", req, Buffer.concat(chunks).toString("utf8"));
      } catch (e) {
        r = {
          status: 500,
          headers: { "Content-Type": "text/plain; charset=utf-8", "X-Lab-Reason": "internal error" },
          body: `lab internal error: ${(e as Error).message}`,
        };
      }
      requests.push({
        method: req.method ?? "GET",
        path: new URL(req.url ?? "/", baseUrl).pathname,
        user: r.logUser ?? basicUser(req.headers.authorization),
        status: r.status,
      });
      if (requests.length > 1000) requests.shift();
      send(res, r);
    });
  });

  return {
    baseUrl,
    certProvUrl,
    webTicketUrl,
    stats,
    requests,
    setReachable(up: boolean) {
      reachable = up;
      if (!up) for (const s of sockets) s.destroy();
    },
    unlockPin: (login) => webTicket.unlockPin(login),
    stop: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
