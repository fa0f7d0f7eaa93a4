/**
 * Typed errors. Every failure the phone can meet has a stable `code` (used in JSON events,
 * on MQTT and in tests) and a one-line `message` fit for the display and the CLI. A plain
 * Error escaping a core is a bug; a HandsetError is an expected condition.
 */
export class HandsetError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Malformed SIP from the wire. */
export class SipParseError extends HandsetError {
  constructor(message: string, code = "sip-parse") {
    super(code, message);
  }
}

/** Transport-level failure: connect, TLS verification, reset, timeout. */
export class TransportError extends HandsetError {}

/** Authentication failure: TLS-DSK handshake, signature, challenge. */
export class AuthError extends HandsetError {}

/** Registrar refused or failed to answer a registration. */
export class RegistrationError extends HandsetError {}

/** Wraps whatever was thrown into a HandsetError so callers can report it uniformly. */
export function asHandsetError(err: unknown, code = "internal"): HandsetError {
  if (err instanceof HandsetError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new HandsetError(code, message, { cause: err });
}
