/**
 * One call's audio through the whole AudioStream path (measures, never asserts).
 *
 * - CPU: the phone's share of a two-way SRTP G.711 call, 50 frames/s each way: encode + RTP +
 *   protect of its own frames, demux + unprotect + parse + jitter-buffer push of the peer's,
 *   jitter-buffer pop + decode for playout, and an RTCP report each way every 5 s. The peer's
 *   packets and both tone signals are made before the measured span (they are not the phone's
 *   work); afterwards the peer must accept everything the phone sent, or the figure would be for
 *   broken packets. process.cpuUsage() is user + system CPU, so the figure is what a call costs
 *   the board whatever the wall clock did. Median of five runs.
 * - Delay: the jitter buffer's added mouth-to-ear delay at its default settings (adaptive,
 *   60 ms start, 20–300 ms), as the wait between a packet's arrival and its playout, on a clean
 *   network (fixed 10 ms transit) and on a jittery one (10 ms + uniform 0–40 ms, seeded). The wait
 *   includes up to one frame of alignment to the 20 ms playout tick, as the device would see it.
 *
 * `npx tsx scripts/bench-audio.ts` prints the result alone; scripts/bench.ts may call
 * benchAudioStream().
 */
import { SeededRandom } from "../firmware/core/random.ts";
import { AudioStream, type AudioStreamParams } from "../firmware/media/audio-stream.ts";
import type { SrtpPolicy } from "../firmware/media/srtp.ts";
import { ToneGenerator } from "../firmware/media/tone.ts";

const FRAME_MS = 20;
const SAMPLES = 160;
const FRAMES_PER_SECOND = 1000 / FRAME_MS;

function policy(r: SeededRandom): SrtpPolicy {
  return {
    suite: "AES_CM_128_HMAC_SHA1_80",
    masterKey: Buffer.from(r.bytes(16)),
    masterSalt: Buffer.from(r.bytes(14)),
  };
}

function pair(seed: number): { phone: AudioStream; peer: AudioStream } {
  const r = new SeededRandom(seed);
  const kPhone = policy(r);
  const kPeer = policy(r);
  const base: AudioStreamParams = {
    payloadType: 0,
    codec: "PCMU",
    telephoneEventPt: 101,
    direction: "sendrecv",
  };
  return {
    phone: new AudioStream(
      { ...base, srtp: { send: kPhone, receive: kPeer } },
      { random: new SeededRandom(seed + 1) },
    ),
    peer: new AudioStream(
      { ...base, srtp: { send: kPeer, receive: kPhone } },
      { random: new SeededRandom(seed + 2) },
    ),
  };
}

function frames(hz: number, n: number): Int16Array[] {
  const g = new ToneGenerator([{ hz, levelDbfs: -10 }]);
  return Array.from({ length: n }, () => g.next(SAMPLES));
}

