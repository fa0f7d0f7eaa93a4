/**
 * The lab pool's web services (test/lab/web-services.ts) against a minimal in-test client built
 * from webticket-certprov.md alone (node:https + xmldom + node:crypto + forge for the CSR).
 */
import { createHash, createHmac, generateKeyPairSync, randomBytes, randomUUID, sign } from "node:crypto";
import * as https from "node:https";
import { DOMParser, type Element, XMLSerializer } from "@xmldom/xmldom";
import forge from "node-forge";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LabCa } from "../lab/ca.ts";
import { UserDirectory } from "../lab/directory.ts";
import { startWebServices, type WebServices } from "../lab/web-services.ts";

const NS = {
  soap11: "http://schemas.xmlsoap.org/soap/envelope/",
  soap12: "http://www.w3.org/2003/05/soap-envelope",
  wst: "http://docs.oasis-open.org/ws-sx/ws-trust/200512",
  wsse: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
  wsu: "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
  wsp: "http://schemas.xmlsoap.org/ws/2004/09/policy",
  wsa: "http://www.w3.org/2005/08/addressing",
  saml: "urn:oasis:names:tc:SAML:1.0:assertion",
  ds: "http://www.w3.org/2000/09/xmldsig#",
  wsdl: "http://schemas.xmlsoap.org/wsdl/",
  wsx: "http://schemas.xmlsoap.org/ws/2004/09/mex",
  af: "urn:component:Microsoft.Rtc.WebAuthentication.2010",
  http: "http://schemas.microsoft.com/ws/06/2004/policy/http",
};
const RST_ACTION = '"http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue"';
const GAPC_ACTION = "http://schemas.microsoft.com/OCS/AuthWebServices/GetAndPublishCert";

