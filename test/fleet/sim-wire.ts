/**
 * Simulated time over real sockets, for the fleet tests that run the agent on a ManualClock
 * against a real mosquitto (outage.test.ts, broker-failover.test.ts): the real MQTT edge,
 * watched, so the clock never runs ahead of the wire, and a driver that moves the clock in small
 * steps with real I/O settled between them.
 */
import type { Clock, ManualClock } from "../../firmware/core/clock.ts";
import { createMqttPort } from "../../firmware/platform/mqtt-connection.ts";
import type { MqttPort } from "../../firmware/telemetry/mqtt-port.ts";

export const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits in real time (no simulated time passes) for a condition. */
export async function waitReal(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await realSleep(5);
  }
}

/**
 * The real MQTT edge, watched: a CONNECT without its CONNACK, a publish or subscribe without its
 * ack, a PINGREQ without its PINGRESP. MQTT.js's keep-alive sends PINGREQ on the second tick of
 * the timer the agent hands it and re-arms that timer on every ack (a clear() and a fresh set()),
 * so a timer that has ticked twice marks a PINGREQ in flight. Every connection attempt is
 * recorded with its simulated time, every acknowledged publish in order.
 */
export function watchedPort(clock: Clock, real: MqttPort = createMqttPort()) {
  let connecting = 0;
  let pending = 0;
  const ticks = new Map<number, number>();
  const attempts: Array<{ url: string; at: number }> = [];
  const acked: Array<{ topic: string; payload: string; url: string }> = [];
  const port: MqttPort = {
    async connect(o) {
      attempts.push({ url: o.url, at: clock.monotonic() });
      connecting++;
      const timer = {
        set(fn: () => void, ms: number): number {
          const id = o.timer.set(() => {
            ticks.set(id, (ticks.get(id) ?? 0) + 1);
            fn();
          }, ms);
          ticks.set(id, 0);
          return id;
        },
        clear(id: number): void {
          ticks.delete(id);
          o.timer.clear(id);
        },
      };
      try {
        const c = await real.connect({ ...o, timer });
        const track = <T>(p: Promise<T>): Promise<T> => {
          pending++;
          const done = () => {
            pending--;
          };
          p.then(done, done);
          return p;
        };
        return {
          publish: (topic, payload, po) =>
            track(c.publish(topic, payload, po)).then(() => {
              acked.push({ topic, payload, url: o.url });
            }),
          subscribe: (filters, qos) => track(c.subscribe(filters, qos)),
          onMessage: (h) => c.onMessage(h),
          onPacket: (h) => c.onPacket(h),
          onClose: (h) => c.onClose(h),
          close: (force) => c.close(force),
        };
      } finally {
        connecting--;
      }
    },
  };
  return {
    port,
    attempts,
    acked,
    /** What is on the wire now ("connect", "ack", "pingresp"), or undefined. */
    busy: (): string | undefined =>
      connecting > 0
        ? "connect"
        : pending > 0
          ? "ack"
          : [...ticks.values()].some((n) => n === 2)
            ? "pingresp"
            : undefined,
  };
}

/** What of the phone's is still on the wire (a short name), or undefined when nothing is. */
export type Busy = () => string | undefined;

/** At least one turn of the event loop, then until nothing is in flight (2 s at most); what is left. */
export async function quiet(busy: Busy): Promise<string | undefined> {
  await new Promise<void>((r) => setImmediate(r));
  const deadline = Date.now() + 2_000;
  while (busy() && Date.now() < deadline) await realSleep(1);
  return busy();
}

/**
 * Moves the clock up to `ms` in steps of at most `stepMs` (500), stopping at every timer's
 * deadline, with real I/O settled between steps; returns early (true) once `until` holds.
 */
export async function drive(
  clock: ManualClock,
  busy: Busy,
  ms: number,
  o: { stepMs?: number; until?: () => boolean } = {},
): Promise<boolean> {
  const end = clock.monotonic() + ms;
  const realDeadline = Date.now() + 25_000;
  let stuck = 0;
  for (;;) {
    if (o.until?.()) return true;
    const left = end - clock.monotonic();
    if (left <= 0) return o.until === undefined;
    clock.advance(Math.min(o.stepMs ?? 500, left, clock.nextTimerIn() ?? Number.POSITIVE_INFINITY));
    stuck = (await quiet(busy)) === undefined ? 0 : stuck + 1;
    // Loopback answers in milliseconds: an exchange pending for three steps of 2 s is a fault,
    // said at once instead of a test timing out somewhere later.
    if (stuck >= 3) throw new Error(`real I/O stuck (${busy()}) at t=${clock.monotonic()} ms`);
    if (Date.now() > realDeadline)
      throw new Error(
        `25 s of real time for ${ms} ms simulated, at t=${clock.monotonic()} ms (busy: ${busy()})`,
      );
  }
}
