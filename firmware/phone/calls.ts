/**
 * The phone's calls, without keys or screens: one CallAgent per line the account hands out
 * (accounts/account.ts LineEvent), the one call the phone shows, the missed-calls list and the
 * number last dialled. Phone maps keys onto these operations and renders `view()`.
 *
 * A desk phone with one line key: one call at a time. A second incoming call while one is up
 * (ringing, dialling out or connected) is refused 486 Busy Here and listed as missed, as a
 * VVX or T4x with call waiting off does. A refusal the user chooses (the Reject soft key) is 603
 * Decline: RFC 3261 §21.6.2's "explicitly does not wish to take part", which Lync shows as
 * declined rather than busy.
 *
 * Every call holds its line (`line.keep()`) until it ends, so a failback or failover drains the
 * old flow instead of cutting the call; a line lost outright hangs its calls up while the flow is
 * still there (BYE), and the end says "line lost".
 *
 * Being transferred (RFC 3515, RFC 5589 §6 blind transfer): a REFER from the other party of the
 * connected call is accepted (202, NOTIFY "100 Trying" — call.ts), and the desk dials the Refer-To
 * target with the REFER's Referred-By (RFC 3892) as the transfer's "referral" call. Its progress
 * goes back to the transferor as NOTIFY sipfrag (180 once it rings, its final status at the end).
 * Once it is answered, or once the transferor hangs up on us whichever comes first, the referral
 * becomes the desk's one call and the original one is "replaced": it ends quietly (the
 * transferor's BYE, or ours after REPLACED_BYE_MS as a Lync transferee does when the transferor
 * leaves it up), its end reported as "transferred". A referral that fails (busy, not found, no
 * answer) leaves the original call as it was, with "Xfer failed" on the screen. While a referral
 * is under way, hold, mute, DTMF and transfer are refused; hanging up ends both calls.
 *
 * DTMF: digits typed during a connected call go out as RFC 4733 telephone-events through the
 * call's media port when it can (`sendDigit`, the real port's), and the view keeps what was typed.
 */
