/**
 * `handset discover`: finds the servers as the phone does at boot (DESIGN.md, issue 4) and prints
 * what it found: DHCPINFORM (vendor class MS-UC-Client) → DNS SRV fallback → SNTP → the plan.
 *
 *   --interface IF          DHCPINFORM from IF's address, port 68, broadcast to 255.255.255.255:67
 *                           (to IF's directed broadcast when that cannot be sent: no default route)
 *   --dhcp-server HOST:PORT unicast DHCPINFORM to a known server from an ephemeral port
 *   --ntp HOST:PORT         SNTP server instead of the plan's list
 *   --dns-server HOST:PORT  DNS server for the SRV fallback (else the system's)
 *   --domain D              SIP domain for the SRV fallback (else DHCP option 15)
 *   --timeout S             how long to wait for DHCP (default 10)
 *
 * Events: dhcp, clock-set (or clock-not-set), plan. Exit 0 when the plan names a registrar or
 * a provisioning URL.
 */
import type { Clock } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import type { Random } from "../core/random.ts";
import { ClockService } from "../discovery/clock-service.ts";
import { DiscoveryError } from "../discovery/dhcp-codec.ts";
import { type InformResult, informOnce } from "../discovery/dhcp-inform.ts";
import type { DhcpDiscovery } from "../discovery/dhcp-options.ts";
import { buildDiscoveryPlan, type DiscoveryPlan, toPlanProblem } from "../discovery/discovery-plan.ts";
import type { Resolver } from "../discovery/dns-fallback.ts";
import { querySntp, type SntpResult } from "../discovery/sntp.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { createDnsResolver } from "../platform/dns-resolver.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { interfaceIPv4, localAddressFor, openUdpPort } from "../platform/udp.ts";
import { type CommandSpec, hostPort, parseFlags, seconds } from "./args.ts";
import type { Output } from "./output.ts";

type Emit = (e: { event: string; [k: string]: unknown }) => void;

export interface DhcpTarget {
  /** Interface name: bind 0.0.0.0:68 and use its address and MAC. */
  interface?: string;
  /** Unicast server; 255.255.255.255:67 when only an interface is given. */
  server?: { host: string; port: number };
  /** With an interface: servers to unicast to when the limited broadcast cannot be sent. */
  knownServers?: Array<{ host: string; port: number }>;
}

export interface DiscoverOptions {
  dhcp?: DhcpTarget;
  ntp?: { host: string; port: number };
  dnsServer?: string;
  domain?: string;
  dhcpTimeoutMs?: number;
  sntpTimeoutMs?: number;
  clock?: Clock;
  random?: Random;
  resolver?: Resolver;
  onEvent?: Emit;
}

export interface DiscoverResult {
  dhcp?: InformResult;
  sntp?: SntpResult;
  plan: DiscoveryPlan;
}

/** DHCPINFORM over a real UDP socket. */
export async function informOverUdp(
  target: DhcpTarget,
  o: { clock: Clock; random: Random; timeoutMs: number; jitterMs?: number },
): Promise<InformResult> {
  let ciaddr: string;
  let hw: Uint8Array;
  // Where the INFORM goes when 255.255.255.255 cannot be sent (no default route): the subnet.
  let fallbackServers: Array<{ host: string; port: number }> = [];
  if (target.interface) {
    const nic = interfaceIPv4(target.interface);
    ciaddr = nic.address;
    hw = nic.mac;
    if (!target.server)
      fallbackServers = [
        ...(nic.broadcast ? [{ host: nic.broadcast, port: 67 }] : []),
        ...(target.knownServers ?? []),
      ];
  } else if (target.server) {
    ciaddr = await localAddressFor(target.server.host, target.server.port);
    hw = o.random.bytes(6);
    hw[0] = (hw[0]! & 0xfe) | 0x02; // locally administered, unicast
  } else throw new HandsetError("usage", "DHCP needs --interface or --dhcp-server");
  const server = target.server ?? { host: "255.255.255.255", port: 67 };
  const port = await openUdpPort(
    target.interface ? { bindAddress: "0.0.0.0", bindPort: 68, broadcast: true } : { broadcast: true },
  );
  try {
    const run = informOnce({
      clock: o.clock,
      random: o.random,
      port,
      server,
      fallbackServers,
      ciaddr,
      hwAddress: hw,
      timeoutMs: o.timeoutMs,
      ...(o.jitterMs !== undefined ? { jitterMs: o.jitterMs } : {}),
    });
    return await run.result;
  } finally {
    port.close();
  }
}

/** One SNTP query over a real UDP socket. */
export async function sntpOverUdp(
  server: { host: string; port: number },
  o: { clock: Clock; random: Random; timeoutMs?: number; tries?: number },
): Promise<SntpResult> {
  const port = await openUdpPort();
  try {
    return await querySntp({ ...o, port, server });
  } finally {
    port.close();
  }
}

function dhcpEvent(r: InformResult): { event: string; [k: string]: unknown } {
  const i: DhcpDiscovery = r.info;
  return {
    event: "dhcp",
    server: r.from,
    certProvUrl: i.certProvUrl,
    registrars: i.sipServers,
    ntp: i.ntpServers,
    timeOffsetS: i.timeOffsetS,
    dnsServers: i.dnsServers,
    domain: i.domain,
    attempts: r.attempts,
    ms: Math.round(r.rttMs),
    problems: i.problems.map(toPlanProblem),
  };
}

