/**
 * The lab pool: everything a phone needs to talk to, on loopback, with real TLS and a real CA.
 * A test fixture and the demo's embedded default; it never ships in the image.
 *
 * Sites (DESIGN.md): "branch" homes the phone on the SBA, with the central pool as backup;
 * "hq" homes it on the pool.
 *
 * The WAN link (wan-link.ts) fronts the central pool: its registrar and its web services. In the
 * branch site everything the phone is told about the centre names the WAN side: ready.pool,
 * ready.certProv, hosts[pool.<domain>], the registrars' sts-uri, DHCP option 43, the redirect's
 * backup. The SBA is on the branch LAN, direct. In the hq site the phone sits next to the pool:
 * those all name the direct addresses, the link still exists (ready.wan names its side) but
 * nothing the phone is told goes through it. (An hq phone's path to the SBA is not modelled.)
 *
 * Calls (call-router.ts, trunk.ts): each registrar routes calls between its registered users; the
 * two are peered across the WAN link (so a cut leaves the SBA's users calling each other only);
 * the trunk (ready.trunk, plain SIP on loopback TCP and UDP) hangs off the site's home registrar.
 */

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PhoneNetworkConfig } from "../../firmware/commands/phone-services.ts";
import { LabCa } from "./ca.ts";
import { linkRegistrars } from "./call-router.ts";
import { type LabControl, startControl } from "./control.ts";
import { type DhcpResponder, startDhcpResponder } from "./dhcp-responder.ts";
import { UserDirectory } from "./directory.ts";
import { type NtpResponder, startNtpResponder } from "./ntp-responder.ts";
import { LabRegistrar, type RegistrarFeatures, type RegistrarStyle } from "./registrar.ts";
import { LabTrunk } from "./trunk.ts";
import { WanLink } from "./wan-link.ts";
import { startWebServices, type WebServices, type WebServicesOptions } from "./web-services.ts";

export interface LabOptions {
  site?: "branch" | "hq";
  domain?: string;
  /**
   * The lab's users (default: 4711, PIN 1234, Windows password DEMO_PASSWORD). A user with a
   * password can also sign in with NTLM on the web ticket service's WinNegotiate port.
   */
  users?: Array<{ extension: string; pin: string; password?: string | undefined }>;
  /** Where to write the CA and test-client PEM files; a new temp folder by default. */
  dir?: string;
  expires?: number;
  /** 301 mode on the pool: redirect to the SBA (primary) and itself (backup). */
  redirect?: boolean;
  /** Passed to the web services (PIN path, lockout, certificate validity …). */
  web?: Partial<Omit<WebServicesOptions, "ca" | "directory" | "fqdn">>;
  /** Offset the lab's NTP server adds to the real time (ms). */
  ntpOffsetMs?: number;
  /**
   * Where calls to numbers and other non-lab URIs leave the trunk ("127.0.0.1:P", UDP unless
   * said otherwise); a Request-URI naming 127.0.0.1:P goes there instead. Settable later as
   * `lab.trunk.peer`.
   */
  trunkPeer?: { address: string; transport?: "udp" | "tcp" };
  /**
   * How both registrars answer (registrar.ts): "lync" (default) as a Lync 2013 / Skype for
   * Business front end, "minimal" as the lab did before issue 13; `registrarFeatures` sets
   * single pieces (e.g. `{ gruu: false }`). Also `lab.pool.features` at run time.
   */
  registrarStyle?: RegistrarStyle;
  registrarFeatures?: Partial<RegistrarFeatures>;
}

/**
 * The demo user 4711's Windows password (account "LAB\4711" or "4711@lab.test"). A lab secret,
 * written here and in the `handset lab` help; never in lab.ready or a log.
 */
export const DEMO_PASSWORD = "Lab-4711-Passw0rd";

export interface LabReady {
  event: "lab.ready";
  site: "branch" | "hq";
  domain: string;
  registrar: string;
  pool: string;
  sba: string;
  control: string;
  certProv: string;
  dhcp: string;
  ntp: string;
  /** The lab's names and where they really listen: the phone's static host table in the demo. */
  hosts: Record<string, string>;
  /** The central services' WAN-side addresses (what the branch uses; in hq, unused by the phone). */
  wan: { pool: string; certProv: string };
  /**
   * The central services' own addresses, bypassing the WAN. In the branch site the web services
   * listen on 127.0.0.2, which their certificate (IP SAN 127.0.0.1) does not name: lab-internal use.
   */
  direct: { pool: string; certProv: string };
  ca: string;
  dir: string;
  names: { pool: string; sba: string };
  users: Array<{ extension: string; pin: string; uri: string }>;
  testClient: { uri: string; cert: string; key: string };
  /** The trunk for third-party SIP user agents: plain SIP, trusted by address (127.0.0.1). */
  trunk: { tcp: string; udp: string };
}

