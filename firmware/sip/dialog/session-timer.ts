/**
 * Session timers, RFC 4028: a call is kept alive by a periodic refresh (re-INVITE or UPDATE)
 * from one side, the refresher, so that a peer or proxy that lost the other end notices.
 *
 * Negotiation (pure functions over messages):
 * - The UAC of a refresh transaction (initial INVITE, re-INVITE, UPDATE) offers
 *   `Supported: timer`, `Session-Expires: N[;refresher=uac|uas]` and `Min-SE` (§7.1, §7.4).
 * - `refresher=uac|uas` names a role IN THAT TRANSACTION: when the callee sends a re-INVITE it
 *   is the UAC of it. Results here say "local" or "remote" instead, so a dialog never confuses
 *   the two.
 * - The UAS keeps the interval or lowers it (never below the request's Min-SE), picks the
 *   refresher if the UAC left it open, and rejects an interval below its own Min-SE with
 *   422 + Min-SE when the UAC supports timers (§9). The UAC answers a 422 by retrying with the
 *   422's Min-SE (§7.3). A 2xx without Session-Expires means no session timer (§7.2).
 * - Ranges: Min-SE is never below 90 s (§5). A server value below 90 s is clamped to 90; an
 *   absurd one (above one day) is clamped to a day when we refresh (refreshing more often than
 *   asked is harmless), and refused for the watchdog when the peer refreshes (a BYE a day in
 *   would cut a call the peer keeps refreshing, and a timer of days is as good as none).
 *   Every adjustment is reported as a `note` so the TU can log it.
 *
 * Timing (`SessionTimer`, on the injected Clock): the refresher refreshes at half the interval
 * (§7.4, §10); without a successful refresh, the BYE goes out at the interval minus the smaller
 * of 32 s and a third of it (§10) — both sides arm this watchdog, so a refresher whose refresh
 * failed or hangs hangs up too. 1800 s (the RFC's recommended value, and what Lync pools are said
 * to use) refreshes at 900 s and hangs up at 1768 s.
 */
import type { Clock, TimerHandle } from "../../core/clock.ts";
import { parseDigits, parseGenericParams, trimWs } from "../grammar/lexer.ts";
import { header, headerList, type SipRequest, type SipResponse } from "../message/message.ts";

/** §5: "the minimum allowed value … MUST NOT be less than 90 seconds". */
export const MIN_SE_FLOOR_S = 90;
/** §4: recommended Session-Expires. */
export const DEFAULT_SESSION_EXPIRES_S = 1800;
/** Above this a server value is absurd (one day). */
export const MAX_SESSION_EXPIRES_S = 86_400;

export type RefresherParam = "uac" | "uas";
export type Refresher = "local" | "remote";

export interface SessionExpires {
  seconds: number;
  refresher?: RefresherParam;
}

/**
 * Session-Expires = delta-seconds *(SEMI se-params), se-params = refresher-param / generic-param
 * (§4). An unknown refresher value is dropped (as if absent). Undefined when malformed.
 */
export function parseSessionExpires(value: string): SessionExpires | undefined {
  const semi = value.indexOf(";");
  const seconds = parseDigits(trimWs(semi < 0 ? value : value.slice(0, semi)), 0xffffffff);
  if (seconds === undefined) return undefined;
  let params: Map<string, string | null>;
  try {
    params = semi < 0 ? new Map() : parseGenericParams(value, semi, "Session-Expires");
  } catch {
    return undefined;
  }
  const r = params.get("refresher")?.toLowerCase();
  return r === "uac" || r === "uas" ? { seconds, refresher: r } : { seconds };
}

/** Min-SE = delta-seconds *(SEMI generic-param) (§5); undefined when malformed. */
export function parseMinSe(value: string): number | undefined {
  const semi = value.indexOf(";");
  return parseDigits(trimWs(semi < 0 ? value : value.slice(0, semi)), 0xffffffff);
}

export function formatSessionExpires(se: SessionExpires): string {
  return se.refresher ? `${se.seconds};refresher=${se.refresher}` : String(se.seconds);
}

function supportsTimer(msg: SipRequest | SipResponse): boolean {
  return headerList(msg, "Supported").some((t) => t.toLowerCase() === "timer");
}

function minSeOf(msg: SipRequest | SipResponse): number | undefined {
  const v = header(msg, "Min-SE");
  return v === undefined ? undefined : parseMinSe(v);
}

/** Refresher as a role of the transaction, from our side: we are its UAC or its UAS. */
function toParam(r: Refresher, weAre: RefresherParam): RefresherParam {
  return r === "local" ? weAre : weAre === "uac" ? "uas" : "uac";
}

function fromParam(p: RefresherParam, weAre: RefresherParam): Refresher {
  return p === weAre ? "local" : "remote";
}

/** What was agreed: the interval in seconds and who refreshes. */
export interface Negotiated {
  interval: number;
  refresher: Refresher;
}

/** A session timer offer, as the UAC of a refresh transaction makes it. */
export interface Offer {
  interval: number;
  minSe: number;
  /** Undefined leaves the choice to the UAS (§7.1). */
  refresher?: Refresher;
}

