import type { AudioDevice } from "./audio.ts";
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
  /** The handset's microphone and earpiece; a board without one registers but cannot carry calls' audio. */
  audio?: AudioDevice;
  start(): Promise<void>;
  stop(): Promise<void>;
}
