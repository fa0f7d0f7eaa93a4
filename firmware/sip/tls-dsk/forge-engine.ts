/**
 * TLS-DSK client engine on node-forge, pinned to TLS 1.0 with a pidgin-sipe-like ClientHello:
 * client_version 0x0301, empty session id, no extensions (no SNI: forge only adds one when
 * `virtualHost` is set), AES128-SHA and AES256-SHA, RSA key exchange. This is the hello that is
 * known to work against real Lync / Office365 pools.
 *
 * Unlike pidgin-sipe, forge verifies the server Finished, and we verify the server chain against
 * the given roots (forge caStore + verify callback) and the name (targetname must equal the
 * certificate's CN or one of its DNS SANs; a leftmost "*." wildcard covers one label).
 * Validity is checked at the phone's clock (opts.clock), never the OS's: forge's chain check gets
 * it as `validityCheckDate`, and the verify callback runs our own check (cert-verify.ts) at the
 * same time, which tells a good chain at a wrong clock ("clock-invalid" before SNTP) from a bad one.
 *
 * forge is synchronous: a token passed to process() yields the next flight before process()
 * returns. The waiter + timeout is there anyway so every call settles.
 */
import { constants, createPrivateKey, type KeyObject, privateEncrypt } from "node:crypto";
import forge from "node-forge";
import { AuthError } from "../../core/errors.ts";
import { verifyServerChain } from "./cert-verify.ts";
import {
  DEFAULT_FLIGHT_TIMEOUT_MS,
  type TlsDskClientEngine,
  type TlsDskClientOptions,
  type TlsDskEngineTuning,
  type TlsDskHandshakeResult,
} from "./engine.ts";
import { keyMaterialFromMaster } from "./prf.ts";
import { alertInFlight, flightComplete, parseRecords } from "./records.ts";

const FORGE_CIPHERS: Record<string, string> = {
  TLS_RSA_WITH_AES_128_CBC_SHA: "AES128-SHA",
  TLS_RSA_WITH_AES_256_CBC_SHA: "AES256-SHA",
};

/** Forge's session fields that @types/node-forge leaves out. */
interface ForgeSecurityParameters {
  master_secret: string;
  client_random: string;
  server_random: string;
}

/** True when `name` matches the certificate's subject CN or one of its DNS SANs (case-insensitive). */
export function certificateMatchesName(cert: forge.pki.Certificate, name: string): boolean {
  const want = name.toLowerCase().replace(/\.$/, "");
  const candidates: string[] = [];
  const cn = cert.subject.getField("CN") as { value?: unknown } | null;
  if (cn && typeof cn.value === "string") candidates.push(cn.value);
  const san = cert.getExtension("subjectAltName") as
    | { altNames?: { type: number; value?: unknown }[] }
    | undefined;
  for (const alt of san?.altNames ?? [])
    if (alt.type === 2 && typeof alt.value === "string") candidates.push(alt.value);
  return candidates.some((c) => hostMatches(c.toLowerCase().replace(/\.$/, ""), want));
}

function hostMatches(pattern: string, host: string): boolean {
  if (pattern === host) return true;
  if (!pattern.startsWith("*.")) return false;
  const dot = host.indexOf(".");
  return dot > 0 && host.slice(dot + 1) === pattern.slice(2) && pattern.slice(2).includes(".");
}

type Stage = "new" | "hello-sent" | "flight2-sent" | "done" | "failed" | "destroyed";

export class ForgeTlsDskClient implements TlsDskClientEngine {
  private readonly conn: forge.tls.Connection;
  private readonly signingKey: KeyObject;
  private readonly timeoutMs: number;
  private out: Buffer[] = [];
  private failure: AuthError | null = null;
  /** Why the verify callback rejected the chain (forge reports it as a generic error). */
  private certProblem: AuthError | null = null;
  private connected = false;
  private stage: Stage = "new";
  private poll: (() => void) | null = null;

