/**
 * `handset call-test` (development entry, beside `demo`; issue 12): the lab pool + two whole
 * phones on simulated boards, each built by the product's startPhone (discovery over DHCP, SNTP,
 * sign-in at the keypad, TLS-DSK registration with the SBA, the real media port over loopback
 * UDP). Driven only through the boards — keys and the hook — as a person would:
 *
 *   A lifts the handset and dials B's extension; B rings and lifts the handset; A's 1 kHz tone is
 *   heard at B and B's 1.4 kHz at A, through SRTP; A holds (B stops hearing A) and resumes (B hears
 *   A again); B hangs up and A's call ends "remote-hangup".
 *
 * `--wan cut`: both phones sign in and register first (sign-in needs the pool's web services),
 * then the WAN link to the pool is cut and the call runs on the SBA alone, as a branch's does in an
 * outage. Prints one figures object (`--json`: one JSON line) and exits 0 only if every step
 * happened.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSimBoard, type SimBoard } from "../../board/sim/index.ts";
import { type CommandSpec, oneOf, parseFlags } from "../../firmware/commands/args.ts";
import type { Output } from "../../firmware/commands/output.ts";
import { phoneLogging } from "../../firmware/commands/phone.ts";
import type { PhoneNetworkConfig } from "../../firmware/commands/phone-services.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import { type RunningPhone, startPhone } from "../../firmware/main.ts";
import type { SrtpPolicy } from "../../firmware/media/offer-answer.ts";
import type { PhoneEvent } from "../../firmware/phone/phone.ts";
import type { CallMediaStats } from "../../firmware/platform/call-media.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { type Lab, phoneNetwork, startLab } from "../lab/lab.ts";

export const CALL_TEST_SPEC = {
  summary:
    "lab + two phones on simulated boards: a call with tones both ways through SRTP, hold, resume, hang up",
  flags: {
    wan: {
      type: "string",
      arg: "up|cut",
      help: "cut: the WAN to the pool is down during the call (both phones on the SBA)",
    },
    srtp: {
      type: "string",
      arg: "required|optional|off",
      help: "both phones' media.srtp (default required)",
    },
    verbose: { type: "boolean", help: "every phone event as an event line" },
  },
} as const satisfies CommandSpec;

const A_HZ = 1000;
const B_HZ = 1400;
/** How long each listening window lasts. */
const LISTEN_MS = 1_000;
/** Deadline of any one step (registration on a cold start included). */
const STEP_MS = 30_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface TestPhone {
  name: string;
  extension: string;
  sim: SimBoard;
  running: RunningPhone;
  events: PhoneEvent[];
  waiters: Set<() => void>;
}

class StepFailed extends Error {}

/** Resolves with the first event (already seen from `from` on, or arriving) that `pred` accepts. */
function waitFor(
  p: TestPhone,
  what: string,
  pred: (e: PhoneEvent) => boolean,
  from = 0,
  ms = STEP_MS,
): Promise<PhoneEvent> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const hit = p.events.slice(from).find(pred);
      if (!hit) return;
      clearTimeout(timer);
      p.waiters.delete(check);
      resolve(hit);
    };
    const timer = setTimeout(() => {
      p.waiters.delete(check);
      const states = p.events
        .filter((e) => e.event === "state" || e.event === "call")
        .map((e) => (e.event === "state" ? e.state : `call:${e.state}`))
        .slice(-8);
      reject(
        new StepFailed(`${p.name}: ${what} not within ${ms} ms (last: ${states.join(", ") || "nothing"})`),
      );
    }, ms);
    p.waiters.add(check);
    check();
  });
}

const isState =
  (...states: string[]) =>
  (e: PhoneEvent) =>
    e.event === "state" && states.includes(e.state);
const isCall = (state: string) => (e: PhoneEvent) => e.event === "call" && e.state === state;

/** The media of the phone's one call. */
function mediaOf(p: TestPhone): CallMediaStats {
  const port = p.running.media?.live[0];
  if (!port) throw new StepFailed(`${p.name}: no call media`);
  return port.stats();
}

/** Frames played in which `hz` was heard, and all frames played with audio, so far. */
function heard(p: TestPhone, hz: number): { frames: number; tone: number } {
  const t = mediaOf(p).tones;
  return { frames: t?.frames ?? 0, tone: t?.heard[hz] ?? 0 };
}

