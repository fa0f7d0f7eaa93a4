import { describe, expect, it } from "vitest";
import {
  DtmfReceiver,
  type DtmfReport,
  decodeTelephoneEvents,
  dtmfDigitOf,
  dtmfEventCode,
  dtmfPressPackets,
  encodeTelephoneEvent,
  isDtmfDigit,
} from "../../firmware/media/dtmf.ts";
import { parseRtp, type RtpPacket, RtpSender } from "../../firmware/media/rtp.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const TE = 101;

function rtp(b: Uint8Array): RtpPacket {
  const r = parseRtp(b);
  if (!r.ok) throw new Error(r.error);
  return r.packet;
}

/** Sends presses through an RtpSender the way a call would, returning the wire packets in order. */
function sendPresses(
  presses: Array<{ digit: Parameters<typeof dtmfPressPackets>[0]; atMs: number; durationMs: number }>,
) {
  const sender = new RtpSender({ ssrc: 0x1234, payloadType: 0, initialSequence: 1, initialTimestamp: 0 });
  const out: Array<{ atMs: number; packet: RtpPacket }> = [];
  for (const p of presses) {
    const plan = dtmfPressPackets(p.digit, {
      startTimestamp: (p.atMs * 8) >>> 0,
      durationMs: p.durationMs,
      intervalMs: 50,
    });
    for (const q of plan)
      out.push({
        atMs: p.atMs + q.atMs,
        packet: rtp(sender.packet(q.payload, { timestamp: q.timestamp, marker: q.marker, payloadType: TE })),
      });
  }
  return out;
}

const digitsOf = (reports: DtmfReport[]) =>
  reports
    .filter((r) => r.kind === "digit")
    .map((r) => r.digit)
    .join("");

describe("telephone-event payload (RFC 4733 §2.3)", () => {
  it("numbers the 16 DTMF events as §3.2 does", () => {
    expect("0123456789*#ABCD".split("").map((d) => dtmfEventCode(d as never))).toEqual([...Array(16).keys()]);
    expect(dtmfDigitOf(11)).toBe("#");
    expect(dtmfDigitOf(16)).toBeUndefined(); // flash is an event, not a digit
    expect(isDtmfDigit("*")).toBe(true);
    expect(isDtmfDigit("E")).toBe(false);
  });

  it("lays out event, E, R, volume and duration", () => {
    expect(hex(encodeTelephoneEvent({ event: 9, end: false, volume: 10, duration: 400 }))).toBe("090a0190");
    expect(hex(encodeTelephoneEvent({ event: 11, end: true, volume: 63, duration: 0xffff }))).toBe(
      "0bbfffff",
    );
    expect(decodeTelephoneEvents(Uint8Array.of(0x05, 0x8a, 0x06, 0x40))).toEqual({
      ok: true,
      events: [{ event: 5, end: true, volume: 10, duration: 1600 }],
    });
  });

  it("ignores the R bit on receipt and reads packed events", () => {
    const r = decodeTelephoneEvents(Uint8Array.of(1, 0x40 | 7, 0, 160, 2, 0x80 | 0x40 | 7, 3, 32));
    expect(r).toEqual({
      ok: true,
      events: [
        { event: 1, end: false, volume: 7, duration: 160 },
        { event: 2, end: true, volume: 7, duration: 800 },
      ],
    });
  });

  it("returns typed errors for payloads that are not whole events", () => {
    for (const [n, error] of [
      [0, "empty"],
      [3, "bad-length"],
      [5, "bad-length"],
      [7, "bad-length"],
    ] as const) {
      const r = decodeTelephoneEvents(new Uint8Array(n));
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toBe(error);
    }
  });

  it("refuses field values the payload cannot carry", () => {
    expect(() => encodeTelephoneEvent({ event: 256, end: false, volume: 0, duration: 0 })).toThrow(
      RangeError,
    );
    expect(() => encodeTelephoneEvent({ event: 1, end: false, volume: 64, duration: 0 })).toThrow(RangeError);
    expect(() => encodeTelephoneEvent({ event: 1, end: false, volume: 0, duration: 65536 })).toThrow(
      RangeError,
    );
  });
});

