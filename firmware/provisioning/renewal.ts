/**
 * Certificate renewal without the PIN: the current certificate buys a web ticket at the
 * certificate port, a fresh key pair's CSR buys a new certificate (GetAndPublishCert), and the
 * credential is replaced in one atomic store update.
 *
 *   metadata ─► ticket (current cert) ──┬─► CSR (CN = current uri) ─► certificate ─► key check
 *   key generation (parallel) ──────────┘                                  └─► one atomic update
 *
 * Nothing is written before the new certificate and key are both in hand and match, so any
 * failure (network, refusal, power cut) leaves the stored record exactly as it was: the old
 * certificate stays in use until the new one replaces it. A power cut after the server issued
 * the new certificate but before the write loses only that certificate; the old one is still
 * published and the next attempt starts over.
 */

import { HandsetError } from "../core/errors.ts";
import type { IdentityRecord } from "../store/identity-store.ts";
import { discoverCertEndpoint, requestWebTicketWithCertificate } from "./cert-auth-ticket.ts";
import { assertCertMatchesKey, getAndPublishCert } from "./cert-provisioning.ts";
import { createCsr } from "./csr.ts";
import { ProvisioningError } from "./errors.ts";
import type { SignInDeps } from "./resumable-sign-in.ts";

/** Renewal needs exactly what sign-in needs (the store, HTTPS, keys, time). */
export type RenewalDeps = SignInDeps;

export interface RenewalRequest {
  certProvUrl: string;
}

/** No credential to renew (never signed in, or signed out meanwhile). */
export const NOT_SIGNED_IN = "not-signed-in";
/** The stored credential changed while the renewal ran (e.g. a new PIN sign-in); nothing written. */
export const CREDENTIAL_CHANGED = "credential-changed";

function sameUri(a: string, b: string): boolean {
  const bare = (u: string) => u.replace(/^sips?:/i, "").toLowerCase();
  return bare(a) === bare(b);
}

/** Renews the stored certificate; resolves with the record as stored. */
export async function renewCertificate(deps: RenewalDeps, req: RenewalRequest): Promise<IdentityRecord> {
  const { http, random, clock, logger, store } = deps;
  const record = await store.load();
  const current = record?.credential;
  if (!record || !current) throw new HandsetError(NOT_SIGNED_IN, "No certificate to renew");
  logger.info("renewing certificate", {
    uri: current.uri,
    serial: current.serial,
    notAfter: current.notAfter,
  });

  const keyPromise = deps.generateKeyPair();
  keyPromise.catch(() => {}); // observed below; avoid an unhandled rejection if the ticket fails first

  const endpoint = await discoverCertEndpoint(http, req.certProvUrl, logger);
  const ticket = await requestWebTicketWithCertificate(http, {
    portUrl: endpoint.certPortUrl,
    appliesTo: endpoint.certProv.authUri,
    certPem: current.certPem,
    keyPem: current.keyPem,
    deviceId: record.deviceId,
    random,
    clock,
    logger,
  });
  if (ticket.nameIdentifier && !sameUri(ticket.nameIdentifier, current.uri))
    throw new ProvisioningError(
      "malformed-response",
      `The web ticket names ${ticket.nameIdentifier}, not ${current.uri}`,
    );

  const key = await keyPromise;
  const csrPem = createCsr({
    publicKeyPem: key.publicKeyPem,
    privateKeyPem: key.privateKeyPem,
    commonName: current.uri.replace(/^sips?:/i, ""),
  });
  const issued = await getAndPublishCert(http, {
    authUri: endpoint.certProv.authUri,
    ticket,
    ticketMustBeSigned: endpoint.certProv.ticketMustBeSigned,
    csrPem,
    deviceId: record.deviceId,
    entity: current.uri,
    random,
    logger,
  });
  assertCertMatchesKey(issued.certPem, key.privateKeyPem);
  const validity = deps.certValidity(issued.certPem);

  const stored = await store.update((r) => {
    if (r.credential?.certPem !== current.certPem)
      throw new HandsetError(CREDENTIAL_CHANGED, "The stored certificate changed during renewal");
    return {
      ...r,
      credential: { uri: current.uri, certPem: issued.certPem, keyPem: key.privateKeyPem, ...validity },
    };
  });
  logger.info("certificate renewed", { serial: validity.serial, notAfter: validity.notAfter });
  return stored;
}
