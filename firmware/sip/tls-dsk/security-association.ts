/**
 * A TLS-DSK security association: the derived signing keys plus the (realm, targetname, opaque)
 * that identify it, and the signing / verification of SIP messages with them
 * (shared/protocol/tls-dsk.md §4.2). Pure computation; randomness comes from the Random port.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { AuthError } from "../../core/errors.ts";
import type { Random } from "../../core/random.ts";
import { hex32 } from "../../core/random.ts";
import type { AuthChallenge } from "../grammar/auth-params.ts";
import { findChallenge, formatAuthHeader } from "../grammar/auth-params.ts";
import type { SipMessage } from "../message/message.ts";
import { addHeader, headers, removeHeader } from "../message/message.ts";
import { signatureBuffer } from "./signature-buffer.ts";

export type MacAlg = "sha1" | "md5";

const PROTOCOL = "TLS-DSK";
const MAC_BYTES: Record<MacAlg, number> = { sha1: 20, md5: 16 };

/** Lower-case hex HMAC of the buffer's UTF-8 bytes. */
export function macHex(alg: MacAlg, key: Buffer, data: string): string {
  return createHmac(alg, key).update(data, "utf8").digest("hex");
}

/**
 * The TLS-DSK MAC follows the MAC hash of the negotiated cipher suite: `*-MD5` / `*_MD5` suites
 * (RC4-MD5, EXP-RC4-MD5, TLS_RSA_WITH_RC4_128_MD5) → HMAC-MD5, everything else → HMAC-SHA1.
 * Accepts OpenSSL and IANA names. For TLS 1.2 AEAD / SHA-256 suites (e.g. AES128-GCM-SHA256) the
 * spec gives no guidance and no implementation is known; we choose sha1, the only MAC a real pool
 * has been seen to use (40-hex rspauth), and the TLS 1.0 behaviour for all *-SHA suites.
 */
export function macAlgForCipher(cipherName: string): MacAlg {
  return /(^|[-_])MD5$/i.test(cipherName.trim()) ? "md5" : "sha1";
}

/** Decodes hex case-insensitively; undefined when it is not even-length hex. */
function decodeHex(s: string): Buffer | undefined {
  if (s.length === 0 || s.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(s)) return undefined;
  return Buffer.from(s, "hex");
}

function macMatches(alg: MacAlg, key: Buffer, buffer: string, received: string): boolean {
  const got = decodeHex(received);
  if (!got || got.length !== MAC_BYTES[alg]) return false;
  const want = createHmac(alg, key).update(buffer, "utf8").digest();
  return timingSafeEqual(got, want);
}

/** The first TLS-DSK value among the named headers, or undefined when none is present. */
function findTlsDsk(msg: SipMessage, names: string[]): { found: AuthChallenge | undefined; any: boolean } {
  const values = names.flatMap((n) => headers(msg, n));
  return { found: findChallenge(values, PROTOCOL), any: values.length > 0 };
}

export interface SecurityAssociationInit {
  protocol?: "TLS-DSK";
  realm: string;
  targetname: string;
  /** Server-chosen SA identifier; echoed in every Authorization. Empty string = none. */
  opaque: string;
  version: number;
  clientKey: Buffer;
  serverKey: Buffer;
  mac?: MacAlg;
  /** Epoch ms after which the SA must be dropped and re-established. */
  expiresAt: number;
}

export class SecurityAssociation {
  readonly protocol: "TLS-DSK";
  readonly realm: string;
  readonly targetname: string;
  readonly opaque: string;
  readonly version: number;
  readonly mac: MacAlg;
  readonly expiresAt: number;
  readonly #clientKey: Buffer;
  readonly #serverKey: Buffer;
  #cnum = 0;
  #snum = 0;

  constructor(o: SecurityAssociationInit) {
    if (o.clientKey.length === 0 || o.serverKey.length === 0) {
      throw new AuthError("tls-dsk-keys", "TLS-DSK signing keys must not be empty");
    }
    this.protocol = o.protocol ?? PROTOCOL;
    this.realm = o.realm;
    this.targetname = o.targetname;
    this.opaque = o.opaque;
    this.version = o.version;
    this.mac = o.mac ?? "sha1";
    this.expiresAt = o.expiresAt;
    this.#clientKey = Buffer.from(o.clientKey);
    this.#serverKey = Buffer.from(o.serverKey);
  }

  /** The cnum of the last message signed by sign() (0 before the first). */
  get cnum(): number {
    return this.#cnum;
  }

  /** The snum of the last message signed by signAsServer() (0 before the first). */
  get snum(): number {
    return this.#snum;
  }

  isExpired(nowMs: number): boolean {
    return nowMs >= this.expiresAt;
  }

