/**
 * Registrar POLICY: which registrar to use, when to move on, when to come back
 * (lync-phone-behaviour.md §4.3–4.4; DESIGN.md "Registration is mechanism … choosing the
 * registrar is policy"). The mechanism (sip/registration) registers once and reports; this class
 * decides what happens next and never gives up:
 *
 * - registrars are tried in order (home first: the 301's primary, DHCP, SRV priority, cached);
 *   a registrar that fails hands over to the next one after a wait drawn from the injected Random
 *   (RFC 5626 §4.5 in spirit): U(0, `handoverJitterMs`, default 5 s) when the attempt failed, and
 *   U(0, `lostRegistrationSpreadMs`, default 40 s) when a WORKING registration was lost (flow
 *   closed, reset or dead, binding lost, deregistered). A silent death ("flow-dead") is found by
 *   each phone's liveness probe at its own phase, but those phases cluster when the phones
 *   registered together (measured: 5.1 % in one second with the short wait), so it spreads too. A registrar that dies takes every phone's
 *   registration in the same instant; 1 000 phones spread over 5 s are still 20 % of them in one
 *   second at the backup, spread over 40 s about 2.5 % on average (≤ 5 % in the storm test);
 * - after a whole round fails, wait min(cap, base·2ⁿ) × U(0.5, 1), or Retry-After when given;
 * - a 301 replaces the list with its primary (q 0.7) and backup (q 0.3), which the owner keeps;
 * - a registration-notify `deregistered` naming a P-Preferred-Registrar (the mechanism's `failed`
 *   "deregistered" with `preferredRegistrar`) makes that registrar the home one and goes there;
 * - while registered to a non-home registrar, every `failbackProbeMs` × U(0.5, 1) the phone
 *   registers with the home one on a SIDE flow, staying registered where it is. Only a signed 2xx
 *   whose rspauth verified (the mechanism's `registered`) counts: a TLS connect, a 503, an
 *   unsigned or badly signed answer do not. Then the side registration BECOMES the registration
 *   (no second REGISTER, no dangling binding) and the one on the backup is unregistered (signed
 *   Expires: 0) and closed;
 * - `limited` when registered away from home or when presence-state says the user services or
 *   the primary are unavailable;
 * - a registrar asking for a certificate we do not have ends in `sign-in-required`: the one
 *   state only a person can leave.
 *
 * The account also hands out its LINE: once a registration on a flow is bound (`registered`), the
 * flow's UserAgentCore, the identity it registered (AOR, epid) and the Contact calls must carry
 * (the GRUU, else the registered Contact) go out as a "line" event; "line-lost" follows when that
 * flow stops being the account's (replaced by failback or failover, lost, or the account stopped).
 * A flow that carries a call is not pulled from under it. The phone says so with `line.keep()`
 * (one keep per call in progress; the returned function releases it), and a replaced or failed
 * registration whose flow is kept only DRAINS: "line-lost" with `draining: true` (no new calls
 * there; the calls in progress carry on), and the flow is closed (after a signed de-REGISTER,
 * on failback) when the last keep is released. We chose deferring over refusing to fail back
 * while busy: the new registration is up at once, so new calls and the status are right, and
 * the call in progress is not cut. A failure of the flow itself (closed, reset, dead, registrar
 * silent) drains nothing (its calls cannot go on anyway); stop() closes draining flows too.
 */
import { backoffDelay } from "../core/backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { asHandsetError, type HandsetError, TransportError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { Flow, FlowConnector } from "../sip/flow.ts";
import type { EndpointIdentity } from "../sip/registration/register-request.ts";
import {
  CertificateRequiredError,
  type ClientCredentials,
  isCertificateRefusal,
  type RegistrarTarget,
  Registration,
  type RegistrationEvent,
} from "../sip/registration/registration.ts";
import type { InnerTls, TlsDskClientEngine, TlsDskClientOptions } from "../sip/tls-dsk/engine.ts";
import { UserAgentCore } from "../sip/user-agent-core.ts";

export interface RegistrarAddress {
  host: string;
  port: number;
  serverName?: string;
  /** Where we learnt it: "redirect-primary", "redirect-backup", "dhcp", "srv", "static", "cached". */
  source: string;
}

