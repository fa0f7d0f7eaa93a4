/**
 * The lab's trunk: where third-party SIP user agents meet the lab, as a PSTN gateway meets Lync
 * through its mediation server. Plain SIP over TCP and UDP on loopback ports; no TLS, no TLS-DSK:
 * the gateway side is trusted by its address (127.0.0.1 and nothing else), as a mediation server
 * trusts the gateways its topology names. A TCP connection from any other address is closed at
 * once and such a datagram is ignored (`stats.refused`).
 *
 * The trunk hangs off one registrar's call router (lab.ts: the site's home registrar, i.e. the SBA
 * with its built-in gateway in the branch, the pool in hq). Inbound, the router sends a request for
 * sip:EXT@<any host> to the registered user; the user's leg signs it, as on every leg. Outbound, a
 * call to a number or a URI that is no lab user leaves here. It goes to the Request-URI's own
 * host:port when that is 127.0.0.1, otherwise to the configured trunk peer. Bodies (SDP) pass
 * untouched both ways: the lab relays signalling, never media.
 */
import * as dgram from "node:dgram";
import * as net from "node:net";
import { parseNameAddr } from "../../firmware/sip/grammar/name-addr.ts";
import { parseUri, type SipUri } from "../../firmware/sip/grammar/uri.ts";
import { StreamFramer } from "../../firmware/sip/message/framer.ts";
import {
  headerKey,
  headerList,
  type SipMessage,
  type SipRequest,
} from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";
import { serializeMessage } from "../../firmware/sip/message/serialize.ts";
import type { CallRouter, Leg, TrunkDestination, TrunkPort } from "./call-router.ts";

export interface LabTrunkOptions {
  /** The call router of the registrar this trunk hangs off. */
  router: CallRouter;
  /** Ports to listen on, 127.0.0.1 (0 or absent: any). */
  tcpPort?: number;
  udpPort?: number;
  /** Where calls to numbers go (a loopback gateway or test listener). */
  peer?: TrunkDestination;
}

export interface TrunkStats {
  /** TCP connections accepted from, or opened to, trunk peers. */
  tcpConnections: number;
  /** Datagrams received from a trusted address. */
  datagrams: number;
  /** Connections and datagrams from an untrusted address. */
  refused: number;
  /** Messages that did not parse (dropped). */
  malformed: number;
}

const HOST = "127.0.0.1";

/** The only address the trunk talks to. */
function trusted(address: string | undefined): boolean {
  return address === HOST || address === `::ffff:${HOST}`;
}

/** A TCP leg: one connection to one trunk peer, accepted or dialled on first use. */
class TcpLeg implements Leg {
  readonly kind = "trunk";
  readonly reliable = true;
  readonly id: string;
  private socket: net.Socket | undefined;
  private dialing: Promise<net.Socket> | undefined;

  constructor(
    private readonly trunk: LabTrunk,
    readonly remote: { host: string; port: number },
    socket?: net.Socket,
  ) {
    this.id = `trunk:tcp:${remote.host}:${remote.port}`;
    if (socket) this.attach(socket);
  }

  get via(): string {
    return `SIP/2.0/TCP ${this.trunk.tcpAddress}`;
  }

  get recordRoute(): string {
    return `sip:${this.trunk.tcpAddress};transport=tcp;lr`;
  }

  get open(): boolean {
    return !!this.socket && !this.socket.destroyed && !this.socket.connecting;
  }

  async connect(): Promise<void> {
    await this.connection();
  }

  admit(): boolean {
    return true; // trusted by address, checked when the bytes arrived
  }

  send(m: SipMessage): void {
    const bytes = serializeMessage(m);
    if (this.open) this.socket!.write(bytes);
    // Lost if the peer cannot be reached: the transaction's timer answers for it.
    else
      this.connection().then(
        (s) => s.write(bytes),
        () => {},
      );
  }

  close(): void {
    this.socket?.destroy();
  }

