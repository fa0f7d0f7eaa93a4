/**
 * A real mosquitto 2 (Debian's /usr/sbin/mosquitto) for a test, and its command-line clients
 * (mosquitto_sub, mosquitto_rr from mosquitto-clients) as independent peers.
 *
 * Each broker lives in its own temp dir with a generated mosquitto.conf: `per_listener_settings
 * false`, `allow_anonymous false`, a password file built by `mosquitto_passwd -U`, an ACL file
 * from the given lines, one plain and one TLS listener on free 127.0.0.1 ports (the server
 * certificate is issued for localhost / 127.0.0.1 by a LabCa), and optionally a third listener
 * that requires a client certificate and takes its CN as the username. It logs everything to
 * stderr, which we keep: tests read it (`Received PINGREQ from …`, `New client connected …`) and
 * wait on it instead of sleeping.
 *
 * Without mosquitto a test skips with a plain reason, except under CI=true, where it fails.
 */
import { type ChildProcess, execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { LabCa } from "../lab/ca.ts";
import { freeTcpPort, needPeer, spawnPeer, stopPeer, waitOn } from "./peer-process.ts";

const execFileAsync = promisify(execFile);

export const MOSQUITTO = "/usr/sbin/mosquitto";
export const MOSQUITTO_SUB = "/usr/bin/mosquitto_sub";
export const MOSQUITTO_RR = "/usr/bin/mosquitto_rr";
export const MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd";
export const MOSQUITTO_MISSING = "mosquitto not installed (apt-get install mosquitto mosquitto-clients)";
export const hasMosquitto = [MOSQUITTO, MOSQUITTO_SUB, MOSQUITTO_RR, MOSQUITTO_PASSWD].every((p) =>
  existsSync(p),
);

export function needMosquitto(ctx: { skip: (note?: string) => never }): void {
  needPeer(ctx, hasMosquitto, MOSQUITTO_MISSING);
}

export interface MosquittoUser {
  username: string;
  password: string;
}

export interface MosquittoOptions {
  users?: MosquittoUser[];
  /**
   * acl_file lines as mosquitto reads them: `user NAME`, `topic [read|write|readwrite|deny] T`,
   * `pattern … handset/v1/%u/#` (%u username, %c client id). Without it every authenticated
   * client may use every topic.
   */
  acl?: string[];
  /** Adds a TLS listener that requires a client certificate from the same CA (CN = username). */
  clientCa?: boolean;
  /** Retained messages and sessions survive stop()/restart() (saved on a clean stop only). */
  persistence?: boolean;
  /** More mosquitto.conf lines (global options, before the listeners). */
  extraConfig?: string[];
}

export interface ClientCertificate {
  cert: string;
  key: string;
}

export interface Mosquitto {
  host: "127.0.0.1";
  port: number;
  tlsPort: number;
  /** The client-certificate listener's port (clientCa only). */
  certPort: number | undefined;
  url: string;
  tlsUrl: string;
  certUrl: string | undefined;
  /** PEM of the CA that issued the broker's certificate (and the client certificates). */
  ca: string;
  dir: string;
  caFile: string;
  running(): boolean;
  /** A client certificate from the broker's CA (for the clientCa listener; CN = username). */
  issueClientCert(commonName: string): Promise<ClientCertificate>;
  /** SIGTERM; resolves when the process has exited. */
  stop(): Promise<void>;
  /** SIGKILL (no clean shutdown, no DISCONNECT to anyone); resolves when the process has exited. */
  kill(): Promise<void>;
  /**
   * SIGSTOP: the broker's sockets stay open and the kernel still takes bytes, but nothing is
   * answered (a hung broker, or a WAN that silently drops). thaw() sends SIGCONT.
   */
  freeze(): void;
  thaw(): void;
  /** Starts again on the same ports with the same files; resolves when it accepts connections. */
  restart(): Promise<void>;
  /** Everything mosquitto logged, over all its runs. */
  log(): string;
  /** The log's current length: pass it as `from` to look only at what comes later. */
  logMark(): number;
  /** Resolves with the first log line (after `from`) matching; rejects after timeoutMs (default 10 s). */
  waitForLog(match: string | RegExp, o?: { from?: number; timeoutMs?: number }): Promise<string>;
  /** stop() and the temp dir removed. */
  dispose(): Promise<void>;
}

/**
 * The site ACL README.md shows ("Fleet over MQTT"; a test keeps the two the same): a phone (user
 * name = device id) writes only its own state, events and reports, reads only its own commands
 * and desired configuration (and the organisation's and sites'), and may answer on a fleet reply
 * topic; the operator may do everything under the prefix. `pattern`, not `topic`, for lines that
 * hold for every user: `topic` lines before any `user` line apply to anonymous clients only.
 */
export function siteAcl(prefix = "handset/v1", operator = "operator"): string[] {
  return [
    `pattern write ${prefix}/%u/state`,
    `pattern write ${prefix}/%u/event`,
    `pattern write ${prefix}/%u/config/reported`,
    `pattern read ${prefix}/%u/cmd/#`,
    `pattern read ${prefix}/%u/config/desired`,
    `pattern read ${prefix}/org/config/desired`,
    `pattern read ${prefix}/site/+/config/desired`,
    `pattern write ${prefix}/_fleet/+/reply`,
    "",
    `user ${operator}`,
    `topic readwrite ${prefix}/#`,
  ];
}

/** A loopback port nothing listens on at this moment. */
export const freePort = freeTcpPort;

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: "127.0.0.1", port });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

