/**
 * The lab pool's Web Ticket Service (webticket-certprov.md §3–§5, §9.3–§9.4): WS-Trust RST in,
 * RSTR(C) with a signed SAML 1.1 holder-of-key assertion out.
 *
 * Ports (see wsdl.ts):
 * - WebTicketServiceWinNegotiate (base URL): Windows credentials, NTLMv2 only (ntlm.ts), verified
 *   against the password of a lab user (directory.ts). As IIS does it:
 *   - a request without Authorization → 401 with two header lines, `WWW-Authenticate: Negotiate`
 *     then `WWW-Authenticate: NTLM`;
 *   - `Authorization: NTLM <NEGOTIATE_MESSAGE>` → 401 `WWW-Authenticate: NTLM <CHALLENGE_MESSAGE>`
 *     (under "Negotiate" when the client wrote "Negotiate" with a raw NTLMSSP token; SPNEGO and
 *     Kerberos are not supported and get the plain 401);
 *   - `Authorization: NTLM <AUTHENTICATE_MESSAGE>` on the SAME connection → the RSTR (200) when it
 *     verifies, else the plain 401 again (wrong password, unknown user, NTLMv1, LM only, a stale
 *     blob, a bad MIC, or no CHALLENGE on this connection). X-Lab-Reason says which; no secret.
 *   NTLM authenticates the connection: later requests on it without Authorization are that user's
 *   (IIS's default authPersistSingleRequest=false); a new NEGOTIATE_MESSAGE starts over. Account
 *   names: the extension ("4711", "4711@lab.test"), domain "" (UPN), the NetBIOS domain ("LAB") or
 *   the DNS domain. `webAuth: "pin"` gives the old lab behaviour: the same 401 to everything, no
 *   CHALLENGE_MESSAGE ever, nothing verified. The challenge mode ("first") does not apply here.
 * - WebTicketServicePin (configurable path): HTTP Basic, user = extension or phone number (with or
 *   without "+"), password = PIN. Failures counted per login name; lock after maxLogonAttempts.
 * - WebTicketServiceCert (`/Cert`): WS-Security X.509 token, see below.
 *
 * Challenge modes (`challenge`):
 * - "on-demand" (default): credentials are accepted on the first request; a request without them
 *   is answered with the challenge (PIN port: 401 Basic; /Cert: 500 28020 "no valid token").
 * - "first": the order a real phone follows in a real pool's IIS log is enforced. Each sign-in
 *   (keyed by the RST's Context, the device id) must begin with a request WITHOUT credentials,
 *   answered by the challenge (PIN port: 401 `WWW-Authenticate: Basic realm ="LYNC"`; /Cert: 401
 *   with X-Ms-diagnostics 28020 and no WWW-Authenticate, since its credential is in the message).
 *   Credentials sent before that challenge are ignored, not counted as a PIN failure, and
 *   answered with the challenge again. After the challenge the next credentialed request from
 *   that device gets the verdict (within 5 minutes); the one after needs a new challenge.
 *   That the /Cert port answers a missing token with a 401 is our choice (UNCONFIRMED).
 *
 * RSTR(C) shape we emit (SYNTHETIC: no capture of a real one exists, §5):
 * ```
 * <s:Envelope xmlns:s="…soap/envelope/"><s:Body>
 *  <RequestSecurityTokenResponseCollection xmlns="http://docs.oasis-open.org/ws-sx/ws-trust/200512">
 *   <RequestSecurityTokenResponse>
 *    <TokenType>…SAMLV1.1</TokenType>
 *    <RequestedSecurityToken><saml:Assertion AssertionID="SamlSecurityToken-<guid>" Issuer="<webTicketUrl>" …>…</saml:Assertion></RequestedSecurityToken>
 *    <RequestedProofToken><ComputedKey>…/CK/PSHA1</ComputedKey></RequestedProofToken>
 *    <Entropy><BinarySecret Type="…/Nonce">base64(32 bytes)</BinarySecret></Entropy>
 *    <Lifetime><Created xmlns="…utility…">…Z</Created><Expires xmlns="…utility…">…Z</Expires></Lifetime>
 *    <KeySize>256</KeySize>
 *    <wsp:AppliesTo xmlns:wsp="…"><EndpointReference xmlns="…addressing"><Address>…</Address></EndpointReference></wsp:AppliesTo>
 *   </RequestSecurityTokenResponse>
 *  </RequestSecurityTokenResponseCollection></s:Body></s:Envelope>
 * ```
 * The assertion carries Conditions (NotBefore/NotOnOrAfter = the Lifetime, Audience = AppliesTo),
 * an AuthenticationStatement whose Subject has NameIdentifier Format=".../claims/uri" = sip URI and
 * a holder-of-key SubjectConfirmation, and an enveloped RSA-SHA256 ds:Signature by the pool key.
 * Proof key = P_SHA1(secret = client entropy, seed = server entropy)[0..32].
 *
 * Certificate-authenticated RST at `/Cert` (UNCONFIRMED for real pools, §3.3; our design per the
 * WSS X.509 Token Profile 1.0). Same RST body as the PIN port; SOAP 1.1 header:
 * ```
 * <soap:Header><wsse:Security>
 *   <wsu:Timestamp wsu:Id="timestamp"><wsu:Created>…Z</wsu:Created><wsu:Expires>…Z</wsu:Expires></wsu:Timestamp>
 *   <wsse:BinarySecurityToken wsu:Id="X509Token" ValueType="…x509-token-profile-1.0#X509v3"
 *       EncodingType="…#Base64Binary">base64 DER of the lab-issued client certificate</wsse:BinarySecurityToken>
 *   <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>
 *     <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
 *     <ds:SignatureMethod Algorithm="…xmldsig#rsa-sha1 | …xmldsig-more#rsa-sha256"/>
 *     <ds:Reference URI="#timestamp"><ds:Transforms><ds:Transform Algorithm="…xml-exc-c14n#"/></ds:Transforms>
 *       <ds:DigestMethod Algorithm="…xmldsig#sha1 | …xmlenc#sha256"/><ds:DigestValue>…</ds:DigestValue></ds:Reference>
 *   </ds:SignedInfo><ds:SignatureValue>…</ds:SignatureValue>
 *   <ds:KeyInfo><wsse:SecurityTokenReference><wsse:Reference URI="#X509Token" ValueType="…#X509v3"/></wsse:SecurityTokenReference></ds:KeyInfo>
 *   </ds:Signature>
 * </wsse:Security></soap:Header>
 * ```
 * Checks: the Reference points at the Timestamp in the same Security header; DigestValue over
 * exc-c14n(Timestamp); SignatureValue over exc-c14n(SignedInfo) with the certificate's key; the
 * Timestamp is current (Created ≤ now + skew, Expires ≥ now − skew); the certificate was issued by
 * the lab CA, is within its validity, and is published (not revoked) on the record of the user its
 * SAN URI (or "sip:" + CN) names. The wsu:Id values are free; only the references must agree.
 */
