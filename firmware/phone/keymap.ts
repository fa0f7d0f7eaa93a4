/**
 * Key → command, per screen. The whole keypad contract of the phone is this table:
 *
 * | screen            | keys                                                                      |
 * | ----------------- | ------------------------------------------------------------------------- |
 * | extension entry   | 0-9 type · `*`/left/back/soft1 (Back) delete a digit · soft2 (Clear) or long `*` clear · `#`/ok next · menu open the menu |
 * | PIN entry         | 0-9 type (shown as `*`) · `*`/left/back/soft1 (Back) delete a digit, and with no digit left go back to the extension · soft2 (Clear) or long `*` clear · `#`/ok sign in · menu open the menu |
 * | idle              | menu/soft1 (Menu) open the menu · with a line up: off-hook, soft2 (Dial) or a digit 0-9 open the dial screen (with that digit) · soft3 (Redial) call the last number · soft4 (Missed) the missed calls |
 * | failed            | `#`/ok retry now · menu/soft1 (Menu) open the menu                        |
 * | menu              | up/down move · 1-4 pick · `#`/ok/right/soft4 select · `*`/back/left/menu/soft1 (Back) close |
 * | network info      | up/down page · `*`/back/left/menu/soft1 (Back) to the menu                |
 * | about             | `*`/back/left/menu/soft1 (Back) to the menu                               |
 * | sign out?         | `#`/ok yes · `*`/back/soft1 no                                            |
 * | factory reset?    | `#`/ok yes · `*`/back/soft1 no                                            |
 * | dial              | 0-9 type · `#`/ok/soft4 (Call) call (`#` on an empty number: redial) · `*`/left/back/soft1 (Back) delete a digit, on none close · soft2 (Clear) or long `*` clear · on-hook close · the number is called by itself after `dialTimeoutMs` without a key |
 * | calling, ringing  | on-hook, soft4 (End), back cancel                                         |
 * | incoming          | off-hook, soft1 (Answer), ok answer · soft4 (Reject) 603 Decline          |
 * | in call           | on-hook, soft4 (End) hang up · soft1 (Hold/Resume) · soft2 (Xfer) the transfer screen · soft3 (Mute/Unmute) · 0-9 `*` `#` send DTMF (RFC 4733), shown on line 1 |
 * | transfer          | 0-9 type · `#`/ok/soft4 (Send) blind transfer (REFER) · `*`/left/back/soft1 (Back) delete a digit, on none back to the call · soft2 (Clear) · on-hook hang up |
 * | missed calls      | up/down move · `#`/ok/soft4 (Call) call back · `*`/back/left/menu/soft1 (Back) close · off-hook dial |
 * | call ended        | as idle (the screen returns to idle after a few seconds; on-hook at once)  |
 *
 * The hook switch is part of the contract too (hookCommand): lifting the handset and putting it
 * back are commands on the screens above.
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
  | { kind: "retry-now" }
  /** The dial screen, with a first digit typed on the idle screen. */
  | { kind: "open-dial"; digit?: string }
  | { kind: "place-call" }
  | { kind: "redial" }
  | { kind: "open-missed" }
  | { kind: "call-back" }
  | { kind: "answer" }
  | { kind: "reject" }
  | { kind: "hang-up" }
  | { kind: "toggle-hold" }
  | { kind: "toggle-mute" }
  | { kind: "open-transfer" }
  | { kind: "transfer" }
  /** A keypad key during a call: a DTMF digit to the other end. */
  | { kind: "dtmf"; digit: string }
  /** Leaves a call screen (dial, missed list, call ended) for idle. */
  | { kind: "close-call-screen" };

export type KeyScreen =
  | "extension"
  | "pin"
  | "idle"
  | "failed"
  | "menu"
  | "network-info"
  | "about"
  | "confirm-sign-out"
  | "confirm-reset"
  | "dial"
  | "outgoing"
  | "incoming"
  | "in-call"
  | "transfer"
  | "missed";

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
  idle: {
    menu: c("open-menu"),
    soft1: c("open-menu"),
    soft2: c("open-dial"),
    soft3: c("redial"),
    soft4: c("open-missed"),
  },
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
  dial: {
    "*": c("rubout"),
    left: c("rubout"),
    soft1: c("rubout"),
    back: c("rubout"),
    soft2: c("clear"),
    "#": c("place-call"),
    ok: c("place-call"),
    soft4: c("place-call"),
  },
  outgoing: { soft4: c("hang-up"), back: c("hang-up") },
  incoming: { soft1: c("answer"), ok: c("answer"), soft4: c("reject") },
  "in-call": {
    soft1: c("toggle-hold"),
    soft2: c("open-transfer"),
    soft3: c("toggle-mute"),
    soft4: c("hang-up"),
  },
  transfer: {
    "*": c("rubout"),
    left: c("rubout"),
    soft1: c("rubout"),
    back: c("rubout"),
    soft2: c("clear"),
    "#": c("transfer"),
    ok: c("transfer"),
    soft4: c("transfer"),
  },
  missed: {
    ...closeKeys(c("close-call-screen")),
    up: c("up"),
    down: c("down"),
    "#": c("call-back"),
    ok: c("call-back"),
    soft4: c("call-back"),
  },
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
    // The call-ended screen is the idle screen with a message on it: its keys are idle's.
    case "call-ended":
      return "idle";
    default:
      return ui;
  }
}

/** Screens whose digits type into a field. */
const FIELDS = new Set<KeyScreen>(["extension", "pin", "dial", "transfer"]);

export function commandFor(state: PhoneState, ui: UiMode, event: KeyEvent): Command | undefined {
  const screen = keyScreen(state, ui);
  if (!screen) return undefined;
  const form = FIELDS.has(screen);
  if (event.kind === "long-press") return form && event.key === "*" ? c("clear") : undefined;
  if (form && isDigit(event.key)) return { kind: "digit", digit: event.key };
  // In a call the whole keypad is DTMF (an IVR's menu, a voicemail PIN, a conference code).
  if (screen === "in-call" && (isDigit(event.key) || event.key === "*" || event.key === "#"))
    return { kind: "dtmf", digit: event.key };
  // A digit on the idle screen starts dialling with it (as on a VVX or T4x).
  if (screen === "idle" && isDigit(event.key)) return { kind: "open-dial", digit: event.key };
  return KEYMAP[screen][event.key];
}

/** The hook switch as a command: lifting the handset dials or answers, putting it back ends. */
export function hookCommand(state: PhoneState, ui: UiMode, offHook: boolean): Command | undefined {
  const screen = keyScreen(state, ui);
  if (!screen) return undefined;
  if (offHook) {
    if (screen === "idle" || screen === "missed") return c("open-dial");
    return screen === "incoming" ? c("answer") : undefined;
  }
  switch (screen) {
    case "dial":
    case "missed":
      return c("close-call-screen");
    case "outgoing":
    case "in-call":
    case "transfer":
      return c("hang-up");
    default:
      // On the call-ended screen: back to idle at once.
      return ui === "call-ended" ? c("close-call-screen") : undefined;
  }
}
