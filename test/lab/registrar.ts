/**
 * The lab registrar: a Lync-like front end speaking SIP over TLS with TLS-DSK, written as
 * honestly as the phone. It challenges, runs the server side of the tunnelled handshake
 * (server flight 1 coalesced into one record, as Schannel sends it), requires a client
 * certificate from the lab CA that is published for the user, checks every signed request,
 * signs every final response, and can redirect (301, q=0.7 / q=0.3) like a Director.
 *
 * Fault switches (for the phone's negative tests) make it lie on purpose: a wrong rspauth, a
 * 200 without Authentication-Info, an unsigned (or signed) refusal of every authenticated
 * REGISTER, a targetname its certificate does not carry, a tunnel certificate that is not its
 * own, a tampered server Finished, hostile Expires values. A fatal framing error from the phone
 * (bad Content-Length, oversize) closes the connection at once, as the phone does.
 *
 * Bindings ([MS-SIPREGE] §3.1.2.5.1): one per (AOR, +sip.instance) with its expiry; the 200's
 * presence-state says register-action="added" for a new binding and "refreshed" for an existing
 * one. `dropBindings()` forgets them all (a front end that lost its state), so the next refresh
 * comes back "added". Per connection it remembers the SA and the AOR last registered on it, so
 * `deregister()` can send a signed NOTIFY registration-notify `deregistered;event=<reason>` on
 * the user's flow and check the phone's signed answer. It answers CRLFCRLF with CRLF and a
 * signed OPTIONS with a signed 200.
 *
 * Style ([MS-SIPREGE], a Skype for Business 2015 REGISTER 200; `style` / `features`): by default
 * ("lync") it answers as a 2013/2015 front end: `Server: RTC/6.0`, the pool's Supported tags and
 * Allow-Events, a GRUU on the Contact, self-subscriptions and SERVICE (self-subscriptions.ts), a
 * de-REGISTER 200 without presence-state. "minimal" is the lab as it was before (a short
 * Allow-Events, no GRUU, SUBSCRIBE and SERVICE answered 501); each feature can be set alone.
 * Where each header comes from is noted above LYNC_ALLOW_EVENTS.
 *
 * Calls (call-router.ts): INVITE, CANCEL, ACK and in-dialog requests from a registered user go to
 * the registrar's call router once their signature verified (a bad one is challenged, or dropped
 * for ACK and CANCEL, as for REGISTER); the router's messages to a user leave on that user's flow
 * signed with its SA (1xx unsigned). The TLS port also takes the other lab registrar: it asks for
 * a client certificate, which phones never send and which the peer answers with its server
 * certificate (mutual TLS, as between Lync servers); such a connection is the router's.
 */
import { randomBytes, X509Certificate } from "node:crypto";
import type { AddressInfo } from "node:net";
import * as tls from "node:tls";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { formatAuthHeader, parseAuthHeader } from "../../firmware/sip/grammar/auth-params.ts";
import { parseNameAddr, tagOf } from "../../firmware/sip/grammar/name-addr.ts";
import { parseVia } from "../../firmware/sip/grammar/via.ts";
import { StreamFramer } from "../../firmware/sip/message/framer.ts";
import {
  header,
  removeHeader,
  request,
  response,
  type SipMessage,
  type SipRequest,
  type SipResponse,
  setHeader,
} from "../../firmware/sip/message/message.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";
import { LAB_DIAGNOSTIC } from "../../firmware/sip/registration/diagnostics.ts";
import type { TlsDskServerEngine } from "../../firmware/sip/tls-dsk/engine.ts";
import { deriveTlsDskKeys } from "../../firmware/sip/tls-dsk/prf.ts";
import { macAlgForCipher, SecurityAssociation } from "../../firmware/sip/tls-dsk/security-association.ts";
import { CallRouter, type Leg } from "./call-router.ts";
import type { UserDirectory } from "./directory.ts";
import { answerSelfSubscribe, answerService, SELF_EVENTS, selfEventOf } from "./self-subscriptions.ts";
import { createLabServerEngine } from "./tls-dsk-server-engine.ts";

/** Flips one byte in the middle of the last TLS record of a flight (the encrypted Finished). */
function tamperLastRecord(flight: Buffer): Buffer {
  const out = Buffer.from(flight);
  let off = 0;
  let last = -1;
  while (off + 5 <= out.length) {
    last = off;
    off += 5 + out.readUInt16BE(off + 3);
  }
  if (last >= 0) {
    const len = out.readUInt16BE(last + 3);
    const at = last + 5 + Math.floor(len / 2);
    out[at] = (out[at] as number) ^ 0x01;
  }
  return out;
}

/** A canned answer to authenticated REGISTERs (status, reason phrase, extra headers). */
export interface CannedAnswer {
  status: number;
  reason?: string;
  headers?: Array<[string, string]>;
}

/** "lync": a Lync 2013 / Skype for Business front end (default); "minimal": the lab before issue 13. */
export type RegistrarStyle = "lync" | "minimal";

