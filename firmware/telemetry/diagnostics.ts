/**
 * The phone's diagnostics as one JSON object: what an admin asks first (which registrar, is it
 * the backup, which address, which time server, which certificate). PURE: everything comes in as
 * data, so the same object feeds the Network info pages (firmware/phone/screens.ts), `handset
 * store show --json`, and later an MQTT payload. It never holds a secret: no private key, PIN,
 * web ticket or PEM body — certificates appear as subject, issuer, serial, dates and fingerprint.
 */
import { X509Certificate } from "node:crypto";
import type { IdentityRecord } from "../store/identity-store.ts";

export interface DiagnosticsInput {
  /** The firmware's version, when a phone runs. */
  version?: string;
  /** The phone's lifecycle state, when a phone runs. */
  state?: string;
  /** What flash holds (undefined: factory state or unreadable). */
  record?: IdentityRecord;
  /** The registration policy's latest word, when a phone runs. */
  registration?: { registrar?: string; primary?: boolean; state?: string };
  network?: { interface?: string; ip?: string; mac?: string };
  /** The time server whose answer set the clock, if any did. */
  ntp?: { server?: string; offsetMs?: number; set: boolean };
  /** What discovery found this boot. */
  discovery?: {
    registrars: Array<{ host: string; port: number; source: string }>;
    certProvUrl?: string;
    ntpServers: string[];
  };
}

export interface CertificateDiagnostics {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  sha256: string;
}

export interface Diagnostics {
  version?: string;
  state?: string;
  user?: string;
  registrar: {
    /** "host:port" in use now (a running phone), else the last one registered with (flash). */
    inUse?: string;
    /** True when the registrar in use is not the home (primary) one. */
    backup?: boolean;
    /** Whether `inUse` is the live registration or the last one flash remembers. */
    from?: "registration" | "flash";
    primary?: string;
    backupConfigured?: string;
    discovered: string[];
  };
  network: { interface?: string; ip?: string; mac?: string };
  ntp: { server?: string; set: boolean; offsetMs?: number; discovered: string[] };
  certProvUrl?: string;
  certificate?: CertificateDiagnostics;
  signIn?: { stage: string; startedAt: string };
  device?: { deviceId: string; epid: string; instanceId: string };
  trustedRoots: Array<{ subject: string; sha256: string } | { error: string }>;
  lastGoodTime?: string;
}

const iso = (ms: number): string => {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
};

/** One-line distinguished name: "CN=4711, O=Lab" (node prints one attribute per line). */
function oneLine(dn: string): string {
  return dn
    .split("\n")
    .map((p) => p.trim())
    .filter(Boolean)
    .join(", ");
}

export function describeCertificate(pem: string): CertificateDiagnostics | { error: string } {
  try {
    const x = new X509Certificate(pem);
    return {
      subject: oneLine(x.subject),
      issuer: oneLine(x.issuer),
      serial: x.serialNumber.toUpperCase(),
      notBefore: iso(Date.parse(x.validFrom)),
      notAfter: iso(Date.parse(x.validTo)),
      sha256: x.fingerprint256,
    };
  } catch {
    return { error: "certificate does not parse" };
  }
}

/** Builds the diagnostics object (pure; no secret ever copied). */
export function diagnostics(i: DiagnosticsInput): Diagnostics {
  const r = i.record;
  const live = i.registration?.registrar;
  const last = r?.registrars.lastAddresses?.[0];
  const out: Diagnostics = {
    ...(i.version ? { version: i.version } : {}),
    registrar: {
      discovered: (i.discovery?.registrars ?? []).map((x) => `${x.host}:${x.port} (${x.source})`),
    },
    network: { ...i.network },
    ntp: { set: i.ntp?.set ?? false, discovered: [...(i.discovery?.ntpServers ?? [])] },
    trustedRoots: (r?.trustedRoots ?? []).map((pem) => {
      const c = describeCertificate(pem);
      return "error" in c ? c : { subject: c.subject, sha256: c.sha256 };
    }),
  };
  if (i.state) out.state = i.state;
  if (live) {
    out.registrar.inUse = live;
    out.registrar.from = "registration";
    if (i.registration?.primary !== undefined) out.registrar.backup = !i.registration.primary;
  } else if (last) {
    out.registrar.inUse = last;
    out.registrar.from = "flash";
    if (r?.registrars.primary) out.registrar.backup = last !== r.registrars.primary;
  }
  if (r?.registrars.primary) out.registrar.primary = r.registrars.primary;
  if (r?.registrars.backup) out.registrar.backupConfigured = r.registrars.backup;
  if (i.ntp?.server) out.ntp.server = i.ntp.server;
  if (i.ntp?.offsetMs !== undefined) out.ntp.offsetMs = i.ntp.offsetMs;
  const certProvUrl = i.discovery?.certProvUrl ?? r?.certProvUrl;
  if (certProvUrl) out.certProvUrl = certProvUrl;
  if (r) {
    out.device = { deviceId: r.deviceId, epid: r.epid, instanceId: r.instanceId };
    if (r.credential) {
      out.user = r.credential.uri;
      const c = describeCertificate(r.credential.certPem);
      if (!("error" in c)) out.certificate = c;
    } else if (r.signIn?.uri) out.user = r.signIn.uri;
    if (r.signIn) out.signIn = { stage: r.signIn.stage, startedAt: iso(r.signIn.startedAt) };
    if (r.lastGoodTime !== undefined) out.lastGoodTime = iso(r.lastGoodTime);
  }
  return out;
}

/**
 * The Network info pages' label/value pairs, in the order an admin reads them. Values are whole
 * (the screen wraps them across lines and pages, never cuts them).
 */
export function diagnosticsRows(d: Diagnostics): Array<[label: string, value: string]> {
  const rows: Array<[string, string]> = [];
  const add = (label: string, value: string | undefined) => {
    if (value) rows.push([label, value]);
  };
  const g = d.registrar;
  add(
    g.backup ? "Registrar (backup)" : "Registrar",
    g.inUse ? `${g.inUse}${g.from === "flash" ? " (last)" : ""}` : "none",
  );
  add("User", d.user);
  // A running phone always knows its network and time; `store show` (flash alone) does not.
  const live = d.state !== undefined || d.version !== undefined;
  if (live || d.network.ip) add("IP", d.network.ip ?? "unknown");
  if (live || d.network.mac) add("MAC", d.network.mac ?? "unknown");
  if (live || d.ntp.server) add("NTP", d.ntp.server ?? (d.ntp.set ? "set" : "not set"));
  if (d.certificate) {
    add("Cert subject", d.certificate.subject);
    add("Cert issuer", d.certificate.issuer);
    add("Cert serial", d.certificate.serial);
    add("Cert expires", d.certificate.notAfter.replace("T", " ").replace(/\.\d+Z$/, "Z"));
  } else add("Certificate", "none");
  if (g.primary) add("Primary", g.primary);
  if (g.backupConfigured) add("Backup", g.backupConfigured);
  for (const x of g.discovered) add("Found", x);
  add("CertProv", d.certProvUrl);
  add("Device", d.device?.deviceId);
  return rows;
}