export const DEFAULT_OFFER: Offer = { interval: DEFAULT_SESSION_EXPIRES_S, minSe: MIN_SE_FLOOR_S };

/** The headers of a request that offers a session timer (initial INVITE, re-INVITE, UPDATE). */
export function offerHeaders(offer: Offer): Array<[string, string]> {
  const minSe = Math.max(MIN_SE_FLOOR_S, offer.minSe);
  const se: SessionExpires = { seconds: Math.max(minSe, offer.interval) };
  if (offer.refresher) se.refresher = toParam(offer.refresher, "uac");
  return [
    ["Supported", "timer"],
    ["Session-Expires", formatSessionExpires(se)],
    ["Min-SE", String(minSe)],
  ];
}

/** The offer of a refresh of an agreed timer: same interval and refresher (§7.4). */
export function refreshOffer(current: Negotiated, minSe = MIN_SE_FLOOR_S): Offer {
  return { interval: current.interval, minSe, refresher: current.refresher };
}

/**
 * Range checks for an interval that came from the peer (see the file comment). `refresher` is
 * who will refresh it. Returns the interval to run, or undefined to run no timer.
 */
export function checkInterval(
  seconds: number,
  refresher: Refresher,
): { interval: number | undefined; note?: string } {
  if (seconds < MIN_SE_FLOOR_S)
    return {
      interval: MIN_SE_FLOOR_S,
      note: `Session-Expires ${seconds} s below ${MIN_SE_FLOOR_S} s: clamped`,
    };
  if (seconds > MAX_SESSION_EXPIRES_S) {
    if (refresher === "local")
      return {
        interval: MAX_SESSION_EXPIRES_S,
        note: `Session-Expires ${seconds} s above ${MAX_SESSION_EXPIRES_S} s: clamped`,
      };
    return {
      interval: undefined,
      note: `Session-Expires ${seconds} s above ${MAX_SESSION_EXPIRES_S} s: refused`,
    };
  }
  return { interval: seconds };
}

export interface UacResult {
  /** Undefined: no session timer for this session (now). */
  timer: Negotiated | undefined;
  notes: string[];
}

/**
 * The UAC reads the 2xx to its refresh transaction (§7.2). Session-Expires present: the timer
 * runs with its interval and refresher (a 2xx that names none leaves us, the UAC, refreshing:
 * a refresh too many is harmless, a missing one ends the call). Absent: no timer.
 */
export function uacResult(res: SipResponse): UacResult {
  const v = header(res, "Session-Expires");
  if (v === undefined) return { timer: undefined, notes: [] };
  const se = parseSessionExpires(v);
  if (!se) return { timer: undefined, notes: [`malformed Session-Expires "${v}": no session timer`] };
  const notes: string[] = [];
  let refresher: Refresher;
  if (se.refresher) refresher = fromParam(se.refresher, "uac");
  else {
    refresher = "local";
    notes.push("Session-Expires without refresher: we refresh");
  }
  const checked = checkInterval(se.seconds, refresher);
  if (checked.note) notes.push(checked.note);
  return {
    timer: checked.interval === undefined ? undefined : { interval: checked.interval, refresher },
    notes,
  };
}

/**
 * The UAC reads a 422 (§7.3): the retry carries Session-Expires and Min-SE of at least the 422's
 * Min-SE (and never less than what it already asked). Refused when the 422 has no usable
 * Min-SE, an absurd one, or one that would not change the offer (which would loop).
 */
export function retryAfter422(
  res: SipResponse,
  offer: Offer,
): { ok: true; offer: Offer } | { ok: false; reason: string } {
  const minSe = minSeOf(res);
  if (minSe === undefined) return { ok: false, reason: "422 without a valid Min-SE" };
  if (minSe > MAX_SESSION_EXPIRES_S) return { ok: false, reason: `422 asks for Min-SE ${minSe} s: absurd` };
  const floor = Math.max(MIN_SE_FLOOR_S, minSe);
  if (floor <= offer.interval && floor <= offer.minSe)
    return { ok: false, reason: `422 Min-SE ${minSe} s does not exceed what we offered` };
  const next: Offer = { interval: Math.max(offer.interval, floor), minSe: Math.max(offer.minSe, floor) };
  if (offer.refresher) next.refresher = offer.refresher;
  return { ok: true, offer: next };
}

/** The UAS's local policy. */
export interface UasPolicy {
  /** Our Min-SE: shorter intervals are rejected with 422 (never below 90). */
  minSe: number;
  /** Who refreshes when the UAC leaves it open and supports timers. Default "remote". */
  refresher?: Refresher;
}

export const DEFAULT_UAS_POLICY: UasPolicy = { minSe: MIN_SE_FLOOR_S };

export type UasAnswer =
  | {
      kind: "accept";
      /** Undefined: the request asked for no timer, so the session runs without one. */
      timer: Negotiated | undefined;
      /** Headers for the 2xx (Session-Expires with refresher, Require: timer when the UAC refreshes). */
      headers: Array<[string, string]>;
      notes: string[];
    }
  | { kind: "reject"; status: 400 | 422; reason: string; headers: Array<[string, string]> };

