/**
 * `handset lab` (development entry only): the lab pool alone, until SIGTERM. `--user
 * EXT:PIN[:PASSWORD]` (repeatable) and `--users FILE` replace the default user 4711 / PIN 1234 /
 * Windows password DEMO_PASSWORD (lab.ts); a user with a password can sign in with NTLM on the web
 * ticket service's WinNegotiate port. `--web-auth pin|ntlm|both` says which web ticket ports
 * authenticate. `--web-challenge first` makes the web ticket ports challenge before they take
 * credentials, as a real pool's IIS log shows. Passwords are never printed (lab.ready has none).
 */
import { readFileSync } from "node:fs";
import { type CommandSpec, oneOf, parseFlags } from "../../firmware/commands/args.ts";
import type { Output } from "../../firmware/commands/output.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { startLab } from "../lab/lab.ts";

export interface LabUserSpec {
  extension: string;
  pin: string;
  password?: string;
}

const EXTENSION = /^\d{1,15}$/;
const PIN = /^\d{4,15}$/;
/** A Windows password: 1 to 127 printable characters. */
const PASSWORD = /^[\x20-\x7e]{1,127}$/;

/**
 * `--user EXT:PIN[:PASSWORD]` flags as the lab's users; undefined when none are given (the lab's
 * default). The password is everything after the second colon (it may hold colons itself).
 */
export function labUsers(flag: unknown): LabUserSpec[] | undefined {
  if (flag === undefined) return undefined;
  const list = Array.isArray(flag) ? flag : [flag];
  return list.map((u) => {
    const text = String(u);
    const [extension = "", pin = "", ...rest] = text.split(":");
    const password = rest.length > 0 ? rest.join(":") : undefined;
    if (!EXTENSION.test(extension) || !PIN.test(pin) || (password !== undefined && !PASSWORD.test(password)))
      throw new HandsetError(
        "usage",
        // Never echo the argument: it may carry a password.
        `--user must be EXTENSION:PIN[:PASSWORD] (digits; a PIN of 4 to 15; a password of 1 to 127 printable characters), got "${extension}:${pin}${password === undefined ? "" : ":…"}"`,
      );
    return { extension, pin, ...(password !== undefined ? { password } : {}) };
  });
}

/**
 * `--users FILE`: a JSON array of {"extension", "pin", "password"?} (or {"users": [...]}), checked
 * as `--user` is. Undefined when the flag is absent.
 */
export function labUsersFile(
  flag: unknown,
  read: (path: string) => string = readText,
): LabUserSpec[] | undefined {
  if (flag === undefined) return undefined;
  const path = String(flag);
  let doc: unknown;
  try {
    doc = JSON.parse(read(path));
  } catch (e) {
    throw new HandsetError("usage", `--users ${path}: not readable JSON (${(e as Error).message})`);
  }
  const list = Array.isArray(doc) ? doc : (doc as { users?: unknown } | null)?.users;
  if (!Array.isArray(list) || list.length === 0)
    throw new HandsetError("usage", `--users ${path}: want a non-empty array of users`);
  return list.map((u, i) => {
    const r = (u ?? {}) as Record<string, unknown>;
    const { extension, pin, password } = r;
    if (
      typeof extension !== "string" ||
      !EXTENSION.test(extension) ||
      typeof pin !== "string" ||
      !PIN.test(pin) ||
      (password !== undefined && (typeof password !== "string" || !PASSWORD.test(password)))
    )
      throw new HandsetError(
        "usage",
        `--users ${path}: user ${i} must be {"extension": digits, "pin": 4 to 15 digits, "password"?: 1 to 127 printable characters}`,
      );
    return { extension, pin, ...(typeof password === "string" ? { password } : {}) };
  });
}

function readText(path: string): string {
  return readFileSync(path, "utf8");
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
    user: {
      type: "string",
      multiple: true,
      arg: "EXT:PIN[:PASSWORD]",
      help: "a user instead of 4711:1234 (Windows password: DEMO_PASSWORD in test/lab/lab.ts); with a password, NTLM works for it",
    },
    users: {
      type: "string",
      arg: "FILE",
      help: 'users from a JSON file: [{"extension":"4711","pin":"1234","password":"…"}]',
    },
    "registrar-style": {
      type: "string",
      arg: "lync|minimal",
      help: "lync (default): REGISTER 200s, GRUUs and self-subscriptions as a Lync 2013 / SfB front end; minimal: the lab before issue 13",
    },
    "web-auth": {
      type: "string",
      arg: "pin|ntlm|both",
      help: "web ticket sign-in: PIN port, Windows (NTLM) on WinNegotiate, or both (default)",
    },
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
  const webAuth = oneOf(f, "web-auth", ["pin", "ntlm", "both"] as const, "both");
  const registrarStyle = oneOf(f, "registrar-style", ["lync", "minimal"] as const, "lync");
  const fromFile = labUsersFile(f["users"]);
  const fromFlags = labUsers(f["user"]);
  const users = fromFile || fromFlags ? [...(fromFile ?? []), ...(fromFlags ?? [])] : undefined;
  const lab = await startLab({
    site: labSite(f["site"]),
    registrarStyle,
    ...(typeof f["dir"] === "string" ? { dir: f["dir"] } : {}),
    ...(users ? { users } : {}),
    redirect: f["redirect"] === true,
    web: { challenge, webAuth },
  });
  out.event({ ...lab.ready });
  await waitForSignal();
  await lab.stop();
  return 0;
}
