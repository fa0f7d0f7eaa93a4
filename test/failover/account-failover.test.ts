/**
 * Issue 9 §4, the registrar policy (firmware/accounts/account.ts) on a fake clock, with the
 * mechanism stood in for (the `mechanism` option): the hand-over waits, preferredRegistrar, and
 * failback only after a successful signed registration on a side flow. The same behaviour over
 * real TLS-DSK against the lab is in failback-lab.test.ts.
 */
import { describe, expect, it } from "vitest";
import {
  Account,
  type AccountStatus,
  type RegistrarAddress,
  type RegistrationPort,
} from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { RegistrationError, TransportError } from "../../firmware/core/errors.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import type { Random } from "../../firmware/core/random.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import type { RegistrationEvent } from "../../firmware/sip/registration/registration.ts";

const PRIMARY: RegistrarAddress = { host: "pool.lab.test", port: 5061, source: "redirect-primary" };
const BACKUP: RegistrarAddress = { host: "backup.lab.test", port: 5061, source: "redirect-backup" };

/** unit() always returns `u`: the policy's waits become exact. */
const fixedRandom = (u: number): Random => ({ bytes: (n) => new Uint8Array(n), unit: () => u });

type Answer = "ok" | "503" | "never";

interface StubReg {
  registrar: string;
  reg: RegistrationPort;
  emit(e: RegistrationEvent): void;
  stopped: boolean;
  closed: boolean;
  unregistered: boolean;
}

function world(o: { random?: Random; failbackProbeMs?: number; list?: RegistrarAddress[] } = {}) {
  const clock = new ManualClock();
  const connects: Array<{ registrar: string; at: number }> = [];
  const regs: StubReg[] = [];
  const answer = new Map<string, Answer>();
  const refuseConnect = new Set<string>();
  const statuses: Array<AccountStatus & { at: number }> = [];
  const account = new Account(
    {
      clock,
      random: o.random ?? fixedRandom(0.5),
      logger: silentLogger,
      connect: async (t) => {
        const k = `${t.host}:${t.port}`;
        connects.push({ registrar: k, at: clock.monotonic() });
        if (refuseConnect.has(k)) throw new TransportError("connection-refused", `${k} refused`);
        return { remote: k, close: () => {} } as unknown as Flow;
      },
      mechanism: (flow) => {
        const listeners: Array<(e: RegistrationEvent) => void> = [];
        const stub: StubReg = {
          registrar: flow.remote,
          stopped: false,
          closed: false,
          unregistered: false,
          emit: (e) => {
            for (const l of [...listeners]) l(e);
          },
          reg: {
            on: (l) => {
              listeners.push(l);
              return () => {};
            },
            start: () => {
              const a = answer.get(flow.remote) ?? "ok";
              if (a === "never") return;
              queueMicrotask(() =>
                stub.emit(
                  a === "ok"
                    ? {
                        type: "registered",
                        expires: 3600,
                        refresh: 0,
                        connectedToPrimary: true,
                        userServicesAvailable: true,
                      }
                    : {
                        type: "failed",
                        error: new RegistrationError("registrar-unavailable", "503 Service Unavailable"),
                      },
                ),
              );
            },
            stop: () => {
              stub.stopped = true;
            },
            unregister: async () => {
              stub.unregistered = true;
              return true;
            },
          },
        };
        regs.push(stub);
        return { reg: stub.reg, close: () => (stub.closed = true) };
      },
      engineFactory: () => {
        throw new Error("not reached");
      },
      endpoint: {
        aor: "sip:4711@lab.test",
        epid: "0000000000",
        instanceId: "00000000-0000-4000-8000-000000000000",
      },
      credentials: () => undefined,
      trustedRoots: [],
      innerTls: "auto",
      failbackProbeMs: o.failbackProbeMs ?? 60_000,
    },
    o.list ?? [PRIMARY, BACKUP],
  );
  account.status.on((s) => statuses.push({ ...s, at: clock.monotonic() }));
  const flush = async () => {
    // Timers that fell due at this very instant (a 0 ms hand-over) run too.
    for (let i = 0; i < 5; i++) {
      clock.advance(0);
      await new Promise((r) => setImmediate(r));
    }
  };
  const step = async (ms: number, by = 100) => {
    for (let t = 0; t < ms; t += by) {
      clock.advance(Math.min(by, ms - t));
      await flush();
    }
  };
  const live = (registrar: string) => regs.filter((r) => r.registrar === registrar && !r.stopped);
  return { clock, account, connects, regs, answer, refuseConnect, statuses, flush, step, live };
}

const P = "pool.lab.test:5061";
const B = "backup.lab.test:5061";

describe("hand-over to the next registrar", () => {
  it("after a failed attempt waits U(0, 5 s) drawn from the injected Random, not at once", async () => {
    const w = world({ random: fixedRandom(0.5) });
    w.refuseConnect.add(P);
    w.account.start();
    await w.flush();
    expect(w.connects.map((c) => c.registrar)).toEqual([P]);
    expect(w.statuses.at(-1)).toMatchObject({ state: "registering", registrar: B, retryInMs: 2_500 });
    await w.step(2_499, 1);
    expect(w.connects).toHaveLength(1);
    await w.step(1, 1);
    expect(w.connects.at(-1)).toEqual({ registrar: B, at: 2_500 });
    await w.flush();
    expect(w.statuses.at(-1)).toMatchObject({ state: "limited", registrar: B });
  });

  it("the wait spans 0–5 s over the Random's range", async () => {
    for (const [u, ms] of [
      [0, 0],
      [0.999, 4_995],
    ] as const) {
      const w = world({ random: fixedRandom(u) });
      w.refuseConnect.add(P);
      w.account.start();
      await w.flush();
      expect(w.statuses.find((x) => x.retryInMs !== undefined)?.retryInMs).toBe(ms);
    }
  });

  it("after a working registration is lost waits U(0, 40 s): the phones of a dead registrar do not arrive together", async () => {
    const w = world({ random: fixedRandom(0.25) });
    w.account.start();
    await w.flush();
    expect(w.statuses.at(-1)).toMatchObject({ state: "registered", registrar: P, primary: true });
    w.live(P)[0]!.emit({ type: "failed", error: new TransportError("connection-reset", "reset") });
    await w.flush();
    expect(w.statuses.at(-1)).toMatchObject({ state: "registering", registrar: B, retryInMs: 10_000 });
    await w.step(9_999, 1_111);
    expect(w.connects.map((c) => c.registrar)).toEqual([P]);
    await w.step(1, 1);
    expect(w.connects.at(-1)).toEqual({ registrar: B, at: 10_000 });
  });
});

