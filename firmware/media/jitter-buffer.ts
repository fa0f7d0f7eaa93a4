/**
 * A playout (jitter) buffer for one RTP stream of fixed-length frames (20 ms G.711, say).
 * Pure: the caller's clock reaches it only as `nowMs` arguments, from the packet's arrival
 * (`push`) and from the audio device asking for its next frame (`pop`, once per frame time).
 *
 * Frames play in sequence-number order from a playout cursor. A packet that arrives for a slot
 * the cursor has passed is late and dropped; one already held or played is a duplicate; a slot
 * whose packet is missing when its turn comes while later ones are waiting is lost, and
 * concealed by repeating the last frame (a few times: more sounds like a stuck record) and then
 * by silence.
 *
 * Delay. A frame starts playout when it has waited the target delay, counted from when it
 * would have arrived at the fastest transit seen lately (arrival time minus media time), so a
 * packet that was slow itself waits less. If the buffer runs dry (underrun), the cursor stops
 * where it is and playout starts again by that same rule: a packet that was merely late still
 * plays, and the delay is what the target says. While frames are queued but the one due is
 * missing and the queue is below its target depth, the buffer waits for it a few frames before
 * giving it up: that is how the delay grows when the target rises. When it holds a frame more
 * than the target for a whole adaptation window, one frame is dropped, so that delay added by a
 * burst does not stay for the rest of the call. In "fixed" mode the target is the configured
 * depth; in "adaptive" mode it is the spread of recent transit times (how much later than the
 * fastest the slowest came), in whole frames, between minDelayMs and maxDelayMs.
 *
 * `delayMs` is the audio queued ahead of the cursor (missing slots included): what this buffer
 * currently adds to the mouth-to-ear delay.
 *
 * Sequence numbers are extended past their 16-bit wrap against the highest one seen. A jump of
 * more than `capacityFrames` ahead (or more than MAX_MISORDER behind) is believed only when the
 * next packet continues from it (the rule of RFC 3550 §A.1): then the sender restarted its
 * numbering, and the new numbers take the slots after the old ones, so that nothing queued is
 * thrown away.
 */
import { seqDiff, tsDiff } from "./rtp.ts";

/** A packet further behind the cursor than this is no reordering but a numbering jump (RFC 3550 §A.1). */
const MAX_MISORDER = 100;
/** Transit samples needed before the adaptive target moves off its starting value. */
const ADAPT_MIN_PACKETS = 20;
/** Recent played slots remembered, to tell a duplicate of a played packet from a late one. */
const PLAYED_MEMORY = 128;

export interface JitterPacket<T> {
  sequenceNumber: number;
  timestamp: number;
  payload: T;
}

export interface JitterBufferOptions<T> {
  /** Media per packet; the cadence at which the caller pops (default 20 ms). */
  frameMs?: number;
  /** RTP clock of the payload format (default 8000). */
  clockRate?: number;
  /** "fixed" keeps `delayMs` as the target; "adaptive" follows the network (default adaptive). */
  mode?: "fixed" | "adaptive";
  /** Fixed mode: the depth. Adaptive: the starting target (default 60 ms). Rounded up to whole frames. */
  delayMs?: number;
  /** Adaptive bounds (defaults 20 ms and 300 ms). */
  minDelayMs?: number;
  maxDelayMs?: number;
  /** Furthest ahead of the cursor a packet may be and still be queued (default 64 frames). */
  capacityFrames?: number;
  /** The frame played when there is nothing to play (µ-law 0xFF bytes, zeroed PCM, …). */
  silence: T;
  /** Concealment for a lost frame (default "repeat", which falls back to silence). */
  conceal?: "repeat" | "silence";
  /** Consecutive repeats before concealment turns to silence (default 2). */
  maxRepeats?: number;
  /** Concealed frames after an underrun before the buffer reports itself idle (default 10). */
  maxConcealFrames?: number;
  /** Pops per adaptation window: how long excess delay must last before a frame is dropped (default 50). */
  adaptWindowFrames?: number;
  /** Packets whose transit times the adaptive target considers (default 100). */
  transitWindow?: number;
}

export type PushResult = "queued" | "duplicate" | "late" | "jump" | "resync";

export type Playout<T> =
  | { kind: "frame"; payload: T; sequenceNumber: number; timestamp: number }
  | { kind: "concealed"; payload: T; sequenceNumber: number; method: "repeat" | "silence" }
  | { kind: "idle"; payload: T };

