/**
 * Certificate verification at the phone's time, not the OS's. PURE: X509Certificate in, a verdict
 * out; the time comes from the caller (the phone's Clock: SNTP-corrected, never behind the saved
 * floor). Every TLS edge (outer SIP/TLS, HTTPS, the inner TLS-DSK handshake) runs this on the
 * server's chain before it writes a single application byte, because OpenSSL and node-forge can
 * only check validity against the OS clock, which on a Pi without an RTC is anything.
 *
 * What is checked, as OpenSSL does for a TLS client (X509_verify_cert + ssl server purpose):
 * - a path from the leaf through the presented intermediates to one of the configured roots:
 *   issuer name (checkIssued) and signature (verify) on every link, `CA:TRUE` on every issuer
 *   that is not the trust anchor, at most MAX_DEPTH links;
 * - the serverAuth extended key usage on every certificate of the path below the anchor that
 *   carries an EKU extension; on the leaf, a key usage extension (when present) allowing
 *   digitalSignature, keyEncipherment or keyAgreement (keyCertSign on issuers is part of
 *   checkIssued, OpenSSL's X509_check_issued);
 * - the name (checkHost / checkIP) on the leaf;
 * - validity (notBefore ≤ at ≤ notAfter) of every certificate of the path, the anchor included.
 *
 * The verdict's `kind` says what failed; "time" only when everything else holds, so a caller can
 * tell "this chain is good but the clock disagrees with it" (clock-invalid before SNTP) from
 * "this chain is bad".
 */
import { X509Certificate } from "node:crypto";

/** The part of the phone's clock a certificate check needs. ClockService implements it. */
export interface CertClock {
  /** Milliseconds since the epoch, as the phone believes it. */
  now(): number;
  /** False until an authoritative source (SNTP) has set the clock; absent = treated as set. */
  isSet?(): boolean;
}

export type CertProblemKind = "time" | "untrusted" | "name" | "usage";

export interface CertProblem {
  kind: CertProblemKind;
  message: string;
}

export interface VerifyOptions {
  /** The peer's chain, leaf first (DER or parsed). */
  chain: Array<X509Certificate | Buffer>;
  /** Trusted roots (PEM or parsed). */
  roots: Array<X509Certificate | string>;
  /** The time to check validity at (epoch ms). */
  at: number;
  /**
   * The name the leaf must carry (DNS name or IP literal). `subject: "default"` looks at the CN
   * only when there is no DNS SAN (RFC 6125, Node's checkServerIdentity); "always" also at the CN.
   */
  name?: { host: string; subject?: "default" | "always" };
  /** Require serverAuth where an EKU extension is present (default true). */
  serverAuth?: boolean;
}

export const MAX_DEPTH = 10;
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";

/** OpenSSL verify-result codes that are about time alone: acceptable when our own check at clock.now() passes. */
export const OPENSSL_TIME_CODES: ReadonlySet<string> = new Set([
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CRL_HAS_EXPIRED",
  "CRL_NOT_YET_VALID",
]);

/**
 * OpenSSL's own verdict, kept where the OS clock agrees: acceptable when it found nothing, or only a
 * time problem (which our check at the phone's time overrules).
 */
export function opensslVerdictAcceptable(authorized: boolean, authorizationError: unknown): boolean {
  if (authorized) return true;
  const code =
    authorizationError instanceof Error ? (authorizationError as { code?: string }).code : authorizationError;
  return typeof code === "string" && OPENSSL_TIME_CODES.has(code);
}

function parse(c: X509Certificate | Buffer | string): X509Certificate {
  return c instanceof X509Certificate ? c : new X509Certificate(c);
}

function label(c: X509Certificate): string {
  return c.subject.replace(/\n/g, ", ");
}

/** True when the certificate is valid at `at` (epoch ms). */
export function validAt(c: X509Certificate, at: number): boolean {
  const from = Date.parse(c.validFrom);
  const to = Date.parse(c.validTo);
  return Number.isFinite(from) && Number.isFinite(to) && from <= at && at <= to;
}

/** The leaf carries `host` (a DNS name, wildcard in the leftmost label allowed, or an IP literal as an IP SAN). */
export function certificateHasName(
  cert: X509Certificate,
  host: string,
  subject: "default" | "always" = "default",
): boolean {
  const h = host.replace(/^\[|\]$/g, "");
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(h) || h.includes(":")) return cert.checkIP(h) !== undefined;
  return cert.checkHost(h, { subject }) !== undefined;
}

/** One DER element: its tag octet and where its contents lie in the buffer. */
interface Der {
  tag: number;
  start: number;
  end: number;
}

/** The DER element at `at`, or undefined when its length runs past `limit` (never throws). */
function derAt(buf: Buffer, at: number, limit: number): Der | undefined {
  if (at + 2 > limit) return undefined;
  const tag = buf[at]!;
  let len = buf[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > limit) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[start + i]!;
    start += n;
  }
  return start + len <= limit ? { tag, start, end: start + len } : undefined;
}

function derChildren(buf: Buffer, of: Der): Der[] {
  const out: Der[] = [];
  for (let at = of.start; at < of.end; ) {
    const d = derAt(buf, at, of.end);
    if (!d) break;
    out.push(d);
    at = d.end;
  }
  return out;
}

/** 2.5.29.15 (id-ce-keyUsage) as DER OID contents. */
const KEY_USAGE_OID = Buffer.from([0x55, 0x1d, 0x0f]);

