import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createSimAudio, type SimAudioDevice } from "../../board/sim/sim-audio.ts";
import { endpointForCert } from "../../firmware/commands/register.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import type { AudioCodec, SrtpPolicy as SrtpMode } from "../../firmware/media/offer-answer.ts";
import { rmsDbfs, TEST_TONE_HZ, ToneDetector } from "../../firmware/media/tone.ts";
import {
  type CallMediaPort,
  type CallMediaPorts,
  callMediaPorts,
} from "../../firmware/platform/call-media.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import { header, headerList, type SipRequest } from "../../firmware/sip/message/message.ts";
import type { Registration } from "../../firmware/sip/registration/registration.ts";
import type { Call, CallEvent } from "../../firmware/sip/session/call.ts";
import { CallAgent } from "../../firmware/sip/session/call-agent.ts";
import type { MediaPort } from "../../firmware/sip/session/media-port.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { type LabUserCreds, labRegistration, registered, testClient } from "../lab-calls/phones.ts";
import {
  type Baresip,
  type BaresipMediaEnc,
  hasBaresip,
  needBaresip,
  startBaresip,
} from "../peers/baresip.ts";

const PHONE_TONE_HZ = TEST_TONE_HZ; // 1004 Hz from us
const PEER_TONE_HZ = 697; // from baresip
const TONE_DBFS = -12;
/** How long each call carries audio before it is hung up. */
const TALK_MS = 3_000;
/** baresip's account: a number, as a gateway's caller would be; calls to it route out the trunk. */
const PEER_NUMBER = "+15550100";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- our media: the real port --------------------------------------------------------------

/**
 * The phone's media: firmware/platform/call-media.ts's ports over the simulated board's audio
 * (board/sim/sim-audio.ts: a 1004 Hz microphone and a speaker that records what plays). A fresh
 * pool and device per test, so each call's recording and SRTP policy are its own; the agent's
 * factory hands out the current pool's ports.
 */
class PhoneMedia {
  private ports: CallMediaPorts | undefined;
  audio: SimAudioDevice | undefined;
  /** The port of the latest call. */
  port: CallMediaPort | undefined;
  private readonly random = new CryptoRandom();
  private readonly clock = new SystemClock();

  async use(srtp: SrtpMode, codecs: AudioCodec[] = ["PCMU", "PCMA"]): Promise<void> {
    await this.ports?.close();
    this.port = undefined;
    this.audio = createSimAudio({
      microphone: { kind: "tone", hz: PHONE_TONE_HZ, levelDbfs: TONE_DBFS },
      recordMs: 30_000,
    });
    this.ports = await callMediaPorts({
      clock: this.clock,
      random: this.random,
      logger: silentLogger,
      address: "127.0.0.1",
      portRange: { min: 30_000, max: 39_999 },
      capabilities: { codecs, srtp },
      audio: this.audio,
      detectTones: [PHONE_TONE_HZ, PEER_TONE_HZ],
    });
    this.ports.onPort((p) => {
      this.port = p;
    });
  }

  readonly factory = (): MediaPort => {
    if (!this.ports) throw new Error("PhoneMedia.use() first");
    return this.ports.factory();
  };

  async dispose(): Promise<void> {
    await this.ports?.close();
  }
}

// ---- our phone -------------------------------------------------------------------------------

/** The firmware's registration and call agent on one TLS-DSK flow to a lab registrar. */
class FirmwarePhone {
  readonly incoming: Call[] = [];
  readonly events: Array<{ call: Call; e: CallEvent }> = [];
  /** Every INVITE that reached the phone, as the lab delivered it. */
  readonly invites: SipRequest[] = [];
  private readonly wake = new Set<() => void>();

  private constructor(
    readonly aor: string,
    readonly flow: Flow,
    readonly core: UserAgentCore,
    readonly reg: Registration,
    readonly agent: CallAgent,
  ) {
    flow.onMessage((m) => {
      if (m.kind === "request" && m.method === "INVITE") this.invites.push(m);
    });
    agent.onIncoming((call) => {
      this.incoming.push(call);
      this.watch(call);
      // Auto-answer, as the phone's own auto-answer setting would: the 200 goes at once.
      call.answer();
    });
  }

