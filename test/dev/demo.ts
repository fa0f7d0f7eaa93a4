/**
 * `handset demo` (`npm start`, development entry only): the lab pool + the phone + a simulated
 * board, run by the product's runPhone. The lab is a fixture, so this lives beside it in test/.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSimBoard } from "../../board/sim/index.ts";
import { type CommandSpec, oneOf, parseFlags } from "../../firmware/commands/args.ts";
import { checkStoreDir } from "../../firmware/commands/input-files.ts";
import type { Output } from "../../firmware/commands/output.ts";
import { logSink, PHONE_FLAGS, phoneFlags, runPhone } from "../../firmware/commands/phone.ts";
import type { PhoneNetworkConfig } from "../../firmware/commands/phone-services.ts";
import type { PhoneConfig } from "../../firmware/main.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { phoneNetwork, startLab } from "../lab/lab.ts";
import { labSite, labUsers } from "./lab-command.ts";

export const DEMO_SPEC = {
  summary: "lab pool + phone + simulated board (npm start)",
  flags: {
    ...PHONE_FLAGS,
    site: {
      type: "string",
      arg: "branch|hq",
      help: "where DHCP homes the phone: the SBA (branch, default) or the pool",
    },
    user: { type: "string", multiple: true, arg: "EXT:PIN", help: "the lab's user instead of 4711:1234" },
    store: { type: "string", arg: "DIR", help: "the phone's identity store (default: a new temporary one)" },
    "inner-tls": { type: "string", arg: "1.2|1.0|auto", help: "the TLS version inside the TLS-DSK tunnel" },
  },
} as const satisfies CommandSpec;

export async function demoCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, DEMO_SPEC.flags);
  // Every flag is checked before the lab starts.
  const flags = phoneFlags(f);
  const innerTls = oneOf(f, "inner-tls", ["1.2", "1.0", "auto"] as const, "auto");
  const users = labUsers(f["user"]);
  const site = labSite(f["site"]);
  if (typeof f["store"] === "string") await checkStoreDir(f["store"], "store");
  const lab = await startLab({ site, ...(users ? { users } : {}) });
  out.event({ ...lab.ready });
  /** The temporary store this demo made, removed when it exits (a --store DIR is the user's). */
  let madeStore: string | undefined;
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
    if (typeof f["store"] !== "string") madeStore = await mkdtemp(join(tmpdir(), "handset-demo-"));
    const storeDir = typeof f["store"] === "string" ? f["store"] : madeStore!;
    const config: PhoneConfig = { storeDir, trustedRoots: [lab.ca.cert], network };
    return await runPhone(out, config, sim, sim, flags, logSink(out, f["verbose"] === true));
  } finally {
    await lab.stop();
    // A store write still in flight may add a file as rm runs: retried; never changes the exit code.
    if (madeStore)
      await rm(madeStore, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }).catch(() => {});
  }
}
