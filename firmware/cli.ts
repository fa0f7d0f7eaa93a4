/**
 * Composition root for the command line (DESIGN.md "Command line"): the product's commands.
 * Each command builds the instances it needs; nothing here is a singleton. The development tools
 * (`demo`, `lab`) are not here: they live beside the lab in test/dev/ and hand the product
 * commands back to `main` with their own added, so nothing the product ships reaches test/.
 */

import { configCommand } from "./commands/config.ts";
import { discoverCommand } from "./commands/discover.ts";
import { createOutput, type Output } from "./commands/output.ts";
import { runCommand } from "./commands/phone.ts";
import { provisionCommand } from "./commands/provision.ts";
import { registerCommand } from "./commands/register.ts";
import { asHandsetError, HandsetError } from "./core/errors.ts";

export const USAGE = `usage: handset <command> [--json] [flags]      (handset <command> --help: this text)
  run        the firmware on a board: --config FILE (board "pi" or "sim")  [--verbose]
  config     --defaults: every option of the configuration file, with type, default and meaning
             --check FILE: validate a configuration file as run would
  register   one TLS-DSK registration: --registrar HOST:PORT --uri SIP-URI --cert PEM --key PEM --ca PEM
             or --store DIR --registrar HOST:PORT --ca PEM [--extension N and a PIN]
             [--server-name NAME] [--inner-tls 1.2|1.0|auto] [--refreshes N] [--timeout S]
  provision  PIN sign-in and certificate provisioning: --web CERTPROV-URL --extension N --store DIR --ca PEM
             and a PIN
  discover   DHCPINFORM (--interface IF | --dhcp-server HOST:PORT), SNTP (--ntp HOST:PORT), DNS SRV (--domain D)

  The PIN (register, provision): --pin-stdin reads it from the first line of standard input,
  or the environment variable HANDSET_PIN holds it. --pin P also works, but a command line is
  visible to every user of the machine (ps, /proc): prefer the other two.`;

export type Command = (argv: string[], out: Output) => Promise<number>;

export interface CliOptions {
  /** Commands added to the product's (the development entry adds demo and lab). */
  commands?: Record<string, Command>;
  /** Replaces the usage text (the development entry adds its commands to it). */
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
  };
}

const DEV_TOOLS = new Set(["demo", "lab"]);

export async function main(argv: string[], o: CliOptions = {}): Promise<number> {
  const write = o.write ?? stdoutLine;
  const [name, ...rest] = argv;
  const json = rest.includes("--json");
  const out = createOutput(json, write, o.writeErr ?? stderrLine);
  const usage = o.usage ?? USAGE;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    write(usage);
    return name ? 0 : 2;
  }
  const commands = { ...productCommands(write), ...o.commands };
  const command = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!command) {
    const hint = DEV_TOOLS.has(name)
      ? ` (a development tool, not part of the firmware: npm start, or node test/dev/handset-dev.mjs ${name})`
      : "";
    out.error(new HandsetError("usage", `unknown command "${name}"${hint}`));
    return 2;
  }
  if (rest.includes("--help") || rest.includes("-h")) {
    write(usage);
    return 0;
  }
  try {
    return await command(rest, out);
  } catch (err) {
    const e = asHandsetError(err);
    out.error(e);
    return e.code === "usage" ? 2 : 1;
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
