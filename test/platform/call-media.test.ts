/**
 * The real media port (firmware/platform/call-media.ts) between two simulated phones on
 * 127.0.0.1: A offers, B answers, A accepts, as the call state machine would carry the SDP; real
 * UDP, real timers (SystemClock), the sim board's audio (board/sim/sim-audio.ts) with a 1 kHz
 * microphone at A and a 1.4 kHz one at B, and each port listening for both tones in what it plays.
 * Each case streams well under two seconds of audio.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createSimAudio, type SimAudioDevice } from "../../board/sim/sim-audio.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { AudioCodec, SrtpPolicy } from "../../firmware/media/offer-answer.ts";
import { ToneDetector } from "../../firmware/media/tone.ts";
import { type CallMediaPort, CallMediaPorts, callMediaPorts } from "../../firmware/platform/call-media.ts";
import { RtpSocket } from "../../firmware/platform/rtp-socket.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import type {
  MediaAgreement,
  MediaDescription,
  MediaRefusal,
} from "../../firmware/sip/session/media-port.ts";

const HOST = "127.0.0.1";
/** Apart from rtp-socket.test.ts's range, so the two files may run side by side. */
const RANGE = { min: 43000, max: 43999 };
const A_HZ = 1000;
const B_HZ = 1400;
/** In G.722's upper sub-band (4–8 kHz): only a wideband call carries it. */
const UPPER_HZ = 6000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const pools: CallMediaPorts[] = [];
afterEach(async () => {
  for (const p of pools.splice(0)) await p.close();
});

interface Phone {
  ports: CallMediaPorts;
  audio: SimAudioDevice;
}

async function phone(
  seed: number,
  hz: number,
  srtp: SrtpPolicy,
  spares = 1,
  o: { codecs?: AudioCodec[]; detect?: number[] } = {},
): Promise<Phone> {
  const audio = createSimAudio({ microphone: { kind: "tone", hz }, recordMs: 500 });
  const ports = await callMediaPorts({
    clock: new SystemClock(),
    random: new SeededRandom(seed),
    logger: silentLogger,
    address: HOST,
    portRange: RANGE,
    capabilities: { codecs: o.codecs ?? ["PCMU", "PCMA"], srtp },
    audio,
    detectTones: o.detect ?? [A_HZ, B_HZ],
    spares,
    rtcpIntervalMs: 200,
  });
  pools.push(ports);
  return { ports, audio };
}

function sdp(d: MediaDescription | MediaRefusal): MediaDescription {
  if (d.kind !== "sdp") throw new Error(`refused: ${d.code} ${d.reason}`);
  return d;
}

function agreed(d: MediaAgreement | MediaRefusal): MediaAgreement {
  if (d.kind !== "agreed") throw new Error(`refused: ${d.code} ${d.reason}`);
  return d;
}

function refused(d: MediaDescription | MediaAgreement | MediaRefusal): MediaRefusal {
  if (d.kind !== "refused") throw new Error(`expected a refusal, got ${d.kind}`);
  return d;
}

/** One offer/answer round: `from` offers, `to` answers, `from` accepts. */
function exchange(
  from: CallMediaPort,
  to: CallMediaPort,
  purpose: "initial" | "update" | "refresh" = "initial",
) {
  const offer = sdp(from.createOffer({ purpose }));
  const answer = sdp(to.answerOffer(offer.sdp));
  const agreement = agreed(from.acceptAnswer(answer.sdp));
  // The call machine says so when the call is answered (Call.answer, the 2xx of ours).
  from.connected();
  to.connected();
  return { offer, answer, agreement };
}

/** Received audio frames so far and, of them, those in which `hz` was heard. */
function heard(p: CallMediaPort, hz: number): { frames: number; tone: number } {
  const t = p.stats().tones!;
  return { frames: t.frames, tone: t.heard[hz] ?? 0 };
}

/** What changed in `ms`: frames played with audio, and with `hz` in them. */
async function during(p: CallMediaPort, hz: number, ms: number): Promise<{ frames: number; tone: number }> {
  const before = heard(p, hz);
  await sleep(ms);
  const after = heard(p, hz);
  return { frames: after.frames - before.frames, tone: after.tone - before.tone };
}

