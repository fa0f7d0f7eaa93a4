import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import { DiscoveryError } from "../../firmware/discovery/dhcp-codec.ts";
import { interpretOptions } from "../../firmware/discovery/dhcp-options.ts";
import { buildDiscoveryPlan } from "../../firmware/discovery/discovery-plan.ts";
import {
  findRegistrarsByDns,
  orderSrv,
  type Resolver,
  type SrvRecord,
} from "../../firmware/discovery/dns-fallback.ts";
import { asciiHex, hex } from "./helpers.ts";

function fakeResolver(
  srv: Record<string, SrvRecord[]>,
  a: Record<string, string[]>,
  fail: string[] = [],
): Resolver & {
  asked: string[];
} {
  const asked: string[] = [];
  const lookup = async <T>(table: Record<string, T[]>, name: string): Promise<T[]> => {
    asked.push(name);
    if (fail.includes(name)) throw new DiscoveryError("dns-failed", `SERVFAIL ${name}`);
    const v = table[name];
    if (!v) throw new DiscoveryError("dns-not-found", name);
    return v;
  };
  return { asked, resolveSrv: (n) => lookup(srv, n), resolve4: (n) => lookup(a, n) };
}

const rec = (name: string, port: number, priority = 0, weight = 0): SrvRecord => ({
  name,
  port,
  priority,
  weight,
});

describe("SRV ordering (RFC 2782)", () => {
  it("orders by priority, then weighted random within a priority; skips '.'", () => {
    const records = [rec("c", 1, 10, 5), rec("a", 1, 0, 60), rec("b", 1, 0, 40), rec(".", 1, 0, 0)];
    const firsts = new Map<string, number>();
    const random = new SeededRandom(11);
    for (let i = 0; i < 1000; i++) {
      const o = orderSrv(records, random);
      expect(o.map((r) => r.name).sort()).toEqual(["a", "b", "c"]);
      expect(o[2]!.name).toBe("c");
      firsts.set(o[0]!.name, (firsts.get(o[0]!.name) ?? 0) + 1);
    }
    expect(firsts.get("a")! / 1000).toBeGreaterThan(0.52);
    expect(firsts.get("a")! / 1000).toBeLessThan(0.68);
  });
});

describe("DNS fallback (behaviour §2)", () => {
  it("tries _sipinternaltls, _sipinternal, _sip._tls, then A sipinternal/sip/sipexternal", async () => {
    const resolver = fakeResolver(
      {
        "_sipinternaltls._tcp.lab.test": [rec("backup.lab.test.", 5061, 10), rec("pool.lab.test.", 5061, 0)],
        "_sipinternal._tcp.lab.test": [rec("pool.lab.test.", 5060)],
        "_sip._tls.lab.test": [rec("edge.lab.test.", 443)],
      },
      { "sip.lab.test": ["192.0.2.5"] },
      ["sipexternal.lab.test"],
    );
    const { registrars, problems } = await findRegistrarsByDns("lab.test", resolver, new SeededRandom(1));
    expect(registrars.map((r) => `${r.host}:${r.port}/${r.source}/${r.transport}`)).toEqual([
      "pool.lab.test:5061/dns-srv/tls",
      "backup.lab.test:5061/dns-srv/tls",
      "pool.lab.test:5060/dns-srv/tcp",
      "edge.lab.test:443/dns-srv/tls",
      "sip.lab.test:5061/dns-a/tls",
      "sip.lab.test:443/dns-a/tls",
    ]);
    expect(problems.map((p) => p.code)).toEqual(["dns-failed"]);
  });
});

describe("discovery plan", () => {
  it("DHCP → DNS → static → cache; NTP 42/4 → _ntp._udp → static → time.windows.com", async () => {
    const dhcp = interpretOptions(
      new Map([
        [120, hex(`00 03 ${asciiHex("sba")} 03 ${asciiHex("lab")} 04 ${asciiHex("test")} 00`)],
        [43, hex(`03 0d ${asciiHex("pool.lab.test")} 04 03 ${asciiHex("443")} 05 04 ${asciiHex("/cp/")} ff`)],
        [42, hex("c0000201")],
        [4, hex("c0000202")],
        [2, hex("ffffb9b0")],
        [15, hex(asciiHex("lab.test"))],
        [6, hex("c0000235")],
        [231, hex("00")], // an option the phone does not know: ignored
      ]),
    );
    const resolver = fakeResolver(
      {
        "_sipinternaltls._tcp.lab.test": [rec("pool.lab.test", 5061)],
        "_ntp._udp.lab.test": [rec("ntp.lab.test", 123)],
      },
      {},
    );
    const plan = await buildDiscoveryPlan({
      random: new SeededRandom(1),
      dhcp,
      resolver,
      staticConfig: {
        registrars: [{ host: "static.lab.test", port: 5061 }],
        ntpServers: [{ host: "ntp.corp", port: 123 }],
      },
      cache: {
        load: async () => [
          { host: "sba.lab.test", port: 5061 },
          { host: "old.lab.test", port: 5061 },
        ],
      },
    });
    expect(plan).toEqual({
      certProvUrl: "https://pool.lab.test:443/cp/",
      registrars: [
        { host: "sba.lab.test", port: 5061, source: "dhcp", transport: "tls" },
        { host: "pool.lab.test", port: 5061, source: "dns-srv", transport: "tls" },
        { host: "static.lab.test", port: 5061, source: "static", transport: "tls" },
        { host: "old.lab.test", port: 5061, source: "cache", transport: "tls" },
      ],
      ntpServers: [
        { host: "192.0.2.1", port: 123, source: "dhcp" },
        { host: "192.0.2.2", port: 123, source: "dhcp" },
        { host: "ntp.lab.test", port: 123, source: "dns-srv" },
        { host: "ntp.corp", port: 123, source: "static" },
        { host: "time.windows.com", port: 123, source: "default" },
      ],
      timeOffsetS: -18000,
      dnsServers: ["192.0.2.53"],
      domain: "lab.test",
      problems: [],
    });
  });

  it("without DHCP or DNS: static, then cache; problems carried through", async () => {
    const plan = await buildDiscoveryPlan({
      random: new SeededRandom(1),
      problems: [new DiscoveryError("dhcp-timeout", "no answer")],
      staticConfig: { certProvUrl: "https://p/cp" },
      cache: { load: async () => [{ host: "sba.lab.test", port: 5061 }] },
      defaultNtp: null,
    });
    expect(plan.registrars).toEqual([
      { host: "sba.lab.test", port: 5061, source: "cache", transport: "tls" },
    ]);
    expect(plan.certProvUrl).toBe("https://p/cp");
    expect(plan.ntpServers).toEqual([]);
    expect(plan.problems).toEqual([{ code: "dhcp-timeout", message: "no answer" }]);
  });
});
