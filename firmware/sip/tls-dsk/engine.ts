/**
 * TLS-DSK ([MS-SIPAE]) tunnelled-handshake engines: the contract between the registration
 * client and whichever TLS implementation runs the inner handshake.
 *
 * Every token is a whole flight of raw TLS records (record headers included), exactly as it
 * travels base64'd in `gssapi-data`. After the handshake the key material is the RFC 5705
 * exporter "client EAP encryption" (128 bytes, no context) = PRF(master, label, cr‖sr);
 * client signing key = bytes 64..95, server signing key = bytes 96..127.
 *
 * Errors are AuthError with codes:
 * - "tls-handshake-failed"       alert received, decode failure, unexpected message
 * - "tls-server-cert-untrusted"  server chain does not lead to a trusted root (or is expired)
 * - "tls-server-name-mismatch"   server certificate matches neither CN nor a DNS SAN of targetname
 * - "tls-handshake-timeout"      the engine did not produce/finish a flight in time
 * - "tls-record-malformed"       the token is not a sequence of well-formed TLS records
 * - "clock-invalid"              the server chain is good but for its validity at the phone's
 *                                time, and the clock is not set yet (retry once SNTP answers)
 * - "client-cert-untrusted"      (server side) the client certificate is not from the CA
 */

import type { CertClock } from "./cert-verify.ts";

export type InnerTls = "1.2" | "1.0" | "auto";

export interface TlsDskHandshakeResult {
  /** 128 bytes of "client EAP encryption" exporter output. */
  keyMaterial: Buffer;
  /** "TLSv1" | "TLSv1.1" | "TLSv1.2" */
  version: string;
  /** OpenSSL-style name, e.g. "AES128-SHA". */
  cipher: string;
  /** The peer's leaf certificate (server's for a client engine, client's for a server engine). */
  peerCertificatePem: string;
}

export interface TlsDskClientEngine {
  /** ClientHello flight. */
  start(): Promise<Buffer>;
  /**
   * After server flight 1 → client flight 2; after server flight 2 → done (server Finished
   * verified).
   */
  step(serverToken: Buffer): Promise<{ token: Buffer } | { done: TlsDskHandshakeResult }>;
  /** Idempotent; frees sockets/listeners/timers. */
  destroy(): void;
}

export interface TlsDskClientOptions {
  /** Client certificate (PEM, leaf). */
  cert: string;
  /** Client private key (PEM). */
  key: string;
  /** Trusted roots (PEM). */
  ca: string[];
  /** The challenge's targetname; must match the server certificate's CN or a DNS SAN. */
  targetname: string;
  innerTls: InnerTls;
  /**
   * The phone's clock: the server certificate's validity is checked at its now() (never the OS
   * clock's); a time-only failure while isSet() is false is "clock-invalid". Default: the OS clock.
   */
  clock?: CertClock;
}

/** Server side (lab registrar). `done` comes with the token carrying server flight 2. */
export interface TlsDskServerEngine {
  step(clientToken: Buffer): Promise<{ token: Buffer; done?: TlsDskHandshakeResult }>;
  destroy(): void;
}

/** Tuning knobs shared by the engines (not part of the protocol options). */
export interface TlsDskEngineTuning {
  /** How long to wait for the TLS implementation to produce a flight / finish. Default 10 s. */
  flightTimeoutMs?: number;
}

export const DEFAULT_FLIGHT_TIMEOUT_MS = 10_000;
