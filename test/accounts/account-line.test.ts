/**
 * Issue 12: the account's line (firmware/accounts/account.ts LineEvent). A registration bound on
 * a flow hands out the flow's UserAgentCore, the identity and the Contact; a flow that carries a
 * call (line.keep()) is drained, not closed, when failback or a failover replaces it; a flow that
 * failed itself, and stop(), close at once. The mechanism is stood in for on a fake clock, with a
 * real UserAgentCore on a fake flow (a stand-in without a core has no line).
 */
import { describe, expect, it } from "vitest";
import {
  Account,
  type LineEvent,
  type RegistrarAddress,
  type RegistrationPort,
} from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { RegistrationError, TransportError } from "../../firmware/core/errors.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import type { RegistrationEvent } from "../../firmware/sip/registration/registration.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";

const PRIMARY: RegistrarAddress = { host: "pool.lab.test", port: 5061, source: "redirect-primary" };
const BACKUP: RegistrarAddress = { host: "backup.lab.test", port: 5061, source: "redirect-backup" };
const P = "pool.lab.test:5061";
const B = "backup.lab.test:5061";

const registered = (gruu?: string, refresh = 0): RegistrationEvent => ({
  type: "registered",
  expires: 3600,
  refresh,
  connectedToPrimary: true,
  userServicesAvailable: true,
  ...(gruu ? { gruu } : {}),
});

interface Stub {
  registrar: string;
  emit(e: RegistrationEvent): void;
  core: UserAgentCore | undefined;
  stopped: boolean;
  closed: boolean;
  unregistered: boolean;
}

function fakeFlow(remote: string, port: number): Flow {
  return {
    remote,
    local: { address: "10.0.0.5", port },
    peerCertificatePem: "",
    send: () => {},
    sendPing: () => {},
    close: () => {},
    onMessage: () => {},
    onPong: () => {},
    onClose: () => {},
  };
}

function world(o: { withCore?: boolean; gruu?: string; down?: string[] } = {}) {
  const clock = new ManualClock();
  const random = new SeededRandom(3);
  const stubs: Stub[] = [];
  const events: LineEvent[] = [];
  const down = new Set(o.down ?? []);
  let port = 5000;
  const account = new Account(
    {
      clock,
      random,
      logger: silentLogger,
      connect: async (t) => {
        const k = `${t.host}:${t.port}`;
        if (down.has(k)) throw new TransportError("connection-refused", `${k} refused`);
        return fakeFlow(k, ++port);
      },
      mechanism: (flow) => {
        const listeners: Array<(e: RegistrationEvent) => void> = [];
        const core =
          o.withCore === false ? undefined : new UserAgentCore(flow, { clock, random, logger: silentLogger });
        const stub: Stub = {
          registrar: flow.remote,
          core,
          stopped: false,
          closed: false,
          unregistered: false,
          emit: (e) => {
            for (const l of [...listeners]) l(e);
          },
        };
        const reg: RegistrationPort = {
          on: (l) => {
            listeners.push(l);
            return () => {};
          },
          start: () => {
            if (down.has(flow.remote)) return;
            queueMicrotask(() => stub.emit(registered(o.gruu)));
          },
          stop: () => {
            stub.stopped = true;
          },
          unregister: async () => {
            stub.unregistered = true;
            return true;
          },
        };
        stubs.push(stub);
        return { reg, close: () => (stub.closed = true), ...(core ? { core } : {}) };
      },
      engineFactory: () => {
        throw new Error("not reached");
      },
      endpoint: {
        aor: "sip:4711@lab.test",
        epid: "01010101ab",
        instanceId: "00000000-0000-4000-8000-000000000000",
      },
      credentials: () => undefined,
      trustedRoots: [],
      innerTls: "auto",
      failbackProbeMs: 60_000,
      handoverJitterMs: 0,
    },
    [PRIMARY, BACKUP],
  );
  account.lines.on((e) => events.push(e));
  const flush = async () => {
    for (let i = 0; i < 5; i++) {
      clock.advance(0);
      await new Promise((r) => setImmediate(r));
    }
  };
  const step = async (ms: number, by = 1_000) => {
    for (let t = 0; t < ms; t += by) {
      clock.advance(Math.min(by, ms - t));
      await flush();
    }
  };
  const stub = (registrar: string) => stubs.filter((s) => s.registrar === registrar).at(-1)!;
  return { clock, account, stubs, events, down, flush, step, stub };
}

const summary = (events: LineEvent[]) =>
  events.map((e) =>
    e.type === "line"
      ? `line ${e.line.registrar}`
      : `line-lost ${e.line.registrar} ${e.reason}${e.draining ? " draining" : ""}`,
  );