describe("sending a key press (RFC 4733 §2.5.1)", () => {
  // The shape of RFC 4733 §5's example: "9" for 200 ms with 50 ms updates, then "1" from 880 ms,
  // at 8 kHz. Every packet of a press carries the press's start as its timestamp; only the first
  // has M; durations grow by 400 units per update; the end goes out three times; each packet,
  // retransmissions included, takes the next sequence number.
  it("produces the packet sequence of the two-digit example", () => {
    const wire = sendPresses([
      { digit: "9", atMs: 0, durationMs: 200 },
      { digit: "1", atMs: 880, durationMs: 200 },
    ]);
    const rows = wire.map(({ atMs, packet }) => {
      const ev = decodeTelephoneEvents(packet.payload);
      if (!ev.ok) throw new Error(ev.error);
      const e = ev.events[0]!;
      return [
        atMs,
        packet.marker ? 1 : 0,
        packet.timestamp,
        packet.sequenceNumber,
        e.event,
        e.duration,
        e.end ? 1 : 0,
      ];
    });
    expect(rows).toEqual([
      // ms   M  ts    seq ev dur   E
      [50, 1, 0, 1, 9, 400, 0],
      [100, 0, 0, 2, 9, 800, 0],
      [150, 0, 0, 3, 9, 1200, 0],
      [200, 0, 0, 4, 9, 1600, 1],
      [250, 0, 0, 5, 9, 1600, 1],
      [300, 0, 0, 6, 9, 1600, 1],
      [930, 1, 7040, 7, 1, 400, 0],
      [980, 0, 7040, 8, 1, 800, 0],
      [1030, 0, 7040, 9, 1, 1200, 0],
      [1080, 0, 7040, 10, 1, 1600, 1],
      [1130, 0, 7040, 11, 1, 1600, 1],
      [1180, 0, 7040, 12, 1, 1600, 1],
    ]);
    expect(wire.every(({ packet }) => packet.payloadType === TE && packet.ssrc === 0x1234)).toBe(true);
  });

  it("defaults to 20 ms updates at volume 10 and ends a press that is not a whole number of updates", () => {
    const plan = dtmfPressPackets("#", { startTimestamp: 0xfffffff0, durationMs: 90 });
    expect(plan.map((p) => p.atMs)).toEqual([20, 40, 60, 80, 90, 110, 130]);
    expect(plan.map((p) => p.duration)).toEqual([160, 320, 480, 640, 720, 720, 720]);
    expect(plan.map((p) => p.end)).toEqual([false, false, false, false, true, true, true]);
    expect(plan.map((p) => p.marker)).toEqual([true, false, false, false, false, false, false]);
    expect(new Set(plan.map((p) => p.timestamp))).toEqual(new Set([0xfffffff0]));
    expect(plan[0]!.payload[1]! & 0x3f).toBe(10);
    // The three ends are identical on the wire: a receiver cannot tell them apart, and need not.
    expect(new Set(plan.filter((p) => p.end).map((p) => hex(p.payload))).size).toBe(1);
  });

  it("sends a press shorter than one update as marker-less ends after a first end with M", () => {
    const plan = dtmfPressPackets("0", { startTimestamp: 0, durationMs: 10 });
    expect(plan.map((p) => [p.atMs, p.marker, p.end, p.duration])).toEqual([
      [10, true, true, 80],
      [30, false, true, 80],
      [50, false, true, 80],
    ]);
  });

  it("caps a very long press at the 16-bit duration and rejects nonsense timing", () => {
    const plan = dtmfPressPackets("5", { startTimestamp: 0, durationMs: 10_000, intervalMs: 1000 });
    expect(plan.at(-1)!.duration).toBe(0xffff);
    expect(Math.max(...plan.map((p) => p.duration))).toBe(0xffff);
    expect(() => dtmfPressPackets("5", { startTimestamp: 0, durationMs: 0 })).toThrow(RangeError);
    expect(() => dtmfPressPackets("5", { startTimestamp: 0, durationMs: 100, intervalMs: 0 })).toThrow(
      RangeError,
    );
  });
});

