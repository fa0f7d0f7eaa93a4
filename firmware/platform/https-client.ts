/**
 * The provisioning client's HTTPS edge: node:https with the configured roots only, one keep-alive
 * agent and one cookie jar per client instance, and transport failures mapped to
 * ProvisioningError codes. Bodies are UTF-8 text (SOAP/WSDL), at most MAX_RESPONSE_BYTES.
 *
 * The server certificate is checked at the phone's time (options.clock), not the OS's, before a
 * request byte (the PIN!) is written: clock-checked-agent.ts.
 */

import * as https from "node:https";
import type { Clock } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import { ProvisioningError } from "../provisioning/errors.ts";
import type { HttpClient, HttpRequest, HttpResponse } from "../provisioning/http.ts";
import type { CertClock } from "../sip/tls-dsk/cert-verify.ts";
import { ClockCheckedAgent, type PeerProblem } from "./clock-checked-agent.ts";

/** Every response body is bounded: a SOAP answer of the pool is a few KiB. */
export const MAX_RESPONSE_BYTES = 256 * 1024;

export interface HttpsClientOptions {
  /** Trusted roots (PEM). Never empty. */
  ca: string[];
  /** Whole-exchange timeout in ms (default 30 s). */
  timeoutMs?: number;
  userAgent?: string;
  /**
   * The phone's clock: certificate validity is checked against its now() (a ClockService's
   * isSet() tells clock-invalid from server-cert-time), and the timeout runs on its timers (a fake
   * one in tests) instead of the event loop's. Default: the OS clock and event-loop timers.
   */
  clock?: Clock;
}

const OS_CLOCK: CertClock = { now: () => Date.now() };

const TRUST_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "UNABLE_TO_GET_ISSUER_CERT",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_REJECTED",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "ERR_TLS_CERT_ALTNAME_FORMAT",
]);
const TIME_CODES = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);

const hostUrl = (name: string) => new URL(`https://${name.includes(":") ? `[${name}]` : name}`);

/** A server that did not pass the check at the phone's clock, as provisioning names it. */
function peerError(p: PeerProblem, url: URL): ProvisioningError {
  if (p.opensslCode) return classify(Object.assign(new Error(p.message), { code: p.opensslCode }), url);
  if (p.clockInvalid)
    return new ProvisioningError(
      "clock-invalid",
      `Time not set: the certificate of ${url.host} cannot be checked yet (${p.message})`,
    );
  if (p.kind === "time")
    return new ProvisioningError("server-cert-time", `Certificate of ${url.host}: ${p.message}`);
  return new ProvisioningError(
    "server-cert-untrusted",
    `Certificate of ${url.host} is not trusted: ${p.message}`,
  );
}

function classify(err: Error & { code?: string }, url: URL): ProvisioningError {
  const where = url.host;
  const code = err.code ?? "";
  if (err instanceof ProvisioningError) return err;
  if (TRUST_CODES.has(code))
    return new ProvisioningError(
      "server-cert-untrusted",
      `Certificate of ${where} is not trusted (${code})`,
      {
        cause: err,
      },
    );
  if (TIME_CODES.has(code))
    return new ProvisioningError(
      "server-cert-time",
      `Certificate of ${where} is outside its validity (${code}): the clock is wrong or the certificate expired`,
      { cause: err },
    );
  if (code === "ETIMEDOUT")
    return new ProvisioningError("timeout", `No answer from ${where}`, { cause: err });
  return new ProvisioningError("server-unreachable", `Cannot reach ${where} (${code || err.message})`, {
    cause: err,
  });
}

/** A cookie jar keyed by host: sipe keeps one per provisioning run; we keep one per client. */
class CookieJar {
  private readonly byHost = new Map<string, Map<string, string>>();

