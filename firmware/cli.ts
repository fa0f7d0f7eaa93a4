/**
 * Composition root for the command line (DESIGN.md "Command line"): the product's commands.
 * Each command builds the instances it needs; nothing here is a singleton. The development tools
 * (`demo`, `lab`) are not here: they live beside the lab in test/dev/ and hand the product
 * commands back to `main` with their own added, so nothing the product ships reaches test/.
 */

import { readFileSync } from "node:fs";
import { type CommandSpec, commandHelp, overviewHelp, PIN_NOTE } from "./commands/args.ts";
import { CONFIG_SPEC, configCommand } from "./commands/config.ts";
import { DISCOVER_SPEC, discoverCommand } from "./commands/discover.ts";
import { FLEET_SPEC, fleetCommand } from "./commands/fleet.ts";
import { createOutput, type Output } from "./commands/output.ts";
import { RUN_SPEC, runCommand } from "./commands/phone.ts";
import { PROVISION_SPEC, provisionCommand } from "./commands/provision.ts";
import { REGISTER_SPEC, registerCommand } from "./commands/register.ts";
import { SLOT_SPEC, slotCommand } from "./commands/slot.ts";
import { STORE_SPEC, storeCommand } from "./commands/store.ts";
import { UPDATE_SPEC, updateCommand } from "./commands/update.ts";
import { asHandsetError, HandsetError } from "./core/errors.ts";

export type Command = (argv: string[], out: Output) => Promise<number>;

/** The help of the product's commands: the flag tables the commands parse with. */
export const PRODUCT_SPECS: Record<string, CommandSpec> = {
  run: RUN_SPEC,
  config: CONFIG_SPEC,
  register: REGISTER_SPEC,
  provision: PROVISION_SPEC,
  discover: DISCOVER_SPEC,
  store: STORE_SPEC,
  update: UPDATE_SPEC,
  slot: SLOT_SPEC,
  fleet: FLEET_SPEC,
};

const TITLE = "usage: handset <command> [--json] [flags]      (handset <command> --help: its flags)";

/** The overview of `handset --help`, every command with every flag it takes. */
export function usageText(specs: Record<string, CommandSpec | undefined>, extra: string[] = []): string {
  return overviewHelp(TITLE, specs, ["", ...PIN_NOTE, ...extra]);
}

export const USAGE = usageText(PRODUCT_SPECS);

/**
 * The package's version, for --version: the nearest handset package.json at or above this file's
 * folder (the release bundle's own beside handset.mjs, the repository's above firmware/).
 */
export function version(): string {
  for (const rel of ["./package.json", "../package.json"]) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), "utf8")) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === "handset") return pkg.version ?? "unknown";
    } catch {
      // not here: one folder up
    }
  }
  return "unknown";
}

export interface CliOptions {
  /** Commands added to the product's (the development entry adds demo and lab). */
  commands?: Record<string, Command>;
  /** Their help (flag tables), so that `handset NAME --help` lists their flags. */
  specs?: Record<string, CommandSpec>;
  /** Lines added to the overview of `handset --help`. */
  usageNotes?: string[];
  /** Replaces the overview text altogether. */
  usage?: string;
  write?: (line: string) => void;
  writeErr?: (line: string) => void;
}

const stdoutLine = (l: string) => {
  process.stdout.write(`${l}\n`);
};
const stderrLine = (l: string) => {
  process.stderr.write(`${l}\n`);
};

function productCommands(write: (line: string) => void): Record<string, Command> {
  return {
    run: runCommand,
    config: (argv, out) => configCommand(argv, out, (text) => write(text.replace(/\n$/, ""))),
    register: registerCommand,
    provision: provisionCommand,
    discover: discoverCommand,
    store: storeCommand,
    update: (argv, out) => updateCommand(argv, out),
    slot: (argv, out) => slotCommand(argv, out),
    fleet: (argv, out) => fleetCommand(argv, out),
  };
}

const DEV_TOOLS = new Set(["demo", "lab"]);

