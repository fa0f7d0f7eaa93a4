/**
 * The lab's WAN link: a byte-level TCP relay between the branch (where the phone and the SBA sit)
 * and the central pool (pool registrar, web services). One listening port per central service it
 * fronts, on loopback; it never terminates TLS, so certificates and TLS-DSK stay end to end.
 *
 * Faults, and what each one means here (loopback has no packets to lose, so each is the closest
 * honest model a userspace relay can give):
 *
 * - cut() — blackhole. Nothing crosses in either direction and nothing is closed: bytes that
 *   reach the relay on an established connection are discarded (counted as `dropped`), FIN and
 *   RST from either end are withheld, and latency-delayed bytes still "in flight" vanish too.
 *   New connections are accepted by the relay (the kernel completes the local handshake before
 *   a userspace relay can say anything) but no connection is opened to the centre: the client
 *   sees a connected socket whose TLS handshake never completes, which is what a SYN lost in a
 *   blackhole looks like to anything above TCP until its own timer fires. Refusing or resetting
 *   them instead would hand the phone a prompt error that a real blackhole never gives.
 * - restore() — up, latency 0. Established connections forward again from that moment on; what
 *   was discarded stays lost (a TLS peer will usually fail on the gap — the brief's "packets
 *   vanished", rather than TCP's retransmission). Connections born during the cut are then
 *   connected to the centre and get what their client queued, as a retransmitted SYN would have
 *   (a real client's stack would not have sent its data before the handshake completed). FIN and
 *   RST withheld during the cut are delivered.
 * - reset() — a one-shot event, not a mode: every connection crossing the link is aborted with
 *   an RST towards both ends (ECONNRESET on each side), queued bytes are dropped, and the link
 *   keeps its mode (up, latency, or blackhole) so new connections behave as before. This is how
 *   DESIGN.md's `/wan/reset` "connections reset" reads: a NAT or firewall flushing its state.
 * - setLatency(ms) — every chunk, FIN and RST is delayed by ms in its direction, order kept.
 *
 * Flow control is deliberately absent (loopback, small messages): the relay buffers without bound.
 */
import * as net from "node:net";
import { performance } from "node:perf_hooks";

export type WanMode = "up" | "latency" | "blackhole";

export interface WanRouteSpec {
  /** Short name, e.g. "pool" or "web". */
  name: string;
  /** The real central service. */
  target: { host: string; port: number };
  /** Where the WAN side listens; 127.0.0.1 and an ephemeral port by default. */
  listen?: { host?: string; port?: number };
}

export interface WanRouteStats {
  address: string;
  target: string;
  connections: number;
  open: number;
}

export interface WanLinkStats {
  mode: WanMode;
  latencyMs: number;
  /** Connections accepted on the branch side, ever / still open. */
  connections: number;
  open: number;
  /** Connections aborted by reset(). */
  resets: number;
  /** Bytes delivered branch → centre and centre → branch. */
  bytesToCentre: number;
  bytesToBranch: number;
  /** Bytes discarded by a blackhole or a reset. */
  bytesDropped: number;
  routes: Record<string, WanRouteStats>;
}

type Item = { kind: "data"; data: Buffer } | { kind: "end" } | { kind: "reset" };

/** One direction of one connection: an ordered queue of delayed items. */
class Lane {
  private readonly q: Array<{ at: number; item: Item }> = [];
  private timer: NodeJS.Timeout | undefined;
  /** True while the destination socket does not exist or is not yet connected. */
  held: boolean;

  constructor(
    private readonly deliver: (item: Item) => void,
    held: boolean,
  ) {
    this.held = held;
  }

  push(item: Item, delayMs: number): void {
    const last = this.q.at(-1)?.at ?? 0;
    this.q.push({ at: Math.max(performance.now() + delayMs, last), item });
    this.pump();
  }

  pump(): void {
    if (this.held || this.timer) return;
    while (this.q.length > 0 && this.q[0]!.at <= performance.now()) this.deliver(this.q.shift()!.item);
    if (this.q.length === 0) return;
    const wait = Math.max(1, Math.ceil(this.q[0]!.at - performance.now()));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump();
    }, wait);
  }

  /** Empties the queue; returns the data bytes discarded. */
  drop(): number {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let bytes = 0;
    for (const { item } of this.q.splice(0)) if (item.kind === "data") bytes += item.data.length;
    return bytes;
  }
}

