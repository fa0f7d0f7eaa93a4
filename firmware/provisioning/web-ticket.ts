/**
 * The web ticket (digest §3–§5): a WS-Trust RST to the Web Ticket Service's PIN port with
 * HTTP Basic (extension or phone number : PIN) and 32 bytes of client entropy; the RSTR gives a
 * SAML 1.1 holder-of-key assertion, its lifetime and the server entropy, from which P_SHA1
 * derives the proof key.
 *
 * The credentials go after a challenge, never before (issue 9 §4; what a real pool's IIS log
 * shows for Lync phones: `POST …/Pin - 401`, then `POST …/Pin <user> 200`):
 *
 *   1. the RST goes WITHOUT credentials (the probe);
 *   2. 200 → that is the ticket (a port that needs no credentials);
 *      401 → a challenge: its WWW-Authenticate must name Basic (or name nothing), else the PIN
 *      is not sent at all ("pin-auth-disabled": the port wants Negotiate/NTLM, which is not ours);
 *      404 → "pin-auth-disabled"; anything else is mapped as a failure, no PIN sent;
 *   3. the same RST goes once more, with `Authorization: Basic …`; whatever answers it is the
 *      verdict (a 401 now is a PIN verdict: X-Ms-diagnostics 28003 / 28004 and Warning).
 *      When no answer comes to it (timeout, connection lost), the PIN may or may not have
 *      counted: that is "sign-in-interrupted", which the phone does not retry by itself — the
 *      user presses `#` again — so one key press never puts the PIN on the wire twice.
 *
 * Why always probe rather than send Basic pre-emptively to a port we "know": a 401 to a request
 * that carried the PIN is then always a verdict and a 401 to one that did not is always a
 * challenge, so the client never has to guess, and never has to send the PIN a second time to a
 * pool that ignored pre-emptive credentials; and the PIN never goes to a port before the port
 * has said it wants Basic. It costs one round trip per sign-in (months apart). A pool that would
 * have accepted pre-emptive credentials answers the probe with its Basic challenge as well, so
 * both kinds of pool work. The PIN is sent at most once per call: this module never retries one.
 */
import { createHmac } from "node:crypto";
import type { Element } from "@xmldom/xmldom";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { describeFailure, type FailureReport, readFailure } from "./diagnostics.ts";
import { ProvisioningError } from "./errors.ts";
import { type HttpClient, type HttpResponse, headerValues } from "./http.ts";
import {
  attr,
  child,
  children,
  descendant,
  escapeAttr,
  escapeText,
  excC14n,
  NS,
  parseXml,
  sourceOf,
  text,
} from "./xml.ts";

export const RST_ISSUE_ACTION = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue";
const SAML11_TOKEN = "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1";
const REQUEST_TYPE_ISSUE_2005 = "http://schemas.xmlsoap.org/ws/2005/02/trust/Issue";
const SYMMETRIC_KEY = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/SymmetricKey";
const CK_PSHA1 = "http://docs.oasis-open.org/ws-sx/ws-trust/200512/CK/PSHA1";
const WSU = [NS.wsu] as const;
const ENTROPY_BYTES = 32;

export interface WebTicket {
  /** The saml:Assertion element exactly as the server sent it (or its exc-c14n form). */
  assertionXml: string;
  assertionId: string;
  /** The sip: URI the ticket was issued for (saml:NameIdentifier). */
  nameIdentifier?: string;
  clientEntropy: Buffer;
  serverEntropy: Buffer;
  proofKey: Buffer;
  created: string;
  expires: string;
  /** The Lifetime's Created and Expires elements, self-contained, for the wsse Timestamp. */
  lifetimeXml: string;
}

export interface PinTicketOptions {
  /** The PIN port's address, from the Web Ticket WSDL. */
  portUrl: string;
  /** The relying party: the Cert Prov proof endpoint (…/WebTicket_Proof). */
  appliesTo: string;
  /** Extension or phone number, as typed. */
  username: string;
  pin: string;
  /** The phone's persistent UUID (no braces): the RST Context. */
  deviceId: string;
  random: Random;
  logger?: Logger;
}

