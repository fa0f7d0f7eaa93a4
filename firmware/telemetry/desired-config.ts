/**
 * Desired configuration over MQTT, with device-twin semantics (issue 11): the operator publishes
 * `{"version": N, "config": {…}}` (retained) for the organisation, a site or one phone; the phone
 * checks every key against the option table (firmware/config/options.ts), merges the layers
 * org < site < device (the device's word wins), applies what it may — at once ("live") or at the
 * next idle moment ("idle", Option.remote) — and reports what it applied, what waits and what it
 * refused, with reasons. Pure: payload text in, typed changes and a report out.
 *
 * A key set to `null` goes back to the configuration file's value (and wins over a lower layer
 * that sets it); a key no layer names any more goes back to the file's value too.
 */
import { KindMismatch } from "../config/kinds.ts";
import { OPTIONS, type Option } from "../config/options.ts";
import type { ReportedConfig } from "./payloads.ts";
import { CONFIG_LAYERS, type ConfigLayer } from "./topics.ts";

export type ConfigMode = "live" | "idle";

/** One layer's document, checked: typed values (null = the file's value) and refused keys. */
export interface DesiredLayer {
  version: number;
  values: Map<string, unknown>;
  refused: Record<string, string>;
}

/** Dotted key → typed value; undefined = back to the file's value. */
export type ConfigChanges = Record<string, unknown>;

/** A desired document larger than this is refused unread. */
export const MAX_DOCUMENT_CHARS = 65_536;
const NOT_REMOTE = "not settable over MQTT (only the configuration file sets it)";
const NAMES = Object.keys(OPTIONS);
const optionOf = (name: string): Option<unknown> | undefined =>
  Object.hasOwn(OPTIONS, name) ? (OPTIONS as Record<string, Option<unknown>>)[name] : undefined;
const isGroup = (path: string): boolean => NAMES.some((n) => n.startsWith(`${path}.`));
const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** Checks one layer's payload; a document that is not {version, config} is refused as a whole. */
export function parseDesired(
  text: string,
): { ok: true; layer: DesiredLayer } | { ok: false; reason: string } {
  if (text.length > MAX_DOCUMENT_CHARS) return { ok: false, reason: "too large" };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { ok: false, reason: "not JSON" };
  }
  if (!isObject(doc)) return { ok: false, reason: "expected an object with version and config" };
  const version = doc.version;
  if (typeof version !== "number" || !Number.isSafeInteger(version) || version < 0)
    return { ok: false, reason: "version: expected an integer ≥ 0" };
  const config = doc.config ?? {};
  if (!isObject(config)) return { ok: false, reason: "config: expected an object" };
  const layer: DesiredLayer = { version, values: new Map(), refused: {} };
  const walk = (obj: Record<string, unknown>, prefix: string): void => {
    for (const [key, value] of Object.entries(obj)) {
      const path = prefix ? `${prefix}.${key}` : key;
      const opt = optionOf(path);
      if (opt) {
        const reason = refusal(opt, value);
        if (reason) layer.refused[path] = reason;
        else layer.values.set(path, value === null ? null : opt.kind.check(value));
      } else if (isGroup(path) && isObject(value)) walk(value, path);
      else layer.refused[path] = isGroup(path) ? "expected an object (a group of options)" : "unknown option";
    }
  };
  walk(config, "");
  return { ok: true, layer };
}

function refusal(opt: Option<unknown>, value: unknown): string | undefined {
  if (!opt.remote) return NOT_REMOTE;
  if (value === null) return undefined;
  const r = opt.kind.check(value);
  if (!(r instanceof KindMismatch)) return undefined;
  return opt.secret ? `expected ${opt.kind.type} (value not shown: secret)` : r.reason;
}

/** The layers merged, org < site < device: typed values and the refusals of every layer. */
export function mergeLayers(layers: Partial<Record<ConfigLayer, DesiredLayer>>): {
  values: Map<string, unknown>;
  refused: Record<string, string>;
} {
  const values = new Map<string, unknown>();
  const refused: Record<string, string> = {};
  for (const name of CONFIG_LAYERS) {
    const layer = layers[name];
    if (!layer) continue;
    for (const [k, v] of layer.values) values.set(k, v);
    for (const [k, reason] of Object.entries(layer.refused))
      refused[k] = name === "device" ? reason : `${name} layer: ${reason}`;
  }
  return { values, refused };
}

