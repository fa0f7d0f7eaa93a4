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
 *
 * While running it also keeps the flow alive and watches it (flow-liveness.ts): CRLFCRLF
 * keep-alive after the ms-keep-alive idle time, and a probe after 25 s of silence from the
 * server that must be answered within 10 s, else `failed` "flow-dead" (≤ 35 s after the flow
 * goes dark; bound `livenessTimeoutMs`, default 40 s). Registration-lost signals
 * (lync-phone-behaviour.md §4.2) end it too: a refresh 200 with register-action "added" or
 * "fixed" → `failed` "binding-lost"; a NOTIFY registration-notify `deregistered;event=<reason>`
 * → answered 200 (signed by the core), then `failed` "deregistered" with `reason` and, when
 * given, `preferredRegistrar`.
 *
 * Trust (issue 9 §2): after the SA exists, only answers whose signature verified can redirect,
 * refuse our certificate (sign-in) or set a Retry-After; an unsigned refusal becomes
 * `failed` "unsigned-rejection" (the flow is dropped, the policy backs off normally). Refusals
 * are typed (RegistrarRefusal: status, ms-diagnostics ErrorId meaning, verified), never read
 * from text. The tunnel is bound to the flow (channel-binding.ts) and "auto" falls back from the
 * 1.2 to the 1.0 profile once per flow (version-fallback.ts). Server durations are clamped where
 * parsed (limits.ts): Expires [60 s, 24 h], Retry-After [30 s, 1 h], keep-alive [10 s, 10 min].
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import {
  AuthError,
  asHandsetError,
  type HandsetError,
  RegistrationError,
  TransportError,
} from "../../core/errors.ts";
import type { Logger } from "../../core/logger.ts";
import { hex32, hexToken, type Random } from "../../core/random.ts";
import { type AuthChallenge, findChallenge, formatAuthHeader } from "../grammar/auth-params.ts";
import { parseNameAddr } from "../grammar/name-addr.ts";
import { parseUri } from "../grammar/uri.ts";
import {
  header,
  headerList,
  headers,
  request,
  type SipRequest,
  type SipResponse,
  setHeader,
} from "../message/message.ts";
import { checkInnerCertificate, checkTargetname } from "../tls-dsk/channel-binding.ts";
import type { InnerTls, TlsDskClientEngine, TlsDskClientOptions } from "../tls-dsk/engine.ts";
import { deriveTlsDskKeys } from "../tls-dsk/prf.ts";
import { certificatesFromFlight } from "../tls-dsk/records.ts";
import { macAlgForCipher, SecurityAssociation } from "../tls-dsk/security-association.ts";
import { initialInnerTls, serverNeedsTls10 } from "../tls-dsk/version-fallback.ts";
import type { NonInviteClientTransaction } from "../transaction/non-invite-client.ts";
import type { RequestAnswer, UserAgentCore } from "../user-agent-core.ts";
import {
  type DiagnosticMeaning,
  diagnosticMeaning,
  firstDiagnostic,
  type MsDiagnostic,
  refusesCertificate,
} from "./diagnostics.ts";
import { FlowLiveness, livenessTiming } from "./flow-liveness.ts";
import {
  EXPIRES_RANGE_S,
  KEEP_ALIVE_RANGE_S,
  OnceReporter,
  parseSeconds,
  RETRY_AFTER_RANGE_S,
} from "./limits.ts";
import { buildRegister, domainOf, type EndpointIdentity, USER_AGENT } from "./register-request.ts";

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
  credentials: ClientCredentials | undefined | (() => ClientCredentials | undefined);
  trustedRoots: string[];
  innerTls: InnerTls;
  requestedExpires?: number;
  userAgent?: string;
  /**
   * Upper bound (ms) from the moment the flow goes dark to `failed` "flow-dead"; default
   * 40 000; 0 disables the probe (keep-alive pings still run). probeIntervalMs (default 25 000)
   * + probeTimeoutMs (default 10 000) are clamped to fit within it.
   */
  livenessTimeoutMs?: number;
  /** Silence from the server (ms) after which a probe is sent; default 25 000. */
  probeIntervalMs?: number;
  /** Time (ms) a probe has to be answered (any input counts); default 10 000. */
  probeTimeoutMs?: number;
  /** Reports out-of-range server values once; share one across registrations to log once per phone. */
  rangeReporter?: OnceReporter;
}

