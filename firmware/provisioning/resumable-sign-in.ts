/**
 * Sign in once: extension + PIN → web ticket → key pair + CSR → certificate, with the store
 * updated after each step that must survive a power cut, so that an interrupted sign-in
 * resumes (the key is reused) or restarts cleanly, and a certificate never lands without its key.
 *
 *   metadata ─► ticket (PIN) ──┬─► key persisted ("key-generated") ─► CSR sent ("csr-sent")
 *   key generation (parallel) ─┘                                      └─► certificate + key, one atomic write
 *
 * The PIN is used for one HTTP request and dropped; it is never stored or logged. A wrong PIN
 * changes nothing in the store (the key generated alongside is discarded unless the ticket came).
 */
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { IdentityRecord, IdentityStore } from "../store/identity-store.ts";
import { assertCertMatchesKey, getAndPublishCert } from "./cert-provisioning.ts";
import { createCsr } from "./csr.ts";
import { ProvisioningError } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import { discoverPinEndpoint } from "./sign-in-steps.ts";
import { requestWebTicketWithPin } from "./web-ticket.ts";

export type SignInStep = "metadata" | "ticket" | "key" | "csr" | "certificate" | "stored";

export interface SignInDeps {
  store: IdentityStore;
  http: HttpClient;
  random: Random;
  clock: Clock;
  logger: Logger;
  generateKeyPair: () => Promise<{ publicKeyPem: string; privateKeyPem: string }>;
  /** Reads a certificate's validity; injected so provisioning stays free of I/O-layer imports. */
  certValidity: (certPem: string) => { notBefore: number; notAfter: number; serial?: string };
}

export interface SignInRequest {
  certProvUrl: string;
  extension: string;
  pin: string;
  trustedRoots: string[];
  onStep?: (step: SignInStep, ms: number) => void;
}

export interface SignInResult {
  record: IdentityRecord;
  uri: string;
  timings: Partial<Record<SignInStep, number>>;
}

export async function signIn(deps: SignInDeps, req: SignInRequest): Promise<SignInResult> {
  const { store, http, random, clock, logger } = deps;
  const timings: Partial<Record<SignInStep, number>> = {};
  let t = clock.monotonic();
  const step = (s: SignInStep) => {
    const now = clock.monotonic();
    timings[s] = Math.round((now - t) * 10) / 10;
    t = now;
    req.onStep?.(s, timings[s]!);
    logger.info("sign-in step", { step: s });
  };

  let record = await store.loadOrCreate();
  const resumedKey = record.signIn?.keyPem && record.signIn.publicKeyPem ? record.signIn : undefined;
  // Key generation runs while the PIN travels: it is the slowest step and needs nothing from the server.
  const keyPromise = resumedKey
    ? Promise.resolve({ publicKeyPem: resumedKey.publicKeyPem!, privateKeyPem: resumedKey.keyPem! })
    : deps.generateKeyPair();
  keyPromise.catch(() => {}); // observed below; avoid an unhandled rejection if the ticket fails first

  const endpoint = await discoverPinEndpoint(http, req.certProvUrl);
  step("metadata");
  const ticket = await requestWebTicketWithPin(http, {
    portUrl: endpoint.pinPortUrl,
    appliesTo: endpoint.certProv.authUri,
    username: req.extension,
    pin: req.pin,
    deviceId: record.deviceId,
    random,
  });
  step("ticket");
  const uri = ticket.nameIdentifier;
  if (!uri) throw new ProvisioningError("malformed-response", "The web ticket names no SIP user");

  const key = await keyPromise;
  if (!resumedKey) {
    record = await store.update((r) => ({
      ...r,
      signIn: {
        stage: "key-generated",
        keyPem: key.privateKeyPem,
        publicKeyPem: key.publicKeyPem,
        uri,
        startedAt: clock.now(),
      },
    }));
  }
  step("key");

  const csrPem = createCsr({
    publicKeyPem: key.publicKeyPem,
    privateKeyPem: key.privateKeyPem,
    commonName: uri.replace(/^sips?:/i, ""),
  });
  record = await store.update((r) => ({ ...r, signIn: { ...r.signIn!, stage: "csr-sent", uri } }));
  step("csr");

  const issued = await getAndPublishCert(http, {
    authUri: endpoint.certProv.authUri,
    ticket,
    ticketMustBeSigned: endpoint.certProv.ticketMustBeSigned,
    csrPem,
    deviceId: record.deviceId,
    entity: uri,
    random,
  });
  assertCertMatchesKey(issued.certPem, key.privateKeyPem);
  step("certificate");

  const validity = deps.certValidity(issued.certPem);
  record = await store.update((r) => {
    const { signIn: _done, ...rest } = r;
    return {
      ...rest,
      certProvUrl: req.certProvUrl,
      trustedRoots: req.trustedRoots,
      credential: { uri, certPem: issued.certPem, keyPem: key.privateKeyPem, ...validity },
    };
  });
  step("stored");
  return { record, uri, timings };
}
