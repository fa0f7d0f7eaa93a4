/**
 * Call routing inside a lab registrar: the stateful proxy a Lync front end (or an SBA) is for a
 * call between two of its users (RFC 3261 §16), and the server-to-server peering that carries
 * calls between the branch and the centre across the lab's WAN link.
 *
 * Every message arrives on, and leaves on, a Leg:
 * - a registered user's TLS-DSK flow (made by registrar.ts, which checks the user's signature on
 *   the way in and signs with that user's own security association on the way out; 1xx go
 *   unsigned, as Lync sends them);
 * - the other registrar (mutual TLS with the lab CA's server certificates, no TLS-DSK: Lync servers
 *   trust each other by certificate, not by user keys);
 * - the trunk (trunk.ts: plain SIP over TCP or UDP, trusted by address, as a mediation server
 *   trusts its gateway).
 *
 * Where an initial INVITE goes (resolve()):
 * - sip:EXT@<lab domain> for a lab user registered HERE → that user's flow, Request-URI rewritten
 *   to the Contact it registered (RFC 3261 §16.5);
 * - a lab user not registered here → the peer registrar, unless the INVITE came from the peer
 *   (no ping-pong), where it ends as 480 Temporarily Unavailable;
 * - an unknown user with an extension-like user part → 404 Not Found;
 * - "+digits", user=phone, tel:, or another host (sip:x@127.0.0.1:PORT) → out a trunk: this
 *   registrar's, or the peer's when the trunk hangs off the other one;
 * - from the trunk, always by user part to a lab user (never back out the trunk).
 *
 * The proxy adds its Via and a Record-Route carrying a dialog id (lab-dlg), decrements
 * Max-Forwards, answers INVITEs with its own 100 Trying, and keeps one dialog record per call, so
 * in-dialog requests (ACK, BYE, re-INVITE, REFER, NOTIFY, INFO, UPDATE) that come back through its
 * Route go to the other side of that call. Where a call crosses between the TLS side and the trunk
 * it record-routes twice, once per side (RFC 5658), so each end gets an address it can use.
 * CANCEL is hop by hop (200 here, a CANCEL of our own downstream), and so is the ACK to a non-2xx
 * answer. Answers of its own: 404, 480, 481, 483, 487, 408 (a forwarded request got no answer:
 * Timer B/F), 504/503 (the next hop could not be reached).
 */
import { randomBytes, X509Certificate } from "node:crypto";
import * as tls from "node:tls";
import { parseNameAddr } from "../../firmware/sip/grammar/name-addr.ts";
import { parseUri, type SipUri } from "../../firmware/sip/grammar/uri.ts";
import { parseVia } from "../../firmware/sip/grammar/via.ts";
import { StreamFramer } from "../../firmware/sip/message/framer.ts";
import {
  header,
  headerKey,
  headerList,
  headers,
  removeHeader,
  request,
  response,
  type SipHeader,
  type SipMessage,
  type SipRequest,
  type SipResponse,
  setHeader,
} from "../../firmware/sip/message/message.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";
import type { UserDirectory } from "./directory.ts";
import type { LabRegistrar } from "./registrar.ts";
import type { WanLink } from "./wan-link.ts";

/** One side of a proxied call: where messages come from and go to. */
export interface Leg {
  readonly kind: "user" | "peer" | "trunk";
  /** Who is at the other end; two messages with the same id came from the same party. */
  readonly id: string;
  /** sent-protocol and sent-by of the Via the router puts on requests it sends on this leg. */
  readonly via: string;
  /** The Record-Route URI (without the dialog id) that brings in-dialog requests back this way. */
  readonly recordRoute: string;
  /** False for datagrams: the router then retransmits its requests (RFC 3261 §17.1.1.2). */
  readonly reliable: boolean;
  /** Opens the leg's connection if it needs one; rejects (code "timeout" or other) when it cannot. */
  connect?(): Promise<void>;
  /** Whether a response that arrived on this leg may be relayed (a user's must carry its signature). */
  admit(res: SipResponse): boolean;
  /** Sends a message, protected as the leg requires (a user's flow: signed with the user's SA). */
  send(m: SipMessage): void;
}

export interface TrunkDestination {
  host: string;
  port: number;
  transport: "udp" | "tcp";
}

/** What the router needs of the trunk (trunk.ts), without importing it. */
export interface TrunkPort {
  /** Where a call to this URI goes out, or undefined when the trunk knows no route for it. */
  destinationFor(uri: SipUri): TrunkDestination | undefined;
  legTo(dest: TrunkDestination): Leg;
}

