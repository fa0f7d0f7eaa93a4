/**
 * What a call asks of its media: the RFC 3264 offer/answer exchange, seen from the signalling
 * side. The session never reads SDP; it carries the text between the media port and the
 * messages (INVITE, 18x, 2xx, ACK, re-INVITE) and turns a refusal into 488 Not Acceptable Here.
 *
 * The real port (firmware/media/offer-answer.ts behind it, wired at the composition root) owns
 * codecs, SRTP keys, the RTP socket and the o= version; a test port is a few lines. One port
 * per call.
 *
 * The contract:
 * - At most one offer of ours is outstanding: createOffer starts one, acceptAnswer or rollback
 *   ends it. A refresh offer (RFC 4028 §10) repeats the current description unchanged.
 * - answerOffer answers the peer's offer; a refusal leaves the agreed media as it was (the
 *   session answers 488 and the call carries on, RFC 3261 §14.2).
 * - hold(on) is our side's wish: later offers and answers say sendonly (or inactive when the
 *   peer holds us too); the session sends the re-INVITE.
 * - connected() once, when the call is answered (we answered, or the peer's 2xx came): until
 *   then nothing of the microphone goes out, and an incoming call's audio is not played while
 *   it rings (an outgoing call may play the peer's early media, its ringback).
 * - close() once, when the call ends: stop streaming, free the ports.
 */

/** A description the port produced: SDP text (or a multipart body, with its content type). */
export interface MediaDescription {
  kind: "sdp";
  sdp: string;
  /** Defaults to application/sdp. */
  contentType?: string;
  /** For an answer or an accepted answer: the peer's description holds us (sendonly/inactive). */
  remoteHold?: boolean;
}

/** The peer's description cannot be taken; the session answers 488 (or ends the call). */
export interface MediaRefusal {
  kind: "refused";
  /** A stable code for logs and events ("srtp-required", "no-common-codec" …). */
  code: string;
  /** Reason phrase of the 488 (Microsoft's peers say "Encryption Levels not compatible"). */
  reason: string;
  /** RFC 3261 §20.43 Warning for the 488 (301 address, 302 transport, 304 media, 305 format). */
  warning?: { code: number; text: string };
}

export interface MediaAgreement {
  kind: "agreed";
  remoteHold?: boolean;
}

/** Why an offer is made: the first one, a change (hold, resume), or a session refresh. */
export type OfferPurpose = "initial" | "update" | "refresh";

export interface MediaPort {
  createOffer(o: { purpose: OfferPurpose }): MediaDescription | MediaRefusal;
  answerOffer(sdp: string, o?: { contentType?: string }): MediaDescription | MediaRefusal;
  acceptAnswer(sdp: string, o?: { contentType?: string }): MediaAgreement | MediaRefusal;
  /** Our outstanding offer will not be answered (rejected, glare): the last agreement stands. */
  rollback(): void;
  hold(on: boolean): void;
  /** The call is answered: the user now hears the peer and is heard. Optional for test ports. */
  connected?(): void;
  close(): void;
}

/** Makes the port of one call. */
export type MediaPortFactory = () => MediaPort;
