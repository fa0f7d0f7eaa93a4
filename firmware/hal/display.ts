/**
 * Display contract: a character display of `rows` × `cols` cells. The phone renders whole frames
 * (pure, firmware/phone/screens); a sink decides how to get them onto glass — the serial LCD
 * sends only the cells that changed.
 */
export interface DisplayFrame {
  /** Exactly `rows` lines, each at most `cols` characters (sinks pad or cut defensively). */
  lines: string[];
}

export interface DisplaySink {
  readonly cols: number;
  readonly rows: number;
  show(frame: DisplayFrame): void;
  setBacklight(on: boolean): void;
}
