/**
 * DHCP messages on the wire (RFC 2131 §2, options per RFC 2132), with RFC 3396 long options:
 * a value longer than 255 bytes is split into consecutive instances of the same code on encode,
 * and every instance of a code is joined back together on decode (options field, then `file`,
 * then `sname` when option 52 overloads them, as RFC 3396 §5 orders it).
 *
 * Pure: bytes in, a typed message out. The only exception that ever leaves this module is a
 * DiscoveryError, whatever the input.
 */
import { HandsetError } from "../core/errors.ts";

/** Every expected failure of discovery: malformed packets and options, timeouts, no answers. */
export class DiscoveryError extends HandsetError {
  /** The DHCP option the problem concerns, when there is one. */
  readonly option: number | undefined;

  constructor(code: string, message: string, options?: { cause?: unknown; option?: number }) {
    super(code, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.option = options?.option;
  }
}

export const DHCP_MAGIC_COOKIE = 0x63825363;
export const BOOTP_MIN_LENGTH = 300;
const FIXED_LENGTH = 236;

export const DhcpMessageType = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;

export const DhcpOption = {
  pad: 0,
  subnetMask: 1,
  timeOffset: 2,
  router: 3,
  timeServer: 4,
  dnsServer: 6,
  domainName: 15,
  ntpServers: 42,
  vendorSpecific: 43,
  overload: 52,
  messageType: 53,
  serverId: 54,
  parameterRequestList: 55,
  vendorClassId: 60,
  clientId: 61,
  posixTz: 100,
  tzName: 101,
  sipServers: 120,
  end: 255,
} as const;

export interface DhcpMessage {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The client hardware address, hlen bytes (at most 16). */
  chaddr: Uint8Array;
  sname: string;
  file: string;
  /** Option code → value, in first-seen order; instances of one code already concatenated. */
  options: Map<number, Uint8Array>;
}

export const BROADCAST_FLAG = 0x8000;

function malformed(message: string): DiscoveryError {
  return new DiscoveryError("dhcp-malformed", message);
}

export function ipv4ToBytes(text: string): Uint8Array {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  const parts = m ? m.slice(1).map(Number) : [];
  if (parts.length !== 4 || parts.some((p) => p > 255))
    throw new DiscoveryError("dhcp-bad-address", `Not an IPv4 address: "${text}"`);
  return Uint8Array.from(parts);
}

export function bytesToIpv4(b: Uint8Array, at = 0): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

function readU32(b: Uint8Array, at: number): number {
  return ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) >>> 0;
}

function writeU32(b: Uint8Array, at: number, v: number): void {
  b[at] = (v >>> 24) & 0xff;
  b[at + 1] = (v >>> 16) & 0xff;
  b[at + 2] = (v >>> 8) & 0xff;
  b[at + 3] = v & 0xff;
}

const latin1 = new TextDecoder("latin1");

function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return latin1.decode(end < 0 ? b : b.subarray(0, end));
}