/** What the router needs of its registrar. */
export interface RouterHost {
  readonly name: string;
  readonly fqdn: string;
  readonly directory: UserDirectory;
  /** The flow `aor` registered here (the latest binding) and the Contact it registered. */
  locate(aor: string): { leg: Leg; contact: string } | undefined;
}

export interface RouterTimers {
  /** No answer at all to a forwarded request: Timer B / F (64·T1). */
  noAnswerMs: number;
  /** Ringing with no final answer: Timer C (RFC 3261 wants more than 3 minutes). */
  ringMs: number;
  /** How long finished transactions stay, to absorb ACKs and retransmissions. */
  lingerMs: number;
  /** Connect timeout towards the peer registrar or a TCP trunk peer. */
  connectMs: number;
}

export interface RouterStats {
  /** Requests handed to the router, by where they came from. */
  fromUsers: number;
  fromPeer: number;
  fromTrunk: number;
  /** Requests forwarded (initial and in-dialog), by where they went. */
  toUsers: number;
  toPeer: number;
  toTrunk: number;
  inDialog: number;
  /** Responses relayed upstream. */
  relayed: number;
  /** Responses dropped: not admitted by their leg (bad or missing signature) or matching nothing. */
  dropped: number;
  cancels: number;
  /** Answers the router generated itself, by status. */
  answered: Record<number, number>;
}

interface ServerTx {
  key: string;
  leg: Leg;
  request: SipRequest;
  client?: ClientTx;
  last?: SipResponse;
  /** A final answer has gone upstream. */
  done: boolean;
  /** CANCELled before it could be forwarded. */
  cancelled: boolean;
}

interface ClientTx {
  branch: string;
  leg: Leg;
  /** The request as forwarded (CANCEL and ACK are built from it). */
  request: SipRequest;
  server: ServerTx;
  /** The dialog record this initial INVITE created (dropped again on a non-2xx). */
  dialog?: DialogRecord;
  /** A BYE: its final answer ends this dialog record. */
  ends?: DialogRecord;
  provisional: boolean;
  final: boolean;
  /** CANCEL asked for before any provisional answer (RFC 3261 §9.1: wait for one). */
  cancelWanted: boolean;
  cancelSent: boolean;
  timers: Partial<Record<TimerName, NodeJS.Timeout>>;
}

/** Timer B/F (no answer at all), Timer C (ringing too long), Timer A/E (UDP retransmission). */
type TimerName = "noAnswer" | "ring" | "retransmit";

interface DialogRecord {
  id: string;
  a: Leg;
  b: Leg;
  timer: NodeJS.Timeout;
}

type Target =
  | { kind: "user"; leg: Leg; contact: string }
  | { kind: "peer" }
  | { kind: "trunk"; dest: TrunkDestination }
  | { kind: "reject"; status: number; reason: string; warning?: string };

/** Methods that only make sense inside a dialog; with a To tag they are the router's. */
const DIALOG_METHODS = new Set(["BYE", "INFO", "UPDATE", "REFER", "NOTIFY", "PRACK", "INVITE"]);
/** A dialog record outlives any lab call; this only bounds a leak when a BYE never comes. */
const DIALOG_MAX_MS = 4 * 3600_000;
const AUTH_HEADERS = [
  "Authorization",
  "Proxy-Authorization",
  "Authentication-Info",
  "Proxy-Authentication-Info",
];

function hex(n: number): string {
  return randomBytes(n).toString("hex");
}

function copy<M extends SipMessage>(m: M): M {
  return { ...m, headers: m.headers.map((h) => ({ ...h })) };
}

function topBranch(m: SipMessage): string {
  try {
    return parseVia(header(m, "Via") ?? "").params.get("branch") ?? "";
  } catch {
    return "";
  }
}

function cseqOf(m: SipMessage): { num: string; method: string } {
  const [num = "", method = ""] = (header(m, "CSeq") ?? "").trim().split(/\s+/);
  return { num, method: method.toUpperCase() };
}

function hasToTag(m: SipMessage): boolean {
  return /;\s*tag=/i.test(header(m, "To") ?? "");
}

function insertAt(m: SipMessage, index: number, lines: SipHeader[]): void {
  m.headers.splice(index < 0 ? m.headers.length : index, 0, ...lines);
}

function firstIndex(m: SipMessage, name: string): number {
  const key = headerKey(name);
  return m.headers.findIndex((h) => headerKey(h.name) === key);
}

