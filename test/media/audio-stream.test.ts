/**
 * AudioStream (firmware/media/audio-stream.ts): two streams wired back to back through a simulated
 * network, deterministic (SeededRandom, simulated time). A sends 1004 Hz, B sends 697+1209 Hz
 * (the "1" key's pair); each side's playout is checked with the tone detector.
 */
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  AudioStream,
  type AudioStreamEvent,
  type AudioStreamOptions,
  type AudioStreamParams,
  type PlayoutFrame,
} from "../../firmware/media/audio-stream.ts";
import { classifyPacket } from "../../firmware/media/demux.ts";
import { encodeUlaw } from "../../firmware/media/g711.ts";
import { parseRtp } from "../../firmware/media/rtp.ts";
import type { SrtpPolicy } from "../../firmware/media/srtp.ts";
import { ToneDetector, ToneGenerator } from "../../firmware/media/tone.ts";

const FRAME = 160;
const TONE_A = [{ hz: 1004, levelDbfs: -10 }];
const TONE_B = [
  { hz: 697, levelDbfs: -12 },
  { hz: 1209, levelDbfs: -12 },
];
const detector = new ToneDetector({ frequencies: [1004, 697, 1209] });
const heard = (pcm: Int16Array) =>
  detector
    .detect(pcm)
    .map((l) => l.hz)
    .sort((x, y) => x - y)
    .join("+");

function policy(r: SeededRandom): SrtpPolicy {
  return {
    suite: "AES_CM_128_HMAC_SHA1_80",
    masterKey: Buffer.from(r.bytes(16)),
    masterSalt: Buffer.from(r.bytes(14)),
  };
}

interface Datagram {
  at: number;
  bytes: Uint8Array;
  n: number;
}

/** What one direction of the simulated network does to packet n (its index on that path). */
interface Path {
  delay?: (n: number) => number;
  drop?: (n: number) => boolean;
  /** Called with every datagram; may return replacements (tamper, duplicate) or [] to drop. */
  mangle?: (bytes: Uint8Array, n: number) => Uint8Array[];
}

class Call {
  readonly a: AudioStream;
  readonly b: AudioStream;
  readonly keys: { a: SrtpPolicy; b: SrtpPolicy };
  t = 0;
  readonly playedA: PlayoutFrame[] = [];
  readonly playedB: PlayoutFrame[] = [];
  readonly eventsA: AudioStreamEvent[] = [];
  readonly eventsB: AudioStreamEvent[] = [];
  /** Every datagram each side put on the wire, before the network touched it. */
  readonly wireA: Uint8Array[] = [];
  readonly wireB: Uint8Array[] = [];
  toA: Path = {};
  toB: Path = {};
  private readonly toneA = new ToneGenerator(TONE_A);
  private readonly toneB = new ToneGenerator(TONE_B);
  private readonly queue: Array<Datagram & { to: "a" | "b" }> = [];
  private readonly counts = { a: 0, b: 0 };
  private readonly pending: Array<{ at: number; bytes: Uint8Array; from: "a" | "b" }> = [];

  constructor(
    o: {
      srtp?: boolean;
      params?: Partial<AudioStreamParams>;
      options?: Partial<AudioStreamOptions>;
      seed?: number;
    } = {},
  ) {
    const keyRandom = new SeededRandom(o.seed ?? 7);
    this.keys = { a: policy(keyRandom), b: policy(keyRandom) };
    const base: AudioStreamParams = {
      payloadType: 0,
      codec: "PCMU",
      telephoneEventPt: 101,
      direction: "sendrecv",
      ...o.params,
    };
    const srtp = o.srtp ?? true;
    this.a = new AudioStream(
      { ...base, ...(srtp ? { srtp: { send: this.keys.a, receive: this.keys.b } } : {}) },
      { random: new SeededRandom(1), ...o.options },
    );
    this.b = new AudioStream(
      { ...base, ...(srtp ? { srtp: { send: this.keys.b, receive: this.keys.a } } : {}) },
      { random: new SeededRandom(2), ...o.options },
    );
    this.a.events.on((e) => this.eventsA.push(e));
    this.b.events.on((e) => this.eventsB.push(e));
  }

