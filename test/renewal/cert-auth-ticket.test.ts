/**
 * The certificate port's request (WS-Security X.509 header, checked here independently of the
 * lab) and the mapping of its refusals.
 */
import { createHash, verify, X509Certificate } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  CertificateRefusedError,
  certFailure,
  isCertificateRefusal,
  requestWebTicketWithCertificate,
} from "../../firmware/provisioning/cert-auth-ticket.ts";
import { readFailure } from "../../firmware/provisioning/diagnostics.ts";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";
import type { HttpRequest, HttpResponse } from "../../firmware/provisioning/http.ts";
import { chooseCertPort } from "../../firmware/provisioning/metadata.ts";
import { RST_ISSUE_ACTION } from "../../firmware/provisioning/web-ticket.ts";
import { attr, child, descendant, excC14n, NS, parseXml, text } from "../../firmware/provisioning/xml.ts";
import { LabCa } from "../lab/ca.ts";
import { failedAuthenticationFault, xMsDiagnostics } from "../lab/soap.ts";

let client: { cert: string; key: string };
beforeAll(async () => {
  const ca = await LabCa.create();
  client = await ca.issueClient("4711@lab.test");
});

const fault = (reason: string, status = 500): HttpResponse => ({
  status,
  headers: {
    "content-type": "text/xml; charset=utf-8",
    "x-ms-diagnostics": xMsDiagnostics(28020, "pool.lab.test", reason, "wsse:FailedAuthentication"),
  },
  body: failedAuthenticationFault(28020, reason),
});

describe("requestWebTicketWithCertificate", () => {
  it("sends the RST with a Timestamp, the X509v3 token and an RSA-SHA256 signature over the Timestamp", async () => {
    const clock = new ManualClock(Date.UTC(2026, 4, 1, 12, 0, 0));
    let sent: HttpRequest | undefined;
    const err = await requestWebTicketWithCertificate(
      {
        request: async (r) => {
          sent = r;
          return fault("No valid security token.");
        },
      },
      {
        portUrl: "https://pool/WebTicket/WebTicketService.svc/Cert",
        appliesTo: "https://pool/CertProv/CertProvisioningService.svc/WebTicket_Proof",
        certPem: client.cert,
        keyPem: client.key,
        deviceId: "0f8fad5b-d9cb-469f-a165-70867728950e",
        random: new SeededRandom(1),
        clock,
      },
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CertificateRefusedError);
    expect(sent!.headers).toMatchObject({ SOAPAction: `"${RST_ISSUE_ACTION}"` });
    expect(sent!.headers?.["Authorization"]).toBeUndefined();

    const doc = parseXml(sent!.body!, "RST");
    const security = descendant(doc, "Security", NS.wsse)!;
    const timestamp = child(security, "Timestamp", NS.wsu)!;
    expect(text(child(timestamp, "Created", NS.wsu))).toBe("2026-05-01T12:00:00Z");
    expect(text(child(timestamp, "Expires", NS.wsu))).toBe("2026-05-01T12:05:00Z");
    const token = child(security, "BinarySecurityToken", NS.wsse)!;
    expect(attr(token, "ValueType")).toMatch(/#X509v3$/);
    expect(Buffer.from(text(token), "base64")).toEqual(new X509Certificate(client.cert).raw);
    const signature = child(security, "Signature", NS.ds)!;
    const signedInfo = child(signature, "SignedInfo", NS.ds)!;
    expect(attr(child(signedInfo, "SignatureMethod", NS.ds)!, "Algorithm")).toBe(
      "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
    );
    const ref = child(signedInfo, "Reference", NS.ds)!;
    expect(attr(ref, "URI")).toBe(`#${timestamp.getAttributeNS(NS.wsu, "Id")}`);
    expect(text(child(ref, "DigestValue", NS.ds))).toBe(
      createHash("sha256").update(excC14n(timestamp)).digest("base64"),
    );
    const sigValue = Buffer.from(text(child(signature, "SignatureValue", NS.ds)), "base64");
    expect(verify("sha256", Buffer.from(excC14n(signedInfo)), client.cert, sigValue)).toBe(true);
    const tokenRef = descendant(child(signature, "KeyInfo", NS.ds)!, "Reference", NS.wsse)!;
    expect(attr(tokenRef, "URI")).toBe(`#${token.getAttributeNS(NS.wsu, "Id")}`);
    // Same RST body as the PIN port.
    const rst = descendant(doc, "RequestSecurityToken", NS.wst)!;
    expect(attr(rst, "Context")).toBe("0f8fad5b-d9cb-469f-a165-70867728950e");
    expect(text(descendant(rst, "BinarySecret", NS.wst))).toHaveLength(44);
  });
});

describe("certFailure", () => {
  it("maps a fault that names revocation to certificate-revoked", () => {
    const err = certFailure(readFailure(fault("The certificate has been revoked.")));
    expect(err).toMatchObject({ code: "certificate-revoked", diagnosticId: 28020 });
    expect(isCertificateRefusal(err)).toBe(true);
  });
  it("maps the generic 28020 fault to ticket-rejected from the certificate port", () => {
    const err = certFailure(readFailure(fault("No valid security token.")));
    expect(err).toBeInstanceOf(CertificateRefusedError);
    expect(err.code).toBe("ticket-rejected");
    expect(isCertificateRefusal(err)).toBe(true);
  });
  it("maps a bare 503 to server-unreachable and other statuses to a plain ticket-rejected", () => {
    const unavailable = certFailure(readFailure({ status: 503, headers: {}, body: "" }));
    expect(unavailable.code).toBe("server-unreachable");
    expect(isCertificateRefusal(unavailable)).toBe(false);
    const notFound = certFailure(readFailure({ status: 404, headers: {}, body: "" }));
    expect(notFound.code).toBe("ticket-rejected");
    expect(isCertificateRefusal(notFound)).toBe(false);
    expect(isCertificateRefusal(new ProvisioningError("ticket-rejected", "x"))).toBe(false);
  });
});

describe("chooseCertPort", () => {
  it("finds WebTicketServiceCert by name and never guesses", () => {
    const ports = [
      { name: "WebTicketServicePin", address: "https://p/Pin", basicAuth: true },
      { name: "WebTicketServiceCert", address: "https://p/Cert", basicAuth: false },
    ];
    expect(chooseCertPort(ports)).toBe("https://p/Cert");
    expect(chooseCertPort(ports.slice(0, 1))).toBeUndefined();
  });
});
