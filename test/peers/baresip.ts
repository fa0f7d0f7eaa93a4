/**
 * A real baresip (Debian's /usr/bin/baresip, package baresip-core) as a third-party SIP user agent
 * for interop tests: the kind of softphone or gateway that meets Lync through a trunk.
 *
 * Each instance lives in its own temp dir, given to baresip as its config path (-f DIR), with a
 * generated `config` and `accounts`:
 * - SIP on one loopback port (UDP and TCP both: baresip listens on both), media on loopback only
 *   (`net_interface 127.0.0.1`: otherwise it puts the first non-loopback address in its SDP);
 * - modules g711 (PCMU, PCMA), srtp (SDES: mediaenc=srtp, srtp-mand, srtp-mandf), aufile as the
 *   audio source (a WAV file we write: a sine from firmware/media/tone.ts), sndfile as the recorder
 *   (an audio filter that dumps what baresip sent and what it decoded to dump-…-enc.wav and
 *   dump-…-dec.wav in its snd_path, closed when the call ends), account (reads `accounts`), menu
 *   (the dial/accept/hangup commands) and ctrl_tcp (those commands as netstring JSON on a TCP port,
 *   and the call events back on the same connection). No audio hardware: no player at all (the
 *   decode filter runs on the receive path regardless), no alert device.
 * - one account: `<sip:USER@127.0.0.1>;regint=0` (no REGISTER: a trunk peer is configured by
 *   address), answermode auto or manual, optionally `outbound=` the lab trunk so that every call
 *   it places goes there, and mediaenc when SRTP is wanted.
 * - G.722 on request (`codecs: ["g722"]`): module g722 (spandsp's codec) is loaded and the
 *   account's audio_codecs names it as G722/16000/1 (see codecName); the
 *   source WAV is then written at 16 kHz, G.722's rate, and the recordings come back at the rate
 *   sndfile wrote them (16 kHz for a G.722 call), named in `recording()`'s answer.
 *
 * baresip 1.0.0 does not exit when its own init fails (a port in use, a bad account): it prints
 * "init failed" and idles. Start-up therefore waits for "baresip is ready." and the account line,
 * fails on any "init failed", and kills the process. `-t` bounds its life even if this process dies
 * without running its exit hook.
 *
 * Without baresip a test skips with a plain reason naming the package, except under CI=true,
 * where it fails (.ci/run installs baresip-core).
 */
import { createSocket } from "node:dgram";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateTone, type ToneComponent } from "../../firmware/media/tone.ts";
import { encodeWav, parseWav } from "../../firmware/platform/wav.ts";
import {
  freeTcpPort,
  needPeer,
  type PeerProcess,
  spawnPeer,
  stopPeer,
  waitOn,
} from "../support/peer-process.ts";

export const BARESIP = "/usr/bin/baresip";
export const BARESIP_MODULES = "/usr/lib/baresip/modules";
/** What the generated config loads; all of them are in baresip-core. */
export const BARESIP_MODULE_NAMES = ["g711", "srtp", "aufile", "sndfile", "account", "menu", "ctrl_tcp"];
export const BARESIP_MISSING = "baresip not installed (apt-get install --no-install-recommends baresip-core)";
export const hasBaresip =
  existsSync(BARESIP) && BARESIP_MODULE_NAMES.every((m) => existsSync(join(BARESIP_MODULES, `${m}.so`)));
/** baresip-core ships g722.so (linked to libspandsp); loaded only when a test asks for G.722. */
export const hasBaresipG722 = hasBaresip && existsSync(join(BARESIP_MODULES, "g722.so"));

const wantsG722 = (o: BaresipOptions) => (o.codecs ?? []).some((c) => c.toLowerCase().startsWith("g722"));

/** Skips the test without baresip; under CI=true throws instead, so the run fails. */
export function needBaresip(ctx: { skip: (note?: string) => never }): void {
  needPeer(ctx, hasBaresip, BARESIP_MISSING);
}

/** srtp: SRTP if the peer can (offers RTP/AVP + a=crypto); srtp-mand: RTP/SAVP only. */
export type BaresipMediaEnc = "srtp" | "srtp-mand";