  static async register(
    lab: Lab,
    user: LabUserCreds,
    registrar: string,
    serverName: string,
    media: PhoneMedia,
  ): Promise<FirmwarePhone> {
    const clock = new SystemClock();
    const random = new CryptoRandom();
    const i = registrar.lastIndexOf(":");
    const flow = await tlsFlowConnector({ ca: [lab.ca.cert] })({
      host: registrar.slice(0, i),
      port: Number(registrar.slice(i + 1)),
      serverName,
    });
    const core = new UserAgentCore(flow, { clock, random, logger: silentLogger });
    const endpoint = endpointForCert(user.aor, user.cert);
    const reg = labRegistration(lab, user, { core, clock, random, livenessTimeoutMs: 0 });
    const gruu = (await registered(reg)).gruu;
    const { address, port } = flow.local;
    const agent = new CallAgent({
      core,
      clock,
      random,
      logger: silentLogger,
      identity: { aor: user.aor, epid: endpoint.epid },
      // The GRUU when the registrar gave one (Lync does), else the Contact we registered.
      contact: gruu ?? `sip:${address}:${port};transport=tls;ms-opaque=${endpoint.epid}`,
      media: media.factory,
    });
    return new FirmwarePhone(user.aor, flow, core, reg, agent);
  }

  dial(target: string): Call {
    return this.agent.dial(target, (e, call) => this.push(call, e));
  }

  /** The next incoming call (index `n`), waiting up to ms for it. */
  async incomingCall(n: number, ms = 10_000): Promise<Call> {
    await this.until(() => this.incoming.length > n, ms, "an incoming call");
    return this.incoming[n]!;
  }

  async state(call: Call, state: string, ms = 10_000): Promise<void> {
    await this.until(() => call.state === state, ms, `call state ${state} (is ${call.state})`);
  }

  close(): void {
    this.agent.stop();
    this.reg.stop();
    this.core.close();
  }

  private watch(call: Call): void {
    call.on((e) => this.push(call, e));
  }

  private push(call: Call, e: CallEvent): void {
    this.events.push({ call, e });
    for (const w of this.wake) w();
  }

  private until(done: () => boolean, ms: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        this.wake.delete(check);
        resolve();
      };
      const timer = setTimeout(() => {
        this.wake.delete(check);
        reject(new Error(`timed out waiting for ${what}`));
      }, ms);
      this.wake.add(check);
      check();
    });
  }
}

// ---- tone analysis ---------------------------------------------------------------------------

interface ToneReport {
  /** 20 ms frames with any signal in them (RMS above −45 dBFS). */
  loudFrames: number;
  /** Of those, the share where the expected tone, and only it, was at or above −30 dBFS. */
  share: number;
  /** Median level of the expected tone over the loud frames, dBFS. */
  levelDbfs: number;
  /** Highest level any other candidate reached in a loud frame, dBFS. */
  otherMaxDbfs: number;
}

/** Which of our two tones a recording carries, frame by frame (20 ms frames at `rate`). */
function analyse(pcm: Int16Array, expectedHz: number, rate = 8000): ToneReport {
  const candidates = [PHONE_TONE_HZ, PEER_TONE_HZ];
  const detector = new ToneDetector({ frequencies: candidates, thresholdDbfs: -30, sampleRate: rate });
  const levels: number[] = [];
  let hits = 0;
  let loud = 0;
  let otherMax = Number.NEGATIVE_INFINITY;
  const n = rate / 50;
  for (let at = 0; at + n <= pcm.length; at += n) {
    const frame = pcm.subarray(at, at + n);
    if (rmsDbfs(frame) < -45) continue;
    loud++;
    const l = detector.levels(frame);
    const mine = l.find((x) => x.hz === expectedHz)!.levelDbfs;
    const other = Math.max(...l.filter((x) => x.hz !== expectedHz).map((x) => x.levelDbfs));
    otherMax = Math.max(otherMax, other);
    levels.push(mine);
    if (mine >= -30 && other < -30) hits++;
  }
  levels.sort((a, b) => a - b);
  return {
    loudFrames: loud,
    share: loud === 0 ? 0 : hits / loud,
    levelDbfs: levels.length === 0 ? Number.NEGATIVE_INFINITY : levels[Math.floor(levels.length / 2)]!,
    otherMaxDbfs: otherMax,
  };
}

function round(r: ToneReport) {
  return {
    loudFrames: r.loudFrames,
    share: Math.round(r.share * 1000) / 1000,
    levelDbfs: Math.round(r.levelDbfs * 10) / 10,
    otherMaxDbfs: Math.round(r.otherMaxDbfs * 10) / 10,
  };
}