import { createHash, createPublicKey, randomBytes, randomUUID, verify as rsaVerify } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { Element } from "@xmldom/xmldom";
import forge from "node-forge";
import type { LabCa } from "./ca.ts";
import type { LabUser, UserDirectory } from "./directory.ts";
import {
  challengeFor,
  type IssuedChallenge,
  NtlmFormatError,
  ntlmMessageType,
  parseAuthenticate,
  parseAuthorization,
  parseNegotiate,
  type ServerIdentity,
  verifyAuthenticate,
} from "./ntlm.ts";
import {
  byWsuId,
  child,
  childElements,
  DIAG_NO_VALID_TOKEN,
  decodeBase64,
  descendants,
  escapeXml,
  excC14n,
  failedAuthenticationFault,
  isoSeconds,
  NS,
  parseXml,
  path,
  pSha1,
  SoapReject,
  safeEqual,
  sameEndpoint,
  text,
  URI,
  xMsDiagnostics,
  xmlCrypto,
} from "./soap.ts";

export interface LabResponse {
  status: number;
  headers: Record<string, string | string[]>;
  body: string;
  /** The authenticated user as IIS logs it ("LAB\\4711"), when the request was authenticated by NTLM. */
  logUser?: string | undefined;
}

export interface LabRequest {
  headers: IncomingHttpHeaders;
  body: string;
  /** The TCP connection the request came on (NTLM authenticates connections, not requests). */
  connection?: object | undefined;
}

export type ChallengeMode = "on-demand" | "first";

/** Which web ticket ports authenticate: the PIN port, Windows (NTLM) on WinNegotiate, or both. */
export type WebAuthMode = "pin" | "ntlm" | "both";

export interface WebServiceStats {
  mexRequests: number;
  pinFailures: number;
  ticketsIssued: number;
  certsIssued: number;
  proofFailures: number;
  /** Challenges sent (401 / "no token" answers to requests without credentials). */
  challenges: number;
  /** Credentialed requests ignored because no challenge came first ("first" mode). */
  preemptiveIgnored: number;
  /** CHALLENGE_MESSAGEs sent on the WinNegotiate port. */
  ntlmChallenges: number;
  /** AUTHENTICATE_MESSAGEs refused. */
  ntlmFailures: number;
}

