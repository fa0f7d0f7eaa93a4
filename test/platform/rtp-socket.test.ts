/**
 * RtpSocket (firmware/platform/rtp-socket.ts) over real UDP sockets on 127.0.0.1: two phones'
 * streams, each with its own SDES key pair, tones both ways through SRTP, DTMF, a forged packet
 * from a third socket, symmetric RTP learning and RTCP on port + 1 or muxed. Real time, real
 * timers (SystemClock); a second or so per call.
 */
import { createSocket, type Socket } from "node:dgram";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  AudioStream,
  type AudioStreamEvent,
  type AudioStreamParams,
} from "../../firmware/media/audio-stream.ts";
import type { SrtpPolicy } from "../../firmware/media/srtp.ts";
import { generateTone } from "../../firmware/media/tone.ts";
import {
  PcmSink,
  pcmSource,
  type RtpRemote,
  RtpSocket,
  RtpSocketError,
  ToneSink,
  teeSink,
  toneSource,
} from "../../firmware/platform/rtp-socket.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { encodeWav, parseWav, readWavFile, WavError, writeWavFile } from "../../firmware/platform/wav.ts";

const HOST = "127.0.0.1";
const RANGE = { min: 42000, max: 42999 };
const FREQS = [1004, 697, 1209];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const open: Array<{ close(): unknown }> = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

async function rtpSocket(seed: number, rtcpPort = true): Promise<RtpSocket> {
  const s = await RtpSocket.open({
    address: HOST,
    portRange: RANGE,
    random: new SeededRandom(seed),
    rtcpPort,
  });
  open.push(s);
  return s;
}

async function rawSocket(): Promise<Socket & { received: Buffer[] }> {
  const s = createSocket("udp4") as Socket & { received: Buffer[] };
  s.received = [];
  s.on("message", (m) => s.received.push(m));
  await new Promise<void>((r) => s.bind(0, HOST, () => r()));
  open.push({ close: () => new Promise<void>((r) => s.close(() => r())) });
  return s;
}

function key(r: SeededRandom): SrtpPolicy {
  return {
    suite: "AES_CM_128_HMAC_SHA1_80",
    masterKey: Buffer.from(r.bytes(16)),
    masterSalt: Buffer.from(r.bytes(14)),
  };
}

function streams(seed: number, o: Partial<AudioStreamParams> = {}) {
  const r = new SeededRandom(seed);
  const ka = key(r);
  const kb = key(r);
  const base: AudioStreamParams = {
    payloadType: 0,
    codec: "PCMU",
    telephoneEventPt: 101,
    direction: "sendrecv",
    ...o,
  };
  const options = { rtcpIntervalMs: 300, ntpOffsetMs: Date.now() - performance.now() };
  return {
    a: new AudioStream(
      { ...base, srtp: { send: ka, receive: kb } },
      { random: new SeededRandom(seed + 1), ...options },
    ),
    b: new AudioStream(
      { ...base, srtp: { send: kb, receive: ka } },
      { random: new SeededRandom(seed + 2), ...options },
    ),
  };
}

const remoteOf = (s: RtpSocket, rtcpMux = false): RtpRemote => ({
  address: HOST,
  port: s.port,
  ...(s.rtcpPort !== undefined ? { rtcpPort: s.rtcpPort } : {}),
  rtcpMux,
});