export interface BaresipOptions {
  /** The account's user part (its AOR is sip:USER@127.0.0.1); calls to this user reach it. */
  user?: string;
  /** Every call it places goes to this proxy ("127.0.0.1:P"), as the lab trunk. */
  outbound?: { address: string; transport: "udp" | "tcp" };
  mediaenc?: BaresipMediaEnc;
  /** auto (default): answers every call at once. manual: answer() does. */
  answerMode?: "auto" | "manual";
  /** What it sends: a sine (default 697 Hz at −12 dBFS) for `seconds` (default 30), then silence. */
  tone?: readonly ToneComponent[];
  toneSeconds?: number;
  /** audio_codecs, in baresip's names (default pcmu, pcma); "g722" loads the g722 module. */
  codecs?: string[];
  /** Seconds until baresip quits by itself (its -t), a bound if we die without cleaning up. */
  lifetimeS?: number;
}

/** One event as ctrl_tcp sends it (CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED …). */
export interface BaresipEvent {
  type: string;
  class?: string;
  direction?: string;
  peeruri?: string;
  accountaor?: string;
  id?: string;
  param?: string;
  [k: string]: unknown;
}

export interface Baresip {
  /** Its SIP address, "127.0.0.1:P" (UDP and TCP). */
  address: string;
  sipPort: number;
  ctrlPort: number;
  /** sip:USER@127.0.0.1 */
  aor: string;
  user: string;
  dir: string;
  /** A ctrl_tcp command (a menu command's long name); resolves with its data, rejects when not ok. */
  command(command: string, params?: string): Promise<string>;
  dial(uri: string): Promise<void>;
  /** Answers the ringing call (answerMode manual). */
  answer(): Promise<void>;
  hangup(): Promise<void>;
  events(): BaresipEvent[];
  /** The events' current count: pass it as `from` to look only at later ones. */
  eventMark(): number;
  /** The first event (at or after `from`) of this type; rejects after timeoutMs (default 10 s). */
  waitForEvent(type: string, o?: { from?: number; timeoutMs?: number }): Promise<BaresipEvent>;
  /**
   * What baresip decoded from the peer in its latest call (sndfile's …-dec.wav), and what it
   * encoded and sent (…-enc.wav). Read after the call has closed: the files are finished then.
   */
  recording(): Promise<{ received: Int16Array; sent: Int16Array; rate: number; files: string[] }>;
  /** Everything baresip printed (stdout and stderr), colour codes removed. */
  log(): string;
  running(): boolean;
  /** SIGTERM (SIGKILL after 3 s); resolves once it has exited. */
  stop(): Promise<void>;
  /** stop() and the temp dir removed. */
  dispose(): Promise<void>;
}

/** A loopback port free for both TCP and UDP right now (baresip binds both for SIP). */
async function freeSipPort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const server = createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const a = server.address();
        resolve(a !== null && typeof a === "object" ? a.port : 0);
      });
    });
    const udp = createSocket("udp4");
    const udpFree = await new Promise<boolean>((resolve) => {
      udp.once("error", () => resolve(false));
      udp.bind(port, "127.0.0.1", () => resolve(true));
    });
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (udpFree && port > 0) return port;
  }
  throw new Error("no loopback port free for both TCP and UDP");
}

/** Netstrings (djb): "LEN:BYTES," — how ctrl_tcp frames its JSON both ways. */
export function netstring(text: string): Buffer {
  const body = Buffer.from(text, "utf8");
  return Buffer.concat([Buffer.from(`${body.length}:`), body, Buffer.from(",")]);
}

/** Splits complete netstrings off the front of `buf`; returns them and the rest. */
export function readNetstrings(buf: Buffer): { messages: string[]; rest: Buffer } {
  const messages: string[] = [];
  let at = 0;
  for (;;) {
    const colon = buf.indexOf(0x3a, at);
    if (colon < 0) break;
    const len = Number(buf.subarray(at, colon).toString("latin1"));
    if (!Number.isInteger(len) || len < 0) throw new Error(`ctrl_tcp: bad netstring length at ${at}`);
    const end = colon + 1 + len;
    if (buf.length < end + 1) break;
    if (buf[end] !== 0x2c) throw new Error("ctrl_tcp: netstring without its comma");
    messages.push(buf.subarray(colon + 1, end).toString("utf8"));
    at = end + 1;
  }
  return { messages, rest: buf.subarray(at) };
}