export interface IssuedTicket {
  assertionId: string;
  /** exc-c14n of the assertion as issued: what a presented assertion must match. */
  canonical: string;
  proofKey: Buffer;
  user: LabUser;
  createdMs: number;
  expiresMs: number;
  appliesTo: string;
}

export interface WebTicketServiceOptions {
  fqdn: string;
  ca: LabCa;
  directory: UserDirectory;
  /** Pool signing certificate and key (the web server's). */
  signingCert: string;
  signingKey: string;
  webTicketUrl: string;
  /** Relying-party addresses an RST may name in AppliesTo. */
  relyingParties: string[];
  maxLogonAttempts: number;
  ticketLifetimeS: number;
  clockSkewS: number;
  now: () => number;
  /** Optional E.164 numbers per extension, e.g. {"4711": "+14255550100"}. */
  phoneNumbers?: Record<string, string> | undefined;
  /** Default "on-demand"; see the file header. */
  challenge?: ChallengeMode | undefined;
  /** Default "both"; "pin" turns NTLM off (the WinNegotiate port only ever answers 401). */
  webAuth?: WebAuthMode | undefined;
  /** The names the CHALLENGE_MESSAGE gives (NetBIOS and DNS domain and computer). */
  ntlmIdentity: ServerIdentity;
  /** The 8-byte ServerChallenge source (default: random). */
  ntlmChallenge?: (() => Buffer) | undefined;
  stats: WebServiceStats;
}

/** Per connection: the CHALLENGE awaiting its AUTHENTICATE, or the user the connection is. */
interface NtlmConnection {
  pending?: { scheme: "NTLM" | "Negotiate"; negotiate: Buffer; challenge: IssuedChallenge; atMs: number };
  user?: LabUser;
  logUser?: string;
}

/** How long a challenge stays good for the device's next credentialed request ("first" mode). */
const CHALLENGE_TTL_MS = 5 * 60_000;

const SOAP11_CONTENT_TYPE = "text/xml; charset=utf-8";
const CLIENT_ENTROPY_BYTES = 32;

export function soapFault28020(fqdn: string, labReason: string): LabResponse {
  return {
    status: 500,
    headers: {
      "Content-Type": SOAP11_CONTENT_TYPE,
      "X-Ms-diagnostics": xMsDiagnostics(28020, fqdn, DIAG_NO_VALID_TOKEN, "wsse:FailedAuthentication"),
      // Lab-only: why exactly we refused (real pools give just the generic reason).
      "X-Lab-Reason": labReason.replace(/[^\x20-\x7e]/g, "?"),
    },
    body: failedAuthenticationFault(28020, DIAG_NO_VALID_TOKEN),
  };
}

function html(title: string): string {
  return `<!DOCTYPE html><html><head><title>${escapeXml(title)}</title></head><body><h1>${escapeXml(title)}</h1></body></html>`;
}

type AuthMethod = "pin" | "x509" | "windows";

/** SAML AuthenticationMethod per port. "windows" is AD FS's URI for Windows integrated (SYNTHETIC here). */
const AUTH_METHOD_URI: Record<AuthMethod, string> = {
  pin: "urn:oasis:names:tc:SAML:1.0:am:password",
  x509: "urn:ietf:rfc:2246" /* TLS client cert */,
  windows: "urn:federation:authentication:windows",
};

interface ParsedRst {
  appliesTo: string;
  clientEntropy: Buffer;
  claimUri?: string | undefined;
}

export class WebTicketService {
  readonly tickets = new Map<string, IssuedTicket>();
  private readonly failures = new Map<string, number>();
  /** "first" mode: device id (RST Context) → when it was last challenged. */
  private readonly challenged = new Map<string, number>();
  private readonly ntlmConnections = new WeakMap<object, NtlmConnection>();

  constructor(private readonly o: WebTicketServiceOptions) {}

  private get challengeFirst(): boolean {
    return this.o.challenge === "first";
  }