  private connection(): Promise<net.Socket> {
    if (this.open) return Promise.resolve(this.socket!);
    this.dialing ??= new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: this.remote.host, port: this.remote.port, noDelay: true });
      const timer = setTimeout(() => {
        s.destroy();
        reject(Object.assign(new Error(`no answer from ${this.id}`), { code: "timeout" }));
      }, this.trunk.router.timers.connectMs);
      s.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      s.once("connect", () => {
        clearTimeout(timer);
        this.trunk.stats.tcpConnections++;
        this.attach(s);
        resolve(s);
      });
    }).finally(() => {
      this.dialing = undefined;
    });
    return this.dialing;
  }

  private attach(s: net.Socket): void {
    this.socket = s;
    const framer = new StreamFramer();
    s.on("error", () => {});
    s.on("data", (chunk: Buffer) => {
      for (const ev of framer.push(chunk)) {
        if (ev.type === "message") this.trunk.deliver(this, ev.message);
        else if (ev.type === "ping") s.write("\r\n");
        else if (ev.type === "error") {
          this.trunk.stats.malformed++;
          if (framer.failed) {
            s.destroy();
            return;
          }
        }
      }
    });
  }
}

export class LabTrunk implements TrunkPort {
  /** Where calls to numbers (and other URIs without a loopback host:port) go. */
  peer: TrunkDestination | undefined;
  readonly stats: TrunkStats = { tcpConnections: 0, datagrams: 0, refused: 0, malformed: 0 };
  readonly router: CallRouter;
  private readonly tcp: net.Server;
  private readonly udp: dgram.Socket;
  private readonly tcpLegs = new Map<string, TcpLeg>();
  private readonly udpLegs = new Map<string, Leg>();
  private ports = { tcp: 0, udp: 0 };

  private constructor(o: LabTrunkOptions) {
    this.router = o.router;
    this.peer = o.peer;
    this.tcp = net.createServer((s) => this.onConnection(s));
    this.tcp.on("error", () => {});
    this.udp = dgram.createSocket("udp4");
    this.udp.on("error", () => {});
    this.udp.on("message", (msg, rinfo) => this.onDatagram(msg, rinfo));
  }

  /** Listens on 127.0.0.1 and takes over the router's trunk side. */
  static async start(o: LabTrunkOptions): Promise<LabTrunk> {
    const t = new LabTrunk(o);
    await new Promise<void>((resolve, reject) => {
      t.tcp.once("error", reject);
      t.tcp.listen(o.tcpPort ?? 0, HOST, () => resolve());
    });
    await new Promise<void>((resolve, reject) => {
      t.udp.once("error", reject);
      t.udp.bind(o.udpPort ?? 0, HOST, () => resolve());
    });
    t.ports = { tcp: (t.tcp.address() as net.AddressInfo).port, udp: t.udp.address().port };
    o.router.trunk = t;
    return t;
  }

  get tcpAddress(): string {
    return `${HOST}:${this.ports.tcp}`;
  }

  get udpAddress(): string {
    return `${HOST}:${this.ports.udp}`;
  }

  /** For lab.ready: `{ tcp: "127.0.0.1:P", udp: "127.0.0.1:P" }`. */
  get address(): { tcp: string; udp: string } {
    return { tcp: this.tcpAddress, udp: this.udpAddress };
  }

  /**
   * sip:anything@127.0.0.1:PORT[;transport=tcp] goes to that address (UDP unless it says TCP);
   * anything else to the configured peer. Never to the trunk itself (a loop), never off loopback.
   */
  destinationFor(uri: SipUri): TrunkDestination | undefined {
    let dest: TrunkDestination | undefined = this.peer;
    if ((uri.scheme === "sip" || uri.scheme === "sips") && trusted(uri.host) && uri.port !== undefined) {
      const tcp = (uri.params.get("transport") ?? "").toLowerCase() === "tcp";
      dest = { host: HOST, port: uri.port, transport: tcp ? "tcp" : "udp" };
    }
    if (!dest || !trusted(dest.host)) return undefined;
    const own = dest.transport === "tcp" ? this.ports.tcp : this.ports.udp;
    return dest.port === own ? undefined : dest;
  }

