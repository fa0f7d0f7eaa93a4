/** Composition helpers shared by the commands that use the phone's stored identity. */
import { X509Certificate } from "node:crypto";
import type { Clock } from "../core/clock.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { nodeFileSystem } from "../platform/file-system.ts";
import { createHttpsClient } from "../platform/https-client.ts";
import { generateRsaKeyPair } from "../platform/rsa-keygen.ts";
import type { SignInDeps } from "../provisioning/resumable-sign-in.ts";
import { IdentityStore } from "../store/identity-store.ts";

export function certValidity(certPem: string): { notBefore: number; notAfter: number; serial: string } {
  const x = new X509Certificate(certPem);
  return {
    notBefore: new Date(x.validFrom).getTime(),
    notAfter: new Date(x.validTo).getTime(),
    serial: x.serialNumber,
  };
}

export function openStore(dir: string, random: Random): IdentityStore {
  return new IdentityStore(nodeFileSystem, dir, { random });
}

export function signInDeps(o: {
  store: IdentityStore;
  ca: string[];
  random: Random;
  clock: Clock;
  logger: Logger;
}): SignInDeps {
  return {
    store: o.store,
    http: createHttpsClient({ ca: o.ca, clock: o.clock }),
    random: o.random,
    clock: o.clock,
    logger: o.logger,
    generateKeyPair: () => generateRsaKeyPair(2048),
    certValidity,
  };
}