/**
 * A mono 16-bit WAV at any rate. firmware/platform/wav.ts deliberately reads and writes 8 kHz
 * only (a narrowband call's format); a G.722 peer needs 16 kHz, which only this harness does.
 */
function wavAt(pcm: Int16Array, rate: number): Uint8Array {
  const out = new Uint8Array(44 + pcm.length * 2);
  const v = new DataView(out.buffer);
  const text = (at: number, t: string) => {
    for (let i = 0; i < 4; i++) out[at + i] = t.charCodeAt(i);
  };
  text(0, "RIFF");
  v.setUint32(4, 36 + pcm.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true); // mono
  v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  text(36, "data");
  v.setUint32(40, pcm.length * 2, true);
  for (let i = 0; i < pcm.length; i++) v.setInt16(44 + 2 * i, pcm[i]!, true);
  return out;
}

/** The samples and rate of a mono 16-bit WAV (sndfile's); throws while the file is unfinished. */
function readWavAnyRate(bytes: Uint8Array): { samples: Int16Array; rate: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at: number) => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.length < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let rate = 0;
  for (let at = 12; at + 8 <= bytes.length; ) {
    const size = v.getUint32(at + 4, true);
    if (tag(at) === "fmt ") {
      if (v.getUint16(at + 10, true) !== 1 || v.getUint16(at + 22, true) !== 16)
        throw new Error("not mono 16-bit PCM");
      rate = v.getUint32(at + 12, true);
    } else if (tag(at) === "data") {
      if (!rate) throw new Error("data before fmt");
      const end = Math.min(bytes.length, at + 8 + size);
      const n = (end - at - 8) >> 1;
      const samples = new Int16Array(n);
      for (let i = 0; i < n; i++) samples[i] = v.getInt16(at + 8 + 2 * i, true);
      return { samples, rate };
    }
    at += 8 + size + (size % 2);
  }
  throw new Error("no data chunk yet");
}

function configText(o: {
  sipPort: number;
  ctrlPort: number;
  source: string;
  dir: string;
  g722: boolean;
}): string {
  return [
    "poll_method epoll",
    `sip_listen 127.0.0.1:${o.sipPort}`,
    // Without it baresip names the first non-loopback interface in its SDP.
    "net_interface 127.0.0.1",
    `audio_source aufile,${o.source}`,
    "rtp_ports 20000-29998",
    "rtcp_mux no",
    "call_local_timeout 120",
    `module_path ${BARESIP_MODULES}`,
    "module g711.so",
    ...(o.g722 ? ["module g722.so"] : []),
    "module srtp.so",
    "module aufile.so",
    "module sndfile.so",
    "module_tmp account.so",
    "module_app menu.so",
    "module_app ctrl_tcp.so",
    `ctrl_tcp_listen 127.0.0.1:${o.ctrlPort}`,
    // The menu's once-a-second status line would fill the log.
    "statmode_default off",
    "ringback_disabled yes",
    `snd_path ${o.dir}`,
    "",
  ].join("\n");
}

/**
 * baresip 1.0.0's account parser reads a bare codec name as NAME/8000/1 and then finds no G.722:
 * the module registers G722/16000/1 (its sampling rate; the RTP clock of 8000 appears only in
 * SDP). So a bare "g722" is spelled out.
 */
function codecName(name: string): string {
  return name.toLowerCase() === "g722" ? "G722/16000/1" : name;
}

function accountLine(o: BaresipOptions, user: string): string {
  const params = [
    "regint=0",
    `answermode=${o.answerMode ?? "auto"}`,
    `audio_codecs=${(o.codecs ?? ["pcmu", "pcma"]).map(codecName).join(",")}`,
    ...(o.outbound ? [`outbound="sip:${o.outbound.address};transport=${o.outbound.transport}"`] : []),
    ...(o.mediaenc ? [`mediaenc=${o.mediaenc}`] : []),
  ];
  return `<sip:${user}@127.0.0.1>;${params.join(";")}\n`;
}