export type AccountState =
  | "registering"
  | "registered"
  | "limited"
  | "failed"
  | "sign-in-required"
  | "stopped";

export interface AccountStatus {
  state: AccountState;
  registrar?: string;
  /** True when registered to the first (home) registrar of the list and it says it is the primary. */
  primary?: boolean;
  error?: { code: string; message: string };
  retryInMs?: number;
  stsUri?: string;
  refresh?: number;
}

export interface AccountOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  connect: FlowConnector;
  engineFactory: (o: TlsDskClientOptions) => TlsDskClientEngine;
  endpoint: EndpointIdentity;
  /** Read at every attempt, so a renewed certificate is picked up without a restart. */
  credentials: () => ClientCredentials | undefined;
  trustedRoots: string[];
  innerTls: InnerTls;
  backoff?: { baseMs: number; capMs: number };
  /** Hand-over wait to the next registrar after a failed attempt: U(0, this) ms; default 5 000. */
  handoverJitterMs?: number;
  /** Hand-over wait after a working registration was lost (a storm if the registrar died): U(0, this) ms; default 40 000. */
  lostRegistrationSpreadMs?: number;
  /** Failback probe period while away from home, jittered × U(0.5, 1); default 60 000. */
  failbackProbeMs?: number;
  /** A side registration that has neither succeeded nor failed after this long is abandoned; default 60 000. */
  failbackProbeTimeoutMs?: number;
  /**
   * The mechanism on a fresh flow; by default a UserAgentCore and a TLS-DSK Registration
   * (sip/registration). Policy simulations (the storm) pass a stand-in.
   */
  mechanism?: (flow: Flow) => RegistrationOnFlow;
  /** A 301 named the home registrars: the owner keeps them (in flash, unlike the desktop client). */
  onRedirect?: (primary: RegistrarAddress, backup: RegistrarAddress | undefined) => void;
  /** Mechanism events, for logs and telemetry. */
  onRegistrationEvent?: (e: RegistrationEvent, registrar: string) => void;
}

/** The mechanism as the policy drives it: sip/registration's Registration keeps this shape. */
export interface RegistrationPort {
  on(listener: (e: RegistrationEvent) => void): () => void;
  start(): void;
  stop(): void;
  unregister(): Promise<boolean>;
}

/** One registration on one flow, and how to close what carries it. */
export interface RegistrationOnFlow {
  reg: RegistrationPort;
  close(): void;
  /** The user-agent core on the flow; a stand-in mechanism (policy simulations) has none, and so no line. */
  core?: UserAgentCore;
}

/** Who a line's calls are from: what the registration on its flow used. */
export interface LineIdentity {
  aor: string;
  epid: string;
}

/** A registered flow that can carry calls. */
export interface Line {
  readonly core: UserAgentCore;
  readonly identity: LineIdentity;
  /** The Contact for dialogs: the GRUU the registrar gave, else the Contact we registered. */
  readonly contact: string;
  /** "host:port" of the registrar the flow goes to. */
  readonly registrar: string;
  /**
   * A call in progress on this line: while any keep is held, a replaced or failed registration
   * leaves the flow open (draining) until the keep is released. Call the returned function once.
   */
  keep(): () => void;
}

export type LineEvent =
  | { type: "line"; line: Line }
  | {
      type: "line-lost";
      line: Line;
      /** replaced: failback/failover moved the account; lost: the registration failed; stopped. */
      reason: "replaced" | "lost" | "stopped";
      /** The flow stays open for the calls in progress (kept) and closes when they end. */
      draining: boolean;
    };

class FlowLine implements Line {
  private keeps = 0;
  private closer: (() => void) | undefined;

  constructor(
    readonly core: UserAgentCore,
    readonly identity: LineIdentity,
    readonly contact: string,
    readonly registrar: string,
  ) {}

  keep(): () => void {
    this.keeps++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.keeps--;
      if (this.keeps === 0) this.closeNow();
    };
  }

  get kept(): boolean {
    return this.keeps > 0;
  }

  /** `close` now, or once the last keep is released; true when deferred. */
  closeWhenFree(close: () => void): boolean {
    if (this.keeps === 0) {
      close();
      return false;
    }
    this.closer = close;
    return true;
  }

  closeNow(): void {
    const c = this.closer;
    this.closer = undefined;
    c?.();
  }
}