  constructor(
    private readonly opts: TlsDskClientOptions,
    tuning: TlsDskEngineTuning = {},
  ) {
    this.timeoutMs = tuning.flightTimeoutMs ?? DEFAULT_FLIGHT_TIMEOUT_MS;
    try {
      this.signingKey = createPrivateKey(opts.key);
    } catch (err) {
      throw new AuthError("tls-handshake-failed", "client private key is unusable", { cause: err });
    }
    const caStore = forge.pki.createCaStore();
    for (const pem of opts.ca) {
      try {
        caStore.addCertificate(forge.pki.certificateFromPem(pem));
      } catch {
        // forge reads RSA certificates only; a non-RSA root cannot anchor an RSA-only handshake anyway.
      }
    }
    const suites = forge.tls.CipherSuites;
    const clock = opts.clock;
    // Read when forge checks the chain (it copies these options then): the phone's time at that moment.
    const verifyOptions = clock
      ? {
          get validityCheckDate(): Date {
            return new Date(clock.now());
          },
        }
      : {};
    this.conn = forge.tls.createConnection({
      server: false,
      caStore,
      // @types/node-forge leaves out verifyOptions (forge ≥ 1.3 reads it in tls.verifyCertificateChain).
      ...({ verifyOptions } as object),
      cipherSuites: [suites.TLS_RSA_WITH_AES_128_CBC_SHA, suites.TLS_RSA_WITH_AES_256_CBC_SHA].filter(
        (s): s is forge.tls.CipherSuite => s !== undefined,
      ),
      verify: (_c, verified, depth, certs) => this.verify(verified, depth, certs),
      getCertificate: () => opts.cert,
      getSignature: (c, bytes, callback) => {
        // TLS 1.0 CertificateVerify: PKCS#1 v1.5 type-1 over the raw 36 bytes MD5‖SHA1, no DigestInfo.
        const sig = privateEncrypt(
          { key: this.signingKey, padding: constants.RSA_PKCS1_PADDING },
          Buffer.from(bytes, "binary"),
        );
        callback(c, sig.toString("binary"));
      },
      connected: () => {
        this.connected = true;
        this.poll?.();
      },
      tlsDataReady: (c) => {
        const data = c.tlsData.getBytes();
        if (data.length > 0) this.out.push(Buffer.from(data, "binary"));
      },
      dataReady: (c) => {
        c.data.getBytes(); // no application data is expected in the tunnel
      },
      closed: () => {
        if (!this.connected && !this.failure && this.stage !== "destroyed") {
          this.failure = new AuthError("tls-handshake-failed", "TLS connection closed during the handshake");
        }
        this.poll?.();
      },
      error: (_c, err) => {
        if (!this.failure) this.failure = this.mapError(err);
        this.poll?.();
      },
    });
    // Pin TLS 1.0 (forge defaults to 1.1); the hello then carries 0x0301 like pidgin-sipe's.
    this.conn.version = { major: 3, minor: 1 };
  }

  private verify(
    verified: forge.tls.Verified,
    depth: number,
    certs: forge.pki.Certificate[],
  ): forge.tls.Verified {
    if (depth === 0 && this.opts.clock) {
      // Our own check of the whole chain at the phone's time: it says whether a time failure is the only one.
      const problem = verifyServerChain({
        chain: certs.map(forgeCertDer),
        roots: this.opts.ca,
        at: this.opts.clock.now(),
        name: { host: this.opts.targetname, subject: "always" },
      });
      if (problem) {
        const clockUnset = problem.kind === "time" && this.opts.clock.isSet?.() === false;
        this.certProblem ??= clockUnset
          ? new AuthError(
              "clock-invalid",
              `Time not set: server certificate cannot be checked yet (${problem.message})`,
            )
          : problem.kind === "name"
            ? new AuthError("tls-server-name-mismatch", problem.message)
            : new AuthError(
                "tls-server-cert-untrusted",
                `server certificate not trusted: ${problem.message}`,
              );
        return {
          alert:
            problem.kind === "time"
              ? forge.tls.Alert.Description.certificate_expired
              : forge.tls.Alert.Description.bad_certificate,
          message: problem.message,
        };
      }
    }
    if (verified !== true) {
      const why = typeof verified === "object" && verified.message ? verified.message : "chain not trusted";
      this.certProblem ??= new AuthError(
        "tls-server-cert-untrusted",
        `server certificate not trusted: ${why}`,
      );
      return verified;
    }
    if (depth === 0) {
      const leaf = certs[0];
      if (!leaf || !certificateMatchesName(leaf, this.opts.targetname)) {
        this.certProblem ??= new AuthError(
          "tls-server-name-mismatch",
          `server certificate does not match targetname ${this.opts.targetname}`,
        );
        return { alert: forge.tls.Alert.Description.bad_certificate, message: "name mismatch" };
      }
    }
    return true;
  }

  private mapError(err: forge.tls.TLSError): AuthError {
    if (this.certProblem) return this.certProblem;
    const alert = err?.alert ? ` (alert ${err.alert.description})` : "";
    const origin = err?.origin === "server" ? "server" : "local";
    return new AuthError(
      "tls-handshake-failed",
      `TLS handshake failed, ${origin}: ${err?.message ?? "error"}${alert}`,
    );
  }

  private take(): Buffer {
    const b = Buffer.concat(this.out);
    this.out = [];
    return b;
  }

