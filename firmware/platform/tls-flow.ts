/**
 * SIP over TLS (RFC 3261 §26.2, RFC 5630): the one place the SIP stack touches a socket.
 * Verifies the registrar's certificate against the configured roots and name, frames the
 * stream, answers keep-alive pings, and reports a single close reason.
 */
import * as tls from "node:tls";
import { HandsetError, TransportError } from "../core/errors.ts";
import type { Flow, FlowConnector, FlowTarget } from "../sip/flow.ts";
import { StreamFramer } from "../sip/message/framer.ts";
import type { SipMessage } from "../sip/message/message.ts";
import { serializeMessage } from "../sip/message/serialize.ts";

export interface TlsFlowOptions {
  /** Trusted roots (PEM). Never empty: an unverified registrar is no registrar. */
  ca: string[];
  /** Connect timeout in ms. */
  connectTimeoutMs?: number;
}

const CERT_NAME_CODES = new Set(["ERR_TLS_CERT_ALTNAME_INVALID", "ERR_TLS_CERT_ALTNAME_FORMAT"]);
const CERT_TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
]);

function classify(err: Error & { code?: string }, target: FlowTarget): TransportError {
  const where = `${target.host}:${target.port}`;
  const code = err.code ?? "";
  if (CERT_NAME_CODES.has(code)) {
    return new TransportError(
      "registrar-cert-name-mismatch",
      `Registrar ${where} presented a certificate not valid for "${target.serverName ?? target.host}"`,
      { cause: err },
    );
  }
  if (CERT_TRUST_CODES.has(code)) {
    return new TransportError(
      "registrar-cert-untrusted",
      `Registrar ${where} certificate is not trusted (${code})`,
      {
        cause: err,
      },
    );
  }
  if (code === "CERT_HAS_EXPIRED" || code === "CERT_NOT_YET_VALID") {
    return new TransportError(
      "registrar-cert-time",
      `Registrar ${where} certificate is outside its validity (${code})`,
      {
        cause: err,
      },
    );
  }
  if (code === "ECONNREFUSED")
    return new TransportError("connect-refused", `Registrar ${where} refused the connection`);
  if (code === "ECONNRESET" || code === "EPIPE")
    return new TransportError("connection-reset", `Connection to ${where} reset`);
  if (code === "ETIMEDOUT") return new TransportError("connect-timeout", `No answer from registrar ${where}`);
  return new TransportError("transport-failed", `Connection to ${where} failed: ${err.message}`, {
    cause: err,
  });
}

function isIp(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}

export function tlsFlowConnector(options: TlsFlowOptions): FlowConnector {
  if (options.ca.length === 0)
    throw new HandsetError("config-invalid", "No trusted root certificates configured");
  return (target) =>
    new Promise<Flow>((resolve, reject) => {
      const serverName = target.serverName ?? target.host;
      const socket = tls.connect({
        host: target.host,
        port: target.port,
        ca: options.ca,
        rejectUnauthorized: true,
        servername: isIp(serverName) ? undefined : serverName,
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(serverName, cert),
        minVersion: "TLSv1.2",
      });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(
          new TransportError("connect-timeout", `No answer from registrar ${target.host}:${target.port}`),
        );
      }, options.connectTimeoutMs ?? 10_000);
      socket.once("error", (err) => {
        clearTimeout(timer);
        reject(classify(err, target));
      });
      socket.once("secureConnect", () => {
        clearTimeout(timer);
        // Signalling is small writes: without this, a REGISTER written right after a keep-alive
        // ping waits for the peer's delayed ACK (Nagle), up to 40 ms on Linux.
        socket.setNoDelay(true);
        socket.removeAllListeners("error");
        resolve(new TlsFlow(socket, target));
      });
    });
}

class TlsFlow implements Flow {
  readonly remote: string;
  readonly local: { address: string; port: number };
  readonly peerCertificatePem: string;
  private readonly framer = new StreamFramer();
  private readonly messageListeners: Array<(m: SipMessage) => void> = [];
  private readonly pongListeners: Array<() => void> = [];
  private readonly closeListeners: Array<(r?: HandsetError) => void> = [];
  private closed = false;
  private closeReason: HandsetError | undefined;

  constructor(
    private readonly socket: tls.TLSSocket,
    target: FlowTarget,
  ) {
    this.remote = `${target.host}:${target.port}`;
    this.local = { address: socket.localAddress ?? "127.0.0.1", port: socket.localPort ?? 0 };
    const raw = socket.getPeerCertificate(false)?.raw;
    this.peerCertificatePem = raw ? derToPem(raw) : "";
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err) => {
      this.closeReason ??= classify(err, target);
    });
    socket.on("close", () =>
      this.finish(
        this.closeReason ?? new TransportError("connection-closed", `${this.remote} closed the connection`),
      ),
    );
  }

  private onData(chunk: Buffer): void {
    for (const ev of this.framer.push(chunk)) {
      if (ev.type === "message") for (const l of this.messageListeners) l(ev.message);
      else if (ev.type === "ping") this.write(Buffer.from("\r\n"));
      else if (ev.type === "pong") for (const l of this.pongListeners) l();
      else if (ev.error.code === "sip-too-large") {
        // The framing is lost; nothing after this point can be trusted.
        this.closeReason = new TransportError("sip-too-large", ev.error.message);
        this.socket.destroy();
        return;
      }
      // A malformed but framed message is dropped; the stream carries on.
    }
  }

  private write(bytes: Buffer): void {
    if (!this.closed && this.socket.writable) this.socket.write(bytes);
  }

  send(message: SipMessage): void {
    this.write(serializeMessage(message));
  }

  sendPing(): void {
    this.write(Buffer.from("\r\n\r\n"));
  }

  close(): void {
    if (this.closed) return;
    this.socket.end();
    this.socket.destroy();
    this.finish(undefined);
  }

  private finish(reason: HandsetError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.closeListeners) l(reason);
  }

  onMessage(listener: (m: SipMessage) => void): void {
    this.messageListeners.push(listener);
  }

  onPong(listener: () => void): void {
    this.pongListeners.push(listener);
  }

  onClose(listener: (r?: HandsetError) => void): void {
    if (this.closed) listener(this.closeReason);
    else this.closeListeners.push(listener);
  }
}

export function derToPem(der: Buffer): string {
  const b64 = der
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN CERTIFICATE-----\n${b64}\n-----END CERTIFICATE-----\n`;
}
