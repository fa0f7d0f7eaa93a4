/**
 * The DHCPINFORM client (RFC 2131 §3.4, §4.4.3) as the Lync phone uses it (behaviour §1.1):
 * the phone already has an address (ciaddr) and asks every server configured for vendor class
 * MS-UC-Client for options 43 and 120. The first DHCPACK that names a registrar (an FQDN in 120)
 * or a provisioning URL (43) wins; later answers are ignored.
 *
 * Retransmission follows RFC 2131 §4.1: 4 s, 8 s, 16 s … capped at 64 s, each randomised by
 * ±`jitterMs` (1 s by default), all on the injected Clock. Socket I/O goes through a
 * DatagramPort (platform/udp.ts on a real board, an in-memory fake in tests).
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
  send(bytes: Uint8Array, host: string, port: number): void;
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

export interface InformOptions {
  clock: Clock;
  random: Random;
  port: DatagramPort;
  /** Where to send: 255.255.255.255:67 on a LAN, or a known server (unicast). */
  server: { host: string; port: number };
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
    logger.debug("DHCPINFORM sent", { xid, attempt: attempts, to: `${o.server.host}:${o.server.port}` });
    try {
      o.port.send(bytes, o.server.host, o.server.port);
    } catch (err) {
      logger.warn("DHCPINFORM send failed", { error: (err as Error).message });
    }
    retransmit = o.clock.setTimer(delay, send);
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
