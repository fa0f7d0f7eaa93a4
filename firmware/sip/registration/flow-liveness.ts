/**
 * Keep-alive and liveness for one registered flow (lync-phone-behaviour.md §4.2, §4.4).
 *
 * Keep-alive ([MS-CONMGMT] via ms-keep-alive): whenever nothing has been SENT for the
 * keep-alive interval (60 s before the first 200, sipe's guess; then the 200's `timeout=`),
 * send CRLFCRLF. Any other traffic we send resets it. No answer is expected.
 *
 * Liveness: a pong is not guaranteed (whether Lync answers CRLFCRLF is UNCONFIRMED), so the
 * phone probes on its own. Whenever nothing has been RECEIVED for `probeIntervalMs` (I), it
 * sends a probe and requires any input (a pong, a message, anything) within `probeTimeoutMs`
 * (T); otherwise the flow is dead. Worst case from the moment the flow goes dark (d) to the
 * verdict: the last input came at r ≤ d; if a probe was already out it was sent at p ≤ d and
 * the verdict falls at p + T ≤ d + T; otherwise the silence check fires at r + I ≤ d + I and
 * the verdict at ≤ d + I + T. So detection ≤ I + T (25 + 10 = 35 s ≤ 40 s by default).
 *
 * The probe itself is chosen by the owner (Registration): a CRLFCRLF ping once the server has
 * been seen to answer pings with a pong on this flow, a signed OPTIONS otherwise.
 *
 * A verdict needs the event loop to have had a chance to deliver the answer: if the deadline
 * fires in the same synchronous run as the probe was sent (only possible with a fake clock
 * advanced in one jump; with real timers each runs in its own task), the deadline is re-armed
 * instead of declaring the flow dead.
 *
 * All timers run on the injected Clock; stop() cancels them all.
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import type { FlowActivity } from "../user-agent-core.ts";

export const DEFAULT_LIVENESS_TIMEOUT_MS = 40_000;
export const DEFAULT_PROBE_INTERVAL_MS = 25_000;
export const DEFAULT_PROBE_TIMEOUT_MS = 10_000;
/** Keep-alive interval before the first 200 (sipe's guess). */
export const INITIAL_KEEP_ALIVE_MS = 60_000;

export interface LivenessTiming {
  /** 0: no probing (keep-alive only). */
  probeIntervalMs: number;
  probeTimeoutMs: number;
}

/**
 * Resolves the probe timing from the options: defaults 25 s / 10 s for a 40 s bound; a smaller
 * bound L scales them (T = min(10 s, L/4), I = min(25 s, L − T)); explicit values are clamped
 * so that I + T ≤ L always holds. L = 0 disables probing.
 */
export function livenessTiming(o: {
  livenessTimeoutMs?: number;
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
}): LivenessTiming {
  const bound = o.livenessTimeoutMs ?? DEFAULT_LIVENESS_TIMEOUT_MS;
  if (!(bound > 0)) return { probeIntervalMs: 0, probeTimeoutMs: 0 };
  const timeout = Math.max(
    1,
    Math.min(o.probeTimeoutMs ?? Math.min(DEFAULT_PROBE_TIMEOUT_MS, bound / 4), bound / 2),
  );
  const interval = Math.max(1, Math.min(o.probeIntervalMs ?? DEFAULT_PROBE_INTERVAL_MS, bound - timeout));
  return { probeIntervalMs: interval, probeTimeoutMs: timeout };
}

export interface FlowLivenessOptions extends LivenessTiming {
  clock: Clock;
  activity: FlowActivity;
  sendPing: () => void;
  /** Sends one liveness probe (ping or OPTIONS); the answer shows up in `activity`. */
  probe: () => void;
  onDead: (silentForMs: number) => void;
}

export class FlowLiveness {
  private keepAliveMs = INITIAL_KEEP_ALIVE_MS;
  private keepAliveTimer: TimerHandle | undefined;
  private silenceTimer: TimerHandle | undefined;
  private deadlineTimer: TimerHandle | undefined;
  private running = false;
  private probeSeq = 0;
  private probe: { seq: number; received: number; turned: boolean } | undefined;

  constructor(private readonly o: FlowLivenessOptions) {}

  start(): void {
    if (this.running) return;
    this.running = true;
    this.armKeepAlive();
    if (this.o.probeIntervalMs > 0) this.armSilence();
  }

  stop(): void {
    this.running = false;
    this.keepAliveTimer?.cancel();
    this.silenceTimer?.cancel();
    this.deadlineTimer?.cancel();
    this.keepAliveTimer = this.silenceTimer = this.deadlineTimer = undefined;
    this.probe = undefined;
  }

  /** The keep-alive interval the registrar asked for (ms-keep-alive timeout=, seconds). */
  setKeepAlive(seconds: number): void {
    if (!(seconds > 0)) return;
    this.keepAliveMs = seconds * 1000;
    if (this.running) this.armKeepAlive();
  }

  get keepAliveIntervalMs(): number {
    return this.keepAliveMs;
  }

  private armKeepAlive(): void {
    this.keepAliveTimer?.cancel();
    const due = this.o.activity.lastSentAt + this.keepAliveMs - this.o.clock.monotonic();
    this.keepAliveTimer = this.o.clock.setTimer(Math.max(0, due), () => {
      this.keepAliveTimer = undefined;
      if (!this.running) return;
      if (this.o.clock.monotonic() - this.o.activity.lastSentAt >= this.keepAliveMs) this.o.sendPing();
      this.armKeepAlive();
    });
  }

  private armSilence(): void {
    this.silenceTimer?.cancel();
    const due = this.o.activity.lastReceivedAt + this.o.probeIntervalMs - this.o.clock.monotonic();
    this.silenceTimer = this.o.clock.setTimer(Math.max(0, due), () => {
      this.silenceTimer = undefined;
      if (!this.running) return;
      if (this.o.clock.monotonic() - this.o.activity.lastReceivedAt < this.o.probeIntervalMs) {
        this.armSilence();
        return;
      }
      this.sendProbe();
    });
  }

  private sendProbe(): void {
    const p = { seq: ++this.probeSeq, received: this.o.activity.received, turned: false };
    this.probe = p;
    queueMicrotask(() => {
      p.turned = true;
    });
    this.o.probe();
    this.armDeadline();
  }

  private armDeadline(): void {
    this.deadlineTimer = this.o.clock.setTimer(this.o.probeTimeoutMs, () => {
      this.deadlineTimer = undefined;
      const p = this.probe;
      if (!this.running || !p) return;
      if (this.o.activity.received > p.received) {
        this.probe = undefined;
        this.armSilence();
        return;
      }
      if (!p.turned) {
        // No chance yet for the answer to arrive (fake clock jumped past it): wait again.
        this.armDeadline();
        return;
      }
      this.stop();
      this.o.onDead(this.o.clock.monotonic() - this.o.activity.lastReceivedAt);
    });
  }
}
