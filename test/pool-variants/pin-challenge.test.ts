/**
 * Issue 9 §4, "PIN sign-in as the pool's IIS log shows it": the first request to the PIN port
 * (and to the certificate port, for renewal) goes without credentials, the challenge names the
 * scheme, then the credentials go once. Against the lab in both challenge modes:
 *   - "on-demand": the lab of before, which would also take credentials on the first request;
 *   - "first": a pool that ignores credentials sent before its challenge (old firmware, which sent
 *     Basic pre-emptively, read the resulting bare 401 as "Wrong PIN" and the certificate port's
 *     401 as "certificate refused").
 * Plus unit cases against a scripted HttpClient: the challenge's scheme, verdicts, probe refusals.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore, signInDeps } from "../../firmware/commands/identity.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import {
  CertificateRefusedError,
  isCertificateRefusal,
  requestWebTicketWithCertificate,
} from "../../firmware/provisioning/cert-auth-ticket.ts";
import type { HttpClient, HttpRequest, HttpResponse } from "../../firmware/provisioning/http.ts";
import { renewCertificate } from "../../firmware/provisioning/renewal.ts";
import { signIn } from "../../firmware/provisioning/resumable-sign-in.ts";
import { challengeSchemes, requestWebTicketWithPin } from "../../firmware/provisioning/web-ticket.ts";
import { LabCa } from "../lab/ca.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import type { ChallengeMode } from "../lab/web-ticket-service.ts";
import { fixture } from "../provisioning/fixtures/fake-pool.ts";

const PIN_PATH = "/WebTicket/WebTicketService.svc/Pin";
const CERT_PATH = "/WebTicket/WebTicketService.svc/Cert";

/** Requests that carry this PIN in a Basic Authorization header. */
function carryingPin(requests: HttpRequest[], pin: string): HttpRequest[] {
  return requests.filter((r) => {
    const auth = r.headers?.["Authorization"] ?? "";
    const m = /^Basic (.+)$/.exec(auth);
    return m !== null && Buffer.from(m[1]!, "base64").toString("utf8").endsWith(`:${pin}`);
  });
}

function recording(inner: HttpClient): HttpClient & { requests: HttpRequest[] } {
  const requests: HttpRequest[] = [];
  return {
    requests,
    request: (r) => {
      requests.push(r);
      return inner.request(r);
    },
  };
}

