import { parseArgs } from "node:util";
import { HandsetError } from "../core/errors.ts";

/**
 * One flag of a command. The same table parses the command line and prints `--help`, so the
 * help cannot name a flag the command does not take, nor leave one out.
 */
export interface FlagDef {
  type: "string" | "boolean";
  short?: string;
  multiple?: boolean;
  /** The value's placeholder in the help ("HOST:PORT", "FILE"). */
  arg?: string;
  /** One line for `--help`. */
  help?: string;
}

export type ArgSpec = Record<string, FlagDef>;

/** A command's help: what it does, its synopsis lines, its flags and any notes. */
export interface CommandSpec {
  summary: string;
  /** Synopsis lines after "handset NAME" (the flags that go together). */
  synopsis?: string[];
  flags: ArgSpec;
  notes?: string[];
}

/** Flags every command takes (cli.ts handles --help before the command runs). */
export const COMMON_FLAGS = {
  json: { type: "boolean", help: "one JSON object per line on standard output, each with an ISO time (ts)" },
  help: { type: "boolean", short: "h", help: "this text" },
} as const satisfies ArgSpec;

function nodeOptions(spec: ArgSpec) {
  const options: Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }> = {};
  for (const [name, d] of Object.entries(spec))
    options[name] = {
      type: d.type,
      ...(d.short ? { short: d.short } : {}),
      ...(d.multiple ? { multiple: true } : {}),
    };
  return options;
}

/**
 * `--timeout -5` is a value, not a flag: node's parser calls a value starting with "-" ambiguous,
 * so a string flag followed by a negative number is joined (`--timeout=-5`) and refused, or taken,
 * by the flag's own check with a message that names it.
 */
function joinNegativeValues(argv: string[], spec: ArgSpec): string[] {
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const name = a.startsWith("--") && !a.includes("=") ? a.slice(2) : undefined;
    if (name && spec[name]?.type === "string" && next !== undefined && /^-\d/.test(next)) {
      args.push(`${a}=${next}`);
      i++;
    } else args.push(a);
  }
  return args;
}

/** Parses flags strictly: an unknown flag is a usage error with a one-line reason. */
export function parseFlags<T extends ArgSpec>(
  argv: string[],
  spec: T,
): Record<string, string | boolean | undefined> {
  const all: ArgSpec = { ...COMMON_FLAGS, ...spec };
  try {
    const { values } = parseArgs({
      args: joinNegativeValues(argv, all),
      options: nodeOptions(all),
      strict: true,
    });
    return values as Record<string, string | boolean | undefined>;
  } catch (err) {
    // node's messages run over several lines ("Did you forget…"): the first one says it.
    const message = (err as Error).message.split("\n")[0]!.replace(/\.$/, "");
    throw new HandsetError("usage", message);
  }
}

export function required(flags: Record<string, unknown>, name: string): string {
  const v = flags[name];
  if (typeof v !== "string" || v === "") throw new HandsetError("usage", `--${name} is required`);
  return v;
}

export function hostPort(text: string, flag: string): { host: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port < 1 || port > 65535)
    throw new HandsetError("usage", `--${flag} must be HOST:PORT, got "${text}"`);
  return { host: m[1]!, port };
}

/** A decimal number as a person types it ("30", "2.5"); NaN for anything else ("", "0x10", "1e3"). */
function decimal(text: string): number {
  return /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
}

/** `--NAME S`: seconds, more than 0 and at most `max`; `fallback` when the flag is not given. */
export function seconds(
  flags: Record<string, unknown>,
  name: string,
  fallback: number,
  max = 86_400,
): number {
  const v = flags[name];
  if (v === undefined) return fallback;
  const n = decimal(String(v));
  if (!(n > 0 && n <= max))
    throw new HandsetError(
      "usage",
      `--${name} must be a number of seconds above 0 (up to ${max}), got "${v}"`,
    );
  return n;
}

/** `--NAME N`: a whole number from `min` to `max`; `fallback` when the flag is not given. */
export function wholeNumber(
  flags: Record<string, unknown>,
  name: string,
  fallback: number,
  o: { min?: number; max?: number } = {},
): number {
  const v = flags[name];
  if (v === undefined) return fallback;
  const min = o.min ?? 0;
  const max = o.max ?? 1_000_000;
  const n = /^\d+$/.test(String(v)) ? Number(v) : Number.NaN;
  if (!(Number.isInteger(n) && n >= min && n <= max))
    throw new HandsetError("usage", `--${name} must be a whole number from ${min} to ${max}, got "${v}"`);
  return n;
}

/** `--NAME V` that must be one of `choices`. */
export function oneOf<C extends string>(
  flags: Record<string, unknown>,
  name: string,
  choices: readonly C[],
  fallback: C,
): C {
  const v = flags[name] ?? fallback;
  if (typeof v !== "string" || !(choices as readonly string[]).includes(v))
    throw new HandsetError("usage", `--${name} must be ${choices.join(", ")}; got "${String(v)}"`);
  return v as C;
}

