import { parseArgs } from "node:util";
import { HandsetError } from "../core/errors.ts";

export type ArgSpec = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

/** Parses flags strictly: an unknown flag is a usage error with a one-line reason. */
export function parseFlags<T extends ArgSpec>(
  argv: string[],
  spec: T,
): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({
      args: argv,
      options: { json: { type: "boolean" }, ...spec },
      strict: true,
    });
    return values as Record<string, string | boolean | undefined>;
  } catch (err) {
    throw new HandsetError("usage", (err as Error).message);
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
  pin: { type: "string" },
  "pin-stdin": { type: "boolean" },
} as const satisfies ArgSpec;
