/**
 * Screens: render(view, size) → the frame the display shows. PURE: no clock, no I/O; the view
 * carries everything, the time as text included. Every screen has the same shape, so people
 * and tests know where to look:
 *
 *   line 1, 2  what this screen is about (field, message, name, time)
 *   line 3     the status line: the lifecycle state's label (STATUS_LABEL), always
 *   line 4     soft-key labels and key hints, or a second message line (attempts warning)
 *
 * Smaller displays keep the status line first: 3 rows drop line 4, 2 rows show line 1 and the
 * status line, 1 row only the status line. Larger displays get blank rows below.
 */
import type { DisplayFrame } from "../hal/display.ts";
import type { PhoneState, UiMode } from "./lifecycle.ts";
import { fieldLine, masked } from "./text-entry.ts";

export interface PhoneView {
  state: PhoneState;
  ui: UiMode;
  version: string;
  /** Date and time as the idle screen shows it (formatClock). */
  timeText: string;
  /** Display name, else extension, else the URI's user part. */
  name?: string;
  uri?: string;
  registrar?: string;
  primary?: boolean;
  /** The extension being typed (or last signed in with). */
  extension: string;
  /** How many PIN digits are typed: the view never holds the PIN itself. */
  pinLength: number;
  /** Why the sign-in form is showing again (error code), with the server's attempts text. */
  notice?: { code: string; attemptsWarning?: string };
  /** Why the phone is in `failed`, and when it retries. */
  failure?: { code: string; step: RetryStep; retryInMs?: number };
  menuIndex: number;
  /** Network info pairs once loaded. */
  info?: Array<[string, string]>;
  infoPage: number;
}

export type RetryStep = "discover" | "clock" | "sign-in" | "register";

export const STATUS_LABEL: Readonly<Record<PhoneState, string>> = {
  booting: "Starting",
  discovering: "Discovering…",
  "clock-set": "Clock set",
  "sign-in-required": "Sign in",
  "signing-in": "Signing in…",
  provisioned: "Provisioned",
  registering: "Registering…",
  registered: "Registered",
  limited: "Limited service",
  failed: "Failed",
};

export const MENU_ITEMS = ["Network info", "About", "Sign out"] as const;
export const INFO_PER_PAGE = 2;

/** Titles of the failed screens, by error code; the step's title when the code is unknown. */
const FAILURE_TITLE: Record<string, string> = {
  "discovery-failed": "No servers found",
  "clock-unset": "Time not set",
  "server-unreachable": "Server unreachable",
  "server-cert-untrusted": "Server not trusted",
  "server-cert-time": "Check date/time",
  // A certificate check that failed only on time while SNTP has not answered yet.
  "clock-invalid": "Time not set",
  timeout: "Server timeout",
};
const STEP_TITLE: Record<RetryStep, string> = {
  discover: "No servers found",
  clock: "Time not set",
  "sign-in": "Sign-in failed",
  register: "Registration failed",
};

/** Messages on the sign-in form; the first candidate that fits the width is shown. */
const NOTICE: Record<string, readonly string[]> = {
  "invalid-pin": ["Wrong PIN"],
  "account-locked": ["Locked — call your admin", "Locked — call admin"],
  "pin-auth-disabled": ["PIN sign-in disabled", "PIN sign-in off"],
  "sign-in-required": ["Signed out by server", "Sign in again"],
  "sign-in-interrupted": ["No answer: press # again", "No answer, retry"],
};

export function render(view: PhoneView, size: { cols: number; rows: number }): DisplayFrame {
  const { cols } = size;
  const [l1, l2, l4] = body(view, cols);
  return { lines: arrange([l1, l2, STATUS_LABEL[view.state], l4], size.rows).map((l) => pad(l, cols)) };
}