export interface Lab {
  ready: LabReady;
  ca: LabCa;
  directory: UserDirectory;
  pool: LabRegistrar;
  sba: LabRegistrar;
  control: LabControl;
  web: WebServices;
  dhcp: DhcpResponder;
  ntp: NtpResponder;
  /** The WAN link between the branch and the centre (pool registrar, web services). */
  wan: WanLink;
  /** The trunk, on the site's home registrar (SBA in the branch, pool in hq). */
  trunk: LabTrunk;
  stop(): Promise<void>;
}

export async function startLab(opts: LabOptions = {}): Promise<Lab> {
  const site = opts.site ?? "branch";
  const domain = opts.domain ?? "lab.test";
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "handset-lab-")));
  /** The lab removes the directory it made (CA, test client) when it stops; a given dir is the caller's. */
  const madeDir = opts.dir === undefined;
  await mkdir(dir, { recursive: true });
  const ca = await LabCa.create();
  const names = { pool: `pool.${domain}`, sba: `sba.${domain}` };
  const [poolCert, sbaCert] = await Promise.all([
    ca.issueServer(names.pool, []),
    ca.issueServer(names.sba, []),
  ]);
  const directory = new UserDirectory(domain);
  const users = opts.users ?? [{ extension: "4711", pin: "1234", password: DEMO_PASSWORD }];
  for (const u of users) directory.add(u.extension, u.pin, undefined, u.password);
  const first = directory.byExtension(users[0]!.extension)!;
  const client = await ca.issueClient(first.uri.slice(4));
  directory.publish(first, client.cert);

  // The central pool's web services sit behind the WAN link. In the branch site they listen on
  // 127.0.0.2:P and the WAN side takes 127.0.0.1:P: the URLs the services publish (mex/WSDL, the
  // certificate's IP SAN 127.0.0.1) then name the WAN side, so everything the phone learns from
  // them also crosses the link. In the hq site (and where 127.0.0.2 is unusable) they listen on
  // 127.0.0.1 as before and the phone reaches them directly.
  const wan = await WanLink.start();
  const {
    web,
    wanAddress: webWanAddress,
    directAddress: webDirect,
  } = await startCentralWeb(site, wan, {
    ca,
    directory,
    fqdn: names.pool,
    ...opts.web,
  });
  const wanCertProv = web.certProvUrl.replace(new URL(web.certProvUrl).host, webWanAddress);
  const phoneCertProv = site === "branch" ? wanCertProv : web.certProvUrl;
  const common = {
    ca: ca.cert,
    directory,
    expires: opts.expires,
    stsUri: phoneCertProv,
    ...(opts.registrarStyle ? { style: opts.registrarStyle } : {}),
    ...(opts.registrarFeatures ? { features: opts.registrarFeatures } : {}),
  };
  const pool = new LabRegistrar({
    ...common,
    name: "pool",
    fqdn: names.pool,
    cert: poolCert.cert,
    key: poolCert.key,
  });
  const sba = new LabRegistrar({
    ...common,
    name: "sba",
    fqdn: names.sba,
    cert: sbaCert.cert,
    key: sbaCert.key,
  });
  await Promise.all([pool.start(), sba.start()]);
  const [poolHost, poolPort] = pool.address.split(":");
  const wanPool = await wan.add({ name: "pool", target: { host: poolHost!, port: Number(poolPort) } });
  const phonePool = site === "branch" ? wanPool : pool.address;
  if (opts.redirect) pool.redirect = { primary: sba.address, backup: phonePool };
  linkRegistrars({ pool, sba, wan, ca: ca.cert });
  const trunk = await LabTrunk.start({
    router: (site === "branch" ? sba : pool).router,
    ...(opts.trunkPeer ? { peer: trunkDestination(opts.trunkPeer) } : {}),
  });

  const caPath = join(dir, "lab-ca.pem");
  const certPath = join(dir, "test-client.pem");
  const keyPath = join(dir, "test-client.key");
  await writeFile(caPath, ca.cert);
  await writeFile(certPath, client.cert);
  await writeFile(keyPath, client.key, { mode: 0o600 });

  const home = site === "branch" ? names.sba : names.pool;
  const ntp = await startNtpResponder({ offsetMs: opts.ntpOffsetMs ?? 0 });
  const dhcp = await startDhcpResponder({
    certProvUrl: phoneCertProv,
    // A branch's DHCP names the SBA first and the central pool as its backup (RFC 3361 list order).
    registrarFqdn: site === "branch" ? [names.sba, names.pool] : [home],
    ntp: ["127.0.0.1"],
  });
  const control = await startControl({ pool, sba, directory, wan, ntp });
  const ready: LabReady = {
    event: "lab.ready",
    site,
    domain,
    registrar: site === "branch" ? sba.address : pool.address,
    pool: phonePool,
    sba: sba.address,
    control: control.url,
    certProv: phoneCertProv,
    dhcp: dhcp.address,
    ntp: ntp.address,
    hosts: { [names.pool]: phonePool, [names.sba]: sba.address },
    wan: { pool: wanPool, certProv: wanCertProv },
    direct: {
      pool: pool.address,
      certProv: web.certProvUrl.replace(new URL(web.certProvUrl).host, webDirect),
    },
    ca: caPath,
    dir,
    names,
    users: directory.all().map((u) => ({ extension: u.extension, pin: u.pin, uri: u.uri })),
    testClient: { uri: first.uri, cert: certPath, key: keyPath },
    trunk: trunk.address,
  };
  return {
    ready,
    ca,
    directory,
    pool,
    sba,
    control,
    web,
    dhcp,
    ntp,
    wan,
    trunk,
    stop: async () => {
      await control.stop();
      await wan.stop();
      await Promise.all([pool.stop(), sba.stop(), web.stop(), dhcp.stop(), ntp.stop(), trunk.stop()]);
      if (madeDir)
        await rm(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }).catch(() => {});
    },
  };
}

