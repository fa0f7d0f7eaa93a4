/**
 * The vocabulary of a call: its states, why it ended, the events it emits for the phone UI and
 * the options it is built with (call.ts is the machine).
 */
import type { Clock } from "../../core/clock.ts";
import type { Logger } from "../../core/logger.ts";
import type { Random } from "../../core/random.ts";
import type { UserAgentCore } from "../user-agent-core.ts";
import type { LocalIdentity, RemoteParty } from "./call-requests.ts";
import type { MediaPort } from "./media-port.ts";

export type CallDirection = "outgoing" | "incoming";
export type CallState =
  | "idle"
  | "calling"
  | "ringing"
  | "early"
  | "incoming"
  | "answered"
  | "confirmed"
  | "terminated";

export type EndReason =
  | "local-hangup"
  | "remote-hangup"
  /** We cancelled before an answer. */
  | "cancelled"
  /** The caller gave up before we answered (a missed call). */
  | "remote-cancelled"
  /** We refused the incoming call (486 / 603 …). */
  | "rejected"
  | "busy"
  | "declined"
  | "unavailable"
  | "failed"
  | "no-answer"
  | "timeout"
  | "transport"
  | "session-expired"
  | "no-ack"
  | "media"
  | "transferred";

export type TransferProgress = "requested" | "accepted" | "trying" | "succeeded" | "failed";

export type CallEvent =
  | { type: "state"; state: CallState; previous: CallState; reason?: EndReason; status?: number; at: number }
  | { type: "party"; party: RemoteParty }
  | { type: "hold"; local: boolean; remote: boolean }
  /** An offer was refused: by us (`by: "local"`, we answered 488) or by the peer. */
  | { type: "offer-refused"; by: "local" | "remote"; status: number; code?: string }
  | { type: "transfer"; progress: TransferProgress; status?: number }
  | { type: "transfer-requested"; target: string; referredBy?: string }
  | { type: "note"; message: string };

export interface SessionTimerSettings {
  /** Session-Expires we offer, seconds (default 1800). */
  interval?: number;
  /** Our Min-SE (default 90): shorter intervals from the peer get 422. */
  minSe?: number;
  /** Who refreshes when we may choose; default: we as UAC leave it open, as UAS the UAC refreshes. */
  refresher?: "local" | "remote";
}

export interface CallOptions {
  core: UserAgentCore;
  clock: Clock;
  random: Random;
  logger: Logger;
  media: MediaPort;
  identity: LocalIdentity;
  /** Our Contact: the GRUU the registration got (Lync), else the registered Contact URI. */
  contact: string;
  userAgent?: string;
  /** false: offer no session timer (a peer's is still honoured). */
  sessionTimer?: SessionTimerSettings | false;
  /** An outgoing call nobody answers is cancelled after this long; default 180 000 ms. */
  noAnswerMs?: number;
  /** A REFER from the peer: true → 202 and "transfer-requested"; false (default) → 603. */
  acceptTransfers?: boolean;
}

/** How an outgoing call is placed. */
export interface DialOptions {
  /** The Referred-By of the REFER this call carries out (RFC 3892), copied as it came. */
  referredBy?: string;
}

export const CALL_USER_AGENT = "handset/0.1 (Lync-compatible SIP desk phone)";
/** The EndReason of a failure status to our INVITE. */
export function endReasonOf(status: number): EndReason {
  if (status === 486 || status === 600) return "busy";
  if (status === 603) return "declined";
  if (status === 480) return "unavailable";
  if (status === 408) return "timeout";
  if (status === 488 || status === 606) return "media";
  return "failed";
}
