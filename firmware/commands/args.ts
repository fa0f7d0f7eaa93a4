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
