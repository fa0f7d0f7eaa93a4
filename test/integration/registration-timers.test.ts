/**
 * Registration timers on a fake clock against the real lab registrar over real sockets:
 * refresh at min(Expires − 30 s, 90 % of Expires), SA re-authentication at
 * min(cert, 8 h) − 5 min with a fresh tunnelled handshake, and Timer F on a silent registrar.
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
import { Registration, type RegistrationEvent } from "../../firmware/sip/registration/registration.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import { type Lab, startLab } from "../lab/lab.ts";

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ site: "hq", expires: 600 });
});
afterAll(async () => {
  await lab?.stop();
});

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

async function setup(clock: ManualClock) {
  const cert = readFileSync(lab.ready.testClient.cert, "utf8");
  const key = readFileSync(lab.ready.testClient.key, "utf8");
  const [host, port] = lab.ready.pool.split(":");
  const flow = await tlsFlowConnector({ ca: [lab.ca.cert] })({ host: host!, port: Number(port) });
  const sent: string[] = [];
  const send = flow.send.bind(flow);
  flow.send = (m) => {
    if (m.kind === "request") sent.push(m.method);
    send(m);
  };
  const random = new SeededRandom(7);
  const core = new UserAgentCore(flow, { clock, random, logger: silentLogger });
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
  });
  return { reg, core, sent };
}

describe("registration timers (fake clock, real sockets)", () => {
  it("refreshes at min(Expires − 30 s, 90 %) and re-authenticates the SA before 8 h − 5 min", async () => {
    const clock = new ManualClock(Date.now());
    const { reg, core, sent } = await setup(clock);
    try {
      const registered = next(reg, "registered");
      reg.start();
      expect(await registered).toMatchObject({ type: "registered", expires: 600, refresh: 0 });
      const handshakes = lab.pool.stats.handshakes;

      // 600 s → refresh at min(570, 540) = 540 s.
      const before = sent.length;
      clock.advance(539_000);
      expect(sent.length).toBe(before);
      const refreshed = next(reg, "registered");
      clock.advance(1_000);
      expect(sent.length).toBe(before + 1);
      expect(await refreshed).toMatchObject({ refresh: 1 });

      // Keep refreshing (52 × 540 s = 28 080 s), then the SA timer fires at 8 h − 5 min = 28 500 s.
      // Each advance stops before the next timer's real I/O must happen, as wall time would.
      for (let i = 2; i <= 52; i++) {
        const r = next(reg, "registered");
        clock.advance(540_000);
        expect(await r).toMatchObject({ refresh: i });
      }
      expect(lab.pool.stats.handshakes).toBe(handshakes);
      const reauth = next(reg, "authenticated");
      clock.advance(419_000);
      expect(lab.pool.stats.handshakes).toBe(handshakes);
      clock.advance(1_000);
      const reauthEvent = await reauth;
      expect(reauthEvent.type === "failed" ? reauthEvent.error.message : "").toBe("");
      expect(reauthEvent).toMatchObject({ type: "authenticated", tlsVersion: "TLSv1.2" });
      await next(reg, "registered");
      expect(lab.pool.stats.handshakes).toBe(handshakes + 1);
      expect(core.pending).toBe(0);
    } finally {
      reg.stop();
      core.close();
    }
  });

  it("reports registrar-timeout after Timer F (64·T1) when the registrar never answers", async () => {
    const clock = new ManualClock(Date.now());
    const silent: Flow = {
      remote: "127.0.0.1:9",
      local: { address: "127.0.0.1", port: 5555 },
      peerCertificatePem: "",
      send: () => {},
      sendPing: () => {},
      close: () => {},
      onMessage: () => {},
      onPong: () => {},
      onClose: () => {},
    };
    const random = new SeededRandom(1);
    const core = new UserAgentCore(silent, { clock, random, logger: silentLogger });
    const reg = new Registration({
      clock,
      random,
      logger: silentLogger,
      core,
      engineFactory: createTlsDskEngine,
      endpoint: {
        aor: "sip:4711@lab.test",
        epid: "0123456789",
        instanceId: "00000000-0000-4000-8000-000000000000",
      },
      credentials: undefined,
      trustedRoots: [lab.ca.cert],
      innerTls: "1.2",
    });
    const failed = next(reg, "failed");
    reg.start();
    clock.advance(31_999);
    expect(reg.state).toBe("challenging");
    clock.advance(1);
    expect(await failed).toMatchObject({ type: "failed", error: { code: "registrar-timeout" } });
    expect(core.pending).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });
});
