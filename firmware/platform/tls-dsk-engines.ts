/**
 * Picks the TLS-DSK inner-handshake engine for the configured `innerTls`.
 *
 * - "1.0" → node-forge engine. It sends the pidgin-sipe-shaped ClientHello (0x0301, empty
 *   session id, no extensions, AES-CBC-SHA only), the one hello proven against real Lync /
 *   Office365 pools. OpenSSL's TLS 1.0 hello would carry SNI, EMS, ETM, tickets…, whose effect
 *   on Schannel's TLS-DSK key derivation is unconfirmed.
 * - "1.2" and "auto" → Node's own TLS (OpenSSL). forge cannot speak TLS 1.2 at all, and "auto"
 *   must offer 1.2 while accepting 1.0 from older pools; OpenSSL also brings native RSA/AES
 *   speed and full certificate checking. Key material comes from the RFC 5705 exporter, which
 *   follows the negotiated version's PRF.
 */
import { AuthError } from "../core/errors.ts";
import type {
  TlsDskClientEngine,
  TlsDskClientOptions,
  TlsDskEngineTuning,
  TlsDskHandshakeResult,
} from "../sip/tls-dsk/engine.ts";
import { NodeTlsDskClient } from "./tls-dsk-node-engine.ts";

export function createTlsDskEngine(
  opts: TlsDskClientOptions,
  tuning: TlsDskEngineTuning = {},
): TlsDskClientEngine {
  switch (opts.innerTls) {
    case "1.0":
      return new LazyForgeClient(opts, tuning);
    case "1.2":
    case "auto":
      return new NodeTlsDskClient(opts, tuning);
    default:
      throw new AuthError("tls-handshake-failed", `unknown inner TLS setting ${String(opts.innerTls)}`);
  }
}

/**
 * The forge engine, loaded on its first flight: node-forge is several MB of a service's memory,
 * and a pool that speaks TLS 1.2 inside TLS-DSK never needs it.
 */
class LazyForgeClient implements TlsDskClientEngine {
  private engine: Promise<TlsDskClientEngine> | undefined;
  private destroyed = false;

  constructor(
    private readonly opts: TlsDskClientOptions,
    private readonly tuning: TlsDskEngineTuning,
  ) {}

  private load(): Promise<TlsDskClientEngine> {
    this.engine ??= import("../sip/tls-dsk/forge-engine.ts").then((m) => {
      const e = new m.ForgeTlsDskClient(this.opts, this.tuning);
      if (this.destroyed) e.destroy();
      return e;
    });
    return this.engine;
  }

  async start(): Promise<Buffer> {
    return (await this.load()).start();
  }

  async step(serverToken: Buffer): Promise<{ token: Buffer } | { done: TlsDskHandshakeResult }> {
    return (await this.load()).step(serverToken);
  }

  destroy(): void {
    this.destroyed = true;
    void this.engine?.then((e) => e.destroy()).catch(() => {});
  }
}
