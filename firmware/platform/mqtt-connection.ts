/**
 * The MQTT edge (telemetry/mqtt-port.ts) over MQTT.js 5, one MqttClient per connection, with
 * everything MQTT.js would decide for us switched off: no reconnect (reconnectPeriod 0), no
 * resubscribe, no offline queue (a publish while not connected rejects at once, mqtt-offline),
 * no topic aliases either way, no SOCKS proxy from MQTTJS_SOCKS_PROXY, no debug logging (the
 * `debug` module would print the CONNECT packet, password included, under DEBUG=mqttjs*).
 *
 * We build the socket ourselves (MqttClient's stream builder) rather than through mqtt.connect():
 * so that the broker's certificate is checked our way (below), a cert/key on an mqtt: URL does not
 * quietly turn it into mqtts:, the TLS material is checked before anything is opened, and a
 * failure is named from what the socket saw (TCP connect, TLS handshake, CONNACK).
 *
 * The broker's certificate is checked at the phone's time (options.clock: SNTP-corrected), not the
 * OS's (a Pi has no RTC): OpenSSL cannot be given a verification time, so it runs with
 * rejectUnauthorized off and, on secureConnect, the chain, purpose, name and validity are verified
 * at clock.now() (checkPeerAtClock, as the SIP and HTTPS edges do), against the given CA or else
 * Node's bundled roots. OpenSSL's own verdict must still be clean or a time code only, so this is
 * never less strict than OpenSSL. A chain good but for time while the clock is not yet set is
 * `clock-invalid`. MQTT.js writes CONNECT (password included) the moment it has its stream, so on
 * mqtts: it gets a HeldStream that passes no byte either way until that check has passed.
 *
 * Keep-alive pings run on the injected timer (MQTT.js's `timerVariant` accepts a {set, clear}
 * object): its KeepaliveManager ticks every keep-alive/2, sends PINGREQ on the 2nd tick and
 * closes the connection itself on the 3rd (1.5 × keep-alive without an ack), and starts over on
 * every ack received (reschedulePings). Every timer it asks for is recorded here and cleared when
 * the connection ends, and ids handed to MQTT.js are never 0 (it tests `if (timerId)`).
 *
 * MQTT.js traps met on the way, each handled below:
 * - a QoS 1 publish waiting for its PUBACK is NOT failed when the broker closes the socket
 *   (MQTT.js fails only subscribes then, and keeps the publish for a resend on a reconnect that
 *   never comes): we reject what we track ourselves, as mqtt-offline;
 * - a v5 SUBACK failure code fails the whole subscribe call; the codes are in the SUBACK packet
 *   (third callback argument), which is what we return, failures as 128;
 * - end(false) waits for every outstanding PUBACK before sending DISCONNECT, forever if the broker
 *   went quiet: our clean close is bounded by connectTimeoutMs, then the socket is destroyed;
 * - an exception in an event handler goes up through MQTT.js's parser into the socket and ends
 *   the process: our callers' handlers run in a try/catch;
 * - 'error' without a listener throws: our listener stays for the client's whole life.
 */
import { isIP, connect as netConnect, type Socket } from "node:net";
import { Duplex } from "node:stream";
import {
  checkServerIdentity,
  createSecureContext,
  rootCertificates,
  type SecureContext,
  type TLSSocket,
  connect as tlsConnect,
} from "node:tls";
import type { IClientOptions, IPublishPacket, MqttClient, Packet } from "mqtt";
import { HandsetError } from "../core/errors.ts";
import { type Logger, silentLogger } from "../core/logger.ts";
import { type CertClock, opensslVerdictAcceptable } from "../sip/tls-dsk/cert-verify.ts";
import type {
  MqttConnection,
  MqttConnectOptions,
  MqttIncoming,
  MqttPort,
  MqttPublishOptions,
} from "../telemetry/mqtt-port.ts";
import { checkPeerAtClock } from "./tls-flow.ts";

/** What connect() resolves with: the port's connection and the keep-alive actually in force. */
export interface MqttEdgeConnection extends MqttConnection {
  /**
   * Seconds between pings as MQTT.js runs them: the broker's Server Keep Alive from CONNACK when
   * it sent one (MQTT v5 §3.2.2.3.14, the client must use it), else ours. The agent's watchdog
   * should be 1.5 × this, not 1.5 × the configured value.
   */
  readonly keepaliveS: number;
}

