/**
 * Issue 9 §4: "the PIN is never sent twice for one key press of `#`" — also when the phone
 * retries a sign-in by itself after a network failure. Counted on the wire:
 *   - a failure after the ticket (GetAndPublishCert timed out): the retry reuses the ticket
 *     (PinTicketCache), the PIN stays at one request; after a refusal the ticket is dropped;
 *   - no answer to the request that carried the PIN: "sign-in-interrupted", which the phone does
 *     not retry by itself (the next PIN goes only with the next `#`).
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { openStore, signInDeps } from "../../firmware/commands/identity.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";
import type { HttpClient, HttpRequest, HttpResponse } from "../../firmware/provisioning/http.ts";
import { PinTicketCache, signIn } from "../../firmware/provisioning/resumable-sign-in.ts";
import { requestWebTicketWithPin } from "../../firmware/provisioning/web-ticket.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { flush, rig } from "../phone/fakes.ts";

const PIN = "1234";

function pinRequests(requests: HttpRequest[]): number {
  return requests.filter((r) => {
    const m = /^Basic (.+)$/.exec(r.headers?.["Authorization"] ?? "");
    return m !== null && Buffer.from(m[1]!, "base64").toString("utf8").endsWith(`:${PIN}`);
  }).length;
}

describe("a retried sign-in against the lab (challenge-first pool) sends the PIN once", () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab({ site: "hq", web: { challenge: "first" } });
  });
  afterAll(async () => {
    await lab?.stop();
  });

  /** A phone whose first GetAndPublishCert fails with `firstProof` (thrown, or answered). */
  async function phone(firstProof: ProvisioningError | HttpResponse) {
    const dir = await mkdtemp(join(tmpdir(), "handset-one-pin-"));
    const random = new CryptoRandom();
    const base = signInDeps({
      store: openStore(dir, random),
      ca: [lab.ca.cert],
      random,
      clock: new SystemClock(),
      logger: silentLogger,
    });
    const requests: HttpRequest[] = [];
    let proofs = 0;
    const http: HttpClient = {
      request: async (r) => {
        requests.push(r);
        if (r.url.endsWith("/WebTicket_Proof") && proofs++ === 0) {
          if (firstProof instanceof ProvisioningError) throw firstProof;
          return firstProof;
        }
        return base.http.request(r);
      },
    };
    const ticketCache = new PinTicketCache();
    const deps = { ...base, http, ticketCache };
    const req = { certProvUrl: lab.ready.certProv, extension: "4711", pin: PIN, trustedRoots: [lab.ca.cert] };
    return { deps, req, requests, ticketCache };
  }

  it("GetAndPublishCert timed out: the phone's retry reuses the ticket, no second PIN", async () => {
    const p = await phone(new ProvisioningError("timeout", "No answer from pool"));
    await expect(signIn(p.deps, p.req)).rejects.toMatchObject({ code: "timeout" });
    expect(p.ticketCache.size).toBe(1);
    // What the phone does after a retryable failure: the same sign-in again.
    const result = await signIn(p.deps, p.req);
    expect(result.uri).toBe("sip:4711@lab.test");
    expect(pinRequests(p.requests)).toBe(1);
    expect(p.requests.filter((r) => r.url.endsWith("/WebTicket_Proof"))).toHaveLength(2);
    expect(p.ticketCache.size).toBe(0);
  });

  it("GetAndPublishCert refused: the ticket is dropped, the next sign-in sends the PIN afresh", async () => {
    const p = await phone({ status: 500, headers: {}, body: "" });
    await expect(signIn(p.deps, p.req)).rejects.toBeInstanceOf(ProvisioningError);
    expect(p.ticketCache.size).toBe(0);
    await expect(signIn(p.deps, p.req)).resolves.toMatchObject({ uri: "sip:4711@lab.test" });
    expect(pinRequests(p.requests)).toBe(2);
  });
});

describe("no answer to the request that carried the PIN", () => {
  it("is sign-in-interrupted, not a retryable network error", async () => {
    const requests: HttpRequest[] = [];
    const http: HttpClient = {
      request: async (r) => {
        requests.push(r);
        if (requests.length === 1)
          return { status: 401, headers: { "www-authenticate": 'Basic realm ="LYNC"' }, body: "" };
        throw new ProvisioningError("timeout", "No answer from pool within 30000 ms");
      },
    };
    const err = await requestWebTicketWithPin(http, {
      portUrl: "https://pool.example/WebTicket/WebTicketService.svc/Pin",
      appliesTo: "https://pool.example/CertProv/CertProvisioningService.svc/WebTicket_Proof",
      deviceId: "0f8fad5b-d9cb-469f-a165-70867728950e",
      username: "4711",
      pin: PIN,
      random: new SeededRandom(1),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "sign-in-interrupted", display: "Sign-in interrupted" });
    expect(String((err as Error).message)).not.toContain(PIN);
    expect(pinRequests(requests)).toBe(1);
  });

  describe("on the phone", () => {
    let stop: (() => Promise<void>) | undefined;
    afterEach(async () => {
      await stop?.();
      stop = undefined;
    });

    it("is not retried by itself: one `#`, one sign-in, back to the sign-in screen", async () => {
      const r = rig();
      stop = () => r.phone.stop();
      r.services.signInScript = [
        new ProvisioningError("sign-in-interrupted", "The PIN was sent but no answer came back"),
      ];
      await r.bootToSignIn();
      r.keys.type("4711#1234#");
      await flush();
      expect(r.lastState()).toMatchObject({ state: "sign-in-required", reason: "sign-in-interrupted" });
      // Back on the PIN screen for the same extension, saying what happened.
      expect(r.display.text.slice(0, 2)).toEqual(["PIN: _", "No answer, retry"]);
      r.clock.advance(3_600_000);
      await flush();
      expect(r.services.signInCalls).toHaveLength(1);
    });
  });
});
