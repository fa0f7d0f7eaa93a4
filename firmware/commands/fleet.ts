/**
 * `handset fleet list|cmd|config`: the operator's side of issue 11. It is a client of the broker
 * like any other (the broker's ACL decides what it may do), speaking the phones' topics:
 *
 * - list: the retained PREFIX/+/state of every phone, collected until the broker has been quiet
 *   for a moment (retained messages come right after SUBACK, but a cluster may spread them out);
 * - cmd: one request on PREFIX/DEVICE/cmd/NAME with an MQTT v5 response topic of our own and
 *   correlation data, then the replies ("deferred" first for a disruptive command, then the final);
 * - config: the retained desired document PREFIX/DEVICE/config/desired (merged with the one there,
 *   one version up), then the phone's config/reported for that version; with --site SITE or --org
 *   the layer's document (PREFIX/site/SITE/config/desired, PREFIX/org/config/desired) the same way,
 *   then only the reports of the phones named with --wait-for (a layer reaches many phones).
 *
 * Credentials never come from the command line (ps shows it to every user): a password file or
 * HANDSET_MQTT_PASSWORD, or a client certificate. Like the phone, it refuses to connect
 * anonymously unless told so in as many words (--anonymous).
 */
import { readFile } from "node:fs/promises";
import { KindMismatch } from "../config/kinds.ts";
import { OPTIONS, type OptionName } from "../config/options.ts";
import type { Clock, TimerHandle } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import type { Logger } from "../core/logger.ts";
import { hexToken, type Random } from "../core/random.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { createMqttPort } from "../platform/mqtt-connection.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { parseDesired } from "../telemetry/desired-config.ts";
import type {
  MqttConnection,
  MqttCredentials,
  MqttIncoming,
  MqttPort,
  MqttPublishOptions,
} from "../telemetry/mqtt-port.ts";
import { PAYLOAD_VERSION } from "../telemetry/payloads.ts";
import { type ConfigLayer, type FleetTopics, fleetTopics } from "../telemetry/topics.ts";
import { type CommandSpec, parseFlags, seconds, VERBOSE_FLAG, wholeNumber } from "./args.ts";
import {
  checkKeyMatchesCertificate,
  InputError,
  readCertificateFile,
  readKeyFile,
  readTrustFile,
} from "./input-files.ts";
import { logSink, type Output } from "./output.ts";

const DEFAULT_WAIT_S = 5;
const DEFAULT_TIMEOUT_S = 10;
/** How long the broker must be quiet (no retained message) before the retained set is complete. */
const DEFAULT_SETTLE_MS = 1_000;
const CONNECT_TIMEOUT_MS = 10_000;
const KEEPALIVE_S = 30;
const PASSWORD_ENV = "HANDSET_MQTT_PASSWORD";

export const FLEET_SPEC = {
  summary:
    "the fleet over MQTT: list the phones, send one a command, set the desired configuration of one, a site or all",
  synopsis: [
    "list --broker URL [--prefix P] [--wait S] AUTH",
    "cmd DEVICE NAME --broker URL [--args JSON] [--timeout S] AUTH",
    "config DEVICE --broker URL --set KEY=JSON … [--unset KEY …] [--config-version N] [--timeout S] AUTH",
    "config --site SITE|--org --broker URL --set KEY=JSON … [--unset KEY …] [--config-version N] [--wait-for DEVICE …] [--timeout S] AUTH",
  ],
  flags: {
    broker: { type: "string", arg: "URL", help: "the broker: mqtt://HOST:PORT or mqtts://HOST:PORT" },
    prefix: {
      type: "string",
      arg: "P",
      help: 'the phones\' topic prefix (default "handset/v1", mqtt.prefix)',
    },
    ca: { type: "string", arg: "PEM", help: "mqtts: the CA the broker's certificate chains to" },
    servername: {
      type: "string",
      arg: "NAME",
      help: "mqtts: the broker's name, when the URL holds an address",
    },
    username: { type: "string", arg: "U", help: "MQTT user name (the password: --password-file or env)" },
    "password-file": { type: "string", arg: "FILE", help: "a file whose first line is the MQTT password" },
    cert: { type: "string", arg: "PEM", help: "mqtts: a client certificate (with --key)" },
    key: { type: "string", arg: "PEM", help: "mqtts: the client certificate's private key" },
    anonymous: { type: "boolean", help: "connect without credentials (only a broker that allows it)" },
    wait: {
      type: "string",
      arg: "S",
      help: `list: wait at most S seconds for the retained states (default ${DEFAULT_WAIT_S})`,
    },
    args: {
      type: "string",
      arg: "JSON",
      help: 'cmd: the command\'s arguments, a JSON object ({"lines":50})',
    },
    set: {
      type: "string",
      multiple: true,
      arg: "KEY=JSON",
      help: "config: a desired value, e.g. telemetry.intervalS=60 or 'log.level=\"debug\"'",
    },
    unset: {
      type: "string",
      multiple: true,
      arg: "KEY",
      help: "config: take a key out of the desired document",
    },
    "config-version": {
      type: "string",
      arg: "N",
      help: "config: the document's version (default: one above the desired or reported one)",
    },
    site: {
      type: "string",
      arg: "SITE",
      help: "config: the site's document (PREFIX/site/SITE/config/desired) instead of a phone's",
    },
    org: {
      type: "boolean",
      help: "config: the organisation's document (PREFIX/org/config/desired), for every phone",
    },
    "wait-for": {
      type: "string",
      multiple: true,
      arg: "DEVICE",
      help: "config --site/--org: wait for this phone's report of the layer's new version",
    },
    timeout: {
      type: "string",
      arg: "S",
      help: `cmd, config: seconds to wait for the phones' answers (default ${DEFAULT_TIMEOUT_S})`,
    },
    ...VERBOSE_FLAG,
  },
  notes: [
    "AUTH: --username U with --password-file FILE (or the environment variable HANDSET_MQTT_PASSWORD),",
    "or --cert PEM --key PEM over mqtts (--ca PEM for the broker's CA); never a password on the command",
    "line. Without credentials the command refuses to connect unless --anonymous is given.",
    "cmd exits 0 on an ok reply, 1 on refused, error or no reply (fleet-timeout); a disruptive",
    "command (reboot, sign-out, reprovision, update) first answers deferred, then runs when the phone",
    "is idle: --timeout counts again from each reply. config exits 1 when the phone refuses a key.",
    "config --set KEY=null returns a key to the phone's file value (over the org and site layers too);",
    "--unset KEY takes it out of the document written, leaving it to the layers below or the file.",
    "The config document's version flag is --config-version (handset takes --version itself).",
    "config --site SITE or --org writes that layer's document, which every phone of the site or the",
    "organisation takes (below the phone's own document); a key the option table refuses there is a",
    "usage error and nothing is published. It waits only for the phones named with --wait-for, and",
    "exits 1 when one of them refuses a key this run set or reports no such version within --timeout.",
  ],
} as const satisfies CommandSpec;