export interface MqttEdgePort extends MqttPort {
  connect(o: MqttConnectOptions): Promise<MqttEdgeConnection>;
}

export interface MqttEdgeOptions {
  logger?: Logger;
  /**
   * The phone's clock, which the broker's certificate validity is checked against (its isSet()
   * tells clock-invalid from a certificate out of its time). Default: the OS clock.
   */
  clock?: CertClock;
}

const OS_CLOCK: CertClock = { now: () => Date.now() };

const MAX_U16 = 0xffff;
const MAX_U32 = 0xffff_ffff;
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Socket errors before the TCP connection exists: nobody to talk to at that address. */
const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EAI_FAIL",
  "EAI_NONAME",
  "EADDRNOTAVAIL",
  "ENETDOWN",
  "EHOSTDOWN",
]);

const UNTRUSTED_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_REJECTED",
  "INVALID_CA",
]);

/** CONNACK codes that mean "not these credentials": v5 0x86, 0x87, 0x8C; v3.1.1 4, 5. */
const AUTH_CONNACK = new Set([0x86, 0x87, 0x8c, 4, 5]);

const CONNACK_TEXT: Record<number, string> = {
  1: "unacceptable protocol version",
  2: "identifier rejected",
  3: "server unavailable",
  4: "bad user name or password",
  5: "not authorized",
  128: "unspecified error",
  129: "malformed packet",
  130: "protocol error",
  131: "implementation specific error",
  132: "unsupported protocol version",
  133: "client identifier not valid",
  134: "bad user name or password",
  135: "not authorized",
  136: "server unavailable",
  137: "server busy",
  138: "banned",
  140: "bad authentication method",
  144: "topic name invalid",
  149: "packet too large",
  151: "quota exceeded",
  153: "payload format invalid",
  154: "retain not supported",
  155: "QoS not supported",
  156: "use another server",
  157: "server moved",
  159: "connection rate exceeded",
};

function hex(rc: number): string {
  return `0x${rc.toString(16).padStart(2, "0")}`;
}

function reasonText(rc: number): string {
  return `${CONNACK_TEXT[rc] ?? "reason"} (${hex(rc)})`;
}

function optionsError(message: string): HandsetError {
  return new HandsetError("mqtt-options", message);
}

function offline(why: string): HandsetError {
  return new HandsetError("mqtt-offline", `MQTT not connected: ${why}`);
}

function isInt(n: unknown, min: number, max: number): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= min && n <= max;
}

interface Target {
  secure: boolean;
  host: string;
  port: number;
  where: string;
}

function parseTarget(url: string): Target {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw optionsError("MQTT broker URL is not a URL");
  }
  if (u.protocol !== "mqtt:" && u.protocol !== "mqtts:")
    throw optionsError(`MQTT broker URL must be mqtt: or mqtts:, not ${u.protocol}`);
  // Credentials in a URL end up in logs and error messages: they go in username/password.
  if (u.username !== "" || u.password !== "")
    throw optionsError("MQTT broker URL must not hold credentials (use username/password)");
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw optionsError("MQTT broker URL has no host");
  const secure = u.protocol === "mqtts:";
  const port = u.port === "" ? (secure ? 8883 : 1883) : Number(u.port);
  return { secure, host, port, where: `${u.protocol}//${u.host}` };
}

function checkOptions(o: MqttConnectOptions): void {
  if (typeof o.clientId !== "string" || Buffer.byteLength(o.clientId) > MAX_U16)
    throw optionsError("MQTT client id must be a string of at most 65535 bytes");
  if (!isInt(o.keepaliveS, 0, MAX_U16)) throw optionsError("MQTT keep-alive must be 0…65535 s");
  if (!isInt(o.connectTimeoutMs, 1, MAX_TIMER_MS)) throw optionsError("MQTT connect timeout out of range");
  if (!isInt(o.sessionExpiryS, 0, MAX_U32)) throw optionsError("MQTT session expiry must be 0…2³²−1 s");
  if (o.will.qos !== 0 && o.will.qos !== 1) throw optionsError("MQTT will QoS must be 0 or 1");
  if (typeof o.timer?.set !== "function" || typeof o.timer?.clear !== "function")
    throw optionsError("MQTT keep-alive timer missing");
}

