/**
 * Convenience composition of the discovery steps of PIN sign-in (digest §1.1 steps 2–3):
 * Cert Prov metadata → Web Ticket metadata → the PIN port. Nothing is persisted here; the
 * resumable sign-in stores what each step returns.
 */
import type { Logger } from "../core/logger.ts";
import { ProvisioningError } from "./errors.ts";
import type { HttpClient } from "./http.ts";
import {
  type CertProvMetadata,
  choosePinPort,
  fetchMetadata,
  parseCertProvMetadata,
  parseWebTicketMetadata,
} from "./metadata.ts";

export async function discoverPinEndpoint(
  http: HttpClient,
  certProvUrl: string,
  logger?: Logger,
): Promise<{ certProv: CertProvMetadata; pinPortUrl: string }> {
  const certProv = parseCertProvMetadata(await fetchMetadata(http, certProvUrl, logger));
  const { ports } = parseWebTicketMetadata(await fetchMetadata(http, certProv.webTicketUrl, logger));
  const pinPortUrl = choosePinPort(ports);
  logger?.info("web ticket ports", { ports: ports.map((p) => p.name), pin: pinPortUrl ?? null });
  if (!pinPortUrl) throw new ProvisioningError("pin-auth-disabled", "PIN sign-in is disabled on this server");
  return { certProv, pinPortUrl };
}
