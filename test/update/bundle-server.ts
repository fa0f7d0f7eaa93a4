/**
 * A bundle server on 127.0.0.1 for the streaming tests: serves one bundle over http or https,
 * honestly (backpressure on its writes) or with a fault: no Content-Length, the connection cut
 * after N body bytes, a stall after N bytes (the connection kept open, nothing more sent), or
 * another status.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";

export interface ServeFaults {
  /** Chunked transfer, no Content-Length. */
  noLength?: boolean;
  /** Destroy the connection after this many body bytes. */
  cutAfter?: number;
  /** Send this many body bytes, then nothing (the connection stays open). */
  stallAfter?: number;
  status?: number;
}

export interface BundleServer {
  url: string;
  /** Body bytes written to the sockets so far. */
  sent(): number;
  close(): Promise<void>;
}

const PIECE = 64 * 1024;

export async function serveBundle(
  bytes: Uint8Array,
  faults: ServeFaults = {},
  tls?: { cert: string; key: string },
): Promise<BundleServer> {
  let sent = 0;
  const handler: http.RequestListener = async (_req, res) => {
    const status = faults.status ?? 200;
    const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
    if (!faults.noLength) headers["Content-Length"] = String(bytes.length);
    res.writeHead(status, headers);
    if (status !== 200) return void res.end();
    const stopAt = Math.min(bytes.length, faults.cutAfter ?? faults.stallAfter ?? bytes.length);
    for (let at = 0; at < stopAt && !res.destroyed; ) {
      const piece = bytes.subarray(at, Math.min(at + PIECE, stopAt));
      at += piece.length;
      sent += piece.length;
      if (!res.write(piece)) await new Promise((r) => res.once("drain", r).once("close", r));
    }
    if (faults.cutAfter !== undefined) {
      // Let what was written reach the client, then cut: an early end, not a lost write.
      await new Promise((r) => setTimeout(r, 50));
      res.socket?.destroy();
    } else if (faults.stallAfter === undefined) res.end();
  };
  const server = tls
    ? https.createServer({ cert: tls.cert, key: tls.key }, handler)
    : http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `${tls ? "https" : "http"}://127.0.0.1:${port}/bundles/handset.bundle?sig=secret`,
    sent: () => sent,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
