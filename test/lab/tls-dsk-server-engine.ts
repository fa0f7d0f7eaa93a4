/**
 * The lab registrar's side of the TLS-DSK tunnelled handshake: Node's TLS as a server over an
 * in-memory Duplex. Server flight 1 is coalesced into one TLS record, as Schannel sends it
 * (pidgin-sipe fails otherwise); session tickets are off so flight 2 is just CCS + Finished.
 *
 * Trap: a bare `new tls.TLSSocket(duplex, { isServer: true, requestCert: true,
 * rejectUnauthorized: true })` (no tls.Server around it) does NOT reject an untrusted client
 * certificate: the handshake completes, 'secure' fires, `authorized` stays false and nothing
 * is destroyed. So the client chain is checked here, against the CA, once the handshake is done.
 */
import { constants, X509Certificate } from "node:crypto";
import tls from "node:tls";
import { AuthError } from "../../firmware/core/errors.ts";
import { chainProblem, TunnelTlsPeer } from "../../firmware/platform/tls-dsk-node-engine.ts";
import {
  DEFAULT_FLIGHT_TIMEOUT_MS,
  type TlsDskHandshakeResult,
  type TlsDskServerEngine,
} from "../../firmware/sip/tls-dsk/engine.ts";
import { coalesceHandshakeRecords, parseRecords } from "../../firmware/sip/tls-dsk/records.ts";

export interface TlsDskServerOptions {
  /** Server certificate and key (PEM). */
  cert: string;
  key: string;
  /** Roots that client certificates must chain to. */
  ca: string[];
  minVersion?: tls.SecureVersion;
  maxVersion?: tls.SecureVersion;
  ciphers?: string;
  /** Coalesce server flight 1 into one record (Schannel's layout). Default true. */
  coalesce?: boolean;
  flightTimeoutMs?: number;
}

/** A failed server step; `token` holds whatever alert bytes the TLS layer produced, if any. */
export class TlsDskServerError extends AuthError {
  constructor(
    code: string,
    message: string,
    readonly token?: Buffer,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
  }
}

export const LAB_SERVER_CIPHERS = `${tls.DEFAULT_CIPHERS}:AES128-SHA:AES256-SHA:@SECLEVEL=0`;

type Stage = "new" | "flight1-sent" | "done" | "failed";

export class LabTlsDskServer extends TunnelTlsPeer implements TlsDskServerEngine {
  private readonly sock: tls.TLSSocket;
  private stage: Stage = "new";

  constructor(private readonly opts: TlsDskServerOptions) {
    super("server", opts.flightTimeoutMs ?? DEFAULT_FLIGHT_TIMEOUT_MS);
    const secureContext = tls.createSecureContext({
      cert: opts.cert,
      key: opts.key,
      ca: opts.ca,
      minVersion: opts.minVersion ?? "TLSv1",
      maxVersion: opts.maxVersion ?? "TLSv1.2",
      ciphers: opts.ciphers ?? LAB_SERVER_CIPHERS,
      secureOptions: constants.SSL_OP_NO_TICKET,
    });
    this.sock = new tls.TLSSocket(this.duplex, {
      isServer: true,
      requestCert: true,
      rejectUnauthorized: true,
      secureContext,
    });
    this.attach(this.sock, "secure");
  }

  protected mapError(err: unknown): AuthError {
    if (err instanceof AuthError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    if (/certificate|unknown ca|no certificate/i.test(msg)) {
      return new TlsDskServerError(
        "client-cert-untrusted",
        `client certificate rejected: ${msg}`,
        undefined,
        {
          cause: err,
        },
      );
    }
    return new TlsDskServerError("tls-handshake-failed", `TLS handshake failed: ${msg}`, undefined, {
      cause: err,
    });
  }

  async step(clientToken: Buffer): Promise<{ token: Buffer; done?: TlsDskHandshakeResult }> {
    if (this.destroyed) throw new AuthError("tls-handshake-failed", "TLS engine destroyed");
    if (this.stage !== "new" && this.stage !== "flight1-sent") {
      throw new AuthError("tls-handshake-failed", `step() in state ${this.stage}`);
    }
    try {
      parseRecords(clientToken);
    } catch (err) {
      this.stage = "failed";
      throw err;
    }
    this.duplex.deliver(clientToken);
    try {
      if (this.stage === "new") {
        this.stage = "flight1-sent";
        const flight = await this.wait(() => this.flightReady());
        return { token: this.opts.coalesce === false ? flight : coalesceHandshakeRecords(flight) };
      }
      let flight: Buffer | undefined;
      const token = await this.wait(() => {
        flight ??= this.flightReady();
        return flight && this.secured ? flight : undefined;
      });
      const done = this.result(this.sock);
      const problem = chainProblem([this.clientCertDer()], this.opts.ca);
      if (problem)
        throw new TlsDskServerError("client-cert-untrusted", `client certificate not trusted: ${problem}`);
      this.stage = "done";
      return { token, done };
    } catch (err) {
      this.stage = "failed";
      if (err instanceof TlsDskServerError || !(err instanceof AuthError)) throw err;
      const alert = this.duplex.takeOutput();
      throw new TlsDskServerError(err.code, err.message, alert.length > 0 ? alert : undefined, {
        cause: err,
      });
    }
  }

  private clientCertDer(): Buffer {
    const peer = this.sock.getPeerX509Certificate();
    if (!(peer instanceof X509Certificate)) {
      throw new TlsDskServerError("client-cert-untrusted", "client sent no certificate");
    }
    return peer.raw;
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.teardown(this.sock);
  }
}

/** Factory used by the lab registrar. */
export function createLabServerEngine(opts: TlsDskServerOptions): TlsDskServerEngine {
  return new LabTlsDskServer(opts);
}
