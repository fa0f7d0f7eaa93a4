/**
 * The discovery order (DESIGN.md "The life of the phone", behaviour §1–3): what the phone will
 * try, in order, built from every source it has.
 *
 * Registrars: DHCP option 120 (the first DHCP answer carrying an FQDN wins, §1.1), then DNS
 * (SRV, then A records; dns-fallback.ts), then static configuration, then the registrar cached in
 * flash from the last successful registration (§2, "surviving DHCP or DNS outages").
 * NTP servers: DHCP 42, DHCP 4, SRV _ntp._udp.<domain>, static, then time.windows.com (§3).
 * The provisioning URL: DHCP 43, else static.
 *
 * DNS needs a domain: the configured SIP domain if any, else DHCP option 15 (that LPE searches
 * there is UNCONFIRMED in the notes; a PIN-only phone has no SIP domain before sign-in).
 */
import type { Random } from "../core/random.ts";
import { DiscoveryError } from "./dhcp-codec.ts";
import type { DhcpDiscovery } from "./dhcp-options.ts";
import { findNtpByDns, findRegistrarsByDns, type PlannedRegistrar, type Resolver } from "./dns-fallback.ts";

export type { PlannedRegistrar, RegistrarSource } from "./dns-fallback.ts";

/** The registrar(s) the phone last registered to, kept in flash by the store. */
export interface RegistrarCache {
  load(): Promise<Array<{ host: string; port: number }> | undefined>;
}

export interface PlannedNtpServer {
  host: string;
  port: number;
  source: "dhcp" | "dns-srv" | "static" | "default";
}

export interface PlanProblem {
  code: string;
  message: string;
  option?: number;
}

export interface DiscoveryPlan {
  certProvUrl?: string;
  registrars: PlannedRegistrar[];
  ntpServers: PlannedNtpServer[];
  timeOffsetS?: number;
  dnsServers: string[];
  domain?: string;
  posixTz?: string;
  tzName?: string;
  problems: PlanProblem[];
}

export interface StaticDiscoveryConfig {
  registrars?: Array<{ host: string; port: number }>;
  certProvUrl?: string;
  ntpServers?: Array<{ host: string; port: number }>;
  domain?: string;
}

export interface PlanInputs {
  random: Random;
  dhcp?: DhcpDiscovery;
  /** Problems met before the plan (a DHCP timeout, say); reported in the plan. */
  problems?: DiscoveryError[];
  resolver?: Resolver;
  /** The SIP domain for DNS; overrides static and DHCP 15. */
  domain?: string;
  staticConfig?: StaticDiscoveryConfig;
  cache?: RegistrarCache;
  /** Last resort NTP server; time.windows.com as LPE does. `null` leaves it out. */
  defaultNtp?: { host: string; port: number } | null;
}

export const SIP_TLS_PORT = 5061;
export const NTP_PORT = 123;

export function toPlanProblem(e: DiscoveryError): PlanProblem {
  return e.option === undefined
    ? { code: e.code, message: e.message }
    : { code: e.code, message: e.message, option: e.option };
}

export async function buildDiscoveryPlan(i: PlanInputs): Promise<DiscoveryPlan> {
  const problems: DiscoveryError[] = [...(i.problems ?? []), ...(i.dhcp?.problems ?? [])];
  const registrars: PlannedRegistrar[] = [];
  const ntp: PlannedNtpServer[] = [];
  const addRegistrar = (r: PlannedRegistrar) => {
    const key = `${r.host.toLowerCase()}:${r.port}`;
    if (!registrars.some((x) => `${x.host.toLowerCase()}:${x.port}` === key)) registrars.push(r);
  };
  const addNtp = (n: PlannedNtpServer) => {
    if (!ntp.some((x) => x.host.toLowerCase() === n.host.toLowerCase() && x.port === n.port)) ntp.push(n);
  };

  const d = i.dhcp;
  for (const host of d?.sipServers ?? [])
    addRegistrar({ host, port: SIP_TLS_PORT, source: "dhcp", transport: "tls" });
  for (const host of d?.ntpServers ?? []) addNtp({ host, port: NTP_PORT, source: "dhcp" });

  const domain = i.domain ?? i.staticConfig?.domain ?? d?.domain;
  if (domain && i.resolver) {
    const [reg, time] = await Promise.all([
      findRegistrarsByDns(domain, i.resolver, i.random),
      findNtpByDns(domain, i.resolver, i.random),
    ]);
    for (const r of reg.registrars) addRegistrar(r);
    for (const n of time.servers) addNtp({ ...n, source: "dns-srv" });
    problems.push(...reg.problems, ...time.problems);
  }

  for (const r of i.staticConfig?.registrars ?? [])
    addRegistrar({ ...r, source: "static", transport: "tls" });
  for (const n of i.staticConfig?.ntpServers ?? []) addNtp({ ...n, source: "static" });

  if (i.cache) {
    try {
      for (const r of (await i.cache.load()) ?? []) addRegistrar({ ...r, source: "cache", transport: "tls" });
    } catch (err) {
      problems.push(
        new DiscoveryError(
          "cache-unreadable",
          `Cached registrar unreadable: ${(err as Error)?.message ?? err}`,
        ),
      );
    }
  }
  if (i.defaultNtp !== null)
    addNtp({ ...(i.defaultNtp ?? { host: "time.windows.com", port: NTP_PORT }), source: "default" });

  const certProvUrl = d?.certProvUrl ?? i.staticConfig?.certProvUrl;
  return {
    ...(certProvUrl ? { certProvUrl } : {}),
    registrars,
    ntpServers: ntp,
    ...(d?.timeOffsetS !== undefined ? { timeOffsetS: d.timeOffsetS } : {}),
    dnsServers: d?.dnsServers ?? [],
    ...(domain ? { domain } : {}),
    ...(d?.posixTz ? { posixTz: d.posixTz } : {}),
    ...(d?.tzName ? { tzName: d.tzName } : {}),
    problems: problems.map(toPlanProblem),
  };
}