/** Both directions carried the other side's tone, near the level it was sent at. */
function expectAudioBothWays(peerHeard: ToneReport, phoneHeard: ToneReport): void {
  // At least a second and a half of a three-second call, nearly all of it the right tone.
  for (const r of [peerHeard, phoneHeard]) {
    expect(r.loudFrames).toBeGreaterThanOrEqual(75);
    expect(r.share).toBeGreaterThan(0.95);
    // G.711 keeps a −12 dBFS sine within a fraction of a dB; G.722 (45 dB SNR on a tone) too.
    expect(Math.abs(r.levelDbfs - TONE_DBFS)).toBeLessThan(1.5);
  }
}

// ---- the lab and the calls -------------------------------------------------------------------

let lab: Lab;
let phone: FirmwarePhone;
const media = new PhoneMedia();
const peers: Baresip[] = [];
const figures: Record<string, unknown> = {};

beforeAll(async () => {
  // Without baresip there is nothing to call; the tests say so themselves (skip or, in CI, fail).
  if (!hasBaresip) return;
  lab = await startLab();
  phone = await FirmwarePhone.register(lab, testClient(lab), lab.ready.sba, lab.ready.names.sba, media);
}, 60_000);

afterEach(async () => {
  for (const b of peers.splice(0)) await b.dispose();
  if (lab) lab.trunk.peer = undefined;
  if (phone) for (const c of phone.agent.calls) c.hangUp();
});

afterAll(async () => {
  phone?.close();
  await media.dispose();
  await lab?.stop();
  // The figures of each call, one JSON line apiece, for the record of what crossed.
  for (const [call, f] of Object.entries(figures))
    process.stdout.write(`${JSON.stringify({ event: "baresip.call", call, ...(f as object) })}\n`);
});

async function peer(o: Parameters<typeof startBaresip>[0]): Promise<Baresip> {
  const b = await startBaresip({ tone: [{ hz: PEER_TONE_HZ, levelDbfs: TONE_DBFS }], ...o });
  peers.push(b);
  return b;
}

interface Case {
  name: string;
  transport: "udp" | "tcp";
  mediaenc: BaresipMediaEnc | undefined;
  policy: SrtpMode;
  /** Default G.711 (PCMU): both sides' default codecs. */
  codec?: "G722";
}

const cases: Case[] = [
  // Best effort both sides: each offers RTP/AVP with a=crypto (MS-SDPEXT's "optional"), and SRTP it is.
  { name: "SRTP", transport: "udp", mediaenc: "srtp", policy: "optional" },
  // baresip without SRTP: our optional policy falls back to plain RTP.
  { name: "plain RTP", transport: "tcp", mediaenc: undefined, policy: "optional" },
  // Mandatory both sides: RTP/SAVP offers, taken by both.
  {
    name: "mandatory SRTP (srtp-mand, required)",
    transport: "udp",
    mediaenc: "srtp-mand",
    policy: "required",
  },
];

/**
 * After TALK_MS of audio: the phone's figures (taken before the hang-up, while the stream still
 * counts), then, once the call is over, baresip's recording; both searched for the other's tone.
 */
async function talkAndCheck(label: string, c: Case, b: Baresip, hangUp: () => Promise<void>): Promise<void> {
  await sleep(TALK_MS);
  const port = media.port!;
  const stats = port.stats();
  const closedAt = b.eventMark();
  await hangUp();
  await b.waitForEvent("CALL_CLOSED", { from: closedAt });
  await port.closed;
  const rec = await b.recording();
  const peerHeard = analyse(rec.received, PHONE_TONE_HZ, rec.rate);
  const phoneHeard = analyse(media.audio!.recording(), PEER_TONE_HZ, media.audio!.recordingRate);
  figures[label] = {
    baresipRecordingRate: rec.rate,
    phoneRecordingRate: media.audio!.recordingRate,
    codec: stats.codec,
    srtp: stats.srtp,
    suite: stats.suite,
    baresipHeard1004: round(peerHeard),
    phoneHeard697: round(phoneHeard),
    phonePort: {
      packetsOut: stats.packetsOut,
      packetsIn: stats.packetsIn,
      srtpAuthFailures: stats.srtpAuthFailures,
      lost: stats.lost,
      concealed: stats.concealed,
      jitterMs: Math.round(stats.jitterMs * 10) / 10,
      latched: stats.latched,
      tones: stats.tones,
      malformed: stats.socket?.stream?.malformed,
    },
  };
  expect(stats.codec).toBe(c.codec ?? "PCMU");
  const wideband = c.codec === "G722";
  expect(rec.rate).toBe(wideband ? 16000 : 8000);
  expect(media.audio!.recordingRate).toBe(wideband ? 16000 : 8000);
  expect(stats.srtp).toBe(c.mediaenc !== undefined);
  expect(stats.srtpAuthFailures).toBe(0);
  // 50 packets a second each way; a three-second call carries well over a hundred.
  expect(stats.packetsOut).toBeGreaterThan(100);
  expect(stats.packetsIn).toBeGreaterThan(100);
  expect(stats.tones?.heard[PEER_TONE_HZ] ?? 0).toBeGreaterThan(0.9 * (stats.tones?.frames ?? 0));
  expect(stats.tones?.heard[PHONE_TONE_HZ]).toBe(0);
  expectAudioBothWays(peerHeard, phoneHeard);
}