export async function startBaresip(o: BaresipOptions = {}): Promise<Baresip> {
  if (!hasBaresip) throw new Error(BARESIP_MISSING);
  const user = o.user ?? "baresip";
  const dir = await mkdtemp(join(tmpdir(), "handset-baresip-"));
  const source = join(dir, "source.wav");
  const tone = o.tone ?? [{ hz: 697, levelDbfs: -12 }];
  const g722 = wantsG722(o);
  if (g722 && !hasBaresipG722) throw new Error(`${BARESIP_MODULES}/g722.so is missing`);
  // The source at the codec's rate, so that baresip sends it without resampling.
  const sourceRate = g722 ? 16000 : 8000;
  const samples = generateTone(tone, Math.round(sourceRate * (o.toneSeconds ?? 30)), {
    sampleRate: sourceRate,
  });
  await writeFile(source, g722 ? wavAt(samples, sourceRate) : encodeWav(samples));
  await writeFile(join(dir, "accounts"), accountLine(o, user));

  let logText = "";
  const logWaiters = new Set<() => void>();
  const events: BaresipEvent[] = [];
  const eventWaiters = new Set<() => void>();
  const pending = new Map<string, { resolve: (data: string) => void; reject: (e: Error) => void }>();
  let ctrl: Socket | undefined;
  let proc: PeerProcess | undefined;
  let hasExited = false;
  let tokens = 0;
  let sipPort = 0;
  let ctrlPort = 0;

  const spawnOnce = async () => {
    sipPort = await freeSipPort();
    ctrlPort = await freeTcpPort();
    await writeFile(join(dir, "config"), configText({ sipPort, ctrlPort, source, dir, g722 }));
    const from = logText.length;
    hasExited = false;
    proc = spawnPeer(BARESIP, ["-f", dir, "-t", String(o.lifetimeS ?? 300)], {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const child = proc.child;
    child.once("exit", () => {
      hasExited = true;
      for (const w of logWaiters) w();
      for (const w of eventWaiters) w();
      for (const p of pending.values()) p.reject(new Error("baresip exited"));
      pending.clear();
    });
    const take = (text: string) => {
      // ANSI colour codes around warnings; the menu's line editing redraws with backspaces.
      logText += text.replace(/\x1b\[[0-9;]*m/g, "");
      for (const w of logWaiters) w();
    };
    child.stdout?.setEncoding("utf8");
    child.stderr?.setEncoding("utf8");
    child.stdout?.on("data", take);
    child.stderr?.on("data", take);
    await waitOn(
      logWaiters,
      () => {
        const out = logText.slice(from);
        if (/init failed|failed to listen/i.test(out)) throw new Error(`baresip failed at start:\n${out}`);
        if (hasExited) throw new Error(`baresip exited at start:\n${out}`);
        if (out.includes("baresip is ready.") && out.includes("Populated 1 account")) return true;
        return undefined;
      },
      { ms: 10_000, error: () => new Error(`baresip did not get ready:\n${logText.slice(from)}`) },
    );
    ctrl = await connectCtrl(ctrlPort);
    let buf: Buffer = Buffer.alloc(0);
    ctrl.on("data", (chunk: Buffer) => {
      const split = readNetstrings(Buffer.concat([buf, chunk]));
      buf = split.rest;
      for (const text of split.messages) onCtrl(text);
    });
    ctrl.on("error", () => {});
  };

  const onCtrl = (text: string) => {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(text) as Record<string, unknown>;
    } catch {
      logText += `\n[ctrl_tcp: not JSON: ${text}]\n`;
      return;
    }
    if (m.event === true) {
      events.push(m as unknown as BaresipEvent);
      for (const w of eventWaiters) w();
    } else if (m.response === true) {
      const token = typeof m.token === "string" ? m.token : "";
      const p = pending.get(token);
      if (!p) return;
      pending.delete(token);
      const data = typeof m.data === "string" ? m.data : "";
      if (m.ok === true) p.resolve(data);
      else p.reject(new Error(`baresip: ${data || "command failed"}`));
    }
  };

  try {
    // Free ports can be taken between our probe and baresip's bind: try a few sets.
    for (let attempt = 1; ; attempt++) {
      try {
        await spawnOnce();
        break;
      } catch (err) {
        proc?.child.kill("SIGKILL");
        await proc?.exited;
        if (attempt >= 3 || !/in use/i.test(String(err))) throw err;
      }
    }
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  const command = (name: string, params = ""): Promise<string> =>
    new Promise((resolve, reject) => {
      if (!ctrl || ctrl.destroyed || hasExited) {
        reject(new Error("baresip is not running"));
        return;
      }
      const token = `t${++tokens}`;
      const timer = setTimeout(() => {
        pending.delete(token);
        reject(new Error(`baresip did not answer ${name}`));
      }, 5_000);
      pending.set(token, {
        resolve: (d) => {
          clearTimeout(timer);
          resolve(d);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      ctrl.write(netstring(JSON.stringify({ command: name, params, token })));
    });

  const terminate = async () => {
    ctrl?.destroy();
    if (proc) await stopPeer(proc);
  };

  const latestDumps = async (): Promise<{ enc?: string; dec?: string }> => {
    const names = (await readdir(dir)).filter((n) => /^dump-.*-(enc|dec)\.wav$/.test(n));
    const newest = async (suffix: string) => {
      let best: { path: string; at: number } | undefined;
      for (const n of names.filter((x) => x.endsWith(suffix))) {
        const path = join(dir, n);
        const at = (await stat(path)).mtimeMs;
        if (!best || at >= best.at) best = { path, at };
      }
      return best?.path;
    };
    const enc = await newest("-enc.wav");
    const dec = await newest("-dec.wav");
    return { ...(enc ? { enc } : {}), ...(dec ? { dec } : {}) };
  };

  const b: Baresip = {
    address: `127.0.0.1:${sipPort}`,
    sipPort,
    ctrlPort,
    aor: `sip:${user}@127.0.0.1`,
    user,
    dir,
    command,
    dial: async (uri) => {
      await command("dial", uri);
    },
    answer: async () => {
      await command("accept");
    },
    hangup: async () => {
      await command("hangup");
    },
    events: () => [...events],
    eventMark: () => events.length,
    waitForEvent: (type, w = {}) => {
      const from = w.from ?? 0;
      return waitOn(
        eventWaiters,
        () => {
          const hit = events.slice(from).find((e) => e.type === type);
          if (hit) return hit;
          if (hasExited) throw new Error(`baresip exited before ${type}:\n${logText}`);
          return undefined;
        },
        {
          ms: w.timeoutMs ?? 10_000,
          error: () => {
            const seen = events
              .slice(from)
              .map((e) => e.type)
              .join(", ");
            return new Error(`no baresip event ${type} (saw: ${seen || "none"}); its log:\n${logText}`);
          },
        },
      );
    },
    recording: async () => {
      // sndfile closes (and finishes the header of) its files as the call's audio is torn down,
      // a moment after CALL_CLOSED: wait until both parse with samples in them.
      const deadline = Date.now() + 3_000;
      for (;;) {
        const { enc, dec } = await latestDumps();
        if (enc && dec) {
          try {
            if (g722) {
              const received = readWavAnyRate(await readFile(dec));
              const sent = readWavAnyRate(await readFile(enc));
              if (received.samples.length > 0 && sent.samples.length > 0)
                return {
                  received: received.samples,
                  sent: sent.samples,
                  rate: received.rate,
                  files: [dec, enc],
                };
            } else {
              const received = parseWav(await readFile(dec));
              const sent = parseWav(await readFile(enc));
              if (received.length > 0 && sent.length > 0)
                return { received, sent, rate: 8000, files: [dec, enc] };
            }
          } catch {
            // not finished yet
          }
        }
        if (Date.now() > deadline)
          throw new Error(`baresip recorded nothing usable in ${dir}:\n${logText.slice(-4000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    log: () => logText,
    running: () => !hasExited,
    stop: terminate,
    dispose: async () => {
      await terminate();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return b;
}

/** ctrl_tcp listens a moment after "baresip is ready." on some systems: retry briefly. */
async function connectCtrl(port: number): Promise<Socket> {
  const deadline = Date.now() + 3_000;
  for (;;) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = createConnection({ host: "127.0.0.1", port });
        s.once("connect", () => resolve(s));
        s.once("error", reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`baresip's ctrl_tcp does not accept on ${port}: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