function abort(s: net.Socket | undefined): void {
  if (!s || s.destroyed) return;
  try {
    s.resetAndDestroy();
  } catch {
    s.destroy();
  }
}

interface Route {
  spec: WanRouteSpec;
  server: net.Server;
  address: string;
  connections: number;
  open: number;
}

/** One connection across the link: the branch-side socket and (once opened) the centre-side one. */
class Crossing {
  server: net.Socket | undefined;
  readonly toCentre: Lane;
  readonly toBranch: Lane;
  /** FIN/RST that arrived during a blackhole, delivered on restore. */
  private withheld: Array<{ lane: Lane; item: Item }> = [];
  private clientClosed = false;
  private serverClosed = false;

  constructor(
    readonly link: WanLink,
    readonly route: Route,
    readonly client: net.Socket,
  ) {
    this.toCentre = new Lane((i) => this.deliver(this.server, i, "toCentre"), true);
    this.toBranch = new Lane((i) => this.deliver(this.client, i, "toBranch"), false);
    client.setNoDelay(true);
    client.on("error", () => {});
    client.on("data", (d: Buffer) => this.arrive(this.toCentre, { kind: "data", data: d }));
    client.on("end", () => this.arrive(this.toCentre, { kind: "end" }));
    client.on("close", (hadError) => {
      this.clientClosed = true;
      if (!this.server) this.finish();
      else this.arrive(this.toCentre, { kind: hadError ? "reset" : "end" });
      this.maybeFinish();
    });
  }

  get established(): boolean {
    return this.server !== undefined && !this.toCentre.held;
  }

  connect(): void {
    if (this.server || this.clientClosed) return;
    const { host, port } = this.route.spec.target;
    const s = net.connect({ host, port, allowHalfOpen: true, noDelay: true });
    this.server = s;
    s.on("error", () => {});
    s.on("connect", () => {
      this.toCentre.held = false;
      if (this.link.mode !== "blackhole") this.toCentre.pump();
    });
    s.on("data", (d: Buffer) => this.arrive(this.toBranch, { kind: "data", data: d }));
    s.on("end", () => this.arrive(this.toBranch, { kind: "end" }));
    s.on("close", (hadError) => {
      this.serverClosed = true;
      // A refused or failed connect reaches the branch as an RST, as it would across a router.
      const refused = this.toCentre.held;
      this.arrive(this.toBranch, { kind: hadError || refused ? "reset" : "end" });
      this.maybeFinish();
    });
  }

  private arrive(lane: Lane, item: Item): void {
    const blackhole = this.link.mode === "blackhole";
    if (blackhole && (this.established || lane === this.toBranch)) {
      if (item.kind === "data") this.link.counters.bytesDropped += item.data.length;
      else this.withheld.push({ lane, item });
      return;
    }
    // Not yet connected to the centre: the lane is held, so this waits (the client's stack holding
    // its data until the handshake completes). Otherwise it travels with the current latency.
    lane.push(item, blackhole ? 0 : this.link.latencyMs);
  }

  private deliver(s: net.Socket | undefined, item: Item, dir: "toCentre" | "toBranch"): void {
    if (!s || s.destroyed) return;
    if (item.kind === "reset") {
      abort(s);
    } else if (item.kind === "end") {
      if (!s.writableEnded) s.end();
    } else if (s.writable) {
      s.write(item.data);
      if (dir === "toCentre") this.link.counters.bytesToCentre += item.data.length;
      else this.link.counters.bytesToBranch += item.data.length;
    }
  }

  /** Cut: whatever is in flight on an established connection vanishes. */
  onCut(): void {
    if (!this.established) return;
    this.link.counters.bytesDropped += this.toCentre.drop() + this.toBranch.drop();
  }

  onRestore(): void {
    if (!this.server) this.connect();
    const withheld = this.withheld.splice(0);
    for (const { lane, item } of withheld) lane.push(item, 0);
    if (!this.toCentre.held) this.toCentre.pump();
    this.toBranch.pump();
  }