  /** Waits until `check` yields a value (or throws), a failure is recorded, or the timeout fires. */
  private wait<T>(check: () => T | undefined): Promise<T> {
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
        if (this.stage === "destroyed") return finish(() => reject(destroyedError()));
        if (this.failure) {
          const f = this.failure;
          return finish(() => reject(f));
        }
        let v: T | undefined;
        try {
          v = check();
        } catch (err) {
          return finish(() => reject(err));
        }
        if (v !== undefined) {
          const value = v;
          finish(() => resolve(value));
        }
      };
      this.poll();
    });
  }

  private pendingFlight(): Buffer | undefined {
    const bytes = Buffer.concat(this.out);
    if (bytes.length === 0 || !flightComplete(bytes, "client")) return undefined;
    if (alertInFlight(bytes))
      throw this.certProblem ?? new AuthError("tls-handshake-failed", "TLS engine sent an alert");
    return this.take();
  }

  async start(): Promise<Buffer> {
    if (this.stage !== "new") throw new AuthError("tls-handshake-failed", `start() in state ${this.stage}`);
    this.stage = "hello-sent";
    this.guard(() => this.conn.handshake());
    return this.settle(this.wait(() => this.pendingFlight()));
  }

  async step(serverToken: Buffer): Promise<{ token: Buffer } | { done: TlsDskHandshakeResult }> {
    if (this.stage === "destroyed") throw destroyedError();
    if (this.stage !== "hello-sent" && this.stage !== "flight2-sent") {
      throw new AuthError("tls-handshake-failed", `step() in state ${this.stage}`);
    }
    try {
      parseRecords(serverToken); // typed error on garbage before forge sees it
    } catch (err) {
      this.stage = "failed";
      throw err;
    }
    const expectingFinished = this.stage === "flight2-sent";
    this.guard(() => this.conn.process(serverToken.toString("binary")));
    if (!expectingFinished) {
      this.stage = "flight2-sent";
      return this.settle(
        this.wait<{ token: Buffer } | { done: TlsDskHandshakeResult }>(() => {
          if (this.connected) return { done: this.result() }; // abbreviated handshake (never offered, but harmless)
          const token = this.pendingFlight();
          return token ? { token } : undefined;
        }),
      );
    }
    return this.settle(
      this.wait(() => {
        if (Buffer.concat(this.out).length > 0 && alertInFlight(Buffer.concat(this.out))) {
          throw this.certProblem ?? new AuthError("tls-handshake-failed", "TLS engine sent an alert");
        }
        return this.connected ? { done: this.result() } : undefined;
      }),
    );
  }

  private guard(fn: () => unknown): void {
    try {
      fn();
    } catch (err) {
      this.failure ??=
        err instanceof AuthError
          ? err
          : new AuthError("tls-handshake-failed", "TLS engine error", { cause: err });
    }
  }

  private async settle<T>(p: Promise<T>): Promise<T> {
    try {
      const v = await p;
      if (typeof v === "object" && v !== null && "done" in v) this.stage = "done";
      return v;
    } catch (err) {
      if (this.stage !== "destroyed") this.stage = "failed";
      throw err instanceof AuthError
        ? err
        : new AuthError("tls-handshake-failed", "TLS engine error", { cause: err });
    }
  }

  private result(): TlsDskHandshakeResult {
    const session = this.conn.session as (forge.tls.Session & { sp: ForgeSecurityParameters }) | null;
    if (!session?.sp || !session.serverCertificate || !session.cipherSuite) {
      throw new AuthError("tls-handshake-failed", "handshake finished without session parameters");
    }
    const minor = this.conn.version.minor;
    const version = minor === 1 ? "TLSv1" : minor === 2 ? "TLSv1.1" : `TLS(3,${minor})`;
    const keyMaterial = keyMaterialFromMaster(
      Buffer.from(session.sp.master_secret, "binary"),
      Buffer.from(session.sp.client_random, "binary"),
      Buffer.from(session.sp.server_random, "binary"),
      "tls1",
    );
    const name = (session.cipherSuite as { name?: string }).name ?? "";
    return {
      keyMaterial,
      version,
      cipher: FORGE_CIPHERS[name] ?? name,
      peerCertificatePem: forge.pki.certificateToPem(session.serverCertificate),
    };
  }

  destroy(): void {
    if (this.stage === "destroyed") return;
    const wasDone = this.stage === "done";
    this.stage = "destroyed";
    this.poll?.();
    this.out = [];
    if (!wasDone) return;
    try {
      this.conn.close(); // sends close_notify into our (now ignored) buffer
    } catch {
      // nothing to free beyond JS objects
    }
  }
}

function forgeCertDer(c: forge.pki.Certificate): Buffer {
  return Buffer.from(forge.asn1.toDer(forge.pki.certificateToAsn1(c)).getBytes(), "binary");
}

function destroyedError(): AuthError {
  return new AuthError("tls-handshake-failed", "TLS engine destroyed");
}
