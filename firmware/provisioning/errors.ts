/**
 * Typed failures of PIN sign-in and certificate provisioning. `code` is stable (JSON events,
 * MQTT, tests); `message` is one line for logs and the CLI; `display` fits a 20-character LCD.
 * No field ever carries a PIN, ticket, entropy or key.
 */
import { HandsetError } from "../core/errors.ts";

export type ProvisioningErrorCode =
  | "invalid-pin"
  | "account-locked"
  | "pin-auth-disabled"
  | "server-unreachable"
  | "server-cert-untrusted"
  | "server-cert-time"
  | "clock-invalid"
  | "malformed-response"
  | "cert-key-mismatch"
  | "ticket-rejected"
  | "certificate-revoked"
  | "cert-request-rejected"
  | "response-too-large"
  | "sign-in-interrupted"
  | "timeout";

const DISPLAY: Record<ProvisioningErrorCode, string> = {
  "invalid-pin": "Wrong PIN",
  "account-locked": "PIN locked",
  "pin-auth-disabled": "PIN sign-in disabled",
  "server-unreachable": "Server unreachable",
  "server-cert-untrusted": "Server not trusted",
  "server-cert-time": "Check date/time",
  "clock-invalid": "Time not set",
  "malformed-response": "Bad server reply",
  "cert-key-mismatch": "Bad certificate",
  "ticket-rejected": "Sign-in refused",
  "certificate-revoked": "Certificate revoked",
  "cert-request-rejected": "Cert request refused",
  "response-too-large": "Bad server reply",
  "sign-in-interrupted": "Sign-in interrupted",
  timeout: "Server timeout",
};

export interface ProvisioningErrorDetails {
  cause?: unknown;
  /** Overrides the default LCD line (max 20 characters). */
  display?: string;
  /** What the server said about remaining attempts, when it says anything. */
  attemptsWarning?: string;
  /** The X-Ms-diagnostics / OCSDiagnosticsFault error id, when the server gave one. */
  diagnosticId?: number;
  /** The server's reason text, when it gave one. */
  reason?: string;
  /** HTTP status of the failing exchange, when there was one. */
  status?: number;
}

export class ProvisioningError extends HandsetError {
  declare readonly code: ProvisioningErrorCode;
  readonly display: string;
  readonly attemptsWarning?: string;
  readonly diagnosticId?: number;
  readonly reason?: string;
  readonly status?: number;

  constructor(code: ProvisioningErrorCode, message: string, details: ProvisioningErrorDetails = {}) {
    super(code, message, details.cause === undefined ? undefined : { cause: details.cause });
    this.display = (details.display ?? DISPLAY[code]).slice(0, 20);
    if (details.attemptsWarning !== undefined) this.attemptsWarning = details.attemptsWarning;
    if (details.diagnosticId !== undefined) this.diagnosticId = details.diagnosticId;
    if (details.reason !== undefined) this.reason = details.reason;
    if (details.status !== undefined) this.status = details.status;
  }
}

/**
 * The certificate port refused the phone's certificate as a credential (a "ticket-rejected" that
 * came from there). Lives here, not in cert-auth-ticket.ts, so that the certificate lifecycle of a
 * registered phone can tell a refusal without loading the XML and signing code.
 */
export class CertificateRefusedError extends ProvisioningError {}

/**
 * True when the server refused the phone's certificate as a credential: code
 * "certificate-revoked", or a "ticket-rejected" that came from the certificate port. Renewing
 * with that certificate cannot succeed any more; the phone needs a PIN sign-in.
 */
export function isCertificateRefusal(err: unknown): boolean {
  return (
    (err instanceof ProvisioningError && err.code === "certificate-revoked") ||
    err instanceof CertificateRefusedError
  );
}