function configText(o: {
  dir: string;
  ports: { port: number; tlsPort: number; certPort: number | undefined };
  users: boolean;
  acl: boolean;
  persistence: boolean;
  extra: string[];
}): string {
  const tls = [
    `cafile ${join(o.dir, "ca.pem")}`,
    `certfile ${join(o.dir, "server.pem")}`,
    `keyfile ${join(o.dir, "server.key")}`,
  ];
  return [
    "per_listener_settings false",
    "allow_anonymous false",
    // As root, mosquitto would drop to the "mosquitto" user, who cannot read our 0700 temp dir.
    ...(process.getuid?.() === 0 ? ["user root"] : []),
    ...(o.users ? [`password_file ${join(o.dir, "passwd")}`] : []),
    ...(o.acl ? [`acl_file ${join(o.dir, "acl")}`] : []),
    ...(o.persistence ? ["persistence true", `persistence_location ${o.dir}/`] : ["persistence false"]),
    "log_dest stderr",
    "log_type all",
    "connection_messages true",
    ...o.extra,
    `listener ${o.ports.port} 127.0.0.1`,
    `listener ${o.ports.tlsPort} 127.0.0.1`,
    ...tls,
    ...(o.ports.certPort === undefined
      ? []
      : [
          `listener ${o.ports.certPort} 127.0.0.1`,
          ...tls,
          "require_certificate true",
          "use_identity_as_username true",
        ]),
    "",
  ].join("\n");
}

