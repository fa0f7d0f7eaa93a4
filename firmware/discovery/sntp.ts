/**
 * SNTP client core (RFC 4330, NTPv4 wire format). Pure: the request is built from a clock
 * reading, a reply is judged against the request it answers.
 *
 * A reply is rejected (DiscoveryError) when it is shorter than 48 bytes, not mode 4 (server),
 * not version 3 or 4, has LI = 3 (server unsynchronised) or stratum > 15, does not echo our
 * transmit timestamp as its originate timestamp, or has a zero transmit timestamp. Stratum 0
 * is a Kiss-o'-Death: returned as `{ kind: "kod", code }` (DENY/RSTR → stop using the server,
 * RATE → back off), after the originate check so that an off-path spoofer cannot silence us.
 *
 * Eras: 32-bit NTP seconds wrap on 2036-02-07. Following RFC 4330 §3, a timestamp with the top
 * bit set is in 1968–2036 (era 0, counted from 1900), one with it clear in 2036–2104 (era 1,
 * counted from 2036-02-07T06:28:16Z). That needs no trusted local time, which a Pi without an
 * RTC does not have.
 */
import type { Clock } from "../core/clock.ts";
import type { Random } from "../core/random.ts";
import { DiscoveryError } from "./dhcp-codec.ts";
import type { DatagramPort } from "./dhcp-inform.ts";

/** Seconds from 1900-01-01 (NTP epoch) to 1970-01-01 (Unix epoch). */
export const NTP_UNIX_OFFSET_S = 2_208_988_800;
const TWO32 = 4_294_967_296;

export interface NtpTimestamp {
  seconds: number;
  fraction: number;
}

/** Unix ms → NTP timestamp (valid 1968–2104; era folded into 32 bits). */
export function unixMsToNtp(ms: number): NtpTimestamp {
  const totalS = Math.floor(ms / 1000);
  const fracMs = ms - totalS * 1000;
  const seconds = (((totalS + NTP_UNIX_OFFSET_S) % TWO32) + TWO32) % TWO32;
  return { seconds, fraction: Math.min(TWO32 - 1, Math.floor((fracMs / 1000) * TWO32)) };
}

/** NTP timestamp → Unix ms with the RFC 4330 §3 pivot (top bit set: era 0; clear: era 1). */
export function ntpToUnixMs(t: NtpTimestamp): number {
  const eraSeconds = t.seconds >= 0x80000000 ? t.seconds : t.seconds + TWO32;
  return (eraSeconds - NTP_UNIX_OFFSET_S) * 1000 + (t.fraction / TWO32) * 1000;
}

function readTs(b: Uint8Array, at: number): NtpTimestamp {
  const u32 = (i: number) => ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
  return { seconds: u32(at), fraction: u32(at + 4) };
}

function writeTs(b: Uint8Array, at: number, t: NtpTimestamp): void {
  const w = (i: number, v: number) => {
    b[i] = (v >>> 24) & 0xff;
    b[i + 1] = (v >>> 16) & 0xff;
    b[i + 2] = (v >>> 8) & 0xff;
    b[i + 3] = v & 0xff;
  };
  w(at, t.seconds);
  w(at + 4, t.fraction);
}

export interface SntpRequest {
  bytes: Uint8Array;
  /** Our transmit timestamp exactly as sent (the reply must echo it). */
  transmit: NtpTimestamp;
  /** T1 in Unix ms, as the injected clock read it. */
  t1Ms: number;
}

/**
 * A 48-byte client request: LI 0, VN 4, mode 3, transmit = clock.now(). With a Random, the low
 * 16 bits of the fraction (≈15 µs, below any clock's honesty here) are random, so a reply
 * cannot be forged by guessing our time.
 */
export function buildSntpRequest(nowMs: number, random?: Random): SntpRequest {
  const bytes = new Uint8Array(48);
  bytes[0] = (0 << 6) | (4 << 3) | 3;
  const t = unixMsToNtp(nowMs);
  if (random) {
    const r = random.bytes(2);
    t.fraction = ((t.fraction & 0xffff0000) | (r[0]! << 8) | r[1]!) >>> 0;
  }
  writeTs(bytes, 40, t);
  return { bytes, transmit: t, t1Ms: ntpToUnixMs(t) };
}

export type SntpOutcome =
  | {
      kind: "ok";
      /** Add to local time to get server time (ms). */
      offsetMs: number;
      /** Round-trip delay less the server's processing (ms). */
      delayMs: number;
      stratum: number;
      leap: number;
      version: number;
      /** Reference identifier: ASCII for stratum 1, an IPv4 address otherwise. */
      refId: string;
      serverTimeMs: number;
    }
  | { kind: "kod"; code: string };

function reject(code: string, message: string): DiscoveryError {
  return new DiscoveryError(code, message);
}

function ascii4(b: Uint8Array, at: number): string {
  let s = "";
  for (let i = at; i < at + 4; i++) {
    const c = b[i]!;
    if (c === 0) break;
    s += c >= 0x20 && c < 0x7f ? String.fromCharCode(c) : "?";
  }
  return s;
}

