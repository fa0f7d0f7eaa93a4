/**
 * The fleet's JSON payloads, versioned ("v": 1). Every builder picks the fields it names from
 * typed input and checks their types at run time too, so an extra property that a device object
 * happens to carry (a key, a PIN, a ticket) can never ride along into a payload. Where a payload
 * must carry structured data of the device's making (a command's result), `plainData` copies
 * plain JSON only and leaves out whatever is named or shaped like a secret.
 */

export const PAYLOAD_VERSION = 1;

/** What the phone says about itself in its retained state. */
export interface DeviceState {
  state: string;
  registrar?: string;
  primary?: boolean;
  limited: boolean;
  uri?: string;
  /** notAfter in epoch ms. */
  certificate?: { notAfter: number; subject?: string };
  firmware: { version: string; slot?: string };
  uptimeS: number;
  addresses: { ip?: string; mac?: string };
  /** The call up now (ringing either way, connected, held, being transferred), or none. */
  call?: CallState;
}

/**
 * A call as the fleet sees it: its phase, who started it, the other end's number (the user part
 * of its URI: an extension or E.164 number, never a display name) and when it began (epoch ms).
 */
export interface CallState {
  state: string;
  direction: "outgoing" | "incoming";
  remote: string;
  since: number;
}

export interface OutboxCounts {
  queued: number;
  dropped: number;
}

export type CommandStatus = "ok" | "deferred" | "refused" | "error";

export interface CommandReply {
  command: string;
  status: CommandStatus;
  result?: unknown;
  error?: { code: string; message: string };
}

