/**
 * Pure TLS record helpers for the TLS-DSK tunnel: a gssapi-data token is a whole flight of raw
 * TLS records (headers included). These helpers split a byte stream into records, decide when
 * a flight is complete, merge handshake records the way Schannel sends them, and pull the hello
 * randoms out of plaintext handshake messages.
 *
 * Every failure on bad input is an AuthError with code "tls-record-malformed"; no other
 * exception escapes. No node:* imports (Buffer global only).
 */
import { AuthError } from "../../core/errors.ts";

export const CONTENT_CHANGE_CIPHER_SPEC = 20;
export const CONTENT_ALERT = 21;
export const CONTENT_HANDSHAKE = 22;
export const CONTENT_APPLICATION_DATA = 23;

export const HS_CLIENT_HELLO = 1;
export const HS_SERVER_HELLO = 2;
export const HS_CERTIFICATE = 11;
export const HS_SERVER_HELLO_DONE = 14;

/** RFC 5246: a plaintext fragment is at most 2^14 bytes; protected ones may add 2048. */
export const MAX_PLAINTEXT_FRAGMENT = 16384;
const MAX_RECORD_FRAGMENT = 16384 + 2048;
/** Largest handshake message we accept (a certificate chain far exceeds any real one well before this). */
const MAX_HANDSHAKE_MESSAGE = 1 << 20;

export interface TlsRecord {
  type: number;
  /** Record-layer version, e.g. 0x0301 for TLS 1.0. */
  version: number;
  fragment: Buffer;
}

export interface HandshakeMessage {
  type: number;
  /** Message body without the 4-byte header. */
  body: Buffer;
}

/** Which peer wrote the bytes: the client (ClientHello, flight 2) or the server (flights 1 and 2). */
export type FlightSide = "client" | "server";

function malformed(message: string): AuthError {
  return new AuthError("tls-record-malformed", message);
}