/** P_SHA1 of TLS 1.0 (RFC 2246 §5): HMAC-SHA1 keyed with `secret`, seeded with `seed`. */
export function pSha1(secret: Buffer, seed: Buffer, length: number): Buffer {
  const hmac = (data: Buffer) => createHmac("sha1", secret).update(data).digest();
  const out: Buffer[] = [];
  let total = 0;
  let a = seed;
  while (total < length) {
    a = hmac(a);
    const block = hmac(Buffer.concat([a, seed]));
    out.push(block);
    total += block.length;
  }
  return Buffer.concat(out).subarray(0, length);
}

/**
 * The RST of digest §4 (SOAP 1.1, no Claims: the credential identifies the user). No header for
 * the PIN port; the certificate port passes its self-contained wsse:Security as `header`.
 */
export function buildPinRst(o: {
  appliesTo: string;
  deviceId: string;
  clientEntropy: Buffer;
  header?: string;
}): string {
  return (
    '<?xml version="1.0" encoding="utf-8"?>' +
    `<soap:Envelope xmlns:soap="${NS.soap11}" xmlns:wst="${NS.wst}" xmlns:wsa="${NS.wsa}" xmlns:wsp="${NS.wsp}">` +
    (o.header === undefined ? "" : `<soap:Header>${o.header}</soap:Header>`) +
    "<soap:Body>" +
    `<wst:RequestSecurityToken Context="${escapeAttr(o.deviceId)}">` +
    `<wst:TokenType>${SAML11_TOKEN}</wst:TokenType>` +
    `<wst:RequestType>${REQUEST_TYPE_ISSUE_2005}</wst:RequestType>` +
    `<wsp:AppliesTo><wsa:EndpointReference><wsa:Address>${escapeText(o.appliesTo)}</wsa:Address></wsa:EndpointReference></wsp:AppliesTo>` +
    `<wst:Entropy><wst:BinarySecret>${o.clientEntropy.toString("base64")}</wst:BinarySecret></wst:Entropy>` +
    `<wst:KeyType>${SYMMETRIC_KEY}</wst:KeyType>` +
    "</wst:RequestSecurityToken>" +
    "</soap:Body>" +
    "</soap:Envelope>"
  );
}

function decodeBase64(value: string, what: string): Buffer {
  const compact = value.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0 || compact.length === 0)
    throw new ProvisioningError("malformed-response", `${what} is not base64`);
  return Buffer.from(compact, "base64");
}

/** Maps a failed RST exchange to a typed error (digest §3.1, §8). */
export function pinFailure(r: FailureReport): ProvisioningError {
  const id = r.diagnostic?.id;
  const warnText = r.warnings.map((w) => w.text).join(" ");
  const common = {
    status: r.status,
    ...(id !== undefined ? { diagnosticId: id } : {}),
    ...(r.reason ? { reason: r.reason } : {}),
  };
  const attemptsHint = [r.reason, warnText, r.diagnostic?.fields["attemptsremaining"]].find(
    (t) => t && /attempt|remaining|lock/i.test(t),
  );
  const attempts = attemptsHint ? { attemptsWarning: attemptsHint } : {};
  const lockSignals = `${warnText} ${r.reason ?? ""}`;
  if (id === 28004 || /lock/i.test(lockSignals))
    return new ProvisioningError("account-locked", `PIN sign-in locked: ${describeFailure(r)}`, {
      ...common,
      ...attempts,
    });
  if (id === 28003 || /InvalidPin/i.test(warnText))
    return new ProvisioningError("invalid-pin", `Extension or PIN not accepted: ${describeFailure(r)}`, {
      ...common,
      ...attempts,
    });
  if (r.status === 401 && id === undefined && r.warnings.length === 0)
    // Basic credentials were sent with the request; a bare 401 can only mean they were refused.
    return new ProvisioningError(
      "invalid-pin",
      `Extension or PIN not accepted: ${describeFailure(r)}`,
      common,
    );
  if ((r.status === 502 || r.status === 503 || r.status === 504) && id === undefined)
    return new ProvisioningError(
      "server-unreachable",
      `Web ticket service unavailable (HTTP ${r.status})`,
      common,
    );
  return new ProvisioningError("ticket-rejected", `Web ticket refused: ${describeFailure(r)}`, common);
}