/** The pieces of the Lync style, each switchable alone (a test that wants the old behaviour of one). */
export interface RegistrarFeatures {
  /** `Server: RTC/6.0` on the registrar's answers; off: `handset-lab/0.1 (RTC/6.0)`. */
  rtcServer: boolean;
  /** The REGISTER 200's Supported tags and a 2013/2015 pool's Allow-Events; off: the old short Allow-Events. */
  registerHeaders: boolean;
  /** The 200's Contact as Lync echoes it, `;expires=…;+sip.instance=…;gruu="…"`; off: ours + `;expires=`. */
  gruu: boolean;
  /** A de-REGISTER 200 without presence-state (so no register-action); off: register-action as for a refresh. */
  plainDeregister: boolean;
  /** SUBSCRIBE to self events and SERVICE answered (self-subscriptions.ts); off: both get a 501. */
  selfSubscriptions: boolean;
}

export function registrarFeatures(
  style: RegistrarStyle = "lync",
  overrides: Partial<RegistrarFeatures> = {},
): RegistrarFeatures {
  const on = style === "lync";
  return {
    rtcServer: on,
    registerHeaders: on,
    gruu: on,
    plainDeregister: on,
    selfSubscriptions: on,
    ...overrides,
  };
}

/**
 * A REGISTER 200 as a 2013/2015 pool sends it. Sources:
 * - Server: RTC/6.0 — a Skype for Business Server 2015 REGISTER 200 (public SIP test fixture,
 *   pool "skype2015.loc", `sipraw::_200ok_contact_with_gruu`); Lync Server 2013 says RTC/5.0
 *   (the same fixture's LYNC2013-SERVER 401, and [MS-PRES] §4.14.3.1), OCS 2007 R2 RTC/3.5
 *   ([MS-SIPREGE] §4.3.6).
 * - Allow-Events: the list of both that SfB 2015 200 and [MS-SIPREGE] §4.3.6, identical.
 * - Supported: adhoclist, msrtc-event-categories — [MS-SIPREGE] §4.3.6 and the SfB 2015 200;
 *   ms-keepalive-deregister, ms-userservices-state-notification — the SfB 2015 200 (the latter
 *   defined in [MS-SIPREGE] §2.2.1.5). One tag per Supported header, as both send them.
 * - ms-keep-alive (UAS; tcp=no; hop-hop=yes; end-end=no; timeout=…) and presence-state:
 *   [MS-SIPREGE] §4.3.6 / §2.2.1.4, as before.
 * - Contact `<uri>;expires=N;+sip.instance="<urn:uuid:…>";gruu="sip:user@domain;opaque=user:epid:…;gruu"`:
 *   [MS-SIPREGE] §4.3.6 and the SfB 2015 200 (the gruu of [IETFDRAFT-OUGRUAUSIP-10], which
 *   [MS-SIPREGE] §3.1.2.5.1 has the registrar generate per [MS-SIPRE] §2.2.3).
 */
export const LYNC_ALLOW_EVENTS =
  "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,vnd-microsoft-roaming-ACL,presence," +
  "presence.wpending,vnd-microsoft-roaming-self,vnd-microsoft-provisioning-v2";
export const LYNC_SERVER = "RTC/6.0";
export const LYNC_SUPPORTED = [
  "adhoclist",
  "msrtc-event-categories",
  "ms-keepalive-deregister",
  "ms-userservices-state-notification",
];
const MINIMAL_ALLOW_EVENTS =
  "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,presence,registration-notify";

/**
 * The epid part of a Lync GRUU for a +sip.instance UUID: the UUID's 16 bytes in GUID layout
 * (first three fields little-endian) and two zero bytes, base64url. Both published GRUUs fit:
 * c1589240-e660-594f-a8b3-4b55f358cbc1 → QJJYwWDmT1mos0tV81jLwQAA ([MS-SIPREGE] §4.3.6) and
 * e0de506b-a705-59cc-9bfa-d37593141231 → a1De4AWnzFmb-tN1kxQSMQAA (the SfB 2015 200).
 */
export function gruuEpid(instanceUuid: string): string | undefined {
  const hex = instanceUuid.replace(/^<?urn:uuid:|>$/gi, "").replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) return undefined;
  const b = Buffer.from(hex, "hex");
  return Buffer.concat([
    Buffer.from(b.subarray(0, 4)).reverse(),
    Buffer.from(b.subarray(4, 6)).reverse(),
    Buffer.from(b.subarray(6, 8)).reverse(),
    b.subarray(8),
    Buffer.alloc(2),
  ]).toString("base64url");
}

export interface RegistrarFaults {
  badRspauth?: boolean;
  omitAuthenticationInfo?: boolean;
  /** Answer every REGISTER whose signature verified with this, WITHOUT Authentication-Info. */
  unsignedAfterSa?: CannedAnswer;
  /** Answer every REGISTER whose signature verified with this, signed. */
  signedRefusal?: CannedAnswer;
  /** Challenge (and expect) this targetname instead of the FQDN in our certificate. */
  targetname?: string;
  /** Run the tunnelled handshake with this certificate instead of our own. */
  innerCert?: { cert: string; key: string };
  /** Flip a byte of the encrypted server Finished (last record of server flight 2). */
  tamperServerFinished?: boolean;
  /** Raw value for the 200's Expires header and Contact ;expires= (e.g. "0", "-5", "99999999999"). */
  expiresHeader?: string;
}

