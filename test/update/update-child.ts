/**
 * `handset update` in a process of its own, for the power-cut test: the real command, the real
 * slot writer and files, only systemctl replaced (the phone says "registered"; a reboot is a
 * line on stdout, never a real one). Arguments: those of `handset update`.
 */
import { createOutput } from "../../firmware/commands/output.ts";
import { updateCommand } from "../../firmware/commands/update.ts";

const out = createOutput(
  true,
  (l) => process.stdout.write(`${l}\n`),
  (l) => process.stderr.write(`${l}\n`),
);
const run = async (cmd: string, args: string[]) => {
  if (args[0] === "show") return "ActiveState=active\nStatusText=registered\nNRestarts=0\n";
  process.stdout.write(`${JSON.stringify({ event: "child.command", cmd, args })}\n`);
  return "";
};
try {
  process.exitCode = await updateCommand(process.argv.slice(2), out, { run });
} catch (err) {
  out.error(err);
  process.exitCode = 1;
}
