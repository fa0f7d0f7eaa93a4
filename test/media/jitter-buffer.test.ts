import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  JitterBuffer,
  type JitterBufferOptions,
  type Playout,
  type PushResult,
} from "../../firmware/media/jitter-buffer.ts";

/** Payloads are the packet's sequence number, so what played is plain to read; −1 is silence. */
const SILENCE = -1;
const F = 20;

interface Arrival {
  seq: number;
  at: number;
  /** RTP timestamp; by default seq × 160. */
  ts?: number;
}

interface Step {
  at: number;
  out: Playout<number>;
  delayMs: number;
}

function buffer(o: Partial<JitterBufferOptions<number>> = {}): JitterBuffer<number> {
  return new JitterBuffer<number>({ silence: SILENCE, mode: "fixed", delayMs: 60, ...o });
}

/**
 * Drives a buffer as a call would: packets arrive at their times, the audio device pops every
 * 20 ms from t = 0 to `until`. At the same instant, arrivals come first.
 */
function run(jb: JitterBuffer<number>, arrivals: Arrival[], until: number) {
  const pushes: Array<{ seq: number; result: PushResult }> = [];
  const steps: Step[] = [];
  const queue = [...arrivals].sort((a, b) => a.at - b.at);
  let i = 0;
  for (let t = 0; t <= until; t += F) {
    while (i < queue.length && queue[i]!.at <= t) {
      const a = queue[i++]!;
      pushes.push({
        seq: a.seq,
        result: jb.push(
          { sequenceNumber: a.seq & 0xffff, timestamp: (a.ts ?? a.seq * 160) >>> 0, payload: a.seq },
          a.at,
        ),
      });
    }
    steps.push({ at: t, out: jb.pop(t), delayMs: jb.delayMs });
  }
  return { pushes, steps };
}

/** A regular stream: packet n arrives at 20n + 5 ms (plus any extra delay). */
function stream(from: number, to: number, extra: (seq: number) => number | undefined = () => 0): Arrival[] {
  const out: Arrival[] = [];
  for (let seq = from; seq <= to; seq++) {
    const d = extra(seq);
    if (d !== undefined) out.push({ seq, at: (seq - from) * F + 5 + d });
  }
  return out;
}

const played = (steps: Step[]) => steps.filter((s) => s.out.kind === "frame").map((s) => s.out.payload);
const describeOut = (o: Playout<number>) =>
  o.kind === "frame" ? `${o.payload}` : o.kind === "concealed" ? `${o.method}(${o.sequenceNumber})` : "idle";