  /** The RST's Context attribute (the device id); "" when there is none. */
  private contextOf(req: LabRequest): string {
    return /<(?:[\w-]+:)?RequestSecurityToken\b[^>]*\sContext="([^"]*)"/.exec(req.body)?.[1] ?? "";
  }

  private noteChallenge(req: LabRequest): void {
    this.o.stats.challenges++;
    if (this.challengeFirst) this.challenged.set(this.contextOf(req), this.o.now());
  }

  /**
   * "first" mode: true when this device was challenged (recently) before sending credentials;
   * consumes the challenge. Always true in "on-demand" mode.
   */
  private takeChallenge(req: LabRequest): boolean {
    if (!this.challengeFirst) return true;
    const key = this.contextOf(req);
    const at = this.challenged.get(key);
    this.challenged.delete(key);
    if (at !== undefined && this.o.now() - at <= CHALLENGE_TTL_MS) return true;
    this.o.stats.preemptiveIgnored++;
    return false;
  }

  /** WebTicketServiceWinNegotiate: NTLM over HTTP (see the file header). */
  handleNegotiate(req: LabRequest = { headers: {}, body: "" }): LabResponse {
    if (this.o.webAuth === "pin") return this.windowsChallenge();
    const conn = req.connection;
    const state = conn ? this.ntlmConnections.get(conn) : undefined;
    const auth = parseAuthorization(req.headers.authorization);
    if (!auth) {
      if (state?.user) return { ...this.issueFromRst(req, state.user, "windows"), logUser: state.logUser };
      this.o.stats.challenges++;
      return this.windowsChallenge();
    }
    if (!conn) return this.windowsChallenge("no connection to authenticate");
    const type = ntlmMessageType(auth.token);
    if (type === undefined) {
      return this.windowsChallenge(
        auth.scheme === "Negotiate"
          ? "SPNEGO/Kerberos is not supported by the lab: send a raw NTLMSSP token"
          : "not an NTLMSSP token",
      );
    }
    try {
      if (type === 1) {
        const negotiate = parseNegotiate(auth.token);
        const serverChallenge = this.o.ntlmChallenge?.() ?? randomBytes(8);
        const challenge = challengeFor(negotiate, this.o.ntlmIdentity, serverChallenge, this.o.now());
        this.ntlmConnections.set(conn, {
          pending: { scheme: auth.scheme, negotiate: negotiate.raw, challenge, atMs: this.o.now() },
        });
        this.o.stats.ntlmChallenges++;
        const r = this.windowsChallenge();
        r.headers["WWW-Authenticate"] = `${auth.scheme} ${challenge.message.toString("base64")}`;
        return r;
      }
      if (type !== 3) return this.windowsChallenge(`unexpected NTLM message type ${type}`);
      // The CHALLENGE is used once: whatever this AUTHENTICATE's verdict, the next try starts over.
      this.ntlmConnections.delete(conn);
      const pending = state?.pending;
      if (!pending || this.o.now() - pending.atMs > CHALLENGE_TTL_MS) {
        return this.ntlmRefused("AUTHENTICATE without a CHALLENGE on this connection");
      }
      const msg = parseAuthenticate(auth.token);
      const verdict = verifyAuthenticate(msg, {
        serverChallenge: pending.challenge.serverChallenge,
        passwordFor: (user, domain) => this.windowsAccount(user, domain)?.password,
        nowMs: this.o.now(),
        maxSkewMs: this.o.clockSkewS * 1000,
        sentTimestamp: pending.challenge.timestamp,
        negotiate: pending.negotiate,
        challenge: pending.challenge.message,
      });
      if (!verdict.ok) return this.ntlmRefused(`NTLM ${verdict.refusal}: ${verdict.reason}`);
      const user = this.windowsAccount(verdict.user, verdict.domain)!;
      const logUser = `${verdict.domain || this.o.ntlmIdentity.nbDomain}\\${verdict.user}`;
      this.ntlmConnections.set(conn, { user, logUser });
      return { ...this.issueFromRst(req, user, "windows"), logUser };
    } catch (e) {
      if (e instanceof NtlmFormatError) return this.ntlmRefused(`malformed NTLM message: ${e.message}`);
      throw e;
    }
  }

  /** The lab user a Windows logon names, if the domain is the lab's (or empty, for a UPN). */
  private windowsAccount(user: string, domain: string): LabUser | undefined {
    const d = domain.toLowerCase();
    const id = this.o.ntlmIdentity;
    if (d !== "" && d !== id.nbDomain.toLowerCase() && d !== id.dnsDomain.toLowerCase()) return undefined;
    const u = this.o.directory.byAccount(user);
    return u?.password !== undefined ? u : undefined;
  }

  private ntlmRefused(reason: string): LabResponse {
    this.o.stats.ntlmFailures++;
    return this.windowsChallenge(reason);
  }

  /**
   * IIS's 401 for Windows authentication: `WWW-Authenticate: Negotiate` and `WWW-Authenticate:
   * NTLM`, two header lines in that order.
   */
  private windowsChallenge(labReason?: string): LabResponse {
    return {
      status: 401,
      headers: {
        "WWW-Authenticate": ["Negotiate", "NTLM"],
        "Content-Type": "text/html; charset=utf-8",
        ...(labReason ? { "X-Lab-Reason": labReason.replace(/[^\x20-\x7e]/g, "?") } : {}),
      },
      body: html("401 - Unauthorized: Access is denied due to invalid credentials."),
    };
  }

  unlockPin(login: string): void {
    this.failures.delete(this.loginKey(login));
    const u = this.o.directory.byExtension(login);
    if (u) this.failures.delete(this.loginKey(u.extension));
  }

  handlePin(req: LabRequest): LabResponse {
    const auth = req.headers.authorization;
    const m = typeof auth === "string" ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(auth) : null;
    if (!m || !this.takeChallenge(req)) {
      this.noteChallenge(req);
      return this.basicChallenge();
    }
    const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) return this.basicChallenge();
    const login = decoded.slice(0, colon);
    const pin = decoded.slice(colon + 1);
    const user = this.findByLogin(login);
    const key = user ? this.loginKey(user.extension) : this.loginKey(login);
    const failures = this.failures.get(key) ?? 0;
    if (failures >= this.o.maxLogonAttempts) {
      this.o.stats.pinFailures++;
      return this.pinLocked();
    }
    if (!user || !safeEqual(Buffer.from(pin), Buffer.from(user.pin))) {
      this.o.stats.pinFailures++;
      const n = failures + 1;
      this.failures.set(key, n);
      // The attempt that reaches the limit still says "invalid"; the next one says "locked".
      return this.invalidPin();
    }
    this.failures.delete(key);
    return this.issueFromRst(req, user, "pin");
  }

  handleCert(req: LabRequest): LabResponse {
    let doc: ReturnType<typeof parseXml>;
    try {
      this.checkSoap11(req);
      doc = parseXml(req.body);
      const header = path(doc.documentElement!, [NS.soap11, "Header"]);
      const security = header && child(header, NS.wsse, "Security");
      if (!security || !this.takeChallenge(req)) {
        this.noteChallenge(req);
        if (this.challengeFirst) return this.tokenChallenge();
        throw new SoapReject("no wsse:Security header");
      }
      const user = this.verifyX509Security(security);
      return this.issueFromRst(req, user, "x509", doc);
    } catch (e) {
      if (e instanceof SoapReject) return soapFault28020(this.o.fqdn, e.message);
      throw e;
    }
  }

  private loginKey(login: string): string {
    return login.replace(/^\+/, "").toLowerCase();
  }

  private findByLogin(login: string): LabUser | undefined {
    const digits = login.replace(/^\+/, "");
    if (!/^[0-9]+$/.test(digits)) return undefined;
    const byExt = this.o.directory.byExtension(digits);
    if (byExt && !login.startsWith("+")) return byExt;
    for (const [ext, number] of Object.entries(this.o.phoneNumbers ?? {})) {
      if (number.replace(/^\+/, "") === digits) return this.o.directory.byExtension(ext);
    }
    return undefined;
  }

  private basicChallenge(): LabResponse {
    return {
      status: 401,
      // The odd space before "=" is what real pools send (§3.1).
      headers: { "WWW-Authenticate": 'Basic realm ="LYNC"', "Content-Type": "text/html; charset=utf-8" },
      body: html("401 - Unauthorized: Access is denied due to invalid credentials."),
    };
  }

  /** "first" mode, /Cert: a 401 asking for a token (no HTTP scheme: the credential is in the message). */
  private tokenChallenge(): LabResponse {
    return {
      status: 401,
      headers: {
        "X-Ms-diagnostics": xMsDiagnostics(
          28020,
          this.o.fqdn,
          DIAG_NO_VALID_TOKEN,
          "wsse:FailedAuthentication",
        ),
        "Content-Type": "text/html; charset=utf-8",
      },
      body: html("401 - Unauthorized: Access is denied due to invalid credentials."),
    };
  }

  private invalidPin(): LabResponse {
    const f = this.o.fqdn;
    const r = this.basicChallenge();
    r.headers["Warning"] = `120 ${f} "InvalidPin"`;
    r.headers["X-Ms-diagnostics"] = xMsDiagnostics(
      28003,
      f,
      "The pin is invalid.",
      "wsse:FailedAuthentication",
    );
    return r;
  }

  /** INVENTED shape (§3.1, §12.3): real pools' lockout id, reason and Warning token are unknown. */
  private pinLocked(): LabResponse {
    const f = this.o.fqdn;
    const r = this.basicChallenge();
    r.headers["Warning"] = `120 ${f} "PinLockedOut"`;
    r.headers["X-Ms-diagnostics"] = xMsDiagnostics(
      28004,
      f,
      "The PIN is locked out.",
      "wsse:FailedAuthentication",
    );
    return r;
  }

  private checkSoap11(req: LabRequest): void {
    const action = req.headers.soapaction;
    if (action !== `"${URI.rstIssueAction}"`)
      throw new SoapReject(`SOAPAction must be "${URI.rstIssueAction}"`);
    const ct = String(req.headers["content-type"] ?? "");
    if (!/^text\/xml\s*(;|$)/i.test(ct)) throw new SoapReject("Content-Type must be text/xml (SOAP 1.1)");
  }

  private issueFromRst(
    req: LabRequest,
    user: LabUser,
    method: AuthMethod,
    parsed?: ReturnType<typeof parseXml>,
  ): LabResponse {
    let rst: ParsedRst;
    try {
      if (!parsed) this.checkSoap11(req);
      rst = this.parseRst(parsed ?? parseXml(req.body));
    } catch (e) {
      if (e instanceof SoapReject) return soapFault28020(this.o.fqdn, e.message);
      throw e;
    }
    if (rst.claimUri !== undefined && rst.claimUri.toLowerCase() !== user.uri.toLowerCase()) {
      return soapFault28020(this.o.fqdn, `claimed ${rst.claimUri} is not the authenticated user`);
    }
    return this.issue(user, rst, method);
  }

  private parseRst(doc: ReturnType<typeof parseXml>): ParsedRst {
    const env = doc.documentElement!;
    if (env.namespaceURI !== NS.soap11 || env.localName !== "Envelope") {
      throw new SoapReject("not a SOAP 1.1 envelope");
    }
    const body = child(env, NS.soap11, "Body");
    if (!body) throw new SoapReject("no soap:Body");
    const rst = child(body, NS.wst, "RequestSecurityToken");
    if (!rst) {
      if (child(body, NS.wstSlash, "RequestSecurityToken")) {
        throw new SoapReject("RST must use wst 200512 WITHOUT trailing slash");
      }
      throw new SoapReject("no wst:RequestSecurityToken");
    }
    if (text(child(rst, NS.wst, "TokenType")) !== URI.samlTokenType) {
      throw new SoapReject("TokenType must be SAMLV1.1");
    }
    const rt = text(child(rst, NS.wst, "RequestType"));
    if (rt !== URI.requestTypeIssue2005 && rt !== URI.requestTypeIssue200512) {
      throw new SoapReject("RequestType must be Issue");
    }
    if (text(child(rst, NS.wst, "KeyType")) !== URI.symmetricKey) {
      throw new SoapReject("KeyType must be SymmetricKey");
    }
    const secret = path(rst, [NS.wst, "Entropy"], [NS.wst, "BinarySecret"]);
    const entropy = secret ? decodeBase64(text(secret)) : undefined;
    if (!entropy || entropy.length !== CLIENT_ENTROPY_BYTES) {
      throw new SoapReject("Entropy/BinarySecret must be 32 bytes of base64");
    }
    const address = path(rst, [NS.wsp, "AppliesTo"], [NS.wsa, "EndpointReference"], [NS.wsa, "Address"]);
    const appliesTo = text(address);
    if (!this.o.relyingParties.some((rp) => sameEndpoint(appliesTo, rp, this.o.fqdn))) {
      throw new SoapReject(`AppliesTo ${appliesTo || "(missing)"} is not a known relying party`);
    }
    let claimUri: string | undefined;
    const claims = child(rst, NS.wst, "Claims");
    if (claims) {
      if (claims.getAttribute("Dialect") !== URI.claimsDialect)
        throw new SoapReject("unknown Claims Dialect");
      for (const ct of childElements(claims, NS.auth, "ClaimType")) {
        if (ct.getAttribute("Uri") === URI.claimUri) claimUri = text(child(ct, NS.auth, "Value"));
      }
      if (claimUri === undefined) throw new SoapReject("Claims without a claims/uri ClaimType");
    }
    return { appliesTo, clientEntropy: entropy, claimUri };
  }

  private issue(user: LabUser, rst: ParsedRst, method: AuthMethod): LabResponse {
    const now = this.o.now();
    const createdMs = Math.floor(now / 1000) * 1000;
    const expiresMs = createdMs + this.o.ticketLifetimeS * 1000;
    const created = isoSeconds(createdMs);
    const expires = isoSeconds(expiresMs);
    const assertionId = `SamlSecurityToken-${randomUUID()}`;
    const serverEntropy = randomBytes(32);
    const proofKey = pSha1(rst.clientEntropy, serverEntropy, 32);
    const authMethod = AUTH_METHOD_URI[method];
    const unsigned =
      `<saml:Assertion AssertionID="${assertionId}" Issuer="${escapeXml(this.o.webTicketUrl)}" ` +
      `IssueInstant="${created}" MajorVersion="1" MinorVersion="1" xmlns:saml="${NS.saml}">` +
      `<saml:Conditions NotBefore="${created}" NotOnOrAfter="${expires}">` +
      `<saml:AudienceRestrictionCondition><saml:Audience>${escapeXml(rst.appliesTo)}</saml:Audience>` +
      `</saml:AudienceRestrictionCondition></saml:Conditions>` +
      `<saml:AuthenticationStatement AuthenticationMethod="${authMethod}" AuthenticationInstant="${created}">` +
      `<saml:Subject><saml:NameIdentifier Format="${URI.claimUri}">${escapeXml(user.uri)}</saml:NameIdentifier>` +
      `<saml:SubjectConfirmation><saml:ConfirmationMethod>urn:oasis:names:tc:SAML:1.0:cm:holder-of-key</saml:ConfirmationMethod>` +
      // The lab pool is issuer and relying party at once, so the proof key stays server-side;
      // a real ticket would carry it encrypted for the relying party here.
      `<KeyInfo xmlns="${NS.ds}"><KeyName>${assertionId}</KeyName></KeyInfo>` +
      `</saml:SubjectConfirmation></saml:Subject></saml:AuthenticationStatement>` +
      `</saml:Assertion>`;
    const sig = new xmlCrypto.SignedXml({
      privateKey: this.o.signingKey,
      publicCert: this.o.signingCert,
      signatureAlgorithm: URI.rsaSha256,
      canonicalizationAlgorithm: URI.excC14n,
      idAttribute: "AssertionID",
    });
    sig.addReference({
      xpath: "/*[local-name(.)='Assertion']",
      transforms: [URI.envelopedSignature, URI.excC14n],
      digestAlgorithm: URI.sha256,
    });
    sig.computeSignature(unsigned, { location: { reference: "/*", action: "append" } });
    const assertion = sig.getSignedXml();
    const assertionEl = parseXml(assertion).documentElement!;
    this.tickets.set(assertionId, {
      assertionId,
      canonical: excC14n(assertionEl),
      proofKey,
      user,
      createdMs,
      expiresMs,
      appliesTo: rst.appliesTo,
    });
    this.o.stats.ticketsIssued++;
    const body =
      `<s:Envelope xmlns:s="${NS.soap11}"><s:Body>` +
      `<RequestSecurityTokenResponseCollection xmlns="${NS.wst}"><RequestSecurityTokenResponse>` +
      `<TokenType>${URI.samlTokenType}</TokenType>` +
      `<RequestedSecurityToken>${assertion}</RequestedSecurityToken>` +
      `<RequestedProofToken><ComputedKey>${URI.ckPsha1}</ComputedKey></RequestedProofToken>` +
      `<Entropy><BinarySecret Type="${URI.nonce}">${serverEntropy.toString("base64")}</BinarySecret></Entropy>` +
      `<Lifetime><Created xmlns="${NS.wsu}">${created}</Created><Expires xmlns="${NS.wsu}">${expires}</Expires></Lifetime>` +
      `<KeySize>256</KeySize>` +
      `<wsp:AppliesTo xmlns:wsp="${NS.wsp}"><EndpointReference xmlns="${NS.wsa}"><Address>${escapeXml(rst.appliesTo)}</Address></EndpointReference></wsp:AppliesTo>` +
      `</RequestSecurityTokenResponse></RequestSecurityTokenResponseCollection>` +
      `</s:Body></s:Envelope>`;
    return { status: 200, headers: { "Content-Type": SOAP11_CONTENT_TYPE }, body };
  }

  /** WSS X.509 token profile check for /Cert (layout in the file header). */
  private verifyX509Security(security: Element): LabUser {
    const skew = this.o.clockSkewS * 1000;
    const now = this.o.now();
    const signature = child(security, NS.ds, "Signature");
    if (!signature) throw new SoapReject("no ds:Signature");
    const signedInfo = child(signature, NS.ds, "SignedInfo");
    if (!signedInfo) throw new SoapReject("no ds:SignedInfo");
    const c14n = child(signedInfo, NS.ds, "CanonicalizationMethod")?.getAttribute("Algorithm");
    if (c14n !== URI.excC14n) throw new SoapReject("CanonicalizationMethod must be exc-c14n");
    const sigAlg = child(signedInfo, NS.ds, "SignatureMethod")?.getAttribute("Algorithm");
    const nodeAlg = sigAlg === URI.rsaSha1 ? "sha1" : sigAlg === URI.rsaSha256 ? "sha256" : undefined;
    if (!nodeAlg) throw new SoapReject("SignatureMethod must be rsa-sha1 or rsa-sha256");
    const refs = childElements(signedInfo, NS.ds, "Reference");
    const timestamp = child(security, NS.wsu, "Timestamp");
    if (!timestamp) throw new SoapReject("no wsu:Timestamp");
    const tsId = timestamp.getAttributeNS(NS.wsu, "Id");
    const ref = refs.find((r) => tsId && r.getAttribute("URI") === `#${tsId}`);
    if (!ref) throw new SoapReject("Signature does not reference the Timestamp");
    checkDigest(ref, timestamp, true);
    // Token and its reference.
    const stRef = path(
      signature,
      [NS.ds, "KeyInfo"],
      [NS.wsse, "SecurityTokenReference"],
      [NS.wsse, "Reference"],
    );
    const tokenUri = stRef?.getAttribute("URI") ?? "";
    const bst = tokenUri.startsWith("#") ? byWsuId(security, tokenUri.slice(1)) : undefined;
    if (!bst || bst.namespaceURI !== NS.wsse || bst.localName !== "BinarySecurityToken") {
      throw new SoapReject("KeyInfo must reference a wsse:BinarySecurityToken in the Security header");
    }
    if (bst.getAttribute("ValueType") !== URI.x509v3) throw new SoapReject("token ValueType must be X509v3");
    const der = decodeBase64(text(bst));
    if (!der) throw new SoapReject("token is not base64");
    let cert: forge.pki.Certificate;
    try {
      cert = forge.pki.certificateFromAsn1(forge.asn1.fromDer(der.toString("binary")));
    } catch {
      throw new SoapReject("token is not an X.509 certificate");
    }
    const sigValue = decodeBase64(text(child(signature, NS.ds, "SignatureValue")));
    const pem = forge.pki.certificateToPem(cert);
    const pub = createPublicKey(pem);
    if (!sigValue || !rsaVerify(nodeAlg, Buffer.from(excC14n(signedInfo)), pub, sigValue)) {
      throw new SoapReject("SignatureValue does not verify with the certificate key");
    }
    checkTimestamp(timestamp, now, skew);
    // The certificate: lab CA, in validity, published to a user and not revoked.
    let issuedByUs = false;
    try {
      issuedByUs = forge.pki.certificateFromPem(this.o.ca.cert).verify(cert);
    } catch {
      issuedByUs = false;
    }
    if (!issuedByUs) throw new SoapReject("certificate not issued by the pool CA");
    if (cert.validity.notBefore.getTime() > now + skew || cert.validity.notAfter.getTime() < now - skew) {
      throw new SoapReject("certificate outside its validity period");
    }
    const san = cert.getExtension("subjectAltName") as {
      altNames?: Array<{ type: number; value: string }>;
    } | null;
    const sipUri =
      san?.altNames?.find((a) => a.type === 6 && a.value.toLowerCase().startsWith("sip:"))?.value ??
      `sip:${String(cert.subject.getField("CN")?.value ?? "")}`;
    const user = this.o.directory.byUri(sipUri);
    if (!user) throw new SoapReject(`no user ${sipUri}`);
    if (this.o.directory.isRevoked(user.uri, pem)) throw new SoapReject("certificate revoked");
    if (!this.o.directory.isPublished(user.uri, pem)) throw new SoapReject("certificate not published");
    return user;
  }
}

