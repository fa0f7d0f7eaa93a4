/**
 * Binds the TLS-DSK tunnel to the flow it runs in (issue 9 §2; tls-dsk.md §2.1 recommendation).
 *
 * The inner handshake authenticates the registrar only as far as its certificate chains to our
 * roots; nothing in [MS-SIPAE] ties it to the outer SIP/TLS connection. Without a binding, any
 * holder of a certificate from the same CA (another pool, a lab box, a stolen branch appliance
 * key) could answer the tunnel inside a flow to our registrar, or name an arbitrary targetname
 * that the SA would then be keyed on. So, before the phone sends its certificate and signature:
 * - the challenge's `targetname` must be a name the OUTER certificate was verified for
 *   (DNS SAN / CN via checkHost, or an IP SAN via checkIP);
 * - the INNER server certificate must be the outer one, or carry the same public key
 *   (a pool may present a distinct certificate for the same key after a re-issue).
 *
 * Pure computation on PEM/DER (node:crypto X509Certificate only).
 */
import { X509Certificate } from "node:crypto";
import { AuthError } from "../../core/errors.ts";

function looksLikeIp(name: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(name) || (name.includes(":") && /^[0-9a-fA-F:.]+$/.test(name));
}

function parse(pemOrDer: string | Buffer): X509Certificate | undefined {
  try {
    return new X509Certificate(pemOrDer);
  } catch {
    return undefined;
  }
}

/** Undefined when `targetname` is a name the outer certificate is valid for; else the error. */
export function checkTargetname(outerPem: string, targetname: string): AuthError | undefined {
  const outer = outerPem ? parse(outerPem) : undefined;
  if (!outer)
    return new AuthError(
      "tunnel-unbound",
      "The flow carries no verified registrar certificate; the TLS-DSK tunnel cannot be bound to it",
    );
  const name = targetname.trim();
  const ok =
    name !== "" &&
    (looksLikeIp(name)
      ? outer.checkIP(name) !== undefined
      : outer.checkHost(name, { subject: "always" }) !== undefined);
  return ok
    ? undefined
    : new AuthError(
        "tunnel-targetname-mismatch",
        `The challenge's targetname ${JSON.stringify(targetname)} is not a name the registrar's certificate was verified for`,
      );
}

function spki(c: X509Certificate): Buffer {
  return c.publicKey.export({ type: "spki", format: "der" });
}

/** Undefined when the inner certificate is the outer one or shares its public key; else the error. */
export function checkInnerCertificate(outerPem: string, inner: string | Buffer): AuthError | undefined {
  const outer = outerPem ? parse(outerPem) : undefined;
  const innerCert = parse(inner);
  if (!outer)
    return new AuthError(
      "tunnel-unbound",
      "The flow carries no verified registrar certificate; the TLS-DSK tunnel cannot be bound to it",
    );
  if (!innerCert)
    return new AuthError("tunnel-cert-mismatch", "The tunnelled server certificate cannot be read");
  if (outer.raw.equals(innerCert.raw) || spki(outer).equals(spki(innerCert))) return undefined;
  return new AuthError(
    "tunnel-cert-mismatch",
    "The tunnelled server certificate is neither the registrar's certificate nor shares its key",
  );
}
