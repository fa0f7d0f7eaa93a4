import { describe, expect, it } from "vitest";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";
import type { HttpClient, HttpRequest } from "../../firmware/provisioning/http.ts";
import {
  choosePinPort,
  fetchMetadata,
  parseCertProvMetadata,
  parseWebTicketMetadata,
} from "../../firmware/provisioning/metadata.ts";
import { discoverPinEndpoint } from "../../firmware/provisioning/sign-in-steps.ts";
import { descendant, NS, parseXml, text } from "../../firmware/provisioning/xml.ts";
import { CERT_PROV, FakePool, fixture, PIN_PORT, PROOF, WEB_TICKET } from "./fixtures/fake-pool.ts";

const ca = {} as never; // metadata never reaches the certificate step

describe("Cert Prov metadata (digest §2.2)", () => {
  it("finds the ticket issuer, the proof endpoint and holder-of-key", () => {
    expect(parseCertProvMetadata(parseXml(fixture("certprov-mex.xml"), "t"))).toEqual({
      webTicketUrl: WEB_TICKET,
      authUri: PROOF,
      ticketMustBeSigned: true,
    });
  });

  it("reads SignedSupportingTokens as a bearer ticket", () => {
    const wsdl = fixture("certprov-mex.xml").replaceAll(
      "EndorsingSupportingTokens",
      "SignedSupportingTokens",
    );
    expect(parseCertProvMetadata(parseXml(wsdl, "t")).ticketMustBeSigned).toBe(false);
  });

  it("matches the policy Id case-insensitively and ignores prefixes", () => {
    const wsdl = fixture("certprov-mex.xml")
      .replace(
        'wsu:Id="CertProvisioningServiceWebTicketProof_SHA1_policy"',
        'u:Id="certprovisioningservicewebticketproof_sha1_policy"',
      )
      .replace("<wsdl:definitions ", `<wsdl:definitions xmlns:u="${NS.wsu}" `)
      .replace(/(?<![a-z])sp:/g, "securitypolicy:")
      .replace("xmlns:sp=", "xmlns:securitypolicy=");
    expect(parseCertProvMetadata(parseXml(wsdl, "t")).webTicketUrl).toBe(WEB_TICKET);
  });

  it("rejects a WSDL without the proof port as malformed", () => {
    const wsdl = fixture("certprov-mex.xml").replaceAll(
      'name="CertProvisioningServiceWebTicketProof_SHA1"',
      'name="Other"',
    );
    expect(() => parseCertProvMetadata(parseXml(wsdl, "t"))).toThrow(
      expect.objectContaining({ code: "malformed-response" }),
    );
  });
});

describe("Web Ticket metadata and the PIN port (digest §2.3)", () => {
  it("lists ports and finds the PIN port at a non-default path", () => {
    const { ports } = parseWebTicketMetadata(parseXml(fixture("webticket-mex.xml"), "t"));
    expect(ports.map((p) => [p.name, p.basicAuth])).toEqual([
      ["WebTicketServiceWinNegotiate", false],
      ["WebTicketServicePin", true],
      ["WebTicketServiceCert", false],
    ]);
    expect(choosePinPort(ports)).toBe(PIN_PORT);
  });

  it("falls back to a port whose policy asserts Basic when no port is named WebTicketServicePin", () => {
    const wsdl = fixture("webticket-mex.xml").replace(
      'port name="WebTicketServicePin"',
      'port name="PhoneExtensionPort"',
    );
    expect(choosePinPort(parseWebTicketMetadata(parseXml(wsdl, "t")).ports)).toBe(PIN_PORT);
  });

  it("finds no PIN port when the pool offers none", () => {
    expect(
      choosePinPort(parseWebTicketMetadata(parseXml(fixture("webticket-mex-nopin.xml"), "t")).ports),
    ).toBe(undefined);
  });
});

describe("fetchMetadata (digest §2.1)", () => {
  it("uses GET <url>/mex when it works", async () => {
    const pool = new FakePool({ ca });
    const doc = await fetchMetadata(pool, CERT_PROV);
    expect(doc.documentElement?.localName).toBe("definitions");
    expect(pool.requests.map((r) => r.method)).toEqual(["GET"]);
  });

  it("falls back to a SOAP 1.2 WS-Transfer Get POST when GET answers 404", async () => {
    const pool = new FakePool({ ca, mexGet: false });
    const { certProv, pinPortUrl } = await discoverPinEndpoint(pool, CERT_PROV);
    expect(certProv.authUri).toBe(PROOF);
    expect(pinPortUrl).toBe(PIN_PORT);
    const post = pool.requests.find((r) => r.method === "POST") as HttpRequest;
    expect(post.url).toBe(`${CERT_PROV}/mex`);
    expect(post.headers?.["Content-Type"]).toBe("application/soap+xml; charset=utf-8");
    const env = parseXml(post.body ?? "", "mex POST");
    expect(env.documentElement?.namespaceURI).toBe(NS.soap12);
    const action = descendant(env, "Action", NS.wsa)!;
    expect(text(action)).toBe("http://schemas.xmlsoap.org/ws/2004/09/transfer/Get");
    expect(action.getAttributeNS(NS.soap12, "mustUnderstand")).toBe("1");
    expect(text(descendant(env, "To", NS.wsa))).toBe(CERT_PROV);
    expect(text(descendant(env, "Address", NS.wsa))).toBe("http://www.w3.org/2005/08/addressing/anonymous");
    expect(descendant(env, "Body", NS.soap12)?.childNodes.length).toBe(0);
  });

  it("falls back to POST when GET answers 200 with something that is not a WSDL", async () => {
    const calls: string[] = [];
    const http: HttpClient = {
      request: async (r) => {
        calls.push(r.method);
        if (r.method === "GET") return { status: 200, headers: {}, body: "<html><body>IIS</body></html>" };
        return { status: 200, headers: {}, body: fixture("certprov-mex.xml") };
      },
    };
    await fetchMetadata(http, `${CERT_PROV}/`);
    expect(calls).toEqual(["GET", "POST"]);
  });

  it("reports malformed-response when neither form yields a WSDL", async () => {
    const http: HttpClient = { request: async () => ({ status: 200, headers: {}, body: "<<<not xml" }) };
    await expect(fetchMetadata(http, CERT_PROV)).rejects.toMatchObject({ code: "malformed-response" });
  });

  it("does not retry with POST after a transport failure", async () => {
    let n = 0;
    const http: HttpClient = {
      request: async () => {
        n++;
        throw new ProvisioningError("server-cert-untrusted", "untrusted");
      },
    };
    await expect(fetchMetadata(http, CERT_PROV)).rejects.toMatchObject({ code: "server-cert-untrusted" });
    expect(n).toBe(1);
  });

  it("reports pin-auth-disabled when the Web Ticket WSDL has no PIN port", async () => {
    const pool = new FakePool({ ca, webTicketMex: fixture("webticket-mex-nopin.xml") });
    const err = await discoverPinEndpoint(pool, CERT_PROV).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ProvisioningError);
    expect(err).toMatchObject({
      code: "pin-auth-disabled",
      message: "PIN sign-in is disabled on this server",
    });
    expect((err as ProvisioningError).display.length).toBeLessThanOrEqual(20);
  });
});
