/**
 * Pure editing helpers for the keypad sign-in form. Values are digit strings; nothing here
 * keeps state, so the PIN lives in exactly one place (the phone) and leaves it only masked.
 */

/** E.164 numbers have at most 15 digits; extensions are shorter. */
export const EXTENSION_MAX = 15;
/** Lync/SfB PIN policy allows 4–15 digits. */
export const PIN_MAX = 15;

export function isDigit(key: string): boolean {
  return key.length === 1 && key >= "0" && key <= "9";
}

/** Appends one digit, ignoring anything else and anything past `max`. */
export function appendDigit(value: string, digit: string, max: number): string {
  if (!isDigit(digit) || value.length >= max) return value;
  return value + digit;
}

export function backspace(value: string): string {
  return value.slice(0, -1);
}

/** What the display may show of a secret: one mask character per digit, never the digits. */
export function masked(length: number, mask = "*"): string {
  return mask.repeat(Math.max(0, length));
}

/**
 * A one-line field, `label` + shown text + `_` cursor; when too long for `cols` the tail
 * (where the typing happens) stays visible.
 */
export function fieldLine(label: string, shown: string, cols: number): string {
  const full = `${label}${shown}_`;
  if (full.length <= cols) return full;
  const room = Math.max(0, cols - label.length);
  return `${label}${`${shown}_`.slice(-room)}`.slice(0, cols);
}