export interface LabRegistrarOptions {
  name: string;
  /** FQDN in the registrar's certificate and the TLS-DSK targetname. */
  fqdn: string;
  cert: string;
  key: string;
  ca: string;
  directory: UserDirectory;
  stsUri?: string;
  expires?: number;
  keepAliveS?: number;
  /** Set: answer every authenticated REGISTER with a signed 301 to these (q 0.7, 0.3). */
  redirect?: { primary: string; backup?: string };
  presenceState?: string;
  faults?: RegistrarFaults;
  /** Allow TLS 1.0 inner handshakes (older pools did). */
  innerMinVersion?: "TLSv1" | "TLSv1.2";
  /** Highest inner TLS version; "TLSv1" makes an old pool that speaks only TLS 1.0 inside TLS-DSK. */
  innerMaxVersion?: "TLSv1" | "TLSv1.2";
  /** "lync" (default) or "minimal" (the lab before issue 13); `features` overrides single pieces. */
  style?: RegistrarStyle;
  features?: Partial<RegistrarFeatures>;
}

export interface RegistrarStats {
  connections: number;
  registers: number;
  handshakes: number;
  signedOk: number;
  signatureFailures: number;
  registered: number;
  /** CRLFCRLF pings answered with a CRLF pong. */
  pings: number;
  /** OPTIONS received (signed or not). */
  options: number;
  /** Requests sent to the phone (deregister()'s NOTIFY, sendToUser()). */
  serverRequests: number;
  /** Answers to those whose client signature (Authorization, field 16 = status) verified. */
  signedAnswers: number;
  /** Answers to those that were unsigned or badly signed. */
  answerSignatureFailures: number;
  /** Connections closed because the phone's bytes could not be framed. */
  framingErrors: number;
  /** Self-subscriptions answered 200 (SUBSCRIBE to SELF_EVENTS) and SERVICE requests answered. */
  subscriptions: number;
  services: number;
}

/** The phone's final answer to a request the registrar sent it. */
export interface ServerRequestAnswer {
  status: number;
  signatureOk: boolean;
}

interface ConnBinding {
  aor: string;
  contactUri: string;
  sa: SecurityAssociation;
  /** Key into the registrar's bindings (AOR | instance): the binding lives while that entry does. */
  key: string;
  /** When it was made (epoch ms): calls go to the latest of a user's bindings. */
  at: number;
}

interface Pending {
  engine: TlsDskServerEngine;
  realm: string;
}

interface ConnState {
  socket: tls.TLSSocket;
  pending: Map<string, Pending>;
  sas: Map<string, { sa: SecurityAssociation; clientCertPem: string }>;
  binding?: ConnBinding;
  /** Requests we sent to the phone, by Via branch, waiting for its answer. */
  answers: Map<string, { sa: SecurityAssociation; resolve: (a: ServerRequestAnswer | undefined) => void }>;
  /** Self-subscription dialogs (Call-ID | From tag): our To tag and the last notification CSeq. */
  subscriptions: Map<string, { toTag: string; cseq: number }>;
}

function sameUri(a: string, b: string): boolean {
  return a.trim().toLowerCase() === b.trim().toLowerCase();
}

export const REALM = "SIP Communications Service";

export class LabRegistrar {
  private server: tls.Server | undefined;
  private readonly sockets = new Set<tls.TLSSocket>();
  readonly stats: RegistrarStats = {
    connections: 0,
    registers: 0,
    handshakes: 0,
    signedOk: 0,
    signatureFailures: 0,
    registered: 0,
    pings: 0,
    options: 0,
    serverRequests: 0,
    signedAnswers: 0,
    answerSignatureFailures: 0,
    framingErrors: 0,
    subscriptions: 0,
    services: 0,
  };
  /** ms-keep-alive timeout= in the 200 (seconds). */
  keepAliveS: number;
  /** (AOR, instance) → binding expiry (epoch ms, wall clock). */
  private readonly bindings = new Map<string, number>();
  private readonly conns = new Set<ConnState>();
  faults: RegistrarFaults;
  /** The Lync-style pieces in force (mutable: a test can switch one at run time). */
  features: RegistrarFeatures;
  redirect: { primary: string; backup?: string } | undefined;
  presenceState: string;
  private port = 0;
  private readonly random = new CryptoRandom();
  /** Routes calls between the users registered here, the other registrar and the trunk. */
  readonly router: CallRouter;

