/**
 * The DHCPINFORM client (RFC 2131 §3.4, §4.4.3) as the Lync phone uses it (behaviour §1.1):
 * the phone already has an address (ciaddr) and asks every server configured for vendor class
 * MS-UC-Client for options 43 and 120. The first DHCPACK that names a registrar (an FQDN in 120)
 * or a provisioning URL (43) wins; later answers are ignored.
 *
 * Retransmission follows RFC 2131 §4.1: 4 s, 8 s, 16 s … capped at 64 s, each randomised by
 * ±`jitterMs` (1 s by default), all on the injected Clock. Socket I/O goes through a
 * DatagramPort (platform/udp.ts on a real board, an in-memory fake in tests).
 *
 * A link without a default route (issue 9 §5: a voice VLAN with no gateway, static addressing
 * without one): Linux refuses a send to 255.255.255.255 with ENETUNREACH, because the limited
 * broadcast is routed like any other address. Then the INFORM goes to `fallbackServers` instead —
 * the interface's directed broadcast (its subnet's broadcast address, covered by the connected
 * route) and any known server, unicast — for this and every later retransmission. A send that
 * fails on every target is reported as itself, `dhcp-send-failed` with the errno, at once: not,
 * as before, as a "No DHCPACK" timeout many seconds later.
 */
import type { Clock, TimerHandle } from "../core/clock.ts";
import { type Logger, silentLogger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import {
  BROADCAST_FLAG,
  type DhcpMessage,
  DhcpMessageType,
  DhcpOption,
  DiscoveryError,
  decodeDhcp,
  encodeDhcp,
  messageType,
} from "./dhcp-codec.ts";
import { type DhcpDiscovery, interpretOptions, MS_UC_CLIENT } from "./dhcp-options.ts";

/** A UDP socket as the discovery cores see it. */
export interface DatagramPort {
  /**
   * Sends one datagram. A port that can tell returns a promise that rejects (or throws) with the
   * errno error (`code` "ENETUNREACH", …) when the datagram could not be sent; void means "sent".
   */
  send(bytes: Uint8Array, host: string, port: number): void | Promise<void>;
  onMessage(cb: (bytes: Uint8Array, from: { address: string; port: number }) => void): void;
  close(): void;
}

/** 1 subnet mask, 2 time offset, 3 router, 4 time server, 6 DNS, 15 domain, 42 NTP, 43 vendor, 120 SIP. */
export const INFORM_PARAMETER_REQUEST = [1, 2, 3, 4, 6, 15, 42, 43, 120] as const;

export interface InformRequest {
  xid: number;
  ciaddr: string;
  /** Ethernet address, 6 bytes. */
  hwAddress: Uint8Array;
  /** Option 61; type 1 + hardware address when absent. */
  clientId?: Uint8Array;
  vendorClass?: string;
  /** Ask the server to broadcast its answer (only when the client cannot take a unicast to ciaddr). */
  broadcast?: boolean;
  secs?: number;
}

/** The DHCPINFORM message (op 1, option 53 = 8, 60, 61, 55). */
export function buildInform(r: InformRequest): DhcpMessage {
  const enc = new TextEncoder();
  const clientId = r.clientId ?? Uint8Array.from([1, ...r.hwAddress]);
  const options = new Map<number, Uint8Array>([
    [DhcpOption.messageType, Uint8Array.of(DhcpMessageType.inform)],
    [DhcpOption.clientId, clientId],
    [DhcpOption.vendorClassId, enc.encode(r.vendorClass ?? MS_UC_CLIENT)],
    [DhcpOption.parameterRequestList, Uint8Array.from(INFORM_PARAMETER_REQUEST)],
  ]);
  return {
    op: 1,
    htype: 1,
    hlen: r.hwAddress.length,
    hops: 0,
    xid: r.xid >>> 0,
    secs: Math.min(0xffff, Math.max(0, Math.floor(r.secs ?? 0))),
    flags: r.broadcast || r.ciaddr === "0.0.0.0" ? BROADCAST_FLAG : 0,
    ciaddr: r.ciaddr,
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: r.hwAddress,
    sname: "",
    file: "",
    options,
  };
}

/** True when an answer names a registrar FQDN (120) or a provisioning URL (43). */
export function isUsableAnswer(info: DhcpDiscovery): boolean {
  return info.certProvUrl !== undefined || (info.sipServers.length > 0 && info.sipServersEncoding !== "ipv4");
}

/** The subnet's broadcast address of an IPv4 interface; undefined for /31, /32 or bad input. */
export function directedBroadcast(address: string, netmask: string): string | undefined {
  const toInt = (a: string): number | undefined => {
    const parts = a.split(".");
    if (parts.length !== 4) return undefined;
    let v = 0;
    for (const p of parts) {
      if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
      v = v * 256 + Number(p);
    }
    return v;
  };
  const ip = toInt(address);
  const mask = toInt(netmask);
  if (ip === undefined || mask === undefined) return undefined;
  const hostBits = (~mask >>> 0) >>> 0;
  // The mask must be contiguous ones, and leave at least two host bits (no broadcast in /31, /32).
  if (((hostBits + 1) & hostBits) !== 0 || hostBits < 3) return undefined;
  const b = ((ip & mask) | hostBits) >>> 0;
  return [b >>> 24, (b >>> 16) & 255, (b >>> 8) & 255, b & 255].join(".");
}

/** Every target of one INFORM failed to send: the errno, not a timeout (issue 9 §5). */
export class DhcpSendError extends DiscoveryError {
  /** errno of each target that failed, e.g. {"255.255.255.255:67": "ENETUNREACH"}. */
  readonly errors: Record<string, string>;
  /** The first target's errno. */
  readonly errno: string;

  constructor(errors: Record<string, string>, cause?: unknown) {
    const list = Object.entries(errors)
      .map(([to, code]) => `${to} ${code}`)
      .join(", ");
    super("dhcp-send-failed", `DHCPINFORM could not be sent: ${list}`, cause === undefined ? {} : { cause });
    this.errors = errors;
    this.errno = Object.values(errors)[0] ?? "unknown";
  }
}

function errnoOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code ? code : err instanceof Error ? err.message : String(err);
}