for (const mode of ["on-demand", "first"] as ChallengeMode[]) {
  describe(`PIN sign-in and renewal against a lab pool that challenges ${mode}`, () => {
    let lab: Lab;
    beforeAll(async () => {
      lab = await startLab({
        site: "hq",
        users: [
          { extension: "4711", pin: "1234" },
          { extension: "4712", pin: "2345" },
        ],
        web: { challenge: mode },
      });
    });
    afterAll(async () => {
      await lab?.stop();
    });

    async function phone() {
      const dir = await mkdtemp(join(tmpdir(), "handset-pool-variant-"));
      const random = new CryptoRandom();
      const store = openStore(dir, random);
      const deps = signInDeps({
        store,
        ca: [lab.ca.cert],
        random,
        clock: new SystemClock(),
        logger: silentLogger,
      });
      const http = recording(deps.http);
      return { store, deps: { ...deps, http }, http };
    }

    it("signs in: unauthenticated request → 401 Basic → the PIN once → 200, as in the IIS log", async () => {
      const p = await phone();
      const before = lab.web.requests.length;
      const result = await signIn(p.deps, {
        certProvUrl: lab.ready.certProv,
        extension: "4711",
        pin: "1234",
        trustedRoots: [lab.ca.cert],
      });
      expect(result.uri).toBe("sip:4711@lab.test");
      const pinLog = lab.web.requests.slice(before).filter((e) => e.path === PIN_PATH);
      expect(pinLog.map((e) => `${e.method} ${e.path} ${e.user} ${e.status}`)).toEqual([
        `POST ${PIN_PATH} - 401`,
        `POST ${PIN_PATH} 4711 200`,
      ]);
      const pinRequests = p.http.requests.filter((r) => r.url.endsWith(PIN_PATH));
      expect(pinRequests[0]!.headers?.["Authorization"]).toBeUndefined();
      expect(carryingPin(p.http.requests, "1234")).toHaveLength(1);
      expect(lab.web.stats.preemptiveIgnored).toBe(0);
    });

    it("a wrong PIN: one credentialed request, one failure counted, invalid-pin with 28003", async () => {
      const p = await phone();
      const failures = lab.web.stats.pinFailures;
      const err = await signIn(p.deps, {
        certProvUrl: lab.ready.certProv,
        extension: "4712",
        pin: "9999",
        trustedRoots: [lab.ca.cert],
      }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: "invalid-pin", diagnosticId: 28003, status: 401 });
      expect(carryingPin(p.http.requests, "9999")).toHaveLength(1);
      expect(lab.web.stats.pinFailures - failures).toBe(1);
      // The right PIN still works: the unauthenticated probe did not count towards the lockout.
      const again = await phone();
      await expect(
        signIn(again.deps, {
          certProvUrl: lab.ready.certProv,
          extension: "4712",
          pin: "2345",
          trustedRoots: [lab.ca.cert],
        }),
      ).resolves.toMatchObject({ uri: "sip:4712@lab.test" });
    });

    it("renews through the certificate port: unsigned request first, then the signed one once", async () => {
      const p = await phone();
      await signIn(p.deps, {
        certProvUrl: lab.ready.certProv,
        extension: "4711",
        pin: "1234",
        trustedRoots: [lab.ca.cert],
      });
      const old = (await p.store.load())!.credential!;
      const before = lab.web.requests.length;
      const renewed = await renewCertificate(p.deps, { certProvUrl: lab.ready.certProv });
      expect(renewed.credential!.certPem).not.toBe(old.certPem);
      const certLog = lab.web.requests.slice(before).filter((e) => e.path === CERT_PATH);
      expect(certLog.map((e) => e.status)).toEqual([mode === "first" ? 401 : 500, 200]);
      const certRequests = p.http.requests.filter((r) => r.url.endsWith(CERT_PATH));
      expect(certRequests).toHaveLength(2);
      expect(certRequests[0]!.body).not.toContain("BinarySecurityToken");
      expect(certRequests[1]!.body).toContain("BinarySecurityToken");
    });

    if (mode === "first") {
      it("the lab answers credentials sent before its challenge with the challenge, uncounted", async () => {
        const p = await phone();
        const failures = lab.web.stats.pinFailures;
        const ignored = lab.web.stats.preemptiveIgnored;
        const res = await p.deps.http.request({
          method: "POST",
          url: `${lab.web.baseUrl}${PIN_PATH}`,
          headers: {
            "Content-Type": "text/xml; charset=utf-8",
            Authorization: `Basic ${Buffer.from("4711:0000").toString("base64")}`,
          },
          body: '<RequestSecurityToken Context="pre-emptive"/>',
        });
        expect(res.status).toBe(401);
        expect(challengeSchemes(res.headers)).toEqual(["basic"]);
        expect(res.headers["x-ms-diagnostics"]).toBeUndefined();
        expect(lab.web.stats.pinFailures).toBe(failures);
        expect(lab.web.stats.preemptiveIgnored).toBe(ignored + 1);
      });
    }
  });
}

// ─── scripted pools ─────────────────────────────────────────────────────────────────────────

const PORT = "https://pool.example/WebTicket/WebTicketService.svc/Pin";
const PROOF = "https://pool.example/CertProv/CertProvisioningService.svc/WebTicket_Proof";
const DEVICE = "0f8fad5b-d9cb-469f-a165-70867728950e";
const pinOptions = {
  portUrl: PORT,
  appliesTo: PROOF,
  deviceId: DEVICE,
  username: "4711",
  pin: "1234",
};

/** Answers the i-th request with answers[i] (the last one repeats). */
function scripted(...answers: Array<Partial<HttpResponse>>): HttpClient & { requests: HttpRequest[] } {
  const requests: HttpRequest[] = [];
  return {
    requests,
    request: async (r) => {
      requests.push(r);
      const a = answers[Math.min(requests.length - 1, answers.length - 1)]!;
      return { status: 200, headers: {}, body: "", ...a };
    },
  };
}

const BASIC_CHALLENGE = { status: 401, headers: { "www-authenticate": 'Basic realm ="LYNC"' } };

