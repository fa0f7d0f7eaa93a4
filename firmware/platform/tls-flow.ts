/**
 * SIP over TLS (RFC 3261 §26.2, RFC 5630): the one place the SIP stack touches a socket.
 * Verifies the registrar's certificate against the configured roots and name, frames the
 * stream, answers keep-alive pings, and reports a single close reason.
 *
 * The certificate is checked at the phone's time (options.clock: SNTP-corrected), not the OS's:
 * OpenSSL cannot be given a verification time, so it runs with rejectUnauthorized off and, on
 * secureConnect and before anything is written, the chain, purpose, name and validity are
 * verified at clock.now() (sip/tls-dsk/cert-verify.ts). OpenSSL's own verdict must be clean or a
 * time code only, so this is never less strict than OpenSSL. A chain that is good except for time
 * while the clock is not yet set is `clock-invalid`.
 */
import * as tls from "node:tls";
import { HandsetError, TransportError } from "../core/errors.ts";
import type { Flow, FlowConnector, FlowTarget } from "../sip/flow.ts";
import { StreamFramer } from "../sip/message/framer.ts";
import type { SipMessage } from "../sip/message/message.ts";
import { serializeMessage } from "../sip/message/serialize.ts";
import {
  type CertClock,
  type CertProblem,
  isClockInvalid,
  opensslVerdictAcceptable,
  verifyServerChain,
} from "../sip/tls-dsk/cert-verify.ts";

/** How long a closed flow waits for the peer to answer its FIN before the socket is cut. */
const CLOSE_GRACE_MS = 2_000;

export interface TlsFlowOptions {
  /** Trusted roots (PEM). Never empty: an unverified registrar is no registrar. */
  ca: string[];
  /** Connect timeout in ms. */
  connectTimeoutMs?: number;
  /** The phone's clock, which certificate validity is checked against (default: the OS clock). */
  clock?: CertClock;
}

const OS_CLOCK: CertClock = { now: () => Date.now() };

/** The peer's chain as presented, leaf first, DER. */
export function peerChainDer(socket: tls.TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true) as
    | tls.DetailedPeerCertificate
    | undefined;
  while (c?.raw && out.length < 16) {
    if (out.some((d) => d.equals(c!.raw))) break;
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}

/**
 * The check every outer TLS edge runs on secureConnect: our verdict at clock.now(), then
 * OpenSSL's. Returns null when the peer may be trusted, else what went wrong.
 */
export function checkPeerAtClock(
  socket: tls.TLSSocket,
  o: { ca: string[]; clock: CertClock; name: string },
): (CertProblem & { clockInvalid: boolean; opensslCode?: string }) | null {
  const problem = verifyServerChain({
    chain: peerChainDer(socket),
    roots: o.ca,
    at: o.clock.now(),
    name: { host: o.name },
  });
  if (problem) return { ...problem, clockInvalid: isClockInvalid(problem, o.clock) };
  if (!opensslVerdictAcceptable(socket.authorized, socket.authorizationError)) {
    const code = String(socket.authorizationError ?? "unauthorized");
    return {
      kind: "untrusted",
      message: `TLS verification failed (${code})`,
      clockInvalid: false,
      opensslCode: code,
    };
  }
  return null;
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

function problemError(
  p: NonNullable<ReturnType<typeof checkPeerAtClock>>,
  target: FlowTarget,
): TransportError {
  const where = `${target.host}:${target.port}`;
  if (p.opensslCode) return classify(Object.assign(new Error(p.message), { code: p.opensslCode }), target);
  if (p.clockInvalid)
    return new TransportError(
      "clock-invalid",
      `Time not set: registrar ${where} certificate cannot be checked yet (${p.message})`,
    );
  switch (p.kind) {
    case "time":
      return new TransportError("registrar-cert-time", `Registrar ${where} certificate: ${p.message}`);
    case "name":
      return new TransportError(
        "registrar-cert-name-mismatch",
        `Registrar ${where} presented a certificate not valid for "${target.serverName ?? target.host}"`,
      );
    default:
      return new TransportError(
        "registrar-cert-untrusted",
        `Registrar ${where} certificate is not trusted: ${p.message}`,
      );
  }
}

export function tlsFlowConnector(options: TlsFlowOptions): FlowConnector {
  if (options.ca.length === 0)
    throw new HandsetError("config-invalid", "No trusted root certificates configured");
  const clock = options.clock ?? OS_CLOCK;
  return (target) =>
    new Promise<Flow>((resolve, reject) => {
      const serverName = target.serverName ?? target.host;
      const socket = tls.connect({
        host: target.host,
        port: target.port,
        ca: options.ca,
        // Verified below at the phone's time; OpenSSL's verdict is still required (bar time codes).
        rejectUnauthorized: false,
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
        const problem = checkPeerAtClock(socket, { ca: options.ca, clock, name: serverName });
        if (problem) {
          socket.destroy();
          reject(problemError(problem, target));
          return;
        }
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
      else if (this.framer.failed) {
        // Fatal framer error (oversize, bad Content-Length): the framing is lost; nothing after
        // this point can be trusted. Close at once; the policy sees a failed flow with this code.
        this.closeReason = new TransportError(ev.error.code, ev.error.message);
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
    // end(), not destroy(): what was queued just before still goes out (a call's BYE said as the
    // line is given up, a de-REGISTER), then close_notify and FIN. destroy() right after end()
    // dropped such a BYE under load, leaving the far end in a call with no one. A peer that never
    // answers the FIN is cut off after a grace period.
    this.socket.end();
    const cut = setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS);
    cut.unref();
    this.socket.once("close", () => clearTimeout(cut));
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
