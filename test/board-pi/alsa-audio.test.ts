/**
 * The Pi's ALSA audio (board/pi/alsa-audio.ts) against stand-ins for arecord and aplay: no sound
 * card and no alsa-utils can run on this machine, so each test writes two small node programs
 * that speak the tools' interface — the same argv, raw S16_LE mono on stdout (arecord, a tone at
 * the rate it was asked, in real time, one 20 ms period at a time) or from stdin (aplay, into a
 * file) — and points the profile's arecordPath/aplayPath at them. Each records its argv and pid,
 * so a test can check what the driver asked for, kill one, and see that none outlives close().
 * The 20 ms media ticker is played by the test with real timers; every test is under 1.5 s.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  type AlsaAudioDevice,
  type AlsaEndpoint,
  aplayArgs,
  arecordArgs,
  createAlsaAudio,
  Decimator,
  Interpolator,
  SampleRing,
} from "../../board/pi/alsa-audio.ts";
import { createPiBoard } from "../../board/pi/pi-board.ts";
import { DEFAULT_PROFILE_PATH, parseProfile } from "../../board/pi/profile.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import type { AudioSampleRate } from "../../firmware/hal/audio.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { FakeGpio } from "./fake-gpio.ts";

const rawProfile = JSON.parse(readFileSync(DEFAULT_PROFILE_PATH, "utf8"));
const LEVEL_DBFS = -12;
const AMPLITUDE = 32767 * 10 ** (LEVEL_DBFS / 20);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Writes the stand-ins into a fresh directory; `hz` is the tone the "microphone" hears. */
function standIns(hz = 1000): { dir: string; arecord: string; aplay: string } {
  const dir = mkdtempSync(join(tmpdir(), "handset-alsa-"));
  const arecord = join(dir, "arecord");
  const aplay = join(dir, "aplay");
  // CommonJS (no package.json here); the interpreter is the one running the tests.
  writeFileSync(
    arecord,
    `#!${process.execPath}
const fs = require("node:fs");
const args = process.argv.slice(2);
const note = ${JSON.stringify(dir)} + "/arecord." + process.pid;
fs.writeFileSync(note + ".tmp", JSON.stringify({ pid: process.pid, args }));
fs.renameSync(note + ".tmp", note + ".json");
const rate = Number(args[args.indexOf("-r") + 1]);
const period = rate / 50;
const step = (2 * Math.PI * ${hz}) / rate;
let phase = 0;
let sent = 0;
const t0 = process.hrtime.bigint();
process.stdout.on("error", () => process.exit(0));
setInterval(() => {
  const due = Math.floor((Number(process.hrtime.bigint() - t0) / 1e9) * rate);
  while (due - sent >= period) {
    const b = Buffer.alloc(period * 2);
    for (let i = 0; i < period; i++) {
      b.writeInt16LE(Math.round(${AMPLITUDE} * Math.sin(phase)), 2 * i);
      phase += step;
    }
    phase %= 2 * Math.PI;
    process.stdout.write(b);
    sent += period;
  }
}, 5);
`,
  );
  writeFileSync(
    aplay,
    `#!${process.execPath}
const fs = require("node:fs");
const args = process.argv.slice(2);
const note = ${JSON.stringify(dir)} + "/aplay." + process.pid;
fs.writeFileSync(note + ".tmp", JSON.stringify({ pid: process.pid, args }));
fs.renameSync(note + ".tmp", note + ".json");
process.stdin.pipe(fs.createWriteStream(${JSON.stringify(dir)} + "/aplay." + process.pid + ".raw"));
`,
  );
  chmodSync(arecord, 0o755);
  chmodSync(aplay, 0o755);
  return { dir, arecord, aplay };
}