/** Puts our Via on top, as its own line (so CANCEL and ACK can copy exactly that line). */
function pushVia(m: SipMessage, value: string): void {
  insertAt(m, Math.max(0, firstIndex(m, "Via")), [{ name: "Via", value }]);
}

/** Removes the top via-parm (ours) from a response before it goes upstream. */
function popVia(m: SipMessage): void {
  const i = firstIndex(m, "Via");
  if (i < 0) return;
  const parms = headerList({ ...m, headers: [m.headers[i]!] }, "Via");
  if (parms.length > 1) m.headers[i] = { name: m.headers[i]!.name, value: parms.slice(1).join(", ") };
  else m.headers.splice(i, 1);
}

/** Replaces the Route header set with these elements, one per line, where the first one was. */
function setRoutes(m: SipMessage, routes: string[]): void {
  const at = firstIndex(m, "Route");
  removeHeader(m, "Route");
  insertAt(
    m,
    at,
    routes.map((value) => ({ name: "Route", value })),
  );
}

function maxForwards(m: SipRequest): number | undefined {
  const v = header(m, "Max-Forwards");
  return v === undefined ? undefined : Number.parseInt(v, 10);
}

function isPhoneNumber(uri: SipUri): boolean {
  return uri.scheme === "tel" || uri.params.get("user") === "phone" || /^\+[0-9]+$/.test(uri.user ?? "");
}

function sameHost(a: string, b: string): boolean {
  return a.toLowerCase() === b.toLowerCase();
}

export class CallRouter {
  readonly stats: RouterStats = {
    fromUsers: 0,
    fromPeer: 0,
    fromTrunk: 0,
    toUsers: 0,
    toPeer: 0,
    toTrunk: 0,
    inDialog: 0,
    relayed: 0,
    dropped: 0,
    cancels: 0,
    answered: {},
  };
  timers: RouterTimers = { noAnswerMs: 32_000, ringMs: 181_000, lingerMs: 32_000, connectMs: 3_000 };
  /** The trunk hanging off this registrar, if any (set by trunk.ts). */
  trunk: TrunkPort | undefined;
  /** The other registrar (set by peerWith()). */
  peering: RegistrarPeering | undefined;
  private readonly servers = new Map<string, ServerTx>();
  private readonly clients = new Map<string, ClientTx>();
  private readonly dialogs = new Map<string, DialogRecord>();
  private readonly lingering = new Set<NodeJS.Timeout>();

  constructor(private readonly host: RouterHost) {}

  /** The Record-Route URI of this registrar's TLS side (users and the peer). */
  get recordRoute(): string {
    return `sip:${this.host.fqdn};transport=tls;lr`;
  }

  /** Calls this router still holds state for (a leak check for tests). */
  get dialogCount(): number {
    return this.dialogs.size;
  }

  /** Links this router to the other registrar (both sides call this; see linkRegistrars()). */
  peerWith(o: PeeringOptions): RegistrarPeering {
    this.peering = new RegistrarPeering(this, o);
    return this.peering;
  }

  /**
   * Whether a request from a registered user is the router's to handle: INVITE, ACK, CANCEL,
   * anything carrying our Route, and dialog methods with a To tag. The rest (OPTIONS, SUBSCRIBE …)
   * stays with the registrar, which answered them before calls existed.
   */
  claims(req: SipRequest): boolean {
    const method = req.method.toUpperCase();
    if (method === "INVITE" || method === "ACK" || method === "CANCEL") return true;
    if (this.ownRoutes(req).dialog !== undefined) return true;
    return hasToTag(req) && DIALOG_METHODS.has(method);
  }

  /** A request from any leg (user flows: already signature-checked by the registrar). */
  onRequest(from: Leg, req: SipRequest): void {
    if (from.kind === "user") this.stats.fromUsers++;
    else if (from.kind === "peer") this.stats.fromPeer++;
    else this.stats.fromTrunk++;
    const method = req.method.toUpperCase();
    const branch = topBranch(req);
    if (method === "ACK") {
      this.onAck(from, req, branch);
      return;
    }
    if (method === "CANCEL") {
      this.onCancel(from, req, branch);
      return;
    }
    const key = `${from.id}|${branch}|${method}`;
    const known = this.servers.get(key);
    if (known) {
      // A retransmission (UDP trunk): repeat what we last said, forward nothing new.
      if (known.last) from.send(known.last);
      return;
    }
    const st: ServerTx = { key, leg: from, request: req, done: false, cancelled: false };
    this.servers.set(key, st);
    const mf = maxForwards(req);
    if (mf !== undefined && !(mf > 0)) {
      this.answer(st, 483, "Too Many Hops");
      return;
    }
    if (method === "INVITE") from.send(this.reply(req, 100, "Trying"));
    const fwd = copy(req);
    const dialog = this.popOwnRoutes(fwd);
    if (dialog !== undefined || hasToTag(req)) {
      this.inDialog(st, fwd, dialog);
      return;
    }
    if (method === "INVITE") {
      void this.routeInitial(st, fwd).catch(() => this.answer(st, 500, "Server Internal Error"));
      return;
    }
    if (method === "OPTIONS") this.answer(st, 200, "OK");
    else this.answer(st, 501, "Not Implemented");
  }

