/**
 * The development command line: `demo` and `lab` beside the product's commands (firmware/cli.ts),
 * which it delegates to unchanged. The product never imports this file or anything in test/
 * (test/architecture/layers.test.ts checks it).
 */
import { runEntry } from "../../firmware/cli.ts";
import { CALL_TEST_SPEC, callTestCommand } from "./call-test.ts";
import { DEMO_SPEC, demoCommand } from "./demo.ts";
import { LAB_SPEC, labCommand } from "./lab-command.ts";

export function runDevEntry(argv: string[]): Promise<number> {
  return runEntry(argv, {
    commands: { demo: demoCommand, lab: labCommand, "call-test": callTestCommand },
    specs: { demo: DEMO_SPEC, lab: LAB_SPEC, "call-test": CALL_TEST_SPEC },
    usageNotes: [
      "",
      "demo, lab and call-test are development tools (test/dev/), never in the firmware image.",
    ],
  });
}