/** The UAS answers a refresh request (initial INVITE, re-INVITE, UPDATE) it is accepting (§9). */
export function uasAnswer(req: SipRequest, policy: UasPolicy = DEFAULT_UAS_POLICY): UasAnswer {
  const v = header(req, "Session-Expires");
  if (v === undefined) return { kind: "accept", timer: undefined, headers: [], notes: [] };
  const se = parseSessionExpires(v);
  if (!se) return { kind: "reject", status: 400, reason: "Malformed Session-Expires", headers: [] };
  const ourMin = Math.max(MIN_SE_FLOOR_S, policy.minSe);
  const uacSupports = supportsTimer(req);
  const notes: string[] = [];
  let seconds = se.seconds;
  if (seconds < ourMin) {
    // §9: 422 only to a UAC that understands it; otherwise a proxy asked on its behalf, and
    // the interval is raised to our minimum instead.
    if (uacSupports)
      return {
        kind: "reject",
        status: 422,
        reason: "Session Interval Too Small",
        headers: [["Min-SE", String(ourMin)]],
      };
    notes.push(`Session-Expires ${seconds} s below our Min-SE ${ourMin} s: raised`);
    seconds = ourMin;
  }
  let refresher: Refresher;
  if (se.refresher) refresher = fromParam(se.refresher, "uas");
  else if (!uacSupports)
    refresher = "local"; // a UAC without timer support cannot refresh
  else refresher = policy.refresher ?? "remote";
  if (seconds > MAX_SESSION_EXPIRES_S) {
    // §9: the UAS may lower the interval, but not below the request's Min-SE.
    const lowered = Math.max(MAX_SESSION_EXPIRES_S, minSeOf(req) ?? 0);
    notes.push(`Session-Expires ${seconds} s lowered to ${lowered} s`);
    seconds = lowered;
  }
  const checked = checkInterval(seconds, refresher);
  if (checked.note) notes.push(checked.note);
  const param = toParam(refresher, "uas");
  const headers: Array<[string, string]> = [
    ["Session-Expires", formatSessionExpires({ seconds, refresher: param })],
  ];
  if (param === "uac") headers.push(["Require", "timer"]);
  return {
    kind: "accept",
    timer: checked.interval === undefined ? undefined : { interval: checked.interval, refresher },
    headers,
    notes,
  };
}

/** §10: the BYE goes out this many seconds after the last refresh without a new one. */
export function expirySeconds(interval: number): number {
  return interval - Math.min(32, interval / 3);
}

export interface SessionTimerUser {
  /** We are the refresher and half the interval has passed: send a re-INVITE or UPDATE. */
  onRefresh(): void;
  /** No successful refresh in time: send BYE (§10). */
  onExpire(): void;
}

/** The timers of one session; restart it after every successful refresh, either direction. */
export class SessionTimer {
  private refreshTimer: TimerHandle | undefined;
  private expireTimer: TimerHandle | undefined;
  private _current: Negotiated | undefined;
  private _refreshAt: number | undefined;
  private _expireAt: number | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly user: SessionTimerUser,
  ) {}

  get current(): Negotiated | undefined {
    return this._current;
  }

  /** Monotonic ms of the next refresh (when we refresh) and of the BYE watchdog. */
  get refreshAt(): number | undefined {
    return this._refreshAt;
  }

  get expireAt(): number | undefined {
    return this._expireAt;
  }

  /** (Re)arms the timers for an agreed interval; `undefined` stops them (no session timer). */
  start(agreed: Negotiated | undefined): void {
    this.stop();
    if (!agreed) return;
    // Range-check again: a caller that skipped checkInterval must not arm a runaway timer.
    const interval = Math.min(Math.max(agreed.interval, MIN_SE_FLOOR_S), MAX_SESSION_EXPIRES_S);
    this._current = { interval, refresher: agreed.refresher };
    const now = this.clock.monotonic();
    if (agreed.refresher === "local") {
      const ms = (interval * 1000) / 2;
      this._refreshAt = now + ms;
      this.refreshTimer = this.clock.setTimer(ms, () => {
        this.refreshTimer = undefined;
        this._refreshAt = undefined;
        this.user.onRefresh();
      });
    }
    const ms = expirySeconds(interval) * 1000;
    this._expireAt = now + ms;
    this.expireTimer = this.clock.setTimer(ms, () => {
      this.expireTimer = undefined;
      this._expireAt = undefined;
      this.refreshTimer?.cancel();
      this.refreshTimer = undefined;
      this._refreshAt = undefined;
      this.user.onExpire();
    });
  }

  stop(): void {
    this.refreshTimer?.cancel();
    this.expireTimer?.cancel();
    this.refreshTimer = undefined;
    this.expireTimer = undefined;
    this._refreshAt = undefined;
    this._expireAt = undefined;
    this._current = undefined;
  }
}