/** Names a TLS failure by its OpenSSL/Node code; never the certificate itself. */
function tlsError(code: string, t: Target, servername: string): HandsetError {
  const why = UNTRUSTED_CODES.has(code)
    ? "certificate not issued by a trusted CA"
    : code === "ERR_TLS_CERT_ALTNAME_INVALID" || code === "HOSTNAME_MISMATCH"
      ? `certificate is not for ${servername}`
      : code === "CERT_HAS_EXPIRED"
        ? "certificate expired"
        : code === "CERT_NOT_YET_VALID"
          ? "certificate not yet valid"
          : /CERTIFICATE_REQUIRED/.test(code)
            ? "broker requires a client certificate"
            : /BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|CERTIFICATE_EXPIRED/.test(
                  code,
                )
              ? "broker refused our client certificate"
              : code === "ECONNRESET" || code === "EPIPE" || code === ""
                ? "connection closed during the TLS handshake"
                : "TLS handshake failed";
  return new HandsetError("mqtt-tls", `MQTT broker ${t.where}: ${why}${code ? ` (${code})` : ""}`);
}

type PeerProblem = NonNullable<ReturnType<typeof checkPeerAtClock>>;

/**
 * Names a failed check of the broker's certificate. OpenSSL's own objection (anything but time)
 * is named by its code, as before; what remains is our verdict at the phone's time: the subject
 * and validity dates, never the certificate itself.
 */
function certError(p: PeerProblem, socket: TLSSocket, t: Target, name: string): HandsetError {
  const openssl =
    p.opensslCode ??
    (opensslVerdictAcceptable(socket.authorized, socket.authorizationError)
      ? undefined
      : String(socket.authorizationError));
  if (openssl !== undefined) return tlsError(openssl, t, name);
  if (p.clockInvalid)
    return new HandsetError(
      "clock-invalid",
      `Time not set: MQTT broker ${t.where} certificate cannot be checked yet (${p.message})`,
    );
  const why =
    p.kind === "time"
      ? `certificate outside its validity at the phone's time: ${p.message}`
      : p.kind === "name"
        ? `certificate is not for ${name}`
        : p.kind === "usage"
          ? `certificate is not for a TLS server: ${p.message}`
          : `certificate not issued by a trusted CA: ${p.message}`;
  return new HandsetError("mqtt-tls", `MQTT broker ${t.where}: ${why}`);
}

/**
 * What MQTT.js gets as its stream on mqtts:, over the TLS socket. MQTT.js writes CONNECT (the
 * password in it) as soon as its stream builder returns, and a TLS socket sends what was written
 * as soon as its handshake is done, before a secureConnect listener could object. So writes are
 * held here and the broker's bytes stay unread until open(), called once the certificate has
 * passed; a failed check destroys the socket and nothing held is ever written.
 *
 * Held writes go out as one write, as do MQTT.js's corked ones later: a packet in several TLS
 * records can meet a broker that already closed (TLS 1.3 refuses our client certificate after our
 * Finished), and the reset on the 2nd record would hide the broker's alert naming the cause.
 */
class HeldStream extends Duplex {
  private isOpen = false;
  private held: Buffer[] = [];

  constructor(private readonly inner: TLSSocket) {
    super({ allowHalfOpen: false });
    inner.on("end", () => this.push(null));
    inner.on("error", (err) => this.destroy(err));
    inner.on("close", () => this.destroy());
  }

  open(): void {
    if (this.isOpen || this.destroyed) return;
    this.isOpen = true;
    this.inner.on("data", (chunk: Buffer) => {
      if (!this.push(chunk)) this.inner.pause();
    });
    const held = this.held;
    this.held = [];
    if (held.length > 0) this.inner.write(Buffer.concat(held));
  }

  override _read(): void {
    if (this.isOpen) this.inner.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.send(chunk, done);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    this.send(Buffer.concat(chunks.map((c) => c.chunk)), done);
  }

  private send(bytes: Buffer, done: (err?: Error | null) => void): void {
    if (this.isOpen) this.inner.write(bytes, done);
    else {
      // Before the check only MQTT.js's CONNECT comes (publish waits for "open"): a few hundred bytes.
      this.held.push(bytes);
      done();
    }
  }

  override _final(done: (err?: Error | null) => void): void {
    if (!this.isOpen) {
      this.inner.destroy();
      done();
    } else this.inner.end(() => done());
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.held = [];
    this.inner.destroy();
    done(err);
  }
}

