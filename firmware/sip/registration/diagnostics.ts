/**
 * What a registrar's refusal means, from its status code and `ms-diagnostics` ErrorId, never
 * from reason phrases or free text ([MS-OCER] §2.2.1.1 header format, §7/§8 ErrorId tables;
 * [MS-SIPREGE] §3.1.2.5.1 special error responses).
 *
 *   ms-diagnostics: <ErrorId>[.<sub>];reason="<text>";source="<fqdn>"[;name=value]*
 *   ms-diagnostics-public: the same without `source` (sent across an enterprise boundary)
 *
 * The `reason` text is kept for people (display, logs) only. Decisions read `meaning`.
 *
 * Pure module: no I/O. The header grammar (shared with the web services' X-Ms-diagnostics) is
 * sip/grammar/ms-diagnostics.ts.
 */

import { type MsDiagnostic, parseMsDiagnostics } from "../grammar/ms-diagnostics.ts";

export { type MsDiagnostic, parseMsDiagnostics };

/** What the phone does with a refusal depends only on this. */
export type DiagnosticMeaning =
  /** The client certificate is not (or no longer) published for the user: a new sign-in helps. */
  | "certificate-not-published"
  /** The client certificate was revoked (Revoke-CsClientCertificate): a new sign-in helps. */
  | "certificate-revoked"
  /** The authentication handshake failed on the server (transient or not: retried with backoff). */
  | "handshake-failed"
  /** Clock skew detected during authentication. */
  | "clock-skew"
  | "user-not-found"
  | "user-disabled"
  /** Our REGISTER lacked epid / +sip.instance (a bug of ours, never fixed by retrying faster). */
  | "endpoint-id-missing"
  | "server-overloaded"
  | "client-version-refused"
  | "unknown";

export interface DiagnosticEntry {
  meaning: DiagnosticMeaning;
  /** Where the id comes from. */
  source: string;
}

/**
 * Lab-private ErrorIds. [MS-OCER] documents no ErrorId for "client certificate not published /
 * revoked" on a REGISTER (Revoke-CsClientCertificate only says "the authentication request will
 * be denied"), and the ids the lab used before (1010, 1012) mean something else in [MS-OCER]
 * (next-hop certificate trust; From URI not authorised outside the enterprise) — a real pool
 * sending them must NOT send a phone to sign-in. So the lab uses ids outside every range
 * [MS-OCER] assigns (0–17999, 2xxxx, 90000–90999).
 */
export const LAB_DIAGNOSTIC = {
  certificateNotPublished: 65010,
  certificateRevoked: 65012,
} as const;

const TABLE: ReadonlyMap<number, DiagnosticEntry> = new Map<number, DiagnosticEntry>([
  [1000, { meaning: "handshake-failed", source: "[MS-OCER] SipStack 1000 Final handshake failed" }],
  [1003, { meaning: "user-not-found", source: "[MS-OCER] SipStack 1003 User does not exist" }],
  [1013, { meaning: "clock-skew", source: "[MS-OCER] SipStack 1013 Significant time skew" }],
  [4005, { meaning: "user-not-found", source: "[MS-OCER] 4005 URI not enabled for SIP or does not exist" }],
  [4006, { meaning: "user-not-found", source: "[MS-OCER] 4006 User not found in pool" }],
  [4010, { meaning: "endpoint-id-missing", source: "[MS-SIPREGE] 3.1.2.5.1 / [MS-OCER] 4010" }],
  [4011, { meaning: "endpoint-id-missing", source: "[MS-OCER] 4011 Epid not present" }],
  [4012, { meaning: "endpoint-id-missing", source: "[MS-OCER] 4012 Epid too long" }],
  [4141, { meaning: "user-disabled", source: "[MS-SIPREGE] registration-notify rejected (4141)" }],
  [17000, { meaning: "server-overloaded", source: "[MS-OCER] 17000 Server overloaded" }],
  [17002, { meaning: "client-version-refused", source: "[MS-OCER] 17002 Invalid client version" }],
  [
    LAB_DIAGNOSTIC.certificateNotPublished,
    { meaning: "certificate-not-published", source: "handset lab (no [MS-OCER] id exists)" },
  ],
  [
    LAB_DIAGNOSTIC.certificateRevoked,
    { meaning: "certificate-revoked", source: "handset lab (no [MS-OCER] id exists)" },
  ],
]);

export function diagnosticMeaning(id: number | undefined): DiagnosticMeaning {
  if (id === undefined) return "unknown";
  return TABLE.get(id)?.meaning ?? "unknown";
}

/** Meanings after which only a person (a new sign-in) can help. */
export function refusesCertificate(meaning: DiagnosticMeaning): boolean {
  return meaning === "certificate-not-published" || meaning === "certificate-revoked";
}

/** The first readable diagnostic among the values of ms-diagnostics then ms-diagnostics-public. */
export function firstDiagnostic(values: readonly string[]): MsDiagnostic | undefined {
  for (const v of values) {
    const d = parseMsDiagnostics(v);
    if (d) return d;
  }
  return undefined;
}
