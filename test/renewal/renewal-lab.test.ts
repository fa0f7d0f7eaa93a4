/**
 * Certificate renewal against the lab's real web services (HTTPS, lab CA): sign in with the PIN
 * into a temp store, then renew through the certificate port (`/Cert`) with the stored
 * certificate. Also: a revoked certificate, unreachable web services, and the lifecycle driving
 * the real renewal.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtemp, readdir, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CertificateLifecycle,
  type CertLifecycleEvent,
  DAY_MS,
} from "../../firmware/accounts/cert-lifecycle.ts";
import { openStore, signInDeps } from "../../firmware/commands/identity.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { createLogger, silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import {
  CertificateRefusedError,
  isCertificateRefusal,
} from "../../firmware/provisioning/cert-auth-ticket.ts";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";
import type { HttpClient, HttpRequest } from "../../firmware/provisioning/http.ts";
import { type RenewalDeps, renewCertificate } from "../../firmware/provisioning/renewal.ts";
import { signIn } from "../../firmware/provisioning/resumable-sign-in.ts";
import type { IdentityStore } from "../../firmware/store/identity-store.ts";
import { type Lab, startLab } from "../lab/lab.ts";

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({
    site: "hq",
    users: [
      { extension: "4711", pin: "1234" },
      { extension: "4712", pin: "2345" },
    ],
  });
});
afterAll(async () => {
  await lab?.stop();
});

interface Phone {
  dir: string;
  store: IdentityStore;
  deps: RenewalDeps;
  requests: HttpRequest[];
}

/** A phone signed in with the PIN into a fresh temp store; its HTTP requests are recorded. */
async function signedInPhone(extension: string, pin: string): Promise<Phone> {
  const dir = await mkdtemp(join(tmpdir(), "handset-renewal-"));
  const random = new CryptoRandom();
  const store = openStore(dir, random);
  const deps = signInDeps({
    store,
    ca: [lab.ca.cert],
    random,
    clock: new SystemClock(),
    logger: silentLogger,
  });
  await signIn(deps, { certProvUrl: lab.ready.certProv, extension, pin, trustedRoots: [lab.ca.cert] });
  const requests: HttpRequest[] = [];
  const http: HttpClient = {
    request: (r) => {
      requests.push(r);
      return deps.http.request(r);
    },
  };
  return { dir, store, deps: { ...deps, http }, requests };
}

/** 4711's phone, signed in once and shared by the tests that do not revoke it (key generation is slow). */
let shared: Promise<Phone> | undefined;
const phone4711 = () => {
  shared ??= signedInPhone("4711", "1234");
  return shared;
};

async function filesOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of await readdir(dir)) out[f] = await readFile(join(dir, f), "utf8");
  return out;
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}

