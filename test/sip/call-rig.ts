/**
 * A pool for call tests, on a ManualClock: phones (UserAgentCores) on fake flows, and between
 * them a relay that does what a Lync front end does to the phone's signatures. Every message a
 * phone sends is checked against that phone's real TLS-DSK SecurityAssociation (verifyClient:
 * unsigned or badly signed → refused at the pool and recorded); it is then routed by the user
 * part of the Request-URI (requests) or back to the sender of the request (responses), and
 * signed for the receiver as its server (signAsServer), except 1xx, which Lync sends unsigned.
 * Messages cross as bytes (serialized and parsed again) after `latencyMs` of simulated time.
 *
 * `tamper` decides each message's fate on the way: pass, drop, unsigned, bad-signature (right
 * SA, wrong key: rspauth fails) or other-sa (another SA's realm/targetname: discarded).
 */
import { createHash } from "node:crypto";
import { ManualClock } from "../../firmware/core/clock.ts";
import { type HandsetError, TransportError } from "../../firmware/core/errors.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import { parseUri } from "../../firmware/sip/grammar/uri.ts";
import { header, removeHeader, type SipMessage } from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";
import type { Call, CallEvent, CallOptions } from "../../firmware/sip/session/call.ts";
import { CallAgent } from "../../firmware/sip/session/call-agent.ts";
import type {
  MediaAgreement,
  MediaDescription,
  MediaPort,
  MediaRefusal,
  OfferPurpose,
} from "../../firmware/sip/session/media-port.ts";
import { SecurityAssociation } from "../../firmware/sip/tls-dsk/security-association.ts";
import { clientKeyOfRequest, clientKeyOfResponse } from "../../firmware/sip/transaction/matching.ts";
import { UserAgentCore, type UserAgentCoreOptions } from "../../firmware/sip/user-agent-core.ts";

export const REALM = "SIP Communications Service";
export const TARGETNAME = "pool.lab.test";
export const DOMAIN = "lab.test";

export type Fate = "pass" | "drop" | "unsigned" | "bad-signature" | "other-sa";

export interface WireEntry {
  at: number;
  from: string;
  to: string;
  /** "INVITE", "ACK" … or "200 INVITE", "180 INVITE" … */
  what: string;
  fate: Fate;
  message: SipMessage;
}

function key(name: string, side: string): Buffer {
  return createHash("sha256").update(`${name}/${side}`).digest();
}

function sa(name: string, o: { serverKeyOf?: string; targetname?: string } = {}): SecurityAssociation {
  return new SecurityAssociation({
    realm: REALM,
    targetname: o.targetname ?? TARGETNAME,
    opaque: "4A3F2C1B",
    version: 4,
    clientKey: key(name, "client"),
    serverKey: key(o.serverKeyOf ?? name, "server"),
    expiresAt: Date.UTC(2030, 0, 1),
  });
}

class PoolFlow implements Flow {
  readonly remote = `${TARGETNAME}:5061`;
  readonly peerCertificatePem = "";
  private readonly messageListeners: Array<(m: SipMessage) => void> = [];
  private readonly pongListeners: Array<() => void> = [];
  private readonly closeListeners: Array<(r?: HandsetError) => void> = [];
  closed = false;

  constructor(
    private readonly pool: FakePool,
    readonly user: string,
    readonly local: { address: string; port: number },
  ) {}

  send(message: SipMessage): void {
    if (!this.closed) this.pool.fromPhone(this, message);
  }

  sendPing(): void {
    if (!this.closed) this.pool.pong(this);
  }

  close(): void {
    this.shut(undefined);
  }

  shut(reason: HandsetError | undefined): void {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.closeListeners) l(reason);
  }

  deliver(message: SipMessage): void {
    if (!this.closed) for (const l of this.messageListeners) l(message);
  }

  pongNow(): void {
    if (!this.closed) for (const l of this.pongListeners) l();
  }

  onMessage(l: (m: SipMessage) => void): void {
    this.messageListeners.push(l);
  }

  onPong(l: () => void): void {
    this.pongListeners.push(l);
  }

  onClose(l: (r?: HandsetError) => void): void {
    this.closeListeners.push(l);
  }
}

interface End {
  flow: PoolFlow;
  /** The pool's copy of the phone's SA (verifyClient, signAsServer). */
  sa: SecurityAssociation;
  /** Same SA identity, wrong server key: what a forger (or a broken pool) would sign with. */
  wrong: SecurityAssociation;
  /** Another SA's identity: the phone discards it as not for its SA. */
  other: SecurityAssociation;
}