  /** Puts a datagram on the path from `from`, as the socket would. */
  send(from: "a" | "b", bytes: Uint8Array | undefined): void {
    if (!bytes) return;
    (from === "a" ? this.wireA : this.wireB).push(bytes);
    const to = from === "a" ? "b" : "a";
    const path = to === "a" ? this.toA : this.toB;
    const n = this.counts[to]++;
    if (path.drop?.(n)) return;
    const out = path.mangle ? path.mangle(bytes, n) : [bytes];
    for (const b of out) this.queue.push({ at: this.t + (path.delay?.(n) ?? 5), bytes: b, n, to });
  }

  /** Injects a datagram straight into a side's receive path at the current time. */
  inject(to: "a" | "b", bytes: Uint8Array) {
    return (to === "a" ? this.a : this.b).receive(bytes, this.t);
  }

  digit(from: "a" | "b", d: Parameters<AudioStream["sendDigit"]>[0], durationMs?: number): void {
    const s = from === "a" ? this.a : this.b;
    for (const p of s.sendDigit(d, this.t, durationMs))
      this.pending.push({ at: this.t + p.atMs, bytes: p.bytes, from });
  }

  /** Runs the call for `ms` of simulated time, one 20 ms tick at a time. */
  run(ms: number, o: { rtcp?: boolean } = {}): void {
    const end = this.t + ms;
    for (; this.t < end; this.t += 20) {
      this.queue.sort((x, y) => x.at - y.at);
      while (this.queue.length > 0 && this.queue[0]!.at <= this.t) {
        const d = this.queue.shift()!;
        // Deliver at the packet's own arrival time: the jitter buffer times transit from it.
        (d.to === "a" ? this.a : this.b).receive(d.bytes, d.at);
      }
      this.playedA.push(this.a.playout(this.t));
      this.playedB.push(this.b.playout(this.t));
      for (let i = 0; i < this.pending.length; ) {
        const p = this.pending[i]!;
        if (p.at <= this.t) {
          this.send(p.from, p.bytes);
          this.pending.splice(i, 1);
        } else i++;
      }
      this.send("a", this.a.sendFrame(this.toneA.next(FRAME), this.t));
      this.send("b", this.b.sendFrame(this.toneB.next(FRAME), this.t));
      if (o.rtcp !== false) {
        this.send("a", this.a.rtcp(this.t));
        this.send("b", this.b.rtcp(this.t));
      }
    }
  }
}

/** Of the frames played from `from` on, the share in which exactly `tones` were heard. */
function share(frames: PlayoutFrame[], tones: string, from = 10): number {
  const tail = frames.slice(from);
  return tail.filter((f) => heard(f.pcm) === tones).length / tail.length;
}

const isRtp = (b: Uint8Array) => classifyPacket(b) === "rtp";

