/**
 * An update bundle's download (thin): one GET over http or https, handed to the installer as a
 * byte source it pulls from — `read(n)` gives exactly the next n bytes — so the bundle flows from
 * the server into the partition without ever being stored (it does not fit the data partition).
 *
 * - backpressure: the response is read only when the installer asks (paused mode); while it
 *   hashes and writes a chunk the socket's buffers fill and TCP slows the server down;
 * - size: the response must say its Content-Length (the bundle's head is checked against it
 *   before anything is written) and nothing past it is ever asked for;
 * - idle timeout: the response's headers must come within idleTimeoutMs (connect and TLS
 *   included), and then no byte for idleTimeoutMs while the installer waits for the body is a
 *   stalled download; time the installer spends writing is not idle time;
 * - https: the server's chain, purpose, name and validity are checked at the given clock (the
 *   phone's, not the OS's: checkPeerAtClock, as every TLS edge does) before the request is sent.
 *
 * Every failure is a HandsetError: update-download-failed (refused, cut, stalled, ended early,
 * not 200, no Content-Length), update-cert-time, update-cert-untrusted. Redirects are not
 * followed (a 3xx is a failure): the URL is the one the fleet signed off.
 */
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import * as http from "node:http";
import * as https from "node:https";
import * as tls from "node:tls";
import { HandsetError } from "../core/errors.ts";
import type { CertClock } from "../sip/tls-dsk/cert-verify.ts";
import { ClockCheckedAgent } from "./clock-checked-agent.ts";

export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export interface DownloadOptions {
  /** Trusted roots (PEM) for an https URL; default: Node's bundled roots. */
  ca?: string[];
  /** The clock the server certificate's validity is checked at. */
  clock: CertClock;
  idleTimeoutMs?: number;
  userAgent?: string;
}

export interface BundleDownload {
  /** The response's Content-Length: the bundle's size. */
  readonly size: number;
  /** Bytes handed out so far. */
  readonly position: number;
  /** The next n bytes, exactly; rejects (update-download-failed) when they do not come. */
  read(n: number): Promise<Uint8Array>;
  /** Ends the download (idempotent). */
  close(): void;
}

/** A URL as it may be logged: no query (a signed URL's query is a credential), no user info. */
export function displayUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

const failed = (message: string, cause?: unknown) =>
  new HandsetError("update-download-failed", message, cause === undefined ? undefined : { cause });

const TIME_CODES = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);

function classify(err: Error & { code?: string }, where: string): HandsetError {
  if (err instanceof HandsetError) return err;
  return failed(`cannot download from ${where} (${err.code ?? err.message})`, err);
}