function body(v: PhoneView, cols: number): [string, string, string] {
  switch (v.ui) {
    case "extension":
      return [
        fieldLine("Ext: ", v.extension, cols),
        notice(v, cols) ?? "Enter extension",
        attempts(v, cols) ?? spread("Back Clear", "#=Next", cols),
      ];
    case "pin":
      return [
        fieldLine("PIN: ", masked(v.pinLength), cols),
        notice(v, cols) ?? `PIN for ${v.extension}`,
        attempts(v, cols) ?? spread("Back Clear", "#=OK", cols),
      ];
    case "menu": {
      const i = Math.min(Math.max(v.menuIndex, 0), MENU_ITEMS.length - 1);
      return [
        "Menu",
        spread(`> ${MENU_ITEMS[i]}`, `${i + 1}/${MENU_ITEMS.length}`, cols),
        spread("Back", "#=Select", cols),
      ];
    }
    case "network-info": {
      if (!v.info) return ["Network info", "Loading…", "Back"];
      const pages = Math.max(1, Math.ceil(v.info.length / INFO_PER_PAGE));
      const page = Math.min(Math.max(v.infoPage, 0), pages - 1);
      const pair = (k: number): string => {
        const p = v.info?.[page * INFO_PER_PAGE + k];
        return p ? `${p[0]}: ${p[1]}` : "";
      };
      return [pair(0), pair(1), spread("Back", `${page + 1}/${pages}`, cols)];
    }
    case "about":
      return [`handset ${v.version}`, v.uri ?? "Not signed in", "Back"];
    case "confirm-sign-out":
      return ["Sign out? #=Yes *=No", v.name ?? v.uri ?? "", ""];
    case "signing-out":
      return ["Signing out…", "", ""];
    case "none":
      return stateBody(v, cols);
  }
}

function stateBody(v: PhoneView, cols: number): [string, string, string] {
  switch (v.state) {
    case "booting":
      return [`handset ${v.version}`, "", ""];
    case "discovering":
      return ["Looking for servers", "", ""];
    case "clock-set":
      return ["Time set", v.timeText, ""];
    case "sign-in-required":
      return ["Sign in", "", ""];
    case "signing-in":
      return [`Ext: ${v.extension}`, "Please wait…", ""];
    case "provisioned":
      return ["Signed in", v.uri ?? "", ""];
    case "registering":
    case "registered":
    case "limited":
      return [v.name ?? "", v.timeText, "Menu"];
    case "failed": {
      const f = v.failure;
      const title = f ? (FAILURE_TITLE[f.code] ?? STEP_TITLE[f.step]) : "Failed";
      return [title, retryText(f?.retryInMs), spread("Menu", "#=Retry", cols)];
    }
  }
}

function notice(v: PhoneView, cols: number): string | undefined {
  if (!v.notice) return undefined;
  return firstFitting(NOTICE[v.notice.code] ?? ["Sign-in failed"], cols);
}

/** The server's text about attempts left, shortened to "N attempts left" when it names a number. */
function attempts(v: PhoneView, cols: number): string | undefined {
  const text = v.notice?.attemptsWarning;
  if (!text) return undefined;
  const n = /(\d+)\s*(?:more\s+)?(?:attempts?|tries|try)/i.exec(text) ?? /remaining\D*(\d+)/i.exec(text);
  if (n?.[1]) return firstFitting([`${n[1]} attempt${n[1] === "1" ? "" : "s"} left`], cols);
  return firstFitting([text], cols);
}

export function retryText(ms: number | undefined): string {
  if (ms === undefined) return "Retrying…";
  const s = Math.max(1, Math.ceil(ms / 1000));
  return s >= 120 ? `Retry in ${Math.ceil(s / 60)} min` : `Retry in ${s}s`;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/** "Thu 2026-01-01 09:05": the idle screen's time line (20 characters). */
export function formatClock(epochMs: number, utcOffsetMinutes = 0): string {
  const d = new Date(epochMs + utcOffsetMinutes * 60_000);
  const two = (n: number) => String(n).padStart(2, "0");
  return (
    `${DAYS[d.getUTCDay()]} ${d.getUTCFullYear()}-${two(d.getUTCMonth() + 1)}-${two(d.getUTCDate())} ` +
    `${two(d.getUTCHours())}:${two(d.getUTCMinutes())}`
  );
}

function arrange(lines: [string, string, string, string], rows: number): string[] {
  const [l1, l2, status, l4] = lines;
  if (rows >= 4) return [l1, l2, status, l4, ...Array<string>(rows - 4).fill("")];
  if (rows === 3) return [l1, l2, status];
  if (rows === 2) return [l1, status];
  return rows === 1 ? [status] : [];
}

function firstFitting(candidates: readonly string[], cols: number): string {
  return candidates.find((c) => c.length <= cols) ?? (candidates[0] ?? "").slice(0, cols);
}

/** `left` flush left, `right` flush right; the right part wins when both do not fit. */
function spread(left: string, right: string, cols: number): string {
  const gap = cols - left.length - right.length;
  if (gap >= 1) return left + " ".repeat(gap) + right;
  return `${left.slice(0, Math.max(0, cols - right.length - 1))} ${right}`.slice(-cols);
}

function pad(line: string, cols: number): string {
  return line.length >= cols ? line.slice(0, cols) : line + " ".repeat(cols - line.length);
}
