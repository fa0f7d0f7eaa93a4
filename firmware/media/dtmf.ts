/**
 * DTMF as RTP telephone-events (RFC 4733): the payload codec, the packets one key press
 * becomes, and a receiver that turns a redundant packet stream back into one report per press.
 *
 * Payload (§2.3), one or more 4-byte blocks:
 *    0                   1                   2                   3
 *    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *   |     event     |E|R| volume    |          duration             |
 *   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * event: 0–9, * = 10, # = 11, A–D = 12–15 (§3.2); E: this packet ends the event; R: reserved,
 * sent 0 and ignored; volume: the tone's power as 0 to −63 dBm0 (sent as 0–63); duration: how
 * long the event has lasted so far, in RTP timestamp units, counted from the packet's timestamp.
 *
 * How a press travels (§2.5.1): every packet of one event carries the event's start as its RTP
 * timestamp; the first has the M bit; each update reports the longer duration so far; the
 * final packet has E set and is sent three times in all, because a lost end would otherwise
 * leave the far end's tone playing. Every one of those packets takes a new sequence number
 * from the stream it rides on (the audio's SSRC), retransmissions included.
 *
 * Receiving (§2.5.2): the same event arrives several times (updates, three ends, network
 * duplicates, packets after their successor). An event is known by its RTP timestamp (and code):
 * the receiver reports a press once, on its first packet of any kind (the M-bit packet may be
 * the one that was lost), and its end once.
 */
import { tsDiff } from "./rtp.ts";

export type DtmfDigit =
  | "0"
  | "1"
  | "2"
  | "3"
  | "4"
  | "5"
  | "6"
  | "7"
  | "8"
  | "9"
  | "*"
  | "#"
  | "A"
  | "B"
  | "C"
  | "D";

const DIGITS: readonly DtmfDigit[] = [
  "0",
  "1",
  "2",
  "3",
  "4",
  "5",
  "6",
  "7",
  "8",
  "9",
  "*",
  "#",
  "A",
  "B",
  "C",
  "D",
];

/** The RFC 4733 §3.2 event code of a digit. */
export function dtmfEventCode(digit: DtmfDigit): number {
  return DIGITS.indexOf(digit);
}

/** The digit an event code names, or undefined for codes that are not DTMF (16 is flash, etc.). */
export function dtmfDigitOf(event: number): DtmfDigit | undefined {
  return DIGITS[event];
}

export function isDtmfDigit(s: string): s is DtmfDigit {
  return (DIGITS as readonly string[]).includes(s);
}

/** The conventional clock of audio/telephone-event (the rate parameter's default, §7.1.1). */
export const TELEPHONE_EVENT_CLOCK_RATE = 8000;

export interface TelephoneEvent {
  /** 0–255. */
  event: number;
  /** E bit. */
  end: boolean;
  /** 0–63, meaning 0 to −63 dBm0. */
  volume: number;
  /** 0–65535 timestamp units since the event began. */
  duration: number;
}

export type TelephoneEventParseResult =
  | { ok: true; events: TelephoneEvent[] }
  | { ok: false; error: "empty" | "bad-length"; detail: string };

export function encodeTelephoneEvent(e: TelephoneEvent): Uint8Array {
  const check = (name: string, v: number, max: number) => {
    if (!Number.isInteger(v) || v < 0 || v > max)
      throw new RangeError(`telephone-event ${name} ${v} not in 0..${max}`);
  };
  check("event", e.event, 0xff);
  check("volume", e.volume, 0x3f);
  check("duration", e.duration, 0xffff);
  // R stays 0: §2.3 has senders clear it.
  return Uint8Array.of(e.event, (e.end ? 0x80 : 0) | e.volume, e.duration >> 8, e.duration & 0xff);
}

/**
 * Reads a telephone-event payload. More than one block is legal (§2.5.1.5 packs consecutive
 * events into one packet); a payload whose length is not a multiple of 4 is malformed.
 */
export function decodeTelephoneEvents(payload: Uint8Array): TelephoneEventParseResult {
  if (payload.length === 0) return { ok: false, error: "empty", detail: "telephone-event payload is empty" };
  if (payload.length % 4 !== 0)
    return {
      ok: false,
      error: "bad-length",
      detail: `${payload.length} bytes is not a whole number of 4-byte events`,
    };
  const events: TelephoneEvent[] = [];
  for (let i = 0; i < payload.length; i += 4) {
    const b1 = payload[i + 1]!;
    events.push({
      event: payload[i]!,
      end: (b1 & 0x80) !== 0,
      volume: b1 & 0x3f, // the R bit (0x40) is ignored on receipt
      duration: (payload[i + 2]! << 8) | payload[i + 3]!,
    });
  }
  return { ok: true, events };
}

/** One packet of a press, for the caller to send `atMs` after the key went down. */
export interface DtmfPacket {
  atMs: number;
  marker: boolean;
  /** The event's start: the same for every packet of the press. */
  timestamp: number;
  payload: Uint8Array;
  end: boolean;
  /** The duration field carried, in timestamp units. */
  duration: number;
}

export interface DtmfPressOptions {
  /** RTP timestamp of the moment the key went down, on the stream's media clock. */
  startTimestamp: number;
  /** How long the tone lasts. */
  durationMs: number;
  /** Time between updates; 20 ms keeps in step with 20 ms audio frames, which the events replace. */
  intervalMs?: number;
  clockRate?: number;
  /** 0–63 (−dBm0); 10 is the level a keypad typically sends. */
  volume?: number;
}

