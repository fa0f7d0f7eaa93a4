/**
 * Issue 9 §2 at the policy: an Account (registrar list, backoff, sign-in-required) on a fake
 * clock over real loopback TLS to the lab registrar. Unsigned refusals after the SA never move,
 * store, lock out or park the phone; signed ones still do what they say, by ErrorId.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Account, type AccountStatus, type RegistrarAddress } from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import { LAB_DIAGNOSTIC } from "../../firmware/sip/registration/diagnostics.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { advance, credentials, waitFor } from "./helpers.ts";

let lab: Lab;
const accounts: Account[] = [];

beforeAll(async () => {
  lab = await startLab({ site: "hq" });
});
afterAll(async () => {
  await lab?.stop();
});
afterEach(async () => {
  for (const a of accounts.splice(0)) await a.stop();
  lab.pool.faults = {};
});

function account(clock: ManualClock) {
  const c = credentials(lab);
  const [host, port] = lab.pool.address.split(":");
  const redirects: Array<[RegistrarAddress, RegistrarAddress | undefined]> = [];
  const statuses: AccountStatus[] = [];
  const a = new Account(
    {
      clock,
      random: new SeededRandom(3),
      logger: silentLogger,
      connect: tlsFlowConnector({ ca: [lab.ca.cert] }),
      engineFactory: createTlsDskEngine,
      endpoint: c.endpoint,
      credentials: () => ({ cert: c.cert, key: c.key, notAfter: c.notAfter }),
      trustedRoots: [lab.ca.cert],
      innerTls: "1.2",
      onRedirect: (p, b) => redirects.push([p, b]),
    },
    [{ host: host!, port: Number(port), source: "static" }],
  );
  a.status.on((s) => statuses.push(s));
  accounts.push(a);
  return { a, redirects, statuses };
}

/** Registers, then makes every later authenticated REGISTER get `fault`, and refreshes by reconnecting. */
async function failAfterSa(fault: (typeof lab.pool)["faults"]) {
  const clock = new ManualClock(Date.now());
  const r = account(clock);
  Object.assign(lab.pool.faults, fault);
  const handshakesBefore = lab.pool.stats.handshakes;
  r.a.start();
  const settled = () => r.statuses.some((s) => s.state !== "registering");
  await waitFor(() => settled() || r.statuses.some((s) => s.retryInMs !== undefined));
  if (!settled()) {
    // An unsigned refusal earns one fresh authentication on a new flow to the same registrar,
    // after the hand-over wait (0–5 s); only the second one in a row is a failure.
    expect(r.statuses.filter((s) => s.state === "registering").at(-1)?.registrar).toBe(lab.pool.address);
    await advance(clock, 5_000, 500);
    await waitFor(settled);
  }
  return { ...r, clock, handshakes: () => lab.pool.stats.handshakes - handshakesBefore };
}

describe("the policy never acts on unsigned answers after the SA", () => {
  it("unsigned 301: not followed, nothing stored, a failed flow with normal backoff", async () => {
    const { a, redirects, statuses, handshakes } = await failAfterSa({
      unsignedAfterSa: {
        status: 301,
        reason: "Redirect request to Home Server",
        headers: [["Contact", "<sip:evil.example:5061;transport=TLS>;q=0.7"]],
      },
    });
    expect(redirects).toEqual([]);
    expect(a.registrars.map((r) => r.host)).not.toContain("evil.example");
    const failed = statuses.find((s) => s.state === "failed");
    expect(failed?.error?.code).toBe("unsigned-rejection");
    expect(handshakes()).toBe(2); // the first, and the one fresh authentication
    // Normal backoff: the first round waits 30–60 s (RFC 5626 §4.5), not at once and not for long.
    expect(failed?.retryInMs).toBeGreaterThanOrEqual(15_000);
    expect(failed?.retryInMs).toBeLessThanOrEqual(60_000);
  });

  it("unsigned 403 whose ms-diagnostics says certificate revoked: not sign-in-required", async () => {
    const { statuses } = await failAfterSa({
      unsignedAfterSa: {
        status: 403,
        reason: "Forbidden",
        headers: [
          ["ms-diagnostics", `${LAB_DIAGNOSTIC.certificateRevoked};reason="Certificate has been revoked"`],
        ],
      },
    });
    expect(statuses.map((s) => s.state)).not.toContain("sign-in-required");
    expect(statuses.find((s) => s.state === "failed")?.error?.code).toBe("unsigned-rejection");
  });

  it("unsigned 503 with a huge Retry-After: normal backoff, not the server's hour", async () => {
    const { statuses } = await failAfterSa({
      unsignedAfterSa: {
        status: 503,
        reason: "Service Unavailable",
        headers: [["Retry-After", "4294967295"]],
      },
    });
    const failed = statuses.find((s) => s.state === "failed");
    expect(failed?.retryInMs).toBeLessThanOrEqual(60_000);
  });

  it("signed 503 with Retry-After: 0: at most one new attempt in the next minute", async () => {
    const { statuses, clock } = await failAfterSa({
      signedRefusal: { status: 503, reason: "Service Unavailable", headers: [["Retry-After", "0"]] },
    });
    expect(statuses.find((s) => s.state === "failed")?.retryInMs).toBe(30_000);
    const before = lab.pool.stats.connections;
    await advance(clock, 59_999, 500);
    expect(lab.pool.stats.connections - before).toBeLessThanOrEqual(1);
  });
});

describe("signed refusals still act, by ErrorId", () => {
  it("a signed 403 with the certificate-revoked ErrorId: sign-in-required", async () => {
    const { statuses } = await failAfterSa({
      signedRefusal: {
        status: 403,
        reason: "Forbidden",
        headers: [
          ["ms-diagnostics", `${LAB_DIAGNOSTIC.certificateRevoked};reason="Certificate has been revoked"`],
        ],
      },
    });
    expect(statuses.at(-1)?.state).toBe("sign-in-required");
  });

  it("a signed 403 whose text says certificate but whose ErrorId does not: retried, not sign-in", async () => {
    const { statuses } = await failAfterSa({
      signedRefusal: {
        status: 403,
        reason: "Forbidden",
        headers: [
          ["ms-diagnostics", '1010;reason="Certificate trust with next-hop server could not be established"'],
        ],
      },
    });
    expect(statuses.map((s) => s.state)).not.toContain("sign-in-required");
    expect(statuses.find((s) => s.state === "failed")?.error?.code).toBe("registration-forbidden");
  });

  it("a signed 301 is followed and stored", async () => {
    const { redirects } = await failAfterSa({
      signedRefusal: {
        status: 301,
        reason: "Redirect request to Home Server",
        headers: [["Contact", `<sip:${lab.sba.address};transport=TLS>;q=0.7`]],
      },
    });
    expect(redirects.map(([p]) => `${p.host}:${p.port}`)).toEqual([lab.sba.address]);
  });
});