describe("receiving presses (RFC 4733 §2.5.2)", () => {
  const feed = (rx: DtmfReceiver, packets: RtpPacket[]) => packets.flatMap((p) => rx.receive(p));

  it("reports each press once and its end once, despite the three ends", () => {
    const wire = sendPresses([
      { digit: "9", atMs: 0, durationMs: 200 },
      { digit: "1", atMs: 880, durationMs: 120 },
    ]).map((w) => w.packet);
    const reports = feed(new DtmfReceiver(), wire);
    expect(reports.map((r) => `${r.kind}:${r.digit}`)).toEqual(["digit:9", "end:9", "digit:1", "end:1"]);
    const end9 = reports[1]!;
    expect(end9.kind === "end" && [end9.duration, end9.durationMs]).toEqual([1600, 200]);
  });

  it("tells a repeated key from a retransmission by its timestamp", () => {
    const wire = sendPresses([
      { digit: "1", atMs: 0, durationMs: 100 },
      { digit: "1", atMs: 300, durationMs: 100 },
      { digit: "1", atMs: 600, durationMs: 100 },
    ]).map((w) => w.packet);
    expect(digitsOf(feed(new DtmfReceiver(), wire))).toBe("111");
  });

  it("still reports a press whose M packet was lost, and one whose ends were all lost", () => {
    const wire = sendPresses([
      { digit: "4", atMs: 0, durationMs: 200 },
      { digit: "7", atMs: 500, durationMs: 200 },
    ]).map((w) => w.packet);
    const lossy = wire.filter(
      (p, i) =>
        i !== 0 &&
        !(p.timestamp === 0 && decodeTelephoneEvents(p.payload).ok && (p.payload[1]! & 0x80) !== 0),
    );
    const reports = feed(new DtmfReceiver(), lossy);
    expect(reports.map((r) => `${r.kind}:${r.digit}`)).toEqual(["digit:4", "digit:7", "end:7"]);
  });

  it("ignores duplicates and stragglers that arrive after the next press began", () => {
    const wire = sendPresses([
      { digit: "2", atMs: 0, durationMs: 100 },
      { digit: "3", atMs: 200, durationMs: 100 },
    ]).map((w) => w.packet);
    // Network duplicates everything, then reorders: the last end of "2" arrives after "3" started.
    const doubled = wire.flatMap((p) => [p, p]);
    const last2 = doubled.map((p) => p.timestamp).lastIndexOf(0);
    const [straggler] = doubled.splice(last2, 1);
    doubled.splice(doubled.length - 2, 0, straggler!);
    const reports = feed(new DtmfReceiver(), doubled);
    expect(reports.map((r) => `${r.kind}:${r.digit}`)).toEqual(["digit:2", "end:2", "digit:3", "end:3"]);
  });

  it("lets a press reordered behind its successor through, but not one forgotten long ago", () => {
    const rx = new DtmfReceiver();
    const ev = (digit: number, ts: number) => ({
      timestamp: ts,
      payload: encodeTelephoneEvent({ event: digit, end: false, volume: 10, duration: 160 }),
    });
    expect(digitsOf(rx.receive(ev(6, 2000)))).toBe("6");
    expect(digitsOf(rx.receive(ev(5, 1000)))).toBe("5"); // older, never seen: a real press
    for (let i = 1; i <= 20; i++) rx.receive(ev(i % 10, 2000 + i * 1000));
    // "6" at 2000 has been forgotten; a straggler of it must not ring again.
    expect(rx.receive(ev(6, 2000))).toEqual([]);
    expect(digitsOf(rx.receive(ev(8, 30_000)))).toBe("8");
  });

  it("splits packed events by their durations (§2.5.1.5)", () => {
    const payload = new Uint8Array([
      ...encodeTelephoneEvent({ event: 1, end: true, volume: 10, duration: 800 }),
      ...encodeTelephoneEvent({ event: 2, end: false, volume: 10, duration: 160 }),
    ]);
    const reports = new DtmfReceiver().receive({ timestamp: 8000, payload });
    expect(reports.map((r) => [r.kind, r.digit, r.timestamp])).toEqual([
      ["digit", "1", 8000],
      ["end", "1", 8000],
      ["digit", "2", 8800],
    ]);
  });

  it("counts malformed payloads and ignores events that are not digits", () => {
    const rx = new DtmfReceiver();
    expect(rx.receive({ timestamp: 0, payload: Uint8Array.of(1, 2, 3) })).toEqual([]);
    expect(rx.receive({ timestamp: 0, payload: new Uint8Array() })).toEqual([]);
    expect(rx.malformed).toBe(2);
    expect(
      rx.receive({
        timestamp: 0,
        payload: encodeTelephoneEvent({ event: 16, end: true, volume: 0, duration: 800 }),
      }),
    ).toEqual([]);
  });

  it("converts durations on a 16 kHz event clock", () => {
    const rx = new DtmfReceiver({ clockRate: 16000 });
    const [, end] = rx.receive({
      timestamp: 0,
      payload: encodeTelephoneEvent({ event: 0, end: true, volume: 10, duration: 1600 }),
    });
    expect(end?.kind === "end" && end.durationMs).toBe(100);
  });
});