  legTo(dest: TrunkDestination): Leg {
    return dest.transport === "tcp" ? this.tcpLeg(dest) : this.udpLeg(dest);
  }

  /** A message from a trunk peer, to the router. */
  deliver(leg: Leg, m: SipMessage): void {
    if (m.kind === "request") {
      this.popPreloadedRoute(m);
      this.router.onRequest(leg, m);
    } else this.router.onResponse(leg, m);
  }

  /**
   * A gateway that has the trunk as its outbound proxy preloads a Route naming it (baresip's
   * `outbound=` does: `Route: <sip:127.0.0.1:P;transport=udp;lr>`). That value is this hop, and a
   * proxy removes it before routing (RFC 3261 §16.4), as a mediation server does; the router knows
   * only its FQDN and its own lab-dlg routes, so without this the value went on to the user. A
   * Record-Route of ours coming back (it carries lab-dlg) is the router's to take.
   */
  private popPreloadedRoute(m: SipRequest): void {
    const routes = headerList(m, "Route");
    let own = 0;
    for (const r of routes) {
      let uri: SipUri;
      try {
        uri = parseUri(parseNameAddr(r).uri);
      } catch {
        break;
      }
      const mine = trusted(uri.host) && (uri.port === this.ports.tcp || uri.port === this.ports.udp);
      if (!mine || uri.params.has("lab-dlg")) break;
      own++;
    }
    if (own === 0) return;
    const at = m.headers.findIndex((h) => headerKey(h.name) === "route");
    m.headers = m.headers.filter((h) => headerKey(h.name) !== "route");
    m.headers.splice(at, 0, ...routes.slice(own).map((value) => ({ name: "Route", value })));
  }

  async stop(): Promise<void> {
    if (this.router.trunk === this) this.router.trunk = undefined;
    for (const l of this.tcpLegs.values()) l.close();
    this.tcpLegs.clear();
    await new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    await new Promise<void>((resolve) => this.udp.close(() => resolve()));
  }

  private tcpLeg(remote: { host: string; port: number }, socket?: net.Socket): TcpLeg {
    const key = `${remote.host}:${remote.port}`;
    const known = this.tcpLegs.get(key);
    if (known && !socket) return known;
    known?.close();
    const leg = new TcpLeg(this, remote, socket);
    this.tcpLegs.set(key, leg);
    return leg;
  }

  private udpLeg(remote: { host: string; port: number }): Leg {
    const key = `${remote.host}:${remote.port}`;
    let leg = this.udpLegs.get(key);
    if (!leg) {
      leg = {
        kind: "trunk",
        id: `trunk:udp:${key}`,
        via: `SIP/2.0/UDP ${this.udpAddress}`,
        recordRoute: `sip:${this.udpAddress};transport=udp;lr`,
        reliable: false,
        admit: () => true,
        send: (m) => this.udp.send(serializeMessage(m), remote.port, remote.host),
      };
      this.udpLegs.set(key, leg);
    }
    return leg;
  }

  private onConnection(s: net.Socket): void {
    if (!trusted(s.remoteAddress)) {
      this.stats.refused++;
      s.destroy();
      return;
    }
    this.stats.tcpConnections++;
    s.setNoDelay(true);
    const remote = { host: HOST, port: s.remotePort ?? 0 };
    const leg = this.tcpLeg(remote, s);
    const key = `${remote.host}:${remote.port}`;
    s.on("close", () => {
      if (this.tcpLegs.get(key) === leg) this.tcpLegs.delete(key);
    });
  }

  private onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (!trusted(rinfo.address)) {
      this.stats.refused++;
      return;
    }
    this.stats.datagrams++;
    if (msg.toString("latin1").trim() === "") return; // a keep-alive
    let m: SipMessage;
    try {
      m = parseMessage(msg);
    } catch {
      this.stats.malformed++;
      return;
    }
    this.deliver(this.udpLeg({ host: HOST, port: rinfo.port }), m);
  }
}
