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
import {
  type CallScreenView,
  callBody,
  dialBody,
  endedBody,
  missedBody,
  softKeys,
  transferBody,
} from "./call-screens.ts";
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
  /**
   * Calls, once the phone has a line (calls.ts): the idle screen then shows the call soft keys
   * and the missed calls not yet looked at; the call screens render from it.
   */
  calls?: CallScreenView & { lineUp: boolean; unseenMissed: number };
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

export type MenuItem = "Network info" | "About" | "Sign out" | "Factory reset";
/** The menu when someone is signed in (idle, failed). */
export const MENU_ITEMS: readonly MenuItem[] = ["Network info", "About", "Sign out", "Factory reset"];
/** The menu on the sign-in screen: the diagnostics an admin needs then, and the reset. */
export const SIGN_IN_MENU_ITEMS: readonly MenuItem[] = ["Network info", "About", "Factory reset"];

export function menuItems(state: PhoneState): readonly MenuItem[] {
  return state === "sign-in-required" ? SIGN_IN_MENU_ITEMS : MENU_ITEMS;
}

/** Lines of the Network info screen per page (lines 1 and 2; the status line stays). */
export const INFO_LINES_PER_PAGE = 2;

/**
 * The Network info pages for a display `cols` wide, never cutting a value: `label: value` on one
 * line when it fits, else the label on its own line and the value wrapped below it (at a space,
 * comma, slash, dot, colon or `@` where it can, else mid-word). Short items share a page; an
 * item that needs more lines starts on a fresh page and goes on over as many pages as it takes.
 */
export function infoPages(info: ReadonlyArray<readonly [string, string]>, cols: number): string[][] {
  const width = Math.max(1, cols);
  const pages: string[][] = [];
  let page: string[] = [];
  const flush = () => {
    if (page.length) pages.push(page);
    page = [];
  };
  for (const [label, value] of info) {
    const one = `${label}: ${value}`;
    const lines = one.length <= width ? [one] : [...wrap(`${label}:`, width), ...wrap(value, width)];
    if (lines.length > INFO_LINES_PER_PAGE - page.length) flush();
    for (const line of lines) {
      page.push(line);
      if (page.length === INFO_LINES_PER_PAGE) flush();
    }
  }
  flush();
  return pages.length ? pages : [[""]];
}

const BREAK_AFTER = new Set([" ", ",", "/", ".", ":", "@", ";"]);

/** Wraps `text` to lines of at most `cols`, breaking after a space or punctuation if it can. */
export function wrap(text: string, cols: number): string[] {
  const lines: string[] = [];
  let rest = text.trim();
  while (rest.length > cols) {
    let cut = -1;
    for (let k = cols; k > Math.floor(cols / 2); k--) {
      if (rest[k] === " " || BREAK_AFTER.has(rest[k - 1] ?? "")) {
        cut = k;
        break;
      }
    }
    if (cut < 0) cut = cols;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  if (rest || lines.length === 0) lines.push(rest);
  return lines;
}

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
  "store-damaged": "Identity damaged",
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
  "account-locked": ["Locked — call your admin", "Locked — call admin", "Locked—ask admin", "PIN locked"],
  "pin-auth-disabled": ["PIN sign-in disabled", "PIN sign-in off"],
  "sign-in-required": ["Signed out by server", "Sign in again"],
  "sign-in-interrupted": ["No answer: press # again", "No answer, retry"],
  "store-damaged": ["Identity damaged: sign in", "Identity damaged"],
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
      const items = menuItems(v.state);
      const i = Math.min(Math.max(v.menuIndex, 0), items.length - 1);
      return [
        "Menu",
        spread(`> ${items[i]}`, `${i + 1}/${items.length}`, cols),
        spread("Back", "#=Select", cols),
      ];
    }
    case "network-info": {
      if (!v.info) return ["Network info", "Loading…", "Back"];
      const pages = infoPages(v.info, cols);
      const page = Math.min(Math.max(v.infoPage, 0), pages.length - 1);
      const lines = pages[page] ?? [];
      return [lines[0] ?? "", lines[1] ?? "", spread("Back", `${page + 1}/${pages.length}`, cols)];
    }
    case "about":
      return [`handset ${v.version}`, v.uri ?? "Not signed in", "Back"];
    case "confirm-sign-out":
      return ["Sign out? #=Yes *=No", v.name ?? v.uri ?? "", ""];
    case "signing-out":
      return ["Signing out…", "", ""];
    case "confirm-reset":
      return [
        firstFitting(["Factory reset?", "Reset?"], cols),
        firstFitting(["Erases sign-in, cert", "Erases all"], cols),
        spread("*=No", "#=Yes", cols),
      ];
    case "resetting":
      return ["Resetting…", "", ""];
    case "dial":
      return v.calls ? dialBody(v.calls, cols) : ["", "", ""];
    case "outgoing":
    case "incoming":
    case "in-call":
      return v.calls ? callBody(v.calls, cols) : ["", "", ""];
    case "transfer":
      return v.calls ? transferBody(v.calls, cols) : ["", "", ""];
    case "missed":
      return v.calls ? missedBody(v.calls, cols) : ["", "", ""];
    case "call-ended":
      return v.calls ? endedBody(v.calls, cols) : ["Call ended", "", ""];
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
    case "limited": {
      const c = v.calls;
      if (!c?.lineUp && !c?.unseenMissed) return [v.name ?? "", v.timeText, "Menu"];
      const missed = c.unseenMissed ? `${c.unseenMissed} missed` : "";
      return [
        spread(v.name ?? "", missed, cols).trimEnd(),
        v.timeText,
        softKeys(["Menu", "Dial", "Redial", "Missed"], cols),
      ];
    }
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

/**
 * The server's text about attempts left, as "N attempts left" when it names a number (or is
 * one); its own words when they fit the line; else nothing (the line keeps its key hints): the
 * display never shows a sentence cut off, and a lock needs no second line — its notice says it.
 */
function attempts(v: PhoneView, cols: number): string | undefined {
  const text = v.notice?.attemptsWarning?.trim();
  if (!text) return undefined;
  const n = attemptsLeft(text);
  if (n !== undefined) {
    const candidates = [`${n} attempt${n === 1 ? "" : "s"} left`, `${n} left`];
    return candidates.find((c) => c.length <= cols);
  }
  if (v.notice?.code === "account-locked") return undefined;
  return text.length <= cols ? text : undefined;
}

const NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

/** The number of attempts left a server's text names: "2 attempts remaining", "remaining: 2", "2", "one more try". */
export function attemptsLeft(text: string): number | undefined {
  const t = text.toLowerCase();
  const num = `(\\d+|${NUMBER_WORDS.join("|")})`;
  const m =
    new RegExp(`^\\s*${num}\\s*$`).exec(t) ??
    new RegExp(`\\b${num}\\s*(?:more\\s+)?(?:logon\\s+|sign-in\\s+)?(?:attempts?|tries|try)`).exec(t) ??
    /(?:remaining|left)\D{0,12}?(\d+)/.exec(t);
  const word = m?.[1];
  if (word === undefined) return undefined;
  const k = NUMBER_WORDS.indexOf(word);
  return k >= 0 ? k : Number(word);
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
