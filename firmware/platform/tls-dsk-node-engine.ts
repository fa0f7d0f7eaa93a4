/**
 * TLS-DSK client engine on Node's own TLS (OpenSSL), run over an in-memory Duplex: the
 * engine's writes are gathered and cut into flights by parsing TLS records (records.ts), and
 * server tokens are pushed in as if they came off a socket.
 *
 * - maxVersion is always TLSv1.2: the RFC 5705 exporter semantics TLS-DSK relies on
 *   (PRF(master, "client EAP encryption", cr‖sr)) do not exist in TLS 1.3.
 * - innerTls "1.2": TLSv1.2 only, Node's default cipher list.
 *   "1.0": TLSv1 only, AES128-SHA / AES256-SHA, @SECLEVEL=0 (OpenSSL 3 refuses MD5‖SHA1
 *   signatures otherwise).
 *   "auto": the 1.2 profile; when the server's first answer says it speaks only 1.0, the
 *   registration starts again with the 1.0 profile (sip/tls-dsk/version-fallback.ts), so
 *   @SECLEVEL=0 never applies where TLS 1.2 can be negotiated.
 * - Key material: exportKeyingMaterial(128, "client EAP encryption"), no context.
 *
 * Trap: Node (OpenSSL with an accept-all verify callback) only looks at the server chain once
 * the handshake has finished, i.e. *after* our client flight 2 (certificate + signature) went
 * out. So server flight 1's Certificate message is checked here first (chain to the given
 * roots, purpose, name, validity at the phone's clock: sip/tls-dsk/cert-verify.ts), and at the
 * end Node's own verdict must be clean or a time code only (OpenSSL can only check validity
 * against the OS clock, so it runs with rejectUnauthorized off and our check decides time).
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { AuthError } from "../core/errors.ts";
import {
  type CertClock,
  type CertProblem,
  isClockInvalid,
  opensslVerdictAcceptable,
  verifyServerChain,
} from "../sip/tls-dsk/cert-verify.ts";
import {
  DEFAULT_FLIGHT_TIMEOUT_MS,
  type InnerTls,
  type TlsDskClientEngine,
  type TlsDskClientOptions,
  type TlsDskEngineTuning,
  type TlsDskHandshakeResult,
} from "../sip/tls-dsk/engine.ts";
import {
  alertInFlight,
  certificatesFromFlight,
  type FlightSide,
  flightComplete,
  parseRecords,
} from "../sip/tls-dsk/records.ts";

export const TLS_DSK_EXPORTER_LABEL = "client EAP encryption";
/** How long an alert we wrote may wait for the TLS layer's own, more precise, error event. */
const ALERT_GRACE_MS = 50;

/** An in-memory transport: writes are collected, tokens are pushed in as readable data. */
export class TunnelDuplex extends Duplex {
  private chunks: Buffer[] = [];
  onOutput: (() => void) | null = null;

  constructor() {
    super({ allowHalfOpen: true });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(Buffer.from(chunk));
    callback();
    this.onOutput?.();
  }

  override _read(): void {}

  override _final(callback: (error?: Error | null) => void): void {
    callback();
  }

  deliver(token: Buffer): void {
    if (!this.destroyed) this.push(token);
  }

  output(): Buffer {
    return Buffer.concat(this.chunks);
  }

  takeOutput(): Buffer {
    const b = Buffer.concat(this.chunks);
    this.chunks = [];
    return b;
  }
}

export function derToPem(der: Buffer): string {
  const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
  return `-----BEGIN CERTIFICATE-----\n${b64.replace(/\n$/, "")}\n-----END CERTIFICATE-----\n`;
}

/** CN or a DNS SAN equals `name` (leftmost-label wildcard allowed); an IP literal must be an IP SAN. */
export function x509MatchesName(cert: X509Certificate, name: string): boolean {
  if (isIP(name) !== 0) return cert.checkIP(name) !== undefined;
  return cert.checkHost(name, { subject: "always" }) !== undefined;
}

/**
 * Checks a peer chain (leaf first, DER) against trusted roots: each link's issuer name and
 * signature, CA on issuers, validity at `at` (epoch ms). No purpose or name check (the lab's
 * registrar uses it on client certificates). Returns null when fine or a reason.
 */