interface Live {
  reg: RegistrationPort;
  close(): void;
  target: RegistrarAddress;
  /** A 2xx has bound us here: losing this flow loses a working registration. */
  up?: boolean;
  core?: UserAgentCore;
  /** Handed out at the first `registered` on this flow. */
  line?: FlowLine;
}

/**
 * The Contact buildRegister (sip/registration/register-request.ts) registers for a flow: the
 * dialog Contact when the registrar gave no GRUU (the lab's does not).
 */
function registeredContact(local: { address: string; port: number }, epid: string): string {
  const host = local.address.includes(":") ? `[${local.address}]` : local.address;
  return `sip:${host}:${local.port};transport=tls;ms-opaque=${epid}`;
}

/** The flow itself failed: nothing on it can go on, so there is nothing to drain. */
function flowFailed(error: HandsetError): boolean {
  return error instanceof TransportError || error.code === "registrar-timeout";
}

export class Account {
  readonly status = new Emitter<AccountStatus>();
  /** The account's line as it comes and goes (see the header). */
  readonly lines = new Emitter<LineEvent>();
  /** Replaced or failed lines whose flows stay open for the calls on them. */
  private readonly draining = new Set<FlowLine>();
  private list: RegistrarAddress[];
  private index = 0;
  private rounds = 0;
  /** An unsigned refusal after the SA was already answered by one fresh authentication. */
  private unsignedRetried = false;
  private stopped = true;
  private current: Live | undefined;
  /** The failback probe: a registration with the home registrar on a side flow. */
  private side: (Live & { deadline: TimerHandle | undefined }) | undefined;
  private retryTimer: TimerHandle | undefined;
  private probeTimer: TimerHandle | undefined;
  private generation = 0;
  private last: AccountStatus = { state: "stopped" };

  constructor(
    private readonly o: AccountOptions,
    registrars: RegistrarAddress[],
  ) {
    this.list = dedupe(registrars);
  }

  get registrars(): readonly RegistrarAddress[] {
    return this.list;
  }

  get state(): AccountStatus {
    return this.last;
  }

  /** The line new calls go on: the current registration's, once bound. */
  get line(): Line | undefined {
    return this.current?.line;
  }

  start(): void {
    if (!this.stopped) return;
    if (this.list.length === 0) {
      this.report({ state: "failed", error: { code: "no-registrar", message: "No registrar known" } });
      return;
    }
    this.stopped = false;
    this.index = 0;
    this.rounds = 0;
    this.spawnAttempt();
  }

