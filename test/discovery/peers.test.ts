/**
 * Real peers: dnsmasq answering the phone's DHCPINFORM on ports 67/68 across a veth pair between
 * two network namespaces this test creates (TEST-NET 192.0.2.0/24 inside them only) — once with
 * a default route in the client namespace, once without one (issue 9 §5: a voice VLAN with no
 * gateway, where 255.255.255.255 is ENETUNREACH and the INFORM must use 192.0.2.255) — and chronyd
 * serving NTP on a loopback port without touching the system clock.
 * Missing binaries or root: skipped with the reason, or failed when CI=true.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sntpOverUdp } from "../../firmware/commands/discover.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { findNtpByDns, findRegistrarsByDns } from "../../firmware/discovery/dns-fallback.ts";
import type { SntpResult } from "../../firmware/discovery/sntp.ts";
import { createDnsResolver } from "../../firmware/platform/dns-resolver.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";

const CI = process.env.CI === "true";
const ROOT = join(import.meta.dirname, "../..");
const isRoot = process.getuid?.() === 0;
const has = (bin: string, arg = "--version") => !spawnSync(bin, [arg], { stdio: "ignore" }).error;

function missing(what: Array<[boolean, string]>): string | undefined {
  return what.find(([ok]) => !ok)?.[1];
}

/** Skips with the reason, or fails with it in CI. Returns true when the test may run. */
function guard(reason: string | undefined, skip: (note: string) => void): boolean {
  if (!reason) return true;
  if (CI) throw new Error(reason);
  skip(reason);
  return false;
}

