/**
 * The failover storm (issue 9 §4), policy core: N phones (one Account each, the registrar policy
 * of firmware/accounts with its real timers, jitter and failback probe) on one fake clock, homed
 * on a primary with a backup. The registrars and the mechanism are stand-ins that answer at once,
 * so what is measured is exactly what the policy decides: when each phone arrives where.
 *
 * Timeline: the phones register with the primary (their starts spread over `startSpreadMs`, as a
 * building's phones boot at different moments); at `deathAt` the primary dies — "reset": every
 * flow is closed at that instant (a crashed front end; the worst case, every phone learns it in
 * the same millisecond); "silent": the host goes dark and each phone learns it when its own
 * liveness probe goes unanswered (probe after 25 s of silence, verdict 10 s later, so the phase
 * of its registration decides). Then the primary comes back REFUSING (TLS accepted, every REGISTER
 * answered 503) for `refuseMs`, and finally answers again.
 *
 * Recorded: every connection attempt at the backup after the death (arrivals), every phone that
 * leaves the backup or binds at the primary while it refuses (flaps), and every binding left on
 * the backup after the failback (a side registration that is not adopted, or a backup binding not
 * unregistered, would show here).
 */
import { Account, type RegistrationOnFlow, type RegistrationPort } from "../../firmware/accounts/account.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { RegistrationError, TransportError } from "../../firmware/core/errors.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { type Random, SeededRandom } from "../../firmware/core/random.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import type { RegistrationEvent } from "../../firmware/sip/registration/registration.ts";

type Mode = "up" | "dead" | "refusing";

export interface FailoverStormOptions {
  phones: number;
  seed?: number;
  death?: "reset" | "silent";
  startSpreadMs?: number;
  /** When the primary dies (simulated ms from the start). */
  deathAt?: number;
  /** How long after its death the primary comes back refusing REGISTER. */
  deadMs?: number;
  refuseMs?: number;
  /** Simulated time allowed for the failback once the primary answers again. */
  failbackMs?: number;
  failbackProbeMs?: number;
  /** A Random per phone (the bench passes CryptoRandom); seeded by default. */
  random?: (phone: number) => Random;
}

const PRIMARY = { host: "pool.lab.test", port: 5061 };
const BACKUP = { host: "backup.lab.test", port: 5061 };
const key = (t: { host: string; port: number }) => `${t.host}:${t.port}`;

function stubFlow(remote: string, onClose: () => void): Flow {
  return {
    remote,
    local: { address: "10.0.0.2", port: 50_000 },
    peerCertificatePem: "",
    send: () => {},
    sendPing: () => {},
    close: onClose,
    onMessage: () => {},
    onPong: () => {},
    onClose: () => {},
  };
}

function histogram(times: number[]): Map<number, number> {
  const h = new Map<number, number>();
  for (const t of times) h.set(Math.floor(t / 1000), (h.get(Math.floor(t / 1000)) ?? 0) + 1);
  return h;
}