  constructor(readonly o: LabRegistrarOptions) {
    this.router = new CallRouter({
      name: o.name,
      fqdn: o.fqdn,
      directory: o.directory,
      locate: (aor) => {
        const conn = this.connFor(aor);
        return conn?.binding ? { leg: this.userLeg(conn), contact: conn.binding.contactUri } : undefined;
      },
    });
    this.faults = { ...o.faults };
    this.features = registrarFeatures(o.style, o.features);
    this.keepAliveS = o.keepAliveS ?? 300;
    this.redirect = o.redirect;
    this.presenceState =
      o.presenceState ??
      'register-action="added";primary-cluster-type="central";is-connected-to-primary="yes"';
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  /** Listens on the given port (0: any; a restart reuses the previous one). */
  async start(port = this.port): Promise<void> {
    if (this.server) return;
    // requestCert: the other registrar authenticates with its certificate (mutual TLS). Phones
    // send none, and rejectUnauthorized stays off so they are not refused; the peer's certificate
    // is checked by the router's peering (it carries serverAuth only, as our server certs do).
    const server = tls.createServer(
      {
        cert: this.o.cert,
        key: this.o.key,
        minVersion: "TLSv1.2",
        requestCert: true,
        rejectUnauthorized: false,
        ca: [this.o.ca],
      },
      (s) => this.onConnection(s),
    );
    server.on("tlsClientError", () => {});
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops listening and drops every connection (a crashed or stopped front end). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    this.router.stop();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Forgets every binding (a front end that lost its registration state); connections and SAs stay. */
  dropBindings(): void {
    this.bindings.clear();
  }

  /** Number of live bindings (AOR + instance). */
  get bindingCount(): number {
    const now = Date.now();
    return [...this.bindings.values()].filter((t) => t > now).length;
  }

  /**
   * Ends `aor`'s registration from the server side ([MS-SIPREGE] registration-notify): sends a
   * NOTIFY `Event: registration-notify` with body `deregistered;event=<reason>` (plus
   * P-Preferred-Registrar for preferred-registrar-change, ms-diagnostics-public 4141 for
   * rejected), signed with the connection's SA, on every connection where the AOR is registered,
   * and drops the binding. Resolves with the phone's answer on the first such connection
   * (undefined when none answers within `timeoutMs` of real time, or no connection has the AOR).
   */
  async deregister(
    aor: string,
    reason: "unregistered" | "rejected" | "deactivated" | "preferred-registrar-change" | string,
    preferredRegistrar?: string,
    timeoutMs = 5_000,
  ): Promise<ServerRequestAnswer | undefined> {
    for (const key of [...this.bindings.keys()])
      if (sameUri(key.slice(0, key.indexOf("|")), aor)) this.bindings.delete(key);
    const extra: Array<[string, string]> = [
      ["Event", "registration-notify"],
      ["Subscription-State", "terminated;reason=deactivated"],
      ["Content-Type", "text/registration-event"],
    ];
    if (preferredRegistrar)
      extra.push(["P-Preferred-Registrar", `<sip:${preferredRegistrar};transport=tls>`]);
    if (reason === "rejected") extra.push(["ms-diagnostics-public", '4141;reason="User disabled"']);
    return this.sendToUser(aor, "NOTIFY", extra, `deregistered;event=${reason}`, { timeoutMs, unbind: true });
  }

  /**
   * Sends a request signed with the connection's SA on every connection where `aor` is
   * registered (e.g. OPTIONS, INFO) and resolves with the first phone's answer, its client
   * signature checked (stats.signedAnswers / answerSignatureFailures).
   */
  async sendToUser(
    aor: string,
    method: string,
    extra: Array<[string, string]> = [],
    body = "",
    opts: { timeoutMs?: number; unbind?: boolean; unsigned?: boolean } = {},
  ): Promise<ServerRequestAnswer | undefined> {
    const answers: Array<Promise<ServerRequestAnswer | undefined>> = [];
    for (const conn of this.conns) {
      const b = conn.binding;
      if (!b || !sameUri(b.aor, aor) || conn.socket.destroyed) continue;
      if (opts.unbind) conn.binding = undefined;
      const branch = `z9hG4bK${randomBytes(8).toString("hex")}`;
      const req = request(
        method,
        b.contactUri,
        [
          ["Via", `SIP/2.0/TLS ${this.o.fqdn}:5061;branch=${branch}`],
          ["Max-Forwards", "70"],
          ["From", `<${b.aor}>;tag=${randomBytes(8).toString("hex")}`],
          ["To", `<${b.aor}>`],
          ["Call-ID", randomBytes(16).toString("hex")],
          ["CSeq", `1 ${method}`],
          ...extra,
        ],
        body,
      );
      if (!opts.unsigned) this.sign(b.sa, req);
      answers.push(this.sendOnConn(conn, b.sa, req, opts.timeoutMs ?? 5_000));
    }
    return answers.length > 0 ? answers[0] : undefined;
  }

  /**
   * Writes a request of ours (already signed, or not) on `conn` and resolves with the phone's
   * final answer, its client signature checked against `sa` (undefined after `timeoutMs`).
   */
  private sendOnConn(
    conn: ConnState,
    sa: SecurityAssociation,
    req: SipRequest,
    timeoutMs: number,
  ): Promise<ServerRequestAnswer | undefined> {
    let branch = "";
    try {
      branch = parseVia(header(req, "Via") ?? "").params.get("branch") ?? "";
    } catch {
      // no branch: the answer cannot be matched, the timer resolves it
    }
    this.stats.serverRequests++;
    const answer = new Promise<ServerRequestAnswer | undefined>((resolve) => {
      const timer = setTimeout(() => {
        conn.answers.delete(branch);
        resolve(undefined);
      }, timeoutMs);
      conn.answers.set(branch, {
        sa,
        resolve: (a) => {
          clearTimeout(timer);
          resolve(a);
        },
      });
    });
    if (!conn.socket.destroyed) conn.socket.write(serializeMessage(req));
    return answer;
  }

  /** Writes raw bytes on every connection where `aor` is registered (framing tests); returns how many. */
  sendRawToUser(aor: string, bytes: string | Buffer): number {
    let n = 0;
    for (const conn of this.conns) {
      if (!conn.binding || !sameUri(conn.binding.aor, aor) || conn.socket.destroyed) continue;
      conn.socket.write(bytes);
      n++;
    }
    return n;
  }

  private onConnection(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    const peerCert = socket.getPeerX509Certificate();
    if (peerCert instanceof X509Certificate && this.router.peering?.accepts(peerCert)) {
      socket.on("close", () => this.sockets.delete(socket));
      this.router.peering.accept(socket);
      return;
    }
    this.stats.connections++;
    socket.setNoDelay(true);
    const framer = new StreamFramer();
    const conn: ConnState = {
      socket,
      pending: new Map(),
      sas: new Map(),
      answers: new Map(),
      subscriptions: new Map(),
    };
    this.conns.add(conn);
    socket.on("error", () => {});
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.conns.delete(conn);
      for (const p of conn.pending.values()) p.engine.destroy();
      for (const n of conn.answers.values()) n.resolve(undefined);
      conn.answers.clear();
    });
    socket.on("data", (chunk: Buffer) => {
      for (const ev of framer.push(chunk)) {
        if (ev.type === "ping") {
          this.stats.pings++;
          socket.write("\r\n");
        } else if (ev.type === "message" && ev.message.kind === "request") {
          void this.onRequest(socket, conn, ev.message).catch(() => socket.destroy());
        } else if (ev.type === "message" && ev.message.kind === "response") this.onResponse(conn, ev.message);
        else if (ev.type === "error" && framer.failed) {
          // Fatal framing error (bad Content-Length, oversize): the stream cannot be trusted.
          this.stats.framingErrors++;
          socket.destroy();
          return;
        }
      }
    });
  }

