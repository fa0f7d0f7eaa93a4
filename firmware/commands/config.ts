/**
 * `handset config --defaults`: the reference of every option of `handset run` (name, type,
 * default, secret, description), as text or, with --json, one `config.reference` event.
 * `handset config --check FILE`: validates a configuration file as `handset run` would and
 * prints the effective configuration (defaults filled in, secrets left out).
 */
import { readFile } from "node:fs/promises";
import { type HandsetConfig, OPTIONS, type Option } from "../config/options.ts";
import { ConfigError, parseConfig } from "../config/parse.ts";
import { referenceRows, referenceText } from "../config/reference.ts";
import { HandsetError } from "../core/errors.ts";
import { type CommandSpec, parseFlags } from "./args.ts";
import type { Output } from "./output.ts";

/** Reads and validates a configuration file; every problem is one "config-invalid" line. */
export async function loadConfigFile(path: string): Promise<HandsetConfig> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new HandsetError(
      "config-invalid",
      `Cannot read the configuration ${path}: ${(err as Error).message}`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HandsetError("config-invalid", `${path} is not JSON: ${(err as Error).message}`);
  }
  try {
    return parseConfig(json);
  } catch (err) {
    if (err instanceof ConfigError) throw err.inFile(path);
    throw err;
  }
}

export const CONFIG_SPEC = {
  summary: "the configuration file of handset run: every option, or one file checked",
  synopsis: ["--defaults", "--check FILE"],
  flags: {
    defaults: {
      type: "boolean",
      help: "every option of the configuration file, with type, default and meaning",
    },
    check: { type: "string", arg: "FILE", help: "validate a configuration file as run would" },
  },
} as const satisfies CommandSpec;

export async function configCommand(
  argv: string[],
  out: Output,
  write: (text: string) => void,
): Promise<number> {
  const f = parseFlags(argv, CONFIG_SPEC.flags);
  if (typeof f["check"] === "string") {
    const config = await loadConfigFile(f["check"]);
    const shown: Record<string, unknown> = {};
    for (const [name, o] of Object.entries(OPTIONS as Record<string, Option<unknown>>)) {
      const v = config[name as keyof HandsetConfig];
      if (v !== undefined && !o.secret) shown[name] = o.kind.toJson(v);
    }
    out.event({ event: "config.valid", file: f["check"], config: shown });
    return 0;
  }
  if (f["defaults"] !== true)
    throw new HandsetError("usage", "handset config needs --defaults or --check FILE");
  if (out.json) out.event({ event: "config.reference", options: referenceRows() });
  else write(`${referenceText()}\n`);
  return 0;
}