export interface InformOptions {
  clock: Clock;
  random: Random;
  port: DatagramPort;
  /** Where to send: 255.255.255.255:67 on a LAN, or a known server (unicast). */
  server: { host: string; port: number };
  /**
   * Where to send when `server` cannot be sent to (ENETUNREACH on a link without a default
   * route): the interface's directed broadcast, known servers. All of them, for every later try.
   */
  fallbackServers?: Array<{ host: string; port: number }>;
  ciaddr: string;
  hwAddress: Uint8Array;
  clientId?: Uint8Array;
  vendorClass?: string;
  broadcast?: boolean;
  /** Give up after this long (monotonic ms). */
  timeoutMs: number;
  /** First retransmission delay; doubles up to capMs. */
  initialDelayMs?: number;
  capMs?: number;
  /** Uniform randomisation of each delay, ±jitterMs (RFC 2131 §4.1 says ±1 s). */
  jitterMs?: number;
  logger?: Logger;
}

export interface InformResult {
  /** The winning answer, or the last valid one when no answer carried an FQDN or URL. */
  info: DhcpDiscovery;
  reply: DhcpMessage;
  from: string;
  attempts: number;
  rttMs: number;
  /** True when the answer names a registrar or a provisioning URL. */
  usable: boolean;
  /** Valid answers that lost (later, or with nothing usable). */
  ignored: number;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** The retransmission delay before attempt n+1 (n = 0 after the first send). */
export function informRetransmitDelay(
  n: number,
  random: Random,
  o: { initialDelayMs?: number; capMs?: number; jitterMs?: number } = {},
): number {
  const base = Math.min(o.capMs ?? 64_000, (o.initialDelayMs ?? 4_000) * 2 ** Math.min(n, 20));
  const jitter = o.jitterMs ?? 1_000;
  return Math.max(0, Math.round(base + (random.unit() * 2 - 1) * jitter));
}

/**
 * Sends DHCPINFORM and waits for the first usable DHCPACK with our xid. Resolves with it; if the
 * time runs out, resolves with the best non-usable answer, or rejects with DiscoveryError
 * "dhcp-timeout". Closes nothing: the caller owns the port.
 */
export function informOnce(o: InformOptions): { result: Promise<InformResult>; cancel(): void } {
  const logger = o.logger ?? silentLogger;
  const r4 = o.random.bytes(4);
  const xid = ((r4[0]! << 24) | (r4[1]! << 16) | (r4[2]! << 8) | r4[3]!) >>> 0;
  const started = o.clock.monotonic();
  let attempts = 0;
  let ignored = 0;
  let fallback: InformResult | undefined;
  let done = false;
  let retransmit: TimerHandle | undefined;
  let deadline: TimerHandle | undefined;
  let resolveFn!: (r: InformResult) => void;
  let rejectFn!: (e: unknown) => void;
  const result = new Promise<InformResult>((res, rej) => {
    resolveFn = res;
    rejectFn = rej;
  });

  const finish = (r: InformResult | DiscoveryError) => {
    if (done) return;
    done = true;
    retransmit?.cancel();
    deadline?.cancel();
    if (r instanceof DiscoveryError) rejectFn(r);
    else resolveFn(r);
  };

  const send = () => {
    if (done) return;
    const secs = (o.clock.monotonic() - started) / 1000;
    const bytes = encodeDhcp(
      buildInform({
        xid,
        ciaddr: o.ciaddr,
        hwAddress: o.hwAddress,
        secs,
        ...(o.clientId ? { clientId: o.clientId } : {}),
        ...(o.vendorClass ? { vendorClass: o.vendorClass } : {}),
        ...(o.broadcast !== undefined ? { broadcast: o.broadcast } : {}),
      }),
    );
    const delay = informRetransmitDelay(attempts, o.random, o);
    attempts++;
    retransmit = o.clock.setTimer(delay, send);
    // sendTo() turns send errors into results; a throw past that (a bug) ends the run typed.
    transmit(bytes, attempts).catch((err: unknown) =>
      finish(
        new DiscoveryError("dhcp-send-failed", `DHCPINFORM could not be sent: ${String(err)}`, {
          cause: err,
        }),
      ),
    );
  };

  const key = (t: { host: string; port: number }) => `${t.host}:${t.port}`;
  /** Targets that failed to send, with their errno; never tried again in this run. */
  const failed = new Map<string, string>();
  let lastCause: unknown;
  const sendTo = async (t: { host: string; port: number }, bytes: Uint8Array, attempt: number) => {
    logger.debug("DHCPINFORM sent", { xid, attempt, to: key(t) });
    try {
      await o.port.send(bytes, t.host, t.port);
      return true;
    } catch (err) {
      lastCause = err;
      failed.set(key(t), errnoOf(err));
      logger.warn("DHCPINFORM send failed", { to: key(t), errno: errnoOf(err) });
      return false;
    }
  };
  /** The limited broadcast (or the server) first; the fallbacks when it cannot be sent. */
  const transmit = async (bytes: Uint8Array, attempt: number) => {
    if (!failed.has(key(o.server)) && (await sendTo(o.server, bytes, attempt))) return;
    if (done) return;
    const alive = (o.fallbackServers ?? []).filter((t) => !failed.has(key(t)));
    const sent = await Promise.all(alive.map((t) => sendTo(t, bytes, attempt)));
    if (done || sent.some(Boolean)) return;
    finish(new DhcpSendError(Object.fromEntries(failed), lastCause));
  };

  o.port.onMessage((bytes, from) => {
    if (done) return;
    let reply: DhcpMessage;
    try {
      reply = decodeDhcp(bytes);
    } catch (err) {
      logger.debug("ignored malformed DHCP packet", { from: from.address, error: (err as Error).message });
      return;
    }
    if (reply.op !== 2 || reply.xid !== xid || !equalBytes(reply.chaddr, o.hwAddress)) return;
    if (messageType(reply) !== DhcpMessageType.ack) return;
    const info = interpretOptions(reply.options);
    const usable = isUsableAnswer(info);
    const r: InformResult = {
      info,
      reply,
      from: `${from.address}:${from.port}`,
      attempts,
      rttMs: o.clock.monotonic() - started,
      usable,
      ignored,
    };
    if (usable) finish(r);
    else {
      ignored++;
      fallback ??= r;
    }
  });

  deadline = o.clock.setTimer(o.timeoutMs, () => {
    if (fallback) finish({ ...fallback, ignored: ignored - 1 });
    else
      finish(
        new DiscoveryError(
          "dhcp-timeout",
          `No DHCPACK to DHCPINFORM from ${o.server.host}:${o.server.port} after ${attempts} tries`,
        ),
      );
  });
  send();
  return {
    result,
    cancel: () => finish(new DiscoveryError("dhcp-cancelled", "DHCPINFORM cancelled")),
  };
}