export async function startMosquitto(o: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = await mkdtemp(join(tmpdir(), "handset-mosquitto-"));
  const ca = await LabCa.create("Handset MQTT Test CA");
  const server = await ca.issueServer("localhost", [], ["127.0.0.1"]);
  const caFile = join(dir, "ca.pem");
  await writeFile(caFile, ca.cert);
  await writeFile(join(dir, "server.pem"), server.cert);
  await writeFile(join(dir, "server.key"), server.key, { mode: 0o600 });
  const users = o.users ?? [];
  if (users.length > 0) {
    const passwd = join(dir, "passwd");
    await writeFile(passwd, users.map((u) => `${u.username}:${u.password}\n`).join(""), { mode: 0o600 });
    // -U hashes a plain user:password file in place (one process for all users).
    await execFileAsync(MOSQUITTO_PASSWD, ["-U", passwd]);
    await chmod(passwd, 0o600);
  }
  if (o.acl) await writeFile(join(dir, "acl"), `${o.acl.join("\n")}\n`, { mode: 0o600 });
  const confPath = join(dir, "mosquitto.conf");

  let logText = "";
  const logWaiters = new Set<() => void>();
  let proc: ChildProcess | undefined;
  let exited: Promise<unknown> = Promise.resolve();
  let frozen = false;

  const spawnOnce = async (ports: { port: number; tlsPort: number; certPort: number | undefined }) => {
    await writeFile(
      confPath,
      configText({
        dir,
        ports,
        users: users.length > 0,
        acl: o.acl !== undefined,
        persistence: o.persistence ?? false,
        extra: o.extraConfig ?? [],
      }),
    );
    const from = logText.length;
    const peer = spawnPeer(MOSQUITTO, ["-c", confPath], { stdio: ["ignore", "ignore", "pipe"] });
    const child = peer.child;
    proc = child;
    exited = peer.exited;
    child.once("exit", () => {
      for (const w of logWaiters) w();
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (text: string) => {
      logText += text;
      for (const w of logWaiters) w();
    });
    // Ready = it said so and every listener accepts a TCP connection (no fixed sleeps).
    await waitOn(logWaiters, () => {
      if (/mosquitto version \S+ running/.test(logText.slice(from))) return true;
      if (peer.hasExited()) throw new Error(`mosquitto exited at start:\n${logText.slice(from)}`);
      return undefined;
    });
    for (const p of [ports.port, ports.tlsPort, ports.certPort])
      if (p !== undefined && !(await tcpAccepts(p))) throw new Error(`mosquitto does not accept on ${p}`);
  };

  const pickPorts = async () => ({
    port: await freePort(),
    tlsPort: await freePort(),
    certPort: o.clientCa ? await freePort() : undefined,
  });

  // Free ports can be taken between our probe and mosquitto's bind: try a few sets.
  let ports = await pickPorts();
  for (let attempt = 1; ; attempt++) {
    try {
      await spawnOnce(ports);
      break;
    } catch (err) {
      if (attempt >= 3 || !/Address already in use/.test(String(err))) {
        await rm(dir, { recursive: true, force: true });
        throw err;
      }
      ports = await pickPorts();
    }
  }

  const terminate = async (signal: NodeJS.Signals) => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    p.kill(signal);
    // A frozen broker keeps SIGTERM pending until it runs again.
    if (frozen) p.kill("SIGCONT");
    frozen = false;
    await exited;
  };

  const broker: Mosquitto = {
    host: "127.0.0.1",
    port: ports.port,
    tlsPort: ports.tlsPort,
    certPort: ports.certPort,
    url: `mqtt://127.0.0.1:${ports.port}`,
    tlsUrl: `mqtts://127.0.0.1:${ports.tlsPort}`,
    certUrl: ports.certPort === undefined ? undefined : `mqtts://127.0.0.1:${ports.certPort}`,
    ca: ca.cert,
    dir,
    caFile,
    running: () => proc !== undefined && proc.exitCode === null && proc.signalCode === null,
    issueClientCert: async (commonName) => {
      const c = await ca.issue({ commonName, clientAuth: true, days: 30 });
      return { cert: c.cert, key: c.key };
    },
    freeze: () => {
      if (proc?.kill("SIGSTOP")) frozen = true;
    },
    thaw: () => {
      if (frozen) proc?.kill("SIGCONT");
      frozen = false;
    },
    stop: () => terminate("SIGTERM"),
    kill: () => terminate("SIGKILL"),
    restart: async () => {
      await terminate("SIGTERM");
      logText += "---- restart ----\n";
      await spawnOnce(ports);
    },
    log: () => logText,
    logMark: () => logText.length,
    waitForLog: (match, w = {}) => {
      const from = w.from ?? 0;
      const test = (line: string) => (typeof match === "string" ? line.includes(match) : match.test(line));
      return waitOn(logWaiters, () => logText.slice(from).split("\n").find(test), {
        ms: w.timeoutMs ?? 10_000,
        error: () => new Error(`mosquitto log has no ${String(match)}:\n${logText.slice(from)}`),
      });
    },
    dispose: async () => {
      await terminate("SIGTERM");
      await rm(dir, { recursive: true, force: true });
    },
  };
  return broker;
}

/** How a command-line client logs in: user/password on the plain or the TLS listener. */
export interface CliAuth {
  username: string;
  password: string;
  tls?: boolean;
}

function connectArgs(b: Mosquitto, a: CliAuth, clientId: string): string[] {
  return [
    "-V",
    "mqttv5",
    "-h",
    b.host,
    "-p",
    String(a.tls ? b.tlsPort : b.port),
    ...(a.tls ? ["--cafile", b.caFile] : []),
    "-u",
    a.username,
    "-P",
    a.password,
    "-i",
    clientId,
  ];
}