describe("the account's line", () => {
  it("goes out once per bound flow: the flow's core, the AOR and epid, the registered Contact", async () => {
    const w = world();
    w.account.start();
    await w.flush();
    expect(summary(w.events)).toEqual([`line ${P}`]);
    const e = w.events[0]!;
    if (e.type !== "line") throw new Error("no line");
    expect(e.line.core).toBe(w.stub(P).core);
    expect(e.line.identity).toEqual({ aor: "sip:4711@lab.test", epid: "01010101ab" });
    expect(e.line.contact).toBe("sip:10.0.0.5:5001;transport=tls;ms-opaque=01010101ab");
    expect(w.account.line).toBe(e.line);
    // A refresh is the same line.
    w.stub(P).emit(registered(undefined, 1));
    expect(w.events).toHaveLength(1);
    await w.account.stop();
    expect(summary(w.events)).toEqual([`line ${P}`, `line-lost ${P} stopped`]);
    expect(w.account.line).toBeUndefined();
  });

  it("carries the GRUU as the Contact when the registrar gave one", async () => {
    const w = world({ gruu: "sip:4711@lab.test;opaque=user:epid:abc;gruu" });
    w.account.start();
    await w.flush();
    expect(w.account.line?.contact).toBe("sip:4711@lab.test;opaque=user:epid:abc;gruu");
  });

  it("a stand-in mechanism without a core registers as before and hands out no line", async () => {
    const w = world({ withCore: false });
    w.account.start();
    await w.flush();
    expect(w.account.state.state).toBe("registered");
    expect(w.events).toEqual([]);
    expect(w.account.line).toBeUndefined();
  });
});

describe("a call keeps its flow", () => {
  it("failback while a call is up on the backup: the backup's flow drains until the call ends, then de-REGISTERs and closes", async () => {
    const w = world({ down: [P] });
    w.account.start();
    await w.step(10_000);
    expect(w.account.state).toMatchObject({ state: "limited", registrar: B });
    const backupLine = w.account.line!;
    const release = backupLine.keep();

    w.down.clear();
    await w.step(61_000);
    expect(w.account.state).toMatchObject({ state: "registered", registrar: P });
    expect(summary(w.events)).toEqual([`line ${B}`, `line-lost ${B} replaced draining`, `line ${P}`]);
    const backup = w.stub(B);
    expect(backup.closed || backup.unregistered || backup.stopped).toBe(false);
    expect(w.account.openFlows).toBe(2);

    release();
    await w.flush();
    expect(backup.unregistered && backup.stopped && backup.closed).toBe(true);
    expect(w.account.openFlows).toBe(1);
    release(); // twice is once
  });

  it("failback with no call closes the backup at once, as before", async () => {
    const w = world({ down: [P] });
    w.account.start();
    await w.step(10_000);
    w.down.clear();
    await w.step(61_000);
    expect(summary(w.events)).toEqual([`line ${B}`, `line-lost ${B} replaced`, `line ${P}`]);
    expect(w.stub(B).closed).toBe(true);
  });

  it("a registration that fails on a working flow drains it for the call; a flow that failed itself closes at once", async () => {
    const w = world();
    w.account.start();
    await w.flush();
    const release = w.account.line!.keep();
    const first = w.stub(P);
    first.emit({ type: "failed", error: new RegistrationError("binding-lost", "binding lost") });
    expect(summary(w.events)).toEqual([`line ${P}`, `line-lost ${P} lost draining`]);
    expect(first.stopped).toBe(true); // no more refreshes on it
    expect(first.closed).toBe(false);
    await w.step(45_000);
    expect(w.account.line).toBeDefined();
    release();
    expect(first.closed).toBe(true);

    // The failover went to the backup; its flow dies under a call: nothing to drain.
    expect(w.account.line?.registrar).toBe(B);
    const keep = w.account.line!.keep();
    const second = w.stub(B);
    second.emit({ type: "failed", error: new TransportError("flow-dead", "no pong") });
    expect(summary(w.events).at(-1)).toBe(`line-lost ${B} lost`);
    expect(second.closed).toBe(true);
    keep();
  });

  it("stop() closes a draining flow too", async () => {
    const w = world();
    w.account.start();
    await w.flush();
    w.account.line!.keep();
    const first = w.stub(P);
    first.emit({ type: "failed", error: new RegistrationError("binding-lost", "binding lost") });
    expect(first.closed).toBe(false);
    await w.account.stop();
    expect(first.closed).toBe(true);
    expect(w.account.openFlows).toBe(0);
  });
});