describe("the PIN port's challenge and verdict (scripted pool)", () => {
  it("reads scheme names from WWW-Authenticate, skipping auth-params", () => {
    expect(challengeSchemes({ "www-authenticate": 'Basic realm ="LYNC"' })).toEqual(["basic"]);
    expect(challengeSchemes({ "www-authenticate": ["Negotiate", "NTLM"] })).toEqual(["negotiate", "ntlm"]);
    expect(challengeSchemes({ "WWW-Authenticate": 'Basic realm="a", charset="UTF-8", Negotiate' })).toEqual([
      "basic",
      "negotiate",
    ]);
    expect(challengeSchemes({})).toEqual([]);
  });

  it("never sends the PIN to a port whose challenge names only Negotiate/NTLM", async () => {
    const http = scripted({ status: 401, headers: { "www-authenticate": ["Negotiate", "NTLM"] } });
    const err = await requestWebTicketWithPin(http, { ...pinOptions, random: new SeededRandom(1) }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: "pin-auth-disabled" });
    expect(http.requests).toHaveLength(1);
    expect(carryingPin(http.requests, "1234")).toHaveLength(0);
  });

  it("a 401 after the credentials is the verdict: 28004 locked, 28003 wrong PIN; never a second PIN", async () => {
    const locked = scripted(BASIC_CHALLENGE, {
      status: 401,
      headers: {
        "www-authenticate": 'Basic realm ="LYNC"',
        "x-ms-diagnostics": '28004;source="pool";reason="The PIN is locked out."',
      },
    });
    await expect(
      requestWebTicketWithPin(locked, { ...pinOptions, random: new SeededRandom(1) }),
    ).rejects.toMatchObject({ code: "account-locked", diagnosticId: 28004 });
    const wrong = scripted(BASIC_CHALLENGE, {
      status: 401,
      headers: { "www-authenticate": 'Basic realm ="LYNC"', warning: '120 pool "InvalidPin"' },
    });
    await expect(
      requestWebTicketWithPin(wrong, { ...pinOptions, random: new SeededRandom(1) }),
    ).rejects.toMatchObject({ code: "invalid-pin" });
    for (const http of [locked, wrong]) {
      expect(http.requests).toHaveLength(2);
      expect(http.requests[0]!.headers?.["Authorization"]).toBeUndefined();
      expect(carryingPin(http.requests, "1234")).toHaveLength(1);
    }
  });

  it("the probe's answer is never a PIN verdict: a 401 with 28003 on it is still a challenge", async () => {
    const http = scripted(
      { status: 401, headers: { "x-ms-diagnostics": '28003;reason="The pin is invalid."' } },
      { status: 200, body: fixture("rstr.xml") },
    );
    const ticket = await requestWebTicketWithPin(http, { ...pinOptions, random: new SeededRandom(1) });
    expect(ticket.nameIdentifier).toBe("sip:4711@lab.test");
    expect(carryingPin(http.requests, "1234")).toHaveLength(1);
  });

  it("a probe answered 404 or 503 sends no PIN", async () => {
    for (const [status, code] of [
      [404, "pin-auth-disabled"],
      [503, "server-unreachable"],
    ] as const) {
      const http = scripted({ status });
      await expect(
        requestWebTicketWithPin(http, { ...pinOptions, random: new SeededRandom(1) }),
      ).rejects.toMatchObject({ code });
      expect(http.requests).toHaveLength(1);
    }
  });
});

describe("the certificate port's challenge and verdict (scripted pool)", () => {
  let client: { cert: string; key: string };
  beforeAll(async () => {
    client = await (await LabCa.create()).issueClient("4711@lab.test");
  });
  const certOptions = () => ({
    portUrl: "https://pool.example/WebTicket/WebTicketService.svc/Cert",
    appliesTo: PROOF,
    certPem: client.cert,
    keyPem: client.key,
    deviceId: DEVICE,
    random: new SeededRandom(2),
    clock: new ManualClock(Date.UTC(2026, 4, 1)),
  });

  it("a 401 to the signed request is a refusal of the certificate; the signed header goes once", async () => {
    const http = scripted({ status: 401 }, { status: 401 });
    const err = await requestWebTicketWithCertificate(http, certOptions()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CertificateRefusedError);
    expect(http.requests).toHaveLength(2);
    expect(http.requests.filter((r) => r.body?.includes("BinarySecurityToken"))).toHaveLength(1);
  });

  it("a refusal of the unsigned probe is never a certificate refusal", async () => {
    const http = scripted({ status: 403 });
    const err = await requestWebTicketWithCertificate(http, certOptions()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "ticket-rejected", status: 403 });
    expect(isCertificateRefusal(err)).toBe(false);
    expect(http.requests).toHaveLength(1);
  });
});
