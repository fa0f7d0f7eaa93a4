/**
 * The lab's DHCP server for discovery: answers DHCPINFORM with DHCPACK (yiaddr 0.0.0.0), as a
 * Lync registrar's built-in DHCP component or dnsmasq would. Options 43 and 120 go only to vendor
 * class MS-UC-Client (substring match, like dnsmasq); 42 and 2 to everyone.
 *
 * Written independently of firmware/discovery/dhcp-codec.ts on purpose, so that the phone's
 * codec is checked against a second encoder; option 43 follows dnsmasq's layout (sub-options in
 * reverse order, then 0xFF).
 */
import { createSocket } from "node:dgram";

export interface DhcpResponderOptions {
  /** 0 = ephemeral (default). */
  port?: number;
  host?: string;
  /** e.g. https://pool.lab.test:443/CertProv/CertProvisioningService.svc */
  certProvUrl: string;
  /** Option 120 names, in order of preference (RFC 3361 allows a list: home first, then backup). */
  registrarFqdn: string | string[];
  /** IPv4 addresses for option 42 ("host:port" accepted; the port cannot be carried and is dropped). */
  ntp: string[];
  timeOffsetS?: number;
}

export interface DhcpResponder {
  address: string;
  /** How many DHCPINFORMs were answered. */
  answered(): number;
  stop(): Promise<void>;
}

function tlv(code: number, value: Uint8Array): number[] {
  const out: number[] = [];
  for (let at = 0; at < value.length || at === 0; at += 255) {
    const piece = value.subarray(at, at + 255);
    out.push(code, piece.length, ...piece);
    if (value.length === 0) break;
  }
  return out;
}

const ascii = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

function dnsName(name: string): number[] {
  const out: number[] = [];
  for (const label of name.replace(/\.$/, "").split(".")) out.push(label.length, ...ascii(label));
  out.push(0);
  return out;
}

function option43(url: string): Uint8Array {
  const u = new URL(url);
  const port = u.port || (u.protocol === "http:" ? "80" : "443");
  const subs: Array<[number, string]> = [
    [1, "MS-UC-Client"],
    [2, u.protocol.replace(":", "")],
    [3, u.hostname],
    [4, port],
    [5, `${u.pathname}${u.search}`],
  ];
  const out: number[] = [];
  for (const [code, text] of subs.reverse()) out.push(code, text.length, ...ascii(text));
  out.push(255);
  return Uint8Array.from(out);
}

function parseOptions(msg: Buffer): Map<number, Buffer> | undefined {
  if (msg.length < 240 || msg.readUInt32BE(236) !== 0x63825363) return undefined;
  const opts = new Map<number, Buffer>();
  let i = 240;
  while (i < msg.length) {
    const code = msg[i]!;
    if (code === 0) {
      i++;
      continue;
    }
    if (code === 255 || i + 1 >= msg.length) break;
    const len = msg[i + 1]!;
    if (i + 2 + len > msg.length) return undefined;
    const v = msg.subarray(i + 2, i + 2 + len);
    const prev = opts.get(code);
    opts.set(code, prev ? Buffer.concat([prev, v]) : Buffer.from(v));
    i += 2 + len;
  }
  return opts;
}

export async function startDhcpResponder(o: DhcpResponderOptions): Promise<DhcpResponder> {
  const host = o.host ?? "127.0.0.1";
  const socket = createSocket("udp4");
  let answered = 0;
  socket.on("message", (msg, rinfo) => {
    const opts = parseOptions(msg);
    if (!opts || msg[0] !== 1 || opts.get(53)?.[0] !== 8) return;
    const vendor = opts.get(60)?.toString("latin1") ?? "";
    const options: number[] = [
      ...tlv(53, Uint8Array.of(5)),
      ...tlv(54, Uint8Array.from(host.split(".").map(Number))),
    ];
    if (vendor.includes("MS-UC-Client")) {
      options.push(...tlv(43, option43(o.certProvUrl)));
      options.push(...tlv(60, ascii("MS-UC-Client")));
      const names = Array.isArray(o.registrarFqdn) ? o.registrarFqdn : [o.registrarFqdn];
      options.push(...tlv(120, Uint8Array.from([0, ...names.flatMap(dnsName)])));
    }
    if (o.ntp.length > 0) {
      const addrs = o.ntp.flatMap((n) => n.replace(/:\d+$/, "").split(".").map(Number));
      options.push(...tlv(42, Uint8Array.from(addrs)));
    }
    if (o.timeOffsetS !== undefined) {
      const b = Buffer.alloc(4);
      b.writeInt32BE(o.timeOffsetS);
      options.push(...tlv(2, b));
    }
    options.push(255);
    const reply = Buffer.alloc(Math.max(300, 240 + options.length));
    msg.copy(reply, 0, 0, 236); // xid, flags, ciaddr, giaddr, chaddr as asked
    reply[0] = 2;
    reply[3] = 0;
    reply.fill(0, 16, 24); // yiaddr 0 (INFORM), siaddr 0
    reply.fill(0, 44, 236); // sname, file
    reply.writeUInt32BE(0x63825363, 236);
    Buffer.from(options).copy(reply, 240);
    answered++;
    socket.send(reply, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once("error", reject);
    socket.bind(o.port ?? 0, host, () => {
      socket.off("error", reject);
      resolve();
    });
  });
  return {
    address: `${host}:${socket.address().port}`,
    answered: () => answered,
    stop: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