describe("jitter buffer: fixed depth", () => {
  it("waits its depth before playing, then plays in order with a steady delay", () => {
    const jb = buffer();
    // Until the last frame's turn (80 + 49 × 20 ms): no tail of concealment after the stream.
    const { steps } = run(jb, stream(0, 49), 1060);
    // First packet at 5 ms; 60 ms later the next pop (80 ms) starts playout.
    expect(
      steps.filter((s) => s.at < 80).every((s) => s.out.kind === "idle" && s.out.payload === SILENCE),
    ).toBe(true);
    expect(steps.find((s) => s.at === 80)!.out).toMatchObject({
      kind: "frame",
      payload: 0,
      sequenceNumber: 0,
      timestamp: 0,
    });
    expect(played(steps)).toEqual([...Array(50).keys()]);
    // While the stream flows, 3 frames (60 ms) wait behind the one playing.
    for (const s of steps.filter((s) => s.at >= 80 && s.at <= 980)) expect(s.delayMs).toBe(60);
    const st = jb.stats();
    expect(st).toMatchObject({
      received: 50,
      played: 50,
      lost: 0,
      late: 0,
      duplicates: 0,
      concealed: 0,
      underruns: 0,
    });
    // The measured wait includes the 15 ms between arrival and the pop cadence.
    expect(st.lastWaitMs).toBe(75);
    expect(st.jitterMs).toBe(0);
    expect(jb.targetDelayMs).toBe(60);
  });

  it("puts reordered packets back in order", () => {
    const arrivals = stream(0, 29).map((a) =>
      a.seq === 7 ? { ...a, at: a.at + 30 } : a.seq === 12 ? { ...a, at: a.at + 45 } : a,
    );
    const jb = buffer();
    const { steps } = run(jb, arrivals, 660);
    expect(played(steps)).toEqual([...Array(30).keys()]);
    expect(jb.stats()).toMatchObject({ reordered: 2, lost: 0, concealed: 0, late: 0 });
  });

  it("conceals a lost frame by repeating the one before, and keeps its delay", () => {
    const jb = buffer();
    const { steps } = run(
      jb,
      stream(0, 29, (s) => (s === 5 ? undefined : 0)),
      660,
    );
    const outs = steps.filter((s) => s.at >= 80 && s.at <= 280).map((s) => describeOut(s.out));
    expect(outs).toEqual(["0", "1", "2", "3", "4", "repeat(5)", "6", "7", "8", "9", "10"]);
    const repeat = steps.find((s) => s.out.kind === "concealed")!.out;
    expect(repeat.payload).toBe(4);
    expect(steps.find((s) => s.at === 300)!.delayMs).toBe(60);
    expect(jb.stats()).toMatchObject({ lost: 1, concealed: 1, played: 29 });
  });

  it("repeats at most twice, then plays silence", () => {
    // 120 ms deep, so frames after the gap are already waiting when it comes up.
    const jb = buffer({ delayMs: 120 });
    const lost = new Set([10, 11, 12, 13]);
    const { steps } = run(
      jb,
      stream(0, 29, (s) => (lost.has(s) ? undefined : 0)),
      720,
    );
    const outs = steps.filter((s) => s.at >= 320 && s.at <= 420).map((s) => describeOut(s.out));
    expect(outs).toEqual(["9", "repeat(10)", "repeat(11)", "silence(12)", "silence(13)", "14"]);
    expect(jb.stats()).toMatchObject({ lost: 4, concealed: 4, underruns: 0 });
  });

  it("rides out a gap longer than its depth as an underrun, resuming on time", () => {
    const jb = buffer();
    const lost = new Set([10, 11, 12, 13]);
    const { steps } = run(
      jb,
      stream(0, 29, (s) => (lost.has(s) ? undefined : 0)),
      660,
    );
    // Nothing is queued when 10 is due: the cursor waits there and 14 restarts playout after
    // the depth's wait, at 360 ms, which is 14's own turn.
    const outs = steps.filter((s) => s.at >= 260 && s.at <= 360).map((s) => describeOut(s.out));
    expect(outs).toEqual(["9", "repeat(10)", "repeat(10)", "silence(10)", "silence(10)", "14"]);
    expect(steps.find((s) => s.at === 380)!.delayMs).toBe(60);
    expect(jb.stats()).toMatchObject({ lost: 4, concealed: 4, underruns: 1 });
  });

  it("conceals with silence alone when asked", () => {
    const jb = buffer({ conceal: "silence" });
    const { steps } = run(
      jb,
      stream(0, 19, (s) => (s === 5 ? undefined : 0)),
      600,
    );
    expect(steps.find((s) => s.out.kind === "concealed")!.out).toMatchObject({
      method: "silence",
      payload: SILENCE,
    });
  });

  it("drops a packet that comes after its slot has played", () => {
    const jb = buffer();
    const { pushes, steps } = run(
      jb,
      stream(0, 29, (s) => (s === 5 ? 120 : 0)),
      660,
    );
    expect(pushes.find((p) => p.seq === 5)!.result).toBe("late");
    expect(played(steps)).not.toContain(5);
    expect(jb.stats()).toMatchObject({ late: 1, lost: 1, played: 29 });
  });

  it("drops duplicates, whether still queued or already played", () => {
    const jb = buffer();
    const arrivals = [...stream(0, 19), { seq: 8, at: 170 }, { seq: 2, at: 300 }];
    const { pushes, steps } = run(jb, arrivals, 460);
    expect(pushes.filter((p) => p.result === "duplicate").map((p) => p.seq)).toEqual([8, 2]);
    expect(played(steps)).toEqual([...Array(20).keys()]);
    expect(jb.stats()).toMatchObject({ duplicates: 2, late: 0 });
  });

  it("holds its place through a stall, plays the late burst, then sheds the extra delay", () => {
    const jb = buffer({ adaptWindowFrames: 25 });
    // Packets 10–14 are held up 100 ms by the network and arrive together with 15.
    const { steps } = run(
      jb,
      stream(0, 199, (s) => (s >= 10 && s <= 14 ? 100 - (s - 10) * F : 0)),
      4500,
    );
    const st = jb.stats();
    // Nothing is lost to the stall: the cursor waited at 10 and the buffer refilled to its depth.
    expect(st.lost).toBe(0);
    expect(st.underruns).toBe(2); // the stall, and the end of the stream
    expect(played(steps).slice(0, 20)).toEqual([...Array(20).keys()]);
    // 10 was due at 280 ms; the cursor waited there until the first pop after the burst
    // (320 ms), so the buffer now holds 40 ms more than its depth …
    const after = steps.find((s) => s.out.kind === "frame" && s.out.payload === 10)!;
    expect(after.at).toBe(320);
    expect(after.delayMs).toBe(100);
    // … and works its way back to 60 ms by dropping one frame per adaptation window.
    expect(steps.find((s) => s.at === 3500)!.delayMs).toBe(60);
    expect(st.discarded).toBe((after.delayMs - 60) / F);
    expect(played(steps).length + st.discarded).toBe(200);
  });

  it("after the stream stops, conceals briefly and then goes idle", () => {
    const jb = buffer({ maxConcealFrames: 4 });
    const { steps } = run(jb, stream(0, 9), 600);
    const tail = steps.filter((s) => s.at > 260).map((s) => describeOut(s.out));
    expect(tail.slice(0, 6)).toEqual([
      "repeat(10)",
      "repeat(10)",
      "silence(10)",
      "silence(10)",
      "idle",
      "idle",
    ]);
    expect(steps.at(-1)!.delayMs).toBe(0);
  });
});