/** Concatenates byte arrays. */
export function concatBytes(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Walks one options area (code, length, value…), skipping pads and stopping at END. Appends
 * every instance to `into` (RFC 3396 concatenation). A length running past the area is malformed;
 * a missing END marker is tolerated, as most clients and servers do.
 */
function readOptionArea(area: Uint8Array, where: string, into: Map<number, Uint8Array[]>): void {
  let i = 0;
  while (i < area.length) {
    const code = area[i]!;
    if (code === DhcpOption.pad) {
      i++;
      continue;
    }
    if (code === DhcpOption.end) return;
    if (i + 1 >= area.length) throw malformed(`Option ${code} in ${where} has no length byte`);
    const len = area[i + 1]!;
    if (i + 2 + len > area.length)
      throw malformed(`Option ${code} in ${where} claims ${len} bytes, only ${area.length - i - 2} left`);
    const list = into.get(code);
    const value = area.slice(i + 2, i + 2 + len);
    if (list) list.push(value);
    else into.set(code, [value]);
    i += 2 + len;
  }
}

/** Decodes a DHCP message. Throws only DiscoveryError ("dhcp-malformed"). */
export function decodeDhcp(bytes: Uint8Array): DhcpMessage {
  if (!(bytes instanceof Uint8Array)) throw malformed("Not a byte array");
  if (bytes.length < FIXED_LENGTH + 4) throw malformed(`DHCP message too short (${bytes.length} bytes)`);
  if (readU32(bytes, FIXED_LENGTH) !== DHCP_MAGIC_COOKIE) throw malformed("Missing DHCP magic cookie");
  const hlen = bytes[2]!;
  if (hlen > 16) throw malformed(`Hardware address length ${hlen} exceeds 16`);
  const parts = new Map<number, Uint8Array[]>();
  readOptionArea(bytes.subarray(FIXED_LENGTH + 4), "options", parts);
  const overload = parts.get(DhcpOption.overload);
  let overloadValue = 0;
  if (overload) {
    const v = concatBytes(overload);
    if (v.length !== 1 || v[0]! < 1 || v[0]! > 3) throw malformed("Option 52 (overload) must be 1, 2 or 3");
    overloadValue = v[0]!;
    if (overloadValue & 1) readOptionArea(bytes.subarray(108, 236), "file", parts);
    if (overloadValue & 2) readOptionArea(bytes.subarray(44, 108), "sname", parts);
  }
  const options = new Map<number, Uint8Array>();
  for (const [code, list] of parts) options.set(code, list.length === 1 ? list[0]! : concatBytes(list));
  return {
    op: bytes[0]!,
    htype: bytes[1]!,
    hlen,
    hops: bytes[3]!,
    xid: readU32(bytes, 4),
    secs: (bytes[8]! << 8) | bytes[9]!,
    flags: (bytes[10]! << 8) | bytes[11]!,
    ciaddr: bytesToIpv4(bytes, 12),
    yiaddr: bytesToIpv4(bytes, 16),
    siaddr: bytesToIpv4(bytes, 20),
    giaddr: bytesToIpv4(bytes, 24),
    chaddr: bytes.slice(28, 28 + hlen),
    sname: overloadValue & 2 ? "" : cString(bytes.subarray(44, 108)),
    file: overloadValue & 1 ? "" : cString(bytes.subarray(108, 236)),
    options,
  };
}

/** Option instances for one value: split into ≤255-byte pieces (RFC 3396); an empty value is one instance. */
export function encodeOption(code: number, value: Uint8Array): Uint8Array {
  if (code === DhcpOption.pad || code === DhcpOption.end)
    throw new DiscoveryError("dhcp-encode", `Option ${code} carries no value`);
  const pieces: Uint8Array[] = [];
  let at = 0;
  do {
    const len = Math.min(255, value.length - at);
    const piece = new Uint8Array(2 + len);
    piece[0] = code;
    piece[1] = len;
    piece.set(value.subarray(at, at + len), 2);
    pieces.push(piece);
    at += len;
  } while (at < value.length);
  return concatBytes(pieces);
}

function writeText(out: Uint8Array, at: number, size: number, text: string, field: string): void {
  const bytes = new TextEncoder().encode(text);
  if (bytes.length >= size) throw new DiscoveryError("dhcp-encode", `${field} longer than ${size - 1} bytes`);
  out.set(bytes, at);
}

/**
 * Encodes a DHCP message: options in the map's order, long values split per RFC 3396, an END
 * marker, then zero padding up to the 300-byte BOOTP minimum that old relays expect.
 */
export function encodeDhcp(m: DhcpMessage): Uint8Array {
  if (m.chaddr.length > 16) throw new DiscoveryError("dhcp-encode", "chaddr longer than 16 bytes");
  const opts: Uint8Array[] = [];
  for (const [code, value] of m.options) opts.push(encodeOption(code, value));
  opts.push(Uint8Array.of(DhcpOption.end));
  const optionBytes = concatBytes(opts);
  const out = new Uint8Array(Math.max(BOOTP_MIN_LENGTH, FIXED_LENGTH + 4 + optionBytes.length));
  out[0] = m.op;
  out[1] = m.htype;
  out[2] = m.hlen;
  out[3] = m.hops;
  writeU32(out, 4, m.xid);
  out[8] = (m.secs >>> 8) & 0xff;
  out[9] = m.secs & 0xff;
  out[10] = (m.flags >>> 8) & 0xff;
  out[11] = m.flags & 0xff;
  out.set(ipv4ToBytes(m.ciaddr), 12);
  out.set(ipv4ToBytes(m.yiaddr), 16);
  out.set(ipv4ToBytes(m.siaddr), 20);
  out.set(ipv4ToBytes(m.giaddr), 24);
  out.set(m.chaddr, 28);
  writeText(out, 44, 64, m.sname, "sname");
  writeText(out, 108, 128, m.file, "file");
  writeU32(out, FIXED_LENGTH, DHCP_MAGIC_COOKIE);
  out.set(optionBytes, FIXED_LENGTH + 4);
  return out;
}

/** The DHCP message type (option 53), or undefined when absent or malformed. */
export function messageType(m: DhcpMessage): number | undefined {
  const v = m.options.get(DhcpOption.messageType);
  return v && v.length === 1 ? v[0] : undefined;
}
