/**
 * The phone: the life of DESIGN.md as one explicit state machine. Every move between lifecycle
 * states goes through transition(), which checks the edge against TRANSITIONS (lifecycle.ts),
 * logs, reports `{event:"state"}`, sets the LEDs and re-renders. Keys become commands through
 * one table (keymap.ts); frames come from a pure render(view) (screens.ts). The phone touches
 * the world only through the ports it is given: the board's parts, PhoneServices, Clock,
 * Random and Logger.
 *
 * Calls (calls.ts does the calls, call-screens.ts draws them): one CallAgent per line the
 * registration hands out; the hook switch and the keys drive the dial, call, transfer and missed
 * screens (keymap.ts). While a call rings, the message-waiting LED blinks (the board has no LED
 * of its own for it; a VVX flashes its message LED the same way), the `ringer` rings and a
 * `{event:"ring"}` says so. A call in progress, or someone at the dial screen, makes the phone
 * not idle (isIdle): the fleet's disruptive commands wait; `{event:"call", state:"idle"}` says
 * when that is over.
 *
 * Retry policy (a desk phone never gives up, but never guesses a PIN):
 * - discovery, clock, network/TLS/time failures of sign-in, and registration failures the
 *   policy does not retry itself → `failed`, then again after backoffDelay (+ jitter);
 * - wrong PIN → back to the PIN screen with the message; locked, PIN sign-in disabled and any
 *   other refusal → back to the extension screen. The PIN is forgotten and never re-sent
 *   automatically after any of these.
 */
