import type { DisplaySink } from "./display.ts";
import type { HookSwitch, Indicators } from "./indicators.ts";
import type { KeySource } from "./keys.ts";

/** Everything the phone needs from the hardware; board/pi and board/sim implement it. */
export interface Board {
  readonly name: string;
  keys: KeySource;
  display: DisplaySink;
  hook: HookSwitch;
  indicators: Indicators;
  start(): Promise<void>;
  stop(): Promise<void>;
}