/** Every start of a stand-in so far: its argv and pid. */
function started(dir: string, tool: "arecord" | "aplay"): Array<{ pid: number; args: string[] }> {
  return readdirSync(dir)
    .filter((f) => f.startsWith(`${tool}.`) && f.endsWith(".json"))
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** The media ticker: fn every 20 ms (drift-free) for `ms`. */
async function ticker(ms: number, fn: () => void): Promise<void> {
  const t0 = performance.now();
  for (let k = 1; performance.now() - t0 < ms; k++) {
    fn();
    await sleep(Math.max(0, t0 + k * 20 - performance.now()));
  }
}

/** Goertzel: the amplitude of the `hz` component of x (a full-scale sine of amplitude A gives A). */
function amplitudeAt(x: Int16Array, hz: number, rate: number): number {
  const c = 2 * Math.cos((2 * Math.PI * hz) / rate);
  let s1 = 0;
  let s2 = 0;
  for (const v of x) {
    const s = v + c * s1 - s2;
    s2 = s1;
    s1 = s;
  }
  return (2 * Math.sqrt(Math.max(0, s1 * s1 + s2 * s2 - c * s1 * s2))) / x.length;
}

/**
 * The median over 20 ms frames of amplitudeAt: the level a listener hears, robust to the odd
 * frame lost when this busy test machine stalls the test's own ticker (a ring then overruns and
 * underruns, as it should). 20 ms holds a whole number of cycles of every frequency checked
 * (50 Hz bins), so one tone leaks nothing into another's bin.
 */
function frameLevel(x: Int16Array, hz: number, rate: number): number {
  const n = rate / 50;
  const levels: number[] = [];
  for (let at = 0; at + n <= x.length; at += n) levels.push(amplitudeAt(x.subarray(at, at + n), hz, rate));
  levels.sort((a, b) => a - b);
  return levels[Math.floor(levels.length / 2)]!;
}

function concat(frames: Int16Array[]): Int16Array {
  const out = new Int16Array(frames.reduce((n, f) => n + f.length, 0));
  let at = 0;
  for (const f of frames) {
    out.set(f, at);
    at += f.length;
  }
  return out;
}

/** n samples starting `skipMs` after the first sound (the ring's priming is silence). */
function afterOnset(x: Int16Array, rate: number, skipMs: number, n: number): Int16Array {
  const onset = x.findIndex((v) => v !== 0);
  expect(onset).toBeGreaterThanOrEqual(0);
  const from = onset + Math.round((skipMs * rate) / 1000);
  expect(x.length - from).toBeGreaterThanOrEqual(n);
  return x.subarray(from, from + n);
}

const open: AlsaEndpoint[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const e of open.splice(0)) {
    e.close();
    await e.closed;
  }
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function device(
  o: { rateHz?: AudioSampleRate; latencyMs?: number; hz?: number; arecordPath?: string } = {},
): { audio: AlsaAudioDevice; dir: string } {
  const s = standIns(o.hz);
  dirs.push(s.dir);
  const profile = parseProfile({
    ...rawProfile,
    audio: {
      capture: "plughw:CARD=Device,DEV=0",
      playback: "plughw:CARD=Headset,DEV=0",
      rateHz: o.rateHz ?? 16000,
      latencyMs: o.latencyMs ?? 100,
      arecordPath: o.arecordPath ?? s.arecord,
      aplayPath: s.aplay,
    },
  });
  const audio = createAlsaAudio({
    profile: profile.audio!,
    clock: new SystemClock(),
    restartBackoff: { baseMs: 100, capMs: 200 },
  });
  return { audio, dir: s.dir };
}

function openOn(audio: AlsaAudioDevice): AlsaEndpoint {
  const e = audio.open();
  open.push(e);
  return e;
}

/**
 * Reads the microphone like the ticker does, at `rate`, until `ms` have passed since the first
 * sound (a stand-in node takes a few hundred ms to start on a busy machine), at most 3 s.
 */
async function capture(e: AlsaEndpoint, rate: AudioSampleRate, ms: number): Promise<Int16Array> {
  const frames: Int16Array[] = [];
  let heard: number | undefined;
  const t0 = performance.now();
  for (let k = 1; ; k++) {
    const f = e.source.read(rate / 50, rate);
    frames.push(f);
    const now = performance.now();
    if (heard === undefined && f.some((v) => v !== 0)) heard = now;
    if ((heard !== undefined && now - heard >= ms) || now - t0 > 3000) break;
    await sleep(Math.max(0, t0 + k * 20 - performance.now()));
  }
  return concat(frames);
}

describe("ALSA audio through arecord/aplay (stand-ins)", () => {
  it("passes the profile's device, rate and format to arecord and aplay", async () => {
    const { audio, dir } = device({ latencyMs: 60 });
    const e = openOn(audio);
    await until(
      "both tools",
      () => started(dir, "arecord").length === 1 && started(dir, "aplay").length === 1,
    );
    const common = [
      "-t",
      "raw",
      "-f",
      "S16_LE",
      "-c",
      "1",
      "-r",
      "16000",
      "--buffer-time=60000",
      "--period-time=20000",
    ];
    expect(started(dir, "arecord")[0]!.args).toEqual(["-q", "-D", "plughw:CARD=Device,DEV=0", ...common]);
    expect(started(dir, "aplay")[0]!.args).toEqual(["-q", "-D", "plughw:CARD=Headset,DEV=0", ...common]);
    expect(arecordArgs(audio.profile)).toEqual(started(dir, "arecord")[0]!.args);
    expect(aplayArgs(audio.profile)).toEqual(started(dir, "aplay")[0]!.args);
    expect(e.silent).toBe(false);
    expect(audio.name).toBe("alsa:plughw:CARD=Device,DEV=0");
  });

  it("a 1 kHz tone read at 16000 and at 8000 (card at 16 kHz) keeps its frequency and level", async () => {
    const { audio } = device();
    const e = openOn(audio);
    const wide = afterOnset(await capture(e, 16000, 500), 16000, 60, 6400); // 400 ms
    expect(frameLevel(wide, 1000, 16000) / AMPLITUDE).toBeCloseTo(1, 1);
    expect(frameLevel(wide, 1100, 16000)).toBeLessThan(AMPLITUDE * 0.05);
    // The same endpoint, now a narrowband call (a re-INVITE to G.711).
    const narrow = afterOnset(await capture(e, 8000, 500), 8000, 20, 3200);
    expect(frameLevel(narrow, 1000, 8000) / AMPLITUDE).toBeCloseTo(1, 1);
    expect(frameLevel(narrow, 900, 8000)).toBeLessThan(AMPLITUDE * 0.05);
  });

  it("a card at 8 kHz serves a wideband read: the tone, and no image at 7 kHz", async () => {
    const { audio, dir } = device({ rateHz: 8000 });
    const e = openOn(audio);
    const x = afterOnset(await capture(e, 16000, 500), 16000, 60, 6400);
    expect(started(dir, "arecord")[0]!.args).toContain("8000");
    expect(frameLevel(x, 1000, 16000) / AMPLITUDE).toBeCloseTo(1, 1);
    expect(frameLevel(x, 7000, 16000)).toBeLessThan(AMPLITUDE * 0.01);
  });

  it("decimation low-passes: a 6 kHz tone on a 16 kHz card does not alias into a narrowband call", () => {
    const n = 3200;
    const x = new Int16Array(n);
    for (let i = 0; i < n; i++) x[i] = Math.round(AMPLITUDE * Math.sin((2 * Math.PI * 6000 * i) / 16000));
    const y = new Decimator().process(x).subarray(100);
    // Unfiltered, 6 kHz at 8 kHz sampling folds to 2 kHz at full level.
    expect(amplitudeAt(y, 2000, 8000)).toBeLessThan(AMPLITUDE * 0.001);
    const up = new Interpolator().process(new Int16Array(160).fill(1000)).subarray(100);
    expect(Math.min(...up)).toBeGreaterThan(990); // unity gain through the interpolator
  });

  it("what the sink plays reaches aplay at the card's rate; a dry sink underruns, a flood overruns", async () => {
    const { audio, dir } = device();
    const e = openOn(audio);
    let phase = 0;
    const frame = () => {
      const pcm = new Int16Array(160);
      for (let i = 0; i < 160; i++) {
        pcm[i] = Math.round(AMPLITUDE * Math.sin(phase));
        phase += (2 * Math.PI * 1000) / 8000;
      }
      return pcm;
    };
    // The earpiece is paced by the card's capture clock: start once arecord delivers.
    await until(
      "arecord's first period",
      () => e.stats().capture.fill > 0 && e.pids().aplay !== undefined,
      3000,
    );
    await ticker(700, () => e.sink.write({ pcm: frame(), rate: 8000, kind: "audio" }));
    await sleep(100); // the ticker stopped: the playback ring runs dry
    expect(e.stats().playback.underruns).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 50; i++) e.sink.write({ pcm: frame(), rate: 8000, kind: "audio" });
    const s = e.stats().playback;
    expect(s.overruns).toBeGreaterThanOrEqual(1);
    expect(s.fill).toBeLessThanOrEqual(1600); // never more than latencyMs (100 ms at 16 kHz) queued
    const [aplay] = started(dir, "aplay");
    e.close();
    await e.closed;
    const raw = readFileSync(join(dir, `aplay.${aplay!.pid}.raw`));
    const played = new Int16Array(raw.buffer, raw.byteOffset, raw.length >> 1);
    const x = afterOnset(played, 16000, 60, 6400);
    expect(frameLevel(x, 1000, 16000) / AMPLITUDE).toBeCloseTo(1, 1);
    expect(frameLevel(x, 7000, 16000)).toBeLessThan(AMPLITUDE * 0.01);
  });

  it("counts capture overruns (nobody reads) and underruns (reads faster than the card)", async () => {
    const { audio } = device({ latencyMs: 60 });
    const e = openOn(audio);
    await until("capture overrun", () => e.stats().capture.overruns > 0);
    expect(e.stats().capture.fill).toBeLessThanOrEqual(960);
    for (let i = 0; i < 10; i++) e.source.read(320, 16000); // a burst of 200 ms in no time
    expect(e.stats().capture.underruns).toBeGreaterThanOrEqual(1);
  });

  it("a killed arecord is restarted; the microphone is silent meanwhile and the tone comes back", async () => {
    const { audio, dir } = device();
    const e = openOn(audio);
    const before = await capture(e, 8000, 100);
    expect(before.some((v) => v !== 0)).toBe(true);
    const first = e.pids().arecord!;
    process.kill(first, "SIGKILL");
    const frames: Int16Array[] = [];
    await ticker(900, () => frames.push(e.source.read(160, 8000)));
    const silent = frames.filter((f) => f.every((v) => v === 0)).length;
    expect(silent).toBeGreaterThanOrEqual(3); // at least the 100 ms backoff's worth, less what was queued
    const tail = concat(frames.slice(-10));
    expect(frameLevel(tail, 1000, 8000) / AMPLITUDE).toBeCloseTo(1, 1);
    expect(e.stats().capture.restarts).toBe(1);
    expect(started(dir, "arecord").map((s) => s.pid)).toContain(e.pids().arecord);
    expect(e.pids().arecord).not.toBe(first);
    expect(alive(first)).toBe(false);
  });

  it("a missing arecord never throws into the ticker: silence, and it keeps retrying", async () => {
    const { audio } = device({ arecordPath: "/nonexistent/arecord" });
    const e = openOn(audio);
    const x = concat(
      await (async () => {
        const frames: Int16Array[] = [];
        await ticker(400, () => frames.push(e.source.read(320, 16000)));
        return frames;
      })(),
    );
    expect(x.every((v) => v === 0)).toBe(true);
    expect(e.stats().capture.restarts).toBeGreaterThanOrEqual(2);
    expect(e.stats().playback.running).toBe(true);
  });

  it("close() kills both children and waits for them; a second open() meanwhile is silent", async () => {
    const { audio, dir } = device();
    const e = openOn(audio);
    await until(
      "both tools",
      () => started(dir, "arecord").length === 1 && started(dir, "aplay").length === 1,
    );
    const pids = e.pids();
    const second = openOn(audio);
    expect(second.silent).toBe(true);
    expect(second.source.read(160, 8000)).toEqual(new Int16Array(160));
    second.sink.write({ pcm: new Int16Array(160), rate: 8000, kind: "audio" });
    e.close();
    await e.closed;
    expect(started(dir, "arecord")).toHaveLength(1); // the silent endpoint spawned nothing
    expect(pids.arecord).toBe(started(dir, "arecord")[0]!.pid);
    for (const tool of ["arecord", "aplay"] as const)
      for (const s of started(dir, tool)) expect(alive(s.pid), `${tool} ${s.pid}`).toBe(false);
    expect(e.pids()).toEqual({ arecord: undefined, aplay: undefined });
    expect(audio.active).toBeUndefined();
    // The card is free again for the next call.
    const third = openOn(audio);
    expect(third.silent).toBe(false);
    await until("the next call's arecord", () => started(dir, "arecord").length === 2);
    await audio.close();
    for (const s of started(dir, "arecord")) expect(alive(s.pid)).toBe(false);
  });
});

