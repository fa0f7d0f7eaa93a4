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
 *
 * One key press of `#`, one PIN on the wire (issue 9 §4): the phone retries a sign-in that failed
 * on the network, and after the ticket that would send the PIN again. With `ticketCache` (kept in
 * memory by the caller for the phone's life, never in flash) a retry of the same sign-in reuses
 * the ticket while it is valid; the PIN is sent only when there is none. A ticket is dropped once
 * its certificate is stored, and a different extension or PIN never matches it.
 */
import { createHash } from "node:crypto";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { IdentityRecord, IdentityStore } from "../store/identity-store.ts";
import { assertCertMatchesKey, getAndPublishCert } from "./cert-provisioning.ts";
import { createCsr } from "./csr.ts";
import { ProvisioningError } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import { discoverPinEndpoint } from "./sign-in-steps.ts";
import { PinTicketCache } from "./ticket-cache.ts";
import { requestWebTicketWithPin, type WebTicket } from "./web-ticket.ts";

export { PinTicketCache };

/** Failures after the ticket that leave it usable for the retry (nothing was refused). */
const RETRY_KEEPS_TICKET = new Set(["server-unreachable", "timeout"]);

/** The cache key of one sign-in: service, extension and a hash of the PIN (never the PIN). */
function ticketKey(req: { certProvUrl: string; extension: string; pin: string }, deviceId: string): string {
  return createHash("sha256")
    .update(`${req.certProvUrl}\n${req.extension}\n${req.pin}\n${deviceId}`)
    .digest("hex");
}

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
  /** Tickets of unfinished sign-ins, reused by a retry instead of the PIN (see the header). */
  ticketCache?: PinTicketCache;
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
  const cacheKey = ticketKey(req, record.deviceId);
  const cached = deps.ticketCache?.take(cacheKey, clock.now());
  if (cached) logger.info("reusing the web ticket of this sign-in; PIN not sent again");
  const ticket =
    cached ??
    (await requestWebTicketWithPin(http, {
      portUrl: endpoint.pinPortUrl,
      appliesTo: endpoint.certProv.authUri,
      username: req.extension,
      pin: req.pin,
      deviceId: record.deviceId,
      random,
    }));
  step("ticket");
  const uri = ticket.nameIdentifier;
  if (!uri) throw new ProvisioningError("malformed-response", "The web ticket names no SIP user");
  if (!cached) deps.ticketCache?.put(cacheKey, ticket);

  try {
    return await finishSignIn(ticket, uri);
  } catch (err) {
    // Only a retry after a network failure may reuse the ticket; after a refusal it is suspect.
    if (!(err instanceof ProvisioningError && RETRY_KEEPS_TICKET.has(err.code)))
      deps.ticketCache?.delete(cacheKey);
    throw err;
  }

  async function finishSignIn(ticket: WebTicket, uri: string): Promise<SignInResult> {
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
    deps.ticketCache?.delete(cacheKey);
    step("stored");
    return { record, uri, timings };
  }
}