describe("AudioStream back to back through SRTP", () => {
  it("carries 1004 Hz A→B and 697+1209 Hz B→A, encrypted on the wire", () => {
    const call = new Call();
    call.run(2000);
    expect(share(call.playedB, "1004")).toBe(1);
    expect(share(call.playedA, "697+1209")).toBe(1);
    const sa = call.a.stats();
    const sb = call.b.stats();
    expect(sa.packetsSent).toBe(100);
    expect(sb.packetsReceived).toBe(99); // the last one is still in flight
    expect(sb.remoteSsrc).toBe(sa.ssrc);
    expect(sb.srtpBadTag + sb.srtpReplayed + sb.malformed + sb.lost + sb.concealed).toBe(0);
    // 12-byte header + 160 bytes of G.711 + 10-byte tag, and the payload is not the plain µ-law.
    const first = call.wireA.find(isRtp)!;
    expect(first.length).toBe(12 + 160 + 10);
    const plain = encodeUlaw(new ToneGenerator(TONE_A).next(FRAME));
    expect(Buffer.from(first.subarray(12, 172)).equals(Buffer.from(plain))).toBe(false);
    expect(parseRtp(first).ok && parseRtp(first).ok).toBe(true);
    expect(sb.jitterBufferDelayMs).toBeGreaterThan(0);
    expect(sb.jitterBufferDelayMs).toBeLessThanOrEqual(100);
  });

  it("numbers from the injected Random: the same seed gives the same SSRC, sequence and timestamp", () => {
    const one = new Call();
    const two = new Call();
    one.run(40);
    two.run(40);
    expect(Buffer.from(one.wireA[0]!).equals(Buffer.from(two.wireA[0]!))).toBe(true);
    expect(one.a.ssrc).not.toBe(one.b.ssrc);
    const hdr = parseRtp(one.wireA.find(isRtp)!);
    expect(hdr.ok && hdr.packet.marker).toBe(true);
  });

  it("counts and drops a tampered packet and a replayed one; playout does not notice", () => {
    const call = new Call();
    call.toB.mangle = (bytes, n) => {
      if (!isRtp(bytes)) return [bytes];
      if (n === 20) {
        const t = Uint8Array.from(bytes);
        t[40] = t[40]! ^ 0x01; // one flipped payload bit
        return [t, bytes]; // the forgery, then the genuine packet
      }
      if (n === 30) return [bytes, bytes]; // a replay of a packet already taken
      return [bytes];
    };
    call.run(2000);
    const s = call.b.stats();
    expect(s.srtpBadTag).toBe(1);
    expect(s.srtpReplayed).toBe(1);
    expect(s.packetsReceived).toBe(99); // RTCP is counted apart; the last packet is in flight
    expect(s.concealed).toBe(0);
    expect(share(call.playedB, "1004")).toBe(1);
  });

  it("a replay after the packet has long played is still refused (too old or replayed)", () => {
    const call = new Call();
    call.run(400);
    const old = call.wireA.filter(isRtp)[2]!;
    call.run(2000);
    const r = call.inject("b", old);
    expect(r.authenticated).toBe(false);
    expect(r.reason).toBe("too-old");
    expect(call.b.stats().srtpReplayed).toBe(1);
  });

  it("conceals packet loss and reordering, and counts both", () => {
    const call = new Call({ seed: 3 });
    const lossy = new SeededRandom(99);
    const dropped = new Set<number>();
    call.toB.drop = (n) => {
      const d = n > 5 && lossy.unit() < 0.05;
      if (d) dropped.add(n);
      return d;
    };
    // Every 10th packet is 30 ms late: it arrives after its successor.
    call.toB.delay = (n) => (n % 10 === 5 ? 35 : 5);
    call.run(6000, { rtcp: false });
    const s = call.b.stats();
    expect(dropped.size).toBeGreaterThan(5);
    expect(s.lost).toBe(dropped.size);
    expect(s.reordered).toBeGreaterThan(10);
    expect(s.concealed).toBeGreaterThanOrEqual(dropped.size - s.late);
    expect(call.playedB.filter((f) => f.kind === "concealed").length).toBe(s.concealed);
    // A concealed frame repeats the last one, quieter: the tone is still there.
    expect(share(call.playedB, "1004")).toBeGreaterThan(0.97);
  });
});