type Flags = Record<string, string | boolean | string[] | undefined>;

/** What the command is built from; tests replace the broker port, the clock or the environment. */
export interface FleetDeps {
  port: MqttPort;
  clock: Clock;
  random: Random;
  env: Record<string, string | undefined>;
  /** Quiet time after the last retained message before a retained set counts as complete. */
  settleMs: number;
}

const STRING_FLAGS = new Set(
  Object.entries(FLEET_SPEC.flags)
    .filter(([, d]) => d.type === "string")
    .map(([n]) => n),
);

/**
 * The words that are not flags (DEVICE, NAME), wherever they stand: a string flag's value is the
 * next word, and everything after `--` is a word.
 */
function splitWords(argv: string[]): { words: string[]; flagArgs: string[] } {
  const words: string[] = [];
  const flagArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      words.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("-") && a.length > 1) {
      flagArgs.push(a);
      const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
      if (name && STRING_FLAGS.has(name) && i + 1 < argv.length) flagArgs.push(argv[++i]!);
    } else words.push(a);
  }
  return { words, flagArgs };
}

/** A value checked by the configuration table's own kind (the phone checks the same). */
function checked(name: OptionName, value: string, what: string): string {
  const v = OPTIONS[name].kind.check(value);
  if (v instanceof KindMismatch) throw new HandsetError("usage", `${what}: ${v.reason}`);
  return v as string;
}

const COMMAND_NAME = /^[a-z][a-z0-9-]{0,31}$/;
/** The operator's own level under the prefix (will and reply topics); never a phone's id. */
const FLEET_OWN_LEVEL = "_fleet";

// ---------------------------------------------------------------------------------------------
// Connecting

type Auth = MqttCredentials;

function brokerUrl(f: Flags): string {
  const url = typeof f["broker"] === "string" ? f["broker"] : undefined;
  if (!url)
    throw new HandsetError("usage", "--broker URL is required (mqtt://HOST:PORT or mqtts://HOST:PORT)");
  // The phone's own check of a broker list member (mqtt:// or mqtts://, a host).
  const v = OPTIONS["mqtt.brokers"].kind.check([url]);
  if (v instanceof KindMismatch) throw new HandsetError("usage", `--broker ${url}: ${v.reason}`);
  return url;
}

async function readPassword(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "no such file"
        : code === "EACCES" || code === "EPERM"
          ? "permission denied"
          : code === "EISDIR"
            ? "is a directory, not a file"
            : "cannot be read";
    throw new InputError("file-unreadable", "--password-file", path, why);
  }
  const password = text.split("\n")[0]!.replace(/\r$/, "");
  if (password === "")
    throw new InputError("password-empty", "--password-file", path, "its first line is empty (no password)");
  return password;
}

/**
 * The credentials, read and checked before any connection: a missing or broken file is one line
 * naming the flag, and a connection without credentials needs --anonymous.
 */
async function readAuth(f: Flags, url: string, env: FleetDeps["env"]): Promise<Auth> {
  const str = (n: string) => (typeof f[n] === "string" ? (f[n] as string) : undefined);
  const tls = url.startsWith("mqtts:");
  const username = str("username");
  const passwordFile = str("password-file");
  const cert = str("cert");
  const key = str("key");
  if (f["anonymous"] === true && (username || passwordFile || cert || key))
    throw new HandsetError(
      "usage",
      "--anonymous means no credentials: leave out --username, --cert and --key",
    );
  if (passwordFile && !username) throw new HandsetError("usage", "--password-file needs --username");
  if ((cert === undefined) !== (key === undefined))
    throw new HandsetError("usage", "--cert and --key go together (a client certificate and its key)");
  for (const n of ["ca", "cert", "servername"])
    if (!tls && str(n)) throw new HandsetError("usage", `--${n} is for mqtts:// brokers, not ${url}`);
  if (!username && !cert && f["anonymous"] !== true)
    throw new HandsetError(
      "usage",
      `refusing to connect anonymously: give --username with --password-file (or ${PASSWORD_ENV}), or --cert and --key over mqtts; --anonymous only for a broker that allows it`,
    );
  const auth: Auth = {};
  if (username) {
    const fromEnv = env[PASSWORD_ENV];
    const password = passwordFile ? await readPassword(passwordFile) : fromEnv;
    if (password === undefined || password === "")
      throw new HandsetError("usage", `--username needs --password-file FILE or ${PASSWORD_ENV}`);
    auth.username = username;
    auth.password = password;
  }
  const ca = str("ca");
  if (ca) auth.ca = [await readTrustFile(ca, "ca")];
  if (cert && key) {
    auth.cert = await readCertificateFile(cert, "cert");
    const k = await readKeyFile(key, "key");
    checkKeyMatchesCertificate(auth.cert, k.key, { cert, key });
    auth.key = k.pem;
  }
  const servername = str("servername");
  if (servername) auth.servername = servername;
  return auth;
}

/**
 * setInterval on the clock, for the edge's keep-alive pings: the command line is a composition
 * root, but time still comes from a Clock (the layering test keeps the globals in platform/).
 */
