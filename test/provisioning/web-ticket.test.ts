import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import { parseMsDiagnostics, parseWarning } from "../../firmware/provisioning/diagnostics.ts";
import type { HttpClient, HttpResponse } from "../../firmware/provisioning/http.ts";
import { parseRstr, pSha1, requestWebTicketWithPin } from "../../firmware/provisioning/web-ticket.ts";
import { attr, descendant, excC14n, NS, parseXml, text } from "../../firmware/provisioning/xml.ts";
import { FakePool, fixture, PIN_PORT, PROOF } from "./fixtures/fake-pool.ts";

const ca = {} as never;
const DEVICE = "0f8fad5b-d9cb-469f-a165-70867728950e";
const base = { portUrl: PIN_PORT, appliesTo: PROOF, deviceId: DEVICE };

function answering(res: Partial<HttpResponse>): HttpClient & { calls: number } {
  const c = {
    calls: 0,
    request: async () => {
      c.calls++;
      return { status: 200, headers: {}, body: "", ...res };
    },
  };
  return c;
}

describe("X-Ms-diagnostics and Warning (digest §8)", () => {
  it("parses the leading id and the quoted pairs", () => {
    expect(
      parseMsDiagnostics(
        '28020;source="pool.example";reason="No valid security token.";faultcode="wsse:FailedAuthentication"',
      ),
    ).toEqual({
      id: 28020,
      fields: {
        source: "pool.example",
        reason: "No valid security token.",
        faultcode: "wsse:FailedAuthentication",
      },
    });
    expect(parseMsDiagnostics('28003;reason="a;b \\"c\\"";x=y')).toEqual({
      id: 28003,
      fields: { reason: 'a;b "c"', x: "y" },
    });
    expect(parseMsDiagnostics("garbage")).toBeUndefined();
  });

  it("parses Warning values, including several and a date", () => {
    expect(parseWarning('120 pool.example "InvalidPin"')).toEqual([
      { code: 120, agent: "pool.example", text: "InvalidPin" },
    ]);
    expect(parseWarning('199 - "a, b" "Sat, 01 Jan 2026 00:00:00 GMT", 120 x "InvalidPin"')).toEqual([
      { code: 199, agent: "-", text: "a, b" },
      { code: 120, agent: "x", text: "InvalidPin" },
    ]);
  });
});