  /** A response from any leg; only answers to requests this router forwarded are expected. */
  onResponse(from: Leg, res: SipResponse): void {
    const ct = this.clients.get(topBranch(res));
    if (!ct || ct.leg.id !== from.id || !from.admit(res)) {
      this.stats.dropped++;
      return;
    }
    const { method } = cseqOf(res);
    if (method === "CANCEL") return; // the answer to our own hop-by-hop CANCEL
    const out = copy(res);
    popVia(out);
    for (const h of AUTH_HEADERS) removeHeader(out, h);
    if (res.status < 200) {
      if (!ct.provisional && method === "INVITE") {
        // An INVITE that is ringing waits for Timer C, not Timer B (RFC 3261 §16.6, §17.1.1.2).
        this.clearTimers(ct, "noAnswer");
        this.arm(ct, "ring", this.timers.ringMs, () => this.sendCancel(ct));
      }
      ct.provisional = true;
      this.clearTimers(ct, "retransmit");
      if (ct.cancelWanted) this.sendCancel(ct);
      if (res.status === 100 || ct.server.done) return; // 100 is hop by hop (RFC 3261 §16.7)
      this.relay(ct.server, out, false);
      return;
    }
    const first = !ct.final;
    ct.final = true;
    this.clearTimers(ct);
    if (first) this.linger(() => this.clients.delete(ct.branch));
    if (method === "INVITE" && res.status >= 300) {
      if (first) this.ackDownstream(ct, res);
      if (ct.dialog) this.endDialog(ct.dialog);
      if (!first || ct.server.done) return;
    } else if (!first && !(method === "INVITE" && res.status < 300)) {
      return; // a repeated non-2xx final: already relayed
    }
    if (ct.ends && first) this.endDialog(ct.ends);
    this.relay(ct.server, out, true);
  }

  /** Drops every transaction and dialog and the peer connections (the registrar stopped). */
  stop(): void {
    for (const ct of this.clients.values()) this.clearTimers(ct);
    for (const d of this.dialogs.values()) clearTimeout(d.timer);
    for (const t of this.lingering) clearTimeout(t);
    this.lingering.clear();
    this.clients.clear();
    this.servers.clear();
    this.dialogs.clear();
    this.peering?.reset();
  }

  // -- requests -------------------------------------------------------------------------------

  private inDialog(st: ServerTx, fwd: SipRequest, id: string | undefined): void {
    const d = id ? this.dialogs.get(id) : undefined;
    const to = d ? this.otherSide(d, st.leg) : undefined;
    if (!d) {
      this.answer(st, 481, "Call/Transaction Does Not Exist", [
        ["Warning", `399 ${this.host.fqdn} "no dialog of this proxy in the Route header"`],
      ]);
      return;
    }
    if (!to) {
      this.answer(st, 403, "Forbidden");
      return;
    }
    this.stats.inDialog++;
    this.forward(st, fwd, to, fwd.method.toUpperCase() === "BYE" ? { ends: d } : {});
  }

