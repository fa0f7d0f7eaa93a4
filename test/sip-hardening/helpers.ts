/**
 * Shared rig for the hardening tests: one lab (hq site), a Registration (or an Account) on a
 * ManualClock over real loopback TLS to a lab registrar, with the wire counted.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { endpointForCert } from "../../firmware/commands/register.ts";
import type { ManualClock } from "../../firmware/core/clock.ts";
import { type Logger, type LogLevel, silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import {
  Registration,
  type RegistrationEvent,
  type RegistrationOptions,
} from "../../firmware/sip/registration/registration.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import type { Lab } from "../lab/lab.ts";

export interface Wire {
  requests: string[];
  pings: number;
  closed: boolean;
}

export function countingFlow(inner: Flow, wire: Wire): Flow {
  return {
    remote: inner.remote,
    local: inner.local,
    peerCertificatePem: inner.peerCertificatePem,
    send: (m) => {
      if (m.kind === "request") wire.requests.push(m.method);
      inner.send(m);
    },
    sendPing: () => {
      wire.pings++;
      inner.sendPing();
    },
    close: () => inner.close(),
    onMessage: (l) => inner.onMessage(l),
    onPong: (l) => inner.onPong(l),
    onClose: (l) =>
      inner.onClose((r) => {
        wire.closed = true;
        l(r);
      }),
  };
}

/** A logger that records warnings (to check "logged once"). */
export function recordingLogger(): Logger & { lines: Array<{ level: LogLevel; message: string }> } {
  const lines: Array<{ level: LogLevel; message: string }> = [];
  const at =
    (level: LogLevel) =>
    (message: string): void => {
      lines.push({ level, message });
    };
  return {
    ...silentLogger,
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    lines,
  };
}

export function credentials(lab: Lab) {
  const cert = readFileSync(lab.ready.testClient.cert, "utf8");
  const key = readFileSync(lab.ready.testClient.key, "utf8");
  return {
    cert,
    key,
    notAfter: new Date(new X509Certificate(cert).validTo).getTime(),
    endpoint: endpointForCert(lab.ready.testClient.uri, cert),
  };
}

export async function rig(
  lab: Lab,
  clock: ManualClock,
  address: string,
  over: Partial<RegistrationOptions> = {},
): Promise<{ reg: Registration; core: UserAgentCore; wire: Wire; events: RegistrationEvent[] }> {
  const c = credentials(lab);
  const [host, port] = address.split(":");
  const inner = await tlsFlowConnector({ ca: [lab.ca.cert] })({ host: host!, port: Number(port) });
  const wire: Wire = { requests: [], pings: 0, closed: false };
  const random = new SeededRandom(9);
  const logger = over.logger ?? silentLogger;
  const core = new UserAgentCore(countingFlow(inner, wire), { clock, random, logger });
  const reg = new Registration({
    clock,
    random,
    logger,
    core,
    engineFactory: createTlsDskEngine,
    endpoint: c.endpoint,
    credentials: { cert: c.cert, key: c.key, notAfter: c.notAfter },
    trustedRoots: [lab.ca.cert],
    innerTls: "1.2",
    ...over,
  });
  const events: RegistrationEvent[] = [];
  reg.on((e) => events.push(e));
  return { reg, core, wire, events };
}

/** Resolves with the first event of `type`, or the first "failed". */
export function next(reg: Registration, type: RegistrationEvent["type"]): Promise<RegistrationEvent> {
  return new Promise((resolve) => {
    const off = reg.on((e) => {
      if (e.type === type || e.type === "failed") {
        off();
        resolve(e);
      }
    });
  });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Advances fake time in steps, letting real I/O run between them. */
export async function advance(clock: ManualClock, totalMs: number, stepMs = 1_000): Promise<void> {
  for (let t = 0; t < totalMs; t += stepMs) {
    clock.advance(Math.min(stepMs, totalMs - t));
    await sleep(5);
  }
}

export async function waitFor(cond: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await sleep(2);
  }
}
