/**
 * A whole Phone on a simulated board, registered with a real lab registrar: the firmware's
 * Account (TLS-DSK over SIP/TLS on loopback) behind PhoneServices, so the phone gets its line from
 * the account and places and takes calls through the lab's call router. Discovery, SNTP and
 * sign-in are the scripted fakes (a user with a certificate in flash); media is call-rig's
 * FakeMedia unless the handset is given a port factory (call-dtmf.test.ts gives it the real one).
 */
import { X509Certificate } from "node:crypto";
import { createSimBoard, type SimBoard } from "../../board/sim/index.ts";
import { Account, type LineEvent } from "../../firmware/accounts/account.ts";
import { endpointForCert } from "../../firmware/commands/register.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { missedCallFile } from "../../firmware/phone/missed-store.ts";
import { Phone, type PhoneEvent } from "../../firmware/phone/phone.ts";
import type { DiscoveryResult, RegistrationStatus } from "../../firmware/phone/services.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { MediaPortFactory } from "../../firmware/sip/session/media-port.ts";
import type { Lab } from "../lab/lab.ts";
import type { LabUserCreds } from "../lab-calls/phones.ts";
import { FakeMedia } from "../sip/call-rig.ts";
import { MemoryFileSystem } from "../store/memory-file-system.ts";
import { FakeServices } from "./fakes.ts";

/** FakeServices whose register() runs the real registrar policy against the lab. */
export class LabServices extends FakeServices {
  /** The fake ports made (none when a real factory was given). */
  readonly ports: FakeMedia[] = [];
  account: Account | undefined;
  readonly media: MediaPortFactory;

  constructor(
    private readonly lab: Lab,
    private readonly user: LabUserCreds,
    private readonly registrar: string,
    private readonly serverName: string,
    media?: MediaPortFactory,
  ) {
    super();
    // The missed-calls list in a flash of its own (a MemoryFileSystem), as a phone keeps it.
    this.missedCalls = missedCallFile(new MemoryFileSystem(), "/store");
    this.media =
      media ??
      (() => {
        const p = new FakeMedia("127.0.0.1");
        this.ports.push(p);
        return p;
      });
    this.identityResult = { hasCredential: true, uri: user.aor };
  }

  override register(
    d: DiscoveryResult,
    onStatus: (s: RegistrationStatus) => void,
    onLine?: (e: LineEvent) => void,
  ): { stop(): Promise<void> } {
    this.calls.push("register");
    const clock = new SystemClock();
    const i = this.registrar.lastIndexOf(":");
    const notAfter = new Date(new X509Certificate(this.user.cert).validTo).getTime();
    const account = new Account(
      {
        clock,
        random: new CryptoRandom(),
        logger: createLogger(() => {}),
        connect: tlsFlowConnector({ ca: [this.lab.ca.cert], clock }),
        engineFactory: (e) => createTlsDskEngine({ ...e, clock }),
        endpoint: endpointForCert(this.user.aor, this.user.cert),
        credentials: () => ({ cert: this.user.cert, key: this.user.key, notAfter }),
        trustedRoots: [this.lab.ca.cert],
        innerTls: "auto",
      },
      [
        {
          host: this.registrar.slice(0, i),
          port: Number(this.registrar.slice(i + 1)),
          serverName: this.serverName,
          source: "static",
        },
      ],
    );
    this.account = account;
    const reg = { d, report: onStatus, stopped: false };
    this.registrations.push(reg);
    account.status.on((s) => {
      if (s.state === "stopped") return;
      onStatus({
        state: s.state,
        ...(s.registrar ? { registrar: s.registrar } : {}),
        ...(s.primary !== undefined ? { primary: s.primary } : {}),
        ...(s.error ? { error: s.error } : {}),
        ...(s.retryInMs !== undefined ? { retryInMs: s.retryInMs } : {}),
      });
    });
    if (onLine) account.lines.on(onLine);
    account.start();
    return {
      stop: async () => {
        reg.stopped = true;
        await account.stop({ unregister: true });
      },
    };
  }
}

export interface LabHandset {
  name: string;
  board: SimBoard;
  phone: Phone;
  services: LabServices;
  events: PhoneEvent[];
  logs: LogRecord[];
  /** The display now, trailing blanks trimmed. */
  screen(): string[];
  stop(): Promise<void>;
}

export async function labHandset(
  lab: Lab,
  user: LabUserCreds,
  name: string,
  where: { registrar: string; serverName: string } = {
    registrar: lab.ready.sba,
    serverName: lab.ready.names.sba,
  },
  o: { media?: MediaPortFactory } = {},
): Promise<LabHandset> {
  const clock = new SystemClock();
  const board = createSimBoard({ clock, name });
  const services = new LabServices(lab, user, where.registrar, where.serverName, o.media);
  const events: PhoneEvent[] = [];
  const logs: LogRecord[] = [];
  const phone = new Phone({
    keys: board.keys,
    display: board.display,
    indicators: board.indicators,
    hook: board.hook,
    services,
    clock,
    random: new CryptoRandom(),
    logger: createLogger((r) => logs.push(r)),
    options: { dialTimeoutMs: 0, endedScreenMs: 400 },
  });
  phone.events.on((e) => events.push(e));
  phone.start();
  const h: LabHandset = {
    name,
    board,
    phone,
    services,
    events,
    logs,
    screen: () => board.current.lines.map((l) => l.trimEnd()),
    stop: () => phone.stop(),
  };
  await until(h, () => phone.state === "registered" && phone.calls.canCall, "registered with a line", 20_000);
  return h;
}

/** Waits (real time) until `pred` holds; the error names the handset and shows its screen. */
export async function until(h: LabHandset, pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline)
      throw new Error(`${h.name}: timed out waiting for ${what}; screen: ${JSON.stringify(h.screen())}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Waits until the handset's display shows `text` somewhere. */
export function untilShows(h: LabHandset, text: string | RegExp, ms?: number): Promise<void> {
  const hit = () => h.screen().some((l) => (typeof text === "string" ? l.includes(text) : text.test(l)));
  return until(h, hit, `the screen to show ${String(text)}`, ms);
}

/** The call events a handset emitted, as their states. */
export function callStates(h: LabHandset): string[] {
  return h.events.flatMap((e) => (e.event === "call" ? [e.state] : []));
}