/** The injected interval timer as MQTT.js's KeepaliveManager wants it, with a ledger. */
class TimerLedger {
  private seq = 0;
  private readonly live = new Map<number, number>();

  constructor(
    private readonly timer: MqttConnectOptions["timer"],
    private readonly log: Logger,
  ) {}

  readonly set = (fn: () => void, ms?: number): number => {
    const key = ++this.seq;
    const id = this.timer.set(() => {
      if (!this.live.has(key)) return;
      try {
        fn();
      } catch (err) {
        this.log.warn("keep-alive tick failed", { error: err instanceof Error ? err.message : String(err) });
      }
    }, ms ?? 0);
    this.live.set(key, id);
    return key;
  };

  readonly clear = (key: number): void => {
    const id = this.live.get(key);
    if (id === undefined) return;
    this.live.delete(key);
    this.timer.clear(id);
  };

  clearAll(): void {
    for (const key of [...this.live.keys()]) this.clear(key);
  }
}

type State = "connecting" | "open" | "closing" | "closed";

interface Pending {
  fail(err: HandsetError): void;
}

/**
 * MQTT.js is loaded on the first connect, not at process start: `handset register`, `config` or a
 * phone without a broker never pay for evaluating it (the bundle inlines it; esbuild defers a
 * dynamic import's module body until it is called).
 */
let mqttModule: Promise<typeof import("mqtt")> | undefined;
const loadMqtt = () => (mqttModule ??= import("mqtt"));

export function createMqttPort(o: MqttEdgeOptions = {}): MqttEdgePort {
  const log = (o.logger ?? silentLogger).child("mqtt");
  const clock = o.clock ?? OS_CLOCK;
  return {
    connect: (opts) => {
      let target: Target;
      try {
        checkOptions(opts);
        target = parseTarget(opts.url);
      } catch (err) {
        return Promise.reject(err);
      }
      return loadMqtt().then((m) => openConnection(opts, target, log, clock, m.MqttClient));
    },
  };
}