describe("renewCertificate against the lab", () => {
  it("replaces the credential with a new certificate and key, through the /Cert port", async () => {
    const phone = await phone4711();
    const before = (await phone.store.load())!;
    const old = before.credential!;
    const ticketsBefore = lab.web.stats.ticketsIssued;

    // The old credential must still be the stored one while the new certificate is requested.
    let storedDuringRequest: string | undefined;
    const inner = phone.deps.http;
    const http: HttpClient = {
      request: async (r) => {
        if (r.url.endsWith("/WebTicket_Proof"))
          storedDuringRequest = (await phone.store.load())?.credential?.certPem;
        return inner.request(r);
      },
    };
    const record = await renewCertificate({ ...phone.deps, http }, { certProvUrl: lab.ready.certProv });

    const cred = record.credential!;
    expect(storedDuringRequest).toBe(old.certPem);
    expect(cred.uri).toBe(old.uri);
    expect(cred.keyPem).not.toBe(old.keyPem);
    const cert = new X509Certificate(cred.certPem);
    const oldCert = new X509Certificate(old.certPem);
    expect(cert.serialNumber).not.toBe(oldCert.serialNumber);
    expect(cred.serial).toBe(cert.serialNumber);
    expect(cert.checkPrivateKey(createPrivateKey(cred.keyPem))).toBe(true);
    expect(cert.checkIssued(new X509Certificate(lab.ca.cert))).toBe(true);
    expect(cert.subject).toContain("CN=4711@lab.test");
    expect(cred.notAfter).toBe(new Date(cert.validTo).getTime());
    expect(lab.directory.isPublished(old.uri, cred.certPem)).toBe(true);
    // The old certificate was not revoked by the renewal: it stays valid until it lapses.
    expect(lab.directory.isRevoked(old.uri, old.certPem)).toBe(false);

    // Everything else in the record is unchanged; the store holds the new credential.
    const { credential: _n, ...restAfter } = record;
    const { credential: _o, ...restBefore } = before;
    expect(restAfter).toEqual(restBefore);
    expect((await phone.store.load())!.credential).toEqual(cred);

    // The ticket came from the certificate port, not the PIN port.
    const urls = phone.requests.map((r) => `${r.method} ${new URL(r.url).pathname}`);
    expect(urls).toContain("POST /WebTicket/WebTicketService.svc/Cert");
    expect(urls.some((u) => u.endsWith("/Pin"))).toBe(false);
    expect(lab.web.stats.ticketsIssued).toBe(ticketsBefore + 1);
    const rst = phone.requests.find((r) => r.url.endsWith("/Cert"))!;
    expect(rst.headers?.["Authorization"]).toBeUndefined();

    // The renewed certificate renews again.
    const again = await renewCertificate(phone.deps, { certProvUrl: lab.ready.certProv });
    expect(again.credential!.certPem).not.toBe(cred.certPem);
  });

  it("fails with a certificate refusal once the user's certificates are revoked; store untouched", async () => {
    const phone = await signedInPhone("4712", "2345");
    lab.directory.revokeAll(lab.directory.byExtension("4712")!);
    const bytes = await filesOf(phone.dir);

    const err = await failure(renewCertificate(phone.deps, { certProvUrl: lab.ready.certProv }));
    // The pool's fault is the generic 28020 "No valid security token." — the same for a revoked,
    // unpublished, expired or badly signed token — so it maps to ticket-rejected from the
    // certificate port, which isCertificateRefusal (and so the lifecycle) treats as revoked.
    expect(err).toBeInstanceOf(CertificateRefusedError);
    expect(err).toMatchObject({ code: "ticket-rejected", diagnosticId: 28020, status: 500 });
    expect(isCertificateRefusal(err)).toBe(true);
    expect(await filesOf(phone.dir)).toEqual(bytes);
  });

  it("fails with server-unreachable when the web services are down; store byte-identical", async () => {
    const phone = await phone4711();
    const bytes = await filesOf(phone.dir);
    lab.web.setReachable(false);
    try {
      const err = await failure(renewCertificate(phone.deps, { certProvUrl: lab.ready.certProv }));
      expect(err).toBeInstanceOf(ProvisioningError);
      expect(err).toMatchObject({ code: "server-unreachable" });
      expect(isCertificateRefusal(err)).toBe(false);
    } finally {
      lab.web.setReachable(true);
    }
    expect(await filesOf(phone.dir)).toEqual(bytes);
  });
});

describe("CertificateLifecycle driving the real renewal", () => {
  it("retries while unreachable, renews when back, and reports revocation", async () => {
    const phone = await phone4711();
    const clock = new ManualClock(Date.now());
    const logs: string[] = [];
    let validity = (await phone.store.load())!.credential!;
    // The PIN-issued certificate is presented as 121 days old, so its renewal is due at once.
    let age = 121 * DAY_MS;
    const lifecycle = new CertificateLifecycle({
      clock,
      random: new SeededRandom(7),
      logger: createLogger((r) => logs.push(r.message)),
      renew: async () => {
        const r = await renewCertificate(phone.deps, { certProvUrl: lab.ready.certProv });
        validity = r.credential!;
        age = 0;
      },
      credential: () => ({ notBefore: validity.notBefore - age, notAfter: validity.notAfter - age }),
    });
    const events: CertLifecycleEvent[] = [];
    const next = () =>
      new Promise<CertLifecycleEvent>((resolve) => {
        const off = lifecycle.events.on((e) => {
          if (e.type === "renewal-due") return;
          events.push(e);
          off();
          resolve(e);
        });
      });

    lifecycle.start();
    lab.web.setReachable(false);
    let outcome = next();
    clock.advance(0);
    const failed = await outcome;
    lab.web.setReachable(true);
    expect(failed).toMatchObject({ type: "renewal-failed", code: "server-unreachable" });
    const oldSerial = validity.serial;

    outcome = next();
    clock.advance((failed as { retryInMs: number }).retryInMs);
    expect(await outcome).toMatchObject({ type: "renewed" });
    expect(validity.serial).not.toBe(oldSerial);
    expect(clock.pendingTimers()).toBe(1);

    lab.directory.revokeAll(lab.directory.byExtension("4711")!);
    outcome = next();
    clock.advance(120 * DAY_MS);
    expect(await outcome).toEqual({ type: "revoked", code: "ticket-rejected" });
    expect(clock.pendingTimers()).toBe(0);
    expect(lifecycle.started).toBe(false);
  });
});
