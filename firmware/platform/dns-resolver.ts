/**
 * The Resolver port on node:dns, with configurable servers ("127.0.0.1:5353" or "192.0.2.53").
 * "No such name" and "no such record" become DiscoveryError "dns-not-found", everything else
 * "dns-failed", as discovery/dns-fallback.ts expects.
 */
import { Resolver as NodeResolver } from "node:dns/promises";
import { DiscoveryError } from "../discovery/dhcp-codec.ts";
import type { Resolver, SrvRecord } from "../discovery/dns-fallback.ts";

const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "NXDOMAIN", "ENONAME"]);

function mapError(err: unknown, name: string, type: string): DiscoveryError {
  const code = (err as NodeJS.ErrnoException)?.code ?? "";
  return new DiscoveryError(
    NOT_FOUND.has(code) ? "dns-not-found" : "dns-failed",
    `${type} ${name}: ${code || (err as Error)?.message || String(err)}`,
    { cause: err },
  );
}

export function createDnsResolver(
  o: { servers?: string[]; timeoutMs?: number; tries?: number } = {},
): Resolver {
  const r = new NodeResolver({ timeout: o.timeoutMs ?? 2_000, tries: o.tries ?? 2 });
  if (o.servers && o.servers.length > 0) r.setServers(o.servers);
  return {
    async resolveSrv(name: string): Promise<SrvRecord[]> {
      try {
        return (await r.resolveSrv(name)).map((x) => ({
          name: x.name,
          port: x.port,
          priority: x.priority,
          weight: x.weight,
        }));
      } catch (err) {
        throw mapError(err, name, "SRV");
      }
    },
    async resolve4(name: string): Promise<string[]> {
      try {
        return await r.resolve4(name);
      } catch (err) {
        throw mapError(err, name, "A");
      }
    },
  };
}
