/**
 * `handset demo` (`npm start`, development entry only): the lab pool + the phone + a simulated
 * board, run by the product's runPhone. The lab is a fixture, so this lives beside it in test/.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSimBoard } from "../../board/sim/index.ts";
import { type CommandSpec, oneOf, parseFlags, wholeNumber } from "../../firmware/commands/args.ts";
import { checkStoreDir } from "../../firmware/commands/input-files.ts";
import type { Output } from "../../firmware/commands/output.ts";
import {
  PHONE_FLAGS,
  type PhoneFleet,
  phoneFlags,
  phoneLogging,
  runPhone,
} from "../../firmware/commands/phone.ts";
import type { PhoneNetworkConfig } from "../../firmware/commands/phone-services.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
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
    mqtt: {
      type: "string",
      arg: "URL",
      help: "report to and take commands from this broker (mqtt://user:password@host:port; mqtts:// with --mqtt-ca)",
    },
    "mqtt-ca": { type: "string", arg: "PEM", help: "the CA of an mqtts:// broker" },
    "mqtt-keepalive": { type: "string", arg: "S", help: "MQTT keep-alive in seconds (default 30)" },
  },
} as const satisfies CommandSpec;

/**
 * The demo's broker (--mqtt): a development run, so the URL may carry the user and password; the
 * product's `handset run` takes them from files (mqtt.username, mqtt.passwordFile) instead.
 */
async function demoFleet(f: Record<string, string | boolean | undefined>): Promise<PhoneFleet | undefined> {
  const text = f["mqtt"];
  if (typeof text !== "string") return undefined;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new HandsetError("usage", `--mqtt must be an mqtt:// or mqtts:// URL, got "${text}"`);
  }
  if ((url.protocol !== "mqtt:" && url.protocol !== "mqtts:") || !url.hostname)
    throw new HandsetError("usage", `--mqtt must be an mqtt:// or mqtts:// URL, got "${url.protocol}…"`);
  const username = decodeURIComponent(url.username);
  const password = decodeURIComponent(url.password);
  url.username = "";
  url.password = "";
  const ca = typeof f["mqtt-ca"] === "string" ? [await readFile(f["mqtt-ca"], "utf8")] : undefined;
  return {
    settings: {
      brokers: [url.toString().replace(/\/$/, "")],
      prefix: "handset/v1",
      ...(username ? { username, password } : {}),
      ...(ca ? { ca } : {}),
      keepaliveS: wholeNumber(f, "mqtt-keepalive", 30, { min: 5, max: 600 }),
      commands: ["ping", "reboot", "sign-out", "reprovision", "diagnostics", "screenshot"],
      outboxSize: 1_000,
      outboxRatePerS: 20,
      intervalS: 300,
    },
  };
}

export async function demoCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, DEMO_SPEC.flags);
  // Every flag is checked before the lab starts.
  const flags = phoneFlags(f);
  const innerTls = oneOf(f, "inner-tls", ["1.2", "1.0", "auto"] as const, "auto");
  const users = labUsers(f["user"]);
  const site = labSite(f["site"]);
  if (typeof f["store"] === "string") await checkStoreDir(f["store"], "store");
  const fleet = await demoFleet(f);
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
    const config: PhoneConfig = {
      storeDir,
      trustedRoots: [lab.ca.cert],
      network,
      media: { address: "127.0.0.1", srtp: "required" },
    };
    const logging = phoneLogging(out, { verbose: f["verbose"] === true });
    return await runPhone(out, config, sim, sim, flags, logging.logger, undefined, {
      logging,
      ...(fleet ? { fleet } : {}),
    });
  } finally {
    await lab.stop();
    // A store write still in flight may add a file as rm runs: retried; never changes the exit code.
    if (madeStore)
      await rm(madeStore, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 }).catch(() => {});
  }
}