describe("DTMF", () => {
  it("sends RFC 4733 events in place of audio, and the far side reports each digit once", () => {
    const call = new Call();
    call.run(400);
    const before = call.b.stats();
    call.digit("a", "5");
    call.run(400);
    call.digit("a", "#", 200);
    call.digit("a", "1"); // queued behind "#"
    call.run(1000);
    const digits = call.eventsB.filter((e) => e.type === "dtmf").map((e) => e.type === "dtmf" && e.digit);
    expect(digits).toEqual(["5", "#", "1"]);
    const ends = call.eventsB.filter((e) => e.type === "dtmf-end");
    expect(ends.map((e) => e.type === "dtmf-end" && Math.round(e.durationMs))).toEqual([100, 200, 100]);
    const s = call.b.stats();
    expect(s.digitsReceived).toBe(3);
    expect(call.a.stats().digitsSent).toBe(3);
    // Events took the audio frames' slots: nothing counted lost, nothing concealed.
    expect(s.lost).toBe(0);
    expect(s.concealed - before.concealed).toBe(0);
    // 7 packets per press (5 updates/ends at 100 ms, 2 more ends); a 200 ms press has 12.
    const te = call.wireA.filter((b) => {
      const p = parseRtp(b);
      return p.ok && p.packet.payloadType === 101;
    });
    expect(te.length).toBe(7 + 12 + 7);
    // A's sequence numbers stay contiguous across audio and events.
    const seqs = call.wireA.filter(isRtp).map((b) => {
      const p = parseRtp(b);
      return p.ok ? p.packet.sequenceNumber : -1;
    });
    for (let i = 1; i < seqs.length; i++) expect((seqs[i]! - seqs[i - 1]! + 65536) % 65536).toBe(1);
  });

  it("reports a digit once although the network duplicates its packets", () => {
    const call = new Call();
    call.toB.mangle = (bytes) => [bytes, bytes];
    call.run(200);
    call.digit("a", "9");
    call.run(600);
    expect(call.eventsB.filter((e) => e.type === "dtmf")).toHaveLength(1);
    expect(call.eventsB.filter((e) => e.type === "dtmf-end")).toHaveLength(1);
  });

  it("without telephone-event, sends the keypad tone in-band", () => {
    const call = new Call({ params: { telephoneEventPt: undefined } });
    call.run(200);
    const mark = call.playedB.length;
    call.digit("a", "1", 200);
    call.run(600);
    const after = call.playedB.slice(mark).map((f) => heard(f.pcm));
    // About ten frames of 697+1209 (200 ms), once the jitter buffer delay has passed.
    expect(after.filter((h) => h === "697+1209").length).toBeGreaterThanOrEqual(9);
    expect(call.eventsB.filter((e) => e.type === "dtmf")).toHaveLength(0);
  });
});