/** The config/reported document (device-twin "reported" side). */
export interface ReportedConfig {
  version: number;
  layers: { org?: number; site?: number; device?: number };
  applied: Record<string, unknown>;
  pending: string[];
  refused: Record<string, string>;
  /** A layer whose document as a whole was refused (not JSON, no version…): the reason. */
  errors?: { org?: string; site?: string; device?: string };
}

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const bool = (v: unknown): boolean | undefined => (typeof v === "boolean" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const iso = (ms: number): string | undefined =>
  Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;

/** JSON.stringify drops undefined members, which is how optional fields stay out. */
const json = (o: Record<string, unknown>): string => JSON.stringify(o);

export function statePayload(
  d: DeviceState,
  o: { birthSeq: number; outbox: OutboxCounts; now: number },
): string {
  const cert = d.certificate;
  const notAfter = cert ? num(cert.notAfter) : undefined;
  return json({
    v: PAYLOAD_VERSION,
    state: str(d.state) ?? "unknown",
    registrar: str(d.registrar),
    primary: bool(d.primary),
    limited: bool(d.limited) ?? false,
    uri: str(d.uri),
    certificate:
      cert && notAfter !== undefined ? { notAfter: iso(notAfter), subject: str(cert.subject) } : undefined,
    firmware: { version: str(d.firmware?.version) ?? "unknown", slot: str(d.firmware?.slot) },
    uptimeS: Math.floor(num(d.uptimeS) ?? 0),
    addresses: { ip: str(d.addresses?.ip), mac: str(d.addresses?.mac) },
    // Always present: null says "no call" to a dashboard that reads the retained state alone.
    call: callPayload(d.call),
    birthSeq: o.birthSeq,
    outbox: { queued: o.outbox.queued, dropped: o.outbox.dropped },
    ts: iso(o.now),
  });
}

function callPayload(c: CallState | undefined): Record<string, unknown> | null {
  const since = c ? num(c.since) : undefined;
  if (!c || since === undefined) return null;
  return {
    state: str(c.state) ?? "unknown",
    direction: c.direction === "incoming" ? "incoming" : "outgoing",
    remote: str(c.remote),
    since: iso(since),
  };
}

/** The last will, fixed at CONNECT: the broker publishes it when the phone vanishes. */
export function lostPayload(birthSeq: number): string {
  return json({ v: PAYLOAD_VERSION, state: "lost", birthSeq });
}

/** What a clean stop leaves retained instead of the will. */
export function offlinePayload(birthSeq: number, now: number): string {
  return json({ v: PAYLOAD_VERSION, state: "offline", birthSeq, ts: iso(now) });
}

export type EventFields = Record<string, string | number | boolean | undefined>;

/** An event type is a code: "state", "sign-in.failed", "registrar.failover". */
const EVENT_TYPE = /^[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*$/;
/** A field's text value is a code or a name (host:port, sip: URI), never prose: no white space. */
const CODE_TEXT = /^[^\s\u0000-\u001f]{0,256}$/;
/** Words of a name ("webTicket", "private_key", "pin-code") that only a secret's name has. */
const SECRET_WORDS = new Set([
  "pin",
  "password",
  "passwd",
  "passphrase",
  "secret",
  "ticket",
  "token",
  "private",
]);
const secretName = (name: string): boolean =>
  name.toLowerCase() === "key" ||
  name
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .some((w) => SECRET_WORDS.has(w) || w.startsWith("credential"));
const RESERVED = new Set(["v", "seq", "ts", "type"]);

export function isEventType(type: string): boolean {
  return EVENT_TYPE.test(type) && type.length <= 64;
}

/**
 * An event: {v, seq, ts, type, ...fields}. Fields are codes and numbers; a text value with white
 * space (a message that could hold user text, a PEM block) or a secret-looking name is left out.
 */
export function eventPayload(o: { seq: number; now: number; type: string; fields?: EventFields }): string {
  const out: Record<string, unknown> = { v: PAYLOAD_VERSION, seq: o.seq, ts: iso(o.now), type: o.type };
  for (const [name, value] of Object.entries(o.fields ?? {})) {
    if (RESERVED.has(name) || secretName(name) || !/^[A-Za-z][A-Za-z0-9._-]{0,63}$/.test(name)) continue;
    if (
      typeof value === "string"
        ? CODE_TEXT.test(value)
        : num(value) !== undefined || bool(value) !== undefined
    )
      out[name] = value;
  }
  return json(out);
}

export function reportedPayload(r: ReportedConfig, now: number): string {
  return json({
    v: PAYLOAD_VERSION,
    version: r.version,
    layers: { org: r.layers.org, site: r.layers.site, device: r.layers.device },
    applied: r.applied,
    pending: [...r.pending],
    refused: { ...r.refused },
    errors: r.errors ? { org: r.errors.org, site: r.errors.site, device: r.errors.device } : undefined,
    ts: iso(now),
  });
}

export function replyPayload(r: CommandReply): string {
  return json({
    v: PAYLOAD_VERSION,
    command: r.command,
    status: r.status,
    result: r.result === undefined ? undefined : plainData(r.result),
    error: r.error ? { code: String(r.error.code), message: String(r.error.message) } : undefined,
  });
}

const PEM_PRIVATE = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;
const MAX_DEPTH = 8;

/**
 * A copy of a command's result holding plain JSON data only (no class instances, functions or
 * buffers), without members named like a secret and without text that holds a private key.
 * Diagnostics are secret-free at their source (diagnostics.ts); this is the second line.
 */
export function plainData(v: unknown, depth = 0): unknown {
  if (v === null || typeof v === "boolean") return v;
  if (typeof v === "number") return Number.isFinite(v) ? v : undefined;
  if (typeof v === "string") return PEM_PRIVATE.test(v) ? "(withheld)" : v;
  if (depth >= MAX_DEPTH || typeof v !== "object") return undefined;
  if (Array.isArray(v)) return v.map((e) => plainData(e, depth + 1) ?? null);
  if (Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== null) return undefined;
  const out: Record<string, unknown> = {};
  for (const [name, e] of Object.entries(v)) if (!secretName(name)) out[name] = plainData(e, depth + 1);
  return out;
}