interface Resp {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

let ca: LabCa;
let directory: UserDirectory;
let web: WebServices;
let clock = Date.now();
const agent = new https.Agent({ keepAlive: true });

function request(
  url: string,
  opts: {
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    agent?: https.Agent | false;
  } = {},
): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: opts.method ?? "GET",
        headers: opts.headers,
        ca: ca.cert,
        agent: opts.agent ?? agent,
        servername: "pool.lab.test",
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

const parse = (s: string) => new DOMParser().parseFromString(s, "text/xml");
function all(root: Element | ReturnType<typeof parse>, ns: string, local: string): Element[] {
  const l = root.getElementsByTagNameNS(ns, local);
  return Array.from({ length: l.length }, (_, i) => l.item(i)!);
}
const first = (root: Element | ReturnType<typeof parse>, ns: string, local: string) =>
  all(root, ns, local)[0];
const kids = (el: Element, local: string) =>
  Array.from({ length: el.childNodes.length }, (_, i) => el.childNodes.item(i)).filter(
    (n): n is Element => n?.nodeType === 1 && (n as Element).localName === local,
  );

function pSha1(secret: Buffer, seed: Buffer, len: number): Buffer {
  let a = seed;
  const out: Buffer[] = [];
  while (Buffer.concat(out).length < len) {
    a = createHmac("sha1", secret).update(a).digest();
    out.push(
      createHmac("sha1", secret)
        .update(Buffer.concat([a, seed]))
        .digest(),
    );
  }
  return Buffer.concat(out).subarray(0, len);
}

function rst(o: {
  appliesTo: string;
  entropy?: string;
  claim?: string;
  wst?: string;
  tokenType?: string;
  keyType?: string;
  header?: string;
  envNs?: string;
}): string {
  const claims = o.claim
    ? `<wst:Claims Dialect="urn:component:Microsoft.Rtc.WebAuthentication.2010:authclaims"><auth:ClaimType Uri="http://schemas.xmlsoap.org/ws/2005/05/identity/claims/uri" Optional="false"><auth:Value>${o.claim}</auth:Value></auth:ClaimType></wst:Claims>`
    : "";
  return (
    `<?xml version="1.0"?><soap:Envelope xmlns:soap="${o.envNs ?? NS.soap11}" xmlns:wst="${o.wst ?? NS.wst}" ` +
    `xmlns:auth="http://schemas.xmlsoap.org/ws/2006/12/authorization" xmlns:wsa="${NS.wsa}" xmlns:wsp="${NS.wsp}" ` +
    `xmlns:wsse="${NS.wsse}" xmlns:wsu="${NS.wsu}" xmlns:ds="${NS.ds}">${o.header ?? ""}<soap:Body>` +
    `<wst:RequestSecurityToken Context="${randomUUID()}">` +
    `<wst:TokenType>${o.tokenType ?? "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1"}</wst:TokenType>` +
    `<wst:RequestType>http://schemas.xmlsoap.org/ws/2005/02/trust/Issue</wst:RequestType>` +
    `<wsp:AppliesTo><wsa:EndpointReference><wsa:Address>${o.appliesTo}</wsa:Address></wsa:EndpointReference></wsp:AppliesTo>` +
    claims +
    `<wst:Entropy><wst:BinarySecret>${o.entropy ?? randomBytes(32).toString("base64")}</wst:BinarySecret></wst:Entropy>` +
    `<wst:KeyType>${o.keyType ?? "http://docs.oasis-open.org/ws-sx/ws-trust/200512/SymmetricKey"}</wst:KeyType>` +
    `</wst:RequestSecurityToken></soap:Body></soap:Envelope>`
  );
}

const basic = (user: string, pin: string) => `Basic ${Buffer.from(`${user}:${pin}`).toString("base64")}`;

interface Endpoints {
  webTicketUrl: string;
  proofUrl: string;
  pinUrl?: string | undefined;
  certUrl?: string | undefined;
  pinPolicyIsBasic: boolean;
}

/** §2.2/§2.3 discovery from GET mex. */
async function discover(certProvUrl: string): Promise<Endpoints> {
  const cp = await request(`${certProvUrl}/mex`);
  expect(cp.status).toBe(200);
  const cpDoc = parse(cp.body);
  const root = cpDoc.documentElement!;
  expect(root.localName).toBe("definitions");
  const pol = kids(root, "Policy").find(
    (p) => p.getAttributeNS(NS.wsu, "Id") === "CertProvisioningServiceWebTicketProof_SHA1_policy",
  )!;
  let cur: Element | undefined = pol;
  for (const step of [
    "ExactlyOne",
    "All",
    "EndorsingSupportingTokens",
    "Policy",
    "IssuedToken",
    "Issuer",
    "Address",
  ]) {
    cur = cur && kids(cur, step)[0];
  }
  const webTicketUrl = cur!.textContent!.trim();
  const portLoc = (doc: ReturnType<typeof parse>, name: string) => {
    const port = all(doc, NS.wsdl, "port").find((p) => p.getAttribute("name") === name);
    return port && kids(port, "address")[0]?.getAttribute("location");
  };
  const proofUrl = portLoc(cpDoc, "CertProvisioningServiceWebTicketProof_SHA1")!;
  const wt = await request(`${webTicketUrl}/mex`);
  expect(wt.status).toBe(200);
  const wtDoc = parse(wt.body);
  const pinBinding = all(wtDoc, NS.wsdl, "binding").find(
    (b) => b.getAttribute("name") === "WebTicketServicePin",
  );
  const polRef = pinBinding && kids(pinBinding, "PolicyReference")[0]?.getAttribute("URI");
  const pinPolicy = all(wtDoc, NS.wsp, "Policy").find((p) => `#${p.getAttributeNS(NS.wsu, "Id")}` === polRef);
  return {
    webTicketUrl,
    proofUrl,
    pinUrl: portLoc(wtDoc, "WebTicketServicePin") ?? undefined,
    certUrl: portLoc(wtDoc, "WebTicketServiceCert") ?? undefined,
    pinPolicyIsBasic: !!pinPolicy && all(pinPolicy, NS.http, "BasicAuthentication").length === 1,
  };
}

interface Ticket {
  assertion: string;
  assertionId: string;
  proofKey: Buffer;
  created: string;
  expires: string;
  nameId: string;
}

function readTicket(body: string, clientEntropy: Buffer): Ticket {
  const doc = parse(body);
  const assertionEl = first(doc, NS.saml, "Assertion")!;
  const serverEntropy = Buffer.from(
    first(first(doc, NS.wst, "Entropy")!, NS.wst, "BinarySecret")!.textContent!,
    "base64",
  );
  const lifetime = first(doc, NS.wst, "Lifetime")!;
  return {
    assertion: new XMLSerializer().serializeToString(assertionEl),
    assertionId: assertionEl.getAttribute("AssertionID")!,
    proofKey: pSha1(clientEntropy, serverEntropy, 32),
    created: first(lifetime, NS.wsu, "Created")!.textContent!,
    expires: first(lifetime, NS.wsu, "Expires")!.textContent!,
    nameId: first(assertionEl, NS.saml, "NameIdentifier")!.textContent!,
  };
}

async function pinSignIn(ep: Endpoints, user: string, pin: string): Promise<Ticket> {
  const entropy = randomBytes(32);
  const r = await request(ep.pinUrl!, {
    method: "POST",
    headers: { "Content-Type": "text/xml", SOAPAction: RST_ACTION, Authorization: basic(user, pin) },
    body: rst({ appliesTo: ep.proofUrl, entropy: entropy.toString("base64") }),
  });
  expect(r.status, `${r.headers["x-lab-reason"]}`).toBe(200);
  return readTicket(r.body, entropy);
}

function csr(
  bits: number,
  cn: string,
  corrupt = false,
): { der: Buffer; publicKeyPem: string; privateKeyPem: string } {
  const kp = generateKeyPairSync("rsa", {
    modulusLength: bits,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  const req = forge.pki.createCertificationRequest();
  req.publicKey = forge.pki.publicKeyFromPem(kp.publicKey);
  req.setSubject([{ name: "commonName", value: cn }]);
  req.sign(forge.pki.privateKeyFromPem(kp.privateKey), forge.md.sha1.create());
  const der = Buffer.from(forge.asn1.toDer(forge.pki.certificationRequestToAsn1(req)).getBytes(), "binary");
  if (corrupt) der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff;
  return { der, publicKeyPem: kp.publicKey, privateKeyPem: kp.privateKey };
}

interface ProofOpts {
  entity?: string;
  deviceId?: string;
  innerWst?: string;
  key?: Buffer;
  noSignature?: boolean;
  tamperExpires?: string;
  timestamp?: { created: string; expires: string };
  omitWsa?: boolean;
}

/** §6 + §7: the GetAndPublishCert request as sipe builds it. */
function proofRequest(ep: Endpoints, t: Ticket, csrDer: Buffer, o: ProofOpts = {}): string {
  const ts = o.timestamp ?? { created: t.created, expires: t.expires };
  const tsXml = (exp: string) =>
    `<wsu:Timestamp xmlns:wsu="${NS.wsu}" wsu:Id="timestamp"><Created xmlns="${NS.wsu}">${ts.created}</Created><Expires xmlns="${NS.wsu}">${exp}</Expires></wsu:Timestamp>`;
  const digest = createHash("sha1").update(tsXml(ts.expires)).digest("base64");
  const signedInfo =
    `<SignedInfo xmlns="${NS.ds}"><CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></CanonicalizationMethod>` +
    `<SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1"></SignatureMethod>` +
    `<Reference URI="#timestamp"><Transforms><Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></Transform></Transforms>` +
    `<DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"></DigestMethod><DigestValue>${digest}</DigestValue></Reference></SignedInfo>`;
  const sigValue = createHmac("sha1", o.key ?? t.proofKey)
    .update(signedInfo)
    .digest("base64");
  const signature =
    `<Signature xmlns="${NS.ds}">${signedInfo}<SignatureValue>${sigValue}</SignatureValue><KeyInfo>` +
    `<wsse:SecurityTokenReference wsse:TokenType="http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1">` +
    `<wsse:KeyIdentifier ValueType="http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.0#SAMLAssertionID">${t.assertionId}</wsse:KeyIdentifier>` +
    `</wsse:SecurityTokenReference></KeyInfo></Signature>`;
  const wsa = o.omitWsa
    ? ""
    : `<wsa:To>${ep.proofUrl}</wsa:To><wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>` +
      `<wsa:MessageID>uuid:${randomUUID()}</wsa:MessageID><wsa:Action>${GAPC_ACTION}</wsa:Action>`;
  const b64 = csrDer.toString("base64").replace(/(.{76})/g, "$1\r\n");
  return (
    `<?xml version="1.0"?><soap:Envelope xmlns:soap="${NS.soap11}" xmlns:wsa="${NS.wsa}" xmlns:wsse="${NS.wsse}" ` +
    `xmlns:wsu="${NS.wsu}" xmlns:saml="${NS.saml}"><soap:Header>${wsa}<wsse:Security>` +
    tsXml(o.tamperExpires ?? ts.expires) +
    t.assertion +
    (o.noSignature ? "" : signature) +
    `</wsse:Security></soap:Header><soap:Body>` +
    `<GetAndPublishCert xmlns="http://schemas.microsoft.com/OCS/AuthWebServices/" xmlns:wst="${o.innerWst ?? `${NS.wst}/`}" ` +
    `xmlns:wstep="http://schemas.microsoft.com/windows/pki/2009/01/enrollment" DeviceId="${o.deviceId ?? `{${randomUUID()}}`}" ` +
    `Entity="${o.entity ?? t.nameId.replace(/^sip:/, "")}"><wst:RequestSecurityToken>` +
    `<wst:TokenType>http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3</wst:TokenType>` +
    `<wst:RequestType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/Issue</wst:RequestType>` +
    `<wsse:BinarySecurityToken ValueType="http://schemas.microsoft.com/OCS/AuthWebServices.xsd#PKCS10" ` +
    `EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#Base64Binary">\r\n${b64}\r\n</wsse:BinarySecurityToken>` +
    `<wstep:RequestID>${randomUUID()}</wstep:RequestID></wst:RequestSecurityToken></GetAndPublishCert></soap:Body></soap:Envelope>`
  );
}

function postProof(ep: Endpoints, body: string, action = `"${GAPC_ACTION}"`): Promise<Resp> {
  return request(ep.proofUrl, {
    method: "POST",
    headers: { "Content-Type": "text/xml", SOAPAction: action },
    body,
  });
}

function expect28020(r: Resp, reason?: RegExp): void {
  expect(r.status).toBe(500);
  expect(r.headers["x-ms-diagnostics"]).toMatch(
    /^28020;source="pool\.lab\.test";reason="No valid security token\.";faultcode="wsse:FailedAuthentication"$/,
  );
  const doc = parse(r.body);
  expect(first(doc, NS.soap11, "Fault")!.getElementsByTagName("faultcode")[0]!.textContent).toBe(
    "a:FailedAuthentication",
  );
  expect(first(doc, NS.af, "ErrorId")!.textContent).toBe("28020");
  if (reason) expect(String(r.headers["x-lab-reason"])).toMatch(reason);
}

let ep: Endpoints;
let goodCsr: ReturnType<typeof csr>;

beforeAll(async () => {
  ca = await LabCa.create();
  directory = new UserDirectory("lab.test");
  directory.add("4711", "1234");
  directory.add("4712", "5555");
  directory.add("4713", "7777");
  web = await startWebServices({
    ca,
    directory,
    fqdn: "pool.lab.test",
    pinPath: "/WebTicket/WebTicketService.svc/PinAuth_x",
    maxLogonAttempts: 3,
    now: () => clock,
    phoneNumbers: { "4711": "+14255550100" },
  });
  ep = await discover(web.certProvUrl);
  goodCsr = csr(2048, "4711@lab.test");
});

afterAll(async () => {
  agent.destroy();
  await web?.stop();
});

describe("metadata", () => {
  it("GET mex: Cert Prov policy names the web ticket service; PIN port found via mex with a Basic policy", () => {
    expect(ep.webTicketUrl).toBe(web.webTicketUrl);
    expect(ep.proofUrl).toBe(`${web.certProvUrl}/WebTicket_Proof`);
    expect(ep.pinUrl).toBe(`${web.baseUrl}/WebTicket/WebTicketService.svc/PinAuth_x`);
    expect(ep.certUrl).toBe(`${web.webTicketUrl}/Cert`);
    expect(ep.pinPolicyIsBasic).toBe(true);
    expect(web.stats.mexRequests).toBeGreaterThanOrEqual(2);
  });

  it("POST mex (WS-Transfer Get, SOAP 1.2) returns wsx:Metadata with the WSDL; a wrong action faults", async () => {
    const body = (action: string) =>
      `<s:Envelope xmlns:s="${NS.soap12}" xmlns:a="${NS.wsa}"><s:Header>` +
      `<a:Action s:mustUnderstand="1">${action}</a:Action><a:MessageID>urn:uuid:${randomUUID()}</a:MessageID>` +
      `<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>` +
      `<a:To s:mustUnderstand="1">${web.webTicketUrl}</a:To></s:Header><s:Body/></s:Envelope>`;
    const headers = { "Content-Type": "application/soap+xml; charset=utf-8" };
    const ok = await request(`${web.webTicketUrl}/mex`, {
      method: "POST",
      headers,
      body: body("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"),
    });
    expect(ok.status).toBe(200);
    expect(ok.headers["x-ms-server-fqdn"]).toBe("pool.lab.test");
    const doc = parse(ok.body);
    expect(doc.documentElement!.namespaceURI).toBe(NS.soap12);
    const section = first(doc, NS.wsx, "MetadataSection")!;
    expect(section.getAttribute("Dialect")).toBe("http://schemas.xmlsoap.org/wsdl/");
    const ports = all(section, NS.wsdl, "port").map((p) => p.getAttribute("name"));
    expect(ports).toEqual(["WebTicketServiceWinNegotiate", "WebTicketServicePin", "WebTicketServiceCert"]);
    const bad = await request(`${web.webTicketUrl}/mex`, {
      method: "POST",
      headers,
      body: body("urn:wrong"),
    });
    expect(bad.status).toBe(500);
  });

  it("UsePinAuth=false drops the PIN port", async () => {
    const ca2 = await LabCa.create();
    const w2 = await startWebServices({ ca: ca2, directory, fqdn: "pool.lab.test", pinAuthEnabled: false });
    try {
      const r = await new Promise<Resp>((resolve, reject) => {
        https
          .get(`${w2.webTicketUrl}/mex`, { ca: ca2.cert }, (res) => {
            let b = "";
            res.on("data", (c) => {
              b += c;
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: b }));
          })
          .on("error", reject);
      });
      const names = all(parse(r.body), NS.wsdl, "port").map((p) => p.getAttribute("name"));
      expect(names).not.toContain("WebTicketServicePin");
      expect(names).toContain("WebTicketServiceWinNegotiate");
    } finally {
      await w2.stop();
    }
  });

  it("base URL challenges Negotiate/NTLM; Issuer purpose=proof is a harmless 200", async () => {
    const r = await request(web.webTicketUrl, {
      method: "POST",
      headers: { "Content-Type": "text/xml", SOAPAction: RST_ACTION, Cookie: "a=b" },
      body: rst({ appliesTo: ep.proofUrl }),
    });
    expect(r.status).toBe(401);
    expect(r.headers["www-authenticate"]).toBe("Negotiate, NTLM");
    const i = await request(`${web.baseUrl}/WebTicket/Issuer/?purpose=proof`);
    expect(i.status).toBe(200);
  });
});

describe("PIN port", () => {
  const post = (auth: string | undefined, body = rst({ appliesTo: ep.proofUrl }), action = RST_ACTION) =>
    request(ep.pinUrl!, {
      method: "POST",
      headers: { "Content-Type": "text/xml", SOAPAction: action, ...(auth ? { Authorization: auth } : {}) },
      body,
    });

  it("no credentials → Basic challenge with the odd spacing", async () => {
    const r = await post(undefined);
    expect(r.status).toBe(401);
    expect(r.headers["www-authenticate"]).toBe('Basic realm ="LYNC"');
  });

  it("wrong PIN → 401 28003 InvalidPin; unknown user looks the same", async () => {
    for (const user of ["4711", "9999"]) {
      const r = await post(basic(user, "0000"));
      expect(r.status).toBe(401);
      expect(r.headers["www-authenticate"]).toBe('Basic realm ="LYNC"');
      expect(r.headers.warning).toBe('120 pool.lab.test "InvalidPin"');
      expect(r.headers["x-ms-diagnostics"]).toBe(
        '28003;source="pool.lab.test";reason="The pin is invalid.";faultcode="wsse:FailedAuthentication"',
      );
      expect(r.headers["content-type"]).toMatch(/^text\/html/);
    }
    // A success resets the counter (maxLogonAttempts = 3).
    await pinSignIn(ep, "4711", "1234");
  });

  it("locks after maxLogonAttempts failures, even for the right PIN, until unlocked", async () => {
    for (let i = 0; i < 3; i++)
      expect((await post(basic("4712", "1")).then((r) => r.headers.warning)) ?? "").toMatch(/InvalidPin/);
    const locked = await post(basic("4712", "5555"));
    expect(locked.status).toBe(401);
    expect(locked.headers.warning).toBe('120 pool.lab.test "PinLockedOut"');
    expect(locked.headers["x-ms-diagnostics"]).toMatch(
      /^28004;source="pool\.lab\.test";reason="The PIN is locked out\."/,
    );
    web.unlockPin("4712");
    await pinSignIn(ep, "4712", "5555");
  });

  it("phone number with or without + signs in; the ticket names the user's sip URI", async () => {
    const t1 = await pinSignIn(ep, "+14255550100", "1234");
    const t2 = await pinSignIn(ep, "14255550100", "1234");
    expect(t1.nameId).toBe("sip:4711@lab.test");
    expect(t2.assertionId).toMatch(/^SamlSecurityToken-[0-9a-f-]{36}$/);
  });

  it("RSTR shape: signed SAML 1.1 assertion (AssertionID then Issuer), PSHA1, KeySize 256, 8 h lifetime", async () => {
    const entropy = randomBytes(32);
    const r = await post(
      basic("4711", "1234"),
      rst({ appliesTo: ep.proofUrl, entropy: entropy.toString("base64") }),
    );
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("text/xml; charset=utf-8");
    const doc = parse(r.body);
    const a = first(doc, NS.saml, "Assertion")!;
    expect(a.attributes.item(0)!.name).toBe("AssertionID");
    expect(a.attributes.item(1)!.name).toBe("Issuer");
    expect(a.hasAttribute("Id")).toBe(false);
    expect(first(a, NS.ds, "Reference")!.getAttribute("URI")).toBe(`#${a.getAttribute("AssertionID")}`);
    expect(first(a, NS.ds, "SignatureMethod")!.getAttribute("Algorithm")).toMatch(/rsa-sha256$/);
    expect(first(doc, NS.wst, "ComputedKey")!.textContent).toBe(
      "http://docs.oasis-open.org/ws-sx/ws-trust/200512/CK/PSHA1",
    );
    expect(first(doc, NS.wst, "KeySize")!.textContent).toBe("256");
    const created = first(doc, NS.wsu, "Created")!;
    expect(created.prefix).toBeNull();
    const t = readTicket(r.body, entropy);
    expect(Date.parse(t.expires) - Date.parse(t.created)).toBe(8 * 3600_000);
    expect(first(doc, NS.wsa, "Address")!.textContent).toBe(ep.proofUrl);
  });

  it("RST validation failures → 500 28020", async () => {
    const good = basic("4711", "1234");
    const cases: Array<[string, Promise<Resp>, RegExp]> = [
      [
        "SOAPAction",
        post(good, undefined, "http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue"),
        /SOAPAction/,
      ],
      ["SOAP 1.2", post(good, rst({ appliesTo: ep.proofUrl, envNs: NS.soap12 })), /SOAP 1\.1/],
      ["wst slash", post(good, rst({ appliesTo: ep.proofUrl, wst: `${NS.wst}/` })), /WITHOUT trailing slash/],
      ["TokenType", post(good, rst({ appliesTo: ep.proofUrl, tokenType: "urn:x" })), /TokenType/],
      ["KeyType", post(good, rst({ appliesTo: ep.proofUrl, keyType: "urn:x" })), /KeyType/],
      [
        "entropy",
        post(good, rst({ appliesTo: ep.proofUrl, entropy: randomBytes(16).toString("base64") })),
        /32 bytes/,
      ],
      ["AppliesTo", post(good, rst({ appliesTo: "https://evil.example/x" })), /AppliesTo/],
      ["claim", post(good, rst({ appliesTo: ep.proofUrl, claim: "sip:4712@lab.test" })), /claimed/],
    ];
    for (const [name, p, reason] of cases) {
      const r = await p;
      expect(r.status, name).toBe(500);
      expect28020(r, reason);
    }
    // A matching claim is fine.
    const ok = await post(good, rst({ appliesTo: ep.proofUrl, claim: "sip:4711@lab.test" }));
    expect(ok.status).toBe(200);
  });
});

describe("GetAndPublishCert", () => {
  it("full flow: PIN ticket → signed proof → certificate for the CSR key, published, with a PKCS#7 chain", async () => {
    const t = await pinSignIn(ep, "4711", "1234");
    const before = web.stats.certsIssued;
    const r = await postProof(ep, proofRequest(ep, t, goodCsr.der));
    expect(r.status, String(r.headers["x-lab-reason"])).toBe(200);
    const doc = parse(r.body);
    const resp = first(
      doc,
      "http://schemas.microsoft.com/OCS/AuthWebServices/",
      "GetAndPublishCertResponse",
    )!;
    const rstr = kids(resp, "RequestSecurityTokenResponse")[0]!;
    const bst = kids(kids(rstr, "RequestedSecurityToken")[0]!, "BinarySecurityToken")[0]!;
    const der = Buffer.from(bst.textContent!, "base64");
    const cert = forge.pki.certificateFromAsn1(forge.asn1.fromDer(der.toString("binary")));
    expect(forge.pki.publicKeyToPem(cert.publicKey)).toBe(
      forge.pki.publicKeyToPem(forge.pki.publicKeyFromPem(goodCsr.publicKeyPem)),
    );
    expect(cert.subject.getField("CN").value).toBe("4711@lab.test");
    const days = (cert.validity.notAfter.getTime() - cert.validity.notBefore.getTime()) / 86_400_000;
    expect(days).toBe(180);
    expect(forge.pki.certificateFromPem(ca.cert).verify(cert)).toBe(true);
    const pem = forge.pki.certificateToPem(cert);
    expect(directory.isPublished("sip:4711@lab.test", pem)).toBe(true);
    expect(kids(rstr, "DispositionMessage")[0]!.textContent).toBe("Issued");
    const p7 = kids(rstr, "BinarySecurityToken")[0]!;
    expect(p7.getAttribute("ValueType")).toMatch(/#PKCS7$/);
    const msg = forge.pkcs7.messageFromAsn1(
      forge.asn1.fromDer(Buffer.from(p7.textContent!, "base64").toString("binary")),
    ) as forge.pkcs7.PkcsSignedData;
    expect(msg.certificates.length).toBe(2);
    expect(web.stats.certsIssued).toBe(before + 1);

    // The same ticket with a fresh Timestamp is accepted as well (§9.7 timestampMode).
    const fresh = {
      created: new Date(clock).toISOString(),
      expires: new Date(clock + 300_000).toISOString(),
    };
    const r2 = await postProof(ep, proofRequest(ep, t, goodCsr.der, { timestamp: fresh }));
    expect(r2.status, String(r2.headers["x-lab-reason"])).toBe(200);

    // Renewal via /Cert with the issued certificate (UNCONFIRMED layout, see web-ticket-service.ts).
    const certB64 = der.toString("base64");
    const tsXml = `<wsu:Timestamp xmlns:wsu="${NS.wsu}" wsu:Id="ts-1"><wsu:Created>${fresh.created}</wsu:Created><wsu:Expires>${fresh.expires}</wsu:Expires></wsu:Timestamp>`;
    const si =
      `<ds:SignedInfo xmlns:ds="${NS.ds}"><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></ds:CanonicalizationMethod>` +
      `<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"></ds:SignatureMethod>` +
      `<ds:Reference URI="#ts-1"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"></ds:Transform></ds:Transforms>` +
      `<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"></ds:DigestMethod><ds:DigestValue>${createHash("sha256").update(tsXml).digest("base64")}</ds:DigestValue></ds:Reference></ds:SignedInfo>`;
    const sv = sign("sha256", Buffer.from(si), goodCsr.privateKeyPem).toString("base64");
    const header =
      `<soap:Header><wsse:Security>${tsXml}` +
      `<wsse:BinarySecurityToken wsu:Id="X509Token" ValueType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3" EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd#Base64Binary">${certB64}</wsse:BinarySecurityToken>` +
      `<ds:Signature>${si}<ds:SignatureValue>${sv}</ds:SignatureValue><ds:KeyInfo><wsse:SecurityTokenReference>` +
      `<wsse:Reference URI="#X509Token" ValueType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"/>` +
      `</wsse:SecurityTokenReference></ds:KeyInfo></ds:Signature></wsse:Security></soap:Header>`;
    const postCert = () =>
      request(ep.certUrl!, {
        method: "POST",
        headers: { "Content-Type": "text/xml; charset=utf-8", SOAPAction: RST_ACTION },
        body: rst({ appliesTo: ep.proofUrl, header }),
      });
    const renewed = await postCert();
    expect(renewed.status, String(renewed.headers["x-lab-reason"])).toBe(200);
    expect(first(parse(renewed.body), NS.saml, "NameIdentifier")!.textContent).toBe("sip:4711@lab.test");

    // Revoked: /Cert refuses, but the phone recovers with its PIN.
    directory.revokeAll(directory.byExtension("4711")!);
    expect28020(await postCert(), /revoked/);
    const t3 = await pinSignIn(ep, "4711", "1234");
    const r3 = await postProof(ep, proofRequest(ep, t3, goodCsr.der));
    expect(r3.status).toBe(200);
  });

  it("rejects tampering and policy violations with 500 28020", async () => {
    const t = await pinSignIn(ep, "4711", "1234");
    const failuresBefore = web.stats.proofFailures;
    const small = csr(1024, "4711@lab.test");
    const badSig = csr(2048, "4711@lab.test", true);
    const cases: Array<[string, string, RegExp, string?]> = [
      [
        "tampered Timestamp",
        proofRequest(ep, t, goodCsr.der, { tamperExpires: "2099-01-01T00:00:00Z" }),
        /DigestValue/,
      ],
      ["wrong proof key", proofRequest(ep, t, goodCsr.der, { key: randomBytes(32) }), /SignatureValue/],
      ["missing signature", proofRequest(ep, t, goodCsr.der, { noSignature: true }), /no ds:Signature/],
      ["wrong Entity", proofRequest(ep, t, goodCsr.der, { entity: "4712@lab.test" }), /Entity/],
      ["sip: Entity", proofRequest(ep, t, goodCsr.der, { entity: "sip:4711@lab.test" }), /Entity/],
      ["1024-bit CSR", proofRequest(ep, t, small.der), /1024 bits/],
      ["bad CSR signature", proofRequest(ep, t, badSig.der), /CSR signature/],
      ["CN mismatch", proofRequest(ep, t, csr(2048, "4712@lab.test").der), /CN/],
      ["inner wst without slash", proofRequest(ep, t, goodCsr.der, { innerWst: NS.wst }), /trailing slash/],
      ["unbraced DeviceId", proofRequest(ep, t, goodCsr.der, { deviceId: randomUUID() }), /DeviceId/],
      ["no WS-Addressing", proofRequest(ep, t, goodCsr.der, { omitWsa: true }), /wsa:To/],
      [
        "altered assertion",
        proofRequest(
          ep,
          { ...t, assertion: t.assertion.replace("sip:4711@lab.test", "sip:4712@lab.test") },
          goodCsr.der,
        ),
        /differs/,
      ],
      ["unquoted SOAPAction", proofRequest(ep, t, goodCsr.der), /SOAPAction/, GAPC_ACTION],
    ];
    for (const [name, body, reason, action] of cases) {
      const r = await postProof(ep, body, action ? action : undefined);
      expect(r.status, name).toBe(500);
      expect28020(r, reason);
    }
    expect(web.stats.proofFailures).toBe(failuresBefore + cases.length);
  });

  it("expired ticket or Timestamp is rejected (clock skew 5 min)", async () => {
    const t = await pinSignIn(ep, "4711", "1234");
    const saved = clock;
    try {
      clock = saved + 8 * 3600_000 + 4 * 60_000; // inside the skew allowance: still accepted
      expect((await postProof(ep, proofRequest(ep, t, goodCsr.der))).status).toBe(200);
      clock = saved + 8 * 3600_000 + 6 * 60_000;
      expect28020(await postProof(ep, proofRequest(ep, t, goodCsr.der)), /Timestamp expired/);
      const fresh = {
        created: new Date(clock).toISOString(),
        expires: new Date(clock + 300_000).toISOString(),
      };
      expect28020(
        await postProof(ep, proofRequest(ep, t, goodCsr.der, { timestamp: fresh })),
        /ticket expired/,
      );
    } finally {
      clock = saved;
    }
  });
});

describe("reachability", () => {
  it("setReachable(false) drops connections; true restores service", async () => {
    web.setReachable(false);
    await expect(request(`${web.certProvUrl}/mex`)).rejects.toThrow();
    await expect(request(`${web.certProvUrl}/mex`, { agent: false })).rejects.toThrow();
    web.setReachable(true);
    // Pooled keep-alive sockets died with the outage; a client must reconnect.
    expect((await request(`${web.certProvUrl}/mex`, { agent: false })).status).toBe(200);
  });
});
