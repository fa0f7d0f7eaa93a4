/**
 * Keypad contract. A key source reports logical keys (what is printed on the key), never matrix
 * positions or GPIO lines: the mapping is the board's business (board/pi profile, board/sim).
 */
export type DigitKey = "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "*" | "#";
export type SoftKey = "soft1" | "soft2" | "soft3" | "soft4";
export type NavKey = "up" | "down" | "left" | "right" | "ok" | "back" | "menu";
export type Key = DigitKey | SoftKey | NavKey;

export const ALL_KEYS: readonly Key[] = [
  "0",
  "1",
  "2",
  "3",
  "4",
  "5",
  "6",
  "7",
  "8",
  "9",
  "*",
  "#",
  "soft1",
  "soft2",
  "soft3",
  "soft4",
  "up",
  "down",
  "left",
  "right",
  "ok",
  "back",
  "menu",
];

export interface KeyEvent {
  key: Key;
  /** "press" on debounced key-down; "long-press" once when held past the long-press time. */
  kind: "press" | "long-press";
}

export interface KeySource {
  onKey(listener: (event: KeyEvent) => void): () => void;
}

export function isKey(text: string): text is Key {
  return (ALL_KEYS as readonly string[]).includes(text);
}