let cliSeq = 0;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface SubProcess {
  clientId: string;
  /** Resolves once the broker has sent the SUBACK (read from its log). */
  subscribed: Promise<void>;
  /** Output lines so far, one per message, in the `format` given. */
  lines(): string[];
  /** Resolves when at least n lines have arrived. */
  waitForLines(n: number): Promise<string[]>;
  /** Ends when the process exits (after -C count messages, -W timeout, or stop()). */
  done: Promise<CliResult>;
  stop(): Promise<CliResult>;
}

/**
 * mosquitto_sub as an independent subscriber. `format` is mosquitto_sub's -F (default
 * "%r %q %t %p": retained flag, QoS, topic, payload); `count` is -C, `timeoutS` -W.
 */
export function mosquittoSub(
  b: Mosquitto,
  o: CliAuth & {
    topics: string[];
    qos?: 0 | 1;
    format?: string;
    count?: number;
    timeoutS?: number;
    extra?: string[];
  },
): SubProcess {
  const clientId = `sub-${process.pid}-${++cliSeq}`;
  const from = b.logMark();
  const args = [
    ...connectArgs(b, o, clientId),
    ...o.topics.flatMap((t) => ["-t", t]),
    "-q",
    String(o.qos ?? 1),
    "-F",
    o.format ?? "%r %q %t %p",
    ...(o.count === undefined ? [] : ["-C", String(o.count)]),
    ...(o.timeoutS === undefined ? [] : ["-W", String(o.timeoutS)]),
    ...(o.extra ?? []),
  ];
  const peer = spawnPeer(MOSQUITTO_SUB, args, { stdio: ["ignore", "pipe", "pipe"] });
  const child = peer.child;
  let stdout = "";
  let stderr = "";
  const waiters = new Set<() => void>();
  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", (t: string) => {
    stdout += t;
    for (const w of waiters) w();
  });
  child.stderr?.on("data", (t: string) => {
    stderr += t;
  });
  const done = new Promise<CliResult>((resolve) => {
    child.once("exit", (code) => {
      for (const w of waiters) w();
      resolve({ code, stdout, stderr });
    });
  });
  const lines = () => stdout.split("\n").filter((l) => l.length > 0);
  return {
    clientId,
    subscribed: b.waitForLog(`Sending SUBACK to ${clientId}`, { from }).then(() => undefined),
    lines,
    waitForLines: (n) =>
      waitOn(waiters, () => {
        if (lines().length >= n) return lines();
        if (peer.hasExited())
          throw new Error(`mosquitto_sub ended with ${lines().length} of ${n} lines: ${stderr}`);
        return undefined;
      }),
    done,
    // A client stuck mid-connect has been seen to ignore SIGTERM: never let a test hang on it.
    stop: () => stopPeer(peer).then(() => done),
  };
}

/**
 * mosquitto_rr: publishes `message` to `topic` with an MQTT v5 response topic (and correlation
 * data when given), waits for one reply on the response topic and prints it (-F format, default
 * "%p"). -W bounds the wait (default 10 s).
 */
export function mosquittoRr(
  b: Mosquitto,
  o: CliAuth & {
    topic: string;
    responseTopic: string;
    message: string;
    correlationData?: string;
    format?: string;
    timeoutS?: number;
  },
): Promise<CliResult & { clientId: string }> {
  const clientId = `rr-${process.pid}-${++cliSeq}`;
  const args = [
    ...connectArgs(b, o, clientId),
    "-t",
    o.topic,
    "-e",
    o.responseTopic,
    "-m",
    o.message,
    "-q",
    "1",
    "-F",
    o.format ?? "%p",
    "-W",
    String(o.timeoutS ?? 10),
    ...(o.correlationData === undefined ? [] : ["-D", "publish", "correlation-data", o.correlationData]),
  ];
  const { child } = spawnPeer(MOSQUITTO_RR, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8");
  child.stderr?.setEncoding("utf8");
  child.stdout?.on("data", (t: string) => {
    stdout += t;
  });
  child.stderr?.on("data", (t: string) => {
    stderr += t;
  });
  return new Promise((resolve) => {
    child.once("exit", (code) => {
      resolve({ code, stdout, stderr, clientId });
    });
  });
}
