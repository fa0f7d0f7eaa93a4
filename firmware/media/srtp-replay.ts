/**
 * Packet index estimation (RFC 3711 §3.3.1 and Appendix A) and the replay list (§3.3.2).
 *
 * Both are split into a pure question (estimate, check) and a separate update (commit), because
 * the RFC allows the update only after the packet's tag has verified: a forged packet must not
 * move s_l, the ROC or the window, or one spoofed datagram could desynchronise the call.
 */

/** SRTP-WINDOW-SIZE: the RFC's minimum, and what the a=crypto peers we meet use. */
export const REPLAY_WINDOW = 64;

const ROC_MODULUS = 2 ** 32;

/** The receiver's (or sender's) view of one SSRC: ROC and s_l, once the first packet is in. */
export interface RolloverState {
  roc: number;
  /** s_l, the highest sequence number seen; undefined until a packet has been accepted. */
  highestSeq: number | undefined;
}

/** What estimate() decided: v (the ROC for this packet) and where v sits relative to the ROC. */
export interface IndexEstimate {
  /** v mod 2^32: what the tag and the IV use. */
  readonly roc: number;
  readonly seq: number;
  /** −1, 0 or +1: v = ROC−1, ROC or ROC+1. */
  readonly step: -1 | 0 | 1;
  /**
   * 2^16·v + SEQ with v unreduced, so that at ROC 0 a packet taken for ROC−1 orders before the
   * stream's start (negative) instead of 2^48 ahead of it, and the replay window stays sound.
   */
  readonly index: number;
}

/**
 * Appendix A, in the signed arithmetic it asks for. s_l defaults to SEQ for the first packet of
 * an SSRC (§3.3.1: "initialize s_l to the RTP sequence number of the first observed packet").
 */
export function estimateIndex(state: RolloverState, seq: number): IndexEstimate {
  const sl = state.highestSeq ?? seq;
  let step: -1 | 0 | 1 = 0;
  if (sl < 32_768) {
    if (seq - sl > 32_768) step = -1;
  } else if (sl - 32_768 > seq) step = 1;
  const v = state.roc + step;
  return { roc: ((v % ROC_MODULUS) + ROC_MODULUS) % ROC_MODULUS, seq, step, index: v * 65_536 + seq };
}

/** The §3.3.1 update, once the packet has been authenticated. */
export function commitIndex(state: RolloverState, e: IndexEstimate): void {
  if (state.highestSeq === undefined) {
    state.highestSeq = e.seq;
    return;
  }
  if (e.step === 0) {
    if (e.seq > state.highestSeq) state.highestSeq = e.seq;
  } else if (e.step === 1) {
    state.highestSeq = e.seq;
    state.roc = e.roc;
  }
}

export type ReplayVerdict = "ok" | "replay" | "too-old";

/**
 * A 64-entry sliding window over packet indices (the RFC 2401 bitmap): bit k of `seen` says
 * whether index top−k was accepted. Indices are at most 48 bits, exact in a double.
 */
export class ReplayWindow {
  private top = Number.NEGATIVE_INFINITY;
  private seen = 0n;

  /** Whether a packet with this index may still be accepted. Does not change the window. */
  check(index: number): ReplayVerdict {
    if (index > this.top) return "ok";
    const lag = this.top - index;
    if (lag >= REPLAY_WINDOW) return "too-old";
    return (this.seen >> BigInt(lag)) & 1n ? "replay" : "ok";
  }

  /** Records an accepted index, first moving the window ahead when it is newer than any before. */
  accept(index: number): void {
    if (index > this.top) {
      const shift = index - this.top;
      this.seen = shift >= REPLAY_WINDOW ? 1n : ((this.seen << BigInt(shift)) | 1n) & ((1n << 64n) - 1n);
      this.top = index;
    } else {
      this.seen |= 1n << BigInt(this.top - index);
    }
  }

  /** The highest accepted index, or undefined before the first. */
  highest(): number | undefined {
    return Number.isFinite(this.top) ? this.top : undefined;
  }
}
