/**
 * UDP for discovery (DHCPINFORM, SNTP): a node:dgram socket behind the DatagramPort interface.
 *
 * - On a LAN (`--interface`): bind 0.0.0.0:68 (the DHCP client port; needs root or
 *   CAP_NET_BIND_SERVICE) with SO_BROADCAST, and send to 255.255.255.255:67. node:dgram has no
 *   SO_BINDTODEVICE; the interface is chosen by its address (ciaddr) and the routing table, which
 *   on a one-NIC phone is the same thing.
 * - To a known server (`--dhcp-server HOST:PORT`) and for SNTP: an ephemeral port, unicast.
 * - `send` reports what the kernel said: the promise rejects with the errno error (ENETUNREACH
 *   when the limited broadcast has no route, i.e. a link without a default route), so the INFORM
 *   core can fall back to the interface's directed broadcast (`interfaceIPv4().broadcast`). A
 *   caller that ignores the promise loses nothing: a rejection is never unhandled.
 */
import { createSocket, type Socket } from "node:dgram";
import { networkInterfaces } from "node:os";
import { DiscoveryError } from "../discovery/dhcp-codec.ts";
import { type DatagramPort, directedBroadcast } from "../discovery/dhcp-inform.ts";

export interface UdpPortOptions {
  bindAddress?: string;
  /** 0 (default) = ephemeral. */
  bindPort?: number;
  broadcast?: boolean;
}

export interface UdpPort extends DatagramPort {
  local(): { address: string; port: number };
}

export async function openUdpPort(o: UdpPortOptions = {}): Promise<UdpPort> {
  const socket: Socket = createSocket({ type: "udp4", reuseAddr: false });
  const listeners: Array<(bytes: Uint8Array, from: { address: string; port: number }) => void> = [];
  let closed = false;
  socket.on("message", (msg, rinfo) => {
    const bytes = new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength);
    for (const l of [...listeners]) l(bytes, { address: rinfo.address, port: rinfo.port });
  });
  socket.on("error", () => {
    // send errors surface through the retransmit timers; a socket error must not crash the phone
  });
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) =>
      reject(
        new DiscoveryError(
          (err as NodeJS.ErrnoException).code === "EACCES" ? "udp-permission" : "udp-bind",
          `Cannot bind UDP ${o.bindAddress ?? "0.0.0.0"}:${o.bindPort ?? 0}: ${err.message}`,
          { cause: err },
        ),
      );
    socket.once("error", fail);
    socket.bind({ address: o.bindAddress ?? "0.0.0.0", port: o.bindPort ?? 0, exclusive: true }, () => {
      socket.off("error", fail);
      resolve();
    });
  });
  if (o.broadcast) socket.setBroadcast(true);
  return {
    send(bytes, host, port) {
      if (closed) return Promise.resolve();
      const sent = new Promise<void>((resolve, reject) => {
        socket.send(bytes, port, host, (err) => (err ? reject(err) : resolve()));
      });
      sent.catch(() => {}); // observed by the caller that awaits it; never an unhandled rejection
      return sent;
    },
    onMessage(cb) {
      listeners.push(cb);
    },
    close() {
      if (closed) return;
      closed = true;
      listeners.length = 0;
      socket.close();
    },
    local() {
      const a = socket.address();
      return { address: a.address, port: a.port };
    },
  };
}

/** The local IPv4 address the kernel would use to reach host (a connected UDP socket, no packet sent). */
export async function localAddressFor(host: string, port: number): Promise<string> {
  const s = createSocket("udp4");
  try {
    return await new Promise<string>((resolve, reject) => {
      s.once("error", reject);
      s.connect(port, host, () => resolve(s.address().address));
    });
  } catch (err) {
    throw new DiscoveryError("udp-route", `No route to ${host}: ${(err as Error).message}`, { cause: err });
  } finally {
    s.close();
  }
}

/** IPv4 address, MAC, netmask and directed broadcast (none for /31, /32) of a named interface. */
export function interfaceIPv4(name: string): {
  address: string;
  mac: Uint8Array;
  netmask: string;
  broadcast?: string;
} {
  const entry = (networkInterfaces()[name] ?? []).find((i) => i.family === "IPv4");
  if (!entry) throw new DiscoveryError("no-interface", `Interface ${name} has no IPv4 address`);
  const mac = Uint8Array.from(entry.mac.split(":").map((h) => Number.parseInt(h, 16)));
  const broadcast = directedBroadcast(entry.address, entry.netmask);
  return { address: entry.address, mac, netmask: entry.netmask, ...(broadcast ? { broadcast } : {}) };
}