/**
 * The registrar refused the registration (a final non-2xx). Decisions rest on `status`,
 * `meaning` (from the ms-diagnostics ErrorId table) and `verified`, never on the message text.
 * - `verified`: the refusal carried a signature that verified against the SA.
 * - code "unsigned-rejection": an unsigned answer after the SA existed; at most a hint, so
 *   `meaning` is "unknown" whatever it claimed, and the policy treats it as a failed flow.
 */
export class RegistrarRefusal extends RegistrationError {
  readonly status: number;
  readonly diagnostic: MsDiagnostic | undefined;
  readonly meaning: DiagnosticMeaning;
  readonly verified: boolean;

  constructor(
    code: string,
    message: string,
    o: { status: number; diagnostic?: MsDiagnostic; meaning: DiagnosticMeaning; verified: boolean },
  ) {
    super(code, message);
    this.status = o.status;
    this.diagnostic = o.diagnostic;
    this.meaning = o.meaning;
    this.verified = o.verified;
  }
}

/**
 * True when the registrar refused our certificate (not published / revoked, by ErrorId) in an
 * answer we may act on: signed by the SA, or sent before any SA existed (the outer TLS then is
 * all there is). Never for an unsigned answer after the SA.
 */
export function isCertificateRefusal(error: HandsetError): boolean {
  return (
    error instanceof RegistrarRefusal &&
    error.code !== "unsigned-rejection" &&
    refusesCertificate(error.meaning)
  );
}

/** Refresh never sooner than 90 % of the 60 s Expires floor, so a clamped Expires cannot spin. */
const MIN_REFRESH_S = 0.9 * EXPIRES_RANGE_S.min;

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
  | {
      type: "failed";
      error: HandsetError;
      /** The failure rests on an answer whose signature verified against the SA. */
      verified?: boolean;
      retryAfterS?: number;
      stsUri?: string;
      /** error.code "deregistered": the registration-notify event (unregistered, rejected, …). */
      reason?: string;
      /** error.code "deregistered", reason preferred-registrar-change: P-Preferred-Registrar. */
      preferredRegistrar?: RegistrarTarget;
    }
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

/** Reads `<sip:host:port;transport=tls>` or a bare host[:port] as a registrar target. */
function parseTarget(value: string): RegistrarTarget | undefined {
  const v = value.trim();
  try {
    const uri = /^<|^sips?:/i.test(v) ? parseNameAddr(v).uri : `sip:${v}`;
    const u = parseUri(uri);
    return { uri, host: u.host, port: u.port ?? 5061, q: 1 };
  } catch {
    return undefined;
  }
}

function paramOf(text: string | undefined, name: string): string | undefined {
  if (!text) return undefined;
  const m = new RegExp(`(?:^|[;,\\s])${name}\\s*=\\s*("([^"]*)"|[^;,\\s]+)`, "i").exec(text);
  return m ? (m[2] ?? m[1]) : undefined;
}

/**
 * Our GRUU from a REGISTER 200: on our own Contact (the one with our +sip.instance; a pool may
 * list every endpoint of the user), Lync's `gruu=` (MS-SIPREGE §2.2.1.2, as Lync 2013 and SfB
 * send it) or RFC 5627's `pub-gruu=`. Only a sip: URI counts; anything else is ignored.
 */
