/**
 * LEDs and the hook switch. An LED is `off`, `on` (steady), `blink` (fast, even on/off: something
 * is in progress or wrong) or `wink` (lit, with a short dark wink every 2 s: working, but not
 * fully, e.g. the phone's limited service), so that each differs from the others at a glance on
 * a single-colour LED.
 */
export type IndicatorState = "off" | "on" | "blink" | "wink";

export interface Indicator {
  set(state: IndicatorState): void;
}

export interface Indicators {
  messageWaiting: Indicator;
  status: Indicator;
}

export interface HookSwitch {
  readonly offHook: boolean;
  onChange(listener: (offHook: boolean) => void): () => void;
}