describe("SampleRing", () => {
  it("primes, learns its resting fill, then drops one sample a frame while the fill runs high", () => {
    const ring = new SampleRing(2000, 500, 80);
    ring.push(new Int16Array(400));
    expect(ring.pull(320)).toEqual(new Int16Array(320)); // priming: nothing taken
    expect(ring.fill).toBe(400);
    ring.push(new Int16Array(100));
    for (let i = 0; i < 30; i++) {
      ring.push(new Int16Array(320));
      ring.pull(320);
    }
    expect(ring.fill).toBe(500);
    expect(ring.stats.slipsDropped + ring.stats.slipsInserted).toBe(0);
    ring.push(new Int16Array(300)); // the producer's clock ran ahead
    // One sample a frame: 50 a second against a real card's drift of 1–2 a second.
    for (let i = 0; i < 300; i++) {
      ring.push(new Int16Array(320));
      ring.pull(320);
    }
    expect(ring.stats.slipsDropped).toBeGreaterThan(200);
    expect(ring.stats.slipsInserted).toBe(0);
    expect(ring.fill).toBeLessThan(500 + 80 + 10);
  });
});

describe("board profile: audio", () => {
  const withoutAudio = () => {
    const raw = structuredClone(rawProfile);
    delete raw.audio;
    return raw;
  };
  function errorOf(fn: () => unknown): HandsetError {
    try {
      fn();
    } catch (err) {
      if (err instanceof HandsetError) return err;
      throw err;
    }
    throw new Error("expected a HandsetError");
  }

  it("handset-v1 documents a USB handset; defaults fill the rest", () => {
    const p = parseProfile(rawProfile);
    expect(p.audio).toEqual({
      capture: "plughw:CARD=Device,DEV=0",
      playback: "plughw:CARD=Device,DEV=0",
      rateHz: 16000,
      latencyMs: 60,
      arecordPath: "arecord",
      aplayPath: "aplay",
    });
    expect(parseProfile({ ...withoutAudio(), audio: { capture: "hw:1" } }).audio).toMatchObject({
      playback: "hw:1",
      rateHz: 16000,
    });
  });

  it("takes the PCMs from the environment, or none at all", () => {
    const p = parseProfile(withoutAudio(), {
      HANDSET_AUDIO_CAPTURE: "plughw:CARD=wm8960soundcard,DEV=0",
      HANDSET_AUDIO_RATE: "8000",
    });
    expect(p.audio).toMatchObject({ capture: "plughw:CARD=wm8960soundcard,DEV=0", rateHz: 8000 });
    expect(parseProfile(rawProfile, { HANDSET_AUDIO: "off" }).audio).toBeUndefined();
  });

  it("reports bad audio fields with the others", () => {
    const err = errorOf(() =>
      parseProfile({ ...rawProfile, audio: { capture: "", rateHz: 44100, latencyMs: 10, aplayPath: 3 } }),
    );
    expect(err.code).toBe("invalid-board-profile");
    expect(err.message).toContain("audio.capture must be an ALSA PCM name from `arecord -L`");
    expect(err.message).toContain("audio.rateHz must be 8000 or 16000 (got 44100)");
    expect(err.message).toContain("audio.latencyMs must be an integer in 40..500 (got 10)");
    expect(err.message).toContain("audio.aplayPath must be a program path");
  });

  it("the board has an audio device exactly when the profile has audio", async () => {
    const build = (raw: unknown) =>
      createPiBoard(parseProfile(raw), {
        gpio: new FakeGpio(),
        clock: new ManualClock(),
        openSerial: () => ({}) as never,
      });
    expect(build(withoutAudio()).audio).toBeUndefined();
    const board = build(rawProfile);
    expect(board.audio?.name).toBe("alsa:plughw:CARD=Device,DEV=0");
    expect(board.audio?.active).toBeUndefined(); // nothing spawned until a call opens it
  });
});
