/**
 * `handset lab` (development entry only): the lab pool alone, until SIGTERM. `--user EXT:PIN`
 * (repeatable) replaces the default user 4711 / 1234. `--web-challenge first` makes the web
 * ticket ports challenge before they take credentials, as a real pool's IIS log shows.
 */
import { type CommandSpec, oneOf, parseFlags } from "../../firmware/commands/args.ts";
import type { Output } from "../../firmware/commands/output.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { startLab } from "../lab/lab.ts";

/** `--user EXT:PIN` flags as the lab's users; undefined when none are given (the lab's default). */
export function labUsers(flag: unknown): Array<{ extension: string; pin: string }> | undefined {
  if (flag === undefined) return undefined;
  const list = Array.isArray(flag) ? flag : [flag];
  return list.map((u) => {
    const m = /^(\d{1,15}):(\d{4,15})$/.exec(String(u));
    if (!m)
      throw new HandsetError(
        "usage",
        `--user must be EXTENSION:PIN (digits; a PIN of 4 to 15), got "${String(u)}"`,
      );
    return { extension: m[1]!, pin: m[2]! };
  });
}

export function labSite(flag: unknown): "branch" | "hq" {
  const site = flag ?? "branch";
  if (site !== "branch" && site !== "hq")
    throw new HandsetError("usage", `--site must be branch or hq, got "${String(site)}"`);
  return site;
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once("SIGTERM", () => resolve());
    process.once("SIGINT", () => resolve());
  });
}

export const LAB_SPEC = {
  summary: "the lab pool alone, until SIGTERM",
  flags: {
    site: {
      type: "string",
      arg: "branch|hq",
      help: "the registrar DHCP advertises: the SBA (branch, default) or the pool",
    },
    dir: {
      type: "string",
      arg: "DIR",
      help: "where the lab CA and certificates go (default: a new temporary folder)",
    },
    redirect: {
      type: "boolean",
      help: "the pool answers REGISTER with a 301 to the SBA (primary) and itself (backup)",
    },
    user: { type: "string", multiple: true, arg: "EXT:PIN", help: "a user instead of 4711:1234" },
    "web-challenge": {
      type: "string",
      arg: "on-demand|first",
      help: "first: the PIN and certificate ports answer a request without credentials with a 401",
    },
  },
} as const satisfies CommandSpec;

export async function labCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, LAB_SPEC.flags);
  const challenge = oneOf(f, "web-challenge", ["on-demand", "first"] as const, "on-demand");
  const users = labUsers(f["user"]);
  const lab = await startLab({
    site: labSite(f["site"]),
    ...(typeof f["dir"] === "string" ? { dir: f["dir"] } : {}),
    ...(users ? { users } : {}),
    redirect: f["redirect"] === true,
    web: { challenge },
  });
  out.event({ ...lab.ready });
  await waitForSignal();
  await lab.stop();
  return 0;
}
