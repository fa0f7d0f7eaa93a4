/**
 * The development command line: `demo` and `lab` beside the product's commands (firmware/cli.ts),
 * which it delegates to unchanged. The product never imports this file or anything in test/
 * (test/architecture/layers.test.ts checks it).
 */
import { runEntry, USAGE } from "../../firmware/cli.ts";
import { demoCommand } from "./demo.ts";
import { labCommand } from "./lab-command.ts";

export const DEV_USAGE = `${USAGE}

development tools (test/dev/, never in the firmware image):
  demo       lab pool + phone + simulated board (npm start)  [--keys "4711#1234#"] [--until STATE] [--timeout S]
             [--web PORT] [--site branch|hq] [--user EXT:PIN]... [--store DIR] [--inner-tls V] [--verbose]
  lab        the lab pool alone, until SIGTERM  [--site branch|hq] [--redirect] [--user EXT:PIN]... [--dir DIR]
             [--web-challenge on-demand|first]`;

export function runDevEntry(argv: string[]): Promise<number> {
  return runEntry(argv, { commands: { demo: demoCommand, lab: labCommand }, usage: DEV_USAGE });
}