describe("RtpSocket on loopback", () => {
  it("binds an even RTP port with RTCP on the next, inside the range", async () => {
    const s = await rtpSocket(1);
    expect(s.port % 2).toBe(0);
    expect(s.rtcpPort).toBe(s.port + 1);
    expect(s.port).toBeGreaterThanOrEqual(RANGE.min);
    expect(s.port + 1).toBeLessThanOrEqual(RANGE.max);
    // A two-port range whose only pair is taken is a typed error, not a crash.
    const taken = { min: s.port, max: s.port + 1 };
    await expect(RtpSocket.open({ address: HOST, portRange: taken })).rejects.toBeInstanceOf(RtpSocketError);
    await expect(RtpSocket.open({ address: HOST, portRange: { min: 3, max: 3 } })).rejects.toMatchObject({
      code: "rtp-port-range",
    });
  });

  it("carries tones both ways through SRTP, with DTMF, RTCP on port + 1 and a latch onto the peer's source", async () => {
    const clock = new SystemClock();
    const { a, b } = streams(10);
    const sa = await rtpSocket(2);
    const sb = await rtpSocket(3);
    // B's SDP for A names a port nobody answers on (a NAT's private side, say): B must learn A's
    // real source from A's first authenticated packet.
    const decoy = await rawSocket();
    const decoyPort = decoy.address().port;
    const sinkA = new ToneSink(FREQS);
    const sinkB = new ToneSink(FREQS);
    const eventsB: AudioStreamEvent[] = [];
    b.events.on((e) => eventsB.push(e));

    sb.start({
      stream: b,
      remote: { address: HOST, port: decoyPort, rtcpPort: decoyPort },
      clock,
      source: toneSource([
        { hz: 697, levelDbfs: -12 },
        { hz: 1209, levelDbfs: -12 },
      ]),
      sink: sinkB,
    });
    await sleep(100); // B talks to the decoy alone for a while
    sa.start({
      stream: a,
      remote: remoteOf(sb),
      clock,
      source: toneSource([{ hz: 1004, levelDbfs: -10 }]),
      sink: sinkA,
    });
    await sleep(600);
    sa.sendDigit("7");
    await sleep(700);

    const stA = sa.stats();
    const stB = sb.stats();
    sa.stop();
    sb.stop();

    expect(sinkB.share("1004")).toBeGreaterThan(0.9);
    expect(sinkA.share("697+1209")).toBeGreaterThan(0.9);
    expect(sinkB.heard.filter((h) => h.kind === "audio").length).toBeGreaterThan(40);
    // B learned A's RTP and RTCP ports; the decoy heard B only until then.
    expect(stB.latched).toBe(true);
    expect(stB.destination).toEqual({ address: HOST, port: sa.port });
    expect(stB.rtcpLatched).toBe(true);
    expect(stB.rtcpDestination).toEqual({ address: HOST, port: sa.rtcpPort });
    const decoyHeard = decoy.received.length;
    expect(decoyHeard).toBeGreaterThan(3);
    await sleep(100);
    expect(decoy.received.length).toBe(decoyHeard);
    // DTMF arrived once.
    expect(eventsB.filter((e) => e.type === "dtmf").map((e) => e.type === "dtmf" && e.digit)).toEqual(["7"]);
    // Stats: both directions counted, SRTP clean, RTCP both ways with a round trip on loopback.
    const s = stB.stream!;
    expect(s.packetsReceived).toBeGreaterThan(50);
    expect(s.bytesReceived).toBe(s.packetsReceived * (12 + 160 + 10) - 7 * (160 - 4));
    expect(s.srtpBadTag + s.srtpReplayed + s.malformed).toBe(0);
    expect(s.rtcpReceived).toBeGreaterThanOrEqual(2);
    expect(stA.stream!.rtcpReceived).toBeGreaterThanOrEqual(2);
    expect(stA.stream!.roundTripMs).toBeGreaterThanOrEqual(0);
    // Loopback: the round trip is the two event loops' delays; only its presence is the point here.
    expect(stA.stream!.roundTripMs).toBeLessThan(1000);
    expect(stA.stream!.packetsSent).toBeGreaterThan(50);
    expect(stA.datagramsOut).toBeGreaterThan(50);
    expect(stA.sendErrors).toBe(0);
  });

  it("counts and drops a forged packet from a third socket, and does not latch onto it", async () => {
    const clock = new SystemClock();
    const { a, b } = streams(20);
    const sa = await rtpSocket(4, false);
    const sb = await rtpSocket(5, false);
    const attacker = await rawSocket();
    const sinkB = new ToneSink(FREQS);
    sa.start({
      stream: a,
      remote: remoteOf(sb, true),
      clock,
      source: toneSource([{ hz: 1004, levelDbfs: -10 }]),
    });
    sb.start({ stream: b, remote: remoteOf(sa, true), clock, sink: sinkB });
    await sleep(300);
    // Looks like SRTP from A's SSRC, one sequence number ahead; its tag is garbage.
    const forged = Buffer.alloc(12 + 160 + 10, 0x55);
    forged[0] = 0x80;
    forged.writeUInt16BE((b.stats().playout.received + 1000) & 0xffff, 2);
    forged.writeUInt32BE(a.ssrc, 8);
    const stun = Buffer.alloc(20);
    stun[1] = 0x01;
    for (const p of [forged, forged, stun]) attacker.send(p, sb.port, HOST);
    await sleep(300);
    const st = sb.stats();
    sa.stop();
    sb.stop();
    expect(st.stream!.srtpBadTag).toBe(2);
    expect(st.stream!.stun).toBe(1);
    expect(st.destination).toEqual({ address: HOST, port: sa.port });
    expect(st.local.rtcpPort).toBeUndefined();
    expect(attacker.received.length).toBe(0);
    expect(sinkB.share("1004")).toBeGreaterThan(0.9);
    expect(st.stream!.rtcpReceived).toBeGreaterThanOrEqual(1); // rtcp-mux: on the RTP port
  });

  it("plays a WAV file into the call and records the far end to another", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rtp-wav-"));
    try {
      const prompt = join(dir, "prompt.wav");
      await writeWavFile(prompt, generateTone([{ hz: 1004, levelDbfs: -10 }], 8000));
      const clock = new SystemClock();
      const { a, b } = streams(30);
      const sa = await rtpSocket(6);
      const sb = await rtpSocket(7);
      const recording = new PcmSink();
      const detect = new ToneSink(FREQS);
      sa.start({
        stream: a,
        remote: remoteOf(sb),
        clock,
        source: pcmSource(await readWavFile(prompt), { loop: true }),
      });
      sb.start({ stream: b, remote: remoteOf(sa), clock, sink: teeSink(recording, detect) });
      await sleep(800);
      sa.stop();
      sb.stop();
      const out = join(dir, "recorded.wav");
      await writeWavFile(out, recording.pcm());
      const back = await readWavFile(out);
      expect(back.length).toBe(recording.pcm().length);
      expect(back.length % 160).toBe(0);
      expect(detect.share("1004")).toBeGreaterThan(0.9);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("wav", () => {
  it("round-trips 16-bit mono 8 kHz PCM and skips chunks it does not know", () => {
    const pcm = Int16Array.from([0, 1, -1, 32767, -32768, 1234]);
    expect(Array.from(parseWav(encodeWav(pcm)))).toEqual(Array.from(pcm));
    // A LIST chunk (odd length, padded) before data, as editors write.
    const plain = encodeWav(pcm);
    const list = Buffer.concat([Buffer.from("LIST"), Buffer.from([3, 0, 0, 0]), Buffer.from("abc\0")]);
    const withList = Buffer.concat([plain.subarray(0, 36), list, plain.subarray(36)]);
    expect(Array.from(parseWav(withList))).toEqual(Array.from(pcm));
    // A data size never patched (0xFFFFFFFF) reads to the end of the file.
    const open = Buffer.from(plain);
    open.writeUInt32LE(0xffffffff, 40);
    expect(parseWav(open).length).toBe(pcm.length);
  });

  it("refuses other formats with typed errors", () => {
    const good = Buffer.from(encodeWav(new Int16Array(10)));
    const stereo = Buffer.from(good);
    stereo.writeUInt16LE(2, 22);
    const rate = Buffer.from(good);
    rate.writeUInt32LE(16000, 24);
    const cases: Array<[Uint8Array, string]> = [
      [Buffer.from("not a wav file at all"), "wav-not-riff"],
      [stereo, "wav-format"],
      [rate, "wav-format"],
      [good.subarray(0, 30), "wav-truncated"],
      [good.subarray(0, 36), "wav-no-data"],
    ];
    for (const [bytes, code] of cases) {
      let err: unknown;
      try {
        parseWav(bytes);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(WavError);
      expect((err as WavError).code).toBe(code);
    }
  });

  it("reports a missing file as wav-io", async () => {
    await expect(readWavFile("/nonexistent/x.wav")).rejects.toMatchObject({ code: "wav-io" });
  });
});
