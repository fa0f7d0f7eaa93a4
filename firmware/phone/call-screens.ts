/**
 * The call screens' lines 1, 2 and 4 (screens.ts puts the status line between them). PURE, as
 * render() is: the view carries the call, the typed number and the missed list.
 *
 * Soft-key labels sit in four equal columns, soft1 leftmost, so a label is always above its key;
 * a label too long for its column is shortened (SHORT), never cut mid-word at random.
 */
import type { CallEnd, CallView, MissedCall } from "./calls.ts";
import { fieldLine } from "./text-entry.ts";

/** What a call screen needs beyond the rest of PhoneView. */
export interface CallScreenView {
  /** The number on the dial or transfer screen. */
  dialText: string;
  call?: CallView;
  missed: readonly MissedCall[];
  missedIndex: number;
  ended?: CallEnd;
  /** Epoch → "HH:MM" in the phone's time zone (formatted by the caller: this file has no clock). */
  timeOf: (epochMs: number) => string;
}

/** Shorter labels for narrow columns. */
const SHORT: Record<string, string> = {
  Redial: "Redl",
  Missed: "Miss",
  Resume: "Resm",
  Unmute: "Unmt",
  Answer: "Answ",
  Reject: "Rejct",
  Clear: "Clr",
};

/** Four soft-key labels, each in its quarter of the line (the last one flush right). */
export function softKeys(labels: readonly [string, string, string, string], cols: number): string {
  const w = Math.max(1, Math.floor(cols / 4));
  const shorten = (label: string, room: number): string => {
    if (label.length <= room) return label;
    const short = SHORT[label];
    return (short && short.length <= room ? short : label).slice(0, room);
  };
  const first = labels
    .slice(0, 3)
    .map((l) => shorten(l, w - 1).padEnd(w))
    .join("");
  const last = shorten(labels[3], cols - first.length);
  return (first + last.padStart(cols - first.length)).trimEnd();
}

/** "mm:ss", or "h:mm:ss" past an hour. */
export function callTimer(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n: number) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${two(m)}:${two(s % 60)}`;
}

/** Why a call ended, in the words of the call-ended screen. */
export function endText(end: CallEnd): string {
  switch (end.reason) {
    case "line-lost":
      return "Line lost";
    case "busy":
      return "Busy";
    case "declined":
      return "Declined";
    case "unavailable":
      return "Unavailable";
    case "no-answer":
    case "timeout":
      return "No answer";
    case "transferred":
      return "Transferred";
    case "media":
      return "No audio: call ended";
    case "remote-cancelled":
      return "Missed call";
    case "rejected":
      return "Rejected";
    case "failed":
      return end.status === 404 ? "Number not found" : "Call failed";
    default:
      return "Call ended";
  }
}

function spread(left: string, right: string, cols: number): string {
  const gap = cols - left.length - right.length;
  if (gap >= 1) return left + " ".repeat(gap) + right;
  return `${left.slice(0, Math.max(0, cols - right.length - 1))} ${right}`.slice(-cols);
}

/** The party on line 1: the name, with the number flush right when it says something more. */
function partyLine(name: string, number: string, cols: number): string {
  return name === number || name.length + number.length + 1 > cols ? name : spread(name, number, cols);
}

/** Line 1 once DTMF is typed: the name, and flush right the digits (their tail, if long). */
function digitsLine(name: string, digits: string, cols: number): string {
  const room = Math.max(1, cols - Math.min(name.length, Math.floor(cols / 2)) - 1);
  const shown = digits.slice(-room);
  return spread(name.slice(0, Math.max(0, cols - shown.length - 1)), shown, cols);
}

export function dialBody(v: CallScreenView, cols: number): [string, string, string] {
  return [
    fieldLine("Dial: ", v.dialText, cols),
    v.dialText ? "#=Call" : "Enter number",
    softKeys(["Back", "Clear", "", "Call"], cols),
  ];
}

export function transferBody(v: CallScreenView, cols: number): [string, string, string] {
  const c = v.call;
  const progress = c?.transfer ? `Transfer ${c.transfer}` : c ? `Transfer ${c.name}` : "Transfer";
  return [fieldLine("To: ", v.dialText, cols), progress, softKeys(["Back", "Clear", "", "Send"], cols)];
}

export function callBody(v: CallScreenView, cols: number): [string, string, string] {
  const c = v.call;
  if (!c) return ["", "", ""];
  switch (c.phase) {
    case "calling":
      return [partyLine(c.name, c.number, cols), "Calling…", softKeys(["", "", "", "End"], cols)];
    case "ringing":
      return [partyLine(c.name, c.number, cols), "Ringing…", softKeys(["", "", "", "End"], cols)];
    case "incoming":
      return [
        c.name,
        c.name === c.number ? "Incoming call" : c.number,
        softKeys(["Answer", "", "", "Reject"], cols),
      ];
    case "connected": {
      if (c.transferringTo !== undefined) {
        // Being transferred: the one thing to say; on a narrow display over two lines.
        const text = `Transferring to ${c.transferringTo}…`;
        const lines: [string, string] =
          text.length <= cols
            ? [partyLine(c.name, c.number, cols), text]
            : ["Transferring to", `${c.transferringTo}…`];
        return [...lines, softKeys(["", "", "", "End"], cols)];
      }
      const flags = [
        c.held ? "On hold" : c.heldByPeer ? "Held" : "",
        c.muted ? "Muted" : "",
        c.transfer === "failed" ? "Xfer failed" : c.transfer && c.transfer !== "succeeded" ? "Xfer…" : "",
      ]
        .filter(Boolean)
        .join(" ");
      return [
        c.digits ? digitsLine(c.name, c.digits, cols) : partyLine(c.name, c.number, cols),
        spread(callTimer(c.connectedMs ?? 0), flags, cols).trimEnd(),
        softKeys([c.held ? "Resume" : "Hold", "Xfer", c.muted ? "Unmute" : "Mute", "End"], cols),
      ];
    }
  }
}

export function missedBody(v: CallScreenView, cols: number): [string, string, string] {
  const n = v.missed.length;
  if (n === 0) return ["Missed calls", "None", softKeys(["Back", "", "", ""], cols)];
  const i = Math.min(Math.max(v.missedIndex, 0), n - 1);
  const m = v.missed[i]!;
  return [
    spread(`Missed ${i + 1}/${n}`, v.timeOf(m.at), cols),
    partyLine(m.name, m.number, cols),
    softKeys(["Back", "", "", "Call"], cols),
  ];
}

export function endedBody(v: CallScreenView, cols: number): [string, string, string] {
  const e = v.ended;
  if (!e) return ["Call ended", "", ""];
  return [endText(e), e.durationMs > 0 ? spread(e.name, callTimer(e.durationMs), cols) : e.name, ""];
}