  private async routeInitial(st: ServerTx, fwd: SipRequest): Promise<void> {
    const target = this.resolve(fwd.uri, st.leg);
    if (target.kind === "reject") {
      const extra: Array<[string, string]> = target.warning
        ? [["Warning", `399 ${this.host.fqdn} "${target.warning}"`]]
        : [];
      return this.answer(st, target.status, target.reason, extra);
    }
    let leg: Leg;
    if (target.kind === "user") {
      leg = target.leg;
      fwd.uri = target.contact;
    } else if (target.kind === "peer") leg = this.peering!.leg;
    else leg = this.trunk!.legTo(target.dest);
    if (leg.connect) {
      try {
        await leg.connect();
      } catch (err) {
        const timeout = (err as { code?: string }).code === "timeout";
        return this.answer(st, timeout ? 504 : 503, timeout ? "Server Time-out" : "Service Unavailable", [
          [
            "Warning",
            `399 ${this.host.fqdn} "next hop unreachable: ${String((err as Error).message).replace(/["\\]/g, "'")}"`,
          ],
        ]);
      }
    }
    if (st.cancelled || st.done) return;
    const dialog = this.newDialog(st.leg, leg);
    // Our Record-Route on top; two of them when the call changes sides (TLS ↔ trunk), the one
    // facing the next hop first, so each end's route set starts with an address it can reach.
    const rr = [`<${leg.recordRoute};lab-dlg=${dialog.id}>`];
    if (leg.recordRoute !== st.leg.recordRoute) rr.push(`<${st.leg.recordRoute};lab-dlg=${dialog.id}>`);
    insertAt(
      fwd,
      firstIndex(fwd, "Record-Route"),
      rr.map((value) => ({ name: "Record-Route", value })),
    );
    this.forward(st, fwd, leg, { dialog });
  }

  private resolve(uriText: string, from: Leg): Target {
    const reject = (status: number, reason: string, warning?: string): Target => ({
      kind: "reject",
      status,
      reason,
      ...(warning ? { warning } : {}),
    });
    let uri: SipUri;
    try {
      uri = parseUri(uriText);
    } catch {
      return reject(400, "Bad Request-URI");
    }
    const sip = uri.scheme === "sip" || uri.scheme === "sips";
    if (!sip && uri.scheme !== "tel") return reject(416, "Unsupported URI Scheme");
    const fromPeer = from.kind === "peer";
    const fromTrunk = from.kind === "trunk";
    const { directory } = this.host;
    const ours =
      sip && (fromTrunk || sameHost(uri.host, directory.domain) || sameHost(uri.host, this.host.fqdn));
    if (ours) {
      const user = uri.user === undefined ? undefined : directory.byExtension(uri.user);
      if (user) {
        const here = this.host.locate(user.uri);
        if (here) return { kind: "user", leg: here.leg, contact: here.contact };
        if (!fromPeer && this.peering) return { kind: "peer" };
        return reject(480, "Temporarily Unavailable", `${user.uri} is not registered`);
      }
      if (fromTrunk || !isPhoneNumber(uri)) return reject(404, "Not Found", "no such user");
    }
    // Not a lab user: the PSTN or a third-party system, through a trunk.
    if (fromTrunk) return reject(404, "Not Found");
    if (this.trunk) {
      const dest = this.trunk.destinationFor(uri);
      return dest ? { kind: "trunk", dest } : reject(404, "Not Found", "no trunk route for this number");
    }
    if (!fromPeer && this.peering) return { kind: "peer" };
    return reject(404, "Not Found", "no trunk route for this number");
  }

  private forward(st: ServerTx, fwd: SipRequest, to: Leg, o: { dialog?: DialogRecord; ends?: DialogRecord }) {
    const mf = maxForwards(fwd);
    setHeader(fwd, "Max-Forwards", String(mf === undefined || Number.isNaN(mf) ? 70 : mf - 1));
    // The sender's credentials were for our hop; the next hop gets our own signature (the leg's).
    for (const h of AUTH_HEADERS) removeHeader(fwd, h);
    const branch = `z9hG4bK-${this.host.name}-${hex(8)}`;
    pushVia(fwd, `${to.via};branch=${branch}`);
    const ct: ClientTx = {
      branch,
      leg: to,
      request: fwd,
      server: st,
      provisional: false,
      final: false,
      cancelWanted: false,
      cancelSent: false,
      timers: {},
      ...o,
    };
    this.clients.set(branch, ct);
    st.client = ct;
    this.count(to);
    to.send(fwd);
    this.arm(ct, "noAnswer", this.timers.noAnswerMs, () => this.noAnswer(ct));
    if (!to.reliable) this.retransmit(ct, 500);
  }

  private onCancel(from: Leg, req: SipRequest, branch: string): void {
    this.stats.cancels++;
    const st = this.servers.get(`${from.id}|${branch}|INVITE`);
    if (!st) {
      from.send(this.reply(req, 481, "Call/Transaction Does Not Exist"));
      return;
    }
    from.send(this.reply(req, 200, "OK"));
    if (st.done) return;
    const ct = st.client;
    if (!ct) {
      st.cancelled = true;
      this.answer(st, 487, "Request Terminated");
      return;
    }
    if (ct.provisional) this.sendCancel(ct);
    else ct.cancelWanted = true;
  }