/** A value's identity for comparison; null and absent both mean "the file's value". */
function fingerprint(key: string, v: unknown): string {
  if (v === null || v === undefined) return "file";
  return JSON.stringify(optionOf(key)!.kind.toJson(v));
}

/**
 * The phone's side of the twin: the latest document of each layer, what the device runs with,
 * and what it could not apply. The agent asks for changes(), applies them and says committed()
 * or failed(), then publishes report().
 */
export class DesiredConfig {
  private readonly layers: Partial<Record<ConfigLayer, DesiredLayer>> = {};
  private readonly errors: Partial<Record<ConfigLayer, string>> = {};
  private merged = mergeLayers({});
  /** Keys the device runs with a remote value for (null: the file's value, by request). */
  private readonly applied = new Map<string, unknown>();
  /** Keys the device failed to apply: the target's fingerprint then, and the reason. */
  private readonly failures = new Map<string, { target: string; reason: string }>();

  /** A layer's retained document arrived; an empty payload (retained message cleared) removes it. */
  set(layer: ConfigLayer, text: string): void {
    if (text.trim() === "") {
      delete this.layers[layer];
      delete this.errors[layer];
    } else {
      const r = parseDesired(text);
      if (r.ok) {
        this.layers[layer] = r.layer;
        delete this.errors[layer];
      } else this.errors[layer] = r.reason; // the previous good document of the layer stays
    }
    this.merged = mergeLayers(this.layers);
  }

  /** What differs between the merged documents and what the device runs with, for one mode. */
  changes(mode: ConfigMode): ConfigChanges {
    const out: ConfigChanges = {};
    for (const key of new Set([...this.merged.values.keys(), ...this.applied.keys()])) {
      if (optionOf(key)?.remote !== mode) continue;
      const target = this.merged.values.get(key);
      const want = fingerprint(key, target);
      if (want === fingerprint(key, this.applied.get(key))) continue;
      if (this.failures.get(key)?.target === want) continue; // tried that; wait for a new value
      out[key] = target === null ? undefined : target;
    }
    return out;
  }

  /** The device now runs with these changes. */
  committed(changes: ConfigChanges): void {
    for (const [key, v] of Object.entries(changes)) {
      this.failures.delete(key);
      if (v !== undefined) this.applied.set(key, v);
      else if (this.merged.values.has(key)) this.applied.set(key, null);
      else this.applied.delete(key);
    }
  }

  /** The device could not apply these changes (reason: a code and one line, no values). */
  failed(changes: ConfigChanges, reason: string): void {
    for (const [key, v] of Object.entries(changes))
      this.failures.set(key, { target: fingerprint(key, v), reason: `could not apply: ${reason}` });
  }

  report(): ReportedConfig {
    const versions: ReportedConfig["layers"] = {};
    for (const name of CONFIG_LAYERS) {
      const layer = this.layers[name];
      if (layer) versions[name] = layer.version;
    }
    // What runs now: the remote values in effect, and null for keys a layer puts back to the file's.
    const applied: Record<string, unknown> = {};
    const nulled = [...this.merged.values].filter(([, v]) => v === null).map(([k]) => k);
    for (const key of [...new Set([...this.applied.keys(), ...nulled])].sort()) {
      const v = this.applied.get(key) ?? null;
      const opt = optionOf(key)!;
      applied[key] = v === null ? null : opt.secret ? "(secret)" : opt.kind.toJson(v);
    }
    const refused = { ...this.merged.refused };
    for (const [key, f] of this.failures) refused[key] = f.reason;
    const pending = [...Object.keys(this.changes("live")), ...Object.keys(this.changes("idle"))].sort();
    const errors = Object.keys(this.errors).length > 0 ? { ...this.errors } : undefined;
    return {
      version: versions.device ?? Math.max(versions.org ?? 0, versions.site ?? 0),
      layers: versions,
      applied,
      pending,
      refused,
      ...(errors ? { errors } : {}),
    };
  }
}
