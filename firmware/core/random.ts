/** Randomness as a port: cores take a Random so tests can replay exact byte sequences. */
export interface Random {
  /** n cryptographically strong random bytes (production) or a seeded sequence (tests). */
  bytes(n: number): Uint8Array;
  /** A float in [0, 1), for jitter. */
  unit(): number;
}

/** Random 32-bit value as 8 lower-case hex digits (crand, tags, branch suffixes). */
export function hex32(random: Random): string {
  return Buffer.from(random.bytes(4)).toString("hex");
}

/** Random token of n bytes in lower-case hex. */
export function hexToken(random: Random, n: number): string {
  return Buffer.from(random.bytes(n)).toString("hex");
}

/**
 * A deterministic generator (xorshift128+ seeded by splitmix) for tests and simulations.
 * Never used for key material in production.
 */
export class SeededRandom implements Random {
  private s0: bigint;
  private s1: bigint;

  constructor(seed = 1) {
    let x = BigInt(seed) & 0xffffffffffffffffn;
    const next = (): bigint => {
      x = (x + 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn;
      let z = x;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & 0xffffffffffffffffn;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & 0xffffffffffffffffn;
      return z ^ (z >> 31n);
    };
    this.s0 = next();
    this.s1 = next();
  }

  private next64(): bigint {
    let s1 = this.s0;
    const s0 = this.s1;
    this.s0 = s0;
    s1 ^= (s1 << 23n) & 0xffffffffffffffffn;
    this.s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return (this.s1 + s0) & 0xffffffffffffffffn;
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 8) {
      let v = this.next64();
      for (let j = 0; j < 8 && i + j < n; j++) {
        out[i + j] = Number(v & 0xffn);
        v >>= 8n;
      }
    }
    return out;
  }

  unit(): number {
    return Number(this.next64() >> 11n) / 2 ** 53;
  }
}