/** CPU µs the phone spends on `seconds` of a two-way call, and how many packets went wrong. */
function runCall(seconds: number, seed: number): { cpuUs: number; packets: number; rejected: number } {
  const { phone, peer } = pair(seed);
  const total = seconds * FRAMES_PER_SECOND;
  const rtcpEvery = 5 * FRAMES_PER_SECOND;
  const ours = frames(1004, total);
  // The peer's side, made in advance: its packets arrive 10 ms after it sends them.
  const theirs = frames(697, total);
  const incoming: Array<Uint8Array | undefined> = [];
  const incomingRtcp: Array<Uint8Array | undefined> = [];
  for (let n = 0; n < total; n++) {
    incoming.push(peer.sendFrame(theirs[n]!, n * FRAME_MS));
    incomingRtcp.push(n % rtcpEvery === 0 ? peer.rtcp(n * FRAME_MS) : undefined);
  }
  const sent: Uint8Array[] = [];
  let rejected = 0;
  let played = 0;

  const t0 = process.cpuUsage();
  for (let n = 0; n < total; n++) {
    const t = n * FRAME_MS;
    const inbound = incoming[n];
    if (inbound && !phone.receive(inbound, t + 10).authenticated) rejected++;
    const rtcpIn = incomingRtcp[n];
    if (rtcpIn && !phone.receive(rtcpIn, t + 10).authenticated) rejected++;
    if (phone.playout(t + FRAME_MS).kind === "audio") played++;
    const out = phone.sendFrame(ours[n]!, t);
    if (out) sent.push(out);
    else rejected++;
    const rtcp = phone.rtcp(t);
    if (rtcp) sent.push(rtcp);
  }
  const d = process.cpuUsage(t0);

  for (let i = 0; i < sent.length; i++) if (!peer.receive(sent[i]!, i).authenticated) rejected++;
  // Nearly every frame must have played as audio (the first few go to filling the buffer).
  if (played < total - 10) rejected += total - 10 - played;
  return { cpuUs: d.user + d.system, packets: 2 * total, rejected };
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The jitter buffer's wait per played frame, over `seconds` of simulated network. */
function measureDelay(seconds: number, jitterMs: number, seed: number) {
  const { phone, peer } = pair(seed);
  const net = new SeededRandom(seed + 100);
  const tone = new ToneGenerator([{ hz: 1004, levelDbfs: -10 }]);
  const inFlight: Array<{ at: number; bytes: Uint8Array }> = [];
  const waits: number[] = [];
  const depths: number[] = [];
  let concealed = 0;
  const total = seconds * FRAMES_PER_SECOND;
  for (let n = 0; n < total; n++) {
    const t = n * FRAME_MS;
    inFlight.sort((a, b) => a.at - b.at);
    while (inFlight.length > 0 && inFlight[0]!.at <= t) {
      const p = inFlight.shift()!;
      phone.receive(p.bytes, p.at);
    }
    const out = phone.playout(t);
    const s = phone.stats();
    if (out.kind === "audio") waits.push(s.playout.lastWaitMs);
    if (out.kind === "concealed") concealed++;
    if (n > FRAMES_PER_SECOND) depths.push(s.jitterBufferDelayMs);
    const bytes = peer.sendFrame(tone.next(SAMPLES), t);
    if (bytes) inFlight.push({ at: t + 10 + net.unit() * jitterMs, bytes });
  }
  const sorted = [...waits].sort((a, b) => a - b);
  const stats = phone.stats();
  return {
    medianMs: percentile(sorted, 50),
    p95Ms: percentile(sorted, 95),
    meanDepthMs: depths.reduce((a, b) => a + b, 0) / Math.max(1, depths.length),
    targetMs: stats.jitterBufferTargetMs,
    concealedPercent: (100 * concealed) / total,
    late: stats.late,
  };
}

export async function benchAudioStream(seconds = 60): Promise<Record<string, number>> {
  runCall(10, 1); // warm-up: JIT, the G.711 tables, OpenSSL's first use
  const runs = Array.from({ length: 5 }, (_, i) => runCall(seconds, 10 + i)).sort(
    (a, b) => a.cpuUs - b.cpuUs,
  );
  const mid = runs[2]!;
  const perCallSecond = mid.cpuUs / seconds;
  const clean = measureDelay(seconds, 0, 50);
  const jittery = measureDelay(seconds, 40, 60);
  const round = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;
  return {
    simulated_seconds: seconds,
    frames_per_second_each_way: FRAMES_PER_SECOND,
    cpu_us_per_call_second: round(perCallSecond),
    cpu_percent_of_one_core: round(perCallSecond / 1e4, 3),
    cpu_us_per_frame_each_way: round(mid.cpuUs / mid.packets, 2),
    rejected_packets: runs.reduce((n, r) => n + r.rejected, 0),
    jitter_buffer_delay_ms_clean_median: round(clean.medianMs),
    jitter_buffer_delay_ms_clean_p95: round(clean.p95Ms),
    jitter_buffer_depth_ms_clean_mean: round(clean.meanDepthMs),
    jitter_buffer_target_ms_clean: clean.targetMs,
    jitter_buffer_delay_ms_jitter40_median: round(jittery.medianMs),
    jitter_buffer_delay_ms_jitter40_p95: round(jittery.p95Ms),
    jitter_buffer_depth_ms_jitter40_mean: round(jittery.meanDepthMs),
    jitter_buffer_target_ms_jitter40: jittery.targetMs,
    jitter_buffer_concealed_percent_jitter40: round(jittery.concealedPercent, 2),
    jitter_buffer_late_packets_jitter40: jittery.late,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(await benchAudioStream(), null, 2)}\n`);
}
