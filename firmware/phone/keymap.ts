/**
 * Key → command, per screen. The whole keypad contract of the phone is this table:
 *
 * | screen            | keys                                                                      |
 * | ----------------- | ------------------------------------------------------------------------- |
 * | extension entry   | 0-9 type · `*`/left/back/soft1 (Back) delete a digit · soft2 (Clear) or long `*` clear · `#`/ok next · menu open the menu |
 * | PIN entry         | 0-9 type (shown as `*`) · `*`/left/back/soft1 (Back) delete a digit, and with no digit left go back to the extension · soft2 (Clear) or long `*` clear · `#`/ok sign in · menu open the menu |
 * | idle              | menu/soft1 (Menu) open the menu                                           |
 * | failed            | `#`/ok retry now · menu/soft1 (Menu) open the menu                        |
 * | menu              | up/down move · 1-4 pick · `#`/ok/right/soft4 select · `*`/back/left/menu/soft1 (Back) close |
 * | network info      | up/down page · `*`/back/left/menu/soft1 (Back) to the menu                |
 * | about             | `*`/back/left/menu/soft1 (Back) to the menu                               |
 * | sign out?         | `#`/ok yes · `*`/back/soft1 no                                            |
 * | factory reset?    | `#`/ok yes · `*`/back/soft1 no                                            |
 *
 * Only "press" events count, except a long press of `*`, which clears a field.
 */
import type { Key, KeyEvent } from "../hal/keys.ts";
import { isIdle, type PhoneState, type UiMode } from "./lifecycle.ts";
import { isDigit } from "./text-entry.ts";

export type Command =
  | { kind: "digit"; digit: string }
  | { kind: "backspace" }
  | { kind: "clear" }
  | { kind: "next" }
  | { kind: "confirm" }
  | { kind: "back" }
  /** Deletes one digit; on an empty PIN goes back to the extension. */
  | { kind: "rubout" }
  | { kind: "open-menu" }
  | { kind: "close-menu" }
  | { kind: "up" }
  | { kind: "down" }
  | { kind: "select" }
  | { kind: "pick"; index: number }
  | { kind: "menu-back" }
  | { kind: "yes" }
  | { kind: "no" }
  | { kind: "retry-now" };

export type KeyScreen =
  | "extension"
  | "pin"
  | "idle"
  | "failed"
  | "menu"
  | "network-info"
  | "about"
  | "confirm-sign-out"
  | "confirm-reset";

const c = <K extends Command["kind"]>(kind: K) => ({ kind }) as Extract<Command, { kind: K }>;
const closeKeys = (cmd: Command): Partial<Record<Key, Command>> => ({
  "*": cmd,
  back: cmd,
  left: cmd,
  menu: cmd,
  soft1: cmd,
});

export const KEYMAP: Readonly<Record<KeyScreen, Partial<Record<Key, Command>>>> = {
  extension: {
    "*": c("backspace"),
    left: c("backspace"),
    soft1: c("backspace"),
    back: c("backspace"),
    soft2: c("clear"),
    "#": c("next"),
    ok: c("next"),
    menu: c("open-menu"),
  },
  pin: {
    "*": c("rubout"),
    left: c("rubout"),
    soft1: c("rubout"),
    back: c("rubout"),
    soft2: c("clear"),
    "#": c("confirm"),
    ok: c("confirm"),
    menu: c("open-menu"),
  },
  idle: { menu: c("open-menu"), soft1: c("open-menu") },
  failed: { "#": c("retry-now"), ok: c("retry-now"), menu: c("open-menu"), soft1: c("open-menu") },
  menu: {
    ...closeKeys(c("close-menu")),
    up: c("up"),
    down: c("down"),
    "#": c("select"),
    ok: c("select"),
    right: c("select"),
    soft4: c("select"),
    "1": { kind: "pick", index: 0 },
    "2": { kind: "pick", index: 1 },
    "3": { kind: "pick", index: 2 },
    "4": { kind: "pick", index: 3 },
  },
  "network-info": { ...closeKeys(c("menu-back")), up: c("up"), down: c("down") },
  about: closeKeys(c("menu-back")),
  "confirm-sign-out": { "#": c("yes"), ok: c("yes"), "*": c("no"), back: c("no"), soft1: c("no") },
  "confirm-reset": { "#": c("yes"), ok: c("yes"), "*": c("no"), back: c("no"), soft1: c("no") },
};

/** Which key table applies: the UI mode when one is open, else the lifecycle state's screen. */
export function keyScreen(state: PhoneState, ui: UiMode): KeyScreen | undefined {
  switch (ui) {
    case "none":
      if (isIdle(state)) return "idle";
      return state === "failed" ? "failed" : undefined;
    case "signing-out":
    case "resetting":
      return undefined;
    default:
      return ui;
  }
}

export function commandFor(state: PhoneState, ui: UiMode, event: KeyEvent): Command | undefined {
  const screen = keyScreen(state, ui);
  if (!screen) return undefined;
  const form = screen === "extension" || screen === "pin";
  if (event.kind === "long-press") return form && event.key === "*" ? c("clear") : undefined;
  if (form && isDigit(event.key)) return { kind: "digit", digit: event.key };
  return KEYMAP[screen][event.key];
}
