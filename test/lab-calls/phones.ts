/**
 * What the call tests place calls with.
 *
 * LabPhone: the firmware's real TLS-DSK registration (Registration + UserAgentCore over the real
 * SIP/TLS flow) to a lab registrar. The user-agent core does not place or answer calls yet (that
 * is being added to the firmware right now), so call signalling is built here with the firmware's
 * message helpers and signed with the security association the registration established
 * (`core.securityAssociation`). The core sees a view of the flow that carries only the
 * registration's traffic; call messages come to the test, each with the verdict of checking the
 * lab's signature on it against that SA.
 *
 * RawSip: a third-party user agent on the trunk, plain SIP over a UDP socket, a TCP connection or a
 * TCP listener, with no security at all.
 */
import { randomBytes, X509Certificate } from "node:crypto";
import * as dgram from "node:dgram";
import { readFileSync } from "node:fs";
import * as net from "node:net";
import { endpointForCert } from "../../firmware/commands/register.ts";
import type { Clock } from "../../firmware/core/clock.ts";
import { type Logger, silentLogger } from "../../firmware/core/logger.ts";
import type { Random } from "../../firmware/core/random.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import { parseNameAddr } from "../../firmware/sip/grammar/name-addr.ts";
import { StreamFramer } from "../../firmware/sip/message/framer.ts";
import {
  header,
  headerList,
  headers,
  request,
  response,
  type SipMessage,
  type SipRequest,
  type SipResponse,
} from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";
import { Registration, type RegistrationEvent } from "../../firmware/sip/registration/registration.ts";
import type { SecurityAssociation } from "../../firmware/sip/tls-dsk/security-association.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import type { Lab } from "../lab/lab.ts";

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const token = (n = 6) => randomBytes(n).toString("hex");
export const branch = () => `z9hG4bK${token(8)}`;

export const sdp = (port: number) =>
  `v=0\r\no=- ${port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio ${port} RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n`;

export interface LabUserCreds {
  aor: string;
  cert: string;
  key: string;
}

/** The lab's own test client (4711). */
export function testClient(lab: Lab): LabUserCreds {
  return {
    aor: lab.ready.testClient.uri,
    cert: readFileSync(lab.ready.testClient.cert, "utf8"),
    key: readFileSync(lab.ready.testClient.key, "utf8"),
  };
}

/** Adds a user to the directory with a certificate from the lab CA published for it, as sign-in would. */
export async function addUser(lab: Lab, extension: string): Promise<LabUserCreds> {
  const user = lab.directory.add(extension, "1234");
  const issued = await lab.ca.issueClient(user.uri.slice(4));
  lab.directory.publish(user, issued.cert);
  return { aor: user.uri, cert: issued.cert, key: issued.key };
}

/**
 * The firmware's TLS-DSK Registration for a lab user on `core`, as Account.mechanismOn builds it
 * (the firmware's defaults for the rest); `livenessTimeoutMs: 0` turns the OPTIONS probes off for
 * short tests that count traffic.
 */
export function labRegistration(
  lab: Lab,
  user: LabUserCreds,
  o: { core: UserAgentCore; clock: Clock; random: Random; logger?: Logger; livenessTimeoutMs?: number },
): Registration {
  return new Registration({
    clock: o.clock,
    random: o.random,
    logger: o.logger ?? silentLogger,
    core: o.core,
    engineFactory: (e) => createTlsDskEngine({ ...e, clock: o.clock }),
    endpoint: endpointForCert(user.aor, user.cert),
    credentials: {
      cert: user.cert,
      key: user.key,
      notAfter: new Date(new X509Certificate(user.cert).validTo).getTime(),
    },
    trustedRoots: [lab.ca.cert],
    innerTls: "auto",
    ...(o.livenessTimeoutMs !== undefined ? { livenessTimeoutMs: o.livenessTimeoutMs } : {}),
  });
}

/** Starts `reg` and resolves with its first `registered` event (rejects on `failed`). */
export function registered(reg: Registration): Promise<Extract<RegistrationEvent, { type: "registered" }>> {
  return new Promise((resolve, reject) => {
    reg.on((e) => {
      if (e.type === "registered") resolve(e);
      else if (e.type === "failed") reject(e.error);
    });
    reg.start();
  });
}

