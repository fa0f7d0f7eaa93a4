/**
 * What the phone reads out of a DHCPACK (lync-phone-behaviour.md §1):
 * - 43, vendor class MS-UC-Client: sub-options 1–5 (identifier, scheme, web FQDN, port,
 *   CertProv relative path) in any order, with pads and an END marker (dnsmasq sends them in
 *   reverse order and closes with 0xFF); the port as text ("443", Microsoft) or a 16-bit number
 *   (seen in third-party generators); joined as `scheme://fqdn:port/relpath`;
 * - 120 (RFC 3361): enc 0 = DNS-encoded names (compression pointers followed, loops and
 *   out-of-range pointers rejected; offsets count from the first byte after `enc`, as in
 *   RFC 3397 and dhcpcd), enc 1 = IPv4 list, and the field mistake of a bare ASCII name;
 * - 42 then 4 → NTP servers; 2 → signed 32-bit offset; 6, 15; 100/101 (RFC 4833).
 *
 * A malformed option never stops discovery: it becomes a DiscoveryError in `problems` and the
 * rest of the reply is still used.
 */
import { bytesToIpv4, DhcpOption, DiscoveryError } from "./dhcp-codec.ts";

export const MS_UC_CLIENT = "MS-UC-Client";

export interface UcVendorInfo {
  identifier?: string;
  scheme?: string;
  fqdn?: string;
  port?: number;
  relPath?: string;
  /** `scheme://fqdn:port/relpath` when sub-options 2–5 (3 at least) are usable. */
  url?: string;
}

export type SipServers = { encoding: "fqdn"; names: string[] } | { encoding: "ipv4"; addresses: string[] };

export interface DhcpDiscovery {
  certProvUrl?: string;
  vendor?: UcVendorInfo;
  /** Option 120, names (enc 0 or bare ASCII) or addresses (enc 1), in the server's order. */
  sipServers: string[];
  sipServersEncoding?: "fqdn" | "ipv4" | "bare-ascii";
  /** Option 42 first, then option 4 (some SfB scripts put NTP there), de-duplicated. */
  ntpServers: string[];
  timeOffsetS?: number;
  dnsServers: string[];
  domain?: string;
  posixTz?: string;
  tzName?: string;
  problems: DiscoveryError[];
}

const latin1 = new TextDecoder("latin1");

function optionError(option: number, message: string, code = "dhcp-option-malformed"): DiscoveryError {
  return new DiscoveryError(code, `Option ${option}: ${message}`, { option });
}

/** Text value with trailing NULs removed (Windows servers often add one). */
export function optionText(value: Uint8Array): string {
  let end = value.length;
  while (end > 0 && value[end - 1] === 0) end--;
  return latin1.decode(value.subarray(0, end));
}

const HOSTNAME =
  /^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/;

export function isHostname(text: string): boolean {
  return HOSTNAME.test(text);
}

/** Sub-option TLVs of an encapsulated option: pads skipped, END stops, repeats concatenated. */
export function readSubOptions(value: Uint8Array, option: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  let i = 0;
  while (i < value.length) {
    const code = value[i]!;
    if (code === 0) {
      i++;
      continue;
    }
    if (code === 255) break;
    if (i + 1 >= value.length) throw optionError(option, `sub-option ${code} has no length byte`);
    const len = value[i + 1]!;
    if (i + 2 + len > value.length) throw optionError(option, `sub-option ${code} runs past the option`);
    const piece = value.subarray(i + 2, i + 2 + len);
    const before = out.get(code);
    if (before) {
      const joined = new Uint8Array(before.length + piece.length);
      joined.set(before);
      joined.set(piece, before.length);
      out.set(code, joined);
    } else out.set(code, piece.slice());
    i += 2 + len;
  }
  return out;
}

/** Sub-option 4: ASCII digits ("443") or, failing that, a 16-bit big-endian number. */
export function decodeUcPort(value: Uint8Array): number {
  const text = latin1.decode(value);
  let port: number;
  if (/^\d{1,5}$/.test(text)) port = Number(text);
  else if (value.length === 2) port = (value[0]! << 8) | value[1]!;
  else throw optionError(43, `sub-option 4 (port) is neither digits nor a 16-bit number`);
  if (port < 1 || port > 65535) throw optionError(43, `sub-option 4 (port) ${port} out of range`);
  return port;
}

/**
 * Option 43 for vendor class MS-UC-Client. Problems with single sub-options are pushed to
 * `problems`; the URL is built when the FQDN is valid (scheme defaults to https, port to the
 * scheme's default, path to empty).
 */