describe("registration-notify preferredRegistrar", () => {
  it("goes to the registrar the server prefers, which becomes home", async () => {
    const w = world({ random: fixedRandom(0) });
    w.account.start();
    await w.flush();
    w.live(P)[0]!.emit({
      type: "failed",
      error: new RegistrationError(
        "deregistered",
        "Registrar ended the registration (preferred-registrar-change)",
      ),
      reason: "preferred-registrar-change",
      preferredRegistrar: {
        uri: "sip:fe2.lab.test:5061;transport=tls",
        host: "fe2.lab.test",
        port: 5061,
        q: 1,
      },
    });
    await w.step(100);
    expect(w.connects.map((c) => c.registrar)).toEqual([P, "fe2.lab.test:5061"]);
    expect(w.statuses.at(-1)).toMatchObject({
      state: "registered",
      registrar: "fe2.lab.test:5061",
      primary: true,
    });
    expect(w.account.registrars[0]).toMatchObject({ host: "fe2.lab.test", source: "preferred" });
    // Home now: no failback probe pulls it back to the old primary.
    await w.step(300_000, 10_000);
    expect(w.connects.map((c) => c.registrar)).toEqual([P, "fe2.lab.test:5061"]);
  });

  it("a preferred registrar already in the list moves to the front", async () => {
    const w = world({ random: fixedRandom(0) });
    w.account.start();
    await w.flush();
    w.live(P)[0]!.emit({
      type: "failed",
      error: new RegistrationError("deregistered", "moved"),
      reason: "preferred-registrar-change",
      preferredRegistrar: { uri: `sip:${B}`, host: "backup.lab.test", port: 5061, q: 1 },
    });
    await w.step(100);
    expect(w.account.registrars.map((r) => `${r.host}:${r.port}`)).toEqual([B, P]);
    expect(w.statuses.at(-1)).toMatchObject({ state: "registered", registrar: B, primary: true });
  });
});

describe("failback", () => {
  async function onBackup() {
    const w = world({ random: fixedRandom(0) }); // probe period × U(0.5, 1) = 30 s exactly
    w.refuseConnect.add(P);
    w.account.start();
    await w.step(100);
    expect(w.statuses.at(-1)).toMatchObject({ state: "limited", registrar: B });
    w.refuseConnect.delete(P);
    return w;
  }

  it("a TLS connect is not enough: while home refuses REGISTER (503) the phone stays on the backup", async () => {
    const w = await onBackup();
    w.answer.set(P, "503");
    const mark = w.statuses.length;
    await w.step(600_000, 1_000);
    const probes = w.regs.filter((r) => r.registrar === P);
    expect(probes.length).toBeGreaterThanOrEqual(15); // one every 30 s
    expect(probes.every((r) => r.stopped && r.closed)).toBe(true); // each side flow closed
    expect(w.statuses.slice(mark)).toEqual([]); // no flap, not even a "registering"
    expect(w.live(B)).toHaveLength(1);
    expect(w.account.openFlows).toBe(1);
  });

  it("a side registration that never answers is abandoned, and the phone stays", async () => {
    const w = await onBackup();
    w.answer.set(P, "never");
    await w.step(30_000 + 60_000, 1_000);
    const probe = w.regs.find((r) => r.registrar === P)!;
    expect(probe.stopped && probe.closed).toBe(true);
    expect(w.live(B)).toHaveLength(1);
  });

  it("after a signed REGISTER succeeds on the side flow: that registration is kept, the backup's is unregistered and closed", async () => {
    const w = await onBackup();
    await w.step(30_000, 1_000);
    const connectsToHome = w.connects.filter((c) => c.registrar === P && c.at > 0);
    expect(connectsToHome).toHaveLength(1); // the side flow; none after the switch
    expect(w.statuses.at(-1)).toMatchObject({ state: "registered", registrar: P, primary: true });
    const backup = w.regs.find((r) => r.registrar === B)!;
    await w.flush();
    expect(backup).toMatchObject({ unregistered: true, stopped: true, closed: true });
    const home = w.regs.filter((r) => r.registrar === P);
    expect(home).toHaveLength(1);
    expect(home[0]).toMatchObject({ stopped: false, closed: false });
    expect(w.account.openFlows).toBe(1);
    // The adopted registration is the registration now: its later events drive the policy.
    const mark = w.statuses.length;
    home[0]!.emit({ type: "failed", error: new TransportError("connection-reset", "reset") });
    await w.flush();
    expect(w.statuses.slice(mark).map((s) => `${s.state} ${s.registrar}`)).toEqual([
      `registering ${B}`,
      `registering ${B}`,
      `limited ${B}`,
    ]);
  });
});