/** The response body as exact reads, pulled (paused mode), with the idle timeout while waiting. */
class ResponseReader implements BundleDownload {
  position = 0;
  private rest: Buffer | undefined;
  private failure: HandsetError | undefined;
  private ended = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly res: http.IncomingMessage,
    readonly size: number,
    private readonly idleMs: number,
    private readonly where: string,
    private readonly onClose: () => void,
  ) {
    res.on("readable", () => this.notify());
    res.on("end", () => {
      this.ended = true;
      this.notify();
    });
    res.on("error", (err) => this.fail(err));
    res.on("close", () => {
      if (!res.complete) this.fail(new Error("connection closed"));
      this.ended = true;
      this.notify();
    });
  }

  fail(err: Error): void {
    this.failure ??= err instanceof HandsetError ? err : classify(err, this.where);
    this.notify();
  }

  async read(n: number): Promise<Uint8Array> {
    if (this.position + n > this.size)
      throw failed(`${this.where}: asked for bytes past the Content-Length (${this.size})`);
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (this.failure) throw this.failure;
      const c = this.rest ?? (this.res.read() as Buffer | null);
      this.rest = undefined;
      if (c !== null) {
        const take = Math.min(c.length, n - got);
        c.copy(out, got, 0, take);
        got += take;
        if (take < c.length) this.rest = c.subarray(take);
        continue;
      }
      if (this.ended)
        throw failed(`${this.where}: the download ended after ${this.position + got} of ${this.size} bytes`);
      await this.waitForData(this.position + got);
    }
    this.position += n;
    return out;
  }

  close(): void {
    this.onClose();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private waitForData(at: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(
        () => this.fail(failed(`${this.where}: no data for ${this.idleMs} ms at byte ${at} (stalled)`)),
        this.idleMs,
      );
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** GETs `url` and resolves once the response's headers are in and acceptable. */
export function openBundleDownload(url: URL, o: DownloadOptions): Promise<BundleDownload> {
  const idleMs = o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  const where = url.host;
  const secure = url.protocol === "https:";
  if (!secure && url.protocol !== "http:")
    return Promise.reject(failed(`cannot download ${url.protocol} URLs (http or https only)`));
  const agent = secure
    ? new ClockCheckedAgent({
        agent: { keepAlive: false, maxCachedSessions: 0 },
        ca: o.ca ?? [...tls.rootCertificates],
        clock: o.clock,
        handshakeTimeoutMs: idleMs,
        errors: {
          transport: classify,
          timeout: (name) => failed(`no TLS handshake with ${name} within ${idleMs} ms`),
          peer: (p, name) =>
            (p.opensslCode ? TIME_CODES.has(p.opensslCode) : p.kind === "time")
              ? new HandsetError("update-cert-time", `certificate of ${name}: ${p.message}`)
              : new HandsetError(
                  "update-cert-untrusted",
                  `certificate of ${name} is not trusted: ${p.message}`,
                ),
        },
      })
    : new http.Agent({ keepAlive: false });
  return new Promise((resolve, reject) => {
    let reader: ResponseReader | undefined;
    let settled = false;
    const shutdown = () => {
      req.destroy();
      agent.destroy();
    };
    const fail = (err: Error) => {
      if (reader) return reader.fail(err);
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      shutdown();
      reject(classify(err, where));
    };
    const headers = { "User-Agent": o.userAgent ?? "handset-update", "Accept-Encoding": "identity" };
    const req = (secure ? https : http).request(url, { method: "GET", agent, headers }, (res) => {
      if (settled) return;
      const length = res.headers["content-length"];
      const encoding = res.headers["content-encoding"];
      if (res.statusCode !== 200)
        return fail(failed(`${displayUrl(url)} answered HTTP ${res.statusCode ?? "?"} (want 200)`));
      if (encoding !== undefined && encoding !== "identity")
        return fail(failed(`${where} sent the bundle ${encoding}-encoded (want it as is)`));
      if (length === undefined || !/^\d{1,16}$/.test(length) || !Number.isSafeInteger(Number(length)))
        return fail(failed(`${where} did not say the bundle's Content-Length: refusing to stream it`));
      settled = true;
      clearTimeout(timer);
      reader = new ResponseReader(res, Number(length), idleMs, where, shutdown);
      resolve(reader);
    });
    const timer = setTimeout(() => fail(failed(`no answer from ${where} within ${idleMs} ms`)), idleMs);
    req.on("error", fail);
    req.end();
  });
}

/**
 * The roots in a PEM file (`--ca`, a request's `ca`): every certificate in it, each one parsed,
 * so that a typo is refused here (update-ca-invalid) rather than as an untrusted server later.
 */
export async function readCaFile(path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new HandsetError("update-ca-invalid", `CA file ${path}: ${(err as Error).message}`, { cause: err });
  }
  const pems = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (pems.length === 0)
    throw new HandsetError("update-ca-invalid", `CA file ${path} holds no PEM certificate`);
  for (const pem of pems)
    try {
      new X509Certificate(pem);
    } catch (err) {
      throw new HandsetError("update-ca-invalid", `CA file ${path}: a certificate does not parse`, {
        cause: err,
      });
    }
  return pems.map((p) => `${p}\n`);
}