/**
 * The key usage bits (bit 0 = digitalSignature … bit 8), or undefined without the extension.
 * Node's X509Certificate has no accessor for them (its keyUsage is the extended key usage), so
 * this walks the DER (RFC 5280 §4.1: tbsCertificate's [3] extensions) itself — a few lines that
 * keep node-forge, and its memory, out of every TLS connection.
 */
export function keyUsageBits(c: X509Certificate): number | undefined {
  const raw = c.raw;
  const cert = derAt(raw, 0, raw.length);
  const tbs = cert && derChildren(raw, cert)[0];
  const extsTagged = tbs && derChildren(raw, tbs).find((d) => d.tag === 0xa3);
  const exts = extsTagged && derChildren(raw, extsTagged)[0];
  if (!exts) return undefined;
  for (const ext of derChildren(raw, exts)) {
    const fields = derChildren(raw, ext);
    const oid = fields[0];
    if (oid?.tag !== 0x06 || !raw.subarray(oid.start, oid.end).equals(KEY_USAGE_OID)) continue;
    const octets = fields.at(-1);
    const bits = octets?.tag === 0x04 ? derAt(raw, octets.start, octets.end) : undefined;
    if (bits?.tag !== 0x03) return undefined;
    // BIT STRING: first octet = unused bits, then the bits, most significant first.
    let v = 0;
    for (let i = 1; bits.start + i < bits.end && i < 3; i++) {
      const octet = raw[bits.start + i]!;
      for (let b = 0; b < 8; b++) if (octet & (0x80 >> b)) v |= 1 << ((i - 1) * 8 + b);
    }
    return v;
  }
  return undefined;
}

const KU_DIGITAL_SIGNATURE = 1 << 0;
const KU_KEY_ENCIPHERMENT = 1 << 2;
const KU_KEY_AGREEMENT = 1 << 4;

function eku(c: X509Certificate): string[] | undefined {
  // Node 20 names the extended key usage `keyUsage` (undefined when the extension is absent).
  const usages = (c as { keyUsage?: string[] }).keyUsage;
  return Array.isArray(usages) ? usages : undefined;
}

/** Verifies a server chain at `o.at`. Returns null when it is good, or the first problem (time last). */
export function verifyServerChain(o: VerifyOptions): CertProblem | null {
  let chain: X509Certificate[];
  let roots: X509Certificate[];
  try {
    chain = o.chain.map(parse);
  } catch {
    return { kind: "untrusted", message: "server certificate unparsable" };
  }
  try {
    roots = o.roots.map(parse);
  } catch {
    return { kind: "untrusted", message: "a trusted root is unparsable" };
  }
  const leaf = chain[0];
  if (!leaf) return { kind: "untrusted", message: "no server certificate" };

  // 1. The path, ignoring time: leaf → intermediates (CA:TRUE) → a configured root.
  const path: X509Certificate[] = [leaf];
  let anchor: X509Certificate | undefined;
  let current = leaf;
  const pool = chain.slice(1);
  for (let depth = 0; ; depth++) {
    if (depth >= MAX_DEPTH) return { kind: "untrusted", message: "certificate chain too long" };
    const same = roots.find((r) => r.fingerprint256 === current.fingerprint256);
    if (same) {
      anchor = same;
      path.pop();
      break;
    }
    const root = roots.find((r) => current.checkIssued(r) && safeVerify(current, r));
    if (root) {
      anchor = root;
      break;
    }
    const next = pool.find(
      (c) => c !== current && !path.includes(c) && current.checkIssued(c) && safeVerify(current, c),
    );
    if (!next)
      return { kind: "untrusted", message: `chain of ${label(leaf)} does not lead to a trusted root` };
    if (!next.ca) return { kind: "untrusted", message: `issuer ${label(next)} is not a CA` };
    path.push(next);
    current = next;
  }
  const trusted = anchor ? [...path, anchor] : path;

  // 2. Purpose: serverAuth wherever an EKU is present (OpenSSL's SSL-server purpose check).
  if (o.serverAuth !== false) {
    for (const c of path) {
      const usages = eku(c);
      if (usages && !usages.includes(SERVER_AUTH))
        return { kind: "usage", message: `certificate ${label(c)} is not for TLS servers` };
    }
    let ku: number | undefined;
    try {
      ku = keyUsageBits(leaf);
    } catch {
      return { kind: "untrusted", message: "server certificate extensions unparsable" };
    }
    if (ku !== undefined && (ku & (KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT | KU_KEY_AGREEMENT)) === 0)
      return { kind: "usage", message: `key usage of ${label(leaf)} does not allow TLS` };
  }

  // 3. The name on the leaf.
  if (o.name && !certificateHasName(leaf, o.name.host, o.name.subject ?? "default")) {
    return { kind: "name", message: `server certificate is not valid for "${o.name.host}"` };
  }

  // 4. Validity at the phone's time, of every certificate the trust rests on.
  for (const c of trusted) {
    if (!validAt(c, o.at)) {
      const when = new Date(o.at).toISOString();
      return {
        kind: "time",
        message: `certificate ${label(c)} (valid ${new Date(Date.parse(c.validFrom)).toISOString()} to ${new Date(Date.parse(c.validTo)).toISOString()}) is not valid at ${when}`,
      };
    }
  }
  return null;
}

function safeVerify(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** True when a time-only problem arose while the clock is not yet set: the verdict is "clock-invalid". */
export function isClockInvalid(problem: CertProblem | null, clock: CertClock): boolean {
  return problem?.kind === "time" && clock.isSet !== undefined && !clock.isSet();
}