describe("hold, resume and re-key", () => {
  it("hold: A sendonly, B recvonly stops B's packets; A inactive stops A's too; RTCP goes on", () => {
    const call = new Call({ options: { rtcpIntervalMs: 1000 } });
    call.run(1000);
    call.a.setDirection("sendonly");
    call.b.setDirection("recvonly");
    const rtpB = () => call.wireB.filter(isRtp).length;
    const rtpA = () => call.wireA.filter(isRtp).length;
    const heldB = rtpB();
    const sentA = rtpA();
    call.run(1000);
    expect(rtpB()).toBe(heldB);
    expect(rtpA() - sentA).toBe(50); // music-on-hold direction still flows
    expect(share(call.playedB.slice(-40), "1004", 0)).toBe(1);
    expect(call.playedA.slice(-40).every((f) => f.kind === "idle")).toBe(true);

    call.a.setDirection("inactive");
    call.b.setDirection("inactive");
    const quietA = rtpA();
    const rtcpBefore = call.b.stats().rtcpReceived;
    call.run(2000);
    expect(rtpA()).toBe(quietA);
    expect(call.a.sendFrame(new Int16Array(FRAME), call.t)).toBeUndefined();
    expect(call.b.stats().rtcpReceived - rtcpBefore).toBeGreaterThanOrEqual(2);

    call.a.setDirection("sendrecv");
    call.b.setDirection("sendrecv");
    call.run(1000);
    expect(share(call.playedB.slice(-40), "1004", 0)).toBe(1);
    expect(share(call.playedA.slice(-40), "697+1209", 0)).toBe(1);
    // The media clock ran on through the hold: the first packet after it is marked and its
    // timestamp has moved by the time that passed, not by the packets sent.
    const resumed = call.wireA
      .filter(isRtp)
      .slice(quietA - 1, quietA + 1)
      .map((b) => parseRtp(b));
    const [last, next] = resumed;
    expect(last?.ok && next?.ok).toBe(true);
    if (last?.ok && next?.ok) {
      expect(next.packet.marker).toBe(true);
      expect(next.packet.sequenceNumber).toBe((last.packet.sequenceNumber + 1) & 0xffff);
      // 100 held ticks, the test's own sendFrame above, then the resuming tick: 102 frames.
      expect((next.packet.timestamp - last.packet.timestamp) >>> 0).toBe(102 * 160);
    }
  });

  it("mute sends nothing and unmute resumes with the marker bit", () => {
    const call = new Call();
    call.run(200);
    call.a.setMuted(true);
    const n = call.wireA.filter(isRtp).length;
    call.run(400);
    expect(call.wireA.filter(isRtp).length).toBe(n);
    call.a.setMuted(false);
    call.run(40);
    const p = parseRtp(call.wireA.filter(isRtp).at(-2)!);
    expect(p.ok && p.packet.marker).toBe(true);
  });

  it("re-key: new keys from a re-INVITE, packets in flight under the old key still play", () => {
    const call = new Call();
    // 60 ms of network: three packets are always in flight when the keys change.
    call.toB.delay = () => 60;
    call.toA.delay = () => 60;
    call.run(1000);
    const ssrc = call.a.ssrc;
    const r = new SeededRandom(4242);
    const next = { a: policy(r), b: policy(r) };
    const base = {
      payloadType: 0,
      codec: "PCMU" as const,
      telephoneEventPt: 101,
      direction: "sendrecv" as const,
    };
    call.a.update({ ...base, srtp: { send: next.a, receive: next.b } });
    call.b.update({ ...base, srtp: { send: next.b, receive: next.a } });
    call.run(2000);
    const s = call.b.stats();
    expect(s.srtpBadTag).toBe(0);
    expect(s.lost).toBe(0);
    expect(s.concealed).toBe(0);
    expect(call.a.ssrc).toBe(ssrc);
    expect(share(call.playedB, "1004")).toBe(1);
    expect(share(call.playedA, "697+1209")).toBe(1);
    // After the grace period, the old key is gone: a packet made under it is a forgery now.
    const oldKeyed = call.wireA.filter(isRtp)[40]!;
    const forged = Uint8Array.from(oldKeyed);
    forged[3] = (forged[3]! + 200) & 0xff; // a fresh sequence number, so the replay check passes
    expect(call.inject("b", forged).reason).toBe("bad-tag");
  });

  it("an unchanged key keeps its context: a replay from before the re-INVITE is still a replay", () => {
    const call = new Call();
    call.run(400);
    const before = call.wireA.filter(isRtp).at(-1)!;
    const base = { payloadType: 0, codec: "PCMU" as const, direction: "sendrecv" as const };
    call.a.update({ ...base, srtp: { send: call.keys.a, receive: call.keys.b } });
    call.b.update({ ...base, srtp: { send: call.keys.b, receive: { ...call.keys.a } } });
    call.run(400);
    expect(call.inject("b", before).reason).toBe("replay");
    expect(share(call.playedB, "1004")).toBe(1);
  });

  it("a codec change in a re-INVITE keeps the stream (PCMU → PCMA)", () => {
    const call = new Call();
    call.run(600);
    // The answer lists both, so either may arrive (and PCMU packets are still in flight).
    const p = {
      payloadType: 8,
      codec: "PCMA" as const,
      direction: "sendrecv" as const,
      receiveFormats: [
        { payloadType: 8, codec: "PCMA" as const },
        { payloadType: 0, codec: "PCMU" as const },
      ],
    };
    call.a.update({ ...p, srtp: { send: call.keys.a, receive: call.keys.b } });
    call.b.update({ ...p, srtp: { send: call.keys.b, receive: call.keys.a } });
    call.run(600);
    const last = parseRtp(call.wireA.at(-1)!);
    expect(last.ok && last.packet.payloadType).toBe(8);
    expect(call.b.stats().unknownPayloadType).toBe(0);
    expect(share(call.playedB, "1004")).toBe(1);
  });
});

