/**
 * DNS fallback for the registrar and the time server (lync-phone-behaviour.md §2, §3).
 *
 * Registrar, in Lync Phone Edition's order ([S6]: internal TLS, internal TCP, external TLS):
 *   1. SRV _sipinternaltls._tcp.<domain>   (TLS, usually 5061)
 *   2. SRV _sipinternal._tcp.<domain>      (TCP)
 *   3. SRV _sip._tls.<domain>              (TLS, usually 443, the edge)
 *   4. A   sipinternal.<domain> :5061, :443
 *   5. A   sip.<domain>         :5061, :443
 *   6. A   sipexternal.<domain> :5061, :443   (the OCS 2007 R2 phone's last resort, [S9])
 * Records within one SRV name are ordered per RFC 2782 (priority ascending, weighted random
 * among equal priorities; a lone "." target means "not offered here").
 * Time server: SRV _ntp._udp.<domain>.
 */
import type { Random } from "../core/random.ts";
import { DiscoveryError } from "./dhcp-codec.ts";

export interface SrvRecord {
  name: string;
  port: number;
  priority: number;
  weight: number;
}

/**
 * DNS lookups as a port (platform/dns-resolver.ts: node:dns with configurable servers). A name
 * that does not exist or has no such records must reject with DiscoveryError "dns-not-found";
 * any other failure with another code (it is then reported as a problem).
 */
export interface Resolver {
  resolveSrv(name: string): Promise<SrvRecord[]>;
  resolve4(name: string): Promise<string[]>;
}

export type RegistrarSource = "dhcp" | "dns-srv" | "dns-a" | "static" | "cache";

export interface PlannedRegistrar {
  host: string;
  port: number;
  source: RegistrarSource;
  transport?: "tls" | "tcp";
}

/** RFC 2782 ordering: priority ascending; within a priority, weighted random selection. */
export function orderSrv(records: SrvRecord[], random: Random): SrvRecord[] {
  const usable = records.filter((r) => r.name !== "" && r.name !== ".");
  const priorities = [...new Set(usable.map((r) => r.priority))].sort((a, b) => a - b);
  const out: SrvRecord[] = [];
  for (const p of priorities) {
    // zero-weight records first, so that they have a small chance when others exist (RFC 2782)
    const same = usable.filter((r) => r.priority === p);
    const pool = [...same.filter((r) => r.weight === 0), ...same.filter((r) => r.weight !== 0)];
    while (pool.length > 0) {
      const total = pool.reduce((n, r) => n + r.weight, 0);
      const pick = Math.floor(random.unit() * (total + 1));
      let running = 0;
      let index = pool.length - 1;
      for (let i = 0; i < pool.length; i++) {
        running += pool[i]!.weight;
        if (running >= pick) {
          index = i;
          break;
        }
      }
      out.push(pool.splice(index, 1)[0]!);
    }
  }
  return out;
}

export const REGISTRAR_SRV: ReadonlyArray<{ prefix: string; transport: "tls" | "tcp" }> = [
  { prefix: "_sipinternaltls._tcp", transport: "tls" },
  { prefix: "_sipinternal._tcp", transport: "tcp" },
  { prefix: "_sip._tls", transport: "tls" },
];

export const REGISTRAR_A: ReadonlyArray<{ label: string; ports: number[] }> = [
  { label: "sipinternal", ports: [5061, 443] },
  { label: "sip", ports: [5061, 443] },
  { label: "sipexternal", ports: [5061, 443] },
];

function isNotFound(err: unknown): boolean {
  return err instanceof DiscoveryError && err.code === "dns-not-found";
}

function asProblem(err: unknown, name: string): DiscoveryError {
  if (err instanceof DiscoveryError) return err;
  return new DiscoveryError("dns-failed", `DNS lookup of ${name} failed: ${(err as Error)?.message ?? err}`);
}

async function srv(resolver: Resolver, name: string, problems: DiscoveryError[]): Promise<SrvRecord[]> {
  try {
    return await resolver.resolveSrv(name);
  } catch (err) {
    if (!isNotFound(err)) problems.push(asProblem(err, name));
    return [];
  }
}

async function a(resolver: Resolver, name: string, problems: DiscoveryError[]): Promise<string[]> {
  try {
    return await resolver.resolve4(name);
  } catch (err) {
    if (!isNotFound(err)) problems.push(asProblem(err, name));
    return [];
  }
}

/** Registrars for a SIP domain, in the order above; all lookups run in parallel. */
export async function findRegistrarsByDns(
  domain: string,
  resolver: Resolver,
  random: Random,
): Promise<{ registrars: PlannedRegistrar[]; problems: DiscoveryError[] }> {
  const problems: DiscoveryError[] = [];
  const d = domain.replace(/\.$/, "");
  const [srvAnswers, aAnswers] = await Promise.all([
    Promise.all(REGISTRAR_SRV.map((s) => srv(resolver, `${s.prefix}.${d}`, problems))),
    Promise.all(REGISTRAR_A.map((x) => a(resolver, `${x.label}.${d}`, problems))),
  ]);
  const registrars: PlannedRegistrar[] = [];
  REGISTRAR_SRV.forEach((s, i) => {
    for (const r of orderSrv(srvAnswers[i]!, random))
      registrars.push({
        host: r.name.replace(/\.$/, ""),
        port: r.port,
        source: "dns-srv",
        transport: s.transport,
      });
  });
  REGISTRAR_A.forEach((x, i) => {
    if (aAnswers[i]!.length === 0) return;
    for (const port of x.ports)
      registrars.push({ host: `${x.label}.${d}`, port, source: "dns-a", transport: "tls" });
  });
  return { registrars, problems };
}

/** NTP servers from SRV _ntp._udp.<domain>, RFC 2782 order. */
export async function findNtpByDns(
  domain: string,
  resolver: Resolver,
  random: Random,
): Promise<{ servers: Array<{ host: string; port: number }>; problems: DiscoveryError[] }> {
  const problems: DiscoveryError[] = [];
  const records = await srv(resolver, `_ntp._udp.${domain.replace(/\.$/, "")}`, problems);
  return {
    servers: orderSrv(records, random).map((r) => ({ host: r.name.replace(/\.$/, ""), port: r.port })),
    problems,
  };
}