/** Reads an RSTR(C) by local names (digest §5); the proof key is derived here. */
export function parseRstr(body: string, clientEntropy: Buffer): WebTicket {
  const doc = parseXml(body, "Web ticket response");
  const envelopeBody = descendant(doc, "Body", [NS.soap11, NS.soap12]);
  const root = envelopeBody ?? doc.documentElement!;
  if (descendant(root, "Fault", [NS.soap11, NS.soap12]))
    throw new ProvisioningError("ticket-rejected", "Web ticket service answered 200 with a SOAP fault");
  const rstr = descendant(root, "RequestSecurityTokenResponse") ?? root;
  const lifetime = descendant(rstr, "Lifetime");
  const createdEl = lifetime ? child(lifetime, "Created", WSU) : undefined;
  const expiresEl = lifetime ? child(lifetime, "Expires", WSU) : undefined;
  if (!lifetime || !expiresEl)
    throw new ProvisioningError("malformed-response", "Web ticket response has no Lifetime/Expires");
  const assertion = descendant(rstr, "Assertion", NS.saml);
  if (!assertion)
    throw new ProvisioningError("malformed-response", "Web ticket response has no SAML assertion");
  const assertionId = attr(assertion, "AssertionID");
  if (!assertionId) throw new ProvisioningError("malformed-response", "SAML assertion has no AssertionID");
  const entropy = children(rstr, "Entropy")[0] ?? descendant(rstr, "Entropy");
  const serverSecret = entropy ? descendant(entropy, "BinarySecret") : undefined;
  const proofToken = descendant(rstr, "RequestedProofToken");
  const computed = proofToken ? text(descendant(proofToken, "ComputedKey")) : "";
  const issuedKey = proofToken ? descendant(proofToken, "BinarySecret") : undefined;
  const keySizeBits = Number(text(descendant(rstr, "KeySize")));
  const keyBytes =
    Number.isInteger(keySizeBits) && keySizeBits >= 128 && keySizeBits <= 1024 && keySizeBits % 8 === 0
      ? keySizeBits / 8
      : 32;
  let serverEntropy: Buffer;
  let proofKey: Buffer;
  if (serverSecret) {
    if (computed && computed !== CK_PSHA1)
      throw new ProvisioningError("malformed-response", `Unsupported proof key algorithm ${computed}`);
    serverEntropy = decodeBase64(text(serverSecret), "Server entropy");
    proofKey = pSha1(clientEntropy, serverEntropy, keyBytes);
  } else if (issuedKey) {
    serverEntropy = Buffer.alloc(0);
    proofKey = decodeBase64(text(issuedKey), "Proof key");
  } else {
    throw new ProvisioningError("malformed-response", "Web ticket response has no server entropy");
  }
  const lifetimeChildren = [createdEl, expiresEl].filter((e): e is Element => e !== undefined);
  const nameIdentifier = text(descendant(assertion, "NameIdentifier", NS.saml));
  return {
    assertionXml: sourceOf(assertion, body),
    assertionId,
    ...(nameIdentifier ? { nameIdentifier } : {}),
    clientEntropy,
    serverEntropy,
    proofKey,
    created: text(createdEl),
    expires: text(expiresEl),
    lifetimeXml: lifetimeChildren.map(excC14n).join(""),
  };
}

/**
 * The authentication scheme names of every WWW-Authenticate value, lower-cased
 * (`Basic realm ="LYNC"`, `Negotiate, NTLM` → basic / negotiate, ntlm). Auth-params
 * (`realm =…`, `, charset=…`) and token68 values are skipped.
 */
export function challengeSchemes(headers: HttpResponse["headers"]): string[] {
  const out: string[] = [];
  for (const value of headerValues(headers, "www-authenticate")) {
    for (const m of value.matchAll(/(?:^|,)\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)(?=\s|,|$)(?!\s*=)/g))
      out.push(m[1]!.toLowerCase());
  }
  return out;
}

/** What the credentialed leg sends after a challenge. */
export interface CredentialedRequest {
  headers?: Record<string, string>;
  body: string;
}

/**
 * Probe, challenge, credentials once (see the header comment): `probeBody` goes without
 * credentials; `onChallenge` reads the probe's refusal and returns the credentialed request, or
 * throws when this port's credential cannot answer it; the answer to that second request is the
 * verdict, mapped by `failure`. Exactly one request carries the credential.
 */
