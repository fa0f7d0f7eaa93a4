/**
 * Validation of a configuration file's JSON against the option table, at start-up and all at
 * once: an unknown key, a wrong type or a missing required option is refused with one line that
 * names the key (`ConfigError`, code "config-invalid"). Pure: the caller reads the file.
 */
import { HandsetError } from "../core/errors.ts";
import { KindMismatch } from "./kinds.ts";
import { type HandsetConfig, OPTIONS, type Option, type OptionName } from "./options.ts";

export class ConfigError extends HandsetError {
  /** The dotted name of the offending key ("" for the file as a whole). */
  readonly key: string;
  readonly reason: string;

  constructor(key: string, reason: string, file?: string) {
    super("config-invalid", `${file ? `${file}: ` : ""}${key ? `${key}: ` : ""}${reason}`);
    this.key = key;
    this.reason = reason;
  }

  /** The same error, saying which file it is in. */
  inFile(file: string): ConfigError {
    return new ConfigError(this.key, this.reason, file);
  }
}

const NAMES = Object.keys(OPTIONS) as OptionName[];
const option = (name: string): Option<unknown> | undefined =>
  Object.hasOwn(OPTIONS, name) ? (OPTIONS as Record<string, Option<unknown>>)[name] : undefined;
/** A group is a dotted prefix of some option ("network", "network.dhcp"): a JSON object. */
const isGroup = (path: string): boolean => NAMES.some((n) => n.startsWith(`${path}.`));

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  return typeof v === "object" ? "an object" : `a ${typeof v}`;
}

/** The closest option name, when a key is a likely typo of one (edit distance ≤ 2). */
function suggestion(path: string): string | undefined {
  const distance = (a: string, b: string): number => {
    const row = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0]!;
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const tmp = row[j]!;
        row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = tmp;
      }
    }
    return row[b.length]!;
  };
  let best: { name: string; d: number } | undefined;
  for (const name of NAMES) {
    const d = distance(path.toLowerCase(), name.toLowerCase());
    if (d <= 2 && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}

/**
 * Checks a parsed JSON document and returns the typed configuration, every option present
 * (its default where the file is silent). Throws a ConfigError naming the first bad key.
 */
export function parseConfig(json: unknown): HandsetConfig {
  if (!isObject(json))
    throw new ConfigError("", `the configuration must be a JSON object, got ${describe(json)}`);
  const values = new Map<string, unknown>();
  const walk = (obj: Record<string, unknown>, prefix: string): void => {
    for (const [key, value] of Object.entries(obj)) {
      const path = prefix ? `${prefix}.${key}` : key;
      const opt = option(path);
      if (opt) {
        const r = opt.kind.check(value);
        if (r instanceof KindMismatch)
          throw new ConfigError(
            path,
            opt.secret ? `expected ${opt.kind.type} (value not shown: secret)` : r.reason,
          );
        values.set(path, r);
      } else if (isGroup(path)) {
        if (!isObject(value)) throw new ConfigError(path, `expected an object, got ${describe(value)}`);
        walk(value, path);
      } else {
        const hint = suggestion(path);
        throw new ConfigError(path, `unknown option${hint ? ` (did you mean ${hint}?)` : ""}`);
      }
    }
  };
  walk(json, "");
  const config: Record<string, unknown> = {};
  for (const name of NAMES) {
    const opt = option(name)!;
    if (values.has(name)) config[name] = values.get(name);
    else if (opt.required) throw new ConfigError(name, `required (${opt.kind.type})`);
    else config[name] = opt.default;
  }
  return config as HandsetConfig;
}