export interface JitterBufferStats {
  received: number;
  played: number;
  /** Pops answered with a concealed frame. */
  concealed: number;
  /** Slots passed without their packet ever playing. */
  lost: number;
  late: number;
  duplicates: number;
  /** Packets that arrived after a higher-numbered one and still made their slot. */
  reordered: number;
  underruns: number;
  /** Frames dropped to bring the delay back down to the target. */
  discarded: number;
  /** Packets dropped as unconfirmed numbering jumps, and restarts after confirmed ones. */
  jumps: number;
  resyncs: number;
  /** RFC 3550 §6.4.1 interarrival jitter, in ms. */
  jitterMs: number;
  /** How long the last played frame waited between arrival and playout. */
  lastWaitMs: number;
}

interface Entry<T> {
  sequenceNumber: number;
  timestamp: number;
  payload: T;
  arrivalMs: number;
}

export class JitterBuffer<T> {
  readonly frameMs: number;
  readonly mode: "fixed" | "adaptive";
  private readonly clockRate: number;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private readonly capacity: number;
  private readonly silence: T;
  private readonly concealMode: "repeat" | "silence";
  private readonly maxRepeats: number;
  private readonly maxConceal: number;
  private readonly adaptWindow: number;
  private readonly transitWindow: number;

  private target: number;
  private readonly queue = new Map<number, Entry<T>>();
  private state: "empty" | "buffering" | "playing" = "empty";
  /** Extended sequence number of the next slot to play; undefined until playout first starts. */
  private cursor: number | undefined;
  private highest: number | undefined;
  /** The 16-bit number that arrived as `highest`; later numbers are extended against it. */
  private highestSeq = 0;
  /** Slots played lately, oldest first: a copy of one of them is a duplicate, not late. */
  private readonly played = new Set<number>();
  private lastPayload: T | undefined;
  private repeats = 0;
  /** Concealed pops since the last underrun; the buffer goes idle when it passes maxConceal. */
  private underrunRun = 0;
  private windowPops = 0;
  private windowMinDepth = Number.POSITIVE_INFINITY;
  private jumpCandidate: { packet: JitterPacket<T>; arrivalMs: number } | undefined;
  /** Pops spent waiting for the missing frame at the cursor. */
  private holds = 0;
  private refTimestamp: number | undefined;
  private readonly transits: number[] = [];
  private lastTransit: number | undefined;
  private minTransit = 0;

  private readonly counters: Omit<JitterBufferStats, "jitterMs" | "lastWaitMs"> = {
    received: 0,
    played: 0,
    concealed: 0,
    lost: 0,
    late: 0,
    duplicates: 0,
    reordered: 0,
    underruns: 0,
    discarded: 0,
    jumps: 0,
    resyncs: 0,
  };
  private jitter = 0;
  private lastWait = 0;

  constructor(o: JitterBufferOptions<T>) {
    this.frameMs = o.frameMs ?? 20;
    this.clockRate = o.clockRate ?? 8000;
    this.mode = o.mode ?? "adaptive";
    this.minDelay = o.minDelayMs ?? this.frameMs;
    this.maxDelay = o.maxDelayMs ?? 300;
    this.capacity = o.capacityFrames ?? 64;
    this.silence = o.silence;
    this.concealMode = o.conceal ?? "repeat";
    this.maxRepeats = o.maxRepeats ?? 2;
    this.maxConceal = o.maxConcealFrames ?? 10;
    this.adaptWindow = o.adaptWindowFrames ?? 50;
    this.transitWindow = o.transitWindow ?? 100;
    if (!(this.frameMs > 0)) throw new RangeError("frameMs must be > 0");
    if (!(this.minDelay <= this.maxDelay)) throw new RangeError("minDelayMs must not exceed maxDelayMs");
    // Depth is counted in whole frames, so the target is too.
    const initial = Math.ceil((o.delayMs ?? 60) / this.frameMs - 1e-9) * this.frameMs;
    this.target = this.mode === "fixed" ? initial : this.clampTarget(initial);
  }

  /** The delay the buffer aims for now. */
  get targetDelayMs(): number {
    return this.target;
  }

  /** Audio queued ahead of the playout cursor, in ms: the delay this buffer adds right now. */
  get delayMs(): number {
    if (this.highest === undefined || this.queue.size === 0) return 0;
    const from = this.cursor ?? this.lowestQueued();
    return Math.max(0, this.highest - from + 1) * this.frameMs;
  }

  stats(): JitterBufferStats {
    return { ...this.counters, jitterMs: this.jitter, lastWaitMs: this.lastWait };
  }