const copy = (m: SipMessage): SipMessage => parseMessage(serializeMessage(m));

export function describeMessage(m: SipMessage): string {
  if (m.kind === "request") return m.method;
  const method = (header(m, "CSeq") ?? "").trim().split(/\s+/)[1] ?? "";
  return `${m.status} ${method}`;
}

export class FakePool {
  readonly clock = new ManualClock();
  latencyMs = 0;
  /** Every message is dropped (a WAN cut). */
  cut = false;
  tamper: (message: SipMessage, from: string, to: string) => Fate = () => "pass";
  readonly wire: WireEntry[] = [];
  /** Messages a phone sent that the pool could not verify (each one a bug in the phone). */
  readonly refused: Array<{ from: string; what: string; error: string }> = [];
  private readonly ends = new Map<string, End>();
  private readonly routes = new Map<string, string>();
  private readonly random = new SeededRandom(4242);

  /** A flow for `user` and the phone's side of its SA. */
  connect(user: string, address: string): { flow: PoolFlow; sa: SecurityAssociation } {
    const flow = new PoolFlow(this, user, { address, port: 5061 });
    this.ends.set(user, {
      flow,
      sa: sa(user),
      wrong: sa(user, { serverKeyOf: `${user}-forged` }),
      other: sa(user, { targetname: "other.lab.test" }),
    });
    return { flow, sa: sa(user) };
  }

  /** Ends a phone's flow as a reset connection would. */
  reset(user: string): void {
    this.ends.get(user)?.flow.shut(new TransportError("connection-reset", "reset by the test"));
  }

  /** What crossed (or was meant to), as "alice→bob INVITE", "bob→alice 180 INVITE" … */
  trace(filter: (e: WireEntry) => boolean = () => true): string[] {
    return this.wire
      .filter(filter)
      .map((e) => `${e.from}→${e.to} ${e.what}${e.fate === "pass" ? "" : ` (${e.fate})`}`);
  }

  /** Messages delivered to `to` (passed the pool), optionally of one kind ("INVITE", "200 INVITE"). */
  delivered(to: string, what?: string): WireEntry[] {
    return this.wire.filter(
      (e) => e.to === to && e.fate !== "drop" && (what === undefined || e.what === what),
    );
  }

  fromPhone(flow: PoolFlow, original: SipMessage): void {
    const from = flow.user;
    const end = this.ends.get(from)!;
    const msg = copy(original);
    const what = describeMessage(msg);
    try {
      end.sa.verifyClient(msg);
    } catch (err) {
      this.refused.push({ from, what, error: String(err) });
      return;
    }
    removeHeader(msg, "Authorization");
    let to: string | undefined;
    if (msg.kind === "request") {
      try {
        to = parseUri(msg.uri).user;
      } catch {
        to = undefined;
      }
      const k = clientKeyOfRequest(msg);
      if (k) this.routes.set(k, from);
    } else {
      const k = clientKeyOfResponse(msg);
      to = k ? this.routes.get(k) : undefined;
    }
    const target = to ? this.ends.get(to) : undefined;
    if (!to || !target) {
      this.wire.push({ at: this.clock.monotonic(), from, to: to ?? "?", what, fate: "drop", message: msg });
      return;
    }
    const fate: Fate = this.cut ? "drop" : this.tamper(msg, from, to);
    this.wire.push({ at: this.clock.monotonic(), from, to, what, fate, message: msg });
    if (fate === "drop") return;
    this.sendTo(to, msg, fate);
  }

  /** Delivers a message the test made to `to`, signed as the pool would (or as `fate` says). */
  inject(to: string, msg: SipMessage, fate: Fate = "pass"): void {
    this.wire.push({
      at: this.clock.monotonic(),
      from: "pool",
      to,
      what: describeMessage(msg),
      fate,
      message: msg,
    });
    this.sendTo(to, copy(msg), fate);
  }

  pong(flow: PoolFlow): void {
    this.clock.setTimer(this.latencyMs, () => flow.pongNow());
  }