  async stop(opts: { unregister?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.retryTimer?.cancel();
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    this.abortSide();
    const cur = this.current;
    this.current = undefined;
    // Stopping means stopping: draining flows close too (their calls end).
    for (const line of [...this.draining]) line.closeNow();
    if (cur) {
      // Said before the de-REGISTER, while the flow still carries the calls' BYEs.
      if (cur.line)
        this.lines.emit({ type: "line-lost", line: cur.line, reason: "stopped", draining: false });
      if (opts.unregister) await cur.reg.unregister().catch(() => false);
      cur.reg.stop();
      cur.close();
    }
    this.report({ state: "stopped" });
  }

  /** Pending timers and flows, for leak checks in soak tests. */
  get openFlows(): number {
    return (this.current ? 1 : 0) + (this.side ? 1 : 0) + this.draining.size;
  }

  /**
   * `live` is no longer the account's: says "line-lost" (when it had a line), then runs `close`
   * now, or, when `mayDrain` and a call keeps the line, once the last call ends.
   */
  private retire(live: Live, reason: "replaced" | "lost", mayDrain: boolean, close: () => void): void {
    const line = live.line;
    if (!line) {
      close();
      return;
    }
    const draining = mayDrain && line.kept;
    this.lines.emit({ type: "line-lost", line, reason, draining });
    if (!draining) {
      close();
      return;
    }
    this.o.logger.info("a call keeps the old flow open; closing it when the call ends", {
      registrar: line.registrar,
      reason,
    });
    this.draining.add(line);
    line.closeWhenFree(() => {
      this.draining.delete(line);
      close();
    });
  }

  private report(s: AccountStatus): void {
    this.last = s;
    this.status.emit(s);
  }

  private key(t: RegistrarAddress): string {
    return `${t.host}:${t.port}`;
  }

  private connectTo(t: RegistrarAddress): Promise<Flow> {
    return this.o.connect({
      host: t.host,
      port: t.port,
      ...(t.serverName ? { serverName: t.serverName } : {}),
    });
  }

  /** The mechanism on `flow`: the injected one, or a UserAgentCore with a TLS-DSK Registration. */
  private mechanismOn(flow: Flow): RegistrationOnFlow {
    if (this.o.mechanism) return this.o.mechanism(flow);
    const core = new UserAgentCore(flow, {
      clock: this.o.clock,
      random: this.o.random,
      logger: this.o.logger,
    });
    const reg: Registration = new Registration({
      clock: this.o.clock,
      random: this.o.random,
      logger: this.o.logger,
      core,
      engineFactory: this.o.engineFactory,
      endpoint: this.o.endpoint,
      credentials: this.o.credentials,
      trustedRoots: this.o.trustedRoots,
      innerTls: this.o.innerTls,
    });
    return { reg, close: () => core.close(), core };
  }

  /**
   * Starts an attempt from a timer or an event. attempt() routes connect and registration errors
   * to onFailure itself; a throw past that is a bug, and it too becomes a failed attempt retried
   * with backoff: a phone on a wall never stops trying.
   */
  private spawnAttempt(): void {
    this.attempt().catch((err: unknown) => {
      this.o.logger.error("registration attempt failed unexpectedly", { error: String(err) });
      if (!this.stopped) this.onFailure(asHandsetError(err), undefined);
    });
  }

  private async attempt(): Promise<void> {
    const gen = ++this.generation;
    const target = this.list[this.index]!;
    const where = this.key(target);
    this.report({ state: "registering", registrar: where });
    let flow: Flow;
    try {
      flow = await this.connectTo(target);
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.onFailure(err as HandsetError, undefined);
      return;
    }
    if (gen !== this.generation || this.stopped) {
      flow.close();
      return;
    }
    const { reg, close, core } = this.mechanismOn(flow);
    this.current = { reg, close, target, ...(core ? { core } : {}) };
    reg.on((e) => {
      if (gen !== this.generation) return;
      this.o.onRegistrationEvent?.(e, where);
      this.onRegistrationEvent(e, target);
    });
    reg.start();
  }

  private onRegistrationEvent(e: RegistrationEvent, target: RegistrarAddress): void {
    const where = this.key(target);
    switch (e.type) {
      case "registered": {
        this.rounds = 0;
        this.unsignedRetried = false;
        const cur = this.current;
        if (cur) {
          cur.up = true;
          if (cur.core && !cur.line) {
            // The first binding on this flow: it can carry calls now (a refresh keeps the same line).
            const { aor, epid } = this.o.endpoint;
            const contact = e.gruu ?? registeredContact(cur.core.flow.local, epid);
            cur.line = new FlowLine(cur.core, { aor, epid }, contact, where);
            this.lines.emit({ type: "line", line: cur.line });
          }
        }
        const home = this.index === 0;
        const limited = !home || !e.connectedToPrimary || !e.userServicesAvailable;
        this.report({
          state: limited ? "limited" : "registered",
          registrar: where,
          primary: home && e.connectedToPrimary,
          refresh: e.refresh,
        });
        // Armed once per stay away from home (a refresh does not push the probe back).
        if (!home && !this.probeTimer && !this.side) this.scheduleFailbackProbe();
        break;
      }
      case "redirected":
        this.onRedirect(e.targets);
        break;
      case "failed":
        this.onFailure(
          e.error,
          e.retryAfterS,
          e.error.code === "deregistered" && e.preferredRegistrar ? e.preferredRegistrar : undefined,
        );
        break;
      default:
        break;
    }
  }

  /** The current registration is over; its flow drains when `mayDrain` and a call keeps it. */
  private drop(mayDrain: boolean): void {
    const cur = this.current;
    this.current = undefined;
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    this.abortSide();
    if (cur) {
      cur.reg.stop();
      this.retire(cur, "lost", mayDrain, () => cur.close());
    }
  }

  private onRedirect(targets: RegistrarTarget[]): void {
    this.drop(true);
    const [p, b] = targets;
    const primary: RegistrarAddress = { host: p!.host, port: p!.port, source: "redirect-primary" };
    const backup: RegistrarAddress | undefined = b
      ? { host: b.host, port: b.port, source: "redirect-backup" }
      : undefined;
    this.o.onRedirect?.(primary, backup);
    this.list = dedupe([primary, ...(backup ? [backup] : []), ...this.list]);
    this.index = 0;
    this.spawnAttempt();
  }

  /**
   * Goes to list[index] after U(0, handoverJitterMs), or U(0, lostRegistrationSpreadMs) when a working
   * registration was lost: every phone of a registrar that dies learns it in the same instant, and
   * the next registrar should not take them all in that instant too.
   */
  private handOver(lostRegistration: boolean): void {
    const spread = lostRegistration
      ? (this.o.lostRegistrationSpreadMs ?? 40_000)
      : (this.o.handoverJitterMs ?? 5_000);
    const delay = Math.round(this.o.random.unit() * spread);
    this.report({ state: "registering", registrar: this.key(this.list[this.index]!), retryInMs: delay });
    this.retryTimer?.cancel();
    this.retryTimer = this.o.clock.setTimer(delay, () => {
      if (!this.stopped) this.spawnAttempt();
    });
  }

  private onFailure(
    error: HandsetError,
    retryAfterS: number | undefined,
    preferred?: { host: string; port: number },
  ): void {
    const lostRegistration = this.current?.up === true;
    this.drop(!flowFailed(error));
    if (this.stopped) return;
    // A registrar refusing our certificate (revoked, or no longer published for the user) will not
    // change its mind on retry: only a new sign-in helps.
    // Typed: a signed (or pre-SA) refusal whose ms-diagnostics ErrorId means "certificate not
    // published / revoked" (sip/registration/diagnostics.ts); an unsigned answer never counts.
    const refusedCertificate = isCertificateRefusal(error);
    if (error instanceof CertificateRequiredError || refusedCertificate) {
      this.stopped = true;
      this.report({
        state: "sign-in-required",
        error: { code: error.code, message: error.message },
        ...(error instanceof CertificateRequiredError && error.stsUri ? { stsUri: error.stsUri } : {}),
      });
      return;
    }
    if (error.code === "unsigned-rejection" && !this.unsignedRetried) {
      // An unsigned refusal after the SA most likely means the registrar lost our SA (a front end
      // restarted behind the same address), not that it is gone: authenticate afresh, once, on a new
      // flow to the same registrar after the hand-over wait. Only a second one in a row counts
      // against the registrar (and so can move the phone to its backup).
      this.unsignedRetried = true;
      this.o.logger.info("unsigned refusal after authentication; re-authenticating on a new flow");
      this.handOver(false);
      return;
    }
    const failedAt = this.key(this.list[this.index]!);
    this.o.logger.warn("registrar failed", { registrar: failedAt, code: error.code });
    if (preferred) {
      // The registrar itself named where this user belongs now: that one is home from here on.
      const at = this.list.findIndex((r) => sameAddress(r, preferred));
      const home: RegistrarAddress = at >= 0 ? this.list[at]! : { ...preferred, source: "preferred" };
      this.list = dedupe([home, ...this.list]);
      this.index = 0;
      this.o.logger.info("registrar prefers another; moving there", { registrar: this.key(home) });
      this.handOver(lostRegistration);
      return;
    }
    this.index = (this.index + 1) % this.list.length;
    if (this.index !== 0) {
      // Another registrar is known: hand over soon, the phone has been without service long enough.
      this.handOver(lostRegistration);
      return;
    }
    const delay =
      retryAfterS !== undefined
        ? retryAfterS * 1000
        : // RFC 5626 §4.5: consecutive failures count from 1, so the first wait is 30–60 s, spread
          // wide enough that a building of phones does not come back within one second.
          backoffDelay(++this.rounds, this.o.random, this.o.backoff);
    this.report({
      state: "failed",
      registrar: failedAt,
      error: { code: error.code, message: error.message },
      retryInMs: delay,
    });
    this.retryTimer = this.o.clock.setTimer(delay, () => {
      if (!this.stopped) this.spawnAttempt();
    });
  }

  /**
   * While away from home, register with home every so often on a side flow, staying registered
   * where we are. Back home only when that registration succeeded (signed 2xx, rspauth verified).
   */
  private scheduleFailbackProbe(): void {
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    const period = this.o.failbackProbeMs ?? 60_000;
    const delay = Math.round(period * (0.5 + this.o.random.unit() / 2));
    this.probeTimer = this.o.clock.setTimer(delay, () => {
      this.probeTimer = undefined;
      if (this.stopped || this.index === 0 || !this.current || this.side) return;
      this.probeHome().catch((err: unknown) => {
        // A bug, not input: log it, drop the side flow and probe again later.
        this.o.logger.error("failback probe failed unexpectedly", { error: String(err) });
        this.abortSide();
        if (!this.stopped) this.scheduleFailbackProbe();
      });
    });
  }

  private async probeHome(): Promise<void> {
    const gen = this.generation;
    const home = this.list[0]!;
    const where = this.key(home);
    const stale = () => gen !== this.generation || this.stopped || this.index === 0;
    let flow: Flow;
    try {
      flow = await this.connectTo(home);
    } catch {
      if (!stale()) this.scheduleFailbackProbe();
      return;
    }
    if (stale()) {
      flow.close();
      return;
    }
    const { reg, close, core } = this.mechanismOn(flow);
    const side = {
      reg,
      close,
      target: home,
      deadline: undefined as TimerHandle | undefined,
      ...(core ? { core } : {}),
    };
    this.side = side;
    const notBack = (why: string) => {
      if (this.side !== side) return;
      this.o.logger.info("home registrar not back yet", { registrar: where, why });
      this.abortSide();
      if (!stale()) this.scheduleFailbackProbe();
    };
    side.deadline = this.o.clock.setTimer(this.o.failbackProbeTimeoutMs ?? 60_000, () => notBack("timeout"));
    let adoptedAs: number | undefined;
    reg.on((e) => {
      this.o.onRegistrationEvent?.(e, where);
      if (adoptedAs !== undefined) {
        if (adoptedAs === this.generation) this.onRegistrationEvent(e, home);
        return;
      }
      if (this.side !== side) return;
      if (e.type === "registered") {
        adoptedAs = this.adoptSide(side, e);
      } else if (e.type === "failed") notBack(e.error.code);
      else if (e.type === "redirected") notBack("redirected");
    });
    reg.start();
  }

  /** The side registration with home succeeded: it becomes the registration; the backup's ends. */
  private adoptSide(
    side: NonNullable<Account["side"]>,
    e: RegistrationEvent & { type: "registered" },
  ): number {
    side.deadline?.cancel();
    this.side = undefined;
    this.probeTimer?.cancel();
    this.probeTimer = undefined;
    const old = this.current;
    this.generation++;
    this.current = {
      reg: side.reg,
      close: side.close,
      target: side.target,
      up: true,
      ...(side.core ? { core: side.core } : {}),
    };
    this.index = 0;
    this.rounds = 0;
    this.o.logger.info("home registrar accepted a signed REGISTER; failing back", {
      registrar: this.key(side.target),
    });
    if (old) {
      // No binding left behind on the backup: a signed de-REGISTER, then close; while a call is
      // up on the backup's flow, only once it ends (the backup keeps refreshing until then).
      this.retire(old, "replaced", true, () => {
        old.reg
          .unregister()
          .catch(() => false)
          .then(() => {
            old.reg.stop();
            old.close();
          })
          .catch((err: unknown) =>
            this.o.logger.error("closing the backup registration failed", { error: String(err) }),
          );
      });
    }
    this.onRegistrationEvent(e, side.target);
    return this.generation;
  }

  private abortSide(): void {
    const side = this.side;
    this.side = undefined;
    if (!side) return;
    side.deadline?.cancel();
    side.reg.stop();
    side.close();
  }
}

function sameAddress(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  return a.host.toLowerCase() === b.host.toLowerCase() && a.port === b.port;
}

function dedupe(list: RegistrarAddress[]): RegistrarAddress[] {
  const seen = new Set<string>();
  return list.filter((r) => {
    const k = `${r.host.toLowerCase()}:${r.port}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