function gruuOf(r: SipResponse, instanceId: string): { gruu?: string } {
  const contacts = headerList(r, "Contact");
  const ours = contacts.find((c) => c.toLowerCase().includes(instanceId.toLowerCase())) ?? contacts[0];
  const g = paramOf(ours, "gruu") ?? paramOf(ours, "pub-gruu");
  return g && /^sips?:[^\s<>"]+$/i.test(g) ? { gruu: g } : {};
}

export class Registration {
  private phase: Phase = "idle";
  private readonly callId: string;
  private cseq: number;
  private engine: TlsDskClientEngine | undefined;
  private handshakeCredentials: ClientCredentials | undefined;
  private challenge: AuthChallenge | undefined;
  private opaque: string | undefined;
  private handshakeStartedAt = 0;
  private refreshTimer: TimerHandle | undefined;
  private saTimer: TimerHandle | undefined;
  private refreshes = 0;
  private listeners: Array<(e: RegistrationEvent) => void> = [];
  private unregisterWaiter: ((ok: boolean) => void) | undefined;
  /** A 200 has bound us on this registrar: later 200s are refreshes of that binding. */
  private bound = false;
  private readonly inFlight = new Set<NonInviteClientTransaction>();
  private readonly liveness: FlowLiveness;
  private readonly ranges: OnceReporter;
  /** The inner-TLS profile in use on this flow ("auto" starts at 1.2, may fall back once to 1.0). */
  private innerTls: "1.2" | "1.0";
  private fellBack = false;
  /** Server flights seen in the current handshake. */
  private serverFlights = 0;

  constructor(private readonly o: RegistrationOptions) {
    this.ranges = o.rangeReporter ?? new OnceReporter(o.logger);
    this.innerTls = initialInnerTls(o.innerTls);
    this.callId = hexToken(o.random, 16);
    this.cseq = 1 + Math.floor(o.random.unit() * 1000);
    const timing = livenessTiming(o);
    this.liveness = new FlowLiveness({
      ...timing,
      clock: o.clock,
      activity: o.core.activity,
      sendPing: () => o.core.sendPing(),
      probe: () => this.probe(),
      onDead: (silentForMs) => {
        this.fail(
          new TransportError(
            "flow-dead",
            `No answer from ${o.core.flow.remote} to a liveness probe (silent for ${Math.round(silentForMs / 1000)} s)`,
          ),
        );
        o.core.close();
      },
    });
    o.core.addRequestHandler((r) => this.onServerRequest(r));
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
    // One CRLFCRLF first: a pong before the first answer tells us this server answers pings,
    // so later liveness probes can be pings instead of OPTIONS.
    this.o.core.sendPing();
    this.liveness.start();
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

  /** Stops timers, our transactions and the engine; the owner closes the flow. */
  stop(): void {
    this.phase = "done";
    this.clearTimers();
    this.liveness.stop();
    for (const tx of this.inFlight) this.o.core.cancel(tx);
    this.inFlight.clear();
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

  private fail(
    error: HandsetError,
    extra: {
      retryAfterS?: number;
      stsUri?: string;
      reason?: string;
      preferredRegistrar?: RegistrarTarget;
    } = {},
  ): void {
    if (this.phase === "done") return;
    this.stop();
    this.o.logger.warn("registration failed", { code: error.code, message: error.message });
    this.unregisterWaiter?.(false);
    this.emit({
      type: "failed",
      error,
      verified: error instanceof RegistrarRefusal ? error.verified : false,
      ...extra,
    });
  }

  /** Fails and drops the flow: nothing more on it can be trusted. */
  private failFlow(error: HandsetError): void {
    this.fail(error);
    this.o.core.close();
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
    this.track(
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
      ),
    );
  }

  /** Keeps a transaction of ours until it ends, so that stop() can cancel it (and its Timer F). */
  private track(tx: NonInviteClientTransaction): void {
    for (const t of this.inFlight) if (t.state === "terminated") this.inFlight.delete(t);
    if (tx.state !== "terminated") this.inFlight.add(tx);
  }

  /**
   * One liveness probe. A CRLFCRLF ping when this server has answered a ping with a pong on this
   * flow and the last input was a SIP message; otherwise an OPTIONS (signed once the SA exists)
   * with Max-Forwards: 0, so the server at the other end of this flow answers it itself and never
   * forwards it (RFC 3261 §16.3 item 3 with §11). Any input counts as the answer, even a 401 or
   * 483, so the outcome is ignored here.
   *
   * Why not two pings in a row: the stream framer reads a lone CRLF that follows a lone CRLF
   * (with nothing in between) as the second half of a split ping, so the second pong is
   * answered by the flow and never reported as a pong. Alternating keeps every answer visible.
   */
  private probe(): void {
    const core = this.o.core;
    if (core.activity.pongs > 0 && !core.activity.lastWasPong) {
      core.sendPing();
      return;
    }
    const branch = core.newBranch();
    const domain = `sip:${domainOf(this.o.endpoint.aor)}`;
    const req = request("OPTIONS", domain, [
      ["Via", ""],
      ["Max-Forwards", "0"],
      ["From", `<${this.o.endpoint.aor}>;tag=${hex32(this.o.random)};epid=${this.o.endpoint.epid}`],
      ["To", `<${domain}>`],
      ["Call-ID", hexToken(this.o.random, 16)],
      ["CSeq", "1 OPTIONS"],
      ["User-Agent", this.o.userAgent ?? USER_AGENT],
      ["Accept", "application/sdp"],
    ]);
    core.via(req, branch);
    this.track(core.sendRequest(req, { onFinal: () => {}, onFailure: () => {} }));
  }

  /** Server requests that concern the registration: NOTIFY Event: registration-notify. */
  private onServerRequest(r: SipRequest): RequestAnswer | undefined {
    if (!/^(BE)?NOTIFY$/i.test(r.method)) return undefined;
    const event = (header(r, "Event") ?? "").split(";")[0]!.trim().toLowerCase();
    if (event !== "registration-notify") return undefined;
    if (this.phase === "idle" || this.phase === "done") return { status: 481 };
    const body = r.body.toString("utf8").trim();
    const m = /^deregistered\s*(?:;\s*event\s*=\s*"?([^";\s]+)"?)?/i.exec(body);
    if (!m) return { status: 200 }; // another registration-notify state: nothing lost
    const reason = (m[1] ?? "unknown").toLowerCase();
    const preferred = header(r, "P-Preferred-Registrar");
    const target = preferred ? parseTarget(preferred) : undefined;
    const diag = header(r, "ms-diagnostics-public") ?? header(r, "ms-diagnostics");
    return {
      status: 200,
      after: () =>
        this.fail(
          new RegistrationError(
            "deregistered",
            `Registrar ended the registration (${reason})${diag ? ` (${diag})` : ""}`,
          ),
          { reason, ...(target ? { preferredRegistrar: target } : {}) },
        ),
    };
  }

  private onResponse(r: SipResponse, deregister: boolean): void {
    if (this.phase === "done") return;
    const verdict = this.o.core.signatureOf(r);
    const diagValues = [...headers(r, "ms-diagnostics"), ...headers(r, "ms-diagnostics-public")];
    const diagnostic = firstDiagnostic(diagValues);
    if (verdict === "unsigned" && r.status >= 300) {
      // After the SA, an unsigned refusal is at most a hint (issue 9 §2): never a redirect, a
      // stored registrar, a sign-in or a long wait. The flow is dropped; the policy retries with
      // its normal backoff on a new flow, where a fresh authentication starts.
      if (this.phase === "signing" && (r.status === 401 || r.status === 407)) {
        this.failFlow(
          new AuthError("auth-rejected", "Registrar rejected the signed REGISTER after the handshake"),
        );
        return;
      }
      this.failFlow(
        new RegistrarRefusal(
          "unsigned-rejection",
          `Registrar answered ${r.status} without a signature after authentication; not acted upon`,
          { status: r.status, ...(diagnostic ? { diagnostic } : {}), meaning: "unknown", verified: false },
        ),
      );
      return;
    }
    if (r.status === 401 || r.status === 407) {
      // onChallenge routes its errors to fail(); a throw past that (a bug) fails the registration too.
      this.onChallenge(r).catch((err: unknown) => this.fail(asHandsetError(err)));
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
    if (r.status >= 300 && r.status < 400) {
      // A redirect is followed and stored only when signed by the SA (lync-phone-behaviour.md §4.3:
      // Lync's 301 is signed); anything else could move the phone to any host, for good.
      if (verdict !== "verified") {
        this.failFlow(
          new RegistrarRefusal(
            "unsigned-rejection",
            `Registrar sent an unsigned ${r.status} redirect; not followed`,
            {
              status: r.status,
              meaning: "unknown",
              verified: false,
            },
          ),
        );
        return;
      }
      if (r.status !== 301 && r.status !== 302) {
        this.fail(
          new RegistrarRefusal(
            "registration-rejected",
            `Registrar refused the registration: ${r.status} ${r.reason}`,
            {
              status: r.status,
              meaning: "unknown",
              verified: true,
            },
          ),
        );
        return;
      }
      const targets = parseRedirect(r);
      this.stop();
      if (targets.length === 0) {
        this.fail(new RegistrationError("redirect-empty", "Registrar redirected without a usable Contact"));
        return;
      }
      this.emit({ type: "redirected", targets });
      return;
    }
    const shown = diagValues[0] ?? header(r, "Warning") ?? "";
    const why = `${r.status} ${r.reason}${shown ? ` (${shown})` : ""}`;
    const code =
      r.status === 403
        ? "registration-forbidden"
        : r.status === 404
          ? "user-not-found"
          : r.status >= 500
            ? "registrar-unavailable"
            : "registration-rejected";
    const retry = parseSeconds(header(r, "Retry-After"));
    const retryAfterS =
      retry === undefined ? undefined : this.ranges.clamp("Retry-After", retry, RETRY_AFTER_RANGE_S);
    this.fail(
      new RegistrarRefusal(code, `Registrar refused the registration: ${why}`, {
        status: r.status,
        ...(diagnostic ? { diagnostic } : {}),
        meaning: diagnosticMeaning(diagnostic?.id),
        verified: verdict === "verified",
      }),
      retryAfterS !== undefined ? { retryAfterS } : {},
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

  /** Read afresh at every handshake, so a renewed certificate is used at the next re-authentication. */
  private currentCredentials(): ClientCredentials | undefined {
    const c = this.o.credentials;
    return typeof c === "function" ? c() : c;
  }

  private async beginHandshake(ch: AuthChallenge): Promise<void> {
    const realm = ch.params.get("realm") ?? "";
    const targetname = ch.params.get("targetname") ?? "";
    const version = Number.parseInt(ch.params.get("version") ?? "4", 10);
    const stsUri = ch.params.get("sts-uri");
    this.emit({ type: "challenged", realm, targetname, version, ...(stsUri ? { stsUri } : {}) });
    // The SA will be keyed on targetname: it must be a name the outer certificate is valid for.
    const unbound = checkTargetname(this.o.core.flow.peerCertificatePem, targetname);
    if (unbound) {
      this.failFlow(unbound);
      return;
    }
    const creds = this.currentCredentials();
    this.handshakeCredentials = creds;
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
    this.serverFlights = 0;
    this.handshakeStartedAt = this.o.clock.monotonic();
    try {
      this.engine = this.o.engineFactory({
        cert: creds.cert,
        key: creds.key,
        ca: this.o.trustedRoots,
        targetname,
        innerTls: this.innerTls,
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
    const token = Buffer.from(gssapi, "base64");
    if (++this.serverFlights === 1 && this.checkServerFlight1(token)) return;
    try {
      const step = await engine.step(token);
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

  /**
   * Before the engine sees server flight 1 (and so before we send our certificate and
   * signature): the tunnelled certificate must be bound to the flow, and under "auto" a server
   * that only speaks TLS 1.0/1.1 gets a fresh handshake with the 1.0 profile (version-fallback.ts
   * says why that is no downgrade risk). True when the flight was handled here.
   */
  private checkServerFlight1(token: Buffer): boolean {
    if (this.o.innerTls === "auto" && this.innerTls === "1.2" && !this.fellBack && serverNeedsTls10(token)) {
      this.fellBack = true;
      this.innerTls = "1.0";
      this.o.logger.info("registrar speaks only TLS 1.0/1.1 inside TLS-DSK; retrying with the 1.0 profile", {
        registrar: this.o.core.flow.remote,
      });
      this.sendUnauthenticated();
      return true;
    }
    let leaf: Buffer | undefined;
    try {
      leaf = certificatesFromFlight(token)[0];
    } catch {
      leaf = undefined; // the engine reports malformed records with its own typed error
    }
    if (leaf) {
      const mismatch = checkInnerCertificate(this.o.core.flow.peerCertificatePem, leaf);
      if (mismatch) {
        this.failFlow(mismatch);
        return true;
      }
    }
    return false;
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

  private establish(done: {
    keyMaterial: Buffer;
    version: string;
    cipher: string;
    peerCertificatePem: string;
  }): void {
    const ch = this.challenge!;
    // The engine's own view of the peer, after the Finished verified: bound to the flow as well.
    const mismatch = checkInnerCertificate(this.o.core.flow.peerCertificatePem, done.peerCertificatePem);
    if (mismatch) {
      this.failFlow(mismatch);
      return;
    }
    if (!this.opaque) {
      this.fail(
        new AuthError("tls-handshake-failed", "Registrar never named the security association (no opaque)"),
      );
      return;
    }
    this.engine?.destroy();
    this.engine = undefined;
    const { clientKey, serverKey } = deriveTlsDskKeys(done.keyMaterial);
    // The certificate this handshake used bounds the SA, even if a renewal landed meanwhile.
    const creds = this.handshakeCredentials!;
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
    const expires = this.ranges.clamp(
      "Expires",
      Number.isFinite(expiresHeader)
        ? expiresHeader
        : Number.isFinite(contactExpires)
          ? contactExpires
          : 3600,
      EXPIRES_RANGE_S,
    );
    const presence = header(r, "presence-state");
    const keepAliveRaw = parseSeconds(paramOf(header(r, "ms-keep-alive"), "timeout"));
    const keepAlive =
      keepAliveRaw === undefined
        ? Number.NaN
        : this.ranges.clamp("ms-keep-alive timeout", keepAliveRaw, KEEP_ALIVE_RANGE_S);
    const registerAction = paramOf(presence, "register-action");
    const wasRefresh = this.phase === "refreshing";
    if (this.bound && (registerAction === "added" || registerAction === "fixed")) {
      // [MS-SIPREGE] §3.1.1.5.1: on a refresh, "added"/"fixed" means the binding had been lost;
      // a registration failure (dialogs are gone): the owner registers again.
      this.fail(
        new RegistrationError(
          "binding-lost",
          `Registrar answered a refresh with register-action="${registerAction}": the binding had been lost`,
        ),
      );
      return;
    }
    this.bound = true;
    this.phase = "registered";
    if (Number.isFinite(keepAlive)) this.liveness.setKeepAlive(keepAlive);
    this.emit({
      type: "registered",
      expires,
      refresh: wasRefresh ? ++this.refreshes : 0,
      ...(Number.isFinite(keepAlive) ? { keepAliveS: keepAlive } : {}),
      ...(presence ? { presenceState: presence } : {}),
      ...(registerAction ? { registerAction } : {}),
      connectedToPrimary: paramOf(presence, "is-connected-to-primary") !== "no",
      userServicesAvailable: paramOf(presence, "user-services-state") !== "unavailable",
      ...gruuOf(r, this.o.endpoint.instanceId),
    });
    // Refresh shorter than Expires ([MS-SIPREGE]): min(Expires − 30 s, 90 % of Expires), never
    // sooner than 54 s (90 % of the 60 s floor), so the smallest Expires means one refresh a minute.
    const refreshInS = Math.max(MIN_REFRESH_S, Math.min(expires - 30, expires * 0.9));
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
