/**
 * `handset demo` (`npm start`, development entry only): the lab pool + the phone + a simulated
 * board, run by the product's runPhone. The lab is a fixture, so this lives beside it in test/.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSimBoard } from "../../board/sim/index.ts";
import { parseFlags } from "../../firmware/commands/args.ts";
import type { Output } from "../../firmware/commands/output.ts";
import { logSink, phoneFlags, runPhone } from "../../firmware/commands/phone.ts";
import type { PhoneNetworkConfig } from "../../firmware/commands/phone-services.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import type { PhoneConfig } from "../../firmware/main.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { phoneNetwork, startLab } from "../lab/lab.ts";
import { labSite, labUsers } from "./lab-command.ts";

export async function demoCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    site: { type: "string" },
    user: { type: "string", multiple: true },
    keys: { type: "string" },
    until: { type: "string" },
    timeout: { type: "string" },
    web: { type: "string" },
    "inner-tls": { type: "string" },
    store: { type: "string" },
    verbose: { type: "boolean" },
  });
  const flags = phoneFlags(f);
  const innerTls = f["inner-tls"] ?? "auto";
  if (innerTls !== "1.2" && innerTls !== "1.0" && innerTls !== "auto")
    throw new HandsetError("usage", "--inner-tls must be 1.2, 1.0 or auto");
  const users = labUsers(f["user"]);
  const lab = await startLab({ site: labSite(f["site"]), ...(users ? { users } : {}) });
  out.event({ ...lab.ready });
  try {
    const clock = new SystemClock();
    const sim = createSimBoard({ clock });
    // One phone on a demo: fail over within 2 s rather than the 40 s spread a building of phones needs.
    const network: PhoneNetworkConfig = {
      ...phoneNetwork(lab.ready),
      innerTls,
      failbackProbeMs: 10_000,
      lostRegistrationSpreadMs: 2_000,
    };
    const storeDir =
      typeof f["store"] === "string" ? f["store"] : await mkdtemp(join(tmpdir(), "handset-demo-"));
    const config: PhoneConfig = { storeDir, trustedRoots: [lab.ca.cert], network };
    return await runPhone(out, config, sim, sim, flags, logSink(out, f["verbose"] === true));
  } finally {
    await lab.stop();
  }
}