describe("jitter buffer: numbering", () => {
  it("plays straight across the 16-bit sequence wrap", () => {
    const jb = buffer();
    const arrivals = stream(65530, 65530 + 19).map((a) => ({ ...a, seq: a.seq & 0xffff, ts: a.seq * 160 }));
    const { steps } = run(jb, arrivals, 600);
    const seqs = steps
      .filter((s) => s.out.kind === "frame")
      .map((s) => (s.out.kind === "frame" ? s.out.sequenceNumber : -1));
    expect(seqs).toEqual([...Array(20).keys()].map((i) => (65530 + i) & 0xffff));
    // The wrap is ordinary succession, not a numbering jump.
    expect(jb.stats()).toMatchObject({ lost: 0, jumps: 0, resyncs: 0 });
  });

  it("ignores one stray far-off packet, and restarts when the sender really jumped", () => {
    const jb = buffer();
    const before = stream(0, 19);
    const stray: Arrival = { seq: 40000, at: 200 };
    // From 400 ms the sender numbers from 30000 (a new source behind the same SSRC, say).
    const after = stream(30000, 30019).map((a) => ({
      ...a,
      at: a.at + 400,
      ts: 999_000 + (a.seq - 30000) * 160,
    }));
    const { pushes, steps } = run(jb, [...before, stray, ...after], 80 + 39 * F);
    expect(pushes.find((p) => p.seq === 40000)!.result).toBe("jump");
    expect(pushes.find((p) => p.seq === 30000)!.result).toBe("jump");
    expect(pushes.find((p) => p.seq === 30001)!.result).toBe("resync");
    expect(played(steps)).toEqual([...Array(20).keys(), ...Array.from({ length: 20 }, (_, i) => 30000 + i)]);
    // The new numbers take the slots right after the old: no gap, nothing concealed.
    expect(jb.stats()).toMatchObject({ jumps: 2, resyncs: 1, lost: 0, concealed: 0 });
  });

  it("forgets the stream on reset", () => {
    const jb = buffer();
    run(jb, stream(0, 9), 150);
    jb.reset();
    expect(jb.delayMs).toBe(0);
    expect(jb.pop(1000)).toEqual({ kind: "idle", payload: SILENCE });
    expect(jb.push({ sequenceNumber: 5000, timestamp: 0, payload: 1 }, 1000)).toBe("queued");
  });
});