  /** A response from the phone: to a request of ours (deregister(), sendToUser()) or the router's. */
  private onResponse(conn: ConnState, res: SipResponse): void {
    let branch = "";
    try {
      branch = parseVia(header(res, "Via") ?? "").params.get("branch") ?? "";
    } catch {
      return;
    }
    const pending = conn.answers.get(branch);
    if (!pending) {
      // Not an answer to our own request: the answer of a callee to a request the router sent.
      if (conn.binding) this.router.onResponse(this.userLeg(conn), res);
      return;
    }
    if (res.status < 200) return;
    conn.answers.delete(branch);
    let signatureOk = false;
    try {
      pending.sa.verifyClient(res);
      signatureOk = true;
      this.stats.signedAnswers++;
    } catch {
      this.stats.answerSignatureFailures++;
    }
    pending.resolve({ status: res.status, signatureOk });
  }

  private reply(
    req: SipRequest,
    status: number,
    reason: string,
    extra: Array<[string, string]> = [],
    toTag: string = randomBytes(8).toString("hex").toUpperCase(),
  ): SipResponse {
    const headers: Array<[string, string]> = [];
    for (const h of req.headers) if (/^(via|v)$/i.test(h.name)) headers.push(["Via", h.value]);
    const to = header(req, "To") ?? "";
    headers.push(["From", header(req, "From") ?? ""]);
    headers.push(["To", /;\s*tag=/i.test(to) ? to : `${to};tag=${toTag}`]);
    headers.push(["Call-ID", header(req, "Call-ID") ?? ""]);
    headers.push(["CSeq", header(req, "CSeq") ?? ""]);
    headers.push(["Server", this.features.rtcServer ? LYNC_SERVER : "handset-lab/0.1 (RTC/6.0)"]);
    headers.push(...extra);
    return response(status, reason, headers);
  }

  /** The targetname we challenge with (our FQDN unless a fault says otherwise). */
  private get targetname(): string {
    return this.faults.targetname ?? this.o.fqdn;
  }

  private challenge(req: SipRequest): SipResponse {
    const t = this.targetname;
    const tlsDsk: Array<[string, string, boolean?]> = [
      ["realm", REALM],
      ["targetname", t],
      ["version", "4", false],
    ];
    if (this.o.stsUri) tlsDsk.push(["sts-uri", this.o.stsUri]);
    return this.reply(req, 401, "Unauthorized", [
      ["WWW-Authenticate", `NTLM realm="${REALM}", targetname="${t}", version=4`],
      ["WWW-Authenticate", `Kerberos realm="${REALM}", targetname="sip/${t}", version=4`],
      ["WWW-Authenticate", formatAuthHeader("TLS-DSK", tlsDsk)],
    ]);
  }