/**
 * Judges a reply to `request`, received at local time t4Ms. Throws only DiscoveryError
 * (codes "sntp-malformed", "sntp-mode", "sntp-version", "sntp-unsynchronized", "sntp-stratum",
 * "sntp-originate", "sntp-zero-transmit").
 */
export function parseSntpReply(bytes: Uint8Array, request: SntpRequest, t4Ms: number): SntpOutcome {
  if (!(bytes instanceof Uint8Array) || bytes.length < 48)
    throw reject("sntp-malformed", `SNTP reply of ${bytes?.length ?? 0} bytes, need 48`);
  const leap = bytes[0]! >> 6;
  const version = (bytes[0]! >> 3) & 7;
  const mode = bytes[0]! & 7;
  const stratum = bytes[1]!;
  if (mode !== 4) throw reject("sntp-mode", `SNTP reply in mode ${mode}, expected 4 (server)`);
  if (version < 3 || version > 4) throw reject("sntp-version", `SNTP reply version ${version}`);
  const originate = readTs(bytes, 24);
  if (originate.seconds !== request.transmit.seconds || originate.fraction !== request.transmit.fraction)
    throw reject("sntp-originate", "SNTP reply does not echo our transmit timestamp");
  if (stratum === 0) return { kind: "kod", code: ascii4(bytes, 12) || "????" };
  if (leap === 3) throw reject("sntp-unsynchronized", "SNTP server is not synchronised (LI = 3)");
  if (stratum > 15) throw reject("sntp-stratum", `SNTP stratum ${stratum} is unusable`);
  const transmit = readTs(bytes, 40);
  if (transmit.seconds === 0 && transmit.fraction === 0)
    throw reject("sntp-zero-transmit", "SNTP reply has a zero transmit timestamp");
  const receive = readTs(bytes, 32);
  const t1 = request.t1Ms;
  const t2 = receive.seconds === 0 && receive.fraction === 0 ? ntpToUnixMs(transmit) : ntpToUnixMs(receive);
  const t3 = ntpToUnixMs(transmit);
  const offsetMs = (t2 - t1 + (t3 - t4Ms)) / 2;
  const delayMs = Math.max(0, t4Ms - t1 - (t3 - t2));
  const refId = stratum === 1 ? ascii4(bytes, 12) : `${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  return { kind: "ok", offsetMs, delayMs, stratum, leap, version, refId, serverTimeMs: t3 };
}

/** A Kiss-o'-Death: the server asks us to back off (RATE) or go away (DENY, RSTR). */
export class SntpKissError extends DiscoveryError {
  readonly kodCode: string;

  constructor(kodCode: string, server: string) {
    super("sntp-kod", `SNTP server ${server} sent Kiss-o'-Death ${kodCode}`);
    this.kodCode = kodCode;
  }
}

export interface SntpQueryOptions {
  clock: Clock;
  random: Random;
  port: DatagramPort;
  server: { host: string; port: number };
  /** Per-try wait; RFC 4330 asks for no faster retries than this. */
  timeoutMs?: number;
  tries?: number;
}

export type SntpResult = Extract<SntpOutcome, { kind: "ok" }> & { server: string };

/**
 * One SNTP exchange with retries. Resolves with the sample; rejects with DiscoveryError:
 * "sntp-timeout", "sntp-kod" (the code is in the message and `kodCode`), or the last rejection.
 * Invalid replies are ignored while waiting (they may be stale or spoofed).
 */
export function querySntp(o: SntpQueryOptions): Promise<SntpResult> {
  const tries = o.tries ?? 3;
  const timeoutMs = o.timeoutMs ?? 2_000;
  const where = `${o.server.host}:${o.server.port}`;
  return new Promise((resolve, rejectP) => {
    let attempt = 0;
    let request: SntpRequest | undefined;
    let lastError: DiscoveryError | undefined;
    let timer: { cancel(): void } | undefined;
    let done = false;
    const finish = (v: SntpResult | DiscoveryError) => {
      if (done) return;
      done = true;
      timer?.cancel();
      if (v instanceof DiscoveryError) rejectP(v);
      else resolve(v);
    };
    o.port.onMessage((bytes) => {
      if (done || !request) return;
      const t4 = o.clock.now();
      try {
        const out = parseSntpReply(bytes, request, t4);
        if (out.kind === "kod") {
          const e = new SntpKissError(out.code, where);
          finish(e);
          return;
        }
        finish({ ...out, server: where });
      } catch (err) {
        if (err instanceof DiscoveryError) lastError = err;
      }
    });
    const send = () => {
      if (done) return;
      if (attempt >= tries) {
        finish(
          lastError ??
            new DiscoveryError("sntp-timeout", `No SNTP answer from ${where} after ${tries} tries`),
        );
        return;
      }
      attempt++;
      request = buildSntpRequest(o.clock.now(), o.random);
      try {
        o.port.send(request.bytes, o.server.host, o.server.port);
      } catch {
        // a send failure is a lost packet; the timer retries
      }
      timer = o.clock.setTimer(timeoutMs, send);
    };
    send();
  });
}
