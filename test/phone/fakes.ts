/** Fakes for phone tests: a board made of arrays and PhoneServices driven by scripted results. */

import { afterEach } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { DisplayFrame, DisplaySink } from "../../firmware/hal/display.ts";
import type { HookSwitch, Indicator, IndicatorState, Indicators } from "../../firmware/hal/indicators.ts";
import type { Key, KeyEvent, KeySource } from "../../firmware/hal/keys.ts";
import type { MissedCallStore } from "../../firmware/phone/missed-store.ts";
import { Phone, type PhoneEvent } from "../../firmware/phone/phone.ts";
import type {
  DiscoveryResult,
  Identity,
  PhoneServices,
  RegistrationStatus,
  SignInRequest,
} from "../../firmware/phone/services.ts";

export class FakeKeys implements KeySource {
  private readonly listeners = new Set<(e: KeyEvent) => void>();
  onKey(listener: (e: KeyEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
  press(key: Key, kind: KeyEvent["kind"] = "press"): void {
    for (const l of [...this.listeners]) l({ key, kind });
  }
  /** Types every character of `text` ("4711#1234#"). */
  type(text: string): void {
    for (const ch of text) this.press(ch as Key);
  }
}

export class FakeDisplay implements DisplaySink {
  readonly frames: DisplayFrame[] = [];
  backlight = false;
  constructor(
    readonly cols = 20,
    readonly rows = 4,
  ) {}
  show(frame: DisplayFrame): void {
    this.frames.push(frame);
  }
  setBacklight(on: boolean): void {
    this.backlight = on;
  }
  /** The last frame with trailing blanks trimmed, for readable inline expectations. */
  get text(): string[] {
    return text(this.frames.at(-1));
  }
}

export function text(frame: DisplayFrame | undefined): string[] {
  return (frame?.lines ?? []).map((l) => l.trimEnd());
}

class FakeLed implements Indicator {
  readonly history: IndicatorState[] = [];
  set(state: IndicatorState): void {
    this.history.push(state);
  }
  get state(): IndicatorState | undefined {
    return this.history.at(-1);
  }
}

export class FakeIndicators implements Indicators {
  readonly status = new FakeLed();
  readonly messageWaiting = new FakeLed();
}

export class FakeHook implements HookSwitch {
  offHook = false;
  onChange(): () => void {
    return () => {};
  }
}

export const DISCOVERY: DiscoveryResult = {
  certProvUrl: "https://pool.lab.test/CertProv/CertProvisioningService.svc",
  registrars: [{ host: "sba.lab.test", port: 5061, source: "dhcp-120" }],
  ntpServers: ["ntp.lab.test"],
};

type Script<T> = Array<T | HandsetError>;

export interface FakeRegistration {
  d: DiscoveryResult;
  report(s: RegistrationStatus): void;
  stopped: boolean;
}

/** PhoneServices whose answers are queued by the test; an empty queue gives the default answer. */
export class FakeServices implements PhoneServices {
  readonly version = "0.1.0";
  readonly calls: string[] = [];
  discoverScript: Script<DiscoveryResult> = [];
  clockScript: Script<{ offsetMs: number; source: string }> = [];
  identityResult: Identity = { hasCredential: false };
  signInScript: Script<{ uri: string }> = [];
  readonly signInCalls: SignInRequest[] = [];
  readonly registrations: FakeRegistration[] = [];
  signOuts = 0;
  resets = 0;
  /** The missed-calls list's flash (missed-store.ts); absent unless a test gives one. */
  missedCalls: MissedCallStore | undefined;
  reprovisionScript: Script<{ notAfter: number }> = [];
  info: Array<[string, string]> = [
    ["IP", "10.0.0.5"],
    ["Gateway", "10.0.0.1"],
    ["Registrar", "sba.lab.test:5061"],
  ];

  private next<T>(script: Script<T>, fallback: T): Promise<T> {
    const v = script.length ? script.shift() : fallback;
    return v instanceof HandsetError ? Promise.reject(v) : Promise.resolve(v as T);
  }

  discover(): Promise<DiscoveryResult> {
    this.calls.push("discover");
    return this.next(this.discoverScript, DISCOVERY);
  }
  setClock(): Promise<{ offsetMs: number; source: string }> {
    this.calls.push("setClock");
    return this.next(this.clockScript, { offsetMs: 12, source: "ntp.lab.test" });
  }
  identity(): Promise<Identity> {
    this.calls.push("identity");
    return Promise.resolve(this.identityResult);
  }
  signIn(o: SignInRequest): Promise<{ uri: string }> {
    this.calls.push("signIn");
    this.signInCalls.push(o);
    return this.next(this.signInScript, { uri: `sip:${o.extension}@lab.test` });
  }
  register(d: DiscoveryResult, onStatus: (s: RegistrationStatus) => void): { stop(): Promise<void> } {
    this.calls.push("register");
    const reg: FakeRegistration = { d, report: onStatus, stopped: false };
    this.registrations.push(reg);
    return {
      stop: async () => {
        reg.stopped = true;
      },
    };
  }
  signOut(): Promise<void> {
    this.calls.push("signOut");
    this.signOuts++;
    return Promise.resolve();
  }
  reprovision(): Promise<{ notAfter: number }> {
    this.calls.push("reprovision");
    return this.next(this.reprovisionScript, { notAfter: Date.UTC(2026, 6, 1) });
  }
  factoryReset(): Promise<void> {
    this.calls.push("factoryReset");
    this.resets++;
    return Promise.resolve();
  }
  networkInfo(): Promise<Array<[string, string]>> {
    this.calls.push("networkInfo");
    return Promise.resolve(this.info);
  }
  get registration(): FakeRegistration {
    const r = this.registrations.at(-1);
    if (!r) throw new Error("register() was not called");
    return r;
  }
}

/** Lets every already-settled promise chain run to its end. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
}

export function rig(opts: { cols?: number; rows?: number; seed?: number } = {}) {
  const clock = new ManualClock();
  const keys = new FakeKeys();
  const display = new FakeDisplay(opts.cols, opts.rows);
  const indicators = new FakeIndicators();
  const services = new FakeServices();
  const logs: LogRecord[] = [];
  const events: PhoneEvent[] = [];
  const phone = new Phone({
    keys,
    display,
    indicators,
    hook: new FakeHook(),
    services,
    clock,
    random: new SeededRandom(opts.seed ?? 7),
    logger: createLogger((r) => logs.push(r)),
    options: { autoRetry: { baseMs: 1_000, capMs: 8_000 } },
  });
  phone.events.on((e) => events.push(e));
  const states = () => events.flatMap((e) => (e.event === "state" ? [e.state] : []));
  const frames = () =>
    events.flatMap((e) => (e.event === "display" ? [e.lines.map((l) => l.trimEnd())] : []));
  const lastState = () => {
    const s = events.filter((e) => e.event === "state").at(-1);
    if (s?.event !== "state") throw new Error("no state event");
    return s;
  };
  /** Boots to the extension screen. */
  const bootToSignIn = async () => {
    phone.start();
    await flush();
  };
  /** Boots, signs in with 4711/1234 and reports `registered` on the primary. */
  const bootToRegistered = async () => {
    await bootToSignIn();
    keys.type("4711#1234#");
    await flush();
    services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
  };
  return {
    clock,
    keys,
    display,
    indicators,
    services,
    logs,
    events,
    phone,
    states,
    frames,
    lastState,
    bootToSignIn,
    bootToRegistered,
  };
}

/**
 * For a test file of phone rigs: `const started = phoneRigs();` at the top level; every rig's
 * phone started in a test is stopped after it.
 */
export function phoneRigs(): (opts?: Parameters<typeof rig>[0]) => ReturnType<typeof rig> {
  const running: Array<ReturnType<typeof rig>> = [];
  afterEach(async () => {
    for (const r of running.splice(0)) await r.phone.stop();
  });
  return (opts) => {
    const r = rig(opts);
    running.push(r);
    return r;
  };
}

/** The soft-key lines of the extension and PIN forms on a 20-column display. */
export const EXT_KEYS = "Back Clear    #=Next";
export const PIN_KEYS = "Back Clear      #=OK";