function intervalTimer(clock: Clock) {
  let nextId = 0;
  const live = new Map<number, TimerHandle>();
  return {
    set(fn: () => void, ms: number): number {
      const id = ++nextId;
      // An interval re-armed from its own callback must never be 0 ms (it would spin).
      const every = Math.max(100, Number.isFinite(ms) ? ms : 0);
      const arm = () => {
        live.set(
          id,
          clock.setTimer(every, () => {
            if (!live.has(id)) return;
            arm(); // before fn, so that fn may clear it
            fn();
          }),
        );
      };
      arm();
      return id;
    },
    clear(id: number): void {
      live.get(id)?.cancel();
      live.delete(id);
    },
    clearAll(): void {
      for (const t of live.values()) t.cancel();
      live.clear();
    },
  };
}

/** One connection, with one message handler that the steps of a subcommand add watchers to. */
class Session {
  private readonly watchers = new Set<(m: MqttIncoming) => void>();
  private readonly closeWatchers = new Set<(reason: string) => void>();
  closed: string | undefined;

  constructor(
    readonly conn: MqttConnection,
    readonly clock: Clock,
    private readonly stopTimers: () => void,
  ) {
    conn.onMessage((m) => {
      for (const w of [...this.watchers]) w(m);
    });
    conn.onClose((reason) => {
      this.closed = reason;
      for (const w of [...this.closeWatchers]) w(reason);
    });
  }

  /** Watches every message and the connection's end until the returned function is called. */
  watch(onMessage: (m: MqttIncoming) => void, onClose: (reason: string) => void): () => void {
    this.watchers.add(onMessage);
    this.closeWatchers.add(onClose);
    return () => {
      this.watchers.delete(onMessage);
      this.closeWatchers.delete(onClose);
    };
  }

  async subscribe(filters: string[]): Promise<void> {
    const granted = await this.conn.subscribe(filters, 1);
    const refused = filters.filter((_, i) => (granted[i] ?? 128) >= 128);
    if (refused.length > 0)
      throw new HandsetError(
        "fleet-denied",
        `the broker refused the subscription to ${refused.join(", ")} (its ACL does not allow this user)`,
      );
  }

  async close(): Promise<void> {
    try {
      if (this.closed === undefined) await this.conn.close();
    } catch {
      // closing is best effort: the answer has been printed already
    } finally {
      this.stopTimers();
    }
  }
}

/** A publish the broker's ACL refused (PUBACK "not authorized") says so under the fleet's code. */
async function publish(s: Session, topic: string, payload: string, o: MqttPublishOptions): Promise<void> {
  try {
    await s.conn.publish(topic, payload, o);
  } catch (err) {
    if (err instanceof HandsetError && err.code === "mqtt-publish-refused")
      throw new HandsetError(
        "fleet-denied",
        `the broker refused the publish to ${topic} (${err.message}; its ACL does not allow this user)`,
      );
    throw err;
  }
}

const disconnected = (reason: string) =>
  new HandsetError("fleet-disconnected", `the broker closed the connection (${reason})`);

async function connect(f: Flags, d: FleetDeps, port: MqttPort, prefix: string): Promise<Session> {
  const url = brokerUrl(f);
  const auth = await readAuth(f, url, d.env);
  const client = hexToken(d.random, 8);
  const timer = intervalTimer(d.clock);
  const conn = await port.connect({
    url,
    clientId: `handset-fleet-${client}`,
    keepaliveS: KEEPALIVE_S,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
    ...auth,
    // The port wants a will; an operator's CLI has nothing to announce, so it goes to a topic of
    // its own under the operator's part of the tree, never retained.
    will: { topic: `${prefix}/${FLEET_OWN_LEVEL}/${client}/gone`, payload: "{}", qos: 0, retain: false },
    sessionExpiryS: 0,
    timer,
  });
  return new Session(conn, d.clock, () => timer.clearAll());
}

// ---------------------------------------------------------------------------------------------
// Payloads (read tolerantly: phones may run another firmware version than this CLI)

