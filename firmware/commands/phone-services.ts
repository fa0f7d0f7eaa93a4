/**
 * Binds the phone's ports (firmware/phone/services.ts) to the real parts: DHCPINFORM + DNS +
 * static discovery, SNTP into the clock service, the flash store, PIN sign-in, and the
 * registrar policy (accounts/) over SIP/TLS with TLS-DSK. Composition only: no protocol here.
 */
import { networkInterfaces } from "node:os";
import { Account, type AccountStatus, type RegistrarAddress } from "../accounts/account.ts";
import { CertificateLifecycle } from "../accounts/cert-lifecycle.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { ClockService } from "../discovery/clock-service.ts";
import { DiscoveryError } from "../discovery/dhcp-codec.ts";
import { buildDiscoveryPlan, type DiscoveryPlan } from "../discovery/discovery-plan.ts";
import type { MissedCallStore } from "../phone/missed-store.ts";
import type { DiscoveryResult, PhoneServices, RegistrationStatus } from "../phone/services.ts";
import { createDnsResolver } from "../platform/dns-resolver.ts";
import { createTlsDskEngine } from "../platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../platform/tls-flow.ts";
import { PinTicketCache } from "../provisioning/ticket-cache.ts";
import type { FlowConnector } from "../sip/flow.ts";
import type { MediaPortFactory } from "../sip/session/media-port.ts";
import type { InnerTls } from "../sip/tls-dsk/engine.ts";
import {
  type IdentityRecord,
  type IdentityStore,
  STORE_DAMAGED,
  StoreError,
} from "../store/identity-store.ts";
import { type Diagnostics, diagnostics, diagnosticsRows } from "../telemetry/diagnostics.ts";
import { informOverUdp, sntpOverUdp } from "./discover.ts";
import { signInDeps } from "./identity.ts";
import { factoryResetStore } from "./store.ts";

/**
 * Sign-in and renewal (XML, WS-Security signing, node-forge for the CSR) are loaded when first
 * needed: a registered phone runs for months without them, and loading them at boot costs
 * several MB of the service's memory (issue 10's RSS goal). esbuild keeps them in handset.mjs but
 * runs their module code only on this first import.
 */
const provisioning = {
  signIn: async () => (await import("../provisioning/resumable-sign-in.ts")).signIn,
  renew: async () => (await import("../provisioning/renewal.ts")).renewCertificate,
};

export interface PhoneNetworkConfig {
  dhcp?: { interface?: string; server?: { host: string; port: number } };
  ntp?: { host: string; port: number };
  dnsServer?: string;
  domain?: string;
  staticRegistrars?: Array<{ host: string; port: number }>;
  staticCertProvUrl?: string;
  /** name → "ip:port": a static host table (the lab's names; a site without DNS). */
  hosts?: Record<string, string>;
  innerTls?: InnerTls;
  failbackProbeMs?: number;
  /** Hand-over wait after a lost registration, U(0, this) ms (accounts/account.ts; default 40 000). */
  lostRegistrationSpreadMs?: number;
  dhcpTimeoutMs?: number;
}

export const VERSION = "0.1.0";

/**
 * The address and MAC the phone is on: the configured DHCP interface, else the first external
 * IPv4 interface, else loopback (a lab on one machine).
 */
export function localInterface(
  preferred?: string,
  list: ReturnType<typeof networkInterfaces> = networkInterfaces(),
): { interface?: string; ip?: string; mac?: string } {
  const v4 = Object.entries(list).flatMap(([name, addrs]) =>
    (addrs ?? []).filter((a) => a.family === "IPv4").map((a) => ({ name, ...a })),
  );
  const pick =
    v4.find((a) => a.name === preferred) ?? v4.find((a) => !a.internal) ?? v4.find((a) => a.internal);
  if (!pick) return {};
  return { interface: pick.name, ip: pick.address, mac: pick.mac };
}