  /** Forgets the stream (a new SSRC, a re-INVITE to another source); counters stay. */
  reset(): void {
    this.queue.clear();
    this.played.clear();
    this.state = "empty";
    this.cursor = undefined;
    this.highest = undefined;
    this.lastPayload = undefined;
    this.repeats = 0;
    this.underrunRun = 0;
    this.jumpCandidate = undefined;
    this.holds = 0;
    this.refTimestamp = undefined;
    this.transits.length = 0;
    this.lastTransit = undefined;
    this.resetWindow();
  }

  push(p: JitterPacket<T>, nowMs: number): PushResult {
    this.counters.received++;
    const seq = p.sequenceNumber & 0xffff;
    if (this.highest === undefined) {
      this.accept(seq, seq, p, nowMs);
      return "queued";
    }
    const ext = this.highest + seqDiff(seq, this.highestSeq);
    const anchor = this.cursor ?? this.lowestQueued();
    if (ext - anchor >= this.capacity || anchor - ext > MAX_MISORDER) {
      // Either the sender restarted its numbering or this is garbage; only a successor says which.
      const candidate = this.jumpCandidate;
      if (candidate && seq === ((candidate.packet.sequenceNumber + 1) & 0xffff)) {
        // Confirmed: the new numbering continues in the slots after the old, so what is queued
        // of the old stream still plays, and the media clock's reference starts afresh.
        this.counters.resyncs++;
        this.jumpCandidate = undefined;
        this.refTimestamp = undefined;
        this.lastTransit = undefined;
        this.transits.length = 0;
        const slot = this.highest + 1;
        this.accept(slot, candidate.packet.sequenceNumber & 0xffff, candidate.packet, candidate.arrivalMs);
        this.accept(slot + 1, seq, p, nowMs);
        return "resync";
      }
      this.jumpCandidate = { packet: p, arrivalMs: nowMs };
      this.counters.jumps++;
      return "jump";
    }
    this.jumpCandidate = undefined;
    if (this.cursor !== undefined && ext < this.cursor) {
      if (this.played.has(ext)) {
        this.counters.duplicates++;
        return "duplicate";
      }
      // A late packet is the news the adaptive target most needs.
      this.observeTransit(p.timestamp >>> 0, nowMs);
      this.counters.late++;
      return "late";
    }
    if (this.queue.has(ext)) {
      this.counters.duplicates++;
      return "duplicate";
    }
    if (ext < this.highest) this.counters.reordered++;
    this.accept(ext, seq, p, nowMs);
    return "queued";
  }

  private accept(ext: number, seq: number, p: JitterPacket<T>, nowMs: number): void {
    this.queue.set(ext, {
      sequenceNumber: seq,
      timestamp: p.timestamp >>> 0,
      payload: p.payload,
      arrivalMs: nowMs,
    });
    if (this.highest === undefined || ext > this.highest) {
      this.highest = ext;
      this.highestSeq = seq;
    }
    if (this.state === "empty") this.state = "buffering";
    this.observeTransit(p.timestamp >>> 0, nowMs);
  }

  /** The frame to play now. Call once per frame time. */
  pop(nowMs: number): Playout<T> {
    if (this.state === "buffering") {
      // A slot the cursor stopped at whose packet has not come is skipped, not awaited forever.
      const start =
        this.cursor !== undefined && this.queue.has(this.cursor) ? this.cursor : this.lowestQueued();
      const entry = this.queue.get(start);
      if (!entry || nowMs < this.dueMs(entry.timestamp)) return this.waiting();
      this.state = "playing";
      this.underrunRun = 0;
      if (this.cursor !== undefined) this.counters.lost += start - this.cursor;
      this.cursor = start;
    }
    if (this.state !== "playing" || this.cursor === undefined) return { kind: "idle", payload: this.silence };

    const slot = this.cursor;
    const entry = this.queue.get(slot);
    if (entry) {
      this.queue.delete(slot);
      this.cursor = slot + 1;
      this.remember(slot);
      this.lastPayload = entry.payload;
      this.repeats = 0;
      this.holds = 0;
      this.counters.played++;
      this.lastWait = nowMs - entry.arrivalMs;
      this.adapt();
      return {
        kind: "frame",
        payload: entry.payload,
        sequenceNumber: entry.sequenceNumber,
        timestamp: entry.timestamp,
      };
    }
    if (this.queue.size > 0) {
      // Later frames are here, this one is not. Below the target depth, wait for it a little
      // (conceal without moving on): it may only be late, and that wait is how the delay grows
      // to a target that late packets raised. Otherwise it is lost.
      if ((this.highest! - slot) * this.frameMs < this.target && this.holds < this.target / this.frameMs) {
        this.holds++;
        return this.concealed(slot);
      }
      this.holds = 0;
      this.cursor = slot + 1;
      this.counters.lost++;
      this.adapt();
      return this.concealed(slot);
    }
    // Dry: hold the cursor here; playout resumes when a frame that arrives is due (dueMs).
    this.counters.underruns++;
    this.state = "buffering";
    this.underrunRun = 1;
    this.resetWindow();
    return this.concealed(slot);
  }