const children: ChildProcess[] = [];
function kill(child: ChildProcess | undefined): void {
  if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
    try {
      process.kill(child.pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
}

function sh(args: string[]): void {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim()}`);
}

async function waitFor<T>(
  fn: () => Promise<T | undefined> | T | undefined,
  ms: number,
  what: string,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs `node --import tsx <args>` inside a namespace; resolves with exit code and output. */
async function nodeInNamespace(
  ns: string,
  args: string[],
): Promise<{ code: number | null; out: string; err: string }> {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "--import", "tsx", ...args], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  child.stderr!.on("data", (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, out, err };
}

for (const defaultRoute of [true, false]) {
  describe(`dnsmasq answers the phone's DHCPINFORM in network namespaces (${defaultRoute ? "with a default route" : "client has NO default route"})`, () => {
    const reason = missing([
      [has("dnsmasq"), "dnsmasq not installed"],
      [has("ip", "-V"), "iproute2 (ip) not installed"],
      [isRoot, "needs root for network namespaces"],
    ]);
    const id = `${process.pid.toString(36)}${randomBytes(2).toString("hex")}`.slice(-8);
    const nsS = `hsetS${id}`;
    const nsC = `hsetC${id}`;
    const vS = `hv0${id}`;
    const vC = `hv1${id}`;
    const dir = mkdtempSync(join(tmpdir(), "handset-dnsmasq-"));
    let dnsmasq: ChildProcess | undefined;
    let created = false;

    beforeAll(async () => {
      if (reason) return;
      created = true;
      sh(["netns", "add", nsS]);
      sh(["netns", "add", nsC]);
      sh(["link", "add", vS, "netns", nsS, "type", "veth", "peer", "name", vC, "netns", nsC]);
      sh(["-n", nsS, "addr", "add", "192.0.2.1/24", "dev", vS]);
      sh(["-n", nsC, "addr", "add", "192.0.2.20/24", "dev", vC]);
      for (const [ns, dev] of [
        [nsS, vS],
        [nsS, "lo"],
        [nsC, vC],
        [nsC, "lo"],
      ] as const)
        sh(["-n", ns, "link", "set", dev, "up"]);
      // 255.255.255.255 needs a route; without one (no gateway on the VLAN) only 192.0.2.0/24 is reachable.
      if (defaultRoute) sh(["-n", nsC, "route", "add", "default", "dev", vC]);
      // os.networkInterfaces() lists the address only once the veth carrier is up.
      await waitFor(
        () =>
          /LOWER_UP/.test(spawnSync("ip", ["-n", nsC, "-o", "link", "show", vC], { encoding: "utf8" }).stdout)
            ? true
            : undefined,
        5000,
        "the client link",
      );
      const conf = join(dir, "dnsmasq.conf");
      writeFileSync(
        conf,
        [
          "port=0",
          `interface=${vS}`,
          "bind-interfaces",
          "dhcp-range=192.0.2.100,192.0.2.150,255.255.255.0,1h",
          "dhcp-authoritative",
          `dhcp-leasefile=${join(dir, "leases")}`,
          `pid-file=${join(dir, "dnsmasq.pid")}`,
          "user=root",
          "log-dhcp",
          "dhcp-vendorclass=set:lync,MS-UC-Client",
          'dhcp-option=vendor:MS-UC-Client,1,"MS-UC-Client"',
          'dhcp-option=vendor:MS-UC-Client,2,"https"',
          'dhcp-option=vendor:MS-UC-Client,3,"pool.lab.test"',
          'dhcp-option=vendor:MS-UC-Client,4,"443"',
          'dhcp-option=vendor:MS-UC-Client,5,"/CertProv/CertProvisioningService.svc"',
          "dhcp-option=tag:lync,option:sip-server,sba.lab.test",
          "dhcp-option=option:ntp-server,192.0.2.1",
          "dhcp-option=option:time-offset,-18000",
          "dhcp-option=option:domain-name,lab.test",
          "",
        ].join("\n"),
      );
      const log = join(dir, "dnsmasq.log");
      writeFileSync(log, "");
      dnsmasq = spawn("ip", ["netns", "exec", nsS, "dnsmasq", "-k", "-C", conf, `--log-facility=${log}`], {
        stdio: "ignore",
      });
      children.push(dnsmasq);
      await waitFor(
        () => (/DHCP, IP range/.test(readFileSync(log, "utf8")) ? true : undefined),
        5000,
        "dnsmasq",
      );
    });

    afterAll(() => {
      kill(dnsmasq);
      if (created) {
        for (const ns of [nsC, nsS]) spawnSync("ip", ["netns", "del", ns]);
      }
      rmSync(dir, { recursive: true, force: true });
    });

    it("gets the provisioning URL, the registrar and NTP over ports 67/68", async (ctx) => {
      if (!guard(reason, (n) => ctx.skip(n))) return;
      const { code, out, err } = await nodeInNamespace(nsC, [
        "test/discovery/netns-inform-client.ts",
        vC,
        "6000",
      ]);
      expect(err).toBe("");
      const r = JSON.parse(out.trim()) as Record<string, unknown>;
      expect(r).toMatchObject({ ok: true });
      expect(code).toBe(0);
      expect(r).toMatchObject({
        ok: true,
        from: "192.0.2.1:67",
        yiaddr: "0.0.0.0",
        certProvUrl: "https://pool.lab.test:443/CertProv/CertProvisioningService.svc",
        sipServers: ["sba.lab.test"],
        sipServersEncoding: "fqdn",
        ntpServers: ["192.0.2.1"],
        timeOffsetS: -18000,
        domain: "lab.test",
        problems: [],
      });
      expect(r["vendor"]).toMatchObject({ identifier: "MS-UC-Client", port: 443 });
    });

    if (!defaultRoute)
      it("really is such a link: a send to 255.255.255.255 fails there with ENETUNREACH", async (ctx) => {
        if (!guard(reason, (n) => ctx.skip(n))) return;
        const probe =
          'const s=require("node:dgram").createSocket("udp4");s.bind(0,()=>{s.setBroadcast(true);' +
          's.send(Buffer.alloc(1),67,"255.255.255.255",(e)=>{console.log(e?e.code:"sent");s.close();});});';
        const child = spawnSync("ip", ["netns", "exec", nsC, process.execPath, "-e", probe], {
          encoding: "utf8",
        });
        expect(child.stdout.trim()).toBe("ENETUNREACH");
      });
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

describe("chronyd as the NTP server", () => {
  const reason = missing([[has("chronyd", "-v"), "chrony not installed"]]);
  const dir = mkdtempSync(join(tmpdir(), "handset-chrony-"));
  let chronyd: ChildProcess | undefined;
  let port = 0;

  beforeAll(async () => {
    if (reason) return;
    port = await freePort(); // a free TCP port number; UDP on the same number is almost always free too
    const conf = join(dir, "chrony.conf");
    writeFileSync(
      conf,
      [
        `port ${port}`,
        "bindaddress 127.0.0.1",
        "allow 127.0.0.1",
        "local stratum 8",
        "cmdport 0",
        `pidfile ${join(dir, "chronyd.pid")}`,
        `driftfile ${join(dir, "drift")}`,
        "",
      ].join("\n"),
    );
    chronyd = spawn("chronyd", ["-d", "-x", "-f", conf], { stdio: "ignore" });
    children.push(chronyd);
  });

  afterAll(() => {
    kill(chronyd);
    rmSync(dir, { recursive: true, force: true });
  });

  it("the SNTP client's offset agrees with chrony (stratum 8, |offset| < 50 ms)", async (ctx) => {
    if (!guard(reason, (n) => ctx.skip(n))) return;
    const clock = new SystemClock();
    const sample = await waitFor<SntpResult>(
      async () => {
        try {
          return await sntpOverUdp(
            { host: "127.0.0.1", port },
            { clock, random: new SeededRandom(1), timeoutMs: 300, tries: 1 },
          );
        } catch {
          return undefined;
        }
      },
      8000,
      "chronyd to answer",
    );
    expect(sample.stratum).toBe(8);
    expect(Math.abs(sample.offsetMs)).toBeLessThan(50);
    expect(sample.delayMs).toBeLessThan(50);
  });
});

describe("dnsmasq as the DNS server for the SRV fallback (platform/dns-resolver.ts)", () => {
  const reason = missing([[has("dnsmasq"), "dnsmasq not installed"]]);
  const dir = mkdtempSync(join(tmpdir(), "handset-dns-"));
  let dns: ChildProcess | undefined;
  let port = 0;

  beforeAll(async () => {
    if (reason) return;
    port = await freePort();
    const conf = join(dir, "dnsmasq.conf");
    writeFileSync(
      conf,
      [
        `port=${port}`,
        "listen-address=127.0.0.1",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "user=root",
        `pid-file=${join(dir, "dnsmasq.pid")}`,
        "local=/lab.test/", // authoritative: unknown names are NXDOMAIN, not REFUSED
        "srv-host=_sipinternaltls._tcp.lab.test,backup.lab.test,5061,10,0",
        "srv-host=_sipinternaltls._tcp.lab.test,pool.lab.test,5061,0,100",
        "srv-host=_sip._tls.lab.test,edge.lab.test,443,0,0",
        "srv-host=_ntp._udp.lab.test,ntp.lab.test,123,0,0",
        "host-record=sipinternal.lab.test,192.0.2.5",
        "",
      ].join("\n"),
    );
    dns = spawn("dnsmasq", ["-k", "-C", conf, "--log-facility=-"], { stdio: "ignore" });
    children.push(dns);
  });

  afterAll(() => {
    kill(dns);
    rmSync(dir, { recursive: true, force: true });
  });

  it("finds registrars in LPE order and the NTP server by SRV", async (ctx) => {
    if (!guard(reason, (n) => ctx.skip(n))) return;
    const resolver = createDnsResolver({ servers: [`127.0.0.1:${port}`], timeoutMs: 500, tries: 1 });
    const random = new SeededRandom(5);
    const found = await waitFor(
      async () => {
        const r = await findRegistrarsByDns("lab.test", resolver, random);
        // Until dnsmasq listens, a query is refused: wait for an answer to every one of them.
        return r.registrars.length > 0 && r.problems.length === 0 ? r : undefined;
      },
      5000,
      "dnsmasq DNS",
    );
    expect(found.problems).toEqual([]);
    expect(found.registrars.map((r) => `${r.host}:${r.port}/${r.source}`)).toEqual([
      "pool.lab.test:5061/dns-srv",
      "backup.lab.test:5061/dns-srv",
      "edge.lab.test:443/dns-srv",
      "sipinternal.lab.test:5061/dns-a",
      "sipinternal.lab.test:443/dns-a",
    ]);
    const ntp = await findNtpByDns("lab.test", resolver, random);
    expect(ntp.servers).toEqual([{ host: "ntp.lab.test", port: 123 }]);
  });
});

afterAll(() => {
  for (const c of children) kill(c);
});
