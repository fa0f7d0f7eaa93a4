/**
 * Keep-alive, blackhole detection and registration-lost signals on a fake clock against the
 * real lab registrar over real sockets (pattern of test/integration/registration-timers.test.ts:
 * each clock advance stops before real I/O must happen, then the test lets the I/O happen).
 *
 * "Dark" is a wrapper Flow that, once switched, swallows everything both ways (what a cut WAN
 * link does to a TLS flow: no bytes, no RST, no FIN); the socket below stays open.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { endpointForCert } from "../../firmware/commands/register.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import { FlowLiveness, livenessTiming } from "../../firmware/sip/registration/flow-liveness.ts";
import {
  Registration,
  type RegistrationEvent,
  type RegistrationOptions,
} from "../../firmware/sip/registration/registration.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import { type Lab, startLab } from "../lab/lab.ts";

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ site: "hq", expires: 600 });
});
afterAll(async () => {
  await lab?.stop();
});

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

function next(reg: Registration, type: RegistrationEvent["type"]): Promise<RegistrationEvent> {
  return new Promise((resolve) => {
    const off = reg.on((e) => {
      if (e.type === type || e.type === "failed") {
        off();
        resolve(e);
      }
    });
  });
}

interface Wire {
  dark: boolean;
  /** Drop the server's pongs (a server that never answers CRLFCRLF, as Lync may). */
  dropPongs: boolean;
  pings: number;
  requests: string[];
}

/** A Flow that can go dark: sends and receives are swallowed both ways. */
function wrap(inner: Flow, wire: Wire): Flow {
  return {
    remote: inner.remote,
    local: inner.local,
    peerCertificatePem: inner.peerCertificatePem,
    send: (m) => {
      if (wire.dark) return;
      if (m.kind === "request") wire.requests.push(m.method);
      inner.send(m);
    },
    sendPing: () => {
      if (wire.dark) return;
      wire.pings++;
      inner.sendPing();
    },
    close: () => inner.close(),
    onMessage: (l) => inner.onMessage((m) => !wire.dark && l(m)),
    onPong: (l) => inner.onPong(() => !wire.dark && !wire.dropPongs && l()),
    onClose: (l) => inner.onClose(l),
  };
}

async function setup(
  clock: ManualClock,
  opts: Partial<RegistrationOptions> & { dropPongs?: boolean } = {},
): Promise<{ reg: Registration; core: UserAgentCore; wire: Wire; events: RegistrationEvent[] }> {
  const cert = readFileSync(lab.ready.testClient.cert, "utf8");
  const key = readFileSync(lab.ready.testClient.key, "utf8");
  const [host, port] = lab.pool.address.split(":");
  const inner = await tlsFlowConnector({ ca: [lab.ca.cert] })({ host: host!, port: Number(port) });
  const wire: Wire = { dark: false, dropPongs: opts.dropPongs ?? false, pings: 0, requests: [] };
  const random = new SeededRandom(11);
  const core = new UserAgentCore(wrap(inner, wire), { clock, random, logger: silentLogger });
  const { dropPongs: _ignored, ...rest } = opts;
  const reg = new Registration({
    clock,
    random,
    logger: silentLogger,
    core,
    engineFactory: createTlsDskEngine,
    endpoint: endpointForCert(lab.ready.testClient.uri, cert),
    credentials: { cert, key, notAfter: new Date(new X509Certificate(cert).validTo).getTime() },
    trustedRoots: [lab.ca.cert],
    innerTls: "1.2",
    ...rest,
  });
  const events: RegistrationEvent[] = [];
  reg.on((e) => events.push(e));
  return { reg, core, wire, events };
}

async function register(reg: Registration): Promise<RegistrationEvent> {
  const registered = next(reg, "registered");
  reg.start();
  const e = await registered;
  expect(e.type === "failed" ? e.error.message : "").toBe("");
  return e;
}