describe("requestWebTicketWithPin (digest §3.1, §4, §5)", () => {
  it("sends the §4 RST with HTTP Basic and 32 bytes of entropy, and reads the RSTR", async () => {
    const pool = new FakePool({ ca });
    const ticket = await requestWebTicketWithPin(pool, {
      ...base,
      username: "4711",
      pin: "1234",
      random: new SeededRandom(7),
    });
    // First the RST without credentials (the pool's 401 Basic challenge), then the same with them.
    const [probe, req] = pool.requests;
    expect(pool.requests).toHaveLength(2);
    expect(probe?.headers?.["Authorization"]).toBeUndefined();
    expect(probe?.body).toBe(req?.body);
    expect(req?.method).toBe("POST");
    expect(req?.url).toBe(PIN_PORT);
    expect(req?.headers?.["SOAPAction"]).toBe('"http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue"');
    expect(req?.headers?.["Content-Type"]).toMatch(/^text\/xml/);
    expect(req?.headers?.["Authorization"]).toBe(`Basic ${Buffer.from("4711:1234").toString("base64")}`);
    const doc = parseXml(req?.body ?? "", "RST");
    expect(doc.documentElement?.namespaceURI).toBe(NS.soap11);
    expect(descendant(doc, "Header", NS.soap11)).toBeUndefined();
    const rst = descendant(doc, "RequestSecurityToken", NS.wst)!;
    expect(attr(rst, "Context")).toBe(DEVICE);
    expect(text(descendant(rst, "TokenType", NS.wst))).toBe(
      "http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1",
    );
    expect(text(descendant(rst, "RequestType", NS.wst))).toBe(
      "http://schemas.xmlsoap.org/ws/2005/02/trust/Issue",
    );
    expect(text(descendant(rst, "KeyType", NS.wst))).toBe(
      "http://docs.oasis-open.org/ws-sx/ws-trust/200512/SymmetricKey",
    );
    expect(text(descendant(descendant(rst, "AppliesTo", NS.wsp)!, "Address", NS.wsa))).toBe(PROOF);
    expect(descendant(rst, "Claims")).toBeUndefined();
    const entropy = Buffer.from(text(descendant(rst, "BinarySecret", NS.wst)), "base64");
    expect(entropy.length).toBe(32);
    expect(ticket.clientEntropy).toEqual(entropy);
    expect(ticket.nameIdentifier).toBe("sip:4711@lab.test");
    expect(ticket.proofKey).toEqual(pSha1(entropy, ticket.serverEntropy, 32));
    expect(pool.tickets.get(ticket.assertionId)?.proofKey).toEqual(ticket.proofKey);
  });

  it("keeps the assertion byte for byte and the WCF default-namespace Lifetime", () => {
    const body = fixture("rstr.xml");
    const ticket = parseRstr(body, Buffer.alloc(32, 1));
    const start = body.indexOf("<saml:Assertion");
    const end = body.indexOf("</saml:Assertion>") + "</saml:Assertion>".length;
    expect(ticket.assertionXml).toBe(body.slice(start, end));
    expect(ticket.assertionId).toBe("SamlSecurityToken-6f1c2d3e-0000-4000-8000-00000000beef");
    expect(ticket.created).toBe("2026-01-01T00:00:00Z");
    expect(ticket.expires).toBe("2026-01-01T08:00:00Z");
    expect(ticket.lifetimeXml).toBe(
      `<Created xmlns="${NS.wsu}">2026-01-01T00:00:00Z</Created><Expires xmlns="${NS.wsu}">2026-01-01T08:00:00Z</Expires>`,
    );
    expect(ticket.serverEntropy.toString("base64")).toBe("oKGio6SlpqeoqaqrrK2ur7CxsrO0tba3uLm6u7y9vr8=");
  });

  it("makes the assertion self-contained (exc-c14n) when its prefix is declared outside it", () => {
    const body = fixture("rstr.xml")
      .replace(' xmlns:saml="urn:oasis:names:tc:SAML:1.0:assertion"', "")
      .replace("<s:Envelope ", `<s:Envelope xmlns:saml="${NS.saml}" `)
      .replace(/<Created xmlns="[^"]*">/, `<u:Created xmlns:u="${NS.wsu}">`)
      .replace("</Created>", "</u:Created>");
    const ticket = parseRstr(body, Buffer.alloc(32, 1));
    const standalone = parseXml(ticket.assertionXml, "assertion").documentElement!;
    expect(standalone.namespaceURI).toBe(NS.saml);
    const inContext = descendant(parseXml(body, "rstr"), "Assertion", NS.saml)!;
    expect(excC14n(standalone)).toBe(excC14n(inContext));
    expect(ticket.lifetimeXml).toContain(`<u:Created xmlns:u="${NS.wsu}">2026-01-01T00:00:00Z</u:Created>`);
  });

  it("maps a wrong PIN (401, 28003, InvalidPin) to invalid-pin and never retries", async () => {
    const pool = new FakePool({ ca });
    const err = await requestWebTicketWithPin(pool, {
      ...base,
      username: "4711",
      pin: "9999",
      random: new SeededRandom(1),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "invalid-pin",
      diagnosticId: 28003,
      reason: "The pin is invalid.",
      status: 401,
    });
    // The unauthenticated probe, then the PIN exactly once.
    expect(pool.requests).toHaveLength(2);
    expect(pool.requests.filter((r) => r.headers?.["Authorization"])).toHaveLength(1);
    expect(String((err as Error).message)).not.toContain("9999");
  });

  it("reads InvalidPin from the Warning header alone, and a bare 401 as refused credentials", async () => {
    const warn = answering({ status: 401, headers: { warning: '120 pool "InvalidPin"' } });
    await expect(
      requestWebTicketWithPin(warn, { ...base, username: "1", pin: "2", random: new SeededRandom(1) }),
    ).rejects.toMatchObject({ code: "invalid-pin" });
    const bare = answering({ status: 401, headers: { "www-authenticate": 'Basic realm ="LYNC"' } });
    await expect(
      requestWebTicketWithPin(bare, { ...base, username: "1", pin: "2", random: new SeededRandom(1) }),
    ).rejects.toMatchObject({ code: "invalid-pin" });
    // Each: the probe (its 401 is a challenge, not a verdict), then the credentials once.
    expect(warn.calls + bare.calls).toBe(4);
  });

  it("maps a lockout to account-locked", async () => {
    const pool = new FakePool({ ca, lockAfter: 1 });
    const o = { ...base, username: "4711", random: new SeededRandom(3) };
    await expect(requestWebTicketWithPin(pool, { ...o, pin: "0000" })).rejects.toMatchObject({
      code: "invalid-pin",
    });
    await expect(requestWebTicketWithPin(pool, { ...o, pin: "1234" })).rejects.toMatchObject({
      code: "account-locked",
      diagnosticId: 28004,
    });
  });

  it("maps other diagnostics to ticket-rejected with the reason and id", async () => {
    const http = answering({
      status: 500,
      headers: { "x-ms-diagnostics": '28099;source="pool";reason="PIN has expired."' },
      body: fixture("fault-28020.xml"),
    });
    const err = await requestWebTicketWithPin(http, {
      ...base,
      username: "1",
      pin: "2",
      random: new SeededRandom(1),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ticket-rejected", diagnosticId: 28099, reason: "PIN has expired." });
  });

  it("reads a fault body's OCSDiagnosticsFault when there is no header", async () => {
    const http = answering({ status: 500, body: fixture("fault-28020.xml") });
    await expect(
      requestWebTicketWithPin(http, { ...base, username: "1", pin: "2", random: new SeededRandom(1) }),
    ).rejects.toMatchObject({
      code: "ticket-rejected",
      diagnosticId: 28020,
      reason: "No valid security token.",
    });
  });

  it("reports malformed XML and incomplete RSTRs as malformed-response", async () => {
    for (const body of [
      "<s:Envelope><unclosed>",
      "not xml",
      fixture("rstr.xml").replace(/<Lifetime>.*<\/Lifetime>/, ""),
      fixture("rstr.xml").replace(/<Entropy>.*<\/Entropy>/, ""),
    ]) {
      await expect(
        requestWebTicketWithPin(answering({ body }), {
          ...base,
          username: "1",
          pin: "2",
          random: new SeededRandom(1),
        }),
      ).rejects.toMatchObject({ code: "malformed-response" });
    }
  });
});