/** What `p` hears of `hz` over the next window: the share of frames carrying it. */
async function listen(
  p: TestPhone,
  hz: number,
): Promise<{ frames: number; toneFrames: number; share: number }> {
  const before = heard(p, hz);
  await sleep(LISTEN_MS);
  const after = heard(p, hz);
  const frames = after.frames - before.frames;
  const toneFrames = after.tone - before.tone;
  return { frames, toneFrames, share: frames > 0 ? Math.round((toneFrames / frames) * 1000) / 1000 : 0 };
}

async function bootPhone(
  name: string,
  extension: string,
  hz: number,
  o: {
    network: PhoneNetworkConfig;
    ca: string;
    srtp: SrtpPolicy;
    logger: Logger;
    out: Output;
    verbose: boolean;
  },
  dirs: string[],
): Promise<TestPhone> {
  const storeDir = await mkdtemp(join(tmpdir(), `handset-call-test-${extension}-`));
  dirs.push(storeDir);
  const sim = createSimBoard({ clock: new SystemClock(), name, audio: { microphone: { kind: "tone", hz } } });
  const p: Partial<TestPhone> & { events: PhoneEvent[]; waiters: Set<() => void> } = {
    name,
    extension,
    sim,
    events: [],
    waiters: new Set(),
  };
  let typed = false;
  p.running = await startPhone({
    config: {
      storeDir,
      trustedRoots: [o.ca],
      network: o.network,
      media: { address: "127.0.0.1", srtp: o.srtp, detectTones: [A_HZ, B_HZ] },
    },
    board: sim,
    logger: o.logger.child(name),
    onEvent: (e) => {
      p.events.push(e);
      if (o.verbose && e.event !== "display") o.out.event({ ...e, phone: name });
      // Signs in once, at the keypad, as the person at the desk would.
      if (e.event === "state" && e.state === "sign-in-required" && !typed) {
        typed = true;
        setTimeout(() => sim.typeKeys(`${extension}#1234#`), 0);
      }
      for (const w of [...p.waiters]) w();
    },
  });
  return p as TestPhone;
}

