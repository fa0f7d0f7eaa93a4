/**
 * Helpers to drive the `openssl` command line from interop tests: detect it, run `s_server` on
 * an ephemeral loopback port (it prints `ACCEPT 127.0.0.1:<port>` for `-accept 127.0.0.1:0`),
 * bridge TLS-DSK tokens to it over TCP (one whole flight per token, cut with flightComplete),
 * and read its NSS key log.
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { flightComplete } from "../../firmware/sip/tls-dsk/records.ts";

export function opensslAvailable(): boolean {
  try {
    const r = spawnSync("openssl", ["version"], { encoding: "utf8", timeout: 5000 });
    return r.status === 0 && /OpenSSL/i.test(r.stdout);
  } catch {
    return false;
  }
}

export interface SServer {
  port: number;
  keylogPath: string;
  dir: string;
  proc: ChildProcessWithoutNullStreams;
  /** Everything s_server wrote to stdout/stderr so far (for failure messages). */
  log(): string;
  stop(): void;
}

export interface SServerFiles {
  cert: string;
  key: string;
  ca: string;
}

/**
 * Starts `openssl s_server -accept 127.0.0.1:0 -cert … -key … -CAfile … -keylogfile … -naccept 1
 * <extra>` with its stdin kept open (a pipe: at EOF it would close the connection at once).
 */
export async function startSServer(files: SServerFiles, extra: string[], timeoutMs = 5000): Promise<SServer> {
  const dir = mkdtempSync(join(tmpdir(), "handset-sserver-"));
  const certPath = join(dir, "server.pem");
  const keyPath = join(dir, "server.key");
  const caPath = join(dir, "ca.pem");
  const keylogPath = join(dir, "keys.txt");
  writeFileSync(certPath, files.cert);
  writeFileSync(keyPath, files.key, { mode: 0o600 });
  writeFileSync(caPath, files.ca);
  const args = [
    "s_server",
    "-accept",
    "127.0.0.1:0",
    "-cert",
    certPath,
    "-key",
    keyPath,
    "-CAfile",
    caPath,
    "-keylogfile",
    keylogPath,
    "-naccept",
    "1",
    ...extra,
  ];
  const proc = spawn("openssl", args, { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  proc.stdout.setEncoding("utf8");
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d: string) => {
    output += d;
  });
  const stop = (): void => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
    proc.stdin.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`s_server did not start: ${output}`));
    }, timeoutMs);
    proc.stdout.on("data", (d: string) => {
      output += d;
      const m = /ACCEPT\s+\S*:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`s_server exited (${code}): ${output}`));
    });
  });
  return { port, keylogPath, dir, proc, log: () => output, stop };
}

/** A TCP connection to s_server that trades whole flights, as the lab registrar trades gssapi tokens. */
export class FlightBridge {
  private buf = Buffer.alloc(0);
  private notify: (() => void) | null = null;
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    sock.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.notify?.();
    });
    sock.on("close", () => {
      this.closed = true;
      this.notify?.();
    });
    sock.on("error", () => {});
  }

  static connect(port: number): Promise<FlightBridge> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: "127.0.0.1", port }, () => resolve(new FlightBridge(sock)));
      sock.once("error", reject);
    });
  }

  /** Writes a client token and returns the server's reply once it is a complete flight. */
  exchange(token: Buffer, timeoutMs = 5000): Promise<Buffer> {
    this.sock.write(token);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.notify = null;
        reject(new Error(`no complete server flight (${this.buf.length} bytes so far)`));
      }, timeoutMs);
      this.notify = () => {
        let complete = false;
        try {
          complete = flightComplete(this.buf, "server");
        } catch (err) {
          clearTimeout(timer);
          this.notify = null;
          reject(err);
          return;
        }
        if (complete || this.closed) {
          clearTimeout(timer);
          this.notify = null;
          const flight = this.buf;
          this.buf = Buffer.alloc(0);
          if (complete) resolve(flight);
          else reject(new Error("s_server closed the connection mid-flight"));
        }
      };
      this.notify();
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Master secret for a client_random from an NSS key log (`CLIENT_RANDOM <cr> <master>`), polling until written. */
export async function masterFromKeylog(
  path: string,
  clientRandom: Buffer,
  timeoutMs = 3000,
): Promise<Buffer> {
  const want = clientRandom.toString("hex").toLowerCase();
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let text = "";
    try {
      text = readFileSync(path, "utf8");
    } catch {
      // not created yet
    }
    for (const line of text.split("\n")) {
      const [label, cr, master] = line.trim().split(/\s+/);
      if (label === "CLIENT_RANDOM" && cr?.toLowerCase() === want && master)
        return Buffer.from(master, "hex");
    }
    if (Date.now() > deadline) throw new Error(`no CLIENT_RANDOM ${want} in ${path}:\n${text}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