export function decodeUcVendorOption(value: Uint8Array, problems: DiscoveryError[]): UcVendorInfo {
  const info: UcVendorInfo = {};
  let subs: Map<number, Uint8Array>;
  try {
    subs = readSubOptions(value, 43);
  } catch (err) {
    problems.push(err as DiscoveryError);
    return info;
  }
  const id = subs.get(1);
  if (id) {
    info.identifier = optionText(id);
    if (info.identifier !== MS_UC_CLIENT)
      problems.push(optionError(43, `sub-option 1 is "${info.identifier}", expected ${MS_UC_CLIENT}`));
  }
  const scheme = subs.get(2);
  if (scheme) {
    const s = optionText(scheme).toLowerCase();
    if (/^[a-z][a-z0-9+.-]*$/.test(s)) info.scheme = s;
    else problems.push(optionError(43, `sub-option 2 (scheme) is not a URL scheme`));
  }
  const fqdn = subs.get(3);
  if (fqdn) {
    const f = optionText(fqdn);
    if (isHostname(f)) info.fqdn = f.replace(/\.$/, "");
    else problems.push(optionError(43, `sub-option 3 (web server FQDN) is not a host name`));
  }
  const port = subs.get(4);
  if (port) {
    try {
      info.port = decodeUcPort(port);
    } catch (err) {
      problems.push(err as DiscoveryError);
    }
  }
  const rel = subs.get(5);
  if (rel) {
    const p = optionText(rel);
    if (/^[\x21-\x7e]*$/.test(p)) info.relPath = p;
    else problems.push(optionError(43, `sub-option 5 (relative path) has spaces or control characters`));
  }
  if (info.fqdn) {
    const scheme = info.scheme ?? "https";
    const port = info.port ?? (scheme === "http" ? 80 : 443);
    const path = info.relPath ?? "";
    info.url = `${scheme}://${info.fqdn}:${port}${path.startsWith("/") || path === "" ? "" : "/"}${path}`;
  } else if (subs.size > 0 && (subs.has(2) || subs.has(4) || subs.has(5))) {
    problems.push(
      optionError(43, "no usable web server FQDN (sub-option 3); no provisioning URL", "dhcp-43-incomplete"),
    );
  }
  return info;
}

/** One DNS-encoded name at `start` of `data`, following compression pointers safely. */
export function readDnsName(data: Uint8Array, start: number, option = 120): { name: string; next: number } {
  const labels: string[] = [];
  let i = start;
  let next = -1;
  let length = 0;
  const visited = new Set<number>();
  for (;;) {
    if (i >= data.length) throw optionError(option, "name runs past the end of the option");
    const len = data[i]!;
    if (len === 0) {
      if (next < 0) next = i + 1;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      if (i + 1 >= data.length) throw optionError(option, "truncated compression pointer");
      const target = ((len & 0x3f) << 8) | data[i + 1]!;
      if (next < 0) next = i + 2;
      if (target >= data.length) throw optionError(option, `compression pointer ${target} out of range`);
      if (visited.has(target)) throw optionError(option, "compression pointer loop");
      visited.add(target);
      i = target;
      continue;
    }
    if ((len & 0xc0) !== 0) throw optionError(option, `unsupported label type 0x${len.toString(16)}`);
    if (i + 1 + len > data.length) throw optionError(option, "label runs past the end of the option");
    length += len + 1;
    if (length > 254) throw optionError(option, "name longer than 255 bytes");
    const label = latin1.decode(data.subarray(i + 1, i + 1 + len));
    if (!/^[A-Za-z0-9_-]+$/.test(label))
      throw optionError(option, `label "${label}" is not a host name label`);
    labels.push(label);
    i += 1 + len;
  }
  if (labels.length === 0) throw optionError(option, "empty (root) name");
  return { name: labels.join("."), next };
}

