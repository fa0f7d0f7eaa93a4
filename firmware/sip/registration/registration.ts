/**
 * Registration MECHANISM with TLS-DSK ([MS-SIPAE], ../shared/protocol/tls-dsk.md §0–§1, §7):
 * send, authenticate, refresh, re-authenticate, report. Which registrar to use and what to do
 * after a failure is POLICY and lives above (accounts/); this class reports and stops.
 *
 *   idle ─start─► challenging ─401 TLS-DSK─► handshaking ─(2 round trips)─► signing
 *     ▲                                                                        │ 200 + rspauth ok
 *     │            ┌──── refresh timer: signed REGISTER ◄────────── registered ◄┘
 *     │            └──── SA timer (min(cert, 8 h) − 5 min): drop SA, start again unsigned
 *     └──── failed / redirected / unregistered (terminal: the owner decides what next)
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import { AuthError, type HandsetError, RegistrationError, TransportError } from "../../core/errors.ts";
import type { Logger } from "../../core/logger.ts";
import { hexToken, type Random } from "../../core/random.ts";
import { type AuthChallenge, findChallenge, formatAuthHeader } from "../grammar/auth-params.ts";
import { parseNameAddr } from "../grammar/name-addr.ts";
import { parseUri } from "../grammar/uri.ts";
import {
  header,
  headerList,
  headers,
  type SipRequest,
  type SipResponse,
  setHeader,
} from "../message/message.ts";
import type { InnerTls, TlsDskClientEngine, TlsDskClientOptions } from "../tls-dsk/engine.ts";
import { deriveTlsDskKeys } from "../tls-dsk/prf.ts";
import { macAlgForCipher, SecurityAssociation } from "../tls-dsk/security-association.ts";
import type { UserAgentCore } from "../user-agent-core.ts";
import { buildRegister, type EndpointIdentity, USER_AGENT } from "./register-request.ts";

export interface ClientCredentials {
  cert: string;
  key: string;
  /** Certificate expiry, epoch ms: bounds the SA lifetime. */
  notAfter: number;
}

export interface RegistrationOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  core: UserAgentCore;
  engineFactory: (o: TlsDskClientOptions) => TlsDskClientEngine;
  endpoint: EndpointIdentity;
  /** Undefined: the store has no usable certificate; the first challenge will say where to get one. */
  credentials: ClientCredentials | undefined;
  trustedRoots: string[];
  innerTls: InnerTls;
  requestedExpires?: number;
  userAgent?: string;
}

/** The registrar wants a certificate we do not have: sign in at `stsUri` (certificate provisioning). */
export class CertificateRequiredError extends AuthError {
  constructor(
    readonly stsUri: string | undefined,
    message: string,
  ) {
    super(stsUri ? "certificate-required" : "certificate-required-no-sts", message);
  }
}

export type RegistrarTarget = { uri: string; host: string; port: number; q: number };

export type RegistrationEvent =
  | { type: "challenged"; realm: string; targetname: string; version: number; stsUri?: string }
  | { type: "authenticated"; tlsVersion: string; cipher: string; handshakeMs: number }
  | {
      type: "registered";
      expires: number;
      refresh: number;
      keepAliveS?: number;
      presenceState?: string;
      registerAction?: string;
      connectedToPrimary: boolean;
      userServicesAvailable: boolean;
      gruu?: string;
    }
  | { type: "redirected"; targets: RegistrarTarget[] }
  | { type: "failed"; error: HandsetError; retryAfterS?: number; stsUri?: string }
  | { type: "unregistered" };

type Phase = "idle" | "challenging" | "handshaking" | "signing" | "registered" | "refreshing" | "done";

/** Contact parameters worth knowing, as sent back in a redirect. */
function parseRedirect(response: SipResponse): RegistrarTarget[] {
  const targets: RegistrarTarget[] = [];
  for (const c of headerList(response, "Contact")) {
    try {
      const na = parseNameAddr(c);
      const uri = parseUri(na.uri);
      const q = Number(na.params.get("q") ?? "1");
      targets.push({ uri: na.uri, host: uri.host, port: uri.port ?? 5061, q: Number.isFinite(q) ? q : 0 });
    } catch {
      // a Contact we cannot read is no registrar of ours
    }
  }
  return targets.sort((a, b) => b.q - a.q);
}

function paramOf(text: string | undefined, name: string): string | undefined {
  if (!text) return undefined;
  const m = new RegExp(`(?:^|[;,\\s])${name}\\s*=\\s*("([^"]*)"|[^;,\\s]+)`, "i").exec(text);
  return m ? (m[2] ?? m[1]) : undefined;
}