function parseJson(payload: Buffer): unknown {
  try {
    return JSON.parse(payload.toString("utf8"));
  } catch {
    return undefined;
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Collects retained messages on `filters` until none has come for settleMs (counted from SUBACK),
 * or maxMs have passed. `onMessage` sees every message meanwhile, retained or live.
 */
function collectRetained(
  s: Session,
  filters: string[],
  o: { settleMs: number; maxMs: number },
  onMessage: (m: MqttIncoming) => void,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settle: TimerHandle | undefined;
    let subscribed = false;
    let max: TimerHandle | undefined;
    const end = (err?: unknown) => {
      settle?.cancel();
      max?.cancel();
      stop();
      if (err) reject(err);
      else resolve();
    };
    const arm = () => {
      settle?.cancel();
      settle = s.clock.setTimer(o.settleMs, () => end());
    };
    // Watch before subscribing: the retained messages can arrive in the same read as the SUBACK.
    const stop = s.watch(
      (m) => {
        onMessage(m);
        if (m.retain && subscribed) arm();
      },
      (reason) => end(disconnected(reason)),
    );
    s.subscribe(filters).then(
      () => {
        subscribed = true;
        max = s.clock.setTimer(o.maxMs, () => end());
        arm();
      },
      (err) => end(err),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// list

const OFFLINE_STATES = new Set(["lost", "offline"]);

function deviceOfStateTopic(prefix: string, topic: string): string | undefined {
  const head = `${prefix}/`;
  const tail = "/state";
  if (!topic.startsWith(head) || !topic.endsWith(tail)) return undefined;
  const id = topic.slice(head.length, topic.length - tail.length);
  return id !== "" && !id.includes("/") ? id : undefined;
}

/**
 * One phone: with --json its whole state document; as text the fields an operator scans for
 * (nested ones flattened, so that the line stays one line of name=value words).
 */
function phoneEvent(json: boolean, deviceId: string, state: Record<string, unknown>, online: boolean) {
  if (json) {
    // The state's own fields come first, so that none can pass for ours; its ts (when the phone
    // published it) is `since`, as every JSON line's ts is the time it was printed.
    const { ts, ...rest } = state;
    return { ...rest, event: "fleet.phone", deviceId, ...(ts !== undefined ? { since: ts } : {}), online };
  }
  const sub = (k: string) => (isObject(state[k]) ? (state[k] as Record<string, unknown>) : {});
  const fw = sub("firmware");
  const version = typeof fw["version"] === "string" ? fw["version"] : undefined;
  return {
    event: "fleet.phone",
    deviceId,
    state: state["state"],
    online,
    registrar: state["registrar"],
    primary: state["primary"],
    limited: state["limited"] === true ? true : undefined,
    uri: state["uri"],
    firmware: version && typeof fw["slot"] === "string" ? `${version}/${fw["slot"]}` : version,
    uptimeS: state["uptimeS"],
    ip: sub("addresses")["ip"],
    certNotAfter: sub("certificate")["notAfter"],
    birthSeq: state["birthSeq"],
    reason: state["reason"],
    since: state["ts"],
  };
}

async function listCommand(s: Session, out: Output, prefix: string, o: { settleMs: number; maxMs: number }) {
  const phones = new Map<string, Record<string, unknown>>();
  await collectRetained(s, [`${prefix}/+/state`], o, (m) => {
    const id = deviceOfStateTopic(prefix, m.topic);
    if (!id) return;
    // An empty retained message clears the topic: that phone has been taken out of the fleet.
    if (m.payload.length === 0) {
      phones.delete(id);
      return;
    }
    const doc = parseJson(m.payload);
    phones.set(
      id,
      isObject(doc) && typeof doc["state"] === "string"
        ? doc
        : { state: "unreadable", reason: "not a state document" },
    );
  });
  const byState: Record<string, number> = {};
  let online = 0;
  for (const id of [...phones.keys()].sort()) {
    const state = phones.get(id)!;
    const name = String(state["state"]);
    byState[name] = (byState[name] ?? 0) + 1;
    const isOnline = !OFFLINE_STATES.has(name) && name !== "unreadable";
    if (isOnline) online++;
    out.event(phoneEvent(out.json, id, state, isOnline));
  }
  out.event({
    event: "fleet.summary",
    prefix,
    phones: phones.size,
    online,
    offline: phones.size - online,
    byState,
  });
  return 0;
}

// ---------------------------------------------------------------------------------------------
// cmd

type ReplyStatus = "ok" | "deferred" | "refused" | "error";
const STATUSES = new Set<string>(["ok", "deferred", "refused", "error"]);

interface Reply {
  status: ReplyStatus;
  doc: Record<string, unknown>;
}

function readReply(payload: Buffer): Reply | undefined {
  const doc = parseJson(payload);
  if (!isObject(doc) || typeof doc["status"] !== "string" || !STATUSES.has(doc["status"])) return undefined;
  return { status: doc["status"] as ReplyStatus, doc };
}

/** A command request is the JSON object of its arguments (telemetry/commands.ts), {} for none. */
const commandRequest = (args: Record<string, unknown> | undefined): string => JSON.stringify(args ?? {});

function errorText(doc: Record<string, unknown>): string {
  const e = doc["error"];
  if (isObject(e)) {
    const code = typeof e["code"] === "string" ? e["code"] : undefined;
    const message = typeof e["message"] === "string" ? e["message"] : undefined;
    return [code, message].filter(Boolean).join(": ") || "no reason given";
  }
  return typeof e === "string" && e ? e : "no reason given";
}

async function cmdCommand(
  s: Session,
  out: Output,
  d: FleetDeps,
  o: {
    prefix: string;
    device: string;
    topics: FleetTopics;
    name: string;
    args?: Record<string, unknown>;
    timeoutMs: number;
  },
): Promise<number> {
  // Our own reply topic, beside the phones' (an operator account may use PREFIX/#; a phone's may not).
  const replyTopic = `${o.prefix}/${FLEET_OWN_LEVEL}/${hexToken(d.random, 16)}/reply`;
  const correlation = Buffer.from(d.random.bytes(16));
  const topic = o.topics.cmd(o.name);
  const seconds = o.timeoutMs / 1000;

  let timer: TimerHandle | undefined;
  let stop = () => {};
  let deferred = false;
  const final = new Promise<Reply>((resolve, reject) => {
    const end = (r: Reply | Error) => {
      timer?.cancel();
      stop();
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const arm = () => {
      timer?.cancel();
      timer = s.clock.setTimer(o.timeoutMs, () =>
        end(
          new HandsetError(
            "fleet-timeout",
            deferred
              ? `${o.device} deferred ${o.name} until it is idle, and sent no final reply within ${seconds} s`
              : `no reply from ${o.device} to ${o.name} within ${seconds} s (is it online? handset fleet list)`,
          ),
        ),
      );
    };
    stop = s.watch(
      (m) => {
        // Only our own reply: the topic is ours, and the correlation data says which request.
        if (m.topic !== replyTopic || !m.correlationData?.equals(correlation)) return;
        const r = readReply(m.payload);
        if (!r) {
          end(
            new HandsetError(
              "fleet-bad-reply",
              `${o.device} answered ${o.name} with a reply this CLI cannot read`,
            ),
          );
          return;
        }
        out.event({
          event: "fleet.reply",
          deviceId: o.device,
          command: o.name,
          status: r.status,
          ...(r.doc["result"] !== undefined ? { result: r.doc["result"] } : {}),
          ...(r.doc["error"] !== undefined ? { error: r.doc["error"] } : {}),
        });
        if (r.status === "deferred") {
          deferred = true;
          arm(); // the final reply comes when the phone is idle: the wait starts again
        } else end(r);
      },
      (reason) => end(disconnected(reason)),
    );
    arm();
  });
  // A rejection before we await it (a lost connection while subscribing) must not go unhandled.
  final.catch(() => {});
  try {
    await s.subscribe([replyTopic]);
    await publish(s, topic, commandRequest(o.args), {
      qos: 1,
      retain: false,
      responseTopic: replyTopic,
      correlationData: correlation,
      // A command nobody picked up in time is not run later by surprise (a reboot at lunchtime).
      messageExpiryS: Math.max(1, Math.ceil(seconds)),
      contentType: "application/json",
    });
  } catch (err) {
    timer?.cancel();
    stop();
    throw err;
  }
  out.event({ event: "fleet.sent", deviceId: o.device, command: o.name, topic });
  const r = await final;
  if (r.status === "ok") return 0;
  const why = errorText(r.doc);
  if (r.status === "refused")
    throw new HandsetError("fleet-refused", `${o.device} refused ${o.name}: ${why}`);
  throw new HandsetError("fleet-command-failed", `${o.name} failed on ${o.device}: ${why}`);
}

// ---------------------------------------------------------------------------------------------
// config

/** config/reported as payloads.ts writes it, read tolerantly (another firmware version may differ). */
interface Reported {
  version: number;
  /** The version of each layer's desired document the phone has taken in. */
  layers: { org?: number; site?: number; device?: number };
  /** Key → the value now in force. */
  applied: Record<string, unknown>;
  /** Keys waiting for the phone's next idle moment. */
  pending: string[];
  /** Key → why the phone will not take it. */
  refused: Record<string, string>;
  errors?: Record<string, unknown>;
  /** Whether the report names its layers' versions (else `version` is the device's). */
  hasLayers: boolean;
}

function readReported(payload: Buffer): Reported | undefined {
  const doc = parseJson(payload);
  if (!isObject(doc) || typeof doc["version"] !== "number") return undefined;
  const layers = isObject(doc["layers"]) ? doc["layers"] : {};
  const refused: Record<string, string> = {};
  if (isObject(doc["refused"]))
    for (const [k, r] of Object.entries(doc["refused"])) refused[k] = typeof r === "string" ? r : "refused";
  return {
    version: doc["version"],
    layers: Object.fromEntries(
      ["org", "site", "device"].flatMap((l) => (typeof layers[l] === "number" ? [[l, layers[l]]] : [])),
    ),
    applied: isObject(doc["applied"]) ? doc["applied"] : {},
    pending: Array.isArray(doc["pending"]) ? doc["pending"].filter((k) => typeof k === "string") : [],
    refused,
    ...(isObject(doc["errors"]) ? { errors: doc["errors"] } : {}),
    hasLayers: isObject(doc["layers"]),
  };
}

/**
 * The version of the phone's own desired document that a report answers (its `version` is the
 * organisation's or the site's when the phone has no document of its own).
 */
const deviceVersion = (r: Reported): number => (r.hasLayers ? (r.layers.device ?? 0) : r.version);

function readDesired(payload: Buffer): { version: number; config: Record<string, unknown> } | undefined {
  const doc = parseJson(payload);
  if (!isObject(doc) || typeof doc["version"] !== "number") return undefined;
  return { version: doc["version"], config: isObject(doc["config"]) ? { ...doc["config"] } : {} };
}

/** The desired document (PREFIX/DEVICE/config/desired), versioned like every fleet payload. */
function desiredDocument(version: number, config: Record<string, unknown>): string {
  return JSON.stringify({ v: PAYLOAD_VERSION, version, config });
}

const CONFIG_KEY = /^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$/;

function configKey(key: string, flag: string): string {
  if (!CONFIG_KEY.test(key))
    throw new HandsetError("usage", `--${flag} ${key}: a configuration key is a dotted name (log.level)`);
  return key;
}

/** `--set key=JSON`: the value is JSON so that 60 is a number and "60" a string, as in the file. */
function parseSet(text: string): [string, unknown] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new HandsetError("usage", `--set ${text}: expected KEY=JSON-VALUE`);
  const key = configKey(text.slice(0, eq), "set");
  const raw = text.slice(eq + 1);
  try {
    return [key, JSON.parse(raw)];
  } catch {
    throw new HandsetError(
      "usage",
      `--set ${key}: the value must be JSON, got ${raw === "" ? "nothing" : raw} (a string in quotes: ${key}='"${raw}"')`,
    );
  }
}

/**
 * The keys of `sets` that the phone's own check of a desired document (desired-config.ts, over
 * this CLI's copy of the option table) refuses, with its reasons. The same function as the phone's,
 * so that the two cannot drift: null (back to the file's value) passes, a group given as an object
 * is walked key by key, and a key only the file sets is refused as the phone refuses it.
 */
function tableRefusals(sets: Array<[string, unknown]>): Array<[string, string]> {
  const r = parseDesired(JSON.stringify({ version: 0, config: Object.fromEntries(sets) }));
  // Only its size can refuse this document as a whole (its version and shape are ours).
  return r.ok
    ? Object.entries(r.layer.refused)
    : sets.map(([k]): [string, string] => [k, `document ${r.reason}`]);
}

/** The retained document with this run's --unset and --set applied (never both for one key). */
function nextConfig(
  retained: Record<string, unknown> | undefined,
  sets: Array<[string, unknown]>,
  unsets: string[],
): Record<string, unknown> {
  const config: Record<string, unknown> = { ...retained };
  for (const k of unsets) delete config[k];
  for (const [k, v] of sets) config[k] = v;
  return config;
}

/** What a `config` run changes in a desired document, and how long it waits for the answers. */
interface ConfigEdit {
  sets: Array<[string, unknown]>;
  unsets: string[];
  version?: number;
  timeoutMs: number;
  maxWaitMs: number;
}

async function configCommand(
  s: Session,
  out: Output,
  d: FleetDeps,
  o: ConfigEdit & { device: string; topics: FleetTopics },
): Promise<number> {
  const desiredTopic = o.topics.desired;
  const reportedTopic = o.topics.reported;
  let desired: { version: number; config: Record<string, unknown> } | undefined;
  let reported: Reported | undefined;
  let reports = 0;
  let onReported: () => void = () => {};
  // One watcher for the whole exchange: a phone that answers before we wait is not missed.
  const stop = s.watch(
    (m) => {
      if (m.topic === desiredTopic && m.payload.length > 0) desired = readDesired(m.payload) ?? desired;
      if (m.topic === reportedTopic) {
        reported = readReported(m.payload) ?? reported;
        reports++;
        onReported();
      }
    },
    () => onReported(),
  );
  try {
    await collectRetained(
      s,
      [desiredTopic, reportedTopic],
      { settleMs: d.settleMs, maxMs: o.maxWaitMs },
      () => {},
    );
    const current = Math.max(desired?.version ?? 0, reported ? deviceVersion(reported) : 0);
    if (o.version !== undefined && reported && o.version <= deviceVersion(reported))
      throw new HandsetError(
        "usage",
        `--config-version ${o.version} is not above the version ${o.device} reports (${deviceVersion(reported)}): the phone would take it as applied`,
      );
    const version = o.version ?? current + 1;
    const config = nextConfig(desired?.config, o.sets, o.unsets);
    // Only a warning for one phone: it decides, and it may run another firmware version.
    for (const [k, why] of tableRefusals(o.sets))
      out.event({ event: "fleet.warning", deviceId: o.device, key: k, reason: why });
    const reportsBefore = reports;
    await publish(s, desiredTopic, desiredDocument(version, config), {
      qos: 1,
      retain: true,
      contentType: "application/json",
    });
    out.event({
      event: "fleet.config.sent",
      layer: "device",
      deviceId: o.device,
      version,
      config,
      topic: desiredTopic,
    });

    const seconds = o.timeoutMs / 1000;
    const answer = await new Promise<Reported>((resolve, reject) => {
      const timer = s.clock.setTimer(o.timeoutMs, () =>
        reject(
          new HandsetError(
            "fleet-timeout",
            `${o.device} reported no configuration version ${version} within ${seconds} s (the desired document stays retained: the phone applies it when it connects)`,
          ),
        ),
      );
      onReported = () => {
        if (s.closed !== undefined) {
          timer.cancel();
          reject(disconnected(s.closed));
        } else if (reported && deviceVersion(reported) === version) {
          timer.cancel();
          resolve(reported);
        } else if (reported && reports > reportsBefore && typeof reported.errors?.["device"] === "string") {
          // Refused as a whole (the phone keeps its previous document): no report of ours will come.
          timer.cancel();
          reject(
            new HandsetError(
              "fleet-config-refused",
              `${o.device} refused the desired document: ${reported.errors["device"]}`,
            ),
          );
        } else if (reported && deviceVersion(reported) > version) {
          timer.cancel();
          reject(
            new HandsetError(
              "fleet-superseded",
              `${o.device} reports version ${deviceVersion(reported)}, newer than ours (${version}): someone else changed its configuration`,
            ),
          );
        }
      };
      onReported(); // it may have answered already
    });
    out.event({
      event: "fleet.config",
      deviceId: o.device,
      version: deviceVersion(answer),
      layers: answer.layers,
      applied: answer.applied,
      pending: answer.pending,
      refused: answer.refused,
      ...(answer.errors ? { errors: answer.errors } : {}),
    });
    // Only the keys this run set decide the exit code: a refusal the organisation's or the site's
    // layer earned, or one left over in the document from before, is printed but not ours.
    const mine = new Set(o.sets.map(([k]) => k));
    const refused = Object.entries(answer.refused).filter(
      ([k, why]) => mine.has(k) && !/^(org|site) layer: /.test(why),
    );
    if (refused.length > 0)
      throw new HandsetError(
        "fleet-config-refused",
        `${o.device} refused ${refused.map(([k, why]) => `${k} (${why})`).join(", ")}`,
      );
    return 0;
  } finally {
    stop();
  }
}

/** A phone named with --wait-for, and what it has said so far. */
interface Waited {
  device: string;
  reported?: Reported;
  /** config/reported messages seen, and how many of them came before our publish. */
  reports: number;
  before: number;
  outcome?: { ok: true } | { ok: false; code: string; why: string };
}

/** When several phones fail differently, the exit says the worst: a refusal, then a race, then silence. */
const FAILURE_ORDER = ["fleet-config-refused", "fleet-superseded", "fleet-timeout"];

/**
 * `config --site SITE` / `config --org`: the layer's retained document, merged and one version up
 * as a phone's is. Every phone of the layer takes it, so the CLI refuses before publishing what
 * the phones' table would refuse (there is no one phone to decide), and it waits only for the
 * phones it is told to: their config/reported naming the layer's new version in `layers`.
 */
async function layerConfigCommand(
  s: Session,
  out: Output,
  d: FleetDeps,
  o: ConfigEdit & {
    layer: Exclude<ConfigLayer, "device">;
    site?: string;
    topic: string;
    waitFor: Array<{ device: string; reported: string }>;
  },
): Promise<number> {
  const where = o.site !== undefined ? { layer: o.layer, site: o.site } : { layer: o.layer };
  const name = o.site !== undefined ? `site ${o.site}` : "organisation";
  let desired: { version: number; config: Record<string, unknown> } | undefined;
  const phones = new Map<string, Waited>(
    o.waitFor.map((p) => [p.reported, { device: p.device, reports: 0, before: 0 }]),
  );
  let onReport: (p: Waited | undefined) => void = () => {};
  // One watcher from before the subscription: a phone that answers quickly is not missed.
  const stop = s.watch(
    (m) => {
      if (m.topic === o.topic && m.payload.length > 0) desired = readDesired(m.payload) ?? desired;
      const p = phones.get(m.topic);
      if (!p) return;
      p.reported = readReported(m.payload) ?? p.reported;
      p.reports++;
      onReport(p);
    },
    () => onReport(undefined),
  );
  try {
    await collectRetained(
      s,
      [o.topic, ...phones.keys()],
      { settleMs: d.settleMs, maxMs: o.maxWaitMs },
      () => {},
    );
    // Above what the waited phones report for the layer too: a report names a site's version but
    // not the site, so a phone of another site (or one holding a document since cleared) must not
    // already show the version we are about to publish, and pass for having applied it.
    const reportedMax = Math.max(0, ...[...phones.values()].map((p) => p.reported?.layers[o.layer] ?? 0));
    const current = Math.max(desired?.version ?? 0, reportedMax);
    if (o.version !== undefined && o.version <= current)
      throw new HandsetError(
        "usage",
        `--config-version ${o.version} is not above ${current} (the retained ${name} document's version, or the ${o.layer} version a --wait-for phone reports): a phone would seem to have applied it`,
      );
    const version = o.version ?? current + 1;
    const config = nextConfig(desired?.config, o.sets, o.unsets);
    const document = desiredDocument(version, config);
    const whole = parseDesired(document);
    if (!whole.ok)
      throw new HandsetError("usage", `every phone would refuse the ${name} document: ${whole.reason}`);
    // This run's keys passed before connecting: anything refused now was in the retained document.
    for (const [k, why] of Object.entries(whole.layer.refused))
      out.event({ event: "fleet.warning", ...where, key: k, reason: `in the retained document: ${why}` });
    for (const p of phones.values()) p.before = p.reports;
    await publish(s, o.topic, document, { qos: 1, retain: true, contentType: "application/json" });
    out.event({
      event: "fleet.config.sent",
      ...where,
      version,
      config,
      topic: o.topic,
      ...(phones.size > 0 ? { waitFor: [...phones.values()].map((p) => p.device) } : {}),
    });
    if (phones.size === 0) return 0;

    // A key of ours that a phone refused: its table's reason carries our layer's name, or the
    // phone could not apply it. A refusal the phone's own document earned is not ours.
    const mine = (k: string) => o.sets.some(([set]) => k === set || k.startsWith(`${set}.`));
    const ours = (why: string) => why.startsWith(`${o.layer} layer: `) || why.startsWith("could not apply: ");
    const seconds = o.timeoutMs / 1000;
    await new Promise<void>((resolve, reject) => {
      const open = () => [...phones.values()].filter((p) => p.outcome === undefined);
      const timer = s.clock.setTimer(o.timeoutMs, () => {
        for (const p of open())
          p.outcome = {
            ok: false,
            code: "fleet-timeout",
            why: `reported no ${name} version ${version} within ${seconds} s`,
          };
        resolve();
      });
      const settle = (p: Waited, outcome: NonNullable<Waited["outcome"]>) => {
        p.outcome = outcome;
        if (open().length > 0) return;
        timer.cancel();
        resolve();
      };
      const check = (p: Waited) => {
        const r = p.reported;
        if (p.outcome !== undefined || r === undefined) return;
        const v = r.layers[o.layer];
        if (v === version) {
          out.event({
            event: "fleet.config",
            deviceId: p.device,
            ...where,
            version: v,
            layers: r.layers,
            applied: r.applied,
            pending: r.pending,
            refused: r.refused,
            ...(r.errors ? { errors: r.errors } : {}),
          });
          const refused = Object.entries(r.refused).filter(([k, why]) => mine(k) && ours(why));
          settle(
            p,
            refused.length === 0
              ? { ok: true }
              : {
                  ok: false,
                  code: "fleet-config-refused",
                  why: `refused ${refused.map(([k, why]) => `${k} (${why})`).join(", ")}`,
                },
          );
        } else if (p.reports > p.before && typeof r.errors?.[o.layer] === "string") {
          // Refused as a whole (the phone keeps the layer's previous document): no report of ours comes.
          settle(p, {
            ok: false,
            code: "fleet-config-refused",
            why: `refused the ${name} document: ${r.errors[o.layer]}`,
          });
        } else if (v !== undefined && v > version) {
          settle(p, {
            ok: false,
            code: "fleet-superseded",
            why: `reports ${o.layer} version ${v}, newer than ours (${version}): the document changed meanwhile${o.site !== undefined ? ` (or the phone is not in site ${o.site})` : ""}`,
          });
        }
      };
      onReport = (p) => {
        if (s.closed !== undefined) {
          timer.cancel();
          reject(disconnected(s.closed));
        } else if (p) check(p);
      };
      for (const p of phones.values()) check(p); // a retained report may name the version already
    });
    const failed = [...phones.values()].flatMap((p) =>
      p.outcome?.ok === false ? [{ device: p.device, ...p.outcome }] : [],
    );
    if (failed.length === 0) return 0;
    const codes = failed.map((f) => f.code);
    const code = FAILURE_ORDER.find((c) => codes.includes(c)) ?? codes[0]!;
    const hint = codes.includes("fleet-timeout")
      ? ` (the document stays retained: a phone applies it when it connects${o.site !== undefined ? `; only phones with mqtt.site ${o.site} take it` : ""})`
      : "";
    throw new HandsetError(code, `${failed.map((f) => `${f.device} ${f.why}`).join("; ")}${hint}`);
  } finally {
    stop();
  }
}

// ---------------------------------------------------------------------------------------------
// The command

function defaultDeps(deps: Partial<FleetDeps>, logger: Logger): FleetDeps {
  return {
    port: deps.port ?? createMqttPort({ logger }),
    clock: deps.clock ?? new SystemClock(),
    random: deps.random ?? new CryptoRandom(),
    env: deps.env ?? process.env,
    settleMs: deps.settleMs ?? DEFAULT_SETTLE_MS,
  };
}

const list = (f: Flags, name: string): string[] => {
  const v = f[name];
  return Array.isArray(v) ? v : typeof v === "string" ? [v] : [];
};

export async function fleetCommand(
  argv: string[],
  out: Output,
  deps: Partial<FleetDeps> = {},
): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "list" && sub !== "cmd" && sub !== "config")
    throw new HandsetError("usage", 'fleet needs "list", "cmd" or "config" (handset fleet --help)');
  // Said plainly, rather than node's "unknown option": a password on the command line is the
  // thing this command is built to avoid.
  if (rest.some((a) => a === "--password" || a.startsWith("--password=")))
    throw new HandsetError(
      "usage",
      `--password is not taken (a command line is visible in ps): use --password-file FILE or ${PASSWORD_ENV}`,
    );
  const { words, flagArgs } = splitWords(rest);
  const f = parseFlags(flagArgs, FLEET_SPEC.flags) as Flags;
  const prefix =
    typeof f["prefix"] === "string" ? checked("mqtt.prefix", f["prefix"], "--prefix") : "handset/v1";
  const waitMs = seconds(f, "wait", DEFAULT_WAIT_S, 300) * 1000;
  const timeoutMs = seconds(f, "timeout", DEFAULT_TIMEOUT_S, 86_400) * 1000;
  const site = typeof f["site"] === "string" ? f["site"] : undefined;
  const org = f["org"] === true;
  const waitFor = list(f, "wait-for");
  if (sub !== "config" && (site !== undefined || org || waitFor.length > 0))
    throw new HandsetError("usage", "--site, --org and --wait-for are for fleet config");
  const layer: Exclude<ConfigLayer, "device"> | undefined = org
    ? "org"
    : site !== undefined
      ? "site"
      : undefined;
  // config names exactly one document: a phone's (DEVICE), a site's or the organisation's.
  if (sub === "config" && (words.length > 0 ? 1 : 0) + (site !== undefined ? 1 : 0) + (org ? 1 : 0) !== 1)
    throw new HandsetError(
      "usage",
      "fleet config needs exactly one of DEVICE, --site SITE or --org (handset fleet config phone-1 --set …)",
    );
  if (sub === "config" && layer === undefined && waitFor.length > 0)
    throw new HandsetError(
      "usage",
      "--wait-for is for --site and --org (fleet config DEVICE waits for that phone's report)",
    );
  const want = sub === "list" ? 0 : sub === "cmd" ? 2 : layer ? 0 : 1;
  if (words.length !== want)
    throw new HandsetError(
      "usage",
      sub === "list"
        ? `fleet list takes no words, got "${words.join(" ")}"`
        : sub === "cmd"
          ? "fleet cmd needs DEVICE and NAME (handset fleet cmd phone-1 ping)"
          : "fleet config takes one DEVICE (handset fleet config phone-1 --set …)",
    );
  const device = want > 0 ? checked("mqtt.deviceId", words[0]!, "DEVICE") : "";
  let deviceTopics: FleetTopics | undefined;
  if (want > 0)
    try {
      deviceTopics = fleetTopics(prefix, device);
    } catch (err) {
      throw new HandsetError("usage", `DEVICE ${device}: ${(err as Error).message}`);
    }

  // Everything a subcommand needs is checked before connecting.
  let run: (s: Session, d: FleetDeps) => Promise<number>;
  if (sub === "list") {
    run = (s, d) => listCommand(s, out, prefix, { settleMs: d.settleMs, maxMs: waitMs });
  } else if (sub === "cmd") {
    const name = words[1]!;
    if (!COMMAND_NAME.test(name))
      throw new HandsetError(
        "usage",
        `NAME ${JSON.stringify(name)}: a command name is lower-case (ping, sign-out)`,
      );
    let args: Record<string, unknown> | undefined;
    if (typeof f["args"] === "string") {
      let parsed: unknown;
      try {
        parsed = JSON.parse(f["args"]);
      } catch {
        throw new HandsetError("usage", "--args must be a JSON object, and this is not JSON");
      }
      if (!isObject(parsed)) throw new HandsetError("usage", "--args must be a JSON object ({…})");
      args = parsed;
    }
    run = (s, d) =>
      cmdCommand(s, out, d, {
        prefix,
        device,
        topics: deviceTopics!,
        name,
        ...(args ? { args } : {}),
        timeoutMs,
      });
  } else {
    const sets = list(f, "set").map(parseSet);
    const unsets = list(f, "unset").map((k) => configKey(k, "unset"));
    if (sets.length === 0 && unsets.length === 0)
      throw new HandsetError("usage", "fleet config needs --set KEY=JSON or --unset KEY");
    const both = sets.map(([k]) => k).find((k) => unsets.includes(k));
    if (both) throw new HandsetError("usage", `${both} is both --set and --unset`);
    const version =
      f["config-version"] !== undefined
        ? wholeNumber(f, "config-version", 1, { min: 1, max: Number.MAX_SAFE_INTEGER })
        : undefined;
    if (layer) {
      // A layer's document reaches every phone of it: what their table refuses is not sent at all.
      const refused = tableRefusals(sets);
      if (refused.length > 0)
        throw new HandsetError(
          "usage",
          `the phones refuse ${refused.map(([k, why]) => `--set ${k} (${why})`).join(", ")}: nothing published`,
        );
      const layerSite = site !== undefined ? checked("mqtt.site", site, "--site") : undefined;
      const topicsOf = (id: string, what: string) => {
        try {
          return fleetTopics(prefix, id, layerSite);
        } catch (err) {
          throw new HandsetError("usage", `${what}: ${(err as Error).message}`);
        }
      };
      // topics.ts spells the tree; the layer's topic is the same for every phone of it.
      const anyPhone = topicsOf(FLEET_OWN_LEVEL, layerSite !== undefined ? `--site ${layerSite}` : "--org");
      const topic = layer === "site" ? anyPhone.siteDesired! : anyPhone.orgDesired;
      const waited = [...new Set(waitFor)].map((w) => {
        const id = checked("mqtt.deviceId", w, "--wait-for");
        return { device: id, reported: topicsOf(id, `--wait-for ${id}`).reported };
      });
      run = (s, d) =>
        layerConfigCommand(s, out, d, {
          layer,
          ...(layerSite !== undefined ? { site: layerSite } : {}),
          topic,
          waitFor: waited,
          sets,
          unsets,
          ...(version !== undefined ? { version } : {}),
          timeoutMs,
          maxWaitMs: waitMs,
        });
    } else
      run = (s, d) =>
        configCommand(s, out, d, {
          device,
          topics: deviceTopics!,
          sets,
          unsets,
          ...(version !== undefined ? { version } : {}),
          timeoutMs,
          maxWaitMs: waitMs,
        });
  }

  const d = defaultDeps(deps, logSink(out, f["verbose"] === true));
  const session = await connect(f, d, d.port, prefix);
  try {
    return await run(session, d);
  } finally {
    await session.close();
  }
}
