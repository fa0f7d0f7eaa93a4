/**
 * LEDs on GPIO outputs as hal Indicators. "blink" toggles every `blinkMs` (500 ms) on the injected
 * Clock, starting lit; "wink" stays lit for `winkLitMs` (1 750 ms), then dark for `winkDarkMs`
 * (250 ms), and again; `activeLevel` is the line level that lights the LED.
 */
import type { Clock, TimerHandle } from "../../firmware/core/clock.ts";
import type { Indicator, IndicatorState } from "../../firmware/hal/indicators.ts";
import type { GpioFactory, GpioLine, Level } from "./gpio.ts";

export interface GpioLedOptions {
  gpio: GpioFactory;
  clock: Clock;
  line: number;
  activeLevel?: Level;
  blinkMs?: number;
  winkLitMs?: number;
  winkDarkMs?: number;
}

export class GpioLed implements Indicator {
  private output: GpioLine | undefined;
  private timer: TimerHandle | undefined;
  private current: IndicatorState = "off";
  private lit = false;

  constructor(private readonly opts: GpioLedOptions) {}

  get state(): IndicatorState {
    return this.current;
  }

  /** Whether the LED is lit at this moment (blink phase included). */
  get isLit(): boolean {
    return this.lit;
  }

  start(): void {
    if (this.output) return;
    this.output = this.opts.gpio.open(this.opts.line, "out");
    this.apply();
  }

  stop(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (this.output) {
      this.drive(false);
      this.output.unexport();
      this.output = undefined;
    }
  }

  set(state: IndicatorState): void {
    if (state === this.current) return;
    this.current = state;
    this.apply();
  }

  private apply(): void {
    this.timer?.cancel();
    this.timer = undefined;
    if (!this.output) return;
    this.drive(this.current !== "off");
    if (this.current === "blink") this.scheduleBlink();
    else if (this.current === "wink") this.scheduleWink();
  }

  /** Lit for winkLitMs, dark for winkDarkMs, repeated (starts lit). */
  private scheduleWink(): void {
    const ms = this.lit ? (this.opts.winkLitMs ?? 1_750) : (this.opts.winkDarkMs ?? 250);
    this.timer = this.opts.clock.setTimer(ms, () => {
      this.drive(!this.lit);
      this.scheduleWink();
    });
  }

  private scheduleBlink(): void {
    this.timer = this.opts.clock.setTimer(this.opts.blinkMs ?? 500, () => {
      this.drive(!this.lit);
      this.scheduleBlink();
    });
  }

  private drive(lit: boolean): void {
    this.lit = lit;
    const active = this.opts.activeLevel ?? 1;
    this.output?.write(lit ? active : active === 1 ? 0 : 1);
  }
}