  private async onRequest(socket: tls.TLSSocket, conn: ConnState, req: SipRequest): Promise<void> {
    const send = (m: SipResponse) => {
      if (!socket.destroyed) socket.write(serializeMessage(m));
    };
    if (req.method !== "REGISTER") {
      // Anything else must be signed with an established SA. Calls go to the router; of the
      // rest the lab answers OPTIONS only.
      if (req.method === "OPTIONS") this.stats.options++;
      const auth = this.verify(conn, req);
      if (!auth) {
        // [MS-SIPAE] §3.3.5.1: an ACK or CANCEL that fails authentication is silently discarded.
        if (req.method === "ACK" || req.method === "CANCEL") return;
        return send(this.challenge(req));
      }
      if (this.router.claims(req)) {
        const b = conn.binding;
        let from = "";
        try {
          from = parseNameAddr(header(req, "From") ?? "").uri;
        } catch {
          // unreadable From: refused below
        }
        // Calls are for registered users, in their own name (Lync checks From against the SA's user).
        if (!b || !sameUri(from, b.aor)) {
          if (req.method === "ACK") return;
          return send(
            this.sign(
              auth.sa,
              this.reply(req, 403, "Forbidden", [
                ["Warning", `399 ${this.o.fqdn} "From is not the user registered on this connection"`],
              ]),
            ),
          );
        }
        return this.router.onRequest(this.userLeg(conn), req);
      }
      if (req.method === "OPTIONS") return send(this.sign(auth.sa, this.reply(req, 200, "OK")));
      if (this.features.selfSubscriptions && req.method === "SUBSCRIBE")
        return this.onSubscribe(conn, auth.sa, req, send);
      if (this.features.selfSubscriptions && req.method === "SERVICE") {
        this.stats.services++;
        const a = answerService();
        return send(this.sign(auth.sa, this.reply(req, a.status, a.reason)));
      }
      return send(this.sign(auth.sa, this.reply(req, 501, "Not Implemented")));
    }
    this.stats.registers++;
    const authz = header(req, "Authorization");
    if (!authz) return send(this.challenge(req));
    let params: Map<string, string>;
    try {
      const parsed = parseAuthHeader(authz);
      if (parsed.scheme.toUpperCase() !== "TLS-DSK") return send(this.challenge(req));
      params = parsed.params;
    } catch {
      return send(this.reply(req, 400, "Bad Authorization header"));
    }
    if (params.get("realm") !== REALM || params.get("targetname") !== this.targetname)
      return send(this.challenge(req));
    const gssapi = params.get("gssapi-data");
    if (gssapi !== undefined) return send(await this.handshake(conn, req, params, gssapi));
    const auth = this.verify(conn, req);
    if (!auth) return send(this.challenge(req));
    const canned = this.faults.unsignedAfterSa ?? this.faults.signedRefusal;
    if (canned) {
      const m = this.reply(req, canned.status, canned.reason ?? "Refused", canned.headers ?? []);
      return send(this.faults.unsignedAfterSa ? m : this.sign(auth.sa, m));
    }
    const from = parseNameAddr(header(req, "From") ?? "");
    if (!this.o.directory.isPublished(from.uri, auth.clientCertPem)) {
      const revoked = this.o.directory.isRevoked(from.uri, auth.clientCertPem);
      return send(
        this.sign(
          auth.sa,
          this.reply(req, 403, "Forbidden", [
            [
              "ms-diagnostics",
              // Lab-private ErrorIds (firmware/sip/registration/diagnostics.ts LAB_DIAGNOSTIC):
              // [MS-OCER] has none for this, and 1010/1012 mean other things there.
              revoked
                ? `${LAB_DIAGNOSTIC.certificateRevoked};reason="Certificate has been revoked";source="${this.o.fqdn}"`
                : `${LAB_DIAGNOSTIC.certificateNotPublished};reason="Certificate is not published for this user";source="${this.o.fqdn}"`,
            ],
          ]),
        ),
      );
    }
    if (this.redirect) {
      const contacts = [`<sip:${this.redirect.primary};transport=TLS>;q=0.7`];
      if (this.redirect.backup) contacts.push(`<sip:${this.redirect.backup};transport=TLS>;q=0.3`);
      return send(
        this.sign(
          auth.sa,
          this.reply(req, 301, "Redirect request to Home Server", [["Contact", contacts.join(", ")]]),
        ),
      );
    }
    const expiresReq = Number.parseInt(header(req, "Expires") ?? "", 10);
    const expires = expiresReq === 0 ? 0 : (this.o.expires ?? 7200);
    const expiresShown =
      expiresReq !== 0 && this.faults.expiresHeader !== undefined
        ? this.faults.expiresHeader
        : String(expires);
    if (expires > 0) this.stats.registered++;
    const contact = header(req, "Contact") ?? "";
    const action = this.bind(conn, from.uri, contact, expires, auth.sa);
    const f = this.features;
    const extra: Array<[string, string]> = [];
    if (!(expires === 0 && f.plainDeregister))
      extra.push(["Contact", this.contactFor(from.uri, contact, expiresShown)]);
    extra.push(
      ["Expires", expiresShown],
      ["ms-keep-alive", `UAS; tcp=no; hop-hop=yes; end-end=no; timeout=${this.keepAliveS}`],
    );
    // A de-REGISTER removes the binding: nothing was added or refreshed, so no register-action.
    if (!(expires === 0 && f.plainDeregister)) extra.push(["presence-state", this.presenceFor(action)]);
    extra.push(["Allow-Events", f.registerHeaders ? LYNC_ALLOW_EVENTS : MINIMAL_ALLOW_EVENTS]);
    if (f.registerHeaders) for (const tag of LYNC_SUPPORTED) extra.push(["Supported", tag]);
    return send(this.sign(auth.sa, this.reply(req, 200, "OK", extra)));
  }

