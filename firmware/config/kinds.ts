/**
 * The value types a configuration option can have. Each kind checks a JSON value and turns it
 * into the typed value the firmware uses; `type` is how the reference (`handset config
 * --defaults`) names it. Pure: no I/O, nothing read from the environment.
 */

/** A value that does not fit: the reason, to be prefixed with the option's name. */
export class KindMismatch {
  constructor(readonly reason: string) {}
}

export interface Kind<T> {
  /** How the reference names the type, e.g. `HOST:PORT` or `"pi" | "sim"`. */
  readonly type: string;
  /** The typed value, or a KindMismatch saying what was expected. */
  check(value: unknown): T | KindMismatch;
  /** The value as JSON in the configuration file (for defaults in the reference). */
  toJson(value: T): unknown;
}

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  return `a ${typeof v}`;
}

const got = (v: unknown): string =>
  typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? JSON.stringify(v) : typeOf(v);

function expected(what: string, v: unknown): KindMismatch {
  return new KindMismatch(`expected ${what}, got ${got(v)}`);
}

export function text(o: { pattern?: RegExp; type?: string; what?: string } = {}): Kind<string> {
  const what = o.what ?? "a non-empty string";
  return {
    type: o.type ?? "string",
    check: (v) =>
      typeof v === "string" && v !== "" && (!o.pattern || o.pattern.test(v)) ? v : expected(what, v),
    toJson: (v) => v,
  };
}

export function integer(o: { min: number; max: number; unit?: string }): Kind<number> {
  const range = `${o.min}…${o.max}${o.unit ? ` ${o.unit}` : ""}`;
  return {
    type: `integer (${range})`,
    check: (v) =>
      typeof v === "number" && Number.isInteger(v) && v >= o.min && v <= o.max
        ? v
        : expected(`an integer in ${range}`, v),
    toJson: (v) => v,
  };
}

export function oneOf<const V extends string>(...values: V[]): Kind<V> {
  const type = values.map((v) => JSON.stringify(v)).join(" | ");
  return {
    type,
    check: (v) => (typeof v === "string" && (values as string[]).includes(v) ? (v as V) : expected(type, v)),
    toJson: (v) => v,
  };
}

export interface HostPort {
  host: string;
  port: number;
}

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

function parseHostPort(v: unknown): HostPort | undefined {
  if (typeof v !== "string") return undefined;
  const m = HOST_PORT.exec(v);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}

/** `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`), parsed into host and port. */
export const hostPort: Kind<HostPort> = {
  type: "HOST:PORT",
  check: (v) => parseHostPort(v) ?? expected("HOST:PORT", v),
  toJson: (v) => (v.host.includes(":") ? `[${v.host}]:${v.port}` : `${v.host}:${v.port}`),
};

/** `HOST:PORT` kept as text (the static host table's values). */
export const hostPortText: Kind<string> = {
  type: "HOST:PORT",
  check: (v) => (parseHostPort(v) ? (v as string) : expected("HOST:PORT", v)),
  toJson: (v) => v,
};

/** An IP address, optionally with a port: what a DNS resolver is pointed at. */
export const ipAddress: Kind<string> = text({
  pattern:
    /^(?:\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*|\[[0-9A-Fa-f:.]+\]:\d{1,5})$/,
  type: "IP[:PORT]",
  what: "an IP address or IP:PORT",
});

/** A DNS name such as `contoso.com`. */
export const dnsName: Kind<string> = text({
  pattern:
    /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
  type: "DNS name",
  what: "a DNS name",
});

export const httpsUrl: Kind<string> = {
  type: "https URL",
  check: (v) => {
    if (typeof v !== "string") return expected("an https URL", v);
    try {
      if (new URL(v).protocol === "https:") return v;
    } catch {
      // not a URL at all
    }
    return expected("an https URL", v);
  },
  toJson: (v) => v,
};

export function listOf<T>(item: Kind<T>, o: { nonEmpty?: boolean } = {}): Kind<T[]> {
  return {
    type: `${item.type}[]${o.nonEmpty ? " (at least one)" : ""}`,
    check: (v) => {
      if (!Array.isArray(v)) return expected(`an array of ${item.type}`, v);
      if (o.nonEmpty && v.length === 0) return new KindMismatch(`expected at least one ${item.type}`);
      const out: T[] = [];
      for (const [i, e] of v.entries()) {
        const r = item.check(e);
        if (r instanceof KindMismatch) return new KindMismatch(`[${i}]: ${r.reason}`);
        out.push(r);
      }
      return out;
    },
    toJson: (v) => v.map((e) => item.toJson(e)),
  };
}

/** An object of free names to values (the names are data, not options). */
export function mapOf<T>(key: Kind<string>, value: Kind<T>): Kind<Record<string, T>> {
  return {
    type: `{ ${key.type}: ${value.type} }`,
    check: (v) => {
      if (typeof v !== "object" || v === null || Array.isArray(v)) return expected("an object", v);
      const out: Record<string, T> = {};
      for (const [k, e] of Object.entries(v)) {
        if (key.check(k) instanceof KindMismatch)
          return new KindMismatch(`key ${JSON.stringify(k)}: not ${key.type}`);
        const r = value.check(e);
        if (r instanceof KindMismatch) return new KindMismatch(`${JSON.stringify(k)}: ${r.reason}`);
        out[k] = r;
      }
      return out;
    },
    toJson: (v) => v,
  };
}
