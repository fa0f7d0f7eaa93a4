/**
 * Composition root for the command line (DESIGN.md "Command line"). Each command builds the
 * instances it needs; nothing here is a singleton.
 */

import { discoverCommand } from "./commands/discover.ts";
import { labCommand } from "./commands/lab.ts";
import { createOutput, type Output } from "./commands/output.ts";
import { demoCommand, runCommand } from "./commands/phone.ts";
import { provisionCommand } from "./commands/provision.ts";
import { registerCommand } from "./commands/register.ts";
import { asHandsetError, HandsetError } from "./core/errors.ts";

const USAGE = `usage: handset <command> [--json] [flags]
  demo       lab pool + phone + simulated board (npm start)  [--keys "4711#1234#"] [--until STATE] [--timeout S] [--web PORT]
  run        the firmware on a board: --config FILE (board "pi" or "sim")
  lab        the lab pool alone, until SIGTERM  [--site branch|hq] [--redirect]
  register   one TLS-DSK registration: --registrar HOST:PORT --uri SIP-URI --cert PEM --key PEM --ca PEM
             or --store DIR --registrar HOST:PORT --ca PEM [--extension N --pin P]
             [--server-name NAME] [--inner-tls 1.2|1.0|auto] [--refreshes N] [--timeout S]
  provision  PIN sign-in and certificate provisioning: --web CERTPROV-URL --extension N --pin P --store DIR --ca PEM
  discover   DHCPINFORM (--interface IF | --dhcp-server HOST:PORT), SNTP (--ntp HOST:PORT), DNS SRV (--domain D)`;

type Command = (argv: string[], out: Output) => Promise<number>;

const commands: Record<string, Command> = {
  demo: demoCommand,
  lab: labCommand,
  register: registerCommand,
  provision: provisionCommand,
  discover: discoverCommand,
  run: runCommand,
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