  /**
   * A signed SUBSCRIBE (features.selfSubscriptions): the user's own subscriptions to SELF_EVENTS
   * get a signed 200 and their first notification, piggybacked or as a signed NOTIFY on this
   * flow (self-subscriptions.ts); another user's, or from a connection with no binding, a signed
   * 403; another event package a signed 489 Bad Event (RFC 6665 §3.2.2) naming ours.
   */
  private onSubscribe(
    conn: ConnState,
    sa: SecurityAssociation,
    req: SipRequest,
    send: (m: SipResponse) => void,
  ): void {
    const refuse = (m: SipResponse) => send(this.sign(sa, m));
    const event = selfEventOf(req);
    if (!event) {
      refuse(this.reply(req, 489, "Bad Event", [["Allow-Events", Object.keys(SELF_EVENTS).join(",")]]));
      return;
    }
    const b = conn.binding;
    let from = "";
    let to = "";
    try {
      from = parseNameAddr(header(req, "From") ?? "").uri;
      to = parseNameAddr(header(req, "To") ?? "").uri;
    } catch {
      // unreadable From or To: refused below
    }
    if (!b || !sameUri(from, b.aor) || !sameUri(to, b.aor)) {
      refuse(
        this.reply(req, 403, "Forbidden", [
          ["Warning", `399 ${this.o.fqdn} "Only the registered user's own subscriptions are served"`],
        ]),
      );
      return;
    }
    const key = `${header(req, "Call-ID") ?? ""}|${tagOf(header(req, "From") ?? "") ?? ""}`;
    const theirTag = tagOf(header(req, "To") ?? "");
    let dialog = conn.subscriptions.get(key);
    if (theirTag !== undefined && dialog?.toTag !== theirTag) {
      refuse(this.reply(req, 481, "Call Leg/Transaction Does Not Exist"));
      return;
    }
    if (!dialog) {
      dialog = { toTag: randomBytes(8).toString("hex").toUpperCase(), cseq: 0 };
      conn.subscriptions.set(key, dialog);
    }
    dialog.cseq++;
    const a = answerSelfSubscribe(req, event, { aor: b.aor, fqdn: this.o.fqdn, notifyCseq: dialog.cseq });
    const ok = this.reply(req, 200, "OK", a.headers, dialog.toTag);
    if (a.body !== undefined) ok.body = Buffer.from(a.body, "utf8");
    this.stats.subscriptions++;
    send(this.sign(sa, ok));
    if (header(ok, "Expires") === "0") conn.subscriptions.delete(key);
    if (!a.notify) return;
    let target = b.contactUri;
    try {
      target = parseNameAddr(header(req, "Contact") ?? "").uri;
    } catch {
      // no usable Contact: the registered one
    }
    const notify = request(
      "NOTIFY",
      target,
      [
        ["Via", `SIP/2.0/TLS ${this.o.fqdn}:5061;branch=z9hG4bK${randomBytes(8).toString("hex")}`],
        ["Max-Forwards", "70"],
        ["From", header(ok, "To") ?? ""],
        ["To", header(req, "From") ?? ""],
        ["Call-ID", header(req, "Call-ID") ?? ""],
        ["CSeq", `${dialog.cseq} NOTIFY`],
        ...a.notify.headers,
      ],
      a.notify.body,
    );
    void this.sendOnConn(conn, sa, this.sign(sa, notify), 5_000);
  }

  /**
   * The 200's Contact: ours with `;expires=`, or (features.gruu) as Lync echoes it: the URI, then
   * expires, +sip.instance and the GRUU ([MS-SIPREGE] §4.3.6), for a Contact that has an instance.
   */
  private contactFor(aor: string, contact: string, expires: string): string {
    if (!this.features.gruu) return `${contact};expires=${expires}`;
    let uri: string;
    let instance: string | undefined;
    try {
      const na = parseNameAddr(contact);
      uri = na.uri;
      instance = na.params.get("+sip.instance")?.replace(/^"|"$/g, "");
    } catch {
      return `${contact};expires=${expires}`;
    }
    const epid = instance ? gruuEpid(instance) : undefined;
    if (!instance || !epid) return `<${uri}>;expires=${expires}`;
    return `<${uri}>;expires=${expires};+sip.instance="${instance}";gruu="${aor};opaque=user:epid:${epid};gruu"`;
  }

  /** Adds, refreshes or removes the (AOR, instance) binding; returns the register-action. */
  private bind(
    conn: ConnState,
    aor: string,
    contact: string,
    expires: number,
    sa: SecurityAssociation,
  ): "added" | "refreshed" {
    let instance = "";
    let contactUri = "";
    try {
      const na = parseNameAddr(contact);
      contactUri = na.uri;
      instance = na.params.get("+sip.instance") ?? "";
    } catch {
      // a Contact we cannot read: bind by AOR alone
    }
    const key = `${aor.toLowerCase()}|${instance.replace(/^"|"$/g, "")}`;
    const now = Date.now();
    const known = (this.bindings.get(key) ?? 0) > now;
    if (expires === 0) {
      this.bindings.delete(key);
      if (conn.binding && sameUri(conn.binding.aor, aor)) conn.binding = undefined;
      return known ? "refreshed" : "added";
    }
    this.bindings.set(key, now + expires * 1000);
    conn.binding = { aor, contactUri, sa, key, at: now };
    return known ? "refreshed" : "added";
  }