export async function failoverStorm(o: FailoverStormOptions) {
  const phones = o.phones;
  const seed = o.seed ?? 42;
  const death = o.death ?? "reset";
  const startSpreadMs = o.startSpreadMs ?? 100_000;
  const deathAt = o.deathAt ?? 600_000;
  const deadMs = o.deadMs ?? 180_000;
  const refuseMs = o.refuseMs ?? 600_000;
  const failbackMs = o.failbackMs ?? 180_000;
  const clock = new ManualClock(Date.UTC(2026, 10, 28, 9, 0, 0));
  const mode: Record<string, Mode> = { [key(PRIMARY)]: "up", [key(BACKUP)]: "up" };
  /** Live registrations on each registrar: phone → (fail it, when registered). */
  const live = new Map<
    string,
    Map<RegistrationPort, { phone: number; registeredAt: number; fail: (e: RegistrationEvent) => void }>
  >([
    [key(PRIMARY), new Map()],
    [key(BACKUP), new Map()],
  ]);
  const bindings = new Map<string, Set<number>>([
    [key(PRIMARY), new Set()],
    [key(BACKUP), new Set()],
  ]);
  const backupArrivals: number[] = [];
  const failbackArrivals: number[] = [];
  let probesWhileRefusing = 0;
  let refusedWhileRefusing = 0;
  let phase: "registering" | "dead" | "refusing" | "back" = "registering";
  const where = new Map<number, string | undefined>();
  const flaps: Array<{ phone: number; to: string; at: number }> = [];
  let maxOpenFlows = 0;
  const accounts: Account[] = [];

  const mechanismFor =
    (phone: number) =>
    (flow: Flow): RegistrationOnFlow => {
      const registrar = flow.remote;
      const listeners: Array<(e: RegistrationEvent) => void> = [];
      const emit = (e: RegistrationEvent) => {
        for (const l of [...listeners]) l(e);
      };
      let done = false;
      const reg: RegistrationPort = {
        on: (l) => {
          listeners.push(l);
          return () => listeners.splice(listeners.indexOf(l) >>> 0, 1);
        },
        start: () => {
          queueMicrotask(() => {
            if (done) return;
            if (mode[registrar] === "up") {
              bindings.get(registrar)!.add(phone);
              live.get(registrar)!.set(reg, {
                phone,
                registeredAt: clock.monotonic(),
                fail: (e) => {
                  done = true;
                  emit(e);
                },
              });
              emit({
                type: "registered",
                expires: 3600,
                refresh: 0,
                connectedToPrimary: registrar === key(PRIMARY),
                userServicesAvailable: true,
              });
            } else {
              if (phase === "refusing" && registrar === key(PRIMARY)) refusedWhileRefusing++;
              done = true;
              emit({
                type: "failed",
                error: new RegistrationError(
                  "registrar-unavailable",
                  "Registrar refused the registration: 503",
                ),
              });
            }
          });
        },
        stop: () => {
          done = true;
          live.get(registrar)!.delete(reg);
        },
        unregister: async () => {
          bindings.get(registrar)!.delete(phone);
          live.get(registrar)!.delete(reg);
          done = true;
          return true;
        },
      };
      return { reg, close: () => live.get(registrar)!.delete(reg) };
    };

  for (let i = 0; i < phones; i++) {
    const account = new Account(
      {
        clock,
        random: o.random ? o.random(i) : new SeededRandom(seed * 100_003 + i),
        logger: silentLogger,
        connect: async (t) => {
          const k = key(t);
          if (k === key(BACKUP) && phase !== "registering") backupArrivals.push(clock.monotonic() - deathAt);
          if (k === key(PRIMARY) && phase === "refusing") probesWhileRefusing++;
          if (k === key(PRIMARY) && phase === "back") failbackArrivals.push(clock.monotonic());
          if (mode[k] === "dead")
            throw new TransportError("connection-refused", `${k} refused the connection`);
          return stubFlow(k, () => {});
        },
        mechanism: mechanismFor(i),
        engineFactory: () => {
          throw new Error("not reached: the mechanism is a stand-in");
        },
        endpoint: {
          aor: `sip:${i}@lab.test`,
          epid: "0000000000",
          instanceId: "00000000-0000-4000-8000-000000000000",
        },
        credentials: () => undefined,
        trustedRoots: [],
        innerTls: "auto",
        ...(o.failbackProbeMs !== undefined ? { failbackProbeMs: o.failbackProbeMs } : {}),
      },
      [
        { ...PRIMARY, source: "redirect-primary" },
        { ...BACKUP, source: "redirect-backup" },
      ],
    );
    account.status.on((s) => {
      const up = s.state === "registered" || s.state === "limited";
      const now = up ? s.registrar : undefined;
      const before = where.get(i);
      if (phase === "refusing" && before === key(BACKUP) && now !== key(BACKUP))
        flaps.push({ phone: i, to: s.registrar ?? s.state, at: clock.monotonic() });
      if (phase === "refusing" && now === key(PRIMARY))
        flaps.push({ phone: i, to: now, at: clock.monotonic() });
      where.set(i, now);
    });
    accounts.push(account);
    clock.setTimer(Math.floor((i * startSpreadMs) / phones), () => account.start());
  }

  const turn = () => new Promise((r) => setImmediate(r));
  const run = async (untilMs: number) => {
    while (clock.monotonic() < untilMs) {
      clock.advance(Math.min(1_000, untilMs - clock.monotonic()));
      await turn();
      maxOpenFlows = Math.max(maxOpenFlows, ...accounts.map((a) => a.openFlows));
    }
  };
  const registeredAt = (k: string) => [...where.values()].filter((w) => w === k).length;

  await run(deathAt);
  const onPrimaryBefore = registeredAt(key(PRIMARY));
  phase = "dead";
  mode[key(PRIMARY)] = "dead";
  for (const [reg, r] of [...live.get(key(PRIMARY))!]) {
    live.get(key(PRIMARY))!.delete(reg);
    bindings.get(key(PRIMARY))!.delete(r.phone);
    const lost = () =>
      r.fail({ type: "failed", error: new TransportError("flow-dead", "No answer to a liveness probe") });
    if (death === "reset")
      r.fail({
        type: "failed",
        error: new TransportError("connection-reset", "pool.lab.test reset the connection"),
      });
    else {
      // Its next probe is due 25 s after the last answer (answers came every 25 s since it registered).
      const sinceReg = deathAt - r.registeredAt;
      const nextProbe = r.registeredAt + Math.ceil(sinceReg / 25_000) * 25_000;
      clock.setTimer(nextProbe + 10_000 - deathAt, lost);
    }
  }
  await run(deathAt + deadMs);
  const onBackupAfterDeath = registeredAt(key(BACKUP));
  phase = "refusing";
  mode[key(PRIMARY)] = "refusing";
  await run(deathAt + deadMs + refuseMs);
  const onBackupWhileRefusing = registeredAt(key(BACKUP));
  phase = "back";
  mode[key(PRIMARY)] = "up";
  const backAt = clock.monotonic();
  await run(backAt + failbackMs);
  const onPrimaryAfter = registeredAt(key(PRIMARY));
  for (const a of accounts) await a.stop();

  const perSecond = histogram(backupArrivals);
  const counts = [...perSecond.values()];
  const fb = [...histogram(failbackArrivals.map((t) => t - backAt)).values()];
  return {
    phones,
    death,
    registered_on_primary_before: onPrimaryBefore,
    registered_on_backup_after_death: onBackupAfterDeath,
    backup_arrivals: backupArrivals.length,
    first_backup_arrival_s: Math.min(...backupArrivals) / 1000,
    last_backup_arrival_s: Math.max(...backupArrivals) / 1000,
    backup_worst_second_share: Math.max(...counts) / phones,
    registered_on_backup_while_primary_refuses: onBackupWhileRefusing,
    failback_probes_while_refusing: probesWhileRefusing,
    refused_registers_while_refusing: refusedWhileRefusing,
    flaps_while_refusing: flaps.length,
    registered_on_primary_after_return: onPrimaryAfter,
    bindings_left_on_backup: bindings.get(key(BACKUP))!.size,
    failback_worst_second_share: fb.length ? Math.max(...fb) / phones : 0,
    max_open_flows_per_phone: maxOpenFlows,
    histogram: [...perSecond.entries()]
      .sort((a, b) => a[0] - b[0])
      .map(([second, n]) => ({ second, phones: n })),
  };
}
