/**
 * Shared pieces for the outage scenarios: the lab, a signed-in store, the phone's real services
 * (discovery, sign-in, registrar policy, certificate lifecycle) on a fake clock, and helpers to
 * let simulated time pass while real sockets do their work.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../../firmware/commands/identity.ts";
import { createPhoneServices } from "../../firmware/commands/phone-services.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { ClockService } from "../../firmware/discovery/clock-service.ts";
import type { DiscoveryResult, PhoneServices, RegistrationStatus } from "../../firmware/phone/services.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow, FlowConnector } from "../../firmware/sip/flow.ts";
import { header, response, type SipMessage } from "../../firmware/sip/message/message.ts";
import { type Lab, phoneNetwork } from "../lab/lab.ts";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Wraps the real SIP/TLS connector to know when a request is still on the wire: a request counts
 * from its send until its final response; a 401 keeps its flow busy until the phone's next
 * request (the tunnelled handshake computes in between). The clock must not move meanwhile.
 */
function wireWatch(ca: string[]): { connect: FlowConnector; busy: () => boolean } {
  const connectReal = tlsFlowConnector({ ca });
  const open = new Set<{ outstanding: Set<string>; continuing: number; pings: number }>();
  const branch = (m: SipMessage) => /branch=([^;,\s]+)/.exec(header(m, "Via") ?? "")?.[1] ?? "";
  return {
    busy: () => [...open].some((f) => f.outstanding.size > 0 || f.pings > 0 || f.continuing > Date.now()),
    connect: async (target) => {
      const flow = await connectReal(target);
      const state = { outstanding: new Set<string>(), continuing: 0, pings: 0 };
      open.add(state);
      const ping = flow.sendPing.bind(flow);
      flow.sendPing = () => {
        state.pings++;
        ping();
      };
      flow.onPong(() => {
        state.pings = Math.max(0, state.pings - 1);
      });
      const send = flow.send.bind(flow);
      flow.send = (m) => {
        if (m.kind === "request") {
          state.outstanding.add(branch(m));
          state.continuing = 0;
        }
        send(m);
      };
      flow.onMessage((m) => {
        if (m.kind !== "response" || m.status < 200) return;
        state.outstanding.delete(branch(m));
        if (m.status === 401 || m.status === 407) state.continuing = Date.now() + 2_000;
      });
      flow.onClose(() => open.delete(state));
      return flow;
    },
  };
}

export interface Rig {
  clock: ManualClock;
  services: PhoneServices;
  statuses: Array<RegistrationStatus & { at: number }>;
  logs: LogRecord[];
  discovery: DiscoveryResult;
  handle?: { stop(): Promise<void> };
  /** True while a request of the phone's is on the wire or a handshake is mid-way. */
  busy: () => boolean;
}

export async function signedInStore(lab: Lab): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "handset-scenario-"));
  const rig = await makeRig(lab, dir);
  await rig.services.signIn({
    extension: "4711",
    pin: "1234",
    ...(rig.discovery.certProvUrl ? { certProvUrl: rig.discovery.certProvUrl } : {}),
  });
  return dir;
}

export async function makeRig(
  lab: Lab,
  storeDir: string,
  over: {
    failbackProbeMs?: number;
    /** Wraps the phone's SIP/TLS connector (e.g. to make one registrar refuse REGISTER). */
    wrapConnect?: (connect: FlowConnector) => FlowConnector;
  } = {},
): Promise<Rig> {
  const clock = new ManualClock(Date.now());
  const logs: LogRecord[] = [];
  const random = new CryptoRandom();
  const watch = wireWatch([lab.ca.cert]);
  const services = createPhoneServices({
    connect: over.wrapConnect ? over.wrapConnect(watch.connect) : watch.connect,
    config: {
      ...phoneNetwork(lab.ready),
      failbackProbeMs: over.failbackProbeMs ?? 60_000,
      dhcpTimeoutMs: 4_000,
    },
    store: openStore(storeDir, random),
    trustedRoots: [lab.ca.cert],
    clock: new ClockService({ base: clock }),
    random,
    logger: createLogger((r) => logs.push(r)),
  });
  const discovery = await services.discover();
  return { clock, services, statuses: [], logs, discovery, busy: watch.busy };
}

export function register(rig: Rig): void {
  rig.handle = rig.services.register(rig.discovery, (s) =>
    rig.statuses.push({ ...s, at: rig.clock.monotonic() }),
  );
}