describe("baresip calls the phone through the trunk", () => {
  for (const c of cases) {
    it(`${c.name} over the trunk's ${c.transport.toUpperCase()}: the phone answers, each side hears the other's tone, baresip hangs up`, async (ctx) => {
      needBaresip(ctx);
      await media.use(c.policy);
      const b = await peer({
        user: PEER_NUMBER,
        outbound: { address: lab.ready.trunk[c.transport], transport: c.transport },
        ...(c.mediaenc ? { mediaenc: c.mediaenc } : {}),
      });
      const n = phone.incoming.length;
      await b.dial(`sip:4711@${lab.ready.domain}`);
      const call = await phone.incomingCall(n);
      await b.waitForEvent("CALL_ESTABLISHED");
      await phone.state(call, "confirmed");
      expect(call.remoteParty?.uri).toContain(PEER_NUMBER);
      // baresip's preloaded Route to the trunk (its outbound proxy) ends at the trunk.
      const invite = phone.invites.at(-1)!;
      expect(headerList(invite, "Route")).toEqual([]);
      expect(header(invite, "From")).toContain(`sip:${PEER_NUMBER}@127.0.0.1`);
      if (c.mediaenc) expect((await b.waitForEvent("CALL_MENC")).param).toContain("AES_CM_128_HMAC_SHA1");
      await talkAndCheck(`baresip→phone ${c.name} ${c.transport}`, c, b, () => b.hangup());
      await phone.state(call, "terminated");
      expect(call.endReason?.reason).toBe("remote-hangup");
    });
  }
});

describe("the phone calls baresip through the trunk", () => {
  for (const c of cases) {
    const transport = c.transport === "udp" ? "tcp" : "udp";
    it(`${c.name} over the trunk's ${transport.toUpperCase()}: baresip answers, each side hears the other's tone, the phone hangs up`, async (ctx) => {
      needBaresip(ctx);
      await media.use(c.policy);
      const b = await peer({ user: PEER_NUMBER, ...(c.mediaenc ? { mediaenc: c.mediaenc } : {}) });
      // A number: the SBA sends it out of the trunk, to the configured peer.
      lab.trunk.peer = { host: "127.0.0.1", port: b.sipPort, transport };
      const from = b.eventMark();
      const call = phone.dial(`sip:${PEER_NUMBER}@${lab.ready.domain};user=phone`);
      // With answermode=auto, baresip 1.0.0 answers before it would announce CALL_INCOMING.
      const established = await b.waitForEvent("CALL_ESTABLISHED", { from });
      expect(established.direction).toBe("incoming");
      expect(established.peeruri).toContain("4711");
      await phone.state(call, "confirmed");
      if (c.mediaenc)
        expect((await b.waitForEvent("CALL_MENC", { from })).param).toContain("AES_CM_128_HMAC_SHA1");
      await talkAndCheck(`phone→baresip ${c.name} ${transport}`, c, b, async () => call.hangUp());
      expect(call.endReason?.reason).toBe("local-hangup");
    });
  }
});