export async function issueTokenAfterChallenge(
  http: HttpClient,
  o: {
    url: string;
    probeBody: string;
    clientEntropy: Buffer;
    onChallenge: (report: FailureReport, res: HttpResponse) => CredentialedRequest;
    failure: (report: FailureReport) => ProvisioningError;
    /** Maps a transport failure of the credentialed request (the verdict was lost). */
    onLostVerdict?: (err: unknown) => unknown;
    logger?: Logger;
  },
): Promise<WebTicket> {
  const post = (r: CredentialedRequest) =>
    http.request({
      method: "POST",
      url: o.url,
      headers: { ...SOAP_HEADERS, ...r.headers },
      body: r.body,
    });
  const probe = await post({ body: o.probeBody });
  if (probe.status === 200) {
    o.logger?.info("web ticket issued without credentials", { url: o.url });
    return parseRstr(probe.body, o.clientEntropy);
  }
  const challenge = readFailure(probe);
  o.logger?.debug("web ticket port challenged", {
    status: probe.status,
    schemes: challengeSchemes(probe.headers),
  });
  const credentialed = o.onChallenge(challenge, probe);
  let res: HttpResponse;
  try {
    res = await post(credentialed);
  } catch (err) {
    throw o.onLostVerdict ? o.onLostVerdict(err) : err;
  }
  return readTicketOrFail(res, o.clientEntropy, o.failure, o.logger);
}

/** One PIN sign-in attempt: probe, Basic challenge, then the PIN once. Never retried here. */
export async function requestWebTicketWithPin(http: HttpClient, o: PinTicketOptions): Promise<WebTicket> {
  const clientEntropy = Buffer.from(o.random.bytes(ENTROPY_BYTES));
  const body = buildPinRst({ appliesTo: o.appliesTo, deviceId: o.deviceId, clientEntropy });
  o.logger?.info("requesting web ticket", { url: o.portUrl, user: o.username });
  return issueTokenAfterChallenge(http, {
    url: o.portUrl,
    probeBody: body,
    clientEntropy,
    onChallenge: (challenge, res) => {
      if (challenge.status === 404)
        throw new ProvisioningError("pin-auth-disabled", "The PIN port does not exist on this server", {
          status: 404,
        });
      if (challenge.status !== 401) throw pinFailure(challenge);
      const schemes = challengeSchemes(res.headers);
      if (schemes.length > 0 && !schemes.includes("basic"))
        throw new ProvisioningError(
          "pin-auth-disabled",
          `The PIN port asks for ${schemes.join(", ")}, not Basic: PIN not sent`,
          { status: 401 },
        );
      const credentials = Buffer.from(`${o.username}:${o.pin}`, "utf8").toString("base64");
      return { headers: { Authorization: `Basic ${credentials}` }, body };
    },
    failure: pinFailure,
    onLostVerdict: (err) =>
      err instanceof ProvisioningError && (err.code === "timeout" || err.code === "server-unreachable")
        ? new ProvisioningError(
            "sign-in-interrupted",
            `The PIN was sent but no answer came back (${err.message}); not sent again`,
            { cause: err },
          )
        : err,
    ...(o.logger ? { logger: o.logger } : {}),
  });
}

const SOAP_HEADERS = {
  "Content-Type": "text/xml; charset=utf-8",
  SOAPAction: `"${RST_ISSUE_ACTION}"`,
} as const;

function readTicketOrFail(
  res: HttpResponse,
  clientEntropy: Buffer,
  failure: (report: FailureReport) => ProvisioningError,
  logger: Logger | undefined,
): WebTicket {
  if (res.status !== 200) {
    const err = failure(readFailure(res));
    logger?.warn("web ticket refused", {
      status: res.status,
      code: err.code,
      diagnosticId: err.diagnosticId,
    });
    throw err;
  }
  const ticket = parseRstr(res.body, clientEntropy);
  logger?.info("web ticket issued", { user: ticket.nameIdentifier, expires: ticket.expires });
  return ticket;
}

/**
 * POSTs an RST (IssueToken) to a web ticket port once and parses the RSTR; any other answer is
 * mapped to a typed error by `failure`. For a request whose credential needs no challenge.
 */
export async function issueToken(
  http: HttpClient,
  o: {
    url: string;
    headers?: Record<string, string>;
    body: string;
    clientEntropy: Buffer;
    failure: (report: FailureReport) => ProvisioningError;
    logger?: Logger;
  },
): Promise<WebTicket> {
  const res = await http.request({
    method: "POST",
    url: o.url,
    headers: { ...SOAP_HEADERS, ...o.headers },
    body: o.body,
  });
  return readTicketOrFail(res, o.clientEntropy, o.failure, o.logger);
}