  store(host: string, setCookie: string[] | undefined): void {
    if (!setCookie) return;
    let jar = this.byHost.get(host);
    if (!jar) {
      jar = new Map();
      this.byHost.set(host, jar);
    }
    for (const line of setCookie) {
      const pair = line.split(";", 1)[0] ?? "";
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (/max-age=0\b/i.test(line) || value === "") jar.delete(name);
      else jar.set(name, value);
    }
  }

  header(host: string): string | undefined {
    const jar = this.byHost.get(host);
    if (!jar || jar.size === 0) return undefined;
    return [...jar].map(([k, v]) => `${k}=${v}`).join("; ");
  }
}

export interface HttpsClient extends HttpClient {
  /** Closes idle keep-alive sockets. */
  close(): void;
}

export function createHttpsClient(o: HttpsClientOptions): HttpsClient {
  if (o.ca.length === 0) throw new HandsetError("config-invalid", "No trusted root certificates configured");
  const timeoutMs = o.timeoutMs ?? 30_000;
  const agent = new ClockCheckedAgent({
    agent: { keepAlive: true, maxSockets: 2, maxCachedSessions: 0 },
    ca: o.ca,
    clock: o.clock ?? OS_CLOCK,
    handshakeTimeoutMs: timeoutMs,
    errors: {
      transport: (err, name) => classify(err, hostUrl(name)),
      timeout: (name) => new ProvisioningError("timeout", `No TLS handshake with ${hostUrl(name).host}`),
      peer: (p, name) => peerError(p, hostUrl(name)),
    },
  });
  const jar = new CookieJar();
  const userAgent = o.userAgent ?? "handset/0.1";

  const request = (r: HttpRequest): Promise<HttpResponse> =>
    new Promise((resolve, reject) => {
      const url = new URL(r.url);
      if (url.protocol !== "https:") {
        reject(new HandsetError("config-invalid", `Refusing non-HTTPS URL ${url.origin}`));
        return;
      }
      const body = r.body === undefined ? undefined : Buffer.from(r.body, "utf8");
      const headers: Record<string, string> = { "User-Agent": userAgent, ...r.headers };
      if (body) headers["Content-Length"] = String(body.length);
      const cookie = jar.header(url.host);
      if (cookie) headers["Cookie"] = cookie;
      let settled = false;
      const fail = (err: Error & { code?: string }) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        handle?.cancel();
        reject(classify(err, url));
      };
      const req = https.request(url, { method: r.method, agent, headers }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        if (Number(res.headers["content-length"] ?? 0) > MAX_RESPONSE_BYTES) {
          const err = new ProvisioningError(
            "response-too-large",
            `${url.host} announced more than ${MAX_RESPONSE_BYTES} bytes`,
            { status: res.statusCode ?? 0 },
          );
          fail(err);
          req.destroy(err);
          return;
        }
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            const err = new ProvisioningError(
              "response-too-large",
              `${url.host} sent more than ${MAX_RESPONSE_BYTES} bytes`,
              { status: res.statusCode ?? 0 },
            );
            fail(err);
            req.destroy(err);
            return;
          }
          chunks.push(c);
        });
        res.on("error", fail);
        res.on("end", () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          handle?.cancel();
          jar.store(url.host, res.headers["set-cookie"]);
          const out: Record<string, string | string[]> = {};
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out[k] = v;
          resolve({
            status: res.statusCode ?? 0,
            headers: out,
            body: Buffer.concat(chunks).toString("utf8"),
          });
        });
      });
      const onTimeout = () => {
        const err = new ProvisioningError("timeout", `No answer from ${url.host} within ${timeoutMs} ms`);
        fail(err);
        req.destroy(err);
      };
      // On the injected clock when one is given, like every other protocol timer.
      const handle = o.clock ? o.clock.setTimer(timeoutMs, onTimeout) : undefined;
      const timer = handle ? undefined : setTimeout(onTimeout, timeoutMs);
      req.on("error", fail);
      req.end(body);
    });

  return { request, close: () => agent.destroy() };
}