export function chainProblem(chainDer: Buffer[], caPems: string[], at: number = Date.now()): string | null {
  return verifyServerChain({ chain: chainDer, roots: caPems, at, serverAuth: false })?.message ?? null;
}

const OS_CLOCK: CertClock = { now: () => Date.now() };

/** A server-chain problem as the engine's typed error. */
export function serverCertError(problem: CertProblem, clock: CertClock): AuthError {
  if (isClockInvalid(problem, clock))
    return new AuthError(
      "clock-invalid",
      `Time not set: server certificate cannot be checked yet (${problem.message})`,
    );
  if (problem.kind === "name") return new AuthError("tls-server-name-mismatch", problem.message);
  return new AuthError("tls-server-cert-untrusted", `server certificate not trusted: ${problem.message}`);
}

/**
 * Shared plumbing of the in-memory engines (client here, lab server in test/lab): a TLSSocket
 * on a TunnelDuplex, a recorded failure, and waiting for a condition with a timeout.
 */
export abstract class TunnelTlsPeer {
  protected readonly duplex = new TunnelDuplex();
  protected failure: AuthError | null = null;
  protected secured = false;
  protected destroyed = false;
  private poll: (() => void) | null = null;
  private graceTimer: NodeJS.Timeout | null = null;

  protected constructor(
    protected readonly side: FlightSide,
    protected readonly timeoutMs: number,
  ) {
    this.duplex.onOutput = () => this.kick();
    this.duplex.on("error", () => {});
  }

  protected kick(): void {
    this.poll?.();
  }

  protected fail(err: AuthError): void {
    this.failure ??= err;
    this.kick();
  }

  /** Maps a TLS-layer error to a typed AuthError. */
  protected abstract mapError(err: unknown): AuthError;

  protected attach(sock: tls.TLSSocket, secureEvent: "secureConnect" | "secure"): void {
    sock.on("error", (err) => this.fail(this.mapError(err)));
    sock.on(secureEvent, () => {
      this.secured = true;
      this.kick();
    });
    sock.on("close", () => {
      if (!this.secured && !this.destroyed)
        this.fail(new AuthError("tls-handshake-failed", "TLS closed mid-handshake"));
      this.kick();
    });
  }

  /** The output so far is a complete flight: returns it (taken), or throws if it carries an alert. */
  protected flightReady(): Buffer | undefined {
    const bytes = this.duplex.output();
    if (bytes.length === 0 || !flightComplete(bytes, this.side)) return undefined;
    if (alertInFlight(bytes)) {
      // Our TLS layer gave up; its 'error' event (more precise) normally follows at once.
      this.graceTimer ??= setTimeout(
        () => this.fail(new AuthError("tls-handshake-failed", "TLS engine sent an alert")),
        ALERT_GRACE_MS,
      );
      return undefined;
    }
    return this.duplex.takeOutput();
  }

  protected wait<T>(check: () => T | undefined): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        this.poll = null;
        fn();
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(new AuthError("tls-handshake-timeout", "TLS engine produced no complete flight")),
          ),
        this.timeoutMs,
      );
      this.poll = () => {
        if (this.destroyed)
          return finish(() => reject(new AuthError("tls-handshake-failed", "TLS engine destroyed")));
        if (this.failure) {
          const f = this.failure;
          return finish(() => reject(f));
        }
        let v: T | undefined;
        try {
          v = check();
        } catch (err) {
          const e =
            err instanceof AuthError
              ? err
              : new AuthError("tls-handshake-failed", String(err), { cause: err });
          return finish(() => reject(e));
        }
        if (v !== undefined) {
          const value = v;
          finish(() => resolve(value));
        }
      };
      this.poll();
    });
  }

  protected result(sock: tls.TLSSocket): TlsDskHandshakeResult {
    const peer = sock.getPeerCertificate(true);
    const raw = peer && "raw" in peer ? peer.raw : undefined;
    if (!raw) throw new AuthError("tls-handshake-failed", "no peer certificate after handshake");
    return {
      // No context argument (RFC 5705 "no context" ≠ empty context); @types/node wrongly requires one.
      keyMaterial: sock.exportKeyingMaterial(128, TLS_DSK_EXPORTER_LABEL, undefined as unknown as Buffer),
      version: sock.getProtocol() ?? "unknown",
      cipher: sock.getCipher()?.name ?? "unknown",
      peerCertificatePem: derToPem(raw),
    };
  }

  protected teardown(sock: tls.TLSSocket | null): void {
    if (this.graceTimer) clearTimeout(this.graceTimer);
    this.graceTimer = null;
    this.duplex.onOutput = null;
    sock?.removeAllListeners("secureConnect");
    sock?.removeAllListeners("secure");
    sock?.on("error", () => {});
    sock?.destroy();
    this.duplex.destroy();
    this.kick();
  }
}