/** The whole discovery as the command runs it; the CLI prints the events. */
export async function discover(o: DiscoverOptions): Promise<DiscoverResult> {
  const base = o.clock ?? new SystemClock();
  const random = o.random ?? new CryptoRandom();
  const emit = o.onEvent ?? (() => {});
  const clock = new ClockService({ base });
  clock.on((e) => {
    if (e.type === "clock-set")
      emit({ event: "clock-set", offsetMs: e.offsetMs, server: e.server, heldMs: e.heldMs });
  });
  const problems: DiscoveryError[] = [];
  let dhcp: InformResult | undefined;
  if (o.dhcp) {
    try {
      dhcp = await informOverUdp(o.dhcp, { clock: base, random, timeoutMs: o.dhcpTimeoutMs ?? 10_000 });
      emit(dhcpEvent(dhcp));
    } catch (err) {
      if (!(err instanceof DiscoveryError)) throw err;
      problems.push(err);
      emit({ event: "dhcp", error: err.code, message: err.message });
    }
  }
  const resolver =
    o.resolver ??
    createDnsResolver(o.dnsServer ? { servers: [o.dnsServer], timeoutMs: 2_000, tries: 1 } : {});
  const plan = await buildDiscoveryPlan({
    random,
    problems,
    resolver,
    ...(dhcp ? { dhcp: dhcp.info } : {}),
    ...(o.domain ? { domain: o.domain } : {}),
  });
  const servers = o.ntp ? [o.ntp] : plan.ntpServers;
  let sntp: SntpResult | undefined;
  for (const s of servers) {
    try {
      sntp = await sntpOverUdp(s, { clock: base, random, timeoutMs: o.sntpTimeoutMs ?? 2_000, tries: 2 });
      await clock.set({ offsetMs: sntp.offsetMs, server: sntp.server });
      break;
    } catch (err) {
      if (!(err instanceof DiscoveryError)) throw err;
      plan.problems.push(toPlanProblem(err));
      emit({ event: "ntp", server: `${s.host}:${s.port}`, error: err.code, message: err.message });
    }
  }
  if (!sntp) emit({ event: "clock-not-set", tried: servers.map((s) => `${s.host}:${s.port}`) });
  emit({
    event: "plan",
    ...plan,
    ...(sntp ? { clock: { offsetMs: sntp.offsetMs, delayMs: sntp.delayMs, stratum: sntp.stratum } } : {}),
  });
  return { ...(dhcp ? { dhcp } : {}), ...(sntp ? { sntp } : {}), plan };
}

export const DISCOVER_SPEC = {
  summary: "finds the servers as the phone does at boot: DHCPINFORM, DNS SRV, SNTP, then the plan",
  synopsis: ["--interface IF | --dhcp-server HOST:PORT | --domain D [flags]"],
  flags: {
    interface: { type: "string", arg: "IF", help: "DHCPINFORM from IF's address, broadcast" },
    "dhcp-server": { type: "string", arg: "HOST:PORT", help: "unicast DHCPINFORM to this server" },
    ntp: { type: "string", arg: "HOST:PORT", help: "the SNTP server instead of the plan's list" },
    "dns-server": { type: "string", arg: "HOST:PORT", help: "the DNS server for the SRV fallback" },
    domain: { type: "string", arg: "D", help: "the SIP domain for the SRV fallback (else DHCP option 15)" },
    timeout: { type: "string", arg: "S", help: "how long to wait for DHCP (default 10)" },
  },
} as const satisfies CommandSpec;

export async function discoverCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, DISCOVER_SPEC.flags);
  const timeoutS = seconds(f, "timeout", 10, 120);
  const dhcp: DhcpTarget = {
    ...(typeof f["interface"] === "string" ? { interface: f["interface"] } : {}),
    ...(typeof f["dhcp-server"] === "string" ? { server: hostPort(f["dhcp-server"], "dhcp-server") } : {}),
  };
  const useDhcp = dhcp.interface !== undefined || dhcp.server !== undefined;
  if (!useDhcp && typeof f["domain"] !== "string")
    throw new HandsetError("usage", "discover needs --interface, --dhcp-server or --domain");
  let dnsServer: string | undefined;
  if (typeof f["dns-server"] === "string") {
    const d = hostPort(f["dns-server"], "dns-server");
    dnsServer = `${d.host}:${d.port}`;
  }
  const result = await discover({
    ...(useDhcp ? { dhcp } : {}),
    ...(typeof f["ntp"] === "string" ? { ntp: hostPort(f["ntp"], "ntp") } : {}),
    ...(dnsServer ? { dnsServer } : {}),
    ...(typeof f["domain"] === "string" ? { domain: f["domain"] } : {}),
    dhcpTimeoutMs: timeoutS * 1000,
    onEvent: (e) => out.event(e),
  });
  if (result.plan.registrars.length === 0 && !result.plan.certProvUrl)
    throw new DiscoveryError("nothing-found", "Discovery found no registrar and no provisioning URL");
  return 0;
}