/** Recomputes a ds:Reference's digest over exc-c14n(target); requires an exc-c14n transform only. */
export function checkDigest(ref: Element, target: Element, allowSha256: boolean): void {
  const transforms = descendants(ref, NS.ds, "Transform").map((t) => t.getAttribute("Algorithm"));
  if (transforms.length !== 1 || transforms[0] !== URI.excC14n) {
    throw new SoapReject("Reference must have exactly one exc-c14n Transform");
  }
  const alg = child(ref, NS.ds, "DigestMethod")?.getAttribute("Algorithm");
  const nodeAlg = alg === URI.sha1 ? "sha1" : allowSha256 && alg === URI.sha256 ? "sha256" : undefined;
  if (!nodeAlg) throw new SoapReject("unsupported DigestMethod");
  const expected = createHash(nodeAlg).update(excC14n(target)).digest();
  const got = decodeBase64(text(child(ref, NS.ds, "DigestValue")));
  if (!got || !safeEqual(got, expected)) throw new SoapReject("Timestamp DigestValue mismatch");
}

/** Timestamp Created/Expires (wsu namespace) against now ± skew. */
export function checkTimestamp(
  timestamp: Element,
  now: number,
  skewMs: number,
): { created: number; expires: number } {
  const created = Date.parse(text(child(timestamp, NS.wsu, "Created")));
  const expires = Date.parse(text(child(timestamp, NS.wsu, "Expires")));
  if (Number.isNaN(created) || Number.isNaN(expires))
    throw new SoapReject("Timestamp needs Created and Expires");
  if (expires < now - skewMs) throw new SoapReject("Timestamp expired");
  if (created > now + skewMs) throw new SoapReject("Timestamp Created in the future");
  if (expires <= created) throw new SoapReject("Timestamp Expires before Created");
  return { created, expires };
}