function toBuffer(bytes: Uint8Array): Buffer {
  if (!(bytes instanceof Uint8Array)) throw malformed("TLS token is not a byte array");
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Splits a byte stream into complete records; `rest` is a trailing partial record (possibly
 * empty). Throws on a header that cannot start a TLS record.
 */
export function splitRecords(bytes: Uint8Array): { records: TlsRecord[]; rest: Buffer } {
  const buf = toBuffer(bytes);
  const records: TlsRecord[] = [];
  let off = 0;
  while (off < buf.length) {
    const type = buf[off] as number;
    if (type < CONTENT_CHANGE_CIPHER_SPEC || type > CONTENT_APPLICATION_DATA) {
      throw malformed(`bad TLS content type ${type} at offset ${off}`);
    }
    if (off + 1 < buf.length && buf[off + 1] !== 3) {
      throw malformed(`bad TLS record version major ${buf[off + 1]} at offset ${off}`);
    }
    if (off + 5 > buf.length) break;
    const version = buf.readUInt16BE(off + 1);
    const length = buf.readUInt16BE(off + 3);
    if (length > MAX_RECORD_FRAGMENT)
      throw malformed(`TLS record length ${length} too large at offset ${off}`);
    if (off + 5 + length > buf.length) break;
    records.push({ type, version, fragment: buf.subarray(off + 5, off + 5 + length) });
    off += 5 + length;
  }
  return { records, rest: buf.subarray(off) };
}

/** Parses a token that must consist of whole records only (no trailing partial record). */
export function parseRecords(bytes: Uint8Array): TlsRecord[] {
  const { records, rest } = splitRecords(bytes);
  if (rest.length > 0) throw malformed(`truncated TLS record (${rest.length} trailing bytes)`);
  if (records.length === 0) throw malformed("empty TLS token");
  return records;
}

export function encodeRecord(type: number, version: number, fragment: Uint8Array): Buffer {
  if (fragment.length > MAX_RECORD_FRAGMENT)
    throw malformed(`TLS record fragment of ${fragment.length} bytes`);
  const header = Buffer.alloc(5);
  header[0] = type;
  header.writeUInt16BE(version, 1);
  header.writeUInt16BE(fragment.length, 3);
  return Buffer.concat([header, fragment]);
}

/**
 * The plaintext handshake messages of a record sequence: handshake records before the first
 * ChangeCipherSpec (after it they are encrypted). `partial` is true when the last message is
 * cut off (it continues in a record not yet seen).
 */
function plaintextHandshake(records: TlsRecord[]): { messages: HandshakeMessage[]; partial: boolean } {
  const frags: Buffer[] = [];
  for (const r of records) {
    if (r.type === CONTENT_CHANGE_CIPHER_SPEC) break;
    if (r.type === CONTENT_HANDSHAKE) frags.push(r.fragment);
  }
  const hs = Buffer.concat(frags);
  const messages: HandshakeMessage[] = [];
  let off = 0;
  while (off < hs.length) {
    if (off + 4 > hs.length) return { messages, partial: true };
    const type = hs[off] as number;
    const length = hs.readUIntBE(off + 1, 3);
    if (length > MAX_HANDSHAKE_MESSAGE) throw malformed(`handshake message of ${length} bytes`);
    if (off + 4 + length > hs.length) return { messages, partial: true };
    messages.push({ type, body: hs.subarray(off + 4, off + 4 + length) });
    off += 4 + length;
  }
  return { messages, partial: false };
}

/** Plaintext handshake messages of a token made of whole records; a cut-off message is an error. */
export function handshakeMessages(bytes: Uint8Array): HandshakeMessage[] {
  const { messages, partial } = plaintextHandshake(parseRecords(bytes));
  if (partial) throw malformed("truncated handshake message");
  return messages;
}

/**
 * True when `bytes` (what one side has written so far) hold a whole flight:
 * - an alert record (the peer gives up);
 * - a ChangeCipherSpec followed by one more complete record (the encrypted Finished);
 * - client: a complete ClientHello; server: a complete ServerHelloDone.
 * A trailing partial record means "not yet" unless one of the above already holds before it.
 */
export function flightComplete(bytes: Uint8Array, side: FlightSide): boolean {
  const { records } = splitRecords(bytes);
  let ccsAt = -1;
  for (let i = 0; i < records.length; i++) {
    const r = records[i] as TlsRecord;
    if (r.type === CONTENT_ALERT) return true;
    if (r.type === CONTENT_CHANGE_CIPHER_SPEC && ccsAt < 0) ccsAt = i;
  }
  if (ccsAt >= 0 && records.length > ccsAt + 1) return true;
  const { messages } = plaintextHandshake(records);
  const last = side === "client" ? HS_CLIENT_HELLO : HS_SERVER_HELLO_DONE;
  return messages.some((m) => m.type === last);
}

/**
 * Merges consecutive plaintext handshake records of the same record version into as few
 * records as possible (each ≤ 16384 bytes), as Schannel sends server flight 1. Records from
 * the first ChangeCipherSpec on (encrypted) are copied unchanged. Input must be whole records.
 */
export function coalesceHandshakeRecords(bytes: Uint8Array): Buffer {
  const records = parseRecords(bytes);
  const out: Buffer[] = [];
  let pending: { version: number; parts: Buffer[] } | null = null;
  const flush = (): void => {
    if (!pending) return;
    let data = Buffer.concat(pending.parts);
    while (data.length > 0) {
      const n = Math.min(data.length, MAX_PLAINTEXT_FRAGMENT);
      out.push(encodeRecord(CONTENT_HANDSHAKE, pending.version, data.subarray(0, n)));
      data = data.subarray(n);
    }
    pending = null;
  };
  let encrypted = false;
  for (const r of records) {
    if (r.type === CONTENT_CHANGE_CIPHER_SPEC) encrypted = true;
    if (!encrypted && r.type === CONTENT_HANDSHAKE) {
      if (pending && pending.version !== r.version) flush();
      if (!pending) pending = { version: r.version, parts: [] };
      pending.parts.push(r.fragment);
      continue;
    }
    flush();
    out.push(encodeRecord(r.type, r.version, r.fragment));
  }
  flush();
  return Buffer.concat(out);
}

function helloRandom(bytes: Uint8Array, type: number, what: string): Buffer {
  const { messages } = plaintextHandshake(parseRecords(bytes));
  const hello = messages.find((m) => m.type === type);
  if (!hello) throw malformed(`no ${what} in token`);
  // body: client_version/server_version (2) ‖ random (32) ‖ …
  if (hello.body.length < 34) throw malformed(`${what} too short`);
  return Buffer.from(hello.body.subarray(2, 34));
}

/** The 32-byte server_random of the ServerHello in a server flight. */
export function serverRandomFromFlight(bytes: Uint8Array): Buffer {
  return helloRandom(bytes, HS_SERVER_HELLO, "ServerHello");
}

/** The 32-byte client_random of the ClientHello in a client flight. */
export function clientRandomFromHello(bytes: Uint8Array): Buffer {
  return helloRandom(bytes, HS_CLIENT_HELLO, "ClientHello");
}

/** DER certificates of the (first) plaintext Certificate message in a flight, leaf first; [] if none. */
export function certificatesFromFlight(bytes: Uint8Array): Buffer[] {
  const { messages } = plaintextHandshake(parseRecords(bytes));
  const msg = messages.find((m) => m.type === HS_CERTIFICATE);
  if (!msg) return [];
  const b = msg.body;
  if (b.length < 3) throw malformed("Certificate message too short");
  const total = b.readUIntBE(0, 3);
  if (total + 3 !== b.length) throw malformed("Certificate message length mismatch");
  const certs: Buffer[] = [];
  let off = 3;
  while (off < b.length) {
    if (off + 3 > b.length) throw malformed("truncated certificate entry");
    const n = b.readUIntBE(off, 3);
    if (n === 0 || off + 3 + n > b.length) throw malformed("bad certificate entry length");
    certs.push(Buffer.from(b.subarray(off + 3, off + 3 + n)));
    off += 3 + n;
  }
  return certs;
}

/** The first alert record's (level, description), if any. */
export function alertInFlight(bytes: Uint8Array): { level: number; description: number } | null {
  const { records } = splitRecords(bytes);
  const alert = records.find((r) => r.type === CONTENT_ALERT);
  if (!alert) return null;
  // An encrypted alert (after CCS) is longer than 2 bytes; report it as fatal/unknown.
  if (alert.fragment.length !== 2) return { level: 2, description: -1 };
  return { level: alert.fragment[0] as number, description: alert.fragment[1] as number };
}
