import { createHash, createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { pSha1, type WebTicket } from "../../firmware/provisioning/web-ticket.ts";
import { buildSecurityHeader, buildTimestamp, signTimestamp } from "../../firmware/provisioning/wsse.ts";
import { descendant, excC14n, NS, parseXml, text } from "../../firmware/provisioning/xml.ts";

// Digest §6 "Self-generated known-answer vector".
const clientEntropy = Buffer.from(Array.from({ length: 32 }, (_, i) => i + 1));
const serverEntropy = Buffer.from(Array.from({ length: 32 }, (_, i) => 0xa0 + i));
const lifetimeXml =
  `<Created xmlns="${NS.wsu}">2024-01-01T00:00:00Z</Created>` +
  `<Expires xmlns="${NS.wsu}">2024-01-01T08:00:00Z</Expires>`;

describe("P_SHA1 and the proof signature (digest §6 KAT)", () => {
  it("derives the documented proof key from the two entropies", () => {
    expect(clientEntropy.toString("base64")).toBe("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=");
    expect(serverEntropy.toString("base64")).toBe("oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=");
    expect(pSha1(clientEntropy, serverEntropy, 32).toString("hex")).toBe(
      "707e9092a0c8d39d59c1203f081e6c7932aad30fc85b168e807adc66b500ff5d",
    );
  });

  it("is the TLS 1.0 construction for lengths that are not a multiple of 20", () => {
    const long = pSha1(clientEntropy, serverEntropy, 50);
    expect(long.subarray(0, 32)).toEqual(pSha1(clientEntropy, serverEntropy, 32));
    const a1 = createHmac("sha1", clientEntropy).update(serverEntropy).digest();
    const first = createHmac("sha1", clientEntropy)
      .update(Buffer.concat([a1, serverEntropy]))
      .digest();
    expect(long.subarray(0, 20)).toEqual(first);
  });

  it("gives the documented DigestValue and SignatureValue", () => {
    const key = pSha1(clientEntropy, serverEntropy, 32);
    const sig = signTimestamp(buildTimestamp(lifetimeXml), key);
    expect(sig.digestValue).toBe("sgcVjFHzmG92VAOj1qggaJxnKxY=");
    expect(sig.signatureValue).toBe("6rZRkrLt0p8N4E9NLo5tOUC4m14=");
  });

  it("builds a Security header whose signature verifies in the context of an envelope", () => {
    const ticket: WebTicket = {
      assertionXml: `<saml:Assertion xmlns:saml="${NS.saml}" AssertionID="SamlSecurityToken-1" MajorVersion="1"></saml:Assertion>`,
      assertionId: "SamlSecurityToken-1",
      clientEntropy,
      serverEntropy,
      proofKey: pSha1(clientEntropy, serverEntropy, 32),
      created: "2024-01-01T00:00:00Z",
      expires: "2024-01-01T08:00:00Z",
      lifetimeXml,
    };
    const header = buildSecurityHeader(ticket, { signed: true });
    const envelope = `<soap:Envelope xmlns:soap="${NS.soap11}" xmlns:wsu="${NS.wsu}"><soap:Header>${header}</soap:Header><soap:Body/></soap:Envelope>`;
    const doc = parseXml(envelope, "test");
    const ts = descendant(doc, "Timestamp", NS.wsu)!;
    const si = descendant(doc, "SignedInfo", NS.ds)!;
    expect(createHash("sha1").update(excC14n(ts)).digest("base64")).toBe("sgcVjFHzmG92VAOj1qggaJxnKxY=");
    expect(createHmac("sha1", ticket.proofKey).update(excC14n(si)).digest("base64")).toBe(
      "6rZRkrLt0p8N4E9NLo5tOUC4m14=",
    );
    expect(text(descendant(doc, "SignatureValue", NS.ds))).toBe("6rZRkrLt0p8N4E9NLo5tOUC4m14=");
    expect(text(descendant(doc, "KeyIdentifier", NS.wsse))).toBe("SamlSecurityToken-1");
    expect(header).toContain('wsu:Id="timestamp"');
    // Bearer endpoints: Timestamp + Assertion, no Signature.
    const bearer = buildSecurityHeader(ticket, { signed: false });
    expect(bearer).not.toContain("Signature");
    expect(bearer).toContain(ticket.assertionXml);
  });
});