  reset(): void {
    this.link.counters.bytesDropped += this.toCentre.drop() + this.toBranch.drop();
    this.withheld = [];
    abort(this.client);
    abort(this.server);
  }

  private maybeFinish(): void {
    if (this.clientClosed && (this.serverClosed || !this.server)) this.finish();
  }

  private finished = false;
  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.toCentre.drop();
    this.toBranch.drop();
    this.route.open--;
    this.link.crossings.delete(this);
  }
}

export class WanLink {
  private modeNow: "up" | "blackhole" = "up";
  private latency = 0;
  private readonly routes = new Map<string, Route>();
  /** @internal */
  readonly crossings = new Set<Crossing>();
  /** @internal */
  readonly counters = { connections: 0, resets: 0, bytesToCentre: 0, bytesToBranch: 0, bytesDropped: 0 };

  /** A link with the given routes (more can be added later with add()). */
  static async start(routes: WanRouteSpec[] = []): Promise<WanLink> {
    const link = new WanLink();
    for (const r of routes) await link.add(r);
    return link;
  }

  /** Starts fronting one central service; resolves to the WAN-side "127.0.0.1:port". */
  async add(spec: WanRouteSpec): Promise<string> {
    if (this.routes.has(spec.name)) throw new Error(`WAN route ${spec.name} exists`);
    const server = net.createServer({ allowHalfOpen: true });
    const route: Route = { spec, server, address: "", connections: 0, open: 0 };
    server.on("error", () => {});
    server.on("connection", (client) => {
      route.connections++;
      route.open++;
      this.counters.connections++;
      const c = new Crossing(this, route, client);
      this.crossings.add(c);
      if (this.modeNow !== "blackhole") c.connect();
    });
    const host = spec.listen?.host ?? "127.0.0.1";
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(spec.listen?.port ?? 0, host, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      server.close();
      throw err;
    }
    route.address = `${host}:${(server.address() as net.AddressInfo).port}`;
    this.routes.set(spec.name, route);
    return route.address;
  }

  /** The WAN-side "host:port" of a route. */
  address(name: string): string {
    const r = this.routes.get(name);
    if (!r) throw new Error(`no WAN route ${name}`);
    return r.address;
  }

  get mode(): WanMode {
    if (this.modeNow === "blackhole") return "blackhole";
    return this.latency > 0 ? "latency" : "up";
  }

  get latencyMs(): number {
    return this.latency;
  }

  /** Blackhole: nothing crosses, nothing closes (see the file comment). */
  cut(): void {
    this.modeNow = "blackhole";
    for (const c of this.crossings) c.onCut();
  }

  /** Back up with no added latency; connections born during a cut now reach the centre. */
  restore(): void {
    this.modeNow = "up";
    this.latency = 0;
    for (const c of [...this.crossings]) c.onRestore();
  }

  /** RST every connection across the link, towards both ends; the mode is unchanged. */
  reset(): number {
    const all = [...this.crossings];
    for (const c of all) c.reset();
    this.counters.resets += all.length;
    return all.length;
  }

  /** One-way delay added to every chunk in both directions (0 for none). Kept across cut(). */
  setLatency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`bad latency ${ms}`);
    this.latency = ms;
  }

  get stats(): WanLinkStats {
    const routes: Record<string, WanRouteStats> = {};
    for (const [name, r] of this.routes) {
      routes[name] = {
        address: r.address,
        target: `${r.spec.target.host}:${r.spec.target.port}`,
        connections: r.connections,
        open: r.open,
      };
    }
    return {
      mode: this.mode,
      latencyMs: this.latency,
      connections: this.counters.connections,
      open: this.crossings.size,
      resets: this.counters.resets,
      bytesToCentre: this.counters.bytesToCentre,
      bytesToBranch: this.counters.bytesToBranch,
      bytesDropped: this.counters.bytesDropped,
      routes,
    };
  }

  async stop(): Promise<void> {
    for (const c of [...this.crossings]) {
      c.reset();
      c.finish();
    }
    await Promise.all(
      [...this.routes.values()].map((r) => new Promise<void>((resolve) => r.server.close(() => resolve()))),
    );
  }
}