describe("keep-alive (ms-keep-alive)", () => {
  it("uses 60 s before the first 200, then the 200's timeout=, and pings only when idle", () => {
    const clock = new ManualClock();
    const activity = { lastSentAt: 0, lastReceivedAt: 0, received: 0, pongs: 0, lastWasPong: false };
    let pings = 0;
    const live = new FlowLiveness({
      clock,
      activity,
      probeIntervalMs: 0,
      probeTimeoutMs: 0,
      sendPing: () => {
        pings++;
        activity.lastSentAt = clock.monotonic();
      },
      probe: () => {},
      onDead: () => {},
    });
    live.start();
    clock.advance(59_999);
    expect(pings).toBe(0);
    clock.advance(1);
    expect(pings).toBe(1);
    live.setKeepAlive(300);
    clock.advance(200_000);
    activity.lastSentAt = clock.monotonic(); // other traffic at 260 s
    clock.advance(299_999);
    expect(pings).toBe(1);
    clock.advance(1);
    expect(pings).toBe(2);
    live.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it("sends CRLFCRLF after timeout= of idle sending, not while traffic flows; the lab pongs", async () => {
    const clock = new ManualClock(Date.now());
    lab.pool.keepAliveS = 120;
    const { reg, core, wire } = await setup(clock, { livenessTimeoutMs: 0 });
    try {
      expect(await register(reg)).toMatchObject({ keepAliveS: 120 });
      const pings = wire.pings;
      const labPings = lab.pool.stats.pings;
      clock.advance(119_999);
      expect(wire.pings).toBe(pings);
      clock.advance(1);
      expect(wire.pings).toBe(pings + 1);
      await until(() => lab.pool.stats.pings === labPings + 1 && core.activity.pongs >= 2, "the pong");

      // Traffic at +60 s (a refresh) pushes the next ping to 120 s after it.
      clock.advance(60_000);
      const refreshed = next(reg, "registered");
      reg.refresh();
      expect(await refreshed).toMatchObject({ type: "registered", refresh: 1 });
      clock.advance(119_999);
      expect(wire.pings).toBe(pings + 1);
      clock.advance(1);
      expect(wire.pings).toBe(pings + 2);
      expect(wire.requests.filter((m) => m === "OPTIONS")).toEqual([]);
    } finally {
      lab.pool.keepAliveS = 300;
      reg.stop();
      core.close();
    }
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("blackhole detection (livenessTimeoutMs 40 s: probe after 25 s of silence, 10 s to answer)", () => {
  it("derives probe timing that fits the bound", () => {
    expect(livenessTiming({})).toEqual({ probeIntervalMs: 25_000, probeTimeoutMs: 10_000 });
    expect(livenessTiming({ livenessTimeoutMs: 20_000 })).toEqual({
      probeIntervalMs: 15_000,
      probeTimeoutMs: 5_000,
    });
    const t = livenessTiming({ livenessTimeoutMs: 30_000, probeIntervalMs: 60_000 });
    expect(t.probeIntervalMs + t.probeTimeoutMs).toBeLessThanOrEqual(30_000);
    expect(livenessTiming({ livenessTimeoutMs: 0 }).probeIntervalMs).toBe(0);
  });

  /** Registers, lets `beforeDarkMs` of clock time pass (answering probes), goes dark, measures. */
  async function darkAfter(beforeDarkMs: number, dropPongs = false) {
    const clock = new ManualClock(Date.now());
    const { reg, core, wire, events } = await setup(clock, { dropPongs });
    try {
      await register(reg);
      let t = 0;
      while (t < beforeDarkMs) {
        const step = Math.min(1000, beforeDarkMs - t);
        const received = core.activity.received;
        const sent = wire.pings + wire.requests.length;
        clock.advance(step);
        t += step;
        // A probe went out: let its real answer arrive before time moves on.
        if (wire.pings + wire.requests.length > sent)
          await until(() => core.activity.received > received, "the probe's answer");
      }
      wire.dark = true;
      let dark = 0;
      while (!events.some((e) => e.type === "failed") && dark < 60_000) {
        clock.advance(500);
        dark += 500;
        await tick();
      }
      const failed = events.find((e) => e.type === "failed");
      return { failed, dark, core, clock, wire };
    } finally {
      reg.stop();
      core.close();
    }
  }

  // Detection = next probe (25 s after the last input) + 10 s, seen in 0.5 s steps.
  for (const [label, before, expected] of [
    ["just after the 200 (worst case)", 0, 35_000],
    ["12 s into the silence", 12_000, 23_000],
    ["just before the probe", 24_500, 10_500],
    ["1 s after a probe was answered", 26_000, 34_000],
  ] as const) {
    it(`flow-dead ≤ 40 s when the flow goes dark ${label}`, async () => {
      const { failed, dark, core, clock } = await darkAfter(before);
      expect(failed).toMatchObject({ type: "failed", error: { code: "flow-dead" } });
      expect(dark).toBe(expected);
      expect(dark).toBeLessThanOrEqual(40_000);
      expect(core.isClosed).toBe(true);
      expect(core.pending).toBe(0);
      expect(clock.pendingTimers()).toBe(0);
    });
  }

  it("probes with a signed OPTIONS when the server never pongs, and still detects ≤ 40 s", async () => {
    const options = lab.pool.stats.options;
    const signedOk = lab.pool.stats.signedOk;
    const { failed, dark, wire } = await darkAfter(26_000, true);
    expect(wire.requests).toContain("OPTIONS");
    expect(lab.pool.stats.options).toBe(options + 1);
    expect(lab.pool.stats.signedOk).toBeGreaterThanOrEqual(signedOk + 1);
    expect(failed).toMatchObject({ type: "failed", error: { code: "flow-dead" } });
    expect(dark).toBeLessThanOrEqual(40_000);
  });

  it("a flow that keeps answering is never called dead (probes alternate ping / OPTIONS)", async () => {
    const { failed, dark, wire } = await darkAfter(180_000);
    // 180 s of silence from the server but for the answers: 7 probes, pings and OPTIONS in turn.
    expect(wire.requests.filter((m) => m === "OPTIONS").length).toBeGreaterThanOrEqual(3);
    expect(failed).toMatchObject({ error: { code: "flow-dead" } }); // only once it went dark
    expect(dark).toBeLessThanOrEqual(40_000);
  });
});

describe("registration-lost signals", () => {
  it('first 200 "added" is fine; a refresh "added" after dropBindings() → binding-lost', async () => {
    const clock = new ManualClock(Date.now());
    const { reg, core } = await setup(clock);
    try {
      lab.pool.dropBindings();
      expect(await register(reg)).toMatchObject({ type: "registered", registerAction: "added" });
      const r1 = next(reg, "registered");
      reg.refresh();
      expect(await r1).toMatchObject({ type: "registered", refresh: 1, registerAction: "refreshed" });
      lab.pool.dropBindings();
      const lost = next(reg, "registered");
      reg.refresh();
      expect(await lost).toMatchObject({ type: "failed", error: { code: "binding-lost" } });
      expect(clock.pendingTimers()).toBe(0);
      expect(core.pending).toBe(0);
    } finally {
      reg.stop();
      core.close();
    }
  });

  for (const [reason, preferred] of [
    ["unregistered", undefined],
    ["rejected", undefined],
    ["deactivated", undefined],
    ["preferred-registrar-change", "pool2.lab.test:5062"],
  ] as const) {
    it(`NOTIFY registration-notify deregistered;event=${reason} → signed 200, failed "deregistered"`, async () => {
      const clock = new ManualClock(Date.now());
      const { reg, core } = await setup(clock);
      try {
        await register(reg);
        const signed = lab.pool.stats.signedAnswers;
        const failed = next(reg, "registered");
        const answer = await lab.pool.deregister(lab.ready.testClient.uri, reason, preferred);
        expect(answer).toEqual({ status: 200, signatureOk: true });
        expect(lab.pool.stats.signedAnswers).toBe(signed + 1);
        const e = await failed;
        expect(e).toMatchObject({ type: "failed", error: { code: "deregistered" }, reason });
        if (preferred)
          expect(e).toMatchObject({ preferredRegistrar: { host: "pool2.lab.test", port: 5062 } });
        else expect(e).not.toHaveProperty("preferredRegistrar");
        expect(clock.pendingTimers()).toBe(0);
      } finally {
        reg.stop();
        core.close();
      }
    });
  }

  it("answers a server OPTIONS with a signed 200 and an unknown request with a signed 501", async () => {
    const clock = new ManualClock(Date.now());
    const { reg, core, events } = await setup(clock);
    try {
      await register(reg);
      const uri = lab.ready.testClient.uri;
      expect(await lab.pool.sendToUser(uri, "OPTIONS")).toEqual({ status: 200, signatureOk: true });
      expect(await lab.pool.sendToUser(uri, "INFO")).toEqual({ status: 501, signatureOk: true });
      expect(
        await lab.pool.sendToUser(uri, "NOTIFY", [["Event", "registration-notify"]], "registered"),
      ).toEqual({ status: 200, signatureOk: true });
      expect(events.some((e) => e.type === "failed")).toBe(false);
      expect(reg.state).toBe("registered");
    } finally {
      reg.stop();
      core.close();
    }
  });
});

describe("stop()", () => {
  it("leaves no timers and no pending transactions, with a probe and a refresh in flight", async () => {
    const clock = new ManualClock(Date.now());
    const { reg, core, wire } = await setup(clock, { dropPongs: true });
    try {
      await register(reg);
      const sent = wire.requests.length;
      wire.dark = true; // nothing will answer
      clock.advance(25_000); // OPTIONS probe out
      reg.refresh(); // REGISTER out
      expect(wire.requests.length).toBe(sent); // swallowed by the dark wire…
      expect(core.pending).toBe(2); // …but both transactions are waiting
      expect(clock.pendingTimers()).toBeGreaterThan(0);
      reg.stop();
      expect(clock.pendingTimers()).toBe(0);
      expect(core.pending).toBe(0);
    } finally {
      core.close();
    }
  });
});