function splitHostPort(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(":");
  return { host: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

export function createPhoneServices(o: {
  config: PhoneNetworkConfig;
  store: IdentityStore;
  trustedRoots: string[];
  clock: ClockService;
  random: Random;
  logger: Logger;
  /** SIP/TLS flows; tlsFlowConnector by default (tests wrap it to watch the wire). */
  connect?: FlowConnector;
  /** The interface's address and MAC (default: localInterface from the OS). */
  network?: () => { interface?: string; ip?: string; mac?: string };
  /** Certificate lifecycle events (renewal due, renewed, revoked, expired), e.g. for the fleet. */
  onCertificate?: (e: { type: string }) => void;
  /**
   * The media port of each call (firmware/platform/call-media.ts). Absent: the phone registers
   * and shows its line, but places and takes no calls.
   */
  media?: MediaPortFactory;
  /** Where the missed-calls list survives a restart (the flash store's directory). */
  missedCalls?: MissedCallStore;
}): PhoneServices & { diagnostics(): Promise<Diagnostics> } {
  const { config, store, clock, random, logger } = o;
  let record: IdentityRecord | undefined;
  let plan: DiscoveryPlan | undefined;
  let discovered: DiscoveryResult | undefined;
  /** The registration policy's latest word (registrar in use, primary or not), for diagnostics. */
  let lastStatus: RegistrationStatus | undefined;
  /** The time server whose answer set the clock. */
  let ntpUsed: { server: string; offsetMs: number } | undefined;
  /** A retried sign-in reuses its web ticket: one `#`, one PIN on the wire (issue 9 §4). */
  let ticketCache = new PinTicketCache();
  /** Set when every stored generation was damaged; cleared by the next successful sign-in. */
  let damaged: StoreError | undefined;
  const loadRecord = async () => {
    if (record) return record;
    try {
      record = await store.loadOrCreate();
    } catch (err) {
      if (!(err instanceof StoreError && err.code === STORE_DAMAGED)) throw err;
      // Nothing usable is left: the certificate is already lost, and a phone that only repeats
      // "damaged" is a dead phone on the wall. Say so (the phone shows it on the sign-in form),
      // start a fresh identity and let the user sign in again.
      logger.error("stored identity damaged; starting afresh for a new sign-in", { code: err.code });
      damaged = err;
      await store.reset();
      record = await store.loadOrCreate();
    }
    return record;
  };

  /** Resolves a registrar name through the static host table; the certificate must carry the name. */
  const address = (r: { host: string; port: number; source: string }): RegistrarAddress => {
    const mapped = config.hosts?.[r.host.toLowerCase()];
    if (mapped) return { ...splitHostPort(mapped), serverName: r.host, source: r.source };
    return { host: r.host, port: r.port, serverName: r.host, source: r.source };
  };

  return {
    version: VERSION,
    ...(o.media ? { media: o.media } : {}),
    ...(o.missedCalls ? { missedCalls: o.missedCalls } : {}),

    async discover(): Promise<DiscoveryResult> {
      const problems: DiscoveryError[] = [];
      let dhcp: Awaited<ReturnType<typeof informOverUdp>> | undefined;
      if (config.dhcp) {
        try {
          dhcp = await informOverUdp(config.dhcp, {
            clock,
            random,
            timeoutMs: config.dhcpTimeoutMs ?? 10_000,
          });
        } catch (err) {
          if (!(err instanceof DiscoveryError)) throw err;
          problems.push(err);
        }
      }
      const rec = await loadRecord();
      plan = await buildDiscoveryPlan({
        random,
        problems,
        resolver: createDnsResolver(
          config.dnsServer ? { servers: [config.dnsServer], timeoutMs: 2_000, tries: 1 } : {},
        ),
        ...(dhcp ? { dhcp: dhcp.info } : {}),
        ...(config.domain ? { domain: config.domain } : {}),
        staticConfig: {
          ...(config.staticRegistrars ? { registrars: config.staticRegistrars } : {}),
          ...(config.staticCertProvUrl ? { certProvUrl: config.staticCertProvUrl } : {}),
        },
        cache: {
          load: async () => (rec.registrars.lastAddresses ?? []).map((a) => splitHostPort(a)),
        },
        defaultNtp: null,
      });
      const certProvUrl = plan.certProvUrl ?? rec.certProvUrl;
      if (plan.registrars.length === 0 && !rec.registrars.primary) {
        throw new HandsetError("discovery-failed", "No registrar found by DHCP, DNS or configuration");
      }
      discovered = {
        ...(certProvUrl ? { certProvUrl } : {}),
        registrars: plan.registrars.map((r) => ({ host: r.host, port: r.port, source: r.source })),
        ntpServers: config.ntp
          ? [`${config.ntp.host}:${config.ntp.port}`]
          : plan.ntpServers.map((s) => `${s.host}:${s.port}`),
        ...(plan.timeOffsetS !== undefined ? { timeOffsetS: plan.timeOffsetS } : {}),
      };
      return discovered;
    },

    async setClock(d: DiscoveryResult) {
      for (const s of d.ntpServers) {
        try {
          // Measured against the base clock: set() takes an offset from it, not from the corrected time.
          const r = await sntpOverUdp(splitHostPort(s), {
            clock: clock.measurementClock(),
            random,
            timeoutMs: 2_000,
            tries: 2,
          });
          await clock.set({ offsetMs: r.offsetMs, server: r.server });
          ntpUsed = { server: r.server, offsetMs: r.offsetMs };
          return { offsetMs: r.offsetMs, source: r.server };
        } catch (err) {
          logger.warn("SNTP failed", { server: s, code: (err as HandsetError).code });
        }
      }
      throw new HandsetError("clock-unset", "Time could not be set from any NTP server");
    },

    async identity() {
      const rec = await loadRecord();
      const cred = rec.credential;
      // Before SNTP answers, "expired" may only mean the clock is wrong: keep the certificate and try.
      const usable = !!cred && (cred.notAfter > clock.now() || !clock.isSet());
      return {
        ...(cred ? { uri: cred.uri } : {}),
        hasCredential: usable,
        ...(damaged && !usable ? { damaged: { code: damaged.code, message: damaged.message } } : {}),
      };
    },

    async signIn(req) {
      const rec = await loadRecord();
      const certProvUrl = req.certProvUrl ?? rec.certProvUrl ?? plan?.certProvUrl;
      if (!certProvUrl)
        throw new HandsetError("discovery-failed", "No certificate provisioning service known");
      const deps = { ...signInDeps({ store, ca: o.trustedRoots, random, clock, logger }), ticketCache };
      const signIn = await provisioning.signIn();
      const result = await signIn(deps, {
        certProvUrl,
        extension: req.extension,
        pin: req.pin,
        trustedRoots: o.trustedRoots,
      });
      record = result.record;
      damaged = undefined;
      return { uri: result.uri };
    },

    register(d, onStatus, onLine) {
      let account: Account | undefined;
      let lifecycle: CertificateLifecycle | undefined;
      let stopped = false;
      /** Store writes in flight, awaited by stop(). */
      const writes = new Set<Promise<void>>();
      const track = (p: Promise<void>) => {
        writes.add(p);
        const done = () => writes.delete(p);
        p.then(done, done);
      };
      void (async () => {
        const rec = await loadRecord();
        const cred = rec.credential;
        const saved: RegistrarAddress[] = [];
        if (rec.registrars.primary)
          saved.push({ ...splitHostPort(rec.registrars.primary), source: "redirect-primary" });
        if (rec.registrars.backup)
          saved.push({ ...splitHostPort(rec.registrars.backup), source: "redirect-backup" });
        account = new Account(
          {
            clock,
            random,
            logger: logger.child("account"),
            connect: o.connect ?? tlsFlowConnector({ ca: o.trustedRoots, clock }),
            // Certificates are checked at the phone's clock (SNTP), never the OS's.
            engineFactory: (e) => createTlsDskEngine({ ...e, clock }),
            endpoint: { aor: cred?.uri ?? "sip:unknown", epid: rec.epid, instanceId: rec.instanceId },
            credentials: () => {
              const c = record?.credential;
              return c ? { cert: c.certPem, key: c.keyPem, notAfter: c.notAfter } : undefined;
            },
            trustedRoots: o.trustedRoots,
            innerTls: config.innerTls ?? "auto",
            ...(config.failbackProbeMs ? { failbackProbeMs: config.failbackProbeMs } : {}),
            ...(config.lostRegistrationSpreadMs !== undefined
              ? { lostRegistrationSpreadMs: config.lostRegistrationSpreadMs }
              : {}),
            onRedirect: (primary, backup) => {
              const p = `${primary.host}:${primary.port}`;
              const b = backup ? `${backup.host}:${backup.port}` : undefined;
              // Flash is written only when the record changes (an unchanged record is no write).
              track(
                store
                  .update((r) =>
                    r.registrars.primary === p && (b === undefined || r.registrars.backup === b)
                      ? r
                      : {
                          ...r,
                          registrars: {
                            ...r.registrars,
                            primary: p,
                            ...(b ? { backup: b } : {}),
                            updatedAt: clock.now(),
                          },
                        },
                  )
                  .then((r) => {
                    record = r;
                  })
                  // Flash trouble must not take the phone down: the registration goes on without it.
                  .catch((err: unknown) =>
                    logger.error("store update failed", { code: (err as HandsetError).code }),
                  ),
              );
            },
          },
          [...saved, ...d.registrars.map(address)],
        );
        // The account's line (a registered flow's core, identity and Contact): the phone's calls.
        if (onLine) account.lines.on(onLine);
        account.status.on((s: AccountStatus) => {
          if (s.state === "stopped" || stopped) return;
          const judgedByOurClock = s.error?.code?.startsWith("certificate-required") === true;
          if (s.state === "sign-in-required" && judgedByOurClock && !clock.isSet() && record?.credential) {
            // The certificate in flash judged by a clock SNTP has not set (e.g. "expires within the
            // hour" at an OS time a year ahead): not a sign-in; the phone retries once the time is set.
            // A registrar's own (signed) refusal of the certificate does not depend on our clock.
            onStatus({
              state: "failed",
              error: {
                code: "clock-invalid",
                message: `Time not set (${s.error?.message ?? "sign-in asked"})`,
              },
            });
            return;
          }
          const status: RegistrationStatus = {
            state: s.state,
            ...(s.registrar ? { registrar: s.registrar } : {}),
            ...(s.primary !== undefined ? { primary: s.primary } : {}),
            ...(s.error ? { error: s.error } : {}),
            ...(s.retryInMs !== undefined ? { retryInMs: s.retryInMs } : {}),
          };
          if ((s.state === "registered" || s.state === "limited") && s.registrar && s.refresh === 0) {
            track(
              store
                .update((r) =>
                  r.registrars.lastAddresses?.length === 1 && r.registrars.lastAddresses[0] === s.registrar
                    ? r // the same registrar again: nothing to write (the clock saves lastGoodTime itself)
                    : {
                        ...r,
                        registrars: {
                          ...r.registrars,
                          lastAddresses: [s.registrar!],
                          updatedAt: clock.now(),
                        },
                        // Only a time SNTP vouched for (the OS clock may be years off before).
                        ...(clock.isSet() ? { lastGoodTime: clock.now() } : {}),
                      },
                )
                .then((r) => {
                  record = r;
                })
                .catch((err: unknown) =>
                  logger.error("store update failed", { code: (err as HandsetError).code }),
                ),
            );
          }
          lastStatus = status;
          onStatus(status);
        });
        // Renewal runs beside registration and never blocks it: with the web services unreachable
        // (a WAN cut at a branch) the old certificate keeps working and renewal retries with backoff.
        lifecycle = new CertificateLifecycle({
          clock,
          random,
          logger: logger.child("certificate"),
          credential: () => {
            const c = record?.credential;
            return c ? { notBefore: c.notBefore, notAfter: c.notAfter } : undefined;
          },
          renew: async () => {
            const certProvUrl = record?.certProvUrl ?? d.certProvUrl;
            if (!certProvUrl)
              throw new HandsetError("discovery-failed", "No certificate provisioning service known");
            const renewCertificate = await provisioning.renew();
            record = await renewCertificate(
              signInDeps({ store, ca: o.trustedRoots, random, clock, logger }),
              {
                certProvUrl,
              },
            );
          },
        });
        lifecycle.events.on((e) => {
          logger.info("certificate lifecycle", { type: e.type });
          o.onCertificate?.({ type: e.type });
          if (e.type === "expired" && !clock.isSet() && !stopped) {
            // Expired by a clock SNTP has not set: not a sign-in; the phone retries once the time is set.
            void account?.stop().catch(() => {});
            onStatus({
              state: "failed",
              error: { code: "clock-invalid", message: "Time not set: the certificate looks expired" },
            });
            return;
          }
          if ((e.type === "revoked" || e.type === "expired") && !stopped) {
            void account
              ?.stop()
              .catch((err: unknown) =>
                logger.warn("account stop failed", { code: (err as HandsetError).code }),
              );
            onStatus({
              state: "sign-in-required",
              error: { code: `certificate-${e.type}`, message: "Sign in again" },
            });
          }
        });
        if (!stopped) {
          account.start();
          lifecycle.start();
        }
      })().catch((err: unknown) => {
        onStatus({
          state: "failed",
          error: { code: (err as HandsetError).code ?? "internal", message: String((err as Error).message) },
        });
      });
      return {
        stop: async () => {
          stopped = true;
          lastStatus = undefined;
          lifecycle?.stop();
          await account?.stop({ unregister: true });
          // Stopped means stopped: no store write lands after this (a reboot or a test's cleanup).
          await Promise.all(writes);
        },
      };
    },

    async reprovision() {
      const rec = await loadRecord();
      if (!rec.credential) throw new HandsetError("not-signed-in", "No certificate to renew: sign in first");
      const certProvUrl = rec.certProvUrl ?? discovered?.certProvUrl;
      if (!certProvUrl)
        throw new HandsetError("discovery-failed", "No certificate provisioning service known");
      const renewCertificate = await provisioning.renew();
      record = await renewCertificate(signInDeps({ store, ca: o.trustedRoots, random, clock, logger }), {
        certProvUrl,
      });
      return { notAfter: record.credential?.notAfter ?? 0 };
    },

    async signOut() {
      await store.wipeCredential();
      record = await store.loadOrCreate();
    },

    async factoryReset() {
      lastStatus = undefined;
      ticketCache = new PinTicketCache();
      await factoryResetStore(store);
      record = undefined;
      plan = undefined;
      discovered = undefined;
    },

    async diagnostics() {
      let rec: IdentityRecord | undefined;
      try {
        rec = await store.load();
      } catch {
        rec = record;
      }
      if (rec) record = rec;
      return diagnostics({
        version: VERSION,
        ...(rec ? { record: rec } : {}),
        ...(lastStatus
          ? {
              registration: {
                state: lastStatus.state,
                ...(lastStatus.registrar ? { registrar: lastStatus.registrar } : {}),
                ...(lastStatus.primary !== undefined ? { primary: lastStatus.primary } : {}),
              },
            }
          : {}),
        network: (o.network ?? (() => localInterface(config.dhcp?.interface)))(),
        ntp: { set: clock.isSet(), ...(ntpUsed ?? {}) },
        ...(discovered ? { discovery: discovered } : {}),
      });
    },

    async networkInfo() {
      return diagnosticsRows(await this.diagnostics());
    },
  };
}