  /** A pop while buffering: concealment right after an underrun, then idle. */
  private waiting(): Playout<T> {
    if (this.underrunRun > 0 && this.underrunRun < this.maxConceal && this.cursor !== undefined) {
      this.underrunRun++;
      return this.concealed(this.cursor);
    }
    this.underrunRun = 0;
    return { kind: "idle", payload: this.silence };
  }

  private concealed(slot: number): Playout<T> {
    this.counters.concealed++;
    if (this.concealMode === "repeat" && this.lastPayload !== undefined && this.repeats < this.maxRepeats) {
      this.repeats++;
      return {
        kind: "concealed",
        payload: this.lastPayload,
        sequenceNumber: this.wireSeq(slot),
        method: "repeat",
      };
    }
    return {
      kind: "concealed",
      payload: this.silence,
      sequenceNumber: this.wireSeq(slot),
      method: "silence",
    };
  }

  /** The 16-bit number a slot has on the wire, in the current numbering. */
  private wireSeq(slot: number): number {
    return (this.highestSeq + slot - (this.highest ?? slot)) & 0xffff;
  }

  /** After each pop while playing: drop a frame once the delay has stayed a frame above target. */
  private adapt(): void {
    const depthFrames = this.delayMs / this.frameMs;
    if (depthFrames < this.windowMinDepth) this.windowMinDepth = depthFrames;
    if (++this.windowPops < this.adaptWindow) return;
    const excess = this.windowMinDepth * this.frameMs - this.target;
    this.resetWindow();
    if (excess < this.frameMs || this.cursor === undefined) return;
    const slot = this.cursor;
    if (this.queue.delete(slot)) this.counters.discarded++;
    else this.counters.lost++;
    this.cursor = slot + 1;
  }

  private resetWindow(): void {
    this.windowPops = 0;
    this.windowMinDepth = Number.POSITIVE_INFINITY;
  }

  private remember(slot: number): void {
    this.played.add(slot);
    if (this.played.size > PLAYED_MEMORY) this.played.delete(this.played.values().next().value!);
  }

  private lowestQueued(): number {
    let lowest = Number.POSITIVE_INFINITY;
    for (const k of this.queue.keys()) if (k < lowest) lowest = k;
    return lowest;
  }

  private observeTransit(timestamp: number, nowMs: number): void {
    if (this.refTimestamp === undefined) this.refTimestamp = timestamp;
    // Media time against the stream's first timestamp, signed, so a wrap of the 32-bit clock is harmless.
    const transit = nowMs - (tsDiff(timestamp, this.refTimestamp) * 1000) / this.clockRate;
    if (this.lastTransit !== undefined)
      this.jitter += (Math.abs(transit - this.lastTransit) - this.jitter) / 16;
    this.lastTransit = transit;
    this.transits.push(transit);
    if (this.transits.length > this.transitWindow) this.transits.shift();
    let lo = Number.POSITIVE_INFINITY;
    let hi = Number.NEGATIVE_INFINITY;
    for (const t of this.transits) {
      if (t < lo) lo = t;
      if (t > hi) hi = t;
    }
    this.minTransit = lo;
    // A handful of packets say little about the network: keep the starting target until then.
    if (this.mode === "adaptive" && this.transits.length >= ADAPT_MIN_PACKETS)
      this.target = this.clampTarget(Math.ceil((hi - lo) / this.frameMs - 1e-9) * this.frameMs);
  }

  /**
   * When a frame of this media time is due to start playout: had it come as fast as the fastest
   * recent packet, it would have waited the target. Anchoring on the fastest rather than on
   * whichever packet happens to arrive first after an underrun (often a late one) keeps the
   * delay at the target, not the target plus that packet's lateness.
   */
  private dueMs(timestamp: number): number {
    const mediaMs = (tsDiff(timestamp, this.refTimestamp ?? timestamp) * 1000) / this.clockRate;
    return mediaMs + this.minTransit + this.target;
  }

  private clampTarget(ms: number): number {
    return Math.min(this.maxDelay, Math.max(this.minDelay, ms));
  }
}
