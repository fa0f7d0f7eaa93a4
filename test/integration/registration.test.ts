/**
 * TLS-DSK registration end to end over real loopback sockets against the lab registrar:
 * real TLS, a real CA, the real tunnelled handshake, every signature checked both ways.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { endpointForCert, registerOnce } from "../../firmware/commands/register.ts";
import { LabCa } from "../lab/ca.ts";
import { type Lab, startLab } from "../lab/lab.ts";

let lab: Lab;
let cert: string;
let key: string;

beforeAll(async () => {
  lab = await startLab({ site: "hq" });
  cert = readFileSync(lab.ready.testClient.cert, "utf8");
  key = readFileSync(lab.ready.testClient.key, "utf8");
});

afterAll(async () => {
  await lab?.stop();
});

function target(address: string) {
  const [host, port] = address.split(":");
  return { host: host!, port: Number(port) };
}

function opts(over: Partial<Parameters<typeof registerOnce>[0]> = {}) {
  return {
    registrar: target(lab.ready.pool),
    endpoint: endpointForCert(lab.ready.testClient.uri, cert),
    cert,
    key,
    ca: [lab.ca.cert],
    innerTls: "auto" as const,
    refreshes: 0,
    timeoutMs: 15_000,
    ...over,
  };
}

describe("TLS-DSK registration against the lab registrar", () => {
  for (const innerTls of ["1.2", "1.0", "auto"] as const) {
    it(`registers with inner TLS ${innerTls} and verifies 3 signed refreshes`, async () => {
      const before = { ...lab.pool.stats };
      const events: Array<Record<string, unknown>> = [];
      const result = await registerOnce(opts({ innerTls, refreshes: 3, onEvent: (e) => events.push(e) }));
      expect(result.refreshesVerified).toBe(3);
      expect(result.tlsVersion).toBe(innerTls === "1.0" ? "TLSv1" : "TLSv1.2");
      expect(events.filter((e) => e["event"] === "refreshed" && e["rspauth"] === "verified")).toHaveLength(3);
      // The registrar checked the signature on the completing REGISTER, 3 refreshes and the de-REGISTER.
      expect(lab.pool.stats.signedOk - before.signedOk).toBe(5);
      expect(lab.pool.stats.signatureFailures).toBe(before.signatureFailures);
      expect(lab.pool.stats.handshakes - before.handshakes).toBe(1);
    });
  }

  it("follows a signed 301 to the home registrar (q=0.7 first)", async () => {
    lab.pool.redirect = { primary: lab.ready.sba, backup: lab.ready.pool };
    try {
      const events: Array<Record<string, unknown>> = [];
      const result = await registerOnce(opts({ onEvent: (e) => events.push(e) }));
      expect(result.registrar).toBe(lab.ready.sba);
      const redirect = events.find((e) => e["event"] === "redirected") as { to: Array<{ q: number }> };
      expect(redirect.to.map((t) => t.q)).toEqual([0.7, 0.3]);
    } finally {
      lab.pool.redirect = undefined;
    }
  });
});

describe("registration failures are typed and nothing hangs", () => {
  const expectCode = async (p: Promise<unknown>, code: string) => {
    await expect(p).rejects.toMatchObject({ code });
  };

  it("a wrong rspauth is fatal (rspauth-invalid)", async () => {
    lab.pool.faults = { badRspauth: true };
    try {
      await expectCode(registerOnce(opts()), "rspauth-invalid");
    } finally {
      lab.pool.faults = {};
    }
  });

  it("a 200 without Authentication-Info is refused (rspauth-missing)", async () => {
    lab.pool.faults = { omitAuthenticationInfo: true };
    try {
      await expectCode(registerOnce(opts()), "rspauth-missing");
    } finally {
      lab.pool.faults = {};
    }
  });

  it("a client certificate from another CA is refused by the registrar", async () => {
    const rogue = await (await LabCa.create("Rogue CA")).issueClient("4711@lab.test");
    const p = registerOnce(opts({ cert: rogue.cert, key: rogue.key }));
    await expect(p).rejects.toMatchObject({ code: "registration-forbidden" });
    await expect(p).rejects.toThrow(/handshake failed/);
  });

  it("a client certificate from the CA but not published for the user is refused", async () => {
    const unpublished = await lab.ca.issueClient("4711@lab.test");
    const p = registerOnce(opts({ cert: unpublished.cert, key: unpublished.key }));
    await expect(p).rejects.toMatchObject({ code: "registration-forbidden" });
    await expect(p).rejects.toThrow(/not published/);
  });

  it("a registrar certificate that does not match the expected name (registrar-cert-name-mismatch)", async () => {
    await expectCode(
      registerOnce(opts({ registrar: { ...target(lab.ready.pool), serverName: "evil.lab.test" } })),
      "registrar-cert-name-mismatch",
    );
  });

  it("a registrar certificate from a CA we do not trust (registrar-cert-untrusted)", async () => {
    const other = await LabCa.create("Other CA");
    await expectCode(registerOnce(opts({ ca: [other.cert] })), "registrar-cert-untrusted");
  });

  it("a registrar that is down (connect-refused)", async () => {
    await expectCode(registerOnce(opts({ registrar: { host: "127.0.0.1", port: 1 } })), "connect-refused");
  });
});
