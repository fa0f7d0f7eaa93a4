/**
 * The lab pool: everything a phone needs to talk to, on loopback, with real TLS and a real CA.
 * A test fixture and the demo's embedded default; it never ships in the image.
 *
 * Sites (DESIGN.md): "branch" homes the phone on the SBA, with the central pool as backup;
 * "hq" homes it on the pool. Services added by later issues (web ticket and certificate
 * provisioning, DHCP, NTP, the WAN link) join here.
 */
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LabCa } from "./ca.ts";
import { type LabControl, startControl } from "./control.ts";
import { type DhcpResponder, startDhcpResponder } from "./dhcp-responder.ts";
import { UserDirectory } from "./directory.ts";
import { type NtpResponder, startNtpResponder } from "./ntp-responder.ts";
import { LabRegistrar } from "./registrar.ts";
import { startWebServices, type WebServices, type WebServicesOptions } from "./web-services.ts";

export interface LabOptions {
  site?: "branch" | "hq";
  domain?: string;
  users?: Array<{ extension: string; pin: string }>;
  /** Where to write the CA and test-client PEM files; a new temp folder by default. */
  dir?: string;
  expires?: number;
  /** 301 mode on the pool: redirect to the SBA (primary) and itself (backup). */
  redirect?: boolean;
  /** Passed to the web services (PIN path, lockout, certificate validity …). */
  web?: Partial<Omit<WebServicesOptions, "ca" | "directory" | "fqdn">>;
  /** Offset the lab's NTP server adds to the real time (ms). */
  ntpOffsetMs?: number;
}

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
  ca: string;
  dir: string;
  names: { pool: string; sba: string };
  users: Array<{ extension: string; pin: string; uri: string }>;
  testClient: { uri: string; cert: string; key: string };
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
  stop(): Promise<void>;
}

export async function startLab(opts: LabOptions = {}): Promise<Lab> {
  const site = opts.site ?? "branch";
  const domain = opts.domain ?? "lab.test";
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "handset-lab-")));
  await mkdir(dir, { recursive: true });
  const ca = await LabCa.create();
  const names = { pool: `pool.${domain}`, sba: `sba.${domain}` };
  const [poolCert, sbaCert] = await Promise.all([
    ca.issueServer(names.pool, []),
    ca.issueServer(names.sba, []),
  ]);
  const directory = new UserDirectory(domain);
  const users = opts.users ?? [{ extension: "4711", pin: "1234" }];
  for (const u of users) directory.add(u.extension, u.pin);
  const first = directory.byExtension(users[0]!.extension)!;
  const client = await ca.issueClient(first.uri.slice(4));
  directory.publish(first, client.cert);

  const web = await startWebServices({ ca, directory, fqdn: names.pool, ...opts.web });
  const common = { ca: ca.cert, directory, expires: opts.expires, stsUri: web.certProvUrl };
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
  if (opts.redirect) pool.redirect = { primary: sba.address, backup: pool.address };

  const caPath = join(dir, "lab-ca.pem");
  const certPath = join(dir, "test-client.pem");
  const keyPath = join(dir, "test-client.key");
  await writeFile(caPath, ca.cert);
  await writeFile(certPath, client.cert);
  await writeFile(keyPath, client.key, { mode: 0o600 });

  const home = site === "branch" ? names.sba : names.pool;
  const ntp = await startNtpResponder({ offsetMs: opts.ntpOffsetMs ?? 0 });
  const dhcp = await startDhcpResponder({
    certProvUrl: web.certProvUrl,
    registrarFqdn: home,
    ntp: ["127.0.0.1"],
  });
  const control = await startControl({ pool, sba, directory });
  const ready: LabReady = {
    event: "lab.ready",
    site,
    domain,
    registrar: site === "branch" ? sba.address : pool.address,
    pool: pool.address,
    sba: sba.address,
    control: control.url,
    certProv: web.certProvUrl,
    dhcp: dhcp.address,
    ntp: ntp.address,
    hosts: { [names.pool]: pool.address, [names.sba]: sba.address },
    ca: caPath,
    dir,
    names,
    users: directory.all().map((u) => ({ extension: u.extension, pin: u.pin, uri: u.uri })),
    testClient: { uri: first.uri, cert: certPath, key: keyPath },
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
    stop: async () => {
      await control.stop();
      await Promise.all([pool.stop(), sba.stop(), web.stop(), dhcp.stop(), ntp.stop()]);
    },
  };
}