describe("jitter buffer: adaptive", () => {
  // Every 50th packet is held up 100 ms; the rest come on time.
  const spikes = (seq: number) => (seq % 50 === 25 ? 100 : 0);

  it("raises its target to the spread of transit times and stops losing the slow packets", () => {
    const arrivals = stream(0, 499, spikes);
    const adaptive = new JitterBuffer<number>({ silence: SILENCE, mode: "adaptive", delayMs: 20 });
    const shallow = buffer({ delayMs: 20 });
    // Run on past the last packet's turn: the adaptive buffer plays it later, its delay having grown.
    const until = 80 + 499 * F + 200;
    const { steps } = run(adaptive, arrivals, until);
    run(shallow, arrivals, until);
    // A fixed 20 ms buffer drops each slow packet: its slot has passed when it comes.
    expect(shallow.stats().late).toBe(10);
    expect(shallow.targetDelayMs).toBe(20);
    // The adaptive one learns from the first and waits for the rest.
    expect(adaptive.targetDelayMs).toBe(100);
    const a = adaptive.stats();
    // Only the first slow packet is late (its slot counts as lost, too).
    expect([a.late, a.lost]).toEqual([1, 1]);
    expect(a.played).toBe(499);
    // It concealed the first slow packet's slot, waited four frames for the second (its delay
    // growing by 80 ms), and needed nothing more for the other eight.
    const concealedAt = steps.filter((s) => s.out.kind === "concealed" && s.at < 10_000).map((s) => s.at);
    expect(concealedAt).toEqual([540, 1540, 1560, 1580, 1600]);
    expect(a.jitterMs).toBeGreaterThan(0);
  });

  it("follows random jitter with a target between its spread and a frame more", () => {
    const random = new SeededRandom(42);
    const arrivals = stream(0, 499, (seq) => (seq < 30 ? 0 : Math.floor(random.unit() * 70)));
    const jb = new JitterBuffer<number>({ silence: SILENCE, mode: "adaptive", delayMs: 20 });
    run(jb, arrivals, 80 + 499 * F);
    expect(jb.targetDelayMs).toBe(80);
    expect(jb.stats().late + jb.stats().lost).toBeLessThanOrEqual(2);
  });

  it("comes back down to its floor once the network is calm", () => {
    const arrivals = stream(0, 799, (seq) => (seq < 200 ? spikes(seq) : 0));
    const jb = new JitterBuffer<number>({
      silence: SILENCE,
      mode: "adaptive",
      delayMs: 60,
      adaptWindowFrames: 25,
    });
    const { steps } = run(jb, arrivals, 80 + 799 * F);
    expect(Math.max(...steps.filter((s) => s.at < 4000).map((s) => s.delayMs))).toBeGreaterThanOrEqual(100);
    expect(jb.targetDelayMs).toBe(20);
    expect(steps.find((s) => s.at === 15_000)!.delayMs).toBe(20);
    expect(jb.stats().discarded).toBeGreaterThan(0);
  });

  it("keeps its starting target until it has seen enough packets", () => {
    const jb = new JitterBuffer<number>({ silence: SILENCE, delayMs: 100 });
    for (let i = 0; i < 5; i++) jb.push({ sequenceNumber: i, timestamp: i * 160, payload: i }, i * F);
    expect(jb.targetDelayMs).toBe(100);
  });

  it("rejects settings that cannot work", () => {
    expect(() => new JitterBuffer<number>({ silence: 0, frameMs: 0 })).toThrow(RangeError);
    expect(() => new JitterBuffer<number>({ silence: 0, minDelayMs: 200, maxDelayMs: 100 })).toThrow(
      RangeError,
    );
  });
});
