/**
 * Composition root of the phone: given a board and a configuration, build every instance (no
 * singletons), wire the ports, start them in order. `handset run` and `handset demo` call this.
 */

import { openStore } from "./commands/identity.ts";
import { createPhoneServices, type PhoneNetworkConfig } from "./commands/phone-services.ts";
import type { HandsetConfig } from "./config/options.ts";
import type { Logger } from "./core/logger.ts";
import { ClockService } from "./discovery/clock-service.ts";
import type { Board } from "./hal/board.ts";
import type { SrtpPolicy } from "./media/offer-answer.ts";
import { missedCallFile } from "./phone/missed-store.ts";
import { Phone, type PhoneEvent } from "./phone/phone.ts";
import { type CallMediaPorts, callMediaPorts } from "./platform/call-media.ts";
import { CryptoRandom } from "./platform/crypto-random.ts";
import { nodeFileSystem } from "./platform/file-system.ts";
import { SystemClock } from "./platform/system-clock.ts";

/** Calls' media: where RTP is received, and the encryption asked of peers. */
export interface PhoneMediaConfig {
  /** IPv4 address RTP binds to and the SDP names. */
  address: string;
  srtp: SrtpPolicy;
  /** Tone frequencies each call listens for in what it plays (the call test's figures). */
  detectTones?: readonly number[];
}

export interface PhoneConfig {
  storeDir: string;
  /** Trusted root certificates (PEM text). */
  trustedRoots: string[];
  network: PhoneNetworkConfig;
  utcOffsetMinutes?: number;
  /** Absent: the phone registers but places and takes no calls. */
  media?: PhoneMediaConfig;
}

export interface RunningPhone {
  phone: Phone;
  services: PhoneCoreServices;
  /** The phone's clock (SNTP-corrected, saved floor): what the fleet link stamps and times by. */
  clock: ClockService;
  /** The calls' RTP sockets, when media is configured (per-call figures: media.live). */
  media: CallMediaPorts | undefined;
  /** Stops the phone, then the board unless `keepBoard` (a core restart keeps the board running). */
  stop(o?: { keepBoard?: boolean }): Promise<void>;
}

export type PhoneCoreServices = ReturnType<typeof createPhoneServices>;

export async function startPhone(o: {
  config: PhoneConfig;
  board: Board;
  logger: Logger;
  onEvent: (e: PhoneEvent) => void;
  /** The board is already running (a core restarted by the fleet keeps it). */
  boardStarted?: boolean;
  /** Certificate lifecycle events (renewed, revoked, …) for the fleet's event stream. */
  onCertificate?: (e: { type: string }) => void;
}): Promise<RunningPhone> {
  const random = new CryptoRandom();
  const store = openStore(o.config.storeDir, random);
  // A Pi has no RTC: the clock starts from the last good time kept in flash and never runs back.
  const clock = new ClockService({
    base: new SystemClock(),
    store: {
      load: async () => (await store.load())?.lastGoodTime,
      save: async (epochMs) => {
        await store.update((r) => ({ ...r, lastGoodTime: epochMs }));
      },
    },
    logger: o.logger.child("clock"),
  });
  await clock.restore();
  if (!o.boardStarted) await o.board.start();
  const mc = o.config.media;
  async function openMedia(mc: PhoneMediaConfig): Promise<CallMediaPorts | undefined> {
    try {
      return await callMediaPorts({
        clock,
        random,
        logger: o.logger,
        address: mc.address,
        // Wideband first, as Lync-certified phones offer: G.722, then G.711 µ-law and A-law.
        capabilities: { codecs: ["G722", "PCMU", "PCMA"], srtp: mc.srtp },
        ...(o.board.audio ? { audio: o.board.audio } : {}),
        ...(mc.detectTones ? { detectTones: mc.detectTones } : {}),
      });
    } catch (err) {
      // A media.address not on this machine, say: the phone still registers (and says why in
      // the log) rather than not starting at all; calls are refused until the config is fixed.
      o.logger.error("call media not available", { error: String(err), address: mc.address });
      return undefined;
    }
  }
  const media = mc ? await openMedia(mc) : undefined;
  const services = createPhoneServices({
    ...(media ? { media: media.factory } : {}),
    missedCalls: missedCallFile(nodeFileSystem, o.config.storeDir, {
      onDamaged: (reason) => o.logger.warn("missed-calls list damaged; starting empty", { reason }),
    }),
    config: o.config.network,
    store,
    trustedRoots: o.config.trustedRoots,
    clock,
    random,
    logger: o.logger,
    ...(o.onCertificate ? { onCertificate: o.onCertificate } : {}),
  });
  const phone = new Phone({
    keys: o.board.keys,
    display: o.board.display,
    indicators: o.board.indicators,
    hook: o.board.hook,
    services,
    clock,
    random,
    logger: o.logger,
    options: { utcOffsetMinutes: o.config.utcOffsetMinutes ?? 0 },
  });
  phone.events.on(o.onEvent);
  phone.start();
  return {
    phone,
    services,
    clock,
    media,
    stop: async (so) => {
      await phone.stop();
      await media?.close();
      if (!so?.keepBoard) await o.board.stop();
    },
  };
}

/**
 * The phone's configuration from a validated `handset run` file: typed values only, nothing
 * cast. `trustedRoots` are the PEM texts of the files the configuration names.
 */
export function phoneConfigFrom(
  c: HandsetConfig,
  trustedRoots: string[],
  localAddress = "127.0.0.1",
): PhoneConfig {
  const dhcpInterface = c["network.dhcp.interface"];
  const dhcpServer = c["network.dhcp.server"];
  const network: PhoneNetworkConfig = {
    ...(dhcpInterface || dhcpServer
      ? {
          dhcp: {
            ...(dhcpInterface ? { interface: dhcpInterface } : {}),
            ...(dhcpServer ? { server: dhcpServer } : {}),
          },
        }
      : {}),
    dhcpTimeoutMs: c["network.dhcpTimeoutMs"],
    innerTls: c["network.innerTls"],
    ...(c["network.ntp"] ? { ntp: c["network.ntp"] } : {}),
    ...(c["network.dnsServer"] ? { dnsServer: c["network.dnsServer"] } : {}),
    ...(c["network.domain"] ? { domain: c["network.domain"] } : {}),
    ...(c["network.staticRegistrars"] ? { staticRegistrars: c["network.staticRegistrars"] } : {}),
    ...(c["network.staticCertProvUrl"] ? { staticCertProvUrl: c["network.staticCertProvUrl"] } : {}),
    ...(c["network.hosts"] ? { hosts: c["network.hosts"] } : {}),
    ...(c["network.failbackProbeMs"] !== undefined ? { failbackProbeMs: c["network.failbackProbeMs"] } : {}),
  };
  return {
    storeDir: c.storeDir,
    trustedRoots,
    network,
    utcOffsetMinutes: c.utcOffsetMinutes,
    media: { address: c["media.address"] ?? localAddress, srtp: c["media.srtp"] },
  };
}