import type { Line, LineEvent } from "../accounts/account.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { Emitter } from "../core/emitter.ts";
import type { Logger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { domainOf } from "../sip/registration/register-request.ts";
import type { Call, CallEvent, EndReason, TransferProgress } from "../sip/session/call.ts";
import { CallAgent } from "../sip/session/call-agent.ts";
import { type RemoteParty, transferTarget } from "../sip/session/call-requests.ts";
import type { MediaPort, MediaPortFactory } from "../sip/session/media-port.ts";

/** What the screen shows of the call: dialling out, ringing there, ringing here, connected. */
export type CallPhase = "calling" | "ringing" | "incoming" | "connected";

export interface CallView {
  direction: "outgoing" | "incoming";
  phase: CallPhase;
  /** Display name, else the number. */
  name: string;
  /** The user part of the other end's URI (an extension), or the URI. */
  number: string;
  /** Time connected so far, ms (connected calls). */
  connectedMs?: number;
  /** We hold the peer. */
  held: boolean;
  /** The peer holds us. */
  heldByPeer: boolean;
  muted: boolean;
  /** A blind transfer under way. */
  transfer?: TransferProgress;
  /** We are being transferred: the number the transfer dials, until it is answered or fails. */
  transferringTo?: string;
  /** DTMF digits typed during the call, oldest first (the last DIGITS_KEPT). */
  digits: string;
}

export interface MissedCall {
  name: string;
  number: string;
  /** What a call back dials: the caller's URI. */
  uri: string;
  /** Epoch ms. */
  at: number;
  /** Refused 486 because a call was up. */
  busy: boolean;
}

export interface CallEnd {
  direction: "outgoing" | "incoming";
  name: string;
  number: string;
  /** The call's EndReason, or "line-lost" when the flow under it went (failover, network). */
  reason: EndReason | "line-lost";
  status?: number;
  durationMs: number;
}

/** What to dial: a URI, and what the screen and the redial key call it. */
export interface DialTarget {
  uri: string;
  label: string;
}

export type DeskEvent =
  /** A call rings here (the phone shows the incoming screen). */
  | { type: "incoming" }
  /** The active call changed (state, party, hold, transfer, mute, digits). */
  | { type: "changed" }
  /**
   * The transfer's call replaced the original one (answered, or the transferor hung up): `end`
   * is the original call's, reason "transferred"; the desk's call is now the new one.
   */
  | { type: "transferred"; end: CallEnd }
  | { type: "ended"; end: CallEnd }
  | { type: "missed"; missed: MissedCall }
  /** The ringer (tone and the ring LED) goes on or off. */
  | { type: "ring"; on: boolean }
  /** Whether a call can be placed changed (a line came or went). */
  | { type: "lines"; canCall: boolean };

export interface CallDeskOptions {
  clock: Clock;
  random: Random;
  logger: Logger;
  /** The media port of each call; absent: no calls (lines are only logged). */
  media?: MediaPortFactory;
  displayName?: string;
  /** Missed calls kept, newest first; default 20. */
  missedMax?: number;
  /** Take a REFER from the other party (be transferred); default true, as a VVX or T4x does. */
  acceptTransfers?: boolean;
}

/** After the transfer's call is answered, how long the transferor has to send its BYE before we do. */
export const REPLACED_BYE_MS = 2_000;
/** How long a key press's telephone-event lasts: the phone sees the press, not the release. */
export const DTMF_DIGIT_MS = 100;
/** DTMF digits the view keeps (the in-call screen shows the tail that fits). */
const DIGITS_KEPT = 32;
const DTMF_KEYS = /^[0-9*#]$/;

/** A SIP status for the transferor's last NOTIFY (RFC 3515 §2.4.5) from how the referral ended. */
function referralStatus(reason: EndReason, status: number | undefined): number {
  if (status !== undefined && status >= 300) return status;
  switch (reason) {
    case "busy":
      return 486;
    case "declined":
      return 603;
    case "unavailable":
      return 480;
    case "no-answer":
    case "timeout":
      return 408;
    case "media":
      return 488;
    case "cancelled":
    case "local-hangup":
      return 487;
    default:
      return 500;
  }
}

/** The Request-URI of a number typed on the keypad: sip:DIGITS@<our domain> (as Lync routes an extension). */
export function dialUri(digits: string, aor: string): string {
  return `sip:${digits}@${domainOf(aor)}`;
}

/** The user part of a SIP or tel URI ("4712"), else the URI itself. */
export function numberOf(uri: string): string {
  const m = /^(?:sips?:([^@;>]+)@|tel:([^;>]+))/i.exec(uri);
  return m?.[1] ?? m?.[2] ?? uri;
}

/** Name and number as a phone shows them, preferring what the network asserts (RFC 3325). */
export function partyLabel(
  party: RemoteParty | undefined,
  fallback: string,
): { name: string; number: string } {
  if (!party) return { name: fallback, number: fallback };
  const asserted = party.asserted[0];
  const number = numberOf(asserted?.uri ?? party.uri);
  const name = party.displayName ?? party.asserted.find((p) => p.displayName)?.displayName ?? number;
  return { name, number };
}

interface LineSlot {
  line: Line;
  agent: CallAgent;
  /** Replaced, kept open only for the call on it. */
  draining: boolean;
}

interface Active {
  call: Call | undefined;
  slot: LineSlot;
  direction: "outgoing" | "incoming";
  port: MediaPort | undefined;
  muted: boolean;
  release: () => void;
  /** The label the call was dialled with (outgoing). */
  label: string;
  /** The line went while the call was up: its end is "line-lost" whatever the SIP said. */
  lineLost: boolean;
  answered: boolean;
  /** DTMF typed in this call. */
  digits: string;
  /** We are being transferred: the call placed for the REFER, until it replaces this one or fails. */
  referral?: Active;
  /** It rang (its 180 went to the transferor). */
  rang?: boolean;
  /** Replaced by its referral: its end is quiet; only the line keep is let go. */
  replaced?: boolean;
  /** Our BYE, should the transferor leave a replaced call up. */
  byeTimer?: TimerHandle;
}

/** A media port that can mute the microphone (firmware/platform/call-media.ts's has setMuted). */
type MutablePort = MediaPort & { setMuted?: (on: boolean) => void; mute?: (on: boolean) => void };

/**
 * A media port that sends DTMF (the real port's `sendDigit`: RFC 4733 events when negotiated,
 * in-band tones otherwise; false while no media runs). The phone layer names only this much of it.
 */
type DtmfPort = MediaPort & { sendDigit?: (digit: string, durationMs?: number) => boolean | undefined };

export class CallDesk {
  readonly events = new Emitter<DeskEvent>();
  private readonly slots: LineSlot[] = [];
  private current: LineSlot | undefined;
  private active: Active | undefined;
  private ringing = false;
  private readonly missedList: MissedCall[] = [];
  private unseen = 0;
  private last: DialTarget | undefined;
  /** The port the agent's media factory made last: the one of the call it is building. */
  private lastPort: MediaPort | undefined;
  private warnedNoMedia = false;

  constructor(private readonly o: CallDeskOptions) {}

  /** A call can be placed now: a line is up, media can be made and no call is up. */
  get canCall(): boolean {
    return !!this.current && !this.active;
  }

  /** A line is up (whether or not a call is). */
  get hasLine(): boolean {
    return !!this.current;
  }

  /** A call exists: ringing here or there, connected, or being torn down. */
  get busy(): boolean {
    return !!this.active;
  }

  get missed(): readonly MissedCall[] {
    return this.missedList;
  }

  get unseenMissed(): number {
    return this.unseen;
  }

  markMissedSeen(): void {
    this.unseen = 0;
  }

  /**
   * The list kept in flash from before a restart: after the calls missed since (newest first),
   * bounded as every list is; its unseen ones still count as unseen.
   */
  restoreMissed(list: readonly MissedCall[], unseen: number): void {
    const before = this.missedList.length;
    this.missedList.push(...list);
    this.missedList.splice(this.o.missedMax ?? 20);
    const restored = this.missedList.length - before;
    this.unseen += Math.max(0, Math.min(unseen, restored));
  }

  /** Forgets the list (sign-out, factory reset: nothing of the last user stays). */
  clearMissed(): void {
    this.missedList.length = 0;
    this.unseen = 0;
  }

  get lastDialled(): DialTarget | undefined {
    return this.last;
  }

  /** Our address of record on the current line (what a typed number is dialled in). */
  get aor(): string | undefined {
    return this.current?.line.identity.aor;
  }

  onLine(e: LineEvent): void {
    if (e.type === "line") this.addLine(e.line);
    else this.loseLine(e.line, e.draining);
  }

  /** Every line dropped: calls hung up (the phone stops, signs out, resets). */
  stop(): void {
    for (const slot of [...this.slots]) this.loseLine(slot.line, false);
    this.stopRinging();
  }

  // ── operations ─────────────────────────────────────────────────────────────────────────────

  /** Places a call on the current line; false when there is none or a call is up. */
  dial(target: DialTarget): boolean {
    const slot = this.current;
    if (!slot || this.active) return false;
    this.last = target;
    const active: Active = {
      call: undefined,
      slot,
      direction: "outgoing",
      port: undefined,
      muted: false,
      release: slot.line.keep(),
      label: target.label,
      lineLost: false,
      answered: false,
      digits: "",
    };
    this.active = active;
    this.lastPort = undefined;
    this.o.logger.info("dialling", { target: target.uri });
    // The listener is on before the INVITE goes: a call that fails at once still reports its end.
    const call = slot.agent.dial(target.uri, (e, c) => {
      active.call = c;
      this.onCallEvent(active, e);
    });
    active.call = call;
    active.port = this.lastPort;
    if (this.active === active) this.events.emit({ type: "changed" });
    return true;
  }

  answer(): boolean {
    const a = this.active;
    if (!a?.call || a.direction !== "incoming" || a.answered) return false;
    this.stopRinging();
    const ok = a.call.answer();
    if (ok) a.answered = true;
    return ok;
  }

  /** Refuses the ringing call: 603 Decline by default (the user's choice). */
  reject(status = 603): boolean {
    const a = this.active;
    if (!a?.call || a.direction !== "incoming" || a.answered) return false;
    return a.call.reject(status);
  }

  /** Ends the call whatever its state (CANCEL, 603 or BYE). */
  hangUp(): boolean {
    const a = this.active;
    const call = a?.call;
    if (!a || !call) return false;
    // Being transferred: the transfer's call goes first (the transferor hears 487), then ours.
    a.referral?.call?.hangUp();
    call.hangUp();
    return true;
  }

  toggleHold(): boolean {
    const call = this.active?.call;
    if (call?.state !== "confirmed" || this.active?.referral) return false;
    return call.holdState.local ? call.resume() : call.hold();
  }

  /**
   * Mutes our microphone: the UI keeps the flag, and the media port sends silence when it can
   * (`setMuted(on)`, or `mute(on)`, where the port has it).
   */
  toggleMute(): boolean {
    const a = this.active;
    if (!a?.call || !a.answered || a.referral) return false;
    a.muted = !a.muted;
    const port = a.port as MutablePort | undefined;
    if (port?.setMuted) port.setMuted(a.muted);
    else port?.mute?.(a.muted);
    this.events.emit({ type: "changed" });
    return true;
  }

  /** Blind transfer (REFER) of the connected call to `target`. */
  transfer(target: DialTarget): boolean {
    const call = this.active?.call;
    if (call?.state !== "confirmed" || this.active?.referral) return false;
    this.o.logger.info("blind transfer", { target: target.uri });
    return call.blindTransfer(target.uri);
  }

  /**
   * A key of the keypad during a connected call (0-9 * #): a telephone-event through the call's
   * media port, and the digit on the screen. False when no call is connected (or we are being
   * transferred), or the port did not send it (no media yet, or a port without DTMF).
   */
  sendDigit(digit: string): boolean {
    const a = this.active;
    const call = a?.call;
    if (!a || !call || !a.answered || a.referral || !DTMF_KEYS.test(digit)) return false;
    if (call.state !== "confirmed" && call.state !== "answered") return false;
    a.digits = (a.digits + digit).slice(-DIGITS_KEPT);
    const port = a.port as DtmfPort | undefined;
    // A port without sendDigit (a test port, say) sends nothing; one returning void did send.
    const sent = port?.sendDigit ? port.sendDigit(digit, DTMF_DIGIT_MS) !== false : false;
    if (!sent) this.o.logger.debug("digit not sent: the call's media sends no DTMF now");
    this.events.emit({ type: "changed" });
    return sent;
  }

  view(): CallView | undefined {
    const a = this.active;
    const call = a?.call;
    if (!a || !call) return undefined;
    const fallback = a.direction === "outgoing" ? a.label : "Unknown";
    const { name, number } =
      a.direction === "outgoing" && !call.remoteParty?.displayName
        ? { name: a.label, number: a.label }
        : partyLabel(call.remoteParty, fallback);
    const s = call.state;
    const phase: CallPhase =
      s === "answered" || s === "confirmed"
        ? "connected"
        : a.direction === "incoming"
          ? "incoming"
          : s === "ringing" || s === "early"
            ? "ringing"
            : "calling";
    const hold = call.holdState;
    const v: CallView = {
      direction: a.direction,
      phase,
      name,
      number,
      held: hold.local,
      heldByPeer: hold.remote,
      muted: a.muted,
      digits: a.digits,
    };
    if (phase === "connected") v.connectedMs = call.durationMs;
    const t = this.transferState.get(call);
    if (t) v.transfer = t;
    if (a.referral) v.transferringTo = a.referral.label;
    return v;
  }

  private readonly transferState = new WeakMap<Call, TransferProgress>();

  // ── lines ──────────────────────────────────────────────────────────────────────────────────

  private addLine(line: Line): void {
    const media = this.o.media;
    if (!media) {
      if (!this.warnedNoMedia)
        this.o.logger.warn("a line is up but no media port factory is wired: calls are off");
      this.warnedNoMedia = true;
      return;
    }
    const agent = new CallAgent({
      core: line.core,
      clock: this.o.clock,
      random: this.o.random,
      logger: this.o.logger.child("call"),
      identity: {
        aor: line.identity.aor,
        epid: line.identity.epid,
        ...(this.o.displayName ? { displayName: this.o.displayName } : {}),
      },
      contact: line.contact,
      acceptTransfers: this.o.acceptTransfers ?? true,
      media: () => {
        const port = media();
        this.lastPort = port;
        return port;
      },
    });
    const slot: LineSlot = { line, agent, draining: false };
    agent.onIncoming((call) => this.onIncoming(call, slot));
    this.slots.push(slot);
    this.current = slot;
    this.o.logger.info("line up", { registrar: line.registrar });
    this.events.emit({ type: "lines", canCall: this.canCall });
  }

  private loseLine(line: Line, draining: boolean): void {
    const slot = this.slots.find((s) => s.line === line);
    if (!slot) return;
    if (this.current === slot) this.current = undefined;
    const a = this.active;
    if (draining && a?.slot === slot) {
      // The call carries on over the old flow; the agent goes when the call ends.
      slot.draining = true;
      this.o.logger.info("line replaced; the call in progress stays on the old flow", {
        registrar: line.registrar,
      });
    } else {
      this.slots.splice(this.slots.indexOf(slot), 1);
      if (a?.slot === slot) a.lineLost = true;
      this.o.logger.info("line lost", { registrar: line.registrar });
      // Hangs up while the flow is still open (BYE / CANCEL), then stops taking calls there.
      slot.agent.stop();
    }
    this.events.emit({ type: "lines", canCall: this.canCall });
  }

  // ── calls ──────────────────────────────────────────────────────────────────────────────────

  private onIncoming(call: Call, slot: LineSlot): void {
    const port = this.lastPort;
    const { name, number } = partyLabel(call.remoteParty, "Unknown");
    if (this.active || slot.draining) {
      // One call at a time: busy, and the user sees who tried.
      call.reject(486);
      this.addMissed({ name, number, uri: call.remoteParty?.uri ?? "", at: this.o.clock.now(), busy: true });
      return;
    }
    const active: Active = {
      call,
      slot,
      direction: "incoming",
      port,
      muted: false,
      release: slot.line.keep(),
      label: number,
      lineLost: false,
      answered: false,
      digits: "",
    };
    this.active = active;
    call.on((e) => this.onCallEvent(active, e));
    this.o.logger.info("incoming call", { from: call.remoteParty?.uri });
    this.startRinging();
    this.events.emit({ type: "incoming" });
  }

  private onCallEvent(a: Active, e: CallEvent): void {
    if (a.replaced) {
      // The transfer's call has taken over: this one only has its line keep to give back.
      if (e.type === "state" && e.state === "terminated") {
        a.byeTimer?.cancel();
        a.release();
      }
      return;
    }
    if (this.active !== a) return;
    if (e.type === "transfer" && a.call) this.transferState.set(a.call, e.progress);
    if (e.type === "transfer-requested") {
      this.onTransferRequested(a, e.target, e.referredBy);
      return;
    }
    if (e.type === "state" && e.state === "terminated") {
      // The transferor hung up on us while the transfer's call is still ringing: that call goes on.
      if (a.referral) this.promote(a, a.referral);
      else this.finish(a, e.reason ?? "failed", e.status);
      return;
    }
    if (e.type === "state" && (e.state === "answered" || e.state === "confirmed")) {
      a.answered = true;
      this.stopRinging();
    }
    this.events.emit({ type: "changed" });
  }

  // ── being transferred ──────────────────────────────────────────────────────────────────────

  private onTransferRequested(a: Active, referTo: string, referredBy: string | undefined): void {
    const original = a.call;
    if (!original) return;
    const slot = this.current;
    if (a.referral || !slot) {
      // One transfer at a time; and with no line up (failover under way) there is nowhere to dial.
      this.o.logger.info("transfer refused", { reason: a.referral ? "one under way" : "no line" });
      original.reportTransfer(503, "Service Unavailable");
      return;
    }
    const target = transferTarget(referTo);
    const label = numberOf(target);
    this.o.logger.info("being transferred", { target });
    const next: Active = {
      call: undefined,
      slot,
      direction: "outgoing",
      port: undefined,
      muted: false,
      release: slot.line.keep(),
      label,
      lineLost: false,
      answered: false,
      digits: "",
    };
    a.referral = next;
    this.transferState.delete(original);
    this.lastPort = undefined;
    const call = slot.agent.dial(
      target,
      (e, c) => {
        next.call = c;
        this.onReferralEvent(a, next, e);
      },
      referredBy !== undefined ? { referredBy } : {},
    );
    next.call = call;
    next.port = this.lastPort;
    if (a.referral === next) this.events.emit({ type: "changed" });
  }

  private onReferralEvent(a: Active, next: Active, e: CallEvent): void {
    if (this.active === next) {
      this.onCallEvent(next, e);
      return;
    }
    if (a.referral !== next || e.type !== "state") return;
    const original = a.call!;
    if ((e.state === "ringing" || e.state === "early") && !next.rang) {
      next.rang = true;
      original.reportTransfer(180);
      this.events.emit({ type: "changed" });
    } else if (e.state === "confirmed") {
      next.answered = true;
      original.reportTransfer(200);
      this.promote(a, next);
    } else if (e.state === "terminated") {
      a.referral = undefined;
      next.release();
      const status = referralStatus(e.reason ?? "failed", e.status);
      this.o.logger.info("transfer failed", { reason: e.reason, status });
      original.reportTransfer(status);
      this.transferState.set(original, "failed");
      this.events.emit({ type: "changed" });
    }
  }

  /** The transfer's call becomes the desk's call; the original ends quietly (see the header). */
  private promote(a: Active, next: Active): void {
    a.referral = undefined;
    a.replaced = true;
    this.active = next;
    const call = a.call!;
    const { name, number } = partyLabel(call.remoteParty, a.direction === "outgoing" ? a.label : "Unknown");
    const end: CallEnd = {
      direction: a.direction,
      name,
      number,
      reason: "transferred",
      durationMs: call.durationMs,
    };
    if (call.state === "terminated") a.release();
    else
      a.byeTimer = this.o.clock.setTimer(REPLACED_BYE_MS, () => {
        a.byeTimer = undefined;
        call.hangUp();
      });
    this.o.logger.info("transferred", { to: next.label, durationMs: end.durationMs });
    this.events.emit({ type: "transferred", end });
    this.events.emit({ type: "changed" });
  }

  private finish(a: Active, reason: EndReason, status: number | undefined): void {
    this.active = undefined;
    this.stopRinging();
    a.release();
    const call = a.call;
    const fallback = a.direction === "outgoing" ? a.label : "Unknown";
    const { name, number } =
      a.direction === "outgoing" && !call?.remoteParty?.displayName
        ? { name: a.label, number: a.label }
        : partyLabel(call?.remoteParty, fallback);
    const lost = a.lineLost || reason === "transport";
    const end: CallEnd = {
      direction: a.direction,
      name,
      number,
      reason: lost ? "line-lost" : reason,
      ...(status !== undefined ? { status } : {}),
      durationMs: call?.durationMs ?? 0,
    };
    this.o.logger.info("call ended", { reason: end.reason, status, durationMs: end.durationMs });
    if (a.direction === "incoming" && !a.answered && reason !== "rejected" && reason !== "local-hangup")
      this.addMissed({
        name,
        number,
        uri: call?.remoteParty?.uri ?? "",
        at: this.o.clock.now(),
        busy: false,
      });
    if (a.slot.draining) {
      // The old flow's last call: its agent goes, and (the keep released) the account closes it.
      a.slot.agent.stop();
      const i = this.slots.indexOf(a.slot);
      if (i >= 0) this.slots.splice(i, 1);
    }
    this.events.emit({ type: "ended", end });
    this.events.emit({ type: "lines", canCall: this.canCall });
  }

  private addMissed(m: MissedCall): void {
    this.missedList.unshift(m);
    this.missedList.splice(this.o.missedMax ?? 20);
    this.unseen++;
    this.o.logger.info("missed call", { from: m.uri, busy: m.busy });
    this.events.emit({ type: "missed", missed: m });
  }

  private startRinging(): void {
    if (this.ringing) return;
    this.ringing = true;
    this.events.emit({ type: "ring", on: true });
  }

  private stopRinging(): void {
    if (!this.ringing) return;
    this.ringing = false;
    this.events.emit({ type: "ring", on: false });
  }
}
