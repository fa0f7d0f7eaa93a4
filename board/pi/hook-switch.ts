/**
 * Hook switch on one GPIO input, polled every `pollMs` on the injected Clock and debounced: the
 * state changes only after the line has read the same for `debounceMs`. `offHookLevel` is the
 * line level that means the handset is lifted. The state read at start() is taken as-is (no event).
 */
import type { Clock, TimerHandle } from "../../firmware/core/clock.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import type { HookSwitch } from "../../firmware/hal/indicators.ts";
import type { GpioFactory, GpioLine, Level } from "./gpio.ts";

export interface GpioHookSwitchOptions {
  gpio: GpioFactory;
  clock: Clock;
  line: number;
  offHookLevel?: Level;
  debounceMs?: number;
  pollMs?: number;
  logger?: Logger;
}

export class GpioHookSwitch implements HookSwitch {
  private readonly listeners = new Set<(offHook: boolean) => void>();
  private readonly logger: Logger;
  private input: GpioLine | undefined;
  private timer: TimerHandle | undefined;
  private stable = false;
  private raw = false;
  private rawSince = 0;

  constructor(private readonly opts: GpioHookSwitchOptions) {
    this.logger = opts.logger ?? silentLogger;
  }

  get offHook(): boolean {
    return this.stable;
  }

  onChange(listener: (offHook: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    if (this.input) return;
    this.input = this.opts.gpio.open(this.opts.line, "in");
    this.raw = this.stable = this.sample();
    this.rawSince = this.opts.clock.monotonic();
    this.schedule();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    this.input?.unexport();
    this.input = undefined;
  }

  private sample(): boolean {
    return this.input?.read() === (this.opts.offHookLevel ?? 1);
  }

  private schedule(): void {
    this.timer = this.opts.clock.setTimer(this.opts.pollMs ?? 5, () => {
      if (!this.input) return;
      this.poll();
      this.schedule();
    });
  }

  private poll(): void {
    const now = this.opts.clock.monotonic();
    const raw = this.sample();
    if (raw !== this.raw) {
      this.raw = raw;
      this.rawSince = now;
    }
    if (this.raw !== this.stable && now - this.rawSince >= (this.opts.debounceMs ?? 30)) {
      this.stable = this.raw;
      for (const l of [...this.listeners]) {
        try {
          l(this.stable);
        } catch (err) {
          this.logger.error("hook listener threw", { error: String(err) });
        }
      }
    }
  }
}