  private onAck(from: Leg, req: SipRequest, branch: string): void {
    const st = this.servers.get(`${from.id}|${branch}|INVITE`);
    // The ACK to a non-2xx answer belongs to that INVITE transaction: it ends here.
    if (st?.last && st.last.status >= 300) return;
    const fwd = copy(req);
    const id = this.popOwnRoutes(fwd);
    const d = id ? this.dialogs.get(id) : undefined;
    const to = d ? this.otherSide(d, from) : undefined;
    if (!to) return; // an ACK is never answered
    const mf = maxForwards(fwd);
    setHeader(fwd, "Max-Forwards", String(mf === undefined || Number.isNaN(mf) ? 70 : mf - 1));
    for (const h of AUTH_HEADERS) removeHeader(fwd, h);
    pushVia(fwd, `${to.via};branch=z9hG4bK-${this.host.name}-${hex(8)}`);
    this.stats.inDialog++;
    this.count(to);
    to.send(fwd);
  }

  // -- responses and transactions ---------------------------------------------------------------

  private relay(st: ServerTx, res: SipResponse, final: boolean): void {
    this.stats.relayed++;
    if (final) {
      st.last = res;
      if (!st.done) this.linger(() => this.servers.delete(st.key));
      st.done = true;
    }
    st.leg.send(res);
  }

  private answer(st: ServerTx, status: number, reason: string, extra: Array<[string, string]> = []): void {
    if (st.done) return;
    this.stats.answered[status] = (this.stats.answered[status] ?? 0) + 1;
    const res = this.reply(st.request, status, reason, extra);
    st.last = res;
    st.done = true;
    this.linger(() => this.servers.delete(st.key));
    st.leg.send(res);
  }

  private noAnswer(ct: ClientTx): void {
    if (ct.final) return;
    // Not marked final: a late non-2xx is still ACKed downstream, a late 2xx still relayed.
    this.clearTimers(ct);
    this.linger(() => this.clients.delete(ct.branch));
    if (ct.dialog) this.endDialog(ct.dialog);
    // A silent peer connection is presumed dead (a WAN blackhole does not close it): the next
    // call dials afresh instead of writing into the hole again.
    if (ct.leg.kind === "peer") this.peering?.reset();
    this.answer(ct.server, 408, "Request Timeout");
  }

  /** Hop-by-hop CANCEL of a forwarded INVITE: same Request-URI, Call-ID, From, To, Route, our Via. */
  private sendCancel(ct: ClientTx): void {
    ct.cancelWanted = false;
    if (ct.cancelSent || ct.final) return;
    ct.cancelSent = true;
    ct.leg.send(this.hopRequest(ct, "CANCEL", header(ct.request, "To") ?? ""));
  }

  /** The ACK to a non-2xx answer to a forwarded INVITE (RFC 3261 §17.1.1.3): To from the answer. */
  private ackDownstream(ct: ClientTx, res: SipResponse): void {
    ct.leg.send(this.hopRequest(ct, "ACK", header(res, "To") ?? ""));
  }

  private hopRequest(ct: ClientTx, method: string, to: string): SipRequest {
    const inv = ct.request;
    return request(method, inv.uri, [
      ["Via", header(inv, "Via") ?? ""],
      ["Max-Forwards", "70"],
      ["From", header(inv, "From") ?? ""],
      ["To", to],
      ["Call-ID", header(inv, "Call-ID") ?? ""],
      ["CSeq", `${cseqOf(inv).num} ${method}`],
      ...headers(inv, "Route").map((v): [string, string] => ["Route", v]),
    ]);
  }

  private retransmit(ct: ClientTx, interval: number): void {
    this.arm(ct, "retransmit", interval, () => {
      if (ct.provisional || ct.final) return;
      ct.leg.send(ct.request);
      this.retransmit(ct, Math.min(interval * 2, 4_000));
    });
  }

  private arm(ct: ClientTx, name: TimerName, ms: number, fn: () => void): void {
    clearTimeout(ct.timers[name]);
    const t = setTimeout(() => {
      delete ct.timers[name];
      fn();
    }, ms);
    t.unref();
    ct.timers[name] = t;
  }

  private clearTimers(ct: ClientTx, name?: TimerName): void {
    for (const n of name ? [name] : (Object.keys(ct.timers) as TimerName[])) {
      clearTimeout(ct.timers[n]);
      delete ct.timers[n];
    }
  }

