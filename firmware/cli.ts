/**
 * Composition root for the command line (DESIGN.md "Command line"). Each command builds the
 * instances it needs; nothing here is a singleton.
 */

import { demoCommand, labCommand } from "./commands/lab.ts";
import { createOutput, type Output } from "./commands/output.ts";
import { registerCommand } from "./commands/register.ts";
import { asHandsetError, HandsetError } from "./core/errors.ts";

const USAGE = `usage: handset <command> [--json] [flags]
  demo       lab pool + one registration (npm start)
  lab        the lab pool alone, until SIGTERM  [--site branch|hq] [--redirect]
  register   one TLS-DSK registration: --registrar HOST:PORT --uri SIP-URI --cert PEM --key PEM --ca PEM
             [--server-name NAME] [--inner-tls 1.2|1.0|auto] [--refreshes N] [--timeout S]`;

type Command = (argv: string[], out: Output) => Promise<number>;

const commands: Record<string, Command> = {
  demo: demoCommand,
  lab: labCommand,
  register: registerCommand,
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const json = rest.includes("--json");
  const out = createOutput(
    json,
    (l) => process.stdout.write(`${l}\n`),
    (l) => process.stderr.write(`${l}\n`),
  );
  if (!name || name === "--help" || name === "help") {
    process.stdout.write(`${USAGE}\n`);
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    out.error(new HandsetError("usage", `unknown command "${name}"`));
    return 2;
  }
  try {
    return await command(rest, out);
  } catch (err) {
    const e = asHandsetError(err);
    out.error(e);
    return e.code === "usage" ? 2 : 1;
  }
}
