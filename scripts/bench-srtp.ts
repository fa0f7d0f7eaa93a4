/**
 * SRTP CPU cost of one call (measures, never asserts): a two-way G.711 stream, 50 packets/s each
 * way (12-byte header + 160-byte payload), with this phone protecting its outgoing stream and
 * unprotecting the peer's, plus one SRTCP report each way every 5 s. The simulated seconds run
 * back to back; process.cpuUsage() gives user+system CPU time, so the figure is what a call costs
 * the board whatever the wall clock did. Median of five runs per suite. Called from scripts/bench.ts; `npx tsx scripts/bench-srtp.ts`
 * prints the result alone.
 */
import { type SrtpPolicy, SrtpReceiver, SrtpSender, type SrtpSuite } from "../firmware/media/srtp.ts";

const PACKETS_PER_SECOND = 50;
const PAYLOAD = 160;
const RTCP_EVERY_S = 5;

function rtpPacket(seq: number, ssrc: number): Buffer {
  const p = Buffer.alloc(12 + PAYLOAD, 0xd5);
  p[0] = 0x80;
  p.writeUInt16BE(seq & 0xffff, 2);
  p.writeUInt32BE((seq * PAYLOAD) >>> 0, 4);
  p.writeUInt32BE(ssrc, 8);
  return p;
}

function rtcpPacket(ssrc: number): Buffer {
  const p = Buffer.alloc(52, 0);
  p[0] = 0x81;
  p[1] = 200;
  p.writeUInt16BE(52 / 4 - 1, 2);
  p.writeUInt32BE(ssrc, 4);
  return p;
}

/** CPU microseconds the phone spends on `seconds` simulated seconds of a two-way call. */
function runCall(suite: SrtpSuite, seconds: number): { cpuUs: number; packets: number; rejected: number } {
  const key = (fill: number): SrtpPolicy => ({
    suite,
    masterKey: Buffer.alloc(16, fill),
    masterSalt: Buffer.alloc(14, fill + 1),
  });
  // Each direction has its own SDES key, as a=crypto in offer and answer give.
  const phoneTx = new SrtpSender(key(1));
  const peerRx = new SrtpReceiver(key(1));
  const peerTx = new SrtpSender(key(3));
  const phoneRx = new SrtpReceiver(key(3));
  const total = seconds * PACKETS_PER_SECOND;
  let rejected = 0;

  // The peer's work and building RTP packets are not the phone's SRTP cost: done outside the span.
  const outgoing = Array.from({ length: total }, (_, n) => rtpPacket(n, 0x1111_1111));
  const incoming: Buffer[] = [];
  const incomingRtcp: Buffer[] = [];
  for (let n = 0; n < total; n++) {
    const r = peerTx.protectRtp(rtpPacket(n, 0x2222_2222));
    if (r.ok) incoming.push(r.packet);
    if (n % (RTCP_EVERY_S * PACKETS_PER_SECOND) === 0) {
      const c = peerTx.protectRtcp(rtcpPacket(0x2222_2222));
      if (c.ok) incomingRtcp.push(c.packet);
    }
  }
  const ourRtcp = rtcpPacket(0x1111_1111);
  const sent: Buffer[] = [];

  const t0 = process.cpuUsage();
  for (let n = 0; n < total; n++) {
    const r = phoneTx.protectRtp(outgoing[n]!);
    if (r.ok) sent.push(r.packet);
    else rejected++;
    if (!phoneRx.unprotectRtp(incoming[n]!).ok) rejected++;
    if (n % (RTCP_EVERY_S * PACKETS_PER_SECOND) === 0) {
      const rtcpIn = incomingRtcp[n / (RTCP_EVERY_S * PACKETS_PER_SECOND)];
      if (!rtcpIn || !phoneRx.unprotectRtcp(rtcpIn).ok) rejected++;
      if (!phoneTx.protectRtcp(ourRtcp).ok) rejected++;
    }
  }
  const d = process.cpuUsage(t0);

  // The peer must accept what we sent, or the figure would be for broken packets.
  for (const p of sent) if (!peerRx.unprotectRtp(p).ok) rejected++;
  return { cpuUs: d.user + d.system, packets: 2 * total, rejected };
}

/** The median of five runs: one run is a few hundred ms of CPU, short enough for noise to show. */
function medianRun(suite: SrtpSuite, seconds: number) {
  const runs = Array.from({ length: 5 }, () => runCall(suite, seconds)).sort((a, b) => a.cpuUs - b.cpuUs);
  const mid = runs[2]!;
  return { ...mid, rejected: runs.reduce((n, r) => n + r.rejected, 0) };
}

export async function benchSrtp(seconds = 60): Promise<Record<string, number>> {
  runCall("AES_CM_128_HMAC_SHA1_80", 10); // warm-up: JIT and OpenSSL's first-use setup
  const r80 = medianRun("AES_CM_128_HMAC_SHA1_80", seconds);
  const r32 = medianRun("AES_CM_128_HMAC_SHA1_32", seconds);
  const perCallSecond = (r: { cpuUs: number }) => r.cpuUs / seconds;
  const round = (v: number, d = 1) => Math.round(v * 10 ** d) / 10 ** d;
  return {
    simulated_seconds: seconds,
    packets_per_second_each_way: PACKETS_PER_SECOND,
    payload_bytes: PAYLOAD,
    cpu_us_per_call_second: round(perCallSecond(r80)),
    cpu_percent_of_one_core: round(perCallSecond(r80) / 1e4, 3),
    cpu_us_per_packet: round(r80.cpuUs / r80.packets, 2),
    cpu_us_per_call_second_sha1_32: round(perCallSecond(r32)),
    rejected_packets: r80.rejected + r32.rejected,
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(await benchSrtp(), null, 2)}\n`);
}
