/**
 * Registrar POLICY: which registrar to use, when to move on, when to come back
 * (lync-phone-behaviour.md §4.3–4.4; DESIGN.md "Registration is mechanism … choosing the
 * registrar is policy"). The mechanism (sip/registration) registers once and reports; this class
 * decides what happens next and never gives up:
 *
 * - registrars are tried in order (home first: the 301's primary, DHCP, SRV priority, cached);
 *   a registrar that fails or dies hands over AT ONCE to the next one;
 * - after a whole round fails, wait min(cap, base·2ⁿ) × U(0.5, 1), or Retry-After when given;
 * - a 301 replaces the list with its primary (q 0.7) and backup (q 0.3), which the owner keeps;
 * - while registered to a non-home registrar, probe the home one every `failbackProbeMs` and
 *   move back when it answers;
 * - `limited` when registered away from home or when presence-state says the user services or
 *   the primary are unavailable;
 * - a registrar asking for a certificate we do not have ends in `sign-in-required`: the one
 *   state only a person can leave.
 */
import { backoffDelay } from "../core/backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import type { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { Flow, FlowConnector } from "../sip/flow.ts";
import type { EndpointIdentity } from "../sip/registration/register-request.ts";
import {
  CertificateRequiredError,
  type ClientCredentials,
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
  failbackProbeMs?: number;
  /** A 301 named the home registrars: the owner keeps them (in flash, unlike the desktop client). */
  onRedirect?: (primary: RegistrarAddress, backup: RegistrarAddress | undefined) => void;
  /** Mechanism events, for logs and telemetry. */
  onRegistrationEvent?: (e: RegistrationEvent, registrar: string) => void;
}

export class Account {
  readonly status = new Emitter<AccountStatus>();
  private list: RegistrarAddress[];
  private index = 0;
  private rounds = 0;
  private stopped = true;
  private current:
    | { flow: Flow; core: UserAgentCore; reg: Registration; target: RegistrarAddress }
    | undefined;
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

  start(): void {
    if (!this.stopped) return;
    if (this.list.length === 0) {
      this.report({ state: "failed", error: { code: "no-registrar", message: "No registrar known" } });
      return;
    }
    this.stopped = false;
    this.index = 0;
    this.rounds = 0;
    void this.attempt();
  }

  async stop(opts: { unregister?: boolean } = {}): Promise<void> {
    this.stopped = true;
    this.generation++;
    this.retryTimer?.cancel();
    this.probeTimer?.cancel();
    const cur = this.current;
    this.current = undefined;
    if (cur) {
      if (opts.unregister) await cur.reg.unregister().catch(() => false);
      cur.reg.stop();
      cur.core.close();
    }
    this.report({ state: "stopped" });
  }

  /** Pending timers and flows, for leak checks in soak tests. */
  get openFlows(): number {
    return this.current ? 1 : 0;
  }

  private report(s: AccountStatus): void {
    this.last = s;
    this.status.emit(s);
  }

  private key(t: RegistrarAddress): string {
    return `${t.host}:${t.port}`;
  }

  private async attempt(): Promise<void> {
    const gen = ++this.generation;
    const target = this.list[this.index]!;
    const where = this.key(target);
    this.report({ state: "registering", registrar: where });
    let flow: Flow;
    try {
      flow = await this.o.connect({
        host: target.host,
        port: target.port,
        ...(target.serverName ? { serverName: target.serverName } : {}),
      });
    } catch (err) {
      if (gen !== this.generation || this.stopped) return;
      this.onFailure(err as HandsetError, undefined);
      return;
    }
    if (gen !== this.generation || this.stopped) {
      flow.close();
      return;
    }
    const core = new UserAgentCore(flow, {
      clock: this.o.clock,
      random: this.o.random,
      logger: this.o.logger,
    });
    const reg = new Registration({
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
    this.current = { flow, core, reg, target };
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
        const home = this.index === 0;
        const limited = !home || !e.connectedToPrimary || !e.userServicesAvailable;
        this.report({
          state: limited ? "limited" : "registered",
          registrar: where,
          primary: home && e.connectedToPrimary,
          refresh: e.refresh,
        });
        if (!home) this.scheduleFailbackProbe();
        break;
      }
      case "redirected":
        this.onRedirect(e.targets);
        break;
      case "failed":
        this.onFailure(e.error, e.retryAfterS);
        break;
      default:
        break;
    }
  }

  private drop(): void {
    const cur = this.current;
    this.current = undefined;
    this.probeTimer?.cancel();
    if (cur) {
      cur.reg.stop();
      cur.core.close();
    }
  }

  private onRedirect(targets: RegistrarTarget[]): void {
    this.drop();
    const [p, b] = targets;
    const primary: RegistrarAddress = { host: p!.host, port: p!.port, source: "redirect-primary" };
    const backup: RegistrarAddress | undefined = b
      ? { host: b.host, port: b.port, source: "redirect-backup" }
      : undefined;
    this.o.onRedirect?.(primary, backup);
    this.list = dedupe([primary, ...(backup ? [backup] : []), ...this.list]);
    this.index = 0;
    void this.attempt();
  }

  private onFailure(error: HandsetError, retryAfterS: number | undefined): void {
    this.drop();
    if (this.stopped) return;
    // A registrar refusing our certificate (revoked, or no longer published for the user) will not
    // change its mind on retry: only a new sign-in helps.
    const refusedCertificate = error.code === "registration-forbidden" && /certificate/i.test(error.message);
    if (error instanceof CertificateRequiredError || refusedCertificate) {
      this.stopped = true;
      this.report({
        state: "sign-in-required",
        error: { code: error.code, message: error.message },
        ...(error instanceof CertificateRequiredError && error.stsUri ? { stsUri: error.stsUri } : {}),
      });
      return;
    }
    const failedAt = this.key(this.list[this.index]!);
    this.o.logger.warn("registrar failed", { registrar: failedAt, code: error.code });
    this.index = (this.index + 1) % this.list.length;
    if (this.index !== 0) {
      // Another registrar is known: hand over at once, the phone has been without service long enough.
      void this.attempt();
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
      if (!this.stopped) void this.attempt();
    });
  }

  /** While away from home, look at home every so often; go back as soon as it answers. */
  private scheduleFailbackProbe(): void {
    this.probeTimer?.cancel();
    const home = this.list[0]!;
    this.probeTimer = this.o.clock.setTimer(this.o.failbackProbeMs ?? 60_000, async () => {
      if (this.stopped || this.index === 0) return;
      const gen = this.generation;
      try {
        const probe = await this.o.connect({
          host: home.host,
          port: home.port,
          ...(home.serverName ? { serverName: home.serverName } : {}),
        });
        probe.close();
        if (gen !== this.generation || this.stopped) return;
        this.o.logger.info("home registrar answers again; failing back", { registrar: this.key(home) });
        this.drop();
        this.index = 0;
        void this.attempt();
      } catch {
        if (gen === this.generation && !this.stopped) this.scheduleFailbackProbe();
      }
    });
  }
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