export async function callTestCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, CALL_TEST_SPEC.flags);
  const wan = oneOf(f, "wan", ["up", "cut"] as const, "up");
  const srtp = oneOf(f, "srtp", ["required", "optional", "off"] as const, "required");
  const verbose = f["verbose"] === true;
  const logger = verbose ? phoneLogging(out, { verbose: true }).logger : silentLogger;
  const figures: Record<string, unknown> = { wan, srtp };
  const checks: Record<string, boolean> = {};
  const dirs: string[] = [];
  const phones: TestPhone[] = [];
  let lab: Lab | undefined;
  let failure: string | undefined;
  const t0 = performance.now();
  const ms = (from: number) => Math.round(performance.now() - from);
  try {
    lab = await startLab({
      site: "branch",
      users: [
        { extension: "4711", pin: "1234" },
        { extension: "4712", pin: "1234" },
      ],
    });
    const common = {
      network: {
        ...phoneNetwork(lab.ready),
        failbackProbeMs: 10_000,
        lostRegistrationSpreadMs: 2_000,
      } satisfies PhoneNetworkConfig,
      ca: lab.ca.cert,
      srtp,
      logger,
      out,
      verbose,
    };
    const [a, b] = await Promise.all([
      bootPhone("A", "4711", A_HZ, common, dirs),
      bootPhone("B", "4712", B_HZ, common, dirs),
    ]);
    phones.push(a!, b!);
    const registered = await Promise.all(
      phones.map((p) => waitFor(p, "registered", isState("registered", "limited"))),
    );
    figures["registered_ms"] = ms(t0);
    const registrars = registered.map((e) => (e.event === "state" ? e.registrar : undefined));
    figures["registrars"] = registrars;
    // Both at the branch: the call below is the SBA's alone, which is what a WAN cut leaves.
    checks["both_on_sba"] = registrars.every((r) => r === lab!.ready.sba);

    let wanBytesAtCut = 0;
    if (wan === "cut") {
      lab.wan.cut();
      wanBytesAtCut = lab.wan.stats.bytesToBranch + lab.wan.stats.bytesToCentre;
      figures["wan_cut_at_ms"] = ms(t0);
    }

    // ── A dials B ─────────────────────────────────────────────────────────────────────────
    const mark = { a: a!.events.length, b: b!.events.length };
    const tDial = performance.now();
    a!.sim.setHook(true);
    a!.sim.typeKeys(`${b!.extension}#`);
    await waitFor(b!, "incoming call", isCall("incoming"), mark.b);
    figures["ring_ms"] = ms(tDial);
    checks["b_rings"] = true;
    b!.sim.setHook(true);
    await Promise.all([
      waitFor(a!, "call connected", isCall("connected"), mark.a),
      waitFor(b!, "call connected", isCall("connected"), mark.b),
    ]);
    figures["dial_to_connected_ms"] = ms(tDial);

    // ── audio both ways ───────────────────────────────────────────────────────────────────
    await sleep(300); // the first packets latch and fill the jitter buffer
    const [atB, atA] = await Promise.all([listen(b!, A_HZ), listen(a!, B_HZ)]);
    figures["b_hears_a"] = atB;
    figures["a_hears_b"] = atA;
    checks["tone_a_to_b"] = atB.share >= 0.8;
    checks["tone_b_to_a"] = atA.share >= 0.8;
    const ma = mediaOf(a!);
    const mb = mediaOf(b!);
    checks["srtp"] = srtp === "off" ? !ma.srtp && !mb.srtp : ma.srtp && mb.srtp;
    figures["media"] = { codec: ma.codec, suite: ma.suite ?? "none" };

    // ── hold and resume (A's soft1) ────────────────────────────────────────────────────────
    const held = { a: a!.events.length, b: b!.events.length };
    const tHold = performance.now();
    a!.sim.press("soft1");
    await waitFor(a!, "hold", isCall("held"), held.a);
    figures["hold_ms"] = ms(tHold);
    await sleep(300);
    const [onHold, heldBack] = await Promise.all([listen(b!, A_HZ), listen(a!, B_HZ)]);
    figures["b_hears_a_on_hold"] = onHold;
    figures["a_hears_b_on_hold"] = heldBack;
    // Hold silences both ways: the holder is not heard, and the held side sends nothing (recvonly).
    checks["hold_silences_both_ways"] = onHold.toneFrames === 0 && heldBack.toneFrames === 0;
    const resumed = a!.events.length;
    const tResume = performance.now();
    a!.sim.press("soft1");
    await waitFor(a!, "resume", isCall("connected"), resumed);
    figures["resume_ms"] = ms(tResume);
    await sleep(300);
    const [after, afterBack] = await Promise.all([listen(b!, A_HZ), listen(a!, B_HZ)]);
    figures["b_hears_a_after_resume"] = after;
    figures["a_hears_b_after_resume"] = afterBack;
    checks["resume_restores_both_ways"] = after.share >= 0.8 && afterBack.share >= 0.8;
    const final = { a: mediaOf(a!), b: mediaOf(b!) };
    figures["packets"] = {
      a: { out: final.a.packetsOut, in: final.a.packetsIn, srtpAuthFailures: final.a.srtpAuthFailures },
      b: { out: final.b.packetsOut, in: final.b.packetsIn, srtpAuthFailures: final.b.srtpAuthFailures },
    };
    checks["no_srtp_failures"] = final.a.srtpAuthFailures === 0 && final.b.srtpAuthFailures === 0;

    // ── B hangs up ────────────────────────────────────────────────────────────────────────
    const bye = a!.events.length;
    const tBye = performance.now();
    b!.sim.setHook(false);
    const ended = await waitFor(a!, "call ended", isCall("ended"), bye);
    if (wan === "cut") {
      // Nothing crossed the WAN while it was cut (the link counts what it forwards).
      const w = lab.wan.stats;
      checks["nothing_crossed_the_cut"] = w.bytesToBranch + w.bytesToCentre === wanBytesAtCut;
    }
    figures["hangup_ms"] = ms(tBye);
    checks["a_sees_remote_hangup"] = ended.event === "call" && ended.reason === "remote-hangup";
    figures["a_end_reason"] = ended.event === "call" ? ended.reason : undefined;
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
  } finally {
    for (const p of phones) await p.running.stop().catch(() => {});
    await lab?.stop().catch(() => {});
    for (const d of dirs)
      await rm(d, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }).catch(() => {});
  }
  const ok = failure === undefined && Object.keys(checks).length > 0 && Object.values(checks).every((v) => v);
  figures["total_ms"] = ms(t0);
  out.event({ event: "call-test", ok, checks, figures, ...(failure ? { failure } : {}) });
  return ok ? 0 : 1;
}