/** Waits (real time) for a status matching `pred` among those after index `from`. */
export async function waitStatus(
  rig: Rig,
  pred: (s: RegistrationStatus) => boolean,
  from = 0,
  timeoutMs = 15_000,
): Promise<RegistrationStatus & { at: number }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const hit = rig.statuses.slice(from).find(pred);
    if (hit) return hit;
    if (Date.now() > deadline)
      throw new Error(
        `no matching status; saw ${JSON.stringify(rig.statuses.slice(from).map((s) => s.state))}`,
      );
    await sleep(5);
  }
}

/**
 * Waits until real I/O has settled: nothing new at the lab's registrars and no new status for a
 * few polls. Simulated time must not run ahead of a request that is still on the wire.
 */
export async function settle(lab: Lab, rig: Rig): Promise<void> {
  const snapshot = () =>
    JSON.stringify([
      lab.sba.stats,
      lab.pool.stats,
      lab.wan.stats.bytesToBranch,
      lab.wan.stats.bytesToCentre,
      rig.statuses.length,
    ]);
  await idle(rig);
  let last = snapshot();
  let quiet = 0;
  for (let i = 0; i < 2000 && quiet < 2; i++) {
    await sleep(3);
    const now = snapshot();
    quiet = now === last ? quiet + 1 : 0;
    last = now;
  }
}

/**
 * Spins the event loop until none of the phone's requests or pings is on the wire, for at most
 * half a second of real time: on loopback an exchange that takes longer has been swallowed (a
 * blackholed link), and simulated time must then move on for the phone to notice.
 */
async function idle(rig: Rig): Promise<void> {
  const deadline = Date.now() + 500;
  while (rig.busy() && Date.now() < deadline) await new Promise((r) => setImmediate(r));
}

/**
 * Lets `ms` of simulated time pass. Time stops at every timer's deadline, and whatever that
 * timer put on the wire is answered before time moves on, as it would be on the wall. With
 * `thorough`, every step also waits for the lab to fall quiet (traffic the wire watch does not
 * see, such as HTTPS to the web services).
 */
export async function pass(
  lab: Lab,
  rig: Rig,
  ms: number,
  stepMs = 5_000,
  opts: { thorough?: boolean } = {},
): Promise<void> {
  let remaining = ms;
  while (remaining > 0) {
    const next = rig.clock.nextTimerIn() ?? Number.POSITIVE_INFINITY;
    const d = Math.min(remaining, stepMs, next);
    rig.clock.advance(d);
    remaining -= d;
    if (opts.thorough) await settle(lab, rig);
    else await idle(rig);
  }
  await settle(lab, rig);
}

export const isUp = (s: RegistrationStatus) => s.state === "registered" || s.state === "limited";

/** While `refusing()`, every REGISTER on a flow to `target` is answered 503 locally (TLS is real). */
export function refuseRegister(target: () => string, refusing: () => boolean, seen: { refused: number }) {
  return (connect: FlowConnector): FlowConnector =>
    async (t) => {
      const flow = await connect(t);
      if (`${t.host}:${t.port}` !== target()) return flow;
      const listeners: Array<(m: SipMessage) => void> = [];
      const wrapped: Flow = {
        get remote() {
          return flow.remote;
        },
        local: flow.local,
        peerCertificatePem: flow.peerCertificatePem,
        sendPing: () => flow.sendPing(),
        close: () => flow.close(),
        onPong: (l) => flow.onPong(l),
        onClose: (l) => flow.onClose(l),
        onMessage: (l) => {
          listeners.push(l);
          flow.onMessage(l);
        },
        send: (m) => {
          if (m.kind !== "request" || m.method !== "REGISTER" || !refusing()) return flow.send(m);
          seen.refused++;
          const copy = (n: string) => m.headers.filter((h) => h.name.toLowerCase() === n.toLowerCase());
          const r = response(503, "Service Unavailable", [
            ...copy("Via").map((h): [string, string] => ["Via", h.value]),
            ["From", header(m, "From") ?? ""],
            ["To", `${header(m, "To") ?? ""};tag=refusing`],
            ["Call-ID", header(m, "Call-ID") ?? ""],
            ["CSeq", header(m, "CSeq") ?? ""],
            ["Content-Length", "0"],
          ]);
          setImmediate(() => {
            for (const l of listeners) l(r);
          });
        },
      };
      return wrapped;
    };
}