function openConnection(
  opts: MqttConnectOptions,
  t: Target,
  log: Logger,
  clock: CertClock,
  Client: typeof MqttClient,
): Promise<MqttEdgeConnection> {
  // SNI carries names only (Node warns on an address); an address is then checked against IP SANs.
  const named = opts.servername ?? t.host;
  const servername = isIP(named) === 0 ? named : undefined;
  let secureContext: SecureContext | undefined;
  if (t.secure) {
    if ((opts.cert === undefined) !== (opts.key === undefined))
      throw optionsError("MQTT client certificate and key go together");
    try {
      secureContext = createSecureContext({
        ...(opts.ca && opts.ca.length > 0 ? { ca: opts.ca } : {}),
        ...(opts.cert !== undefined ? { cert: opts.cert, key: opts.key } : {}),
      });
    } catch (err) {
      const code = (err as { code?: string }).code ?? "";
      throw new HandsetError("mqtt-tls", `MQTT TLS material unusable${code ? ` (${code})` : ""}`);
    }
  }

  const timers = new TimerLedger(opts.timer, log);
  let state: State = "connecting";
  let socket: Socket | undefined;
  let tcpConnected = false;
  let tlsDone = false;
  /** The first thing that went wrong while connecting: what connect() rejects with. */
  let failure: HandsetError | undefined;
  /** Why an open connection ended, as the broker or the socket told us. */
  let endReason: string | undefined;
  let keepaliveS = opts.keepaliveS;
  const pending = new Set<Pending>();
  let messageHandler: ((m: MqttIncoming) => void) | undefined;
  let packetHandler: (() => void) | undefined;
  let closeHandler: ((reason: string) => void) | undefined;
  let closedReason: string | undefined;
  let closeFired = false;
  let cleanCloseTimer: ReturnType<typeof setTimeout> | undefined;
  const closeWaiters: Array<() => void> = [];

  const guarded = (what: string, fn: () => void): void => {
    try {
      fn();
    } catch (err) {
      log.error(`${what} handler threw`, { error: err instanceof Error ? err.message : String(err) });
    }
  };

  const fail = (err: HandsetError): void => {
    if (state === "connecting" && failure === undefined) failure = err;
  };

  const socketError = (err: Error & { code?: string }): void => {
    const code = typeof err.code === "string" ? err.code : "";
    if (!tcpConnected && (UNREACHABLE_CODES.has(code) || !t.secure))
      fail(
        new HandsetError("mqtt-unreachable", `MQTT broker ${t.where} unreachable${code ? ` (${code})` : ""}`),
      );
    // TLS 1.3: the broker judges our certificate after our side finished, so its alert
    // (ERR_SSL_TLSV13_ALERT_…) comes after secureConnect.
    else if (t.secure && (!tlsDone || code.startsWith("ERR_SSL_")))
      fail(tlsError(code, t, servername ?? t.host));
    else
      fail(
        new HandsetError(
          "mqtt-refused",
          `MQTT broker ${t.where} closed the connection before CONNACK (${code})`,
        ),
      );
    endReason ??= `socket error${code ? ` ${code}` : ""}`;
  };

  const buildStream = (): Duplex => {
    if (!t.secure) {
      const s = netConnect({ host: t.host, port: t.port });
      s.once("connect", () => {
        tcpConnected = true;
      });
      s.on("error", socketError);
      socket = s;
      return s;
    }
    const s = tlsConnect({
      host: t.host,
      port: t.port,
      ...(servername !== undefined ? { servername } : {}),
      secureContext,
      // Verified on secureConnect at the phone's time; OpenSSL's verdict still counts (bar time).
      rejectUnauthorized: false,
      checkServerIdentity: (_host, cert) => checkServerIdentity(named, cert),
    });
    s.once("connect", () => {
      tcpConnected = true;
    });
    s.on("error", socketError);
    socket = s;
    const held = new HeldStream(s);
    s.once("secureConnect", () => {
      tlsDone = true;
      let refusal: HandsetError | undefined;
      try {
        // Without a CA of its own the broker is checked against Node's bundled roots, which a
        // context without `ca` starts from (parsed per check: some 140 certificates).
        const roots = opts.ca && opts.ca.length > 0 ? opts.ca : [...rootCertificates];
        const problem = checkPeerAtClock(s, { ca: roots, clock, name: named });
        if (problem) refusal = certError(problem, s, t, named);
      } catch (err) {
        // A throw here would go up through the socket and end the process.
        refusal = new HandsetError(
          "mqtt-tls",
          `MQTT broker ${t.where}: certificate check failed (${err instanceof Error ? err.message : String(err)})`,
        );
      }
      if (refusal) {
        fail(refusal);
        s.destroy();
        return;
      }
      held.open();
    });
    return held;
  };

  const clientOptions: IClientOptions = {
    protocolVersion: 5,
    clientId: opts.clientId,
    clean: true,
    keepalive: opts.keepaliveS,
    connectTimeout: opts.connectTimeoutMs,
    reconnectPeriod: 0,
    reconnectOnConnackError: false,
    resubscribe: false,
    queueQoSZero: false,
    autoUseTopicAlias: false,
    autoAssignTopicAlias: false,
    reschedulePings: true,
    manualConnect: true,
    timerVariant: { set: timers.set, clear: timers.clear },
    properties: { sessionExpiryInterval: opts.sessionExpiryS },
    will: {
      topic: opts.will.topic,
      payload: Buffer.from(opts.will.payload),
      qos: opts.will.qos,
      retain: opts.will.retain,
    },
    log: () => {},
    ...(opts.username !== undefined ? { username: opts.username } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
  };
  const client = new Client(buildStream, clientOptions);

  return new Promise<MqttEdgeConnection>((resolve, reject) => {
    // Stays for the client's whole life: MQTT.js emits 'error' late (after end(), on a parse
    // error, on a keep-alive timeout) and an EventEmitter without a listener would throw.
    client.on("error", (err: Error & { code?: unknown }) => {
      if (err.message === "connack timeout")
        fail(
          new HandsetError(
            "mqtt-timeout",
            `MQTT broker ${t.where}: no CONNACK within ${opts.connectTimeoutMs} ms`,
          ),
        );
      // Socket errors are ours already (the socket's own listener); a refusing CONNACK too.
      else if (typeof err.code === "string") socketError(err as Error & { code: string });
      else if (!/^Connection refused/.test(err.message))
        fail(new HandsetError("mqtt-refused", `MQTT broker ${t.where}: ${err.message}`));
      if (err.message === "Keepalive timeout")
        endReason ??= "keep-alive timeout (no answer within 1.5 × keep-alive)";
      else endReason ??= err.message;
      log.debug("mqtt client error", { where: t.where, error: err.message });
    });

    client.on("packetreceive", (packet: Packet) => {
      if (packet.cmd === "connack") {
        const rc = packet.reasonCode ?? packet.returnCode ?? 0;
        if (rc !== 0)
          fail(
            new HandsetError(
              AUTH_CONNACK.has(rc) ? "mqtt-auth" : "mqtt-refused",
              `MQTT broker ${t.where} refused the connection: ${reasonText(rc)}`,
            ),
          );
        const serverKeepAlive = packet.properties?.serverKeepAlive;
        if (rc === 0 && typeof serverKeepAlive === "number" && serverKeepAlive > 0)
          keepaliveS = serverKeepAlive;
        return;
      }
      if (packet.cmd === "disconnect") {
        const rc = packet.reasonCode ?? 0;
        endReason ??= `broker sent DISCONNECT: ${reasonText(rc)}`;
      }
      if (state === "open" && packetHandler) guarded("onPacket", packetHandler);
    });

    client.on("message", (topic: string, payload: Buffer, packet: IPublishPacket) => {
      if (state !== "open") return;
      if (!messageHandler) {
        log.debug("message dropped: no handler yet", { topic });
        return;
      }
      const m: MqttIncoming = { topic, payload, retain: packet.retain };
      const props = packet.properties;
      if (props?.responseTopic !== undefined) m.responseTopic = props.responseTopic;
      if (props?.correlationData !== undefined) m.correlationData = Buffer.from(props.correlationData);
      const handler = messageHandler;
      guarded("onMessage", () => handler(m));
    });

    const fireClose = (): void => {
      if (closeFired || closedReason === undefined || !closeHandler) return;
      closeFired = true;
      const handler = closeHandler;
      const reason = closedReason;
      guarded("onClose", () => handler(reason));
    };

    client.on("close", () => {
      if (state === "closed") return;
      const wasConnecting = state === "connecting";
      if (cleanCloseTimer !== undefined) clearTimeout(cleanCloseTimer);
      cleanCloseTimer = undefined;
      const reason = endReason ?? "connection closed by the broker";
      state = "closed";
      closedReason = reason;
      for (const p of [...pending]) p.fail(offline(reason));
      pending.clear();
      timers.clearAll();
      // Marks the client ended (stores closed, its own timers gone): nothing of it stays alive.
      client.end(true);
      if (wasConnecting) {
        const err =
          failure ??
          (!tcpConnected
            ? new HandsetError("mqtt-unreachable", `MQTT broker ${t.where} unreachable`)
            : t.secure && !tlsDone
              ? tlsError("", t, servername ?? t.host)
              : new HandsetError(
                  "mqtt-refused",
                  `MQTT broker ${t.where} closed the connection before CONNACK`,
                ));
        log.warn("mqtt connect failed", { where: t.where, code: err.code, message: err.message });
        reject(err);
        return;
      }
      log.info("mqtt connection closed", { where: t.where, reason });
      fireClose();
      for (const w of closeWaiters.splice(0)) w();
    });

    client.on("connect", () => {
      if (state !== "connecting") return;
      state = "open";
      log.info("mqtt connected", { where: t.where, clientId: opts.clientId, keepaliveS });
      resolve(connection);
    });

    const track = <T>(run: (ok: (v: T) => void, ko: (e: HandsetError) => void) => void): Promise<T> =>
      new Promise<T>((res, rej) => {
        let settled = false;
        const entry: Pending = {
          fail: (e) => {
            if (settled) return;
            settled = true;
            pending.delete(entry);
            rej(e);
          },
        };
        pending.add(entry);
        const ok = (v: T) => {
          if (settled) return;
          settled = true;
          pending.delete(entry);
          res(v);
        };
        try {
          run(ok, entry.fail);
        } catch (err) {
          entry.fail(
            err instanceof HandsetError
              ? err
              : new HandsetError("mqtt-protocol", err instanceof Error ? err.message : String(err)),
          );
        }
      });

    /** An error MQTT.js handed a callback, once the connection may already be gone. */
    const opError = (err: Error & { code?: unknown }, what: string): HandsetError => {
      if (state !== "open") return offline(closedReason ?? endReason ?? "connection closing");
      if (/^Invalid topic/.test(err.message)) return optionsError(`MQTT ${what}: ${err.message}`);
      if (err.message === "Connection closed" || err.message === "client disconnecting")
        return offline(endReason ?? "connection closed");
      if (typeof err.code === "number")
        return new HandsetError(
          `mqtt-${what}-refused`,
          `MQTT broker refused the ${what}: ${reasonText(err.code)}`,
        );
      return new HandsetError("mqtt-protocol", `MQTT ${what}: ${err.message}`);
    };

    const connection: MqttEdgeConnection = {
      get keepaliveS() {
        return keepaliveS;
      },

      publish(topic: string, payload: string, po: MqttPublishOptions): Promise<void> {
        if (state !== "open")
          return Promise.reject(offline(state === "closed" ? (closedReason ?? "closed") : state));
        if (po.qos !== 0 && po.qos !== 1)
          return Promise.reject(optionsError("MQTT publish QoS must be 0 or 1"));
        if (po.messageExpiryS !== undefined && !isInt(po.messageExpiryS, 0, MAX_U32))
          return Promise.reject(optionsError("MQTT message expiry must be 0…2³²−1 s"));
        const properties: NonNullable<IPublishPacket["properties"]> = {};
        if (po.responseTopic !== undefined) properties.responseTopic = po.responseTopic;
        if (po.correlationData !== undefined) properties.correlationData = po.correlationData;
        if (po.messageExpiryS !== undefined) properties.messageExpiryInterval = po.messageExpiryS;
        if (po.contentType !== undefined) properties.contentType = po.contentType;
        return track<void>((ok, ko) => {
          client.publish(
            topic,
            payload,
            {
              qos: po.qos,
              retain: po.retain ?? false,
              ...(Object.keys(properties).length > 0 ? { properties } : {}),
            },
            (err) => (err ? ko(opError(err, "publish")) : ok()),
          );
        });
      },

      subscribe(filters: string[], qos: 0 | 1): Promise<number[]> {
        if (state !== "open")
          return Promise.reject(offline(state === "closed" ? (closedReason ?? "closed") : state));
        if (filters.length === 0) return Promise.resolve([]);
        return track<number[]>((ok, ko) => {
          client.subscribe(filters, { qos }, (err, _granted, packet) => {
            // A v5 failure code makes MQTT.js fail the whole call; the SUBACK is still there.
            const suback = packet ?? (err as { packet?: { granted?: unknown } } | null)?.packet;
            const codes = (suback as { granted?: unknown } | undefined)?.granted;
            if (Array.isArray(codes) && codes.length === filters.length) {
              const refused = codes.filter((c) => c >= 0x80);
              if (refused.length > 0) log.warn("mqtt subscription refused", { codes: refused.map(hex) });
              ok(codes.map((c: number) => (c >= 0x80 ? 128 : c)));
            } else ko(opError(err ?? new Error("SUBACK missing"), "subscribe"));
          });
        });
      },

      onMessage(handler) {
        messageHandler = handler;
      },

      onPacket(handler) {
        packetHandler = handler;
      },

      onClose(handler) {
        closeHandler = handler;
        // Closed before anyone listened: tell the late listener, still once, never synchronously.
        if (closedReason !== undefined) queueMicrotask(fireClose);
      },

      close(force = false): Promise<void> {
        if (state === "closed") return Promise.resolve();
        const done = new Promise<void>((res) => closeWaiters.push(res));
        if (state === "closing" && !force) return done;
        state = "closing";
        if (force) {
          endReason ??= "closed by us (forced: no DISCONNECT, the broker publishes the will)";
          // Destroying the socket ourselves: end(true) is a no-op once a clean end() has begun.
          socket?.destroy();
        } else {
          endReason ??= "closed by us";
          // end(false) first waits for every PUBACK outstanding; a silent broker would hold it forever.
          cleanCloseTimer = setTimeout(() => socket?.destroy(), opts.connectTimeoutMs);
          client.end(false);
        }
        return done;
      },
    };

    try {
      client.connect();
    } catch (err) {
      const code = (err as { code?: string }).code;
      state = "closed";
      socket?.destroy();
      timers.clearAll();
      reject(
        new HandsetError(
          "mqtt-unreachable",
          `MQTT broker ${t.where}: cannot open a connection${code ? ` (${code})` : ""}`,
        ),
      );
    }
  });
}
