/**
 * The SRTP key derivation and keystream of RFC 3711, for the AES-128 transforms with a key
 * derivation rate of 0 (the SDES default, and what every a=crypto line we accept implies):
 *
 * - §4.3.1: x = (label ‖ r) XOR master_salt, right-aligned, where r = index DIV kdr = 0; the
 *   label therefore lands on octet 7 of the 14-octet salt;
 * - §4.3.3: PRF_n(k_master, x) = AES-CM keystream with key k_master and IV = x·2^16;
 * - §4.1.1: IV = (k_s·2^16) XOR (SSRC·2^64) XOR (i·2^16), a 128-bit big-endian value.
 *
 * Counter mode is node:crypto's aes-128-ctr, which increments the whole 128-bit block; SRTP
 * counts only in the 16 low bits, but since every IV leaves those bits zero and a packet needs far
 * fewer than 2^16 blocks, the carry that would tell the two apart never happens.
 */
import { createCipheriv } from "node:crypto";
import { HandsetError } from "../core/errors.ts";

export const MASTER_KEY_LENGTH = 16;
export const MASTER_SALT_LENGTH = 14;
/** n_e: the session encryption key, as long as the master key for the AES-128 transforms. */
export const SESSION_KEY_LENGTH = 16;
/** n_s = 112 bits (§5.1). */
export const SESSION_SALT_LENGTH = 14;
/** n_a = 160 bits for HMAC-SHA1 (§5.2). */
export const SESSION_AUTH_KEY_LENGTH = 20;

/** The six labels of §4.3.1 and §4.3.2. */
export const Label = {
  rtpEncryption: 0x00,
  rtpAuthentication: 0x01,
  rtpSalt: 0x02,
  rtcpEncryption: 0x03,
  rtcpAuthentication: 0x04,
  rtcpSalt: 0x05,
} as const;

/** The keys one direction of SRTP (or of SRTCP) works with. */
export interface SessionKeys {
  readonly encryptionKey: Buffer;
  readonly salt: Buffer;
  readonly authKey: Buffer;
}

export interface SrtpSessionKeys {
  readonly rtp: SessionKeys;
  readonly rtcp: SessionKeys;
}

function requireLength(what: string, bytes: Uint8Array, length: number): void {
  if (bytes.length !== length)
    throw new HandsetError("srtp-key-length", `SRTP ${what} must be ${length} bytes, not ${bytes.length}`);
}

/** AES-CM keystream: E(k, IV) ‖ E(k, IV+1) ‖ …, cut to `length` octets. */
export function aesCmKeystream(key: Uint8Array, iv: Uint8Array, length: number): Buffer {
  requireLength("AES-CM key", key, 16);
  requireLength("AES-CM IV", iv, 16);
  return createCipheriv("aes-128-ctr", key, iv).update(Buffer.alloc(length));
}

/** The PRF's counter block for one label: (label ‖ 0^48) XOR master_salt, then ·2^16. */
export function kdfInputBlock(masterSalt: Uint8Array, label: number): Buffer {
  requireLength("master salt", masterSalt, MASTER_SALT_LENGTH);
  const iv = Buffer.alloc(16);
  iv.set(masterSalt, 0);
  // key_id = label ‖ r is 7 octets; right-aligned with the 14-octet salt its first octet is salt[7].
  iv[7] = (iv[7] as number) ^ label;
  return iv;
}

/** PRF_n(k_master, x) for one label, n = 8·length. */
export function deriveKey(
  masterKey: Uint8Array,
  masterSalt: Uint8Array,
  label: number,
  length: number,
): Buffer {
  requireLength("master key", masterKey, MASTER_KEY_LENGTH);
  return aesCmKeystream(masterKey, kdfInputBlock(masterSalt, label), length);
}

/** All six session keys of one master key (the single derivation that kdr = 0 calls for). */
export function deriveSessionKeys(masterKey: Uint8Array, masterSalt: Uint8Array): SrtpSessionKeys {
  const three = (enc: number, auth: number, salt: number): SessionKeys => ({
    encryptionKey: deriveKey(masterKey, masterSalt, enc, SESSION_KEY_LENGTH),
    authKey: deriveKey(masterKey, masterSalt, auth, SESSION_AUTH_KEY_LENGTH),
    salt: deriveKey(masterKey, masterSalt, salt, SESSION_SALT_LENGTH),
  });
  return {
    rtp: three(Label.rtpEncryption, Label.rtpAuthentication, Label.rtpSalt),
    rtcp: three(Label.rtcpEncryption, Label.rtcpAuthentication, Label.rtcpSalt),
  };
}

/**
 * The §4.1.1 IV for an SRTP packet (index = ROC·2^16 + SEQ) or, with roc = 0 and seq the 31-bit
 * SRTCP index split the same way, for an SRTCP packet: the 48-bit index sits in octets 8..13.
 */
export function counterIv(sessionSalt: Uint8Array, ssrc: number, roc: number, seq: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.set(sessionSalt, 0);
  iv.writeUInt32BE((iv.readUInt32BE(4) ^ ssrc) >>> 0, 4);
  iv.writeUInt32BE((iv.readUInt32BE(8) ^ roc) >>> 0, 8);
  iv.writeUInt16BE(iv.readUInt16BE(12) ^ (seq & 0xffff), 12);
  return iv;
}

/** The SRTCP form of counterIv(): i is the 31-bit SRTCP index. */
export function srtcpCounterIv(sessionSalt: Uint8Array, ssrc: number, srtcpIndex: number): Buffer {
  return counterIv(sessionSalt, ssrc, Math.floor(srtcpIndex / 0x10000), srtcpIndex & 0xffff);
}