/** How a message from the lab checks out against a phone's SA. */
export function verdictOf(sa: SecurityAssociation, m: SipMessage): Verdict {
  try {
    sa.verify(m);
    return "verified";
  } catch (err) {
    return (err as { code?: string }).code === "rspauth-missing" ? "unsigned" : "bad";
  }
}

const CALL_METHODS = new Set([
  "INVITE",
  "ACK",
  "BYE",
  "CANCEL",
  "INFO",
  "UPDATE",
  "REFER",
  "PRACK",
  "MESSAGE",
]);

function isCall(m: SipMessage): boolean {
  const method = m.kind === "request" ? m.method : (header(m, "CSeq") ?? "").trim().split(/\s+/)[1];
  return CALL_METHODS.has((method ?? "").toUpperCase());
}

/** How a message from the lab checked out against the phone's SA. */
export type Verdict = "verified" | "unsigned" | "bad";

export interface Got<M extends SipMessage = SipMessage> {
  m: M;
  verdict: Verdict;
}

/** A queue of received messages that tests take from in order, waiting when needed. */
class Inbox<E extends { m: SipMessage }> {
  private readonly items: E[] = [];
  private readonly taken = new Set<E>();
  private wake: Array<() => void> = [];

  push(e: E): void {
    this.items.push(e);
    for (const w of this.wake.splice(0)) w();
  }

