/**
 * The phone's lifecycle states (DESIGN.md "Phone states") and the one table of legal edges
 * between them. Phone.transition() consults this table on every move; an edge missing here is
 * a bug in the phone, never a condition of the network, so it throws a plain Error.
 *
 * UI modes are sub-states: the sign-in form (extension, then PIN) lives inside
 * `sign-in-required`; the menu family overlays the idle and failed states and the sign-in form;
 * the call screens overlay the signed-in states.
 */
export type PhoneState =
  | "booting"
  | "discovering"
  | "clock-set"
  | "sign-in-required"
  | "signing-in"
  | "provisioned"
  | "registering"
  | "registered"
  | "limited"
  | "failed";

export const PHONE_STATES: readonly PhoneState[] = [
  "booting",
  "discovering",
  "clock-set",
  "sign-in-required",
  "signing-in",
  "provisioned",
  "registering",
  "registered",
  "limited",
  "failed",
];

/**
 * Legal edges. Self-edges on the registration states exist because the registration policy may
 * move between registrars (a new `registrar`/`primary` is a transition the phone reports).
 */
export const TRANSITIONS: Readonly<Record<PhoneState, readonly PhoneState[]>> = {
  booting: ["discovering"],
  // discover + SNTP; a discovery failure goes to `failed`, which retries into `discovering`. When
  // SNTP does not answer the phone goes on with the saved floor as its clock (not set) straight to
  // what clock-set would lead to, and retries SNTP in the background.
  discovering: ["clock-set", "failed", "registering", "sign-in-required", "signing-in"],
  // credential in flash → register; none → sign in; a sign-in held across a clock retry → signing-in.
  "clock-set": ["registering", "sign-in-required", "signing-in"],
  // A factory reset (menu) starts again from discovery, as a reboot would.
  "sign-in-required": ["signing-in", "discovering"],
  // PIN-class failures return to the form (never retried automatically); network/TLS/time → failed.
  "signing-in": ["provisioned", "sign-in-required", "failed"],
  provisioned: ["registering"],
  registering: ["registering", "registered", "limited", "failed", "sign-in-required", "discovering"],
  registered: ["registered", "registering", "limited", "failed", "sign-in-required", "discovering"],
  limited: ["limited", "registering", "registered", "failed", "sign-in-required", "discovering"],
  // The phone never gives up: every automatic step can be resumed from here.
  failed: ["failed", "discovering", "signing-in", "registering", "registered", "limited", "sign-in-required"],
};

export function canTransition(from: PhoneState, to: PhoneState): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Throws on an edge the table does not list (an internal bug). */
export function assertTransition(from: PhoneState, to: PhoneState): void {
  if (!canTransition(from, to)) throw new Error(`illegal phone transition ${from} → ${to}`);
}

/** UI sub-states. `none` shows the lifecycle state's own screen. */
export type UiMode =
  | "none"
  | "extension"
  | "pin"
  | "menu"
  | "network-info"
  | "about"
  | "confirm-sign-out"
  | "signing-out"
  | "confirm-reset"
  | "resetting"
  // Calls (firmware/phone/calls.ts): the dial screen, the call's screens by phase, the blind
  // transfer's number, the missed-calls list, and the message a call leaves when it ends.
  | "dial"
  | "outgoing"
  | "incoming"
  | "in-call"
  | "transfer"
  | "missed"
  | "call-ended";

/** The menu family that an admin needs before anyone signed in too (diagnostics, factory reset). */
const ADMIN_MODES: readonly UiMode[] = ["menu", "network-info", "about", "confirm-reset", "resetting"];
const SIGNED_IN_MODES: readonly UiMode[] = ["confirm-sign-out", "signing-out"];
const MENU_STATES: readonly PhoneState[] = ["registering", "registered", "limited", "failed"];
export const CALL_MODES: readonly UiMode[] = [
  "dial",
  "outgoing",
  "incoming",
  "in-call",
  "transfer",
  "missed",
  "call-ended",
];

/**
 * Whether a UI mode may be shown in a lifecycle state: the form only when signed out; the menu
 * on idle/failed and on the sign-in screen (sign-out only where someone is signed in).
 */
export function uiAllowed(state: PhoneState, ui: UiMode): boolean {
  if (ui === "extension" || ui === "pin") return state === "sign-in-required";
  if (ADMIN_MODES.includes(ui)) return MENU_STATES.includes(state) || state === "sign-in-required";
  if (SIGNED_IN_MODES.includes(ui)) return MENU_STATES.includes(state);
  // A call outlives a registration moving (failover: registering, even failed, while the old
  // flow drains), so its screens stay in every state someone is signed in.
  if (CALL_MODES.includes(ui)) return MENU_STATES.includes(state);
  return state !== "sign-in-required";
}

/** The states whose screen is the idle screen (name, time, status, soft keys). */
export function isIdle(state: PhoneState): boolean {
  return state === "registering" || state === "registered" || state === "limited";
}