describe("G.722 with baresip (its g722 module: spandsp's codec)", () => {
  const c: Case = {
    name: "G.722 SRTP",
    transport: "udp",
    mediaenc: "srtp",
    policy: "optional",
    codec: "G722",
  };
  const wide: AudioCodec[] = ["G722", "PCMU", "PCMA"];

  it("baresip offers G.722 only, the phone (G722 first) answers it: each side hears the other's tone at 16 kHz", async (ctx) => {
    needBaresip(ctx);
    await media.use(c.policy, wide);
    const b = await peer({
      user: PEER_NUMBER,
      outbound: { address: lab.ready.trunk.udp, transport: "udp" },
      mediaenc: "srtp",
      codecs: ["g722"],
    });
    const n = phone.incoming.length;
    await b.dial(`sip:4711@${lab.ready.domain}`);
    const call = await phone.incomingCall(n);
    await b.waitForEvent("CALL_ESTABLISHED");
    await phone.state(call, "confirmed");
    expect(phone.invites.at(-1)!.body.toString()).toMatch(/a=rtpmap:9 G722\/8000/);
    expect((await b.waitForEvent("CALL_MENC")).param).toContain("AES_CM_128_HMAC_SHA1");
    await talkAndCheck("baresip→phone G.722 SRTP udp", c, b, () => b.hangup());
    await phone.state(call, "terminated");
  });

  it("the phone offers G722 first to baresip (G.722 and G.711): baresip takes G.722, each side hears the other's tone", async (ctx) => {
    needBaresip(ctx);
    await media.use(c.policy, wide);
    const b = await peer({ user: PEER_NUMBER, mediaenc: "srtp", codecs: ["g722", "pcmu", "pcma"] });
    lab.trunk.peer = { host: "127.0.0.1", port: b.sipPort, transport: "tcp" };
    const from = b.eventMark();
    const call = phone.dial(`sip:${PEER_NUMBER}@${lab.ready.domain};user=phone`);
    await b.waitForEvent("CALL_ESTABLISHED", { from });
    await phone.state(call, "confirmed");
    expect((await b.waitForEvent("CALL_MENC", { from })).param).toContain("AES_CM_128_HMAC_SHA1");
    await talkAndCheck("phone→baresip G.722 SRTP tcp", c, b, async () => call.hangUp());
    expect(call.endReason?.reason).toBe("local-hangup");
  });
});

/**
 * Where the two SRTP worlds do not meet, the refusal is the offer/answer's own (488), the call
 * ends cleanly on both sides and nothing is left ringing.
 */
describe("SRTP policies that do not meet", () => {
  it("baresip without SRTP calls a phone that requires it: 488 Encryption Levels not compatible", async (ctx) => {
    needBaresip(ctx);
    await media.use("required");
    const b = await peer({
      user: PEER_NUMBER,
      outbound: { address: lab.ready.trunk.udp, transport: "udp" },
    });
    const n = phone.incoming.length;
    await b.dial(`sip:4711@${lab.ready.domain}`);
    const closed = await b.waitForEvent("CALL_CLOSED");
    expect(closed.param).toBe("488 Encryption Levels not compatible");
    const call = phone.incoming[n];
    if (call) await phone.state(call, "terminated");
    expect(b.events().some((e) => e.type === "CALL_ESTABLISHED")).toBe(false);
  });

  it("the phone requiring SRTP calls baresip without it: baresip refuses the RTP/SAVP offer, the call ends as a media failure", async (ctx) => {
    needBaresip(ctx);
    await media.use("required");
    const b = await peer({ user: PEER_NUMBER });
    lab.trunk.peer = { host: "127.0.0.1", port: b.sipPort, transport: "udp" };
    const call = phone.dial(`sip:${PEER_NUMBER}@${lab.ready.domain};user=phone`);
    await phone.state(call, "terminated");
    expect(call.endReason).toEqual({ reason: "media", status: 488 });
    expect(b.log()).toContain("no common audio codecs - rejected");
  });

  it("baresip's srtp-mand takes only RTP/SAVP: the phone's optional offer (RTP/AVP with a=crypto) is refused", async (ctx) => {
    needBaresip(ctx);
    await media.use("optional");
    const b = await peer({ user: PEER_NUMBER, mediaenc: "srtp-mand" });
    lab.trunk.peer = { host: "127.0.0.1", port: b.sipPort, transport: "udp" };
    const call = phone.dial(`sip:${PEER_NUMBER}@${lab.ready.domain};user=phone`);
    await phone.state(call, "terminated");
    expect(call.endReason).toEqual({ reason: "media", status: 488 });
  });
});