  /** The first not yet taken message matching `pred`, waiting up to ms for it. */
  async next(pred: (m: SipMessage) => boolean, ms = 5_000, what = "a message"): Promise<E> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.items.find((e) => !this.taken.has(e) && pred(e.m));
      if (hit) {
        this.taken.add(hit);
        return hit;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const seen = this.items.map((e) => describe(e.m)).join(", ");
        throw new Error(`timed out waiting for ${what}; received: ${seen || "nothing"}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Messages matching `pred` that arrive (not taken) within ms: for "nothing came" checks. */
  async within(pred: (m: SipMessage) => boolean, ms: number): Promise<E[]> {
    await sleep(ms);
    return this.items.filter((e) => !this.taken.has(e) && pred(e.m));
  }
}

export function describe(m: SipMessage): string {
  return m.kind === "request" ? m.method : `${m.status} (${header(m, "CSeq") ?? ""})`;
}

export const isRequest =
  (method: string) =>
  (m: SipMessage): m is SipRequest =>
    m.kind === "request" && m.method === method;

export const isResponse =
  (status: number, method?: string) =>
  (m: SipMessage): m is SipResponse =>
    m.kind === "response" &&
    m.status === status &&
    (method === undefined || (header(m, "CSeq") ?? "").toUpperCase().endsWith(` ${method}`));

/** What one end knows about a dialog (RFC 3261 §12): enough to send requests in it. */
export interface DialogState {
  callId: string;
  /** Our From value in requests (with our tag) and the peer's To value (with its tag). */
  local: string;
  remote: string;
  /** Remote target (the peer's Contact URI) and route set. */
  target: string;
  routes: string[];
  cseq: number;
}

function contactUri(m: SipMessage): string {
  return parseNameAddr(header(m, "Contact") ?? "").uri;
}

/** The caller's view after a 2xx: route set = Record-Route reversed (RFC 3261 §12.1.2). */
export function callerDialog(invite: SipRequest, ok: SipResponse): DialogState {
  return {
    callId: header(invite, "Call-ID")!,
    local: header(invite, "From")!,
    remote: header(ok, "To")!,
    target: contactUri(ok),
    routes: headerList(ok, "Record-Route").reverse(),
    cseq: Number.parseInt(header(invite, "CSeq")!, 10),
  };
}

/** The callee's view: route set = Record-Route as received (RFC 3261 §12.1.1). */
export function calleeDialog(invite: SipRequest, answer: SipResponse): DialogState {
  return {
    callId: header(invite, "Call-ID")!,
    local: header(answer, "To")!,
    remote: header(invite, "From")!,
    target: contactUri(invite),
    routes: headerList(invite, "Record-Route"),
    cseq: 1000,
  };
}

/** A request inside a dialog; ACK reuses the INVITE's CSeq number, anything else takes the next. */
export function inDialog(
  d: DialogState,
  method: string,
  via: string,
  o: { body?: string; contact?: string; extra?: Array<[string, string]> } = {},
): SipRequest {
  const cseq = method === "ACK" ? d.cseq : ++d.cseq;
  return request(
    method,
    d.target,
    [
      ["Via", `${via};branch=${branch()}`],
      ["Max-Forwards", "70"],
      ["From", d.local],
      ["To", d.remote],
      ["Call-ID", d.callId],
      ["CSeq", `${cseq} ${method}`],
      ...d.routes.map((r): [string, string] => ["Route", r]),
      ...(o.contact ? [["Contact", o.contact] as [string, string]] : []),
      ...(o.body ? [["Content-Type", "application/sdp"] as [string, string]] : []),
      ...(o.extra ?? []),
    ],
    o.body,
  );
}

/** An out-of-dialog INVITE. */
export function newInvite(o: {
  to: string;
  from: string;
  via: string;
  contact: string;
  body?: string;
  uri?: string;
}): SipRequest {
  return request(
    "INVITE",
    o.uri ?? o.to,
    [
      ["Via", `${o.via};branch=${branch()}`],
      ["Max-Forwards", "70"],
      ["From", `<${o.from}>;tag=${token()}`],
      ["To", `<${o.to}>`],
      ["Call-ID", `${token(12)}@127.0.0.1`],
      ["CSeq", "1 INVITE"],
      ["Contact", o.contact],
      ...(o.body ? [["Content-Type", "application/sdp"] as [string, string]] : []),
    ],
    o.body,
  );
}

/** A response as a UAS builds it (RFC 3261 §8.2.6): Vias, From, Call-ID and CSeq copied, To tagged. */
export function answerTo(
  req: SipRequest,
  status: number,
  reason: string,
  o: { toTag?: string; contact?: string; body?: string; extra?: Array<[string, string]> } = {},
): SipResponse {
  const to = header(req, "To") ?? "";
  const tagged = /;\s*tag=/i.test(to) || !o.toTag ? to : `${to};tag=${o.toTag}`;
  return response(
    status,
    reason,
    [
      ...headers(req, "Via").map((v): [string, string] => ["Via", v]),
      ["From", header(req, "From") ?? ""],
      ["To", tagged],
      ["Call-ID", header(req, "Call-ID") ?? ""],
      ["CSeq", header(req, "CSeq") ?? ""],
      ...headers(req, "Record-Route").map((v): [string, string] => ["Record-Route", v]),
      ...(o.contact ? [["Contact", o.contact] as [string, string]] : []),
      ...(o.body ? [["Content-Type", "application/sdp"] as [string, string]] : []),
      ...(o.extra ?? []),
    ],
    o.body,
  );
}

/** The ACK a UAC sends for a non-2xx final answer (RFC 3261 §17.1.1.3): same branch as the INVITE. */
export function ackFor(invite: SipRequest, res: SipResponse): SipRequest {
  return request("ACK", invite.uri, [
    ["Via", header(invite, "Via")!],
    ["Max-Forwards", "70"],
    ["From", header(invite, "From")!],
    ["To", header(res, "To")!],
    ["Call-ID", header(invite, "Call-ID")!],
    ["CSeq", `${Number.parseInt(header(invite, "CSeq")!, 10)} ACK`],
  ]);
}

/** The CANCEL of an INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, top Via. */
export function cancelOf(invite: SipRequest): SipRequest {
  return request("CANCEL", invite.uri, [
    ["Via", header(invite, "Via")!],
    ["Max-Forwards", "70"],
    ["From", header(invite, "From")!],
    ["To", header(invite, "To")!],
    ["Call-ID", header(invite, "Call-ID")!],
    ["CSeq", `${Number.parseInt(header(invite, "CSeq")!, 10)} CANCEL`],
  ]);
}

/** Keeps call messages away from the user-agent core, which would answer an INVITE with 501. */
/**
 * The flow as the registration's core sees it: messages `divert` picks (by default, call
 * messages) go to `onDiverted` instead, for the test to take.
 */
export function registrationView(
  inner: Flow,
  onDiverted: (m: SipMessage) => void,
  divert: (m: SipMessage) => boolean = isCall,
): Flow {
  const listeners: Array<(m: SipMessage) => void> = [];
  inner.onMessage((m) => {
    if (divert(m)) onDiverted(m);
    else for (const l of listeners) l(m);
  });
  return {
    remote: inner.remote,
    local: inner.local,
    peerCertificatePem: inner.peerCertificatePem,
    send: (m) => inner.send(m),
    sendPing: () => inner.sendPing(),
    close: () => inner.close(),
    onMessage: (l) => listeners.push(l),
    onPong: (l) => inner.onPong(l),
    onClose: (l) => inner.onClose(l),
  };
}

export class LabPhone {
  private readonly inbox = new Inbox<Got>();
  private readonly random = new CryptoRandom();

  private constructor(
    readonly aor: string,
    private readonly flow: Flow,
    private readonly core: UserAgentCore,
    private readonly reg: Registration,
  ) {}

  /** Registers `user` at `registrar` ("host:port", its certificate naming `serverName`). */
  static async register(lab: Lab, user: LabUserCreds, registrar: string, serverName: string) {
    const clock = new SystemClock();
    const i = registrar.lastIndexOf(":");
    const flow = await tlsFlowConnector({ ca: [lab.ca.cert] })({
      host: registrar.slice(0, i),
      port: Number(registrar.slice(i + 1)),
      serverName,
    });
    let phone: LabPhone | undefined;
    const early: SipMessage[] = [];
    const view = registrationView(flow, (m) => (phone ? phone.receive(m) : early.push(m)));
    const random = new CryptoRandom();
    const core = new UserAgentCore(view, { clock, random, logger: silentLogger });
    // The call tests are short; OPTIONS probes would only add traffic to the counters.
    const reg = labRegistration(lab, user, { core, clock, random, livenessTimeoutMs: 0 });
    await registered(reg);
    phone = new LabPhone(user.aor, flow, core, reg);
    for (const m of early) phone.receive(m);
    return phone;
  }

  /** The SA this phone's registration established (what it signs calls with). */
  get sa(): SecurityAssociation {
    const sa = this.core.securityAssociation;
    if (!sa) throw new Error(`${this.aor} has no security association`);
    return sa;
  }

  get port(): number {
    return this.flow.local.port;
  }

  get via(): string {
    return `SIP/2.0/TLS 127.0.0.1:${this.port}`;
  }

  get contact(): string {
    return `<sip:127.0.0.1:${this.port};transport=tls>`;
  }

  /** Signs (unless told not to) with the registration's SA and sends on the registered flow. */
  send<M extends SipMessage>(m: M, o: { sign?: boolean } = {}): M {
    if (o.sign !== false) this.sa.sign(m, this.random);
    this.flow.send(m);
    return m;
  }

  invite(to: string, body?: string, uri?: string): SipRequest {
    return this.send(
      newInvite({
        to,
        from: this.aor,
        via: this.via,
        contact: this.contact,
        ...(body ? { body } : {}),
        ...(uri ? { uri } : {}),
      }),
    );
  }

  answer(
    req: SipRequest,
    status: number,
    reason: string,
    o: { toTag?: string; body?: string; sign?: boolean } = {},
  ): SipResponse {
    const contact = status < 300 && req.method === "INVITE" ? this.contact : undefined;
    return this.send(answerTo(req, status, reason, { ...o, ...(contact ? { contact } : {}) }), o);
  }

  next<M extends SipMessage>(pred: (m: SipMessage) => m is M, ms?: number): Promise<Got<M>>;
  next(pred: (m: SipMessage) => boolean, ms?: number): Promise<Got>;
  next(pred: (m: SipMessage) => boolean, ms = 5_000): Promise<Got> {
    return this.inbox.next(pred, ms, `a message at ${this.aor}`);
  }

  within(pred: (m: SipMessage) => boolean, ms = 300): Promise<Got[]> {
    return this.inbox.within(pred, ms);
  }

  close(): void {
    this.reg.stop();
    this.core.close();
  }

  private receive(m: SipMessage): void {
    this.inbox.push({ m, verdict: verdictOf(this.sa, m) });
  }
}

/** A third-party SIP user agent on the trunk: plain SIP, no TLS, no signatures. */
export class RawSip {
  private readonly inbox = new Inbox<{ m: SipMessage }>();
  private tcp: net.Socket | undefined;
  private udp: dgram.Socket | undefined;
  private server: net.Server | undefined;
  private localPort = 0;

  private constructor(
    readonly transport: "udp" | "tcp",
    /** Where send() goes by default (UDP) — the trunk. */
    private readonly peer?: { host: string; port: number },
  ) {}

  /** A UDP socket on 127.0.0.1 (or `bind`), sending to `peer` ("host:port") by default. */
  static async udp(peer?: string, bind = "127.0.0.1"): Promise<RawSip> {
    const r = new RawSip("udp", peer ? split(peer) : undefined);
    const s = dgram.createSocket("udp4");
    r.udp = s;
    s.on("message", (msg) => r.take(msg));
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.bind(0, bind, () => resolve());
    });
    r.localPort = s.address().port;
    return r;
  }

  /** A TCP connection to `peer` (the trunk), from 127.0.0.1 (or `bind`). */
  static async tcpTo(peer: string, bind?: string): Promise<RawSip> {
    const r = new RawSip("tcp");
    const s = net.connect({ ...split(peer), ...(bind ? { localAddress: bind } : {}), noDelay: true });
    await new Promise<void>((resolve, reject) => {
      s.once("connect", () => resolve());
      s.once("error", reject);
    });
    r.attach(s);
    r.localPort = s.localPort ?? 0;
    return r;
  }

  /** A TCP listener (a gateway the trunk connects to); answers go on the latest connection. */
  static async tcpListener(): Promise<RawSip> {
    const r = new RawSip("tcp");
    r.server = net.createServer((s) => r.attach(s));
    await new Promise<void>((resolve) => r.server!.listen(0, "127.0.0.1", () => resolve()));
    r.localPort = (r.server.address() as net.AddressInfo).port;
    return r;
  }

  get port(): number {
    return this.localPort;
  }

  get address(): string {
    return `127.0.0.1:${this.localPort}`;
  }

  get via(): string {
    return `SIP/2.0/${this.transport.toUpperCase()} ${this.address}`;
  }

  get contact(): string {
    return `<sip:gw@${this.address};transport=${this.transport}>`;
  }

  /** Connected: whether the TCP connection is still open. */
  get connected(): boolean {
    return !!this.tcp && !this.tcp.destroyed;
  }

  send<M extends SipMessage>(m: M, to?: string): M {
    const bytes = serializeMessage(m);
    if (this.transport === "tcp") this.tcp?.write(bytes);
    else {
      const dest = to ? split(to) : this.peer!;
      this.udp!.send(bytes, dest.port, dest.host);
    }
    return m;
  }

  next<M extends SipMessage>(pred: (m: SipMessage) => m is M, ms?: number): Promise<M>;
  next(pred: (m: SipMessage) => boolean, ms?: number): Promise<SipMessage>;
  async next(pred: (m: SipMessage) => boolean, ms = 5_000): Promise<SipMessage> {
    return (await this.inbox.next(pred, ms, `a message at ${this.address}`)).m;
  }

  async within(pred: (m: SipMessage) => boolean, ms = 300): Promise<SipMessage[]> {
    return (await this.inbox.within(pred, ms)).map((e) => e.m);
  }

  close(): void {
    this.tcp?.destroy();
    this.udp?.close();
    this.server?.close();
  }

  private take(bytes: Buffer): void {
    try {
      this.inbox.push({ m: parseMessage(bytes) });
    } catch {
      // not SIP: ignored, as a UA would
    }
  }

  private attach(s: net.Socket): void {
    this.tcp = s;
    const framer = new StreamFramer();
    s.on("error", () => {});
    s.on("data", (chunk: Buffer) => {
      for (const ev of framer.push(chunk)) if (ev.type === "message") this.inbox.push({ m: ev.message });
    });
  }
}

function split(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}