const lines = (body: string) => body.split("\r\n");

describe("CallMediaPort over loopback", () => {
  it("before the answer: the ringing side sends silence and plays nothing; the caller hears early media once the callee is connected", async () => {
    const a = await phone(1, A_HZ, "required");
    const b = await phone(2, B_HZ, "required");
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    const offer = sdp(pa.createOffer({ purpose: "initial" }));
    const answer = sdp(pb.answerOffer(offer.sdp));
    agreed(pa.acceptAnswer(answer.sdp));
    await sleep(500);
    // Media flows (the latch, SRTP) but no one's voice: B rings, A has no answer yet.
    expect(pb.stats().packetsIn).toBeGreaterThan(5);
    expect(pa.stats().packetsIn).toBeGreaterThan(5);
    expect(heard(pb, A_HZ).tone).toBe(0);
    expect(heard(pa, B_HZ).tone).toBe(0);
    pb.connected();
    pa.connected();
    expect((await during(pb, A_HZ, 500)).tone).toBeGreaterThan(10);
    expect((await during(pa, B_HZ, 500)).tone).toBeGreaterThan(10);
  });

  it("carries A's 1 kHz to B and B's 1.4 kHz to A through SRTP (AES_CM_128_HMAC_SHA1_80); mute sends silence", async () => {
    const a = await phone(1, A_HZ, "required");
    const b = await phone(2, B_HZ, "required");
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    const { offer, answer, agreement } = exchange(pa, pb);
    expect(lines(offer.sdp).find((l) => l.startsWith("m=audio"))).toMatch(
      /^m=audio [0-9]+ RTP\/SAVP 0 8 13 101$/,
    );
    expect(lines(answer.sdp).filter((l) => l.startsWith("a=crypto:"))).toHaveLength(1);
    expect(lines(answer.sdp).find((l) => l.startsWith("a=crypto:"))).toMatch(
      /^a=crypto:1 AES_CM_128_HMAC_SHA1_80 /,
    );
    expect(agreement.remoteHold).toBe(false);

    await sleep(600);
    const sa = pa.stats();
    const sb = pb.stats();
    for (const s of [sa, sb]) {
      expect(s).toMatchObject({
        state: "streaming",
        srtp: true,
        suite: "AES_CM_128_HMAC_SHA1_80",
        codec: "PCMU",
      });
      expect(s.direction).toBe("sendrecv");
      expect(s.packetsOut).toBeGreaterThan(15);
      expect(s.packetsIn).toBeGreaterThan(10);
      expect(s.srtpAuthFailures).toBe(0);
      expect(s.replaysDropped).toBe(0);
      expect(s.socket?.latched).toBe(true);
    }
    // Each side hears the other's tone and never its own.
    expect(sb.tones!.heard[A_HZ]! / sb.tones!.frames).toBeGreaterThan(0.9);
    expect(sb.tones!.heard[B_HZ]).toBe(0);
    expect(sa.tones!.heard[B_HZ]! / sa.tones!.frames).toBeGreaterThan(0.9);
    expect(sa.tones!.heard[A_HZ]).toBe(0);
    // The board's speaker got the frames too.
    expect(b.audio.speaker().frames.audio).toBeGreaterThan(10);
    expect(b.audio.speaker().levelDbfs).toBeGreaterThan(-20);
    expect(a.audio.openEndpoints).toBe(1);

    // Mute: packets keep flowing (gateways watch for silence on the wire), the tone does not.
    pa.setMuted(true);
    await sleep(100);
    const muted = await during(pb, A_HZ, 300);
    expect(muted.frames).toBeGreaterThan(8);
    expect(muted.tone).toBe(0);
    pa.setMuted(false);
    await sleep(100);
    const unmuted = await during(pb, A_HZ, 300);
    expect(unmuted.tone).toBeGreaterThan(8);
    expect(pa.stats().muted).toBe(false);
  });

  it("refuses a peer's offer without crypto when SRTP is required (488, Encryption Levels not compatible), and the reverse", async () => {
    const strict = await phone(3, A_HZ, "required");
    const plain = await phone(4, B_HZ, "off");
    const ps = strict.ports.factory() as CallMediaPort;
    const pp = plain.ports.factory() as CallMediaPort;

    const noCrypto = sdp(pp.createOffer({ purpose: "initial" }));
    expect(noCrypto.sdp).not.toContain("a=crypto:");
    const r = refused(ps.answerOffer(noCrypto.sdp));
    expect(r).toMatchObject({ code: "srtp-required", reason: "Encryption Levels not compatible" });
    expect(r.warning?.code).toBe(302);

    const savp = sdp(ps.createOffer({ purpose: "initial" }));
    expect(refused(pp.answerOffer(savp.sdp))).toMatchObject({
      code: "srtp-not-supported",
      reason: "Encryption Levels not compatible",
    });
    // Nothing was agreed, so nothing streams.
    expect(ps.stats().state).toBe("ready");
    expect(pp.stats().state).toBe("ready");
  });

  it("hold (sendonly) stops the held side's audio reaching the holder, and the holder's microphone is not heard (silence goes out); resume brings both back", async () => {
    const a = await phone(5, A_HZ, "optional");
    const b = await phone(6, B_HZ, "optional");
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    exchange(pa, pb);
    await sleep(250);
    expect((await during(pa, B_HZ, 200)).tone).toBeGreaterThan(5);

    pa.hold(true);
    const hold = sdp(pa.createOffer({ purpose: "update" }));
    expect(hold.sdp).toContain("a=sendonly");
    const answer = sdp(pb.answerOffer(hold.sdp));
    expect(answer.sdp).toContain("a=recvonly");
    expect(answer.remoteHold).toBe(true);
    expect(agreed(pa.acceptAnswer(answer.sdp)).remoteHold).toBe(false);
    expect(pa.stats().direction).toBe("sendonly");
    expect(pb.stats().direction).toBe("recvonly");
    await sleep(100);
    const sentByB = pb.stats().packetsOut;
    const atHolder = await during(pa, B_HZ, 300);
    const atHeld = await during(pb, A_HZ, 300);
    expect(atHolder.frames).toBe(0); // A plays nothing from B
    expect(pb.stats().packetsOut).toBe(sentByB); // and B sends nothing
    // A still sends (sendonly), but silence: whoever pressed Hold expects not to be heard.
    expect(atHeld.frames).toBeGreaterThan(8);
    expect(atHeld.tone).toBe(0);
    // The hold re-INVITE named the same address: the symmetric-RTP latch was kept.
    expect(pa.stats().latched).toBe(true);

    pa.hold(false);
    const resume = exchange(pa, pb, "update");
    expect(resume.offer.sdp).toContain("a=sendrecv");
    expect(resume.answer.remoteHold).toBe(false);
    await sleep(150);
    expect((await during(pa, B_HZ, 300)).tone).toBeGreaterThan(8);
    expect((await during(pb, A_HZ, 300)).tone).toBeGreaterThan(8);
  });

  it("refuses a re-INVITE that drops crypto while SRTP is required, and the old SRTP media plays on", async () => {
    const a = await phone(7, A_HZ, "optional");
    const b = await phone(8, B_HZ, "required");
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    const first = exchange(pa, pb);
    // MS-SDPEXT: our optional offer is RTP/AVP with a=crypto; B takes SRTP and answers SAVP.
    expect(first.offer.sdp).toContain("m=audio");
    expect(first.offer.sdp).toMatch(/RTP\/AVP 0 8 13 101/);
    expect(first.answer.sdp).toMatch(/RTP\/SAVP 0 8 13 101/);
    await sleep(300);
    expect(pb.stats().srtp).toBe(true);

    // A third-party re-INVITE that drops the keys: A's next offer with its a=crypto lines cut.
    const update = sdp(pa.createOffer({ purpose: "update" }));
    const stripped = lines(update.sdp)
      .filter((l) => !l.startsWith("a=crypto:"))
      .join("\r\n");
    const r = refused(pb.answerOffer(stripped));
    expect(r).toMatchObject({ code: "srtp-required", reason: "Encryption Levels not compatible" });
    pa.rollback(); // the session's part on a 488: the last agreement stands

    const failures = pb.stats().srtpAuthFailures;
    expect((await during(pb, A_HZ, 300)).tone).toBeGreaterThan(8);
    expect((await during(pa, B_HZ, 300)).tone).toBeGreaterThan(8);
    expect(pb.stats()).toMatchObject({ srtp: true, srtpAuthFailures: failures, direction: "sendrecv" });

    // A session refresh repeats the standing description, o= version and all, both ways.
    const refresh = exchange(pa, pb, "refresh");
    expect(refresh.offer.sdp).toBe(first.offer.sdp);
    const back = exchange(pb, pa, "refresh");
    expect(back.offer.sdp).toBe(first.answer.sdp);
    expect(pb.stats().srtp).toBe(true);
  });

  it("answers the SDP part of a multipart/alternative offer (Lync's 2007-fallback form)", async () => {
    const a = await phone(9, A_HZ, "optional", 1);
    const b = await phone(10, B_HZ, "optional", 1);
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    const offer = sdp(pa.createOffer({ purpose: "initial" }));
    const boundary = "----=_NextPart_000_0001";
    const body = [
      `--${boundary}`,
      "Content-Type: application/sdp",
      "Content-Disposition: session; handling=optional; ms-proxy-2007fallback",
      "",
      "v=0",
      "o=- 1 1 IN IP4 127.0.0.1",
      "s=-",
      "c=IN IP4 127.0.0.1",
      "t=0 0",
      "m=audio 9 RTP/AVP 0",
      "",
      `--${boundary}`,
      "Content-Type: application/sdp",
      "Content-Disposition: session; handling=optional",
      "",
      offer.sdp,
      `--${boundary}--`,
      "",
    ].join("\r\n");
    const answer = sdp(pb.answerOffer(body, { contentType: `multipart/alternative;boundary="${boundary}"` }));
    expect(answer.sdp).toContain(`m=audio ${pb.stats().local!.port} RTP/SAVP`);
    agreed(pa.acceptAnswer(answer.sdp));
    expect(pa.stats().srtp).toBe(true);
  });

  it("refuses a call's offer when no socket is ready, and close frees the ports for a new bind", async () => {
    const a = await phone(11, A_HZ, "optional", 1);
    const b = await phone(12, B_HZ, "optional", 1);
    const pa = a.ports.factory() as CallMediaPort;
    const second = a.ports.factory() as CallMediaPort; // the pool's one spare went to pa
    expect(refused(second.createOffer({ purpose: "initial" }))).toMatchObject({
      code: "no-media-port",
      reason: "No Media Available",
    });
    second.close();

    const pb = b.ports.factory() as CallMediaPort;
    exchange(pa, pb);
    await sleep(200);
    const local = pa.stats().local!;
    expect(a.ports.live).toEqual([pa]);

    pa.close();
    pb.close();
    await Promise.all([pa.closed, pb.closed]);
    expect(pa.stats().state).toBe("closed");
    expect(a.ports.live).toEqual([]);
    expect(a.audio.openEndpoints).toBe(0);
    expect(refused(pa.createOffer({ purpose: "initial" })).code).toBe("closed");
    const again = await RtpSocket.open({
      address: HOST,
      portRange: { min: local.port, max: local.rtcpPort! },
    });
    expect(again.port).toBe(local.port);
    await again.close();

    // The pool bound a new spare meanwhile, which the next call takes.
    await a.ports.settled();
    expect(a.ports.ready).toBe(1);
    const next = a.ports.factory() as CallMediaPort;
    expect(next.stats().state).toBe("ready");
  });

  it("rolls back an answer that could not be sent: the agreement before it stands", async () => {
    const a = await phone(14, A_HZ, "optional");
    const b = await phone(15, B_HZ, "optional");
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    exchange(pa, pb);
    pa.hold(true);
    sdp(pb.answerOffer(sdp(pa.createOffer({ purpose: "update" })).sdp));
    expect(pb.stats().direction).toBe("recvonly");
    pb.rollback(); // the 200 carrying it failed to go out
    pa.rollback();
    pa.hold(false);
    expect(pb.stats().direction).toBe("sendrecv");
    expect(pb.stats().remoteHold).toBe(false);
  });

  it("rejects capabilities the audio stream cannot send", async () => {
    for (const codecs of [[], ["OPUS", "PCMU"]])
      await expect(
        CallMediaPorts.open({
          clock: new SystemClock(),
          random: new SeededRandom(13),
          logger: silentLogger,
          address: HOST,
          portRange: RANGE,
          capabilities: { codecs: codecs as AudioCodec[], srtp: "optional" },
        }),
      ).rejects.toMatchObject({ code: "media-config" });
  });

  it("G.722 first: offered first, sent at 16 kHz both ways through SRTP; a 6 kHz tone (upper band) crosses", async () => {
    const wide = { codecs: ["G722", "PCMU", "PCMA"] as AudioCodec[], detect: [A_HZ, UPPER_HZ] };
    const a = await phone(21, A_HZ, "optional", 1, wide);
    const b = await phone(22, UPPER_HZ, "optional", 1, wide);
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    const { offer, answer } = exchange(pa, pb);
    expect(lines(offer.sdp).find((l) => l.startsWith("m=audio"))).toMatch(
      /^m=audio [0-9]+ RTP\/AVP 9 0 8 13 101$/,
    );
    expect(lines(offer.sdp)).toContain("a=rtpmap:9 G722/8000");
    expect(lines(answer.sdp).find((l) => l.startsWith("m=audio"))).toMatch(/ RTP\/SAVP 9 0 8 /);
    await sleep(600);
    for (const s of [pa.stats(), pb.stats()]) {
      expect(s).toMatchObject({ state: "streaming", codec: "G722", srtp: true, srtpAuthFailures: 0 });
      // 20 ms frames: the RTP clock steps 160 a packet even at 16 kHz, so nothing looks late or lost.
      expect(s.packetsIn).toBeGreaterThan(10);
      expect(s.lost).toBe(0);
      expect(s.socket?.stream?.late).toBe(0);
    }
    const sa = pa.stats();
    const sb = pb.stats();
    expect(sb.tones!.heard[A_HZ]! / sb.tones!.frames).toBeGreaterThan(0.9);
    expect(sb.tones!.heard[UPPER_HZ]).toBe(0);
    expect(sa.tones!.heard[UPPER_HZ]! / sa.tones!.frames).toBeGreaterThan(0.9);
    expect(sa.tones!.heard[A_HZ]).toBe(0);
    // The speakers play 16 kHz frames of 320 samples, and the 6 kHz tone is there at its level.
    expect(a.audio.speaker().rate).toBe(16000);
    expect(a.audio.recordingRate).toBe(16000);
    const rec = a.audio.recording();
    const frame = rec.subarray(rec.length - 320);
    const [level] = new ToneDetector({ frequencies: [UPPER_HZ], sampleRate: 16000 }).levels(frame);
    expect(Math.abs(level!.levelDbfs - -12)).toBeLessThan(1.5);
  });

  it("G.722 offered to a G.711-only peer: both fall back to PCMU at 8 kHz", async () => {
    const a = await phone(23, A_HZ, "optional", 1, { codecs: ["G722", "PCMU"] });
    const b = await phone(24, B_HZ, "optional", 1, { codecs: ["PCMU"] });
    const pa = a.ports.factory() as CallMediaPort;
    const pb = b.ports.factory() as CallMediaPort;
    exchange(pa, pb);
    await sleep(500);
    expect(pa.stats().codec).toBe("PCMU");
    expect(pb.stats().codec).toBe("PCMU");
    expect((await during(pa, B_HZ, 300)).tone).toBeGreaterThan(8);
    expect((await during(pb, A_HZ, 300)).tone).toBeGreaterThan(8);
    expect(a.audio.speaker().rate).toBe(8000);
  });
});
