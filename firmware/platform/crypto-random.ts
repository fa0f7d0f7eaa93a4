import { randomBytes, randomInt } from "node:crypto";
import type { Random } from "../core/random.ts";

/** Production randomness: the kernel's CSPRNG. */
export class CryptoRandom implements Random {
  bytes(n: number): Uint8Array {
    return randomBytes(n);
  }

  unit(): number {
    return randomInt(0, 2 ** 48 - 1) / 2 ** 48;
  }
}
