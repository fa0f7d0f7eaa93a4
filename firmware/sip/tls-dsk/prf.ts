/**
 * TLS pseudo-random functions and the TLS-DSK key derivation ([MS-SIPAE] §3.2.5.1 as restated
 * in shared/protocol/tls-dsk.md §3):
 *
 *   key_material = PRF(master, "client EAP encryption", client_random ‖ server_random, 128)
 *   client_signing_key = key_material[64..96), server_signing_key = key_material[96..128)
 *
 * PRF is the negotiated version's: TLS 1.0/1.1 = P_MD5(S1) xor P_SHA1(S2) (RFC 2246 §5),
 * TLS 1.2 = P_SHA256 (RFC 5246 §5). This equals the RFC 5705 exporter with no context.
 */
import { createHmac } from "node:crypto";
import { AuthError } from "../../core/errors.ts";

export type PrfVersion = "tls1" | "tls12";

export const TLS_DSK_LABEL = "client EAP encryption";
export const TLS_DSK_KEY_MATERIAL_LENGTH = 128;

function toBytes(x: Buffer | Uint8Array | string): Buffer {
  return typeof x === "string" ? Buffer.from(x, "latin1") : Buffer.from(x);
}

/** RFC 2246 §5 P_hash: HMAC_hash(secret, A(1) ‖ seed) ‖ HMAC_hash(secret, A(2) ‖ seed) ‖ …, cut to `length`. */
export function pHash(
  hash: "md5" | "sha1" | "sha256" | "sha384",
  secret: Buffer,
  seed: Buffer,
  length: number,
): Buffer {
  const chunks: Buffer[] = [];
  let produced = 0;
  let a: Buffer = seed;
  while (produced < length) {
    a = createHmac(hash, secret).update(a).digest();
    const block = createHmac(hash, secret).update(a).update(seed).digest();
    chunks.push(block);
    produced += block.length;
  }
  return Buffer.concat(chunks).subarray(0, length);
}

/** TLS 1.0/1.1 PRF: P_MD5(S1, label ‖ seed) xor P_SHA1(S2, label ‖ seed), halves overlapping by one byte when odd. */
export function prfTls10(
  secret: Buffer | Uint8Array,
  label: string | Buffer,
  seed: Buffer | Uint8Array,
  length: number,
): Buffer {
  const s = Buffer.from(secret);
  const half = Math.ceil(s.length / 2);
  const s1 = s.subarray(0, half);
  const s2 = s.subarray(s.length - half);
  const ls = Buffer.concat([toBytes(label), Buffer.from(seed)]);
  const md5 = pHash("md5", s1, ls, length);
  const sha1 = pHash("sha1", s2, ls, length);
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (md5[i] as number) ^ (sha1[i] as number);
  return out;
}

/** TLS 1.2 PRF: P_<hash>(secret, label ‖ seed); SHA-256 for every suite TLS-DSK could meet. */
export function prfTls12(
  secret: Buffer | Uint8Array,
  label: string | Buffer,
  seed: Buffer | Uint8Array,
  length: number,
  hash: "sha256" | "sha384" = "sha256",
): Buffer {
  return pHash(hash, Buffer.from(secret), Buffer.concat([toBytes(label), Buffer.from(seed)]), length);
}

/** The 128 bytes of TLS-DSK key material from the master secret and the hello randoms (client first). */
export function keyMaterialFromMaster(
  master: Buffer | Uint8Array,
  clientRandom: Buffer | Uint8Array,
  serverRandom: Buffer | Uint8Array,
  prf: PrfVersion,
): Buffer {
  if (master.length !== 48)
    throw new AuthError("tls-dsk-keys", `master secret must be 48 bytes, got ${master.length}`);
  if (clientRandom.length !== 32 || serverRandom.length !== 32) {
    throw new AuthError("tls-dsk-keys", "client and server randoms must be 32 bytes each");
  }
  const seed = Buffer.concat([Buffer.from(clientRandom), Buffer.from(serverRandom)]);
  return prf === "tls12"
    ? prfTls12(master, TLS_DSK_LABEL, seed, TLS_DSK_KEY_MATERIAL_LENGTH)
    : prfTls10(master, TLS_DSK_LABEL, seed, TLS_DSK_KEY_MATERIAL_LENGTH);
}

/** Splits the key material: client signing key = bytes 64..96, server signing key = bytes 96..128. */
export function deriveTlsDskKeys(keyMaterial128: Buffer | Uint8Array): {
  clientKey: Buffer;
  serverKey: Buffer;
} {
  if (keyMaterial128.length !== TLS_DSK_KEY_MATERIAL_LENGTH) {
    throw new AuthError("tls-dsk-keys", `key material must be 128 bytes, got ${keyMaterial128.length}`);
  }
  const km = Buffer.from(keyMaterial128);
  return { clientKey: Buffer.from(km.subarray(64, 96)), serverKey: Buffer.from(km.subarray(96, 128)) };
}