describe("RTCP", () => {
  it("sends SR + SDES every 5 s and learns round trip and loss from the peer's reports", () => {
    const call = new Call({ seed: 5 });
    call.toB.delay = () => 30;
    call.toA.delay = () => 30;
    call.toB.drop = (n) => n % 25 === 10; // RTP and RTCP alike: about 4 %
    call.run(21_000);
    const sa = call.a.stats();
    const sb = call.b.stats();
    expect(sa.rtcpSent).toBe(5); // t = 0, 5, 10, 15, 20 s
    expect(sb.rtcpReceived).toBeGreaterThanOrEqual(4);
    // Arrivals are handled at the tick after they land: 30 ms, rounded up to 40, each way.
    expect(sa.roundTripMs).toBeGreaterThanOrEqual(59);
    expect(sa.roundTripMs).toBeLessThanOrEqual(81);
    expect(sa.remoteCumulativeLost).toBeGreaterThan(30);
    expect(sa.remoteFractionLost).toBeGreaterThan(0.02);
    expect(sa.remoteFractionLost).toBeLessThan(0.08);
    // What B reported is what B counted (up to the packets since its last report).
    expect(Math.abs((sa.remoteCumulativeLost ?? 0) - sb.lost)).toBeLessThanOrEqual(12);
    const sr = call.wireA.filter((b) => classifyPacket(b) === "rtcp")[1]!;
    expect(sr[1]).toBe(200); // SR: A was sending
  });

  it("sends an RR while not sending, and BYE is reported", () => {
    const call = new Call({ options: { rtcpIntervalMs: 1000 } });
    call.run(500);
    call.a.setDirection("recvonly");
    call.b.setDirection("sendonly");
    call.run(2100);
    const reports = call.wireA.filter((b) => classifyPacket(b) === "rtcp");
    expect(reports.at(-1)![1]).toBe(201);
    call.inject("b", call.a.bye(call.t)!);
    expect(call.eventsB.some((e) => e.type === "bye" && e.ssrc === call.a.ssrc)).toBe(true);
  });
});

describe("wire input", () => {
  it("ignores and counts STUN and other non-media datagrams", () => {
    const call = new Call();
    const stun = new Uint8Array(20);
    stun[1] = 0x01; // Binding request
    expect(call.inject("b", stun)).toMatchObject({ kind: "stun", authenticated: false });
    expect(call.inject("b", Uint8Array.of(23, 3, 3, 0, 0)).kind).toBe("dtls");
    expect(call.inject("b", new Uint8Array(0)).kind).toBe("unknown");
    const s = call.b.stats();
    expect(s.stun).toBe(1);
    expect(s.ignored).toBe(2);
  });

  it("never throws on random datagrams, and none of them play", () => {
    for (const srtp of [true, false]) {
      const call = new Call({ srtp });
      const r = new SeededRandom(11);
      for (let i = 0; i < 3000; i++) {
        const bytes = r.bytes(Math.floor(r.unit() * 200));
        // Half of them with an RTP/RTCP first byte, so they reach the deeper parsers.
        if (i % 2 === 0 && bytes.length > 0) bytes[0] = 0x80 | (bytes[0]! & 0x3f);
        expect(() => call.inject("b", bytes)).not.toThrow();
      }
      if (srtp) expect(call.b.stats().packetsReceived).toBe(0);
    }
  });

  it("plain RTP works too, and keeps to the first SSRC while it talks", () => {
    const call = new Call({ srtp: false });
    call.run(1000);
    expect(share(call.playedB, "1004")).toBe(1);
    const stranger = Uint8Array.from(call.wireA.filter(isRtp).at(-1)!);
    stranger[8] = stranger[8]! ^ 0xff; // another SSRC
    stranger[3] = (stranger[3]! + 1) & 0xff;
    expect(call.inject("b", stranger).reason).toBe("other-ssrc");
    expect(call.b.stats().otherSsrc).toBe(1);
  });

  it("takes a new SSRC once the old one has gone quiet (a transfer behind a gateway)", () => {
    const call = new Call();
    call.run(1000);
    const firstSsrc = call.a.ssrc;
    // A new source on B's side of the gateway, with A's keys (SDES keys are per direction, not per SSRC).
    const replacement = new AudioStream(
      {
        payloadType: 0,
        codec: "PCMU",
        direction: "sendrecv",
        srtp: { send: call.keys.a, receive: call.keys.b },
      },
      { random: new SeededRandom(77) },
    );
    const tone = new ToneGenerator(TONE_A);
    const start = call.t;
    for (let i = 0; i < 50; i++) {
      const t = start + 100 + i * 20;
      const b = replacement.sendFrame(tone.next(FRAME), t)!;
      call.b.receive(b, t + 5);
      call.playedB.push(call.b.playout(t + 5));
    }
    expect(
      call.eventsB.filter((e) => e.type === "remote-ssrc").map((e) => e.type === "remote-ssrc" && e.previous),
    ).toEqual([undefined, firstSsrc]);
    expect(call.b.stats().remoteSsrc).toBe(replacement.ssrc);
    expect(share(call.playedB.slice(-30), "1004", 0)).toBe(1);
  });
});

