/**
 * What the tests of `handset fleet` share: a real mosquitto 2 with a password file and the site
 * ACL (test/support/mosquitto.ts), the operator's password in a 0600 file for --password-file,
 * `handset fleet …` run in-process or through main() with its JSON lines parsed, and the retained
 * document on a topic as an independent client (mosquitto_sub) sees it.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { exitCodeOf, main } from "../../firmware/cli.ts";
import { fleetCommand } from "../../firmware/commands/fleet.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { asHandsetError } from "../../firmware/core/errors.ts";
import { type Mosquitto, mosquittoSub, siteAcl, startMosquitto } from "../support/mosquitto.ts";

export type Events = Array<Record<string, unknown>>;

export const ofType = (events: Events, type: string): Events => events.filter((e) => e["event"] === type);

const parseLines = (lines: string[]): Events => lines.map((l) => JSON.parse(l) as Record<string, unknown>);

export interface FleetRun {
  code: number;
  events: Events;
  stderr: string[];
}

export interface FleetBroker {
  broker: Mosquitto;
  /** A temp dir of the test's own (removed by dispose()). */
  dir: string;
  /** The operator's password, for --password-file. */
  passwordFile: string;
  /**
   * `handset fleet ARGS` in-process, as cli.ts runs it (an error becomes an error event and an
   * exit code), with --json, --broker this broker's plain URL unless ARGS name one, and the
   * operator's --username/--password-file unless `auth: false`.
   */
  fleet(args: string[], o?: { env?: Record<string, string>; auth?: boolean }): Promise<FleetRun>;
  /** The retained document on a topic, as the operator's mosquitto_sub sees it (retain flag, JSON). */
  retained(topic: string): Promise<{ retain: string; doc: unknown }>;
  /** The broker stopped and the temp dir removed. */
  dispose(): Promise<void>;
}

/**
 * mosquitto with these users (name → password; "operator" may do everything under `prefix`, the
 * others are phones: siteAcl) and, with clientCa, a client-certificate listener.
 */
export async function startFleetBroker(o: {
  users: { operator: string } & Record<string, string>;
  prefix: string;
  clientCa?: boolean;
  /** The temp dir's name before mkdtemp's suffix. */
  dirPrefix: string;
}): Promise<FleetBroker> {
  const broker = await startMosquitto({
    users: Object.entries(o.users).map(([username, password]) => ({ username, password })),
    acl: siteAcl(o.prefix),
    ...(o.clientCa ? { clientCa: true } : {}),
  });
  let dir = "";
  const dispose = async () => {
    await broker.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
  try {
    dir = await mkdtemp(join(tmpdir(), o.dirPrefix));
    const passwordFile = join(dir, "operator.pass");
    await writeFile(passwordFile, `${o.users.operator}\n`, { mode: 0o600 });
    return {
      broker,
      dir,
      passwordFile,
      fleet: async (args, f = {}) => {
        const lines: string[] = [];
        const stderr: string[] = [];
        const out = createOutput(
          true,
          (l) => lines.push(l),
          (l) => stderr.push(l),
        );
        const auth = f.auth === false ? [] : ["--username", "operator", "--password-file", passwordFile];
        let code: number;
        try {
          const at = args.includes("--broker") ? [] : ["--broker", broker.url];
          code = await fleetCommand([...args, ...at, ...auth, "--json"], out, {
            env: f.env ?? {},
            settleMs: 300,
          });
        } catch (err) {
          const e = asHandsetError(err);
          out.error(e);
          code = exitCodeOf(e);
        }
        return { code, events: parseLines(lines), stderr };
      },
      retained: async (topic) => {
        const sub = mosquittoSub(broker, {
          username: "operator",
          password: o.users.operator,
          topics: [topic],
          count: 1,
          format: "%r %p",
          timeoutS: 10,
        });
        const [line] = await sub.waitForLines(1);
        await sub.done;
        const [retain, ...json] = line!.split(" ");
        return { retain: retain!, doc: JSON.parse(json.join(" ")) };
      },
      dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}

/** `handset fleet ARGS --json` through main(), no broker involved; its JSON lines parsed. */
export async function fleetMain(args: string[]): Promise<{ code: number; events: Events }> {
  const lines: string[] = [];
  const code = await main(["fleet", ...args, "--json"], {
    write: (l) => lines.push(l),
    writeErr: () => {},
  });
  return { code, events: parseLines(lines) };
}

/** Exit 2, and the first line a usage error whose message contains `message`. */
export function expectUsageError(run: { code: number; events: Events }, message: string): void {
  expect(run.code).toBe(2);
  expect(run.events[0]).toMatchObject({
    event: "error",
    code: "usage",
    message: expect.stringContaining(message),
  });
}

/** What `handset fleet --help` prints (and that it exits 0). */
export async function fleetHelp(): Promise<string> {
  const lines: string[] = [];
  expect(await main(["fleet", "--help"], { write: (l) => lines.push(l) })).toBe(0);
  return lines.join("\n");
}