/** Option 120 (RFC 3361), plus the bare-ASCII misconfiguration as a lenient fallback. */
export function decodeSipServers(
  value: Uint8Array,
  problems: DiscoveryError[],
): { encoding: "fqdn" | "ipv4" | "bare-ascii"; servers: string[] } | undefined {
  if (value.length === 0) {
    problems.push(optionError(120, "empty"));
    return undefined;
  }
  const enc = value[0]!;
  const data = value.subarray(1);
  if (enc === 0) {
    const names: string[] = [];
    let i = 0;
    try {
      while (i < data.length) {
        const { name, next } = readDnsName(data, i);
        names.push(name);
        i = next;
      }
    } catch (err) {
      problems.push(err as DiscoveryError);
    }
    if (names.length === 0) {
      if (data.length === 0) problems.push(optionError(120, "enc 0 with no names"));
      return undefined;
    }
    return { encoding: "fqdn", servers: names };
  }
  if (enc === 1) {
    if (data.length === 0 || data.length % 4 !== 0) {
      problems.push(optionError(120, `enc 1 needs a multiple of 4 bytes, got ${data.length}`));
      return undefined;
    }
    const addresses: string[] = [];
    for (let i = 0; i < data.length; i += 4) addresses.push(bytesToIpv4(data, i));
    problems.push(
      optionError(120, "SIP servers given as IPv4 addresses; TLS needs names", "dhcp-120-addresses"),
    );
    return { encoding: "ipv4", servers: addresses };
  }
  const text = optionText(value);
  if (isHostname(text)) {
    problems.push(
      optionError(
        120,
        `bare ASCII name "${text}" without RFC 3361 encoding; accepted`,
        "dhcp-120-bare-ascii",
      ),
    );
    return { encoding: "bare-ascii", servers: [text.replace(/\.$/, "")] };
  }
  problems.push(optionError(120, `unknown encoding byte ${enc}`));
  return undefined;
}

/** An RFC 2132 list of IPv4 addresses (options 4, 6, 42). */
export function decodeIpv4List(value: Uint8Array, option: number): string[] {
  if (value.length === 0 || value.length % 4 !== 0)
    throw optionError(option, `needs a non-empty multiple of 4 bytes, got ${value.length}`);
  const out: string[] = [];
  for (let i = 0; i < value.length; i += 4) out.push(bytesToIpv4(value, i));
  return out;
}

/** Option 2: signed 32-bit seconds east of UTC (−5 h = FFFFB9B0). */
export function decodeTimeOffset(value: Uint8Array): number {
  if (value.length !== 4) throw optionError(2, `needs 4 bytes, got ${value.length}`);
  return (value[0]! << 24) | (value[1]! << 16) | (value[2]! << 8) | value[3]!;
}

function printable(value: Uint8Array, option: number): string {
  const text = optionText(value);
  if (text.length === 0 || !/^[\x20-\x7e]+$/.test(text))
    throw optionError(option, "not printable ASCII text");
  return text;
}

/** Interprets every option the phone cares about. Never throws; problems are collected. */
export function interpretOptions(options: Map<number, Uint8Array>): DhcpDiscovery {
  const problems: DiscoveryError[] = [];
  const out: DhcpDiscovery = { sipServers: [], ntpServers: [], dnsServers: [], problems };
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (err instanceof DiscoveryError) problems.push(err);
      else throw err;
    }
  };
  const v43 = options.get(DhcpOption.vendorSpecific);
  if (v43) {
    out.vendor = decodeUcVendorOption(v43, problems);
    if (out.vendor.url) out.certProvUrl = out.vendor.url;
  }
  const v120 = options.get(DhcpOption.sipServers);
  if (v120) {
    const sip = decodeSipServers(v120, problems);
    if (sip) {
      out.sipServers = sip.servers;
      out.sipServersEncoding = sip.encoding;
    }
  }
  for (const code of [DhcpOption.ntpServers, DhcpOption.timeServer]) {
    const v = options.get(code);
    if (v)
      attempt(() => {
        for (const a of decodeIpv4List(v, code)) if (!out.ntpServers.includes(a)) out.ntpServers.push(a);
      });
  }
  const v2 = options.get(DhcpOption.timeOffset);
  if (v2)
    attempt(() => {
      out.timeOffsetS = decodeTimeOffset(v2);
    });
  const v6 = options.get(DhcpOption.dnsServer);
  if (v6)
    attempt(() => {
      out.dnsServers = decodeIpv4List(v6, 6);
    });
  const v15 = options.get(DhcpOption.domainName);
  if (v15)
    attempt(() => {
      const d = optionText(v15).trim();
      if (!isHostname(d)) throw optionError(15, "domain name is not a host name");
      out.domain = d.replace(/\.$/, "");
    });
  const v100 = options.get(DhcpOption.posixTz);
  if (v100)
    attempt(() => {
      out.posixTz = printable(v100, 100);
    });
  const v101 = options.get(DhcpOption.tzName);
  if (v101)
    attempt(() => {
      const tz = printable(v101, 101);
      if (!/^[A-Za-z0-9_+\-/]+$/.test(tz)) throw optionError(101, "not a tz database name");
      out.tzName = tz;
    });
  return out;
}