interface VersionProfile {
  minVersion: tls.SecureVersion;
  maxVersion: tls.SecureVersion;
  ciphers: string;
}

export function clientVersionProfile(innerTls: InnerTls): VersionProfile {
  switch (innerTls) {
    case "1.2":
      return { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: tls.DEFAULT_CIPHERS };
    case "1.0":
      return { minVersion: "TLSv1", maxVersion: "TLSv1", ciphers: "AES128-SHA:AES256-SHA:@SECLEVEL=0" };
    default:
      // "auto" is the 1.2 profile here: @SECLEVEL=0 only ever where nothing above TLS 1.0 can be
      // negotiated. The fall-back to 1.0 is a fresh handshake chosen by the registration from
      // server flight 1 (sip/tls-dsk/version-fallback.ts), never a weaker 1.2.
      return { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", ciphers: tls.DEFAULT_CIPHERS };
  }
}

const UNTRUSTED_CODES = new Set([
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "INVALID_CA",
]);

type ClientStage = "new" | "hello-sent" | "flight2-sent" | "done" | "failed";

export class NodeTlsDskClient extends TunnelTlsPeer implements TlsDskClientEngine {
  private sock: tls.TLSSocket | null = null;
  private stage: ClientStage = "new";

  constructor(
    private readonly opts: TlsDskClientOptions,
    tuning: TlsDskEngineTuning = {},
  ) {
    super("client", tuning.flightTimeoutMs ?? DEFAULT_FLIGHT_TIMEOUT_MS);
  }

  protected mapError(err: unknown): AuthError {
    if (err instanceof AuthError) return err;
    const e = err as { code?: string; message?: string };
    const code = e?.code ?? "";
    const msg = e?.message ?? String(err);
    if (code === "ERR_TLS_CERT_ALTNAME_INVALID")
      return new AuthError("tls-server-name-mismatch", msg, { cause: err });
    if (UNTRUSTED_CODES.has(code)) return new AuthError("tls-server-cert-untrusted", msg, { cause: err });
    return new AuthError("tls-handshake-failed", `TLS handshake failed: ${msg}`, { cause: err });
  }

  async start(): Promise<Buffer> {
    if (this.stage !== "new" || this.destroyed)
      throw new AuthError("tls-handshake-failed", `start() in state ${this.stage}`);
    this.stage = "hello-sent";
    const profile = clientVersionProfile(this.opts.innerTls);
    const { targetname } = this.opts;
    try {
      this.sock = tls.connect({
        socket: this.duplex,
        cert: this.opts.cert,
        key: this.opts.key,
        ca: this.opts.ca,
        servername: isIP(targetname) === 0 ? targetname : undefined, // no SNI for IP literals
        // The chain was checked at the phone's time before flight 2; OpenSSL's verdict is read on
        // secure (finalCheck): clean or a time code only.
        rejectUnauthorized: false,
        minVersion: profile.minVersion,
        maxVersion: profile.maxVersion,
        ciphers: profile.ciphers,
        checkServerIdentity: (_host, cert) =>
          cert.raw && x509MatchesName(new X509Certificate(cert.raw), targetname)
            ? undefined
            : new AuthError(
                "tls-server-name-mismatch",
                `server certificate does not match targetname ${targetname}`,
              ),
      });
    } catch (err) {
      this.stage = "failed";
      throw new AuthError("tls-handshake-failed", "cannot set up the TLS engine", { cause: err });
    }
    this.attach(this.sock, "secureConnect");
    return this.settle(this.wait(() => this.flightReady()));
  }

  async step(serverToken: Buffer): Promise<{ token: Buffer } | { done: TlsDskHandshakeResult }> {
    const sock = this.sock;
    if (this.destroyed) throw new AuthError("tls-handshake-failed", "TLS engine destroyed");
    if (!sock || (this.stage !== "hello-sent" && this.stage !== "flight2-sent")) {
      throw new AuthError("tls-handshake-failed", `step() in state ${this.stage}`);
    }
    try {
      parseRecords(serverToken);
      if (this.stage === "hello-sent") this.precheckServerFlight(serverToken);
    } catch (err) {
      this.stage = "failed";
      throw err;
    }
    if (this.stage === "hello-sent") {
      this.stage = "flight2-sent";
      this.duplex.deliver(serverToken);
      return this.settle(
        this.wait<{ token: Buffer } | { done: TlsDskHandshakeResult }>(() => {
          if (this.secured) return { done: this.finalCheck(sock) };
          const token = this.flightReady();
          return token ? { token } : undefined;
        }),
      );
    }
    this.duplex.deliver(serverToken);
    return this.settle(
      this.wait(() => {
        this.flightReady(); // only to notice an alert we wrote
        return this.secured ? { done: this.finalCheck(sock) } : undefined;
      }),
    );
  }

  private get clock(): CertClock {
    return this.opts.clock ?? OS_CLOCK;
  }

  /** Checks the server's chain and name before OpenSSL makes us send our certificate and signature. */
  private precheckServerFlight(token: Buffer): void {
    const certs = certificatesFromFlight(token);
    if (certs.length === 0) return; // let the TLS layer fail on whatever this is
    const problem = verifyServerChain({
      chain: certs,
      roots: this.opts.ca,
      at: this.clock.now(),
      name: { host: this.opts.targetname, subject: "always" },
    });
    if (problem) throw serverCertError(problem, this.clock);
  }

  /** The handshake finished: OpenSSL's verdict (bar time) and ours at the phone's time, on the final chain. */
  private finalCheck(sock: tls.TLSSocket): TlsDskHandshakeResult {
    if (!opensslVerdictAcceptable(sock.authorized, sock.authorizationError)) {
      const code = String(sock.authorizationError ?? "unauthorized");
      throw code === "tls-server-name-mismatch" || code === "ERR_TLS_CERT_ALTNAME_INVALID"
        ? new AuthError(
            "tls-server-name-mismatch",
            `server certificate does not match targetname ${this.opts.targetname}`,
          )
        : new AuthError("tls-server-cert-untrusted", `server certificate not trusted (${code})`);
    }
    const peer = sock.getPeerCertificate(false);
    const raw = peer && "raw" in peer ? peer.raw : undefined;
    if (raw) {
      const problem = verifyServerChain({
        chain: [raw, ...chainAfterLeaf(sock)],
        roots: this.opts.ca,
        at: this.clock.now(),
        name: { host: this.opts.targetname, subject: "always" },
      });
      if (problem) throw serverCertError(problem, this.clock);
    }
    return this.result(sock);
  }

  private async settle<T>(p: Promise<T>): Promise<T> {
    try {
      const v = await p;
      if (typeof v === "object" && v !== null && "done" in v) this.stage = "done";
      return v;
    } catch (err) {
      this.stage = "failed";
      throw err;
    }
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.teardown(this.sock);
  }
}

/** The issuers Node reports above the leaf (presented or found in the trust store). */
function chainAfterLeaf(sock: tls.TLSSocket): Buffer[] {
  const out: Buffer[] = [];
  let c = (sock.getPeerCertificate(true) as tls.DetailedPeerCertificate | undefined)?.issuerCertificate;
  while (c?.raw && out.length < 16 && !out.some((d) => d.equals(c!.raw))) {
    out.push(c.raw);
    c = c.issuerCertificate;
  }
  return out;
}
