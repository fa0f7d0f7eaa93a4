/** Shared test helpers for discovery: hex, an in-memory DatagramPort, canned replies. */
import type { SeededRandom } from "../../firmware/core/random.ts";
import type { DatagramPort } from "../../firmware/discovery/dhcp-inform.ts";

export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  return Uint8Array.from(clean.match(/../g) ?? [], (b) => Number.parseInt(b, 16));
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b).toString("hex");
}

/** ASCII as hex, so vectors can spell out text parts readably. */
export function asciiHex(text: string): string {
  return Buffer.from(text, "latin1").toString("hex");
}

export class FakePort implements DatagramPort {
  readonly sent: Array<{ bytes: Uint8Array; host: string; port: number }> = [];
  private readonly listeners: Array<(b: Uint8Array, from: { address: string; port: number }) => void> = [];
  closed = false;

  send(bytes: Uint8Array, host: string, port: number): void {
    this.sent.push({ bytes: bytes.slice(), host, port });
  }

  onMessage(cb: (b: Uint8Array, from: { address: string; port: number }) => void): void {
    this.listeners.push(cb);
  }

  close(): void {
    this.closed = true;
  }

  deliver(bytes: Uint8Array, from = { address: "192.0.2.1", port: 67 }): void {
    for (const l of this.listeners) l(bytes, from);
  }
}

/** A fast byte source seeded from SeededRandom, so that bulk bytes do not dominate the run. */
export function fastBytes(seed: SeededRandom): (n: number) => Uint8Array {
  let s = new DataView(seed.bytes(4).buffer).getUint32(0) | 1;
  return (n) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      out[i] = s & 0xff;
    }
    return out;
  };
}

export function mutate(base: Uint8Array, bytes: (n: number) => Uint8Array): Uint8Array {
  let b = base.slice();
  const r = bytes(8);
  const count = 1 + (r[0]! % 6);
  for (let k = 0; k < count; k++) {
    const [op, x, y] = bytes(3) as unknown as [number, number, number];
    const at = ((x << 8) | y) % Math.max(1, b.length);
    switch (op % 6) {
      case 0:
        b[at] = r[k + 1]!;
        break;
      case 1:
        b[at] = b[at]! ^ (1 << (r[k + 1]! % 8));
        break;
      case 2:
        b = b.slice(0, at);
        break;
      case 3: {
        const ins = bytes(1 + (r[k + 1]! % 16));
        const grown = new Uint8Array(b.length + ins.length);
        grown.set(b.subarray(0, at));
        grown.set(ins, at);
        grown.set(b.subarray(at), at + ins.length);
        b = grown;
        break;
      }
      case 4:
        b[at] = [0, 0xff, 0xc0, 0x3f, 1, 255][r[k + 1]! % 6]!;
        break;
      default:
        if (r[7]! < 128) b = b.slice(0, Math.max(0, b.length - 1 - (r[k + 1]! % 40)));
    }
  }
  return b;
}

export function withoutStacks(fn: () => void): void {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    fn();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