  private linger(fn: () => void): void {
    const t = setTimeout(() => {
      this.lingering.delete(t);
      fn();
    }, this.timers.lingerMs);
    t.unref();
    this.lingering.add(t);
  }

  private count(to: Leg): void {
    if (to.kind === "user") this.stats.toUsers++;
    else if (to.kind === "peer") this.stats.toPeer++;
    else this.stats.toTrunk++;
  }

  // -- dialogs and routes -----------------------------------------------------------------------

  private newDialog(a: Leg, b: Leg): DialogRecord {
    const id = `${this.host.name}-${hex(8)}`;
    const timer = setTimeout(() => this.dialogs.delete(id), DIALOG_MAX_MS);
    timer.unref();
    const d: DialogRecord = { id, a, b, timer };
    this.dialogs.set(id, d);
    return d;
  }

  private endDialog(d: DialogRecord): void {
    clearTimeout(d.timer);
    this.dialogs.delete(d.id);
  }

  private otherSide(d: DialogRecord, from: Leg): Leg | undefined {
    if (from.id === d.a.id) return d.b;
    if (from.id === d.b.id) return d.a;
    return undefined;
  }

  /**
   * How many leading Route elements are ours, and the dialog id they carry. Ours: a Record-Route
   * we inserted (a lab-dlg id with our name), or a plain route naming our FQDN (a client's
   * preloaded outbound-proxy route).
   */
  private ownRoutes(m: SipMessage): { count: number; dialog?: string } {
    const routes = headerList(m, "Route");
    let count = 0;
    let dialog: string | undefined;
    for (const r of routes) {
      let uri: SipUri;
      try {
        uri = parseUri(parseNameAddr(r).uri);
      } catch {
        break;
      }
      const id = uri.params.get("lab-dlg");
      if (id?.startsWith(`${this.host.name}-`)) dialog ??= id;
      else if (id || !sameHost(uri.host, this.host.fqdn)) break;
      count++;
    }
    return dialog === undefined ? { count } : { count, dialog };
  }

  /** Removes the leading Route elements that are ours (RFC 3261 §16.4); returns their dialog id. */
  private popOwnRoutes(m: SipRequest): string | undefined {
    const { count, dialog } = this.ownRoutes(m);
    if (count > 0) setRoutes(m, headerList(m, "Route").slice(count));
    return dialog;
  }

  private reply(req: SipRequest, status: number, reason: string, extra: Array<[string, string]> = []) {
    const list: Array<[string, string]> = headers(req, "Via").map((v) => ["Via", v]);
    const to = header(req, "To") ?? "";
    list.push(["From", header(req, "From") ?? ""]);
    list.push(["To", status === 100 || hasToTag(req) ? to : `${to};tag=${hex(6)}`]);
    list.push(["Call-ID", header(req, "Call-ID") ?? ""]);
    list.push(["CSeq", header(req, "CSeq") ?? ""]);
    list.push(["Server", "handset-lab/0.1 (RTC/6.0)"], ...extra);
    return response(status, reason, list);
  }
}

// -- registrar-to-registrar peering -------------------------------------------------------------

export interface PeeringOptions {
  /** This registrar's name and server certificate, presented as the TLS client certificate. */
  self: { fqdn: string; cert: string; key: string };
  /** The peer's FQDN: its certificate must carry it, both ways. */
  peerFqdn: string;
  /** The lab CA (PEM) both certificates chain to. */
  ca: string;
  /** Where the peer's registrar is reached from here ("host:port"; through the WAN link). */
  dial: () => Promise<string>;
}

/**
 * One registrar's link to the other: mutual TLS, either side may have opened the connection, the
 * latest live one carries messages (a server reuses a peer's connection, as Lync servers do). The
 * connection is opened only when a call needs it, so a lab without calls has none.
 */
export class RegistrarPeering {
  readonly leg: Leg;
  readonly stats = { dialed: 0, accepted: 0 };
  private readonly sockets = new Set<tls.TLSSocket>();
  private dialing: Promise<tls.TLSSocket> | undefined;
  private readonly caCert: X509Certificate;

  constructor(
    private readonly router: CallRouter,
    private readonly o: PeeringOptions,
  ) {
    this.caCert = new X509Certificate(o.ca);
    this.leg = {
      kind: "peer",
      id: `peer:${o.peerFqdn.toLowerCase()}`,
      via: `SIP/2.0/TLS ${o.self.fqdn}:5061`,
      recordRoute: router.recordRoute,
      reliable: true,
      connect: async () => {
        await this.connect();
      },
      // The connection itself is authenticated (mutual TLS); there is no per-message signature.
      admit: () => true,
      send: (m) => this.send(m),
    };
  }

