/**
 * innerTls "auto": which inner-handshake profile to try, and when to fall back.
 *
 * "auto" first runs the TLS 1.2 profile (no @SECLEVEL=0: OpenSSL's default security level, so
 * nothing weaker than TLS 1.2 with SHA-2 signatures can be negotiated). When server flight 1
 * shows that the registrar speaks only TLS 1.0/1.1 — a ServerHello whose server_version is below
 * 0x0303, or a protocol_version alert (70) — the registration starts a fresh handshake with the
 * TLS 1.0 profile (the pidgin-sipe-shaped hello, the only one proven against older pools) and
 * remembers that for the rest of this flow.
 *
 * Why this is no downgrade risk: the gssapi-data tokens travel inside the OUTER SIP/TLS
 * connection, which is TLS ≥ 1.2 and verified (chain to our roots, registrar name). Only the peer
 * that the outer TLS authenticated can put a TLS 1.0 ServerHello or an alert into a 401; a
 * network attacker cannot inject or alter them. That peer could as well refuse us outright, so
 * falling back concedes nothing to a third party. In addition the tunnel is bound to the flow
 * (channel-binding.ts): the inner certificate must be the outer one or share its key.
 */
import type { InnerTls } from "./engine.ts";
import { alertInFlight, HS_SERVER_HELLO, handshakeMessages } from "./records.ts";

/** TLS alert description protocol_version (RFC 5246 §7.2.2). */
const ALERT_PROTOCOL_VERSION = 70;
const TLS12 = 0x0303;

/** The profile a registration starts with for the configured setting. */
export function initialInnerTls(configured: InnerTls): "1.2" | "1.0" {
  return configured === "1.0" ? "1.0" : "1.2";
}

/** server_version of the plaintext ServerHello in a server flight, if one is there. */
export function serverHelloVersion(token: Uint8Array): number | undefined {
  try {
    const hello = handshakeMessages(token).find((m) => m.type === HS_SERVER_HELLO);
    return hello && hello.body.length >= 2 ? hello.body.readUInt16BE(0) : undefined;
  } catch {
    return undefined;
  }
}

/** True when server flight 1 says the server only speaks a version below TLS 1.2. */
export function serverNeedsTls10(token: Uint8Array): boolean {
  let alert: ReturnType<typeof alertInFlight> = null;
  try {
    alert = alertInFlight(token);
  } catch {
    alert = null;
  }
  if (alert?.description === ALERT_PROTOCOL_VERSION) return true;
  const v = serverHelloVersion(token);
  return v !== undefined && v < TLS12;
}