/** The exit code of an error: 2 for a usage error (a flag), 1 for any other. */
export const exitCodeOf = (e: HandsetError): number => (e.code === "usage" ? 2 : 1);

export async function main(argv: string[], o: CliOptions = {}): Promise<number> {
  const write = o.write ?? stdoutLine;
  const [name, ...rest] = argv;
  const json = rest.includes("--json");
  const out = createOutput(json, write, o.writeErr ?? stderrLine);
  const specs: Record<string, CommandSpec> = { ...PRODUCT_SPECS, ...o.specs };
  const commands = { ...productCommands(write), ...o.commands };
  // Every command there is, with its flags where it has a table (one without says only its name).
  const usage =
    o.usage ??
    usageText(
      Object.fromEntries(
        Object.keys(commands).map((n) => [n, Object.hasOwn(specs, n) ? specs[n] : undefined]),
      ),
      o.usageNotes,
    );
  if (!name || name === "--help" || name === "-h" || name === "help") {
    write(usage);
    return name ? 0 : 2;
  }
  if (name === "--version" || name === "-V" || name === "version") {
    if (json || rest.includes("--json")) out.event({ event: "version", version: version() });
    else write(`handset ${version()}`);
    return 0;
  }
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    const hint = DEV_TOOLS.has(name)
      ? ` (a development tool, not part of the firmware: npm start, or node test/dev/handset-dev.mjs ${name})`
      : name.startsWith("-")
        ? " (handset --help lists the commands)"
        : "";
    out.error(new HandsetError("usage", `unknown command "${name}"${hint}`));
    return 2;
  }
  // `--` ends the flags: a "--help" after it is a value, not a request for help.
  const flags = rest.includes("--") ? rest.slice(0, rest.indexOf("--")) : rest;
  if (flags.includes("--help") || flags.includes("-h")) {
    const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
    write(spec ? commandHelp(name, spec) : usage);
    return 0;
  }
  if (flags.includes("--version")) {
    write(`handset ${version()}`);
    return 0;
  }
  try {
    return await command(rest, out);
  } catch (err) {
    const e = asHandsetError(err);
    out.error(e);
    return exitCodeOf(e);
  }
}

/** The exit code of a process that met an error nothing handled (sysexits EX_SOFTWARE). */
export const CRASH_EXIT_CODE = 70;

interface ProcessEvents {
  on(event: "unhandledRejection", listener: (reason: unknown) => void): unknown;
  on(event: "uncaughtException", listener: (err: Error) => void): unknown;
}

/**
 * The process never dies silently: a promise rejection nobody handled, or an exception nobody
 * caught, is one line (an `error` event in --json mode) and a non-zero exit, so that systemd
 * restarts the phone and its journal says why.
 */
export function installCrashHandlers(o: {
  out: Output;
  exit: (code: number) => void;
  proc?: ProcessEvents;
}): void {
  const proc = o.proc ?? process;
  let crashed = false;
  const crash = (code: string, what: string, err: unknown) => {
    if (crashed) return;
    crashed = true;
    try {
      const e = err instanceof Error ? err : undefined;
      const message = (e?.message ?? String(err)).split("\n")[0] || "(no message)";
      const where = e?.stack
        ?.split("\n")
        .find((l) => l.trim().startsWith("at "))
        ?.trim();
      o.out.error(new HandsetError(code, `${what}: ${message}${where ? ` (${where})` : ""}`));
    } finally {
      o.exit(CRASH_EXIT_CODE);
    }
  };
  proc.on("unhandledRejection", (reason) =>
    crash("unhandled-rejection", "unhandled promise rejection", reason),
  );
  proc.on("uncaughtException", (err) => crash("uncaught-exception", "uncaught exception", err));
}

/** The process entry (firmware/handset.mjs): crash handlers first, then the command. */
export async function runEntry(argv: string[], o: CliOptions = {}): Promise<number> {
  const json = argv.slice(1).includes("--json");
  installCrashHandlers({
    out: createOutput(json, o.write ?? stdoutLine, o.writeErr ?? stderrLine),
    exit: (code) => process.exit(code),
  });
  return main(argv, o);
}