export class Registration {
  private phase: Phase = "idle";
  private readonly callId: string;
  private cseq: number;
  private engine: TlsDskClientEngine | undefined;
  private challenge: AuthChallenge | undefined;
  private opaque: string | undefined;
  private handshakeStartedAt = 0;
  private refreshTimer: TimerHandle | undefined;
  private saTimer: TimerHandle | undefined;
  private refreshes = 0;
  private listeners: Array<(e: RegistrationEvent) => void> = [];
  private unregisterWaiter: ((ok: boolean) => void) | undefined;

  constructor(private readonly o: RegistrationOptions) {
    this.callId = hexToken(o.random, 16);
    this.cseq = 1 + Math.floor(o.random.unit() * 1000);
    o.core.onSecurityFailure = (err) => this.fail(err);
    o.core.onFlowClosed = (reason) => {
      if (this.phase !== "done")
        this.fail(
          reason ?? new TransportError("connection-closed", `${o.core.flow.remote} closed the connection`),
        );
    };
  }

  on(listener: (e: RegistrationEvent) => void): () => void {
    this.listeners.push(listener);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  get state(): Phase {
    return this.phase;
  }

  start(): void {
    if (this.phase !== "idle") return;
    this.sendUnauthenticated();
  }

  /** Signed de-REGISTER (Expires: 0); resolves once answered or failed. Closes nothing. */
  unregister(): Promise<boolean> {
    if (this.phase !== "registered" || !this.o.core.securityAssociation) {
      this.stop();
      return Promise.resolve(false);
    }
    this.clearTimers();
    this.phase = "refreshing";
    return new Promise((resolve) => {
      this.unregisterWaiter = resolve;
      this.send(0);
    });
  }

  /** Stops timers and the engine; the owner closes the flow. */
  stop(): void {
    this.phase = "done";
    this.clearTimers();
    this.engine?.destroy();
    this.engine = undefined;
  }

  private emit(e: RegistrationEvent): void {
    for (const l of [...this.listeners]) l(e);
  }

  private clearTimers(): void {
    this.refreshTimer?.cancel();
    this.saTimer?.cancel();
    this.refreshTimer = undefined;
    this.saTimer = undefined;
  }

  private fail(error: HandsetError, extra: { retryAfterS?: number; stsUri?: string } = {}): void {
    if (this.phase === "done") return;
    this.stop();
    this.o.logger.warn("registration failed", { code: error.code, message: error.message });
    this.unregisterWaiter?.(false);
    this.emit({ type: "failed", error, ...extra });
  }

  private sendUnauthenticated(): void {
    this.o.core.setSecurityAssociation(undefined);
    this.engine?.destroy();
    this.engine = undefined;
    this.opaque = undefined;
    this.challenge = undefined;
    this.phase = "challenging";
    this.send(this.o.requestedExpires, { sign: false });
  }

  private send(
    expires: number | undefined,
    opts: { sign?: boolean; includeVersion?: boolean; authorization?: string } = {},
  ): void {
    const core = this.o.core;
    const req: SipRequest = buildRegister({
      endpoint: this.o.endpoint,
      callId: this.callId,
      cseq: this.cseq++,
      branch: core.newBranch(),
      local: core.flow.local,
      expires,
      userAgent: this.o.userAgent ?? USER_AGENT,
      random: this.o.random,
    });
    if (opts.authorization) setHeader(req, "Authorization", opts.authorization);
    core.sendRequest(
      req,
      {
        onFinal: (r) => this.onResponse(r, expires === 0),
        onFailure: (why, err) =>
          this.fail(
            why === "timeout"
              ? new RegistrationError("registrar-timeout", `No answer from registrar ${core.flow.remote}`)
              : (err ?? new TransportError("connection-closed", "connection lost")),
          ),
      },
      { sign: opts.sign ?? core.securityAssociation !== undefined, includeVersion: opts.includeVersion },
    );
  }

  private onResponse(r: SipResponse, deregister: boolean): void {
    if (this.phase === "done") return;
    if (r.status === 401 || r.status === 407) {
      void this.onChallenge(r);
      return;
    }
    if (r.status >= 200 && r.status < 300) {
      if (!this.o.core.securityAssociation) {
        // We never authenticated, so nothing could have been verified: not a registration we trust.
        this.fail(
          new AuthError("rspauth-missing", "Registrar accepted an unauthenticated REGISTER; refusing it"),
        );
        return;
      }
      if (deregister) {
        this.stop();
        this.unregisterWaiter?.(true);
        this.emit({ type: "unregistered" });
        return;
      }
      this.onRegistered(r);
      return;
    }
    if (r.status === 301 || r.status === 302) {
      const targets = parseRedirect(r);
      this.stop();
      if (targets.length === 0) {
        this.fail(new RegistrationError("redirect-empty", "Registrar redirected without a usable Contact"));
        return;
      }
      this.emit({ type: "redirected", targets });
      return;
    }
    const diag = header(r, "ms-diagnostics") ?? header(r, "Warning") ?? "";
    const retryAfter = Number.parseInt(header(r, "Retry-After") ?? "", 10);
    const why = `${r.status} ${r.reason}${diag ? ` (${diag})` : ""}`;
    const code =
      r.status === 403
        ? "registration-forbidden"
        : r.status === 404
          ? "user-not-found"
          : r.status >= 500
            ? "registrar-unavailable"
            : "registration-rejected";
    this.fail(
      new RegistrationError(code, `Registrar refused the registration: ${why}`),
      Number.isFinite(retryAfter) ? { retryAfterS: retryAfter } : {},
    );
  }

  private async onChallenge(r: SipResponse): Promise<void> {
    const values = [...headers(r, "WWW-Authenticate"), ...headers(r, "Proxy-Authenticate")];
    let ch: AuthChallenge | undefined;
    try {
      ch = findChallenge(values, "TLS-DSK");
    } catch (err) {
      this.fail(err as HandsetError);
      return;
    }
    if (!ch) {
      this.fail(new AuthError("auth-scheme-unsupported", "Registrar does not offer TLS-DSK authentication"));
      return;
    }
    const gssapi = ch.params.get("gssapi-data");
    if (this.phase === "signing") {
      this.fail(new AuthError("auth-rejected", "Registrar rejected the signed REGISTER after the handshake"));
      return;
    }
    if (this.phase === "registered" || this.phase === "refreshing" || !gssapi) {
      if (this.phase === "handshaking") {
        this.fail(
          new AuthError("tls-handshake-failed", "Registrar restarted the challenge during the handshake"),
        );
        return;
      }
      if (this.phase !== "challenging") {
        // A refresh was challenged: the server dropped our SA. Start again from an unsigned REGISTER.
        this.o.logger.info("refresh challenged; re-authenticating");
        this.sendUnauthenticated();
        return;
      }
      await this.beginHandshake(ch);
      return;
    }
    await this.continueHandshake(ch, gssapi);
  }

  private async beginHandshake(ch: AuthChallenge): Promise<void> {
    const realm = ch.params.get("realm") ?? "";
    const targetname = ch.params.get("targetname") ?? "";
    const version = Number.parseInt(ch.params.get("version") ?? "4", 10);
    const stsUri = ch.params.get("sts-uri");
    this.emit({ type: "challenged", realm, targetname, version, ...(stsUri ? { stsUri } : {}) });
    const creds = this.o.credentials;
    if (!creds || creds.notAfter - this.o.clock.now() < 3600_000) {
      // sipe treats a certificate within an hour of expiry as unusable; so do we.
      const error = new CertificateRequiredError(
        stsUri,
        stsUri
          ? "Sign-in required: no valid client certificate"
          : "No client certificate and no URI for certificate provisioning",
      );
      this.fail(error, stsUri ? { stsUri } : {});
      return;
    }
    this.challenge = ch;
    this.opaque = ch.params.get("opaque");
    this.phase = "handshaking";
    this.handshakeStartedAt = this.o.clock.monotonic();
    try {
      this.engine = this.o.engineFactory({
        cert: creds.cert,
        key: creds.key,
        ca: this.o.trustedRoots,
        targetname,
        innerTls: this.o.innerTls,
      });
      const token = await this.engine.start();
      this.sendHandshake(token);
    } catch (err) {
      this.fail(err as HandsetError);
    }
  }

  private async continueHandshake(ch: AuthChallenge, gssapi: string): Promise<void> {
    const engine = this.engine;
    if (this.phase !== "handshaking" || !engine || !this.challenge) {
      this.fail(new AuthError("tls-handshake-failed", "Unexpected handshake token from registrar"));
      return;
    }
    const opaque = ch.params.get("opaque");
    if (this.opaque && opaque && opaque !== this.opaque) {
      this.fail(
        new AuthError("tls-handshake-failed", "Registrar changed the security association mid-handshake"),
      );
      return;
    }
    this.opaque = opaque ?? this.opaque;
    try {
      const step = await engine.step(Buffer.from(gssapi, "base64"));
      if (this.phase !== "handshaking") return;
      if ("token" in step) {
        this.sendHandshake(step.token);
        return;
      }
      this.establish(step.done);
    } catch (err) {
      this.fail(err as HandsetError);
    }
  }

  private sendHandshake(token: Buffer): void {
    const ch = this.challenge!;
    const params: Array<[string, string, boolean?]> = [["qop", "auth"]];
    if (this.opaque) params.push(["opaque", this.opaque]);
    params.push(["realm", ch.params.get("realm") ?? ""]);
    params.push(["targetname", ch.params.get("targetname") ?? ""]);
    params.push(["gssapi-data", token.toString("base64")]);
    params.push(["version", ch.params.get("version") ?? "4", false]);
    this.send(this.o.requestedExpires, { sign: false, authorization: formatAuthHeader("TLS-DSK", params) });
  }

  private establish(done: { keyMaterial: Buffer; version: string; cipher: string }): void {
    const ch = this.challenge!;
    if (!this.opaque) {
      this.fail(
        new AuthError("tls-handshake-failed", "Registrar never named the security association (no opaque)"),
      );
      return;
    }
    this.engine?.destroy();
    this.engine = undefined;
    const { clientKey, serverKey } = deriveTlsDskKeys(done.keyMaterial);
    const creds = this.o.credentials!;
    const now = this.o.clock.now();
    // [MS-SIPAE] §3.2.2: SA lifetime = min(certificate validity, 8 h), less at least 5 minutes.
    const lifetime = Math.min(creds.notAfter - now, 8 * 3600_000) - 5 * 60_000;
    const sa = new SecurityAssociation({
      realm: ch.params.get("realm") ?? "",
      targetname: ch.params.get("targetname") ?? "",
      opaque: this.opaque,
      version: Number.parseInt(ch.params.get("version") ?? "4", 10),
      clientKey,
      serverKey,
      mac: macAlgForCipher(done.cipher),
      expiresAt: now + lifetime,
    });
    this.o.core.setSecurityAssociation(sa);
    this.saTimer?.cancel();
    this.saTimer = this.o.clock.setTimer(Math.max(0, lifetime), () => {
      this.o.logger.info("security association lifetime reached; re-authenticating");
      this.refreshTimer?.cancel();
      this.sendUnauthenticated();
    });
    this.emit({
      type: "authenticated",
      tlsVersion: done.version,
      cipher: done.cipher,
      handshakeMs: Math.round(this.o.clock.monotonic() - this.handshakeStartedAt),
    });
    this.phase = "signing";
    this.send(this.o.requestedExpires, { sign: true, includeVersion: true });
  }

  private onRegistered(r: SipResponse): void {
    const expiresHeader = Number.parseInt(header(r, "Expires") ?? "", 10);
    const contactExpires = Number.parseInt(paramOf(header(r, "Contact"), "expires") ?? "", 10);
    const expires = Number.isFinite(expiresHeader)
      ? expiresHeader
      : Number.isFinite(contactExpires)
        ? contactExpires
        : 3600;
    const presence = header(r, "presence-state");
    const keepAlive = Number.parseInt(paramOf(header(r, "ms-keep-alive"), "timeout") ?? "", 10);
    const registerAction = paramOf(presence, "register-action");
    const wasRefresh = this.phase === "refreshing";
    this.phase = "registered";
    this.emit({
      type: "registered",
      expires,
      refresh: wasRefresh ? ++this.refreshes : 0,
      ...(Number.isFinite(keepAlive) ? { keepAliveS: keepAlive } : {}),
      ...(presence ? { presenceState: presence } : {}),
      ...(registerAction ? { registerAction } : {}),
      connectedToPrimary: paramOf(presence, "is-connected-to-primary") !== "no",
      userServicesAvailable: paramOf(presence, "user-services-state") !== "unavailable",
      ...(paramOf(header(r, "Contact"), "pub-gruu")
        ? { gruu: paramOf(header(r, "Contact"), "pub-gruu") }
        : {}),
    });
    // Refresh shorter than Expires ([MS-SIPREGE]): min(Expires − 30 s, 90 % of Expires).
    const refreshInS = Math.max(1, Math.min(expires - 30, expires * 0.9));
    this.refreshTimer?.cancel();
    this.refreshTimer = this.o.clock.setTimer(refreshInS * 1000, () => this.refresh());
  }

  /** Sends a signed re-REGISTER now (also used by tests and the CLI's --refreshes). */
  refresh(): void {
    if (this.phase !== "registered") return;
    this.refreshTimer?.cancel();
    this.phase = "refreshing";
    this.send(this.o.requestedExpires);
  }
}