function trunkDestination(p: NonNullable<LabOptions["trunkPeer"]>) {
  const i = p.address.lastIndexOf(":");
  const port = Number(p.address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port <= 0 || port > 65535)
    throw new Error(`trunkPeer must be host:port, got "${p.address}"`);
  return { host: p.address.slice(0, i), port, transport: p.transport ?? ("udp" as const) };
}

/**
 * Starts the web services and their WAN route. Branch site: services on 127.0.0.2:P, WAN side on
 * 127.0.0.1:P, so the URLs they publish name the WAN side. Otherwise (hq, an explicit port or host,
 * or a system without 127.0.0.2) the services keep 127.0.0.1 and the WAN side gets its own port.
 */
async function startCentralWeb(
  site: "branch" | "hq",
  wan: WanLink,
  o: WebServicesOptions,
): Promise<{ web: WebServices; wanAddress: string; directAddress: string }> {
  if (site === "branch" && o.port === undefined && o.host === undefined) {
    for (let attempt = 0; attempt < 3; attempt++) {
      let web: WebServices;
      try {
        web = await startWebServices({ ...o, host: "127.0.0.2" });
      } catch {
        break; // no 127.0.0.2 here (not Linux): fall back below
      }
      const port = Number(new URL(web.baseUrl).port);
      try {
        const wanAddress = await wan.add({
          name: "web",
          target: { host: "127.0.0.2", port },
          listen: { port },
        });
        return { web, wanAddress, directAddress: `127.0.0.2:${port}` };
      } catch {
        await web.stop(); // 127.0.0.1:P is taken: try another port
      }
    }
  }
  const web = await startWebServices(o);
  const directAddress = new URL(web.baseUrl).host;
  const port = Number(new URL(web.baseUrl).port);
  const wanAddress = await wan.add({ name: "web", target: { host: o.host ?? "127.0.0.1", port } });
  return { web, wanAddress, directAddress };
}

/**
 * How a phone finds this lab: DHCPINFORM to the lab's responder, SNTP from its NTP server, and the
 * lab's names resolved through a static host table (they listen on loopback ports, not in DNS).
 */
export function phoneNetwork(ready: LabReady): PhoneNetworkConfig {
  const split = (a: string) => ({
    host: a.slice(0, a.lastIndexOf(":")),
    port: Number(a.slice(a.lastIndexOf(":") + 1)),
  });
  return { dhcp: { server: split(ready.dhcp) }, ntp: split(ready.ntp), hosts: ready.hosts };
}
