import type { HandsetError } from "../core/errors.ts";
import type { SipMessage } from "./message/message.ts";

/**
 * A flow (RFC 5626 term): one connection-oriented transport to one registrar. The protocol
 * layers above see only this; the TLS socket behind it lives in platform/.
 *
 * Contract:
 * - `send` never throws for a closed flow; it reports through `onClose` instead.
 * - `onClose` fires exactly once, with the reason when the close was not asked for.
 * - A flow does not reconnect by itself: recovery is the policy layer's job.
 */
export interface Flow {
  /** "host:port" of the remote end, for events and logs. */
  readonly remote: string;
  /** Local address and port, for Via and Contact. */
  readonly local: { address: string; port: number };
  /** The peer's certificate (PEM), as verified during the TLS handshake. */
  readonly peerCertificatePem: string;
  send(message: SipMessage): void;
  /** RFC 5626 §4.4.1 keep-alive: a double CRLF ping; the peer answers with a single CRLF pong. */
  sendPing(): void;
  close(): void;
  onMessage(listener: (message: SipMessage) => void): void;
  onPong(listener: () => void): void;
  onClose(listener: (reason?: HandsetError) => void): void;
}

export interface FlowTarget {
  host: string;
  port: number;
  /** The name the registrar's certificate must carry (defaults to host). */
  serverName?: string;
}

/** Opens flows; implemented by platform/tls-flow.ts and by test doubles. */
export type FlowConnector = (target: FlowTarget) => Promise<Flow>;
