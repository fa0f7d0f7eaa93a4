/** LEDs and the hook switch. */
export type IndicatorState = "off" | "on" | "blink";

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