  private sendTo(to: string, msg: SipMessage, fate: Fate): void {
    const target = this.ends.get(to)!;
    const unsignedProvisional = msg.kind === "response" && msg.status < 200;
    if (!unsignedProvisional) {
      if (fate === "pass") target.sa.signAsServer(msg, this.random);
      else if (fate === "bad-signature") target.wrong.signAsServer(msg, this.random);
      else if (fate === "other-sa") target.other.signAsServer(msg, this.random);
    }
    const bytes = serializeMessage(msg);
    this.clock.setTimer(this.latencyMs, () => target.flow.deliver(parseMessage(bytes)));
  }
}

// ---- media ------------------------------------------------------------------------------------

export interface FakeMediaLog {
  entries: string[];
}

/**
 * A media port that writes just enough SDP to be told apart: the o= version, the profile, one
 * a=crypto line (unless `offerCrypto` is off) and the direction. `srtp: "required"` refuses an
 * offer without a=crypto, as the real port refuses one that drops SRTP.
 */
export class FakeMedia implements MediaPort {
  srtp: "required" | "optional" = "optional";
  offerCrypto = true;
  /** Refuse every answer (as the real port does one that breaks our offer). */
  refuseAnswers = false;
  version = 0;
  held = false;
  closed = false;
  pending: string | undefined;
  agreed: string | undefined;
  readonly log: string[] = [];
  /** Key presses the phone sent through this port (the real port's sendDigit: RFC 4733 events). */
  readonly digits: Array<{ digit: string; durationMs: number | undefined }> = [];

  constructor(readonly address: string) {}

  private describe(direction: string, crypto: boolean): string {
    return [
      "v=0",
      `o=- 7 ${this.version} IN IP4 ${this.address}`,
      "s=-",
      `c=IN IP4 ${this.address}`,
      "t=0 0",
      `m=audio 40000 RTP/${crypto ? "SAVP" : "AVP"} 0 101`,
      ...(crypto
        ? ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"]
        : []),
      `a=${direction}`,
      "",
    ].join("\r\n");
  }

  createOffer(o: { purpose: OfferPurpose }): MediaDescription | MediaRefusal {
    // RFC 4028 §10: a refresh repeats the session description (same o= version).
    if (o.purpose !== "refresh" || this.version === 0) this.version++;
    const dir = this.held ? "sendonly" : "sendrecv";
    this.pending = this.describe(dir, this.offerCrypto);
    this.log.push(`offer ${o.purpose} ${dir}`);
    return { kind: "sdp", sdp: this.pending };
  }

  answerOffer(sdp: string): MediaDescription | MediaRefusal {
    const crypto = /a=crypto:/.test(sdp);
    if (this.srtp === "required" && !crypto) {
      this.log.push("refused offer");
      return {
        kind: "refused",
        code: "srtp-required",
        reason: "Encryption Levels not compatible",
        warning: { code: 305, text: "SRTP is required" },
      };
    }
    const theirs = /a=(sendonly|recvonly|inactive|sendrecv)/.exec(sdp)?.[1] ?? "sendrecv";
    const remoteHold = theirs === "sendonly" || theirs === "inactive";
    // RFC 3264 §6.1: we send where they receive; we receive where they send, unless we hold them
    // (holding means: we send, at most music, and take nothing).
    const send = theirs === "sendrecv" || theirs === "recvonly";
    const receive = (theirs === "sendrecv" || theirs === "sendonly") && !this.held;
    const dir = send ? (receive ? "sendrecv" : "sendonly") : receive ? "recvonly" : "inactive";
    this.version++;
    this.agreed = this.describe(dir, crypto);
    this.log.push(`answer ${dir}`);
    return { kind: "sdp", sdp: this.agreed, remoteHold };
  }

  acceptAnswer(sdp: string): MediaAgreement | MediaRefusal {
    if (!this.pending) return { kind: "refused", code: "no-offer", reason: "no offer outstanding" };
    if (this.refuseAnswers)
      return { kind: "refused", code: "answer-codec-not-offered", reason: "bad answer" };
    this.pending = undefined;
    this.agreed = sdp;
    this.log.push("accepted answer");
    return { kind: "agreed" };
  }

  rollback(): void {
    this.pending = undefined;
    this.log.push("rollback");
  }

  hold(on: boolean): void {
    this.held = on;
  }

  connected(): void {
    this.log.push("connected");
  }

  /** As the real port: false before media runs (nothing agreed) or after close. */
  sendDigit(digit: string, durationMs?: number): boolean {
    if (!this.agreed || this.closed) return false;
    this.digits.push({ digit, durationMs });
    return true;
  }

  close(): void {
    this.closed = true;
  }
}