  /** Whether a TLS client certificate is the peer's: issued by the lab CA, valid now, its name. */
  accepts(cert: X509Certificate): boolean {
    const now = Date.now();
    return (
      cert.checkIssued(this.caCert) &&
      cert.verify(this.caCert.publicKey) &&
      Date.parse(cert.validFrom) <= now &&
      now <= Date.parse(cert.validTo) &&
      cert.checkHost(this.o.peerFqdn) !== undefined
    );
  }

  /** Takes a connection the peer opened to us (its certificate already accepted). */
  accept(socket: tls.TLSSocket): void {
    this.stats.accepted++;
    this.attach(socket);
  }

  /** Drops every connection to the peer (a new one is dialled when next needed). */
  reset(): void {
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  private current(): tls.TLSSocket | undefined {
    let live: tls.TLSSocket | undefined;
    for (const s of this.sockets) if (!s.destroyed && s.writable) live = s;
    return live;
  }

  private connect(): Promise<tls.TLSSocket> {
    const live = this.current();
    if (live) return Promise.resolve(live);
    this.dialing ??= this.dial().finally(() => {
      this.dialing = undefined;
    });
    return this.dialing;
  }

  private send(m: SipMessage): void {
    const bytes = serializeMessage(m);
    const live = this.current();
    if (live) live.write(bytes);
    // Lost if the peer cannot be reached: the transaction's timer answers for it.
    else
      this.connect().then(
        (s) => s.write(bytes),
        () => {},
      );
  }

  private async dial(): Promise<tls.TLSSocket> {
    const address = await this.o.dial();
    const i = address.lastIndexOf(":");
    const peer = this.o.peerFqdn;
    this.stats.dialed++;
    return new Promise((resolve, reject) => {
      const s = tls.connect({
        host: address.slice(0, i),
        port: Number(address.slice(i + 1)),
        cert: this.o.self.cert,
        key: this.o.self.key,
        ca: [this.o.ca],
        servername: peer,
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(peer, cert),
        minVersion: "TLSv1.2",
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(Object.assign(new Error(`${peer} did not answer at ${address}`), { code: "timeout" }));
      }, this.router.timers.connectMs);
      s.once("error", (err) => {
        clearTimeout(timer);
        s.destroy();
        reject(err);
      });
      s.once("secureConnect", () => {
        clearTimeout(timer);
        s.setNoDelay(true);
        this.attach(s);
        resolve(s);
      });
    });
  }

  private attach(socket: tls.TLSSocket): void {
    this.sockets.add(socket);
    const framer = new StreamFramer();
    socket.on("error", () => {});
    socket.on("close", () => this.sockets.delete(socket));
    socket.on("data", (chunk: Buffer) => {
      for (const ev of framer.push(chunk)) {
        if (ev.type === "message") {
          if (ev.message.kind === "request") this.router.onRequest(this.leg, ev.message);
          else this.router.onResponse(this.leg, ev.message);
        } else if (ev.type === "ping") socket.write("\r\n");
        else if (ev.type === "error" && framer.failed) {
          socket.destroy();
          return;
        }
      }
    });
  }
}

function split(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(":");
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

/**
 * Peers the pool and the SBA. The SBA reaches the pool through the WAN link's existing route; the
 * pool reaches the SBA through a reverse route on the same link, added the first time the centre
 * needs the branch (so a lab that places no calls keeps exactly the routes it always had). Both
 * directions therefore cross the WAN, and a cut stops both.
 */
export function linkRegistrars(o: { pool: LabRegistrar; sba: LabRegistrar; wan: WanLink; ca: string }): void {
  const identity = (r: LabRegistrar) => ({ fqdn: r.o.fqdn, cert: r.o.cert, key: r.o.key });
  o.sba.router.peerWith({
    self: identity(o.sba),
    peerFqdn: o.pool.o.fqdn,
    ca: o.ca,
    dial: async () => o.wan.address("pool"),
  });
  let reverse: Promise<string> | undefined;
  o.pool.router.peerWith({
    self: identity(o.pool),
    peerFqdn: o.sba.o.fqdn,
    ca: o.ca,
    dial: () => {
      reverse ??= o.wan.add({ name: "sba", target: split(o.sba.address) }).catch((err: unknown) => {
        reverse = undefined;
        throw err;
      });
      return reverse;
    },
  });
}