function flagColumn(name: string, d: FlagDef): string {
  const long = `--${name}${d.type === "string" ? ` ${d.arg ?? "VALUE"}` : ""}`;
  return `${d.short ? `-${d.short}, ` : ""}${long}${d.multiple ? " (repeatable)" : ""}`;
}

/** The flag lines of a command's help, in the order of its spec, then --json and --help. */
export function flagLines(spec: ArgSpec, indent = "  ", common = true): string[] {
  const all: ArgSpec = common ? { ...spec, ...COMMON_FLAGS } : spec;
  const cols = Object.entries(all).map(([n, d]) => [flagColumn(n, d), d.help ?? ""] as const);
  const width = Math.min(34, Math.max(...cols.map(([c]) => c.length)));
  return cols.map(([c, h]) => `${indent}${c.padEnd(width)}  ${h}`.trimEnd());
}

/** `handset NAME --help`. */
export function commandHelp(name: string, spec: CommandSpec): string {
  const synopsis = spec.synopsis?.length
    ? spec.synopsis.map((s, i) => `${i === 0 ? "usage: " : "   or: "}handset ${name} ${s}`)
    : [`usage: handset ${name} [flags]`];
  return [
    ...synopsis,
    "",
    `  ${spec.summary}`,
    "",
    "flags:",
    ...flagLines(spec.flags),
    ...(spec.notes?.length ? ["", ...spec.notes.map((n) => (n ? `  ${n}` : ""))] : []),
  ].join("\n");
}

/** The overview (`handset --help`): every command with every flag it takes. */
export function overviewHelp(
  title: string,
  specs: Record<string, CommandSpec | undefined>,
  notes: string[] = [],
): string {
  const blocks = Object.entries(specs).map(([name, s]) =>
    s
      ? [`  ${name.padEnd(10)} ${s.summary}`, ...flagLines(s.flags, "               ", false)].join("\n")
      : `  ${name}`,
  );
  return [
    title,
    "",
    ...blocks,
    "",
    "  Every command also takes --json (one JSON object per line, each with an ISO time, ts) and",
    "  -h/--help (its flags); handset --version prints the version.",
    ...notes.map((n) => (n ? `  ${n}` : "")),
  ].join("\n");
}

/** Where a secret flag may come from besides the (ps-visible) command line. */
export interface SecretSources {
  env: Record<string, string | undefined>;
  /** Standard input, read only when `--<name>-stdin` is given. */
  stdin: AsyncIterable<Buffer | string>;
}

export const processSecretSources = (): SecretSources => ({ env: process.env, stdin: process.stdin });

/** The first line of a stream (without its line ending), or all of it when it has no newline. */
async function firstLine(input: AsyncIterable<Buffer | string>): Promise<string> {
  let text = "";
  for await (const chunk of input) {
    text += typeof chunk === "string" ? chunk : chunk.toString("utf8");
    if (text.includes("\n")) break;
  }
  return text.split("\n")[0]!.replace(/\r$/, "");
}

/**
 * The PIN from `--pin-stdin` (first line of standard input), `--pin P` or the environment
 * variable HANDSET_PIN, in that order; at most one of the two flags. Undefined when none is given.
 */
export async function readPin(
  flags: Record<string, unknown>,
  sources: SecretSources = processSecretSources(),
): Promise<string | undefined> {
  const fromFlag = typeof flags["pin"] === "string" ? flags["pin"] : undefined;
  if (flags["pin-stdin"] === true) {
    if (fromFlag !== undefined) throw new HandsetError("usage", "give the PIN once: --pin or --pin-stdin");
    const pin = await firstLine(sources.stdin);
    if (pin === "") throw new HandsetError("usage", "--pin-stdin: standard input held no PIN");
    return pin;
  }
  if (fromFlag !== undefined) return fromFlag;
  const env = sources.env["HANDSET_PIN"];
  return env !== undefined && env !== "" ? env : undefined;
}

/** The flags readPin understands, to spread into a command's parseFlags spec. */
export const PIN_FLAGS = {
  "pin-stdin": { type: "boolean", help: "read the PIN from the first line of standard input" },
  pin: { type: "string", arg: "P", help: "the PIN (visible to every user in ps: prefer --pin-stdin)" },
} as const satisfies ArgSpec;

/** The note on the PIN in the help of the commands that take one. */
export const PIN_NOTE = [
  "The PIN: --pin-stdin reads it from the first line of standard input, or the environment",
  "variable HANDSET_PIN holds it. --pin P also works, but a command line is visible in ps",
  "and /proc to every user of the machine: prefer the other two.",
];

/** `--verbose`, for the commands that log. */
export const VERBOSE_FLAG = {
  verbose: { type: "boolean", help: "every log record as a log event, with its fields" },
} as const satisfies ArgSpec;