// ---- phones ----------------------------------------------------------------------------------

export interface Phone {
  user: string;
  aor: string;
  contact: string;
  core: UserAgentCore;
  agent: CallAgent;
  flow: PoolFlow;
  /** The media ports made for this phone's calls, in order. */
  media: FakeMedia[];
  /** Incoming calls, in order. */
  incoming: Call[];
  events: Array<{ call: Call; e: CallEvent }>;
  securityFailures: string[];
}

export interface PhoneOptions {
  address?: string;
  /** Our Contact; default a GRUU-like `sip:<user>@lab.test;gruu;opaque=…`. */
  contact?: string;
  call?: Partial<Omit<CallOptions, "core" | "clock" | "random" | "logger" | "media">>;
  core?: Partial<UserAgentCoreOptions>;
  /** Set up the media port of each new call. */
  media?: (m: FakeMedia) => void;
  /** No onIncoming listener (the agent then answers 480). */
  noIncomingListener?: boolean;
  /** Runs first for each incoming call (answer, reject …) before the agent rings it. */
  onIncoming?: (call: Call) => void;
}

let seed = 100;

export function phone(pool: FakePool, user: string, o: PhoneOptions = {}): Phone {
  const address = o.address ?? `10.0.0.${10 + (seed++ % 200)}`;
  const { flow, sa: phoneSa } = pool.connect(user, address);
  const random = new SeededRandom(seed++);
  const core = new UserAgentCore(flow, { clock: pool.clock, random, logger: silentLogger, ...o.core });
  core.setSecurityAssociation(phoneSa);
  const contact = o.contact ?? `sip:${user}@${DOMAIN};gruu;opaque=user:epid:${user}0000`;
  const p: Phone = {
    user,
    aor: `sip:${user}@${DOMAIN}`,
    contact,
    core,
    flow,
    media: [],
    incoming: [],
    events: [],
    securityFailures: [],
    agent: undefined as unknown as CallAgent,
  };
  core.onSecurityFailure = (e) => p.securityFailures.push(e.code);
  p.agent = new CallAgent({
    core,
    clock: pool.clock,
    random,
    logger: silentLogger,
    identity: { aor: p.aor, displayName: user[0]!.toUpperCase() + user.slice(1), epid: `${user}0000` },
    contact,
    ...o.call,
    media: () => {
      const m = new FakeMedia(address);
      o.media?.(m);
      p.media.push(m);
      return m;
    },
  });
  if (!o.noIncomingListener)
    p.agent.onIncoming((call) => {
      p.incoming.push(call);
      call.on((e) => p.events.push({ call, e }));
      o.onIncoming?.(call);
    });
  return p;
}

/** Places a call and records its events in the phone. */
export function dial(p: Phone, target: string): Call {
  return p.agent.dial(target, (e, call) => p.events.push({ call, e }));
}

/** State names a call went through. */
export function states(p: Phone, call: Call): string[] {
  return p.events
    .filter((x) => x.call === call && x.e.type === "state")
    .map((x) => (x.e.type === "state" ? x.e.state : ""));
}

export function eventsOf<T extends CallEvent["type"]>(
  p: Phone,
  call: Call,
  type: T,
): Array<Extract<CallEvent, { type: T }>> {
  return p.events
    .filter((x) => x.call === call && x.e.type === type)
    .map((x) => x.e as Extract<CallEvent, { type: T }>);
}

/** Moves simulated time (0: lets everything in flight at this instant arrive). */
export function settle(pool: FakePool, ms = 0): void {
  pool.clock.advance(ms);
}

/** A bare core on the pool (no call layer), for the core's own tests. */
export function bareCore(
  pool: FakePool,
  user: string,
  o: Partial<UserAgentCoreOptions> = {},
): { core: UserAgentCore; flow: PoolFlow; securityFailures: string[]; closed: string[] } {
  const { flow, sa: phoneSa } = pool.connect(user, `10.0.1.${10 + (seed++ % 200)}`);
  const core = new UserAgentCore(flow, {
    clock: pool.clock,
    random: new SeededRandom(seed++),
    logger: silentLogger,
    ...o,
  });
  core.setSecurityAssociation(phoneSa);
  const out = { core, flow, securityFailures: [] as string[], closed: [] as string[] };
  core.onSecurityFailure = (e) => out.securityFailures.push(e.code);
  core.onFlowClosed = (r) => out.closed.push(r?.code ?? "asked");
  return out;
}
