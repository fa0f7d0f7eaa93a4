/** CSeq = 1*DIGIT LWS Method (RFC 3261 §20.16); the number must fit 32 bits unsigned. */
import { clip, fail, isToken, parseDigits, trimWs } from "./lexer.ts";

export interface CSeq {
  seq: number;
  method: string;
}

export const MAX_CSEQ = 0xffffffff;

/** Parses a CSeq value; throws SipParseError. */
export function parseCSeq(value: string): CSeq {
  const parts = trimWs(value).split(/[ \t]+/);
  if (parts.length !== 2) fail(`CSeq "${clip(value)}" must be a number and a method`);
  const seq = parseDigits(parts[0]!, MAX_CSEQ);
  if (seq === undefined) fail(`CSeq number "${clip(parts[0]!)}" is not a 32-bit unsigned integer`);
  const method = parts[1]!;
  if (!isToken(method)) fail(`CSeq method "${clip(method)}" is not a token`);
  return { seq, method };
}

export function formatCSeq(cseq: CSeq): string {
  return `${cseq.seq} ${cseq.method}`;
}