  /** The configured presence-state with this answer's register-action. */
  private presenceFor(action: string): string {
    const value = `register-action="${action}"`;
    return /register-action\s*=/i.test(this.presenceState)
      ? this.presenceState.replace(/register-action\s*=\s*("[^"]*"|[^;]*)/i, value)
      : `${value};${this.presenceState}`;
  }

  private async handshake(
    conn: ConnState,
    req: SipRequest,
    params: Map<string, string>,
    gssapi: string,
  ): Promise<SipResponse> {
    let opaque = params.get("opaque");
    let pending = opaque ? conn.pending.get(opaque) : undefined;
    if (opaque && !pending) return this.challenge(req);
    if (!pending) {
      opaque = randomBytes(4).toString("hex").toUpperCase();
      pending = {
        engine: createLabServerEngine({
          cert: this.faults.innerCert?.cert ?? this.o.cert,
          key: this.faults.innerCert?.key ?? this.o.key,
          ca: [this.o.ca],
          minVersion: this.o.innerMinVersion ?? "TLSv1",
          ...(this.o.innerMaxVersion ? { maxVersion: this.o.innerMaxVersion } : {}),
        }),
        realm: REALM,
      };
      conn.pending.set(opaque, pending);
    }
    const id = opaque!;
    try {
      const step = await pending.engine.step(Buffer.from(gssapi, "base64"));
      if (step.done) {
        conn.pending.delete(id);
        pending.engine.destroy();
        this.stats.handshakes++;
        const { clientKey, serverKey } = deriveTlsDskKeys(step.done.keyMaterial);
        const sa = new SecurityAssociation({
          realm: REALM,
          targetname: this.targetname,
          opaque: id,
          version: 4,
          clientKey,
          serverKey,
          mac: macAlgForCipher(step.done.cipher),
          expiresAt: Date.now() + 8 * 3600_000,
        });
        conn.sas.set(id, { sa, clientCertPem: step.done.peerCertificatePem });
      }
      const token = step.done && this.faults.tamperServerFinished ? tamperLastRecord(step.token) : step.token;
      const challenge: Array<[string, string, boolean?]> = [
        ["opaque", id],
        ["gssapi-data", token.toString("base64")],
        ["targetname", this.targetname],
        ["realm", REALM],
        ["version", "4", false],
      ];
      return this.reply(req, 401, "Unauthorized", [
        ["WWW-Authenticate", formatAuthHeader("TLS-DSK", challenge)],
      ]);
    } catch (err) {
      conn.pending.delete(id);
      pending.engine.destroy();
      const code = (err as { code?: string }).code ?? "tls-handshake-failed";
      return this.reply(req, 403, "Forbidden", [
        ["ms-diagnostics", `1000;reason="TLS-DSK handshake failed";source="${this.o.fqdn}";code="${code}"`],
      ]);
    }
  }

  /** The live connection with `aor`'s latest unexpired binding. */
  private connFor(aor: string): ConnState | undefined {
    const now = Date.now();
    let best: ConnState | undefined;
    for (const c of this.conns) {
      const b = c.binding;
      if (!b || !sameUri(b.aor, aor) || c.socket.destroyed || !((this.bindings.get(b.key) ?? 0) > now))
        continue;
      if (!best || b.at >= best.binding!.at) best = c;
    }
    return best;
  }

  /**
   * The router's view of a registered user's flow. Outgoing: requests and final responses signed
   * with the user's SA as the registrar signs everything it sends; 1xx unsigned, as Lync sends
   * them (tls-dsk.md §4.2). Incoming responses: admitted only with the user's valid signature
   * (a 1xx may come unsigned). Should the user re-register on a new connection mid-call, the
   * leg follows the binding.
   */
  private userLeg(conn: ConnState): Leg {
    const aor = conn.binding!.aor;
    const current = () =>
      conn.binding && sameUri(conn.binding.aor, aor) && !conn.socket.destroyed ? conn : this.connFor(aor);
    return {
      kind: "user",
      id: `user:${this.o.name}:${aor.toLowerCase()}`,
      via: `SIP/2.0/TLS ${this.o.fqdn}:5061`,
      recordRoute: this.router.recordRoute,
      reliable: true,
      admit: (res) => {
        const signed = header(res, "Authorization") ?? header(res, "Proxy-Authorization");
        if (!signed) return res.status < 200;
        return this.verify(conn, res) !== undefined;
      },
      send: (m) => {
        const c = current();
        if (!c?.binding || c.socket.destroyed) return;
        if (m.kind === "response" && m.status < 200) removeHeader(m, "Authentication-Info");
        else this.sign(c.binding.sa, m);
        c.socket.write(serializeMessage(m));
      },
    };
  }

  private verify(
    conn: ConnState,
    req: SipMessage,
  ): { sa: SecurityAssociation; clientCertPem: string } | undefined {
    const authz = header(req, "Authorization") ?? header(req, "Proxy-Authorization");
    if (!authz) return undefined;
    let opaque: string | undefined;
    try {
      opaque = parseAuthHeader(authz).params.get("opaque");
    } catch {
      return undefined;
    }
    const entry = opaque ? conn.sas.get(opaque) : undefined;
    if (!entry) return undefined;
    try {
      entry.sa.verifyClient(req);
      this.stats.signedOk++;
      return entry;
    } catch {
      this.stats.signatureFailures++;
      return undefined;
    }
  }

  private sign<M extends SipMessage>(sa: SecurityAssociation, m: M): M {
    if (this.faults.omitAuthenticationInfo && (m.kind === "request" || m.status < 300)) return m;
    sa.signAsServer(m, this.random);
    if (this.faults.badRspauth) {
      const v = header(m, "Authentication-Info") ?? "";
      setHeader(
        m,
        "Authentication-Info",
        v.replace(/rspauth="([0-9a-fA-F])/, (_s, c: string) => `rspauth="${c === "0" ? "1" : "0"}`),
      );
    }
    return m;
  }
}