  #buffer(msg: SipMessage, rand: string, num: string): string {
    return signatureBuffer(msg, {
      protocol: this.protocol,
      rand,
      num,
      realm: this.realm,
      targetname: this.targetname,
      version: this.version,
    });
  }

  /** Checks the SA-identifying parameters of a received header; throws sa-mismatch. */
  #checkIdentity(c: AuthChallenge, what: string): void {
    const realm = c.params.get("realm");
    const targetname = c.params.get("targetname");
    if (realm !== this.realm || targetname !== this.targetname) {
      throw new AuthError(
        "sa-mismatch",
        `${what} is for realm ${JSON.stringify(realm)} / targetname ${JSON.stringify(targetname)}, not this SA`,
      );
    }
    const opaque = c.params.get("opaque");
    if (opaque !== undefined && this.opaque !== "" && opaque !== this.opaque) {
      throw new AuthError("sa-mismatch", `${what} opaque ${JSON.stringify(opaque)} does not match this SA`);
    }
  }

  /**
   * Signs a message the phone sends (request, or a response such as 200 to NOTIFY): adds
   * `Authorization: TLS-DSK qop="auth", opaque, realm, targetname, [version], crand, cnum, response`
   * after removing any existing header of that name. response = upper-case hex HMAC(clientKey).
   */
  sign(msg: SipMessage, random: Random, opts: { includeVersion?: boolean; headerName?: string } = {}): void {
    const headerName = opts.headerName ?? "Authorization";
    const crand = hex32(random);
    this.#cnum += 1;
    const cnum = String(this.#cnum);
    // The buffer does not cover Authorization, so removing/adding it afterwards is safe.
    const response = macHex(this.mac, this.#clientKey, this.#buffer(msg, crand, cnum)).toUpperCase();
    const params: Array<[string, string, boolean?]> = [["qop", "auth"]];
    if (this.opaque !== "") params.push(["opaque", this.opaque]);
    params.push(["realm", this.realm], ["targetname", this.targetname]);
    if (opts.includeVersion) params.push(["version", String(this.version), false]);
    params.push(["crand", crand], ["cnum", cnum], ["response", response]);
    removeHeader(msg, headerName);
    addHeader(msg, headerName, formatAuthHeader(this.protocol, params));
  }

  /**
   * Verifies the server's signature on a received message: Authentication-Info (or
   * Proxy-Authentication-Info) `TLS-DSK … srand, snum, rspauth`, checked against
   * HMAC(serverKey, buffer). Throws AuthError rspauth-missing | sa-mismatch | auth-header-malformed |
   * rspauth-invalid.
   */
  verify(msg: SipMessage): { ok: true } {
    const { found, any } = findTlsDsk(msg, ["Authentication-Info", "Proxy-Authentication-Info"]);
    if (!found) {
      if (any) throw new AuthError("sa-mismatch", "Authentication-Info is not for TLS-DSK");
      throw new AuthError("rspauth-missing", "message has no Authentication-Info");
    }
    this.#checkIdentity(found, "Authentication-Info");
    const rspauth = found.params.get("rspauth");
    if (rspauth === undefined) throw new AuthError("rspauth-missing", "Authentication-Info has no rspauth");
    const srand = found.params.get("srand");
    const snum = found.params.get("snum");
    if (srand === undefined || snum === undefined) {
      throw new AuthError("auth-header-malformed", "Authentication-Info lacks srand or snum");
    }
    if (!macMatches(this.mac, this.#serverKey, this.#buffer(msg, srand, snum), rspauth)) {
      throw new AuthError("rspauth-invalid", "invalid message signature received (rspauth)");
    }
    return { ok: true };
  }

  /**
   * Server side: verifies a client-signed message's Authorization (or Proxy-Authorization)
   * `crand, cnum, response` against HMAC(clientKey, buffer). Throws AuthError response-missing |
   * sa-mismatch | auth-header-malformed | response-invalid. Replay policy (cnum window) is the
   * caller's: the verified cnum is returned.
   */
  verifyClient(msg: SipMessage): { cnum: number } {
    const { found, any } = findTlsDsk(msg, ["Authorization", "Proxy-Authorization"]);
    if (!found) {
      if (any) throw new AuthError("sa-mismatch", "Authorization is not for TLS-DSK");
      throw new AuthError("response-missing", "message has no Authorization");
    }
    this.#checkIdentity(found, "Authorization");
    const response = found.params.get("response");
    const crand = found.params.get("crand");
    const cnum = found.params.get("cnum");
    if (response === undefined || crand === undefined || cnum === undefined) {
      throw new AuthError("response-missing", "Authorization carries no TLS-DSK signature");
    }
    if (!/^[0-9]{1,15}$/.test(cnum))
      throw new AuthError("auth-header-malformed", "cnum is not a decimal number");
    if (!macMatches(this.mac, this.#clientKey, this.#buffer(msg, crand, cnum), response)) {
      throw new AuthError("response-invalid", "invalid client signature (response)");
    }
    return { cnum: Number(cnum) };
  }

  /**
   * Server side: signs a message as the registrar, adding (after removing any existing one)
   * `Authentication-Info: TLS-DSK qop="auth", opaque, srand, snum, rspauth, targetname, realm, version`
   * with lower-case hex rspauth = HMAC(serverKey, buffer); snum counts from 1 per SA.
   */
  signAsServer(msg: SipMessage, random: Random, opts: { headerName?: string } = {}): void {
    const headerName = opts.headerName ?? "Authentication-Info";
    const srand = hex32(random);
    this.#snum += 1;
    const snum = String(this.#snum);
    const rspauth = macHex(this.mac, this.#serverKey, this.#buffer(msg, srand, snum));
    const params: Array<[string, string, boolean?]> = [["qop", "auth"]];
    if (this.opaque !== "") params.push(["opaque", this.opaque]);
    params.push(
      ["srand", srand],
      ["snum", snum],
      ["rspauth", rspauth],
      ["targetname", this.targetname],
      ["realm", this.realm],
      ["version", String(this.version), false],
    );
    removeHeader(msg, headerName);
    addHeader(msg, headerName, formatAuthHeader(this.protocol, params));
  }
}