/**
 * The packets for one key press: an update every interval (the first with M), the final one
 * with E when the tone stops, and that final packet twice more, one interval apart.
 *
 * A press longer than 0xFFFF timestamp units (8.19 s at 8 kHz) is reported as that long: the
 * duration field cannot say more, and the long-event segmentation of §2.5.1.3 buys a keypad
 * nothing. Throws RangeError for durations or intervals that are not positive (a caller's bug).
 */
export function dtmfPressPackets(digit: DtmfDigit, o: DtmfPressOptions): DtmfPacket[] {
  const rate = o.clockRate ?? TELEPHONE_EVENT_CLOCK_RATE;
  const interval = o.intervalMs ?? 20;
  const volume = o.volume ?? 10;
  if (!(o.durationMs > 0) || !(interval > 0))
    throw new RangeError("DTMF duration and interval must be > 0 ms");
  const event = dtmfEventCode(digit);
  const units = (ms: number) => Math.min(0xffff, Math.round((ms * rate) / 1000));
  const timestamp = o.startTimestamp >>> 0;
  const packets: DtmfPacket[] = [];
  const push = (atMs: number, end: boolean) => {
    const duration = units(Math.min(atMs, o.durationMs));
    packets.push({
      atMs,
      marker: packets.length === 0,
      timestamp,
      payload: encodeTelephoneEvent({ event, end, volume, duration }),
      end,
      duration,
    });
  };
  // Updates go out as each interval of tone has elapsed; the one that reaches the full duration
  // is the end.
  for (let t = interval; t < o.durationMs; t += interval) push(t, false);
  push(o.durationMs, true);
  push(o.durationMs + interval, true);
  push(o.durationMs + 2 * interval, true);
  return packets;
}

/** What a receiver learned from one packet. */
export type DtmfReport =
  | { kind: "digit"; digit: DtmfDigit; event: number; timestamp: number }
  | {
      kind: "end";
      digit: DtmfDigit;
      event: number;
      timestamp: number;
      /** In timestamp units, and in ms on the receiver's clock rate. */
      duration: number;
      durationMs: number;
    };

/** The parts of an RTP packet the receiver needs (an RtpPacket fits). */
export interface TelephoneEventPacket {
  timestamp: number;
  payload: Uint8Array;
}

/** How many past events the receiver remembers, to recognise their stragglers. */
const REMEMBERED_EVENTS = 16;

/**
 * Turns telephone-event packets (already filtered by payload type and SSRC) into one "digit"
 * report per press, as soon as any packet of it arrives, and one "end" report when its first
 * E packet arrives. Retransmitted ends, duplicates and late updates of a press already seen
 * report nothing. Non-DTMF event codes (flash, modem tones) are ignored, as are malformed
 * payloads: they come from the wire and must not upset the call.
 */
export class DtmfReceiver {
  private readonly clockRate: number;
  /** Recent events by `${timestamp}:${event}`, oldest first, and whether their end was reported. */
  private readonly seen = new Map<string, { timestamp: number; ended: boolean }>();
  /** Count of payloads that did not parse, for diagnostics. */
  malformed = 0;

  constructor(o: { clockRate?: number } = {}) {
    this.clockRate = o.clockRate ?? TELEPHONE_EVENT_CLOCK_RATE;
  }

  receive(p: TelephoneEventPacket): DtmfReport[] {
    const parsed = decodeTelephoneEvents(p.payload);
    if (!parsed.ok) {
      this.malformed++;
      return [];
    }
    const reports: DtmfReport[] = [];
    // Packed events (§2.5.1.5) follow one another without gaps: each begins where the one
    // before it ended, so each block's own start is the packet's timestamp plus the durations
    // before it.
    let timestamp = p.timestamp >>> 0;
    for (const e of parsed.events) {
      this.take(e, timestamp, reports);
      timestamp = (timestamp + e.duration) >>> 0;
    }
    return reports;
  }

  private take(e: TelephoneEvent, timestamp: number, reports: DtmfReport[]): void {
    const digit = dtmfDigitOf(e.event);
    if (digit === undefined) return;
    const key = `${timestamp}:${e.event}`;
    let state = this.seen.get(key);
    if (!state) {
      // Once the memory is full, an unknown event older than everything remembered may be a
      // straggler of one already forgotten; reporting it would repeat a digit. A press that is
      // merely reordered behind its successor is newer than that and still gets through.
      if (this.seen.size >= REMEMBERED_EVENTS && tsDiff(timestamp, this.oldestRemembered()) < 0) return;
      state = { timestamp, ended: false };
      this.seen.set(key, state);
      if (this.seen.size > REMEMBERED_EVENTS) this.seen.delete(this.seen.keys().next().value!);
      reports.push({ kind: "digit", digit, event: e.event, timestamp });
    }
    if (e.end && !state.ended) {
      state.ended = true;
      reports.push({
        kind: "end",
        digit,
        event: e.event,
        timestamp,
        duration: e.duration,
        durationMs: (e.duration * 1000) / this.clockRate,
      });
    }
  }

  private oldestRemembered(): number {
    let oldest: number | undefined;
    for (const s of this.seen.values())
      if (oldest === undefined || tsDiff(s.timestamp, oldest) < 0) oldest = s.timestamp;
    return oldest ?? 0;
  }
}