import { type BackoffOptions, backoffDelay, defaultBackoff } from "../core/backoff.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import { asHandsetError, HandsetError } from "../core/errors.ts";
import { type Logger, silentLogger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import type { DisplaySink } from "../hal/display.ts";
import type { HookSwitch, IndicatorState, Indicators } from "../hal/indicators.ts";
import type { KeyEvent, KeySource } from "../hal/keys.ts";
import { CallDesk, type CallEnd, type DeskEvent, dialUri } from "./calls.ts";
import { type Command, commandFor, hookCommand } from "./keymap.ts";
import { assertTransition, type PhoneState, type UiMode, uiAllowed } from "./lifecycle.ts";
import { formatClock, infoPages, menuItems, type PhoneView, type RetryStep, render } from "./screens.ts";
import type {
  DiscoveryResult,
  LineEvent,
  PhoneServices,
  RegistrationHandle,
  RegistrationStatus,
} from "./services.ts";
import { appendDigit, backspace, EXTENSION_MAX, PIN_MAX } from "./text-entry.ts";

export type PhoneEvent =
  | {
      event: "state";
      state: PhoneState;
      registrar?: string;
      primary?: boolean;
      reason?: string;
      /** With `failed`: when the next attempt starts. */
      retryInMs?: number;
    }
  | { event: "display"; lines: string[] }
  | { event: "error"; code: string; message: string }
  /**
   * A call's progress (calling, ringing there, ringing here, connected, held, ended), a missed
   * call, and `idle` once no call is up and no one is at the dial screen any more.
   */
  | {
      event: "call";
      state:
        | "calling"
        | "ringing"
        | "incoming"
        | "connected"
        | "held"
        | "transferring"
        | "ended"
        | "missed"
        | "idle";
      direction?: "outgoing" | "incoming";
      /** The other end's number (user part of its URI). */
      remote?: string;
      /** With `transferring`: the number the other end transfers us to. */
      to?: string;
      reason?: string;
      status?: number;
      durationMs?: number;
    }
  /** The ringer turned on or off (an incoming call rings, is answered, ends). */
  | { event: "ring"; on: boolean };

/** A ring tone: the board's speaker or buzzer. Absent: the LED and the ring event only. */
export interface Ringer {
  ring(on: boolean): void;
}

/** Digits typed on the dial screen (an E.164 number with room for a prefix). */
const DIAL_MAX = 24;

export interface PhoneOptions {
  keys: KeySource;
  display: DisplaySink;
  indicators: Indicators;
  hook?: HookSwitch;
  ringer?: Ringer;
  services: PhoneServices;
  clock: Clock;
  random: Random;
  logger?: Logger;
  options?: {
    /** Backoff of automatic retries from `failed` (default: core defaultBackoff, 30 s … 30 min). */
    autoRetry?: BackoffOptions;
    /** Backoff of the background SNTP retry while the clock is not set (default 5 s … 10 min). */
    clockRetry?: BackoffOptions;
    /** Local time offset for the idle screen's clock (default 0 = UTC). */
    utcOffsetMinutes?: number;
    /** The dial screen calls the number typed after this long without a key (default 5 000; 0: never). */
    dialTimeoutMs?: number;
    /** How long the call-ended screen shows before idle (default 3 000). */
    endedScreenMs?: number;
    /** Take transfers (a REFER from the other party); default true. */
    acceptTransfers?: boolean;
  };
}

interface TransitionInfo {
  registrar?: string;
  primary?: boolean;
  reason?: string;
  retryInMs?: number;
  /** The UI sub-state to show in the new state (default: keep it if allowed, else the state's own). */
  ui?: UiMode;
  /** Extra fields for the log record only. */
  fields?: Record<string, unknown>;
}

/** Sign-in failures that never reached a PIN verdict: safe to retry automatically. */
const RETRYABLE_SIGN_IN = new Set([
  "server-unreachable",
  "server-cert-untrusted",
  "server-cert-time",
  "clock-invalid",
  "timeout",
]);
/** SNTP retries while the phone runs on the saved floor: soon at first, then rarely. */
const DEFAULT_CLOCK_RETRY: BackoffOptions = { baseMs: 5_000, capMs: 600_000 };
/** Sign-in failures whose retry must set the clock first. */
const CLOCK_SIGN_IN = new Set(["server-cert-time", "clock-invalid"]);
const DEFAULT_CODE: Record<RetryStep, string> = {
  discover: "discovery-failed",
  clock: "clock-unset",
  "sign-in": "sign-in-failed",
  register: "registration-failed",
};

export class Phone {
  readonly events = new Emitter<PhoneEvent>();

  private readonly services: PhoneServices;
  private readonly display: DisplaySink;
  private readonly indicators: Indicators;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly log: Logger;
  private readonly backoff: BackoffOptions;
  private readonly utcOffsetMinutes: number;
  private readonly keys: KeySource;
  private readonly hook: HookSwitch | undefined;
  private readonly ringer: Ringer | undefined;
  private readonly desk: CallDesk;
  private readonly dialTimeoutMs: number;
  private readonly endedScreenMs: number;
  /** The number on the dial or transfer screen. */
  private dialText = "";
  private dialTimer: TimerHandle | undefined;
  private endedTimer: TimerHandle | undefined;
  /** Re-renders the in-call screen when the call timer's second changes. */
  private callTick: TimerHandle | undefined;
  private ended: CallEnd | undefined;
  private missedIndex = 0;
  /** The last call event's state and remote, so a re-render does not repeat it. */
  private lastCallState: string | undefined;
  private callBusy = false;
  /** Loads, then saves, of the missed-calls list in flash, one after the other. */
  private missedIo: Promise<void> = Promise.resolve();

  private current: PhoneState = "booting";
  private ui: UiMode = "none";
  /** Bumped on every transition; an async step whose generation is stale drops its result. */
  private gen = 0;
  private running = false;
  private unsubscribe: Array<() => void> = [];

  private discovery: DiscoveryResult | undefined;
  private extension = "";
  /** The PIN being typed or in flight; "" whenever no sign-in needs it. Never logged or shown. */
  private pin = "";
  private notice: PhoneView["notice"];
  /** Why the phone is in `failed`; `retryAt` is on the monotonic clock (the screen counts down to it). */
  private failure: { code: string; step: RetryStep; retryAt?: number } | undefined;
  /** Re-renders the failed screen once a second while it shows a countdown. */
  private countdownTimer: TimerHandle | undefined;
  private displayName: string | undefined;
  private uri: string | undefined;
  private registrar: string | undefined;
  private primary: boolean | undefined;
  private menuIndex = 0;
  private info: Array<[string, string]> | undefined;
  private infoPage = 0;

  private registration: { token: number; handle?: RegistrationHandle } | undefined;
  private regToken = 0;
  private readonly attempts: Record<RetryStep, number> = { discover: 0, clock: 0, "sign-in": 0, register: 0 };
  private retryTimer: TimerHandle | undefined;
  /** The background SNTP retry while the phone runs on the saved floor. */
  private clockRetryTimer: TimerHandle | undefined;
  private readonly clockBackoff: BackoffOptions;
  private minuteTimer: TimerHandle | undefined;
  private lastFrame: string | undefined;
  private statusLed: IndicatorState | undefined;

  constructor(o: PhoneOptions) {
    this.keys = o.keys;
    this.display = o.display;
    this.indicators = o.indicators;
    this.hook = o.hook;
    this.ringer = o.ringer;
    this.services = o.services;
    this.clock = o.clock;
    this.random = o.random;
    this.log = (o.logger ?? silentLogger).child("phone");
    this.backoff = o.options?.autoRetry ?? defaultBackoff;
    this.clockBackoff = o.options?.clockRetry ?? DEFAULT_CLOCK_RETRY;
    this.utcOffsetMinutes = o.options?.utcOffsetMinutes ?? 0;
    this.dialTimeoutMs = o.options?.dialTimeoutMs ?? 5_000;
    this.endedScreenMs = o.options?.endedScreenMs ?? 3_000;
    this.desk = new CallDesk({
      clock: o.clock,
      random: o.random,
      logger: this.log,
      ...(o.services.media ? { media: o.services.media } : {}),
      ...(o.options?.acceptTransfers !== undefined ? { acceptTransfers: o.options.acceptTransfers } : {}),
    });
    this.desk.events.on((e) => {
      if (this.running) this.onDesk(e);
    });
  }

  /** A call is up (ringing here or there, connected): what the fleet's "in call" is. */
  get inCall(): boolean {
    return this.desk.busy;
  }

  /** The calls' part of the phone, for tests and diagnostics (missed list, last number). */
  get calls(): CallDesk {
    return this.desk;
  }

  get state(): PhoneState {
    return this.current;
  }

  /** The UI sub-state on top of the lifecycle state. */
  get uiMode(): UiMode {
    return this.ui;
  }

  /** Powers on: shows the boot screen and starts discovery. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.unsubscribe.push(this.keys.onKey((e) => this.onKey(e)));
    if (this.hook) this.unsubscribe.push(this.hook.onChange((off) => this.onHook(off)));
    this.display.setBacklight(true);
    this.indicators.messageWaiting.set("off");
    this.log.info("state", { to: "booting", version: this.services.version });
    this.events.emit({ event: "state", state: "booting" });
    this.applyLeds();
    this.refresh();
    this.scheduleMinuteTick();
    this.restoreMissed();
    this.transition("discovering");
    void this.discoverAndSetClock(this.gen, true).catch(this.logFailure("discoverAndSetClock"));
  }

  /** Stops timers, key handling and registration. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.gen++;
    this.retryTimer?.cancel();
    this.clockRetryTimer?.cancel();
    this.clockRetryTimer = undefined;
    this.minuteTimer?.cancel();
    this.countdownTimer?.cancel();
    this.countdownTimer = undefined;
    this.clearCallTimers();
    for (const u of this.unsubscribe.splice(0)) u();
    this.desk.stop();
    await this.stopRegistration();
  }

  /**
   * Whether a disruptive remote operation (reboot, sign-out, reprovision, a config that restarts
   * the core) may run now: not while a sign-in is in flight or someone is typing one, not while
   * the phone signs out or resets, not while a call is up (ringing either way, connected) or
   * someone is at the dial or transfer screen.
   */
  isIdle(): boolean {
    if (this.callBusyNow()) return false;
    if (this.current === "signing-in" || this.current === "provisioned") return false;
    if (this.ui === "signing-out" || this.ui === "resetting") return false;
    // Someone at the keypad mid-way through extension and PIN: do not pull the form away.
    const typing =
      (this.ui === "pin" && this.pin !== "") || (this.ui === "extension" && this.extension !== "");
    return !(typing && this.current === "sign-in-required");
  }

  /** Sign-out from outside (the fleet's `sign-out`): as the menu's, without asking. */
  async requestSignOut(): Promise<void> {
    if (!this.running) throw new HandsetError("not-running", "The phone is not running");
    if (this.current === "sign-in-required")
      throw new HandsetError("not-signed-in", "No user is signed in on this phone");
    await this.signOut();
  }

  /**
   * Reprovisioning from outside (the fleet's `reprovision`): a new key pair and certificate from
   * the certificate provisioning service (authenticated by the current certificate, no PIN), kept
   * in flash, then a fresh registration with it. If the web services cannot be reached the old
   * certificate stays and keeps working; the error is the answer.
   */
  async requestReprovision(): Promise<{ notAfter: number }> {
    if (!this.running) throw new HandsetError("not-running", "The phone is not running");
    const r = await this.services.reprovision();
    if (this.running && this.registration) {
      this.log.info("re-registering with the new certificate");
      await this.stopRegistration();
      if (!this.running) return r;
      this.transition("registering", { reason: "reprovisioned" });
      this.startRegistration();
    }
    return r;
  }

  /** What the display shows now, as data (the PIN only as its length). */
  view(): PhoneView {
    const v: PhoneView = {
      state: this.current,
      ui: this.ui,
      version: this.services.version,
      timeText: formatClock(this.clock.now(), this.utcOffsetMinutes),
      extension: this.extension,
      pinLength: this.pin.length,
      menuIndex: this.menuIndex,
      infoPage: this.infoPage,
    };
    const name = this.displayName ?? (this.extension || userPart(this.uri));
    if (name) v.name = name;
    if (this.uri) v.uri = this.uri;
    if (this.registrar) v.registrar = this.registrar;
    if (this.primary !== undefined) v.primary = this.primary;
    if (this.notice) v.notice = this.notice;
    if (this.failure) {
      const { code, step, retryAt } = this.failure;
      v.failure = { code, step };
      if (retryAt !== undefined) v.failure.retryInMs = Math.max(0, retryAt - this.clock.monotonic());
    }
    if (this.info) v.info = this.info;
    const d = this.desk;
    if (d.hasLine || d.busy || d.missed.length > 0 || this.ended) {
      const call = d.view();
      v.calls = {
        lineUp: d.hasLine,
        unseenMissed: d.unseenMissed,
        dialText: this.dialText,
        missed: d.missed,
        missedIndex: this.missedIndex,
        timeOf: (at) => formatClock(at, this.utcOffsetMinutes).slice(-5),
        ...(call ? { call } : {}),
        ...(this.ended ? { ended: this.ended } : {}),
      };
    }
    return v;
  }

  // ── the state machine ────────────────────────────────────────────────────────────────────

  private transition(to: PhoneState, info: TransitionInfo = {}): void {
    const from = this.current;
    assertTransition(from, to);
    this.current = to;
    this.gen++;
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.countdownTimer?.cancel();
    this.countdownTimer = undefined;
    this.ui =
      info.ui ?? (uiAllowed(to, this.ui) ? this.ui : to === "sign-in-required" ? "extension" : "none");
    if (to !== "failed") this.failure = undefined;
    const event: Extract<PhoneEvent, { event: "state" }> = { event: "state", state: to };
    if (info.registrar !== undefined) event.registrar = info.registrar;
    if (info.primary !== undefined) event.primary = info.primary;
    if (info.reason !== undefined) event.reason = info.reason;
    if (info.retryInMs !== undefined) event.retryInMs = info.retryInMs;
    const { event: _e, state: _s, ...detail } = event;
    this.log.info("state", { from, to, ...detail, ...info.fields });
    this.events.emit(event);
    this.applyLeds();
    this.refresh();
  }

  /**
   * The catch of a step run in the background: a throw that got past the step's own handling is
   * a bug, logged (never an unhandled rejection that would end the process).
   */
  private logFailure(step: string): (err: unknown) => void {
    return (err) => {
      const e = asHandsetError(err);
      this.log.error("background step failed", { step, code: e.code, message: e.message });
    };
  }

  private async discoverAndSetClock(gen: number, rediscover: boolean): Promise<void> {
    let d = this.discovery;
    if (rediscover || !d) {
      try {
        d = await this.services.discover();
      } catch (err) {
        this.stepFailed(gen, "discover", err);
        return;
      }
      if (gen !== this.gen) return;
      this.discovery = d;
      this.attempts.discover = 0;
    }
    let set: { offsetMs: number; source: string } | undefined;
    try {
      set = await this.services.setClock(d);
    } catch (err) {
      if (gen !== this.gen) return;
      // No SNTP answer: go on with the saved floor as the clock (not set). SNTP is retried in the
      // background with backoff; a check that failed only on time (clock-invalid) waits for it.
      this.reportError(asHandsetError(err, DEFAULT_CODE.clock));
      this.scheduleClockRetry();
    }
    if (gen !== this.gen) return;
    if (set) {
      this.clockSet();
      this.transition("clock-set", { fields: { offsetMs: set.offsetMs, source: set.source } });
    }
    if (this.pin) {
      // A sign-in interrupted by a clock problem resumes with what was typed.
      this.transition("signing-in");
      void this.runSignIn(this.gen).catch(this.logFailure("runSignIn"));
      return;
    }
    const idGen = this.gen;
    let id: Awaited<ReturnType<PhoneServices["identity"]>>;
    try {
      id = await this.services.identity();
    } catch (err) {
      this.log.warn("identity unreadable; asking for sign-in", { code: asHandsetError(err).code });
      id = { hasCredential: false };
    }
    if (idGen !== this.gen) return;
    this.displayName = id.displayName;
    this.uri = id.uri;
    if (id.hasCredential) {
      this.transition("registering");
      this.startRegistration();
    } else {
      if (id.damaged) {
        // Not "no identity yet": what was in flash is gone, and the form says why it asks.
        this.reportError(new HandsetError(id.damaged.code, id.damaged.message));
        this.notice = { code: id.damaged.code };
      }
      this.transition("sign-in-required", { ui: "extension" });
    }
  }

  /** SNTP answered: the background retry stops. */
  private clockSet(): void {
    this.attempts.clock = 0;
    this.clockRetryTimer?.cancel();
    this.clockRetryTimer = undefined;
  }

  /** SNTP again later (backoff + jitter), while the phone works on the saved floor. */
  private scheduleClockRetry(): void {
    if (this.clockRetryTimer || !this.running) return;
    const inMs = backoffDelay(this.attempts.clock++, this.random, this.clockBackoff);
    this.log.info("SNTP retry scheduled", { inMs });
    this.clockRetryTimer = this.clock.setTimer(inMs, () => {
      this.clockRetryTimer = undefined;
      void this.retryClock().catch(this.logFailure("retryClock"));
    });
  }

  private async retryClock(): Promise<void> {
    const d = this.discovery;
    if (!this.running || !d) return;
    let set: { offsetMs: number; source: string };
    try {
      set = await this.services.setClock(d);
    } catch (err) {
      this.log.warn("SNTP still unanswered", { code: asHandsetError(err).code });
      this.scheduleClockRetry();
      return;
    }
    if (!this.running) return;
    this.clockSet();
    this.log.info("clock set", { offsetMs: set.offsetMs, source: set.source });
    this.refresh();
    // A certificate check that failed only because the time was not set: again, at once.
    if (this.current === "failed" && this.failure?.code === "clock-invalid") this.retry();
  }

  private async runSignIn(gen: number): Promise<void> {
    const certProvUrl = this.discovery?.certProvUrl;
    let result: { uri: string };
    try {
      result = await this.services.signIn({
        extension: this.extension,
        pin: this.pin,
        ...(certProvUrl ? { certProvUrl } : {}),
      });
    } catch (err) {
      if (gen !== this.gen) return;
      const e = asHandsetError(err, DEFAULT_CODE["sign-in"]);
      if (RETRYABLE_SIGN_IN.has(e.code)) {
        this.stepFailed(gen, "sign-in", e);
        return;
      }
      // A verdict on the credentials: never re-sent without the user.
      this.pin = "";
      this.reportError(e);
      const warning = attemptsWarning(e);
      this.notice = warning ? { code: e.code, attemptsWarning: warning } : { code: e.code };
      this.transition("sign-in-required", {
        reason: e.code,
        // The extension stands for a wrong PIN, and for an answer lost after the PIN went out
        // (sign-in-interrupted: the user presses # again; the phone never re-sends it alone).
        ui: e.code === "invalid-pin" || e.code === "sign-in-interrupted" ? "pin" : "extension",
      });
      return;
    }
    if (gen !== this.gen) return;
    this.pin = "";
    this.attempts["sign-in"] = 0;
    this.uri = result.uri;
    this.transition("provisioned", { fields: { uri: result.uri } });
    this.transition("registering");
    this.startRegistration();
  }

  private startRegistration(): void {
    const d = this.discovery;
    if (!d) throw new Error("registration started before discovery");
    void this.stopRegistration().catch(this.logFailure("stopRegistration"));
    const reg: { token: number; handle?: RegistrationHandle } = { token: ++this.regToken };
    this.registration = reg;
    // A line lost always reaches the desk (also while stop() runs: its calls end); a new one only
    // while this registration is the phone's.
    const onLine = (e: LineEvent) => {
      if (e.type === "line-lost" || (this.registration === reg && this.running)) this.desk.onLine(e);
    };
    try {
      const handle = this.services.register(
        d,
        (s) => {
          if (this.registration === reg && this.running) this.onRegistrationStatus(s);
        },
        onLine,
      );
      if (this.registration === reg) reg.handle = handle;
      else
        void handle.stop().catch((err) => this.log.warn("stop failed", { code: asHandsetError(err).code }));
    } catch (err) {
      if (this.registration === reg) this.registration = undefined;
      this.stepFailed(this.gen, "register", err);
    }
  }

  private async stopRegistration(): Promise<void> {
    const reg = this.registration;
    this.registration = undefined;
    if (!reg?.handle) return;
    try {
      await reg.handle.stop();
    } catch (err) {
      this.log.warn("registration stop failed", { code: asHandsetError(err).code });
    }
  }

  private onRegistrationStatus(s: RegistrationStatus): void {
    switch (s.state) {
      case "registering":
      case "registered":
      case "limited": {
        if (s.state !== "registering") this.attempts.register = 0;
        if (s.state === this.current && s.registrar === this.registrar && s.primary === this.primary) return;
        this.registrar = s.registrar;
        this.primary = s.primary;
        const info: TransitionInfo = {};
        if (s.registrar !== undefined) info.registrar = s.registrar;
        if (s.primary !== undefined) info.primary = s.primary;
        this.transition(s.state, info);
        return;
      }
      case "failed": {
        const error = s.error ?? { code: DEFAULT_CODE.register, message: "registration failed" };
        if (s.retryInMs === undefined) {
          void this.stopRegistration().catch(this.logFailure("stopRegistration"));
          this.stepFailed(this.gen, "register", new HandsetError(error.code, error.message));
          return;
        }
        this.reportError(error);
        this.failure = { code: error.code, step: "register", retryAt: this.clock.monotonic() + s.retryInMs };
        this.transition("failed", { reason: error.code, retryInMs: s.retryInMs });
        return;
      }
      case "sign-in-required": {
        // The certificate was revoked or refused: PIN again, for the extension we know.
        void this.stopRegistration().catch(this.logFailure("stopRegistration"));
        if (s.error) this.reportError(s.error);
        this.extension ||= digitsOnly(userPart(this.uri));
        this.pin = "";
        this.notice = { code: "sign-in-required" };
        this.transition("sign-in-required", {
          reason: s.error?.code ?? "sign-in-required",
          ui: this.extension ? "pin" : "extension",
        });
        return;
      }
    }
  }

  /** Any automatic step failed: report, go to `failed`, retry after backoff + jitter. */
  private stepFailed(gen: number, step: RetryStep, err: unknown): void {
    if (gen !== this.gen || !this.running) return;
    const e = asHandsetError(err, DEFAULT_CODE[step]);
    this.reportError(e);
    const retryInMs = backoffDelay(this.attempts[step]++, this.random, this.backoff);
    this.failure = { code: e.code, step, retryAt: this.clock.monotonic() + retryInMs };
    this.transition("failed", { reason: e.code, retryInMs, fields: { step } });
    this.retryTimer = this.clock.setTimer(retryInMs, () => this.retry());
  }

  private retry(): void {
    const f = this.failure;
    if (this.current !== "failed" || !f || !this.running) return;
    this.log.info("retry", { step: f.step, reason: f.code });
    switch (f.step) {
      case "discover":
      case "clock":
        this.transition("discovering");
        void this.discoverAndSetClock(this.gen, f.step === "discover").catch(
          this.logFailure("discoverAndSetClock"),
        );
        return;
      case "sign-in":
        if (CLOCK_SIGN_IN.has(f.code)) {
          this.transition("discovering");
          void this.discoverAndSetClock(this.gen, false).catch(this.logFailure("discoverAndSetClock"));
        } else {
          this.transition("signing-in");
          void this.runSignIn(this.gen).catch(this.logFailure("runSignIn"));
        }
        return;
      case "register":
        this.transition("registering");
        this.startRegistration();
        return;
    }
  }

  private async signOut(): Promise<void> {
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.setUi("signing-out");
    await this.stopRegistration();
    try {
      await this.services.signOut();
    } catch (err) {
      this.reportError(asHandsetError(err, "sign-out-failed"));
    }
    if (!this.running) return;
    this.forgetUser();
    this.transition("sign-in-required", { reason: "signed-out", ui: "extension" });
  }

  /**
   * The missed calls kept in flash before a restart. Saves wait for this load, so a call missed
   * while it runs is merged with the old list instead of overwriting it.
   */
  private restoreMissed(): void {
    const store = this.services.missedCalls;
    if (!store) return;
    this.missedIo = store
      .load()
      .then((r) => {
        if (!r || !this.running) return;
        this.desk.restoreMissed(r.missed, r.unseen);
        this.refresh();
      })
      .catch((err: unknown) =>
        this.log.warn("missed calls not restored", { code: asHandsetError(err).code }),
      );
  }

  /** Writes the missed-calls list as it is now (after any earlier write). */
  private saveMissed(): void {
    const store = this.services.missedCalls;
    if (!store) return;
    this.missedIo = this.missedIo
      .then(() => store.save({ v: 1, missed: [...this.desk.missed], unseen: this.desk.unseenMissed }))
      .catch((err: unknown) => this.log.warn("missed calls not saved", { code: asHandsetError(err).code }));
  }

  /** Sign-out and factory reset: nothing of the last user stays on the screens (or in flash). */
  private forgetUser(): void {
    if (this.desk.missed.length > 0) {
      this.desk.clearMissed();
      this.saveMissed();
    }
    this.extension = "";
    this.pin = "";
    this.displayName = undefined;
    this.uri = undefined;
    this.registrar = undefined;
    this.primary = undefined;
    this.notice = undefined;
  }

  /**
   * Factory reset (menu, confirmed): registration stops, flash is wiped to factory state (new
   * device ids, no certificate, no cached servers), and the phone starts again from discovery,
   * as after a power-on. A failing wipe is reported and the phone still starts again.
   */
  private async factoryReset(): Promise<void> {
    this.gen++; // drop whatever step was in flight
    this.retryTimer?.cancel();
    this.retryTimer = undefined;
    this.setUi("resetting");
    await this.stopRegistration();
    try {
      await this.services.factoryReset();
    } catch (err) {
      this.reportError(asHandsetError(err, "factory-reset-failed"));
    }
    if (!this.running) return;
    this.log.info("factory reset");
    this.discovery = undefined;
    this.forgetUser();
    this.info = undefined;
    for (const k of Object.keys(this.attempts) as RetryStep[]) this.attempts[k] = 0;
    this.transition("discovering", { reason: "factory-reset", ui: "none" });
    void this.discoverAndSetClock(this.gen, true).catch(this.logFailure("discoverAndSetClock"));
  }

  // ── keys ─────────────────────────────────────────────────────────────────────────────────

  private onKey(event: KeyEvent): void {
    if (!this.running) return;
    const cmd = commandFor(this.current, this.ui, event);
    if (cmd) this.execute(cmd);
  }

  private execute(cmd: Command): void {
    const form = this.ui === "extension" || this.ui === "pin";
    switch (cmd.kind) {
      case "digit":
      case "backspace":
      case "clear": {
        const edit = (v: string, max: number): string =>
          cmd.kind === "digit"
            ? appendDigit(v, cmd.digit, max)
            : cmd.kind === "backspace"
              ? backspace(v)
              : "";
        if (this.ui === "extension") this.extension = edit(this.extension, EXTENSION_MAX);
        else if (this.ui === "pin") this.pin = edit(this.pin, PIN_MAX);
        else if (this.ui === "dial" || this.ui === "transfer") {
          this.dialText = edit(this.dialText, DIAL_MAX);
          this.armDialTimer();
        }
        this.notice = undefined;
        this.refresh();
        return;
      }
      case "rubout":
        if (this.ui === "dial" || this.ui === "transfer") {
          if (this.dialText) {
            this.dialText = backspace(this.dialText);
            this.armDialTimer();
            this.refresh();
          } else if (this.ui === "dial") this.closeCallScreen();
          else this.setUi("in-call");
          return;
        }
        if (this.ui !== "pin") return;
        if (!this.pin) {
          this.notice = undefined;
          this.setUi("extension");
          return;
        }
        this.pin = backspace(this.pin);
        this.notice = undefined;
        this.refresh();
        return;
      case "next":
        if (this.ui !== "extension" || !this.extension) return;
        this.pin = "";
        this.notice = undefined;
        this.setUi("pin");
        return;
      case "back":
        if (!form) return;
        this.pin = "";
        this.notice = undefined;
        this.setUi("extension");
        return;
      case "confirm":
        if (this.ui !== "pin" || !this.pin || !this.extension) return;
        this.notice = undefined;
        this.transition("signing-in", { ui: "none" });
        void this.runSignIn(this.gen).catch(this.logFailure("runSignIn"));
        return;
      case "open-menu":
        // A PIN is never kept while the phone shows something else.
        if (form) this.pin = "";
        this.menuIndex = 0;
        this.setUi("menu");
        return;
      case "close-menu":
        this.setUi(this.current === "sign-in-required" ? "extension" : "none");
        return;
      case "menu-back":
        this.setUi("menu");
        return;
      case "up":
      case "down": {
        const step = cmd.kind === "up" ? -1 : 1;
        if (this.ui === "missed") {
          const n = this.desk.missed.length;
          if (n > 0) this.missedIndex = Math.min(n - 1, Math.max(0, this.missedIndex + step));
        } else if (this.ui === "menu") {
          const n = menuItems(this.current).length;
          this.menuIndex = (this.menuIndex + step + n) % n;
        } else if (this.ui === "network-info" && this.info) {
          const pages = infoPages(this.info, this.display.cols).length;
          this.infoPage = Math.min(pages - 1, Math.max(0, this.infoPage + step));
        }
        this.refresh();
        return;
      }
      case "pick":
        if (cmd.index >= menuItems(this.current).length) return;
        this.menuIndex = cmd.index;
        this.openMenuItem();
        return;
      case "select":
        this.openMenuItem();
        return;
      case "yes":
        if (this.ui === "confirm-reset") void this.factoryReset().catch(this.logFailure("factoryReset"));
        else if (this.ui === "confirm-sign-out") void this.signOut().catch(this.logFailure("signOut"));
        return;
      case "no":
        this.setUi("menu");
        return;
      case "retry-now":
        this.retry();
        return;
      default:
        this.executeCall(cmd);
    }
  }

  // ── calls ────────────────────────────────────────────────────────────────────────────────

  private executeCall(cmd: Command): void {
    const desk = this.desk;
    switch (cmd.kind) {
      case "open-dial":
        if (!desk.canCall) return;
        this.ended = undefined;
        this.endedTimer?.cancel();
        this.dialText = cmd.digit ?? "";
        this.setUi("dial");
        this.armDialTimer();
        return;
      case "place-call":
        if (!this.dialText) {
          this.redial();
          return;
        }
        this.placeCall(this.dialText);
        return;
      case "redial":
        this.redial();
        return;
      case "open-missed":
        if (desk.unseenMissed > 0) {
          desk.markMissedSeen();
          this.saveMissed();
        }
        this.missedIndex = 0;
        this.ended = undefined;
        this.setUi("missed");
        return;
      case "call-back": {
        const m = desk.missed[this.missedIndex];
        if (!m?.uri) return;
        this.startCall(() => desk.dial({ uri: m.uri, label: m.number }));
        return;
      }
      case "answer":
        desk.answer();
        return;
      case "reject":
        desk.reject(603);
        return;
      case "hang-up":
        desk.hangUp();
        return;
      case "toggle-hold":
        desk.toggleHold();
        return;
      case "toggle-mute":
        desk.toggleMute();
        return;
      case "dtmf":
        desk.sendDigit(cmd.digit);
        return;
      case "open-transfer": {
        const c = desk.view();
        // Not while we are being transferred ourselves: that call is not ours to pass on yet.
        if (c?.phase !== "connected" || c.transferringTo !== undefined) return;
        this.dialText = "";
        this.setUi("transfer");
        return;
      }
      case "transfer": {
        const aor = desk.aor ?? this.uri;
        if (!this.dialText || !aor) return;
        const target = { uri: dialUri(this.dialText, aor), label: this.dialText };
        this.dialText = "";
        this.setUi("in-call");
        desk.transfer(target);
        return;
      }
      case "close-call-screen":
        this.closeCallScreen();
        return;
      default:
        return;
    }
  }

  private onHook(offHook: boolean): void {
    if (!this.running) return;
    this.log.debug("hook", { offHook });
    const cmd = hookCommand(this.current, this.ui, offHook);
    if (cmd) this.execute(cmd);
  }

  private placeCall(digits: string): void {
    const aor = this.desk.aor;
    if (!aor) return;
    this.startCall(() => this.desk.dial({ uri: dialUri(digits, aor), label: digits }));
  }

  private redial(): void {
    const last = this.desk.lastDialled;
    if (last) this.startCall(() => this.desk.dial(last));
  }

  /** Leaves the dial screen (or idle) for the call's screen, which the desk's events then keep. */
  private startCall(dial: () => boolean): void {
    if (!this.desk.canCall) return;
    this.dialTimer?.cancel();
    this.dialTimer = undefined;
    this.ended = undefined;
    this.endedTimer?.cancel();
    this.dialText = "";
    if (!dial()) this.refresh();
  }

  private closeCallScreen(): void {
    this.dialTimer?.cancel();
    this.dialTimer = undefined;
    this.endedTimer?.cancel();
    this.endedTimer = undefined;
    this.dialText = "";
    this.ended = undefined;
    this.setUi("none");
  }

  /** The dial screen's own "send" after a pause in typing (a VVX's digit-map timeout). */
  private armDialTimer(): void {
    this.dialTimer?.cancel();
    this.dialTimer = undefined;
    if (this.ui !== "dial" || !this.dialText || this.dialTimeoutMs <= 0) return;
    this.dialTimer = this.clock.setTimer(this.dialTimeoutMs, () => {
      this.dialTimer = undefined;
      if (this.running && this.ui === "dial" && this.dialText) this.placeCall(this.dialText);
    });
  }

  private clearCallTimers(): void {
    for (const t of [this.dialTimer, this.endedTimer, this.callTick]) t?.cancel();
    this.dialTimer = this.endedTimer = this.callTick = undefined;
  }

  private onDesk(e: DeskEvent): void {
    switch (e.type) {
      case "ring":
        this.indicators.messageWaiting.set(e.on ? "blink" : "off");
        this.ringer?.ring(e.on);
        this.events.emit({ event: "ring", on: e.on });
        return;
      case "incoming":
      case "changed":
        this.syncCallUi();
        return;
      case "transferred": {
        // The original call's end, for the log and the fleet; the screen stays with the new call.
        this.lastCallState = undefined;
        this.emitEnded(e.end);
        return;
      }
      case "ended": {
        const end = e.end;
        this.ended = end;
        this.lastCallState = undefined;
        this.emitEnded(end);
        this.dialText = "";
        this.dialTimer?.cancel();
        this.endedTimer?.cancel();
        if (uiAllowed(this.current, "call-ended")) {
          this.setUi("call-ended");
          this.endedTimer = this.clock.setTimer(this.endedScreenMs, () => {
            this.endedTimer = undefined;
            this.ended = undefined;
            if (this.running && this.ui === "call-ended") this.setUi("none");
          });
        } else this.refresh();
        return;
      }
      case "missed":
        this.saveMissed();
        this.events.emit({
          event: "call",
          state: "missed",
          direction: "incoming",
          remote: e.missed.number,
          ...(e.missed.busy ? { reason: "busy" } : {}),
        });
        this.refresh();
        return;
      case "lines":
        this.refresh();
        return;
    }
  }

  /** The call's screen follows its phase; the transfer screen stays while the call is connected. */
  /** A call's end as the phone's event: the log, the fleet's call.ended. */
  private emitEnded(end: CallEnd): void {
    this.events.emit({
      event: "call",
      state: "ended",
      direction: end.direction,
      remote: end.number,
      reason: end.reason,
      ...(end.status !== undefined ? { status: end.status } : {}),
      durationMs: end.durationMs,
    });
  }

  private syncCallUi(): void {
    const c = this.desk.view();
    if (!c) return;
    const ui: UiMode =
      c.phase === "connected"
        ? this.ui === "transfer"
          ? "transfer"
          : "in-call"
        : c.phase === "incoming"
          ? "incoming"
          : "outgoing";
    const state =
      c.transferringTo !== undefined
        ? "transferring"
        : c.phase === "connected" && (c.held || c.heldByPeer)
          ? "held"
          : c.phase;
    // The remote is part of the key: a transfer's call follows the original one in the same state.
    const key = `${state} ${c.number}`;
    if (key !== this.lastCallState) {
      this.lastCallState = key;
      this.events.emit({
        event: "call",
        state,
        direction: c.direction,
        remote: c.number,
        ...(c.transferringTo !== undefined ? { to: c.transferringTo } : {}),
      });
    }
    if (ui !== this.ui) {
      if (this.ui === "dial") {
        this.dialTimer?.cancel();
        this.dialTimer = undefined;
      }
      if (ui !== "transfer") this.dialText = "";
      this.ended = undefined;
      this.endedTimer?.cancel();
      this.setUi(ui);
    } else this.refresh();
  }

  private callBusyNow(): boolean {
    return this.desk.busy || this.ui === "dial" || this.ui === "transfer";
  }

  private openMenuItem(): void {
    const item = menuItems(this.current)[this.menuIndex];
    if (item === "About") this.setUi("about");
    else if (item === "Sign out") this.setUi("confirm-sign-out");
    else if (item === "Factory reset") this.setUi("confirm-reset");
    else if (item === "Network info") void this.loadNetworkInfo().catch(this.logFailure("loadNetworkInfo"));
  }

  private async loadNetworkInfo(): Promise<void> {
    this.info = undefined;
    this.infoPage = 0;
    this.setUi("network-info");
    let info: Array<[string, string]>;
    try {
      info = await this.services.networkInfo();
    } catch (err) {
      info = [["Error", asHandsetError(err).code]];
    }
    if (this.ui !== "network-info") return;
    this.info = info;
    this.refresh();
  }

  // ── output ───────────────────────────────────────────────────────────────────────────────

  private setUi(ui: UiMode): void {
    if (!uiAllowed(this.current, ui)) return;
    this.ui = ui;
    this.refresh();
  }

  private refresh(): void {
    const frame = render(this.view(), { cols: this.display.cols, rows: this.display.rows });
    const text = frame.lines.join("\n");
    this.syncCountdown();
    this.syncCallTick();
    const busy = this.callBusyNow();
    if (this.callBusy && !busy) this.events.emit({ event: "call", state: "idle" });
    this.callBusy = busy;
    if (text === this.lastFrame) return;
    this.lastFrame = text;
    this.display.show(frame);
    this.events.emit({ event: "display", lines: [...frame.lines] });
  }

  /**
   * While the failed screen shows "Retry in Ns", one timer re-renders it when the shown second
   * changes; no timer runs while anything else shows.
   */
  private syncCountdown(): void {
    const retryAt = this.failure?.retryAt;
    const showing = this.running && this.current === "failed" && this.ui === "none" && retryAt !== undefined;
    if (!showing) {
      this.countdownTimer?.cancel();
      this.countdownTimer = undefined;
      return;
    }
    if (this.countdownTimer) return;
    const left = retryAt - this.clock.monotonic();
    if (left <= 0) return;
    // The screen shows ceil(left / 1 s): the next change is when `left` crosses a whole second.
    const inMs = ((left - 1) % 1000) + 1;
    this.countdownTimer = this.clock.setTimer(inMs, () => {
      this.countdownTimer = undefined;
      this.refresh();
    });
  }

  /** While the in-call screen shows a connected call, one timer re-renders it each second of the call. */
  private syncCallTick(): void {
    const c =
      this.running && (this.ui === "in-call" || this.ui === "transfer") ? this.desk.view() : undefined;
    if (c?.phase !== "connected") {
      this.callTick?.cancel();
      this.callTick = undefined;
      return;
    }
    if (this.callTick) return;
    const inMs = 1000 - ((c.connectedMs ?? 0) % 1000);
    this.callTick = this.clock.setTimer(inMs, () => {
      this.callTick = undefined;
      this.refresh();
    });
  }

  private applyLeds(): void {
    const s = this.current;
    const led: IndicatorState =
      s === "registered"
        ? "on"
        : s === "limited"
          ? "wink"
          : s === "registering" || s === "failed"
            ? "blink"
            : "off";
    if (led === this.statusLed) return;
    this.statusLed = led;
    this.indicators.status.set(led);
  }

  /** Re-renders on every minute boundary of the wall clock, so the idle time line moves. */
  private scheduleMinuteTick(): void {
    const ms = 60_000 - (((this.clock.now() % 60_000) + 60_000) % 60_000);
    this.minuteTimer = this.clock.setTimer(ms, () => {
      if (!this.running) return;
      this.refresh();
      this.scheduleMinuteTick();
    });
  }

  private reportError(e: { code: string; message: string }): void {
    this.log.warn("error", { code: e.code, message: e.message });
    this.events.emit({ event: "error", code: e.code, message: e.message });
  }
}

/** The server's words about attempts left: a provisioning error's `attemptsWarning`, or its message. */
function attemptsWarning(e: HandsetError): string | undefined {
  const field = (e as { attemptsWarning?: unknown }).attemptsWarning;
  if (typeof field === "string" && field) return field;
  return /attempt|tries|remaining/i.test(e.message) ? e.message : undefined;
}

function userPart(uri: string | undefined): string {
  return /^sips?:([^@;]+)@/i.exec(uri ?? "")?.[1] ?? "";
}

function digitsOnly(text: string): string {
  return /^\+?\d+$/.test(text) ? text.replace("+", "") : "";
}