/**
 * G.722: 16 kHz audio on RTP's 8000 Hz clock (RFC 3551 §4.5.2). Two streams back to back without
 * a network: each tick A's frame goes straight to B and B's to A.
 */
describe("G.722 streams", () => {
  const wideDetector = new ToneDetector({ frequencies: [1004, 697, 1209, 6000], sampleRate: 16000 });
  const wideHeard = (pcm: Int16Array) =>
    wideDetector
      .detect(pcm)
      .map((l) => l.hz)
      .sort((x, y) => x - y)
      .join("+");

  function pair(a: Partial<AudioStreamParams>, b: Partial<AudioStreamParams>) {
    const base: AudioStreamParams = { payloadType: 9, codec: "G722", direction: "sendrecv" };
    return {
      a: new AudioStream({ ...base, ...a }, { random: new SeededRandom(11) }),
      b: new AudioStream({ ...base, ...b }, { random: new SeededRandom(12) }),
    };
  }

  /** Runs `ticks` frames: each side sends its tone at its own rate, the other receives and plays. */
  function run(
    s: { a: AudioStream; b: AudioStream },
    ticks: number,
    tones: { a: ToneGenerator; b: ToneGenerator },
    start = 0,
  ) {
    const wire: { a: Uint8Array[]; b: Uint8Array[] } = { a: [], b: [] };
    const played: { a: PlayoutFrame[]; b: PlayoutFrame[] } = { a: [], b: [] };
    for (let i = 0; i < ticks; i++) {
      const t = start + i * 20;
      const fa = s.a.sendFrame(tones.a.next(s.a.frameSamples), t);
      const fb = s.b.sendFrame(tones.b.next(s.b.frameSamples), t);
      if (fa) {
        wire.a.push(fa);
        s.b.receive(fa, t + 1);
      }
      if (fb) {
        wire.b.push(fb);
        s.a.receive(fb, t + 1);
      }
      played.a.push(s.a.playout(t));
      played.b.push(s.b.playout(t));
    }
    return { wire, played };
  }

  it("runs at 16 kHz: 320 samples a frame, 160 octets a packet, the RTP timestamp stepping 160", () => {
    const s = pair({}, {});
    expect(s.a.sampleRate).toBe(16000);
    expect(s.a.frameSamples).toBe(320);
    expect(s.a.codec).toBe("G722");
    const tones = {
      a: new ToneGenerator(TONE_A, { sampleRate: 16000 }),
      b: new ToneGenerator([{ hz: 6000, levelDbfs: -12 }], { sampleRate: 16000 }),
    };
    const { wire, played } = run(s, 50, tones);
    const packets = wire.a.map((b) => parseRtp(b)).map((r) => (r.ok ? r.packet : undefined));
    expect(packets.every((p) => p?.payloadType === 9 && p.payload.length === 160)).toBe(true);
    for (let i = 1; i < packets.length; i++)
      expect((packets[i]!.timestamp - packets[i - 1]!.timestamp) >>> 0).toBe(160);
    // Played frames are 16 kHz too; A's 1004 Hz reaches B, B's 6 kHz (upper band) reaches A.
    const audioB = played.b.filter((f) => f.kind === "audio");
    expect(audioB.length).toBeGreaterThan(40);
    expect(audioB.every((f) => f.rate === 16000 && f.pcm.length === 320)).toBe(true);
    expect(audioB.slice(5).every((f) => wideHeard(f.pcm) === "1004")).toBe(true);
    expect(
      played.a
        .filter((f) => f.kind === "audio")
        .slice(5)
        .every((f) => wideHeard(f.pcm) === "6000"),
    ).toBe(true);
  });

  it("plays a peer's PCMU (the answer's other codec) at 16 kHz: decoded at 8 kHz and resampled", () => {
    const s = pair(
      {
        receiveFormats: [
          { payloadType: 9, codec: "G722" },
          { payloadType: 0, codec: "PCMU" },
        ],
      },
      { payloadType: 0, codec: "PCMU" },
    );
    expect(s.b.sampleRate).toBe(8000);
    const tones = { a: new ToneGenerator(TONE_A, { sampleRate: 16000 }), b: new ToneGenerator(TONE_A) };
    const { played } = run(s, 50, tones);
    const audio = played.a.filter((f) => f.kind === "audio").slice(5);
    expect(audio.length).toBeGreaterThan(30);
    for (const f of audio) {
      expect(f.rate).toBe(16000);
      expect(wideHeard(f.pcm)).toBe("1004");
      // The resampler keeps the level: µ-law and the half-band filter cost a fraction of a dB.
      const [level] = new ToneDetector({ frequencies: [1004], sampleRate: 16000 }).levels(f.pcm);
      expect(Math.abs(level!.levelDbfs - -10)).toBeLessThan(0.5);
    }
  });

  it("a re-INVITE from G.722 to PCMU changes the frame to 160 samples; the RTP clock runs on unbroken", () => {
    const s = pair({}, {});
    const tones = {
      a: new ToneGenerator(TONE_A, { sampleRate: 16000 }),
      b: new ToneGenerator(TONE_A, { sampleRate: 16000 }),
    };
    const before = run(s, 10, tones);
    s.a.update({ payloadType: 0, codec: "PCMU", direction: "sendrecv" });
    s.b.update({ payloadType: 0, codec: "PCMU", direction: "sendrecv" });
    expect(s.a.frameSamples).toBe(160);
    expect(s.a.sampleRate).toBe(8000);
    const narrow = { a: new ToneGenerator(TONE_A), b: new ToneGenerator(TONE_A) };
    const after = run(s, 20, narrow, 200);
    const ts = [...before.wire.a, ...after.wire.a].map((b) => {
      const r = parseRtp(b);
      return r.ok ? r.packet.timestamp : -1;
    });
    for (let i = 1; i < ts.length; i++) expect((ts[i]! - ts[i - 1]!) >>> 0).toBe(160);
    const late = after.played.b.filter((f) => f.kind === "audio").slice(5);
    expect(late.every((f) => f.rate === 8000 && heard(f.pcm) === "1004")).toBe(true);
  });

  it("mixes an in-band keypad tone at 16 kHz when no telephone-event was negotiated", () => {
    const s = pair({}, {});
    const silence = {
      a: new ToneGenerator([], { sampleRate: 16000 }),
      b: new ToneGenerator([], { sampleRate: 16000 }),
    };
    run(s, 5, silence);
    expect(s.a.sendDigit("1", 100, 200)).toEqual([]);
    const { played } = run(s, 25, silence, 100);
    expect(played.b.filter((f) => wideHeard(f.pcm) === "697+1209").length).toBeGreaterThanOrEqual(8);
  });
});
