/**
 * The command-line contract, driven as a person or a script would: `handset lab --json` in one
 * process, `handset register --json` in another, over loopback.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CRASH_EXIT_CODE, installCrashHandlers } from "../../firmware/cli.ts";
import { readPin } from "../../firmware/commands/args.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import type { LabReady } from "../lab/lab.ts";

const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");
/** The development entry: `lab` is a development tool, not a command of the product. */
const DEV_BIN = join(import.meta.dirname, "../dev/handset-dev.mjs");

let labProcess: ChildProcess;
let ready: LabReady;

function run(
  args: string[],
  o: { stdin?: string; env?: Record<string, string>; nodeArgs?: string[]; bin?: string } = {},
): Promise<{ code: number | null; events: Array<Record<string, unknown>>; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...(o.nodeArgs ?? []), o.bin ?? BIN, ...args], {
      stdio: [o.stdin !== undefined ? "pipe" : "ignore", "pipe", "pipe"],
      env: { ...process.env, ...o.env },
    });
    if (o.stdin !== undefined) child.stdin!.end(o.stdin);
    let out = "";
    let err = "";
    child.stdout!.on("data", (d) => {
      out += d;
    });
    child.stderr!.on("data", (d) => {
      err += d;
    });
    child.on("close", (code) =>
      resolve({
        code,
        stderr: err,
        stdout: out,
        events: out
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
  });
}

beforeAll(async () => {
  labProcess = spawn(process.execPath, [DEV_BIN, "lab", "--json"], { stdio: ["ignore", "pipe", "inherit"] });
  const rl = createInterface({ input: labProcess.stdout! });
  for await (const line of rl) {
    const e = JSON.parse(line) as { event: string };
    if (e.event === "lab.ready") {
      ready = e as LabReady;
      break;
    }
  }
});

afterAll(() => {
  labProcess?.kill("SIGTERM");
});

const registerArgs = () => [
  "register",
  "--json",
  "--registrar",
  ready.registrar,
  "--uri",
  ready.testClient.uri,
  "--cert",
  ready.testClient.cert,
  "--key",
  ready.testClient.key,
  "--ca",
  ready.ca,
];

describe("handset lab + handset register", () => {
  it("lab.ready names every endpoint", () => {
    expect(ready).toMatchObject({ event: "lab.ready", site: "branch" });
    expect(ready.registrar).toBe(ready.sba);
    expect(ready.users[0]).toEqual({ extension: "4711", pin: "1234", uri: "sip:4711@lab.test" });
    for (const k of ["pool", "sba", "control"] as const) expect(ready[k]).toMatch(/127\.0\.0\.1:\d+/);
  });

  for (const innerTls of ["1.2", "1.0"]) {
    it(`register --inner-tls ${innerTls} --refreshes 3 exits 0 with every 2xx verified`, async () => {
      const r = await run([...registerArgs(), "--inner-tls", innerTls, "--refreshes", "3"]);
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      expect(r.events).toContainEqual(
        expect.objectContaining({ event: "state", state: "registered", rspauth: "verified" }),
      );
      expect(r.events.filter((e) => e["event"] === "refreshed" && e["rspauth"] === "verified")).toHaveLength(
        3,
      );
      expect(r.events.at(-1)).toMatchObject({ event: "done", refreshesVerified: 3 });
    });
  }

  it("exits non-zero with a typed one-line error when the registrar's name is wrong", async () => {
    const r = await run([...registerArgs(), "--server-name", "evil.lab.test"]);
    expect(r.code).toBe(1);
    expect(r.events.at(-1)).toMatchObject({ event: "error", code: "registrar-cert-name-mismatch" });
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("exits 2 on a usage error", async () => {
    const r = await run(["register", "--json", "--registrar", "nowhere"]);
    expect(r.code).toBe(2);
    expect(r.events.at(-1)).toMatchObject({ event: "error", code: "usage" });
  });
});

describe("the product's entry is the firmware only", () => {
  for (const tool of ["demo", "lab"]) {
    it(`handset ${tool} is not a command of the firmware (it is in the development entry)`, async () => {
      const r = await run([tool, "--json"]);
      expect(r.code).toBe(2);
      expect(r.events.at(-1)).toMatchObject({ event: "error", code: "usage" });
      expect(r.stderr).toContain("development tool");
    });
  }

  it("--help says how to give the PIN without the command line", async () => {
    for (const args of [["--help"], ["provision", "--help"], ["register", "--help"]]) {
      const r = await run(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("--pin-stdin");
      expect(r.stdout).toContain("HANDSET_PIN");
      expect(r.stdout).toMatch(/visible .*ps/);
    }
  });
});

describe("handset config and handset run --config", () => {
  it("config --defaults --json prints the reference of every option", async () => {
    const r = await run(["config", "--defaults", "--json"]);
    expect(r.code).toBe(0);
    const ref = r.events[0] as { event: string; options: Array<{ name: string; default?: unknown }> };
    expect(ref.event).toBe("config.reference");
    expect(ref.options.map((o) => o.name)).toEqual(
      expect.arrayContaining([
        "board",
        "storeDir",
        "trustedRoots",
        "network.dhcp.interface",
        "network.innerTls",
      ]),
    );
    expect(ref.options.find((o) => o.name === "network.innerTls")?.default).toBe("auto");
  });

  it("config --defaults prints the reference as text", async () => {
    const r = await run(["config", "--defaults"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^network\.dhcp\.interface\s/m);
  });

  it("run refuses an unknown key and a wrong type at start-up, one line naming the key", async () => {
    const dir = await mkdtemp(join(tmpdir(), "handset-config-"));
    const bad: Array<[unknown, string]> = [
      [
        { board: "sim", trustedRoots: ["/x.pem"], network: { dhcp: { interfce: "eth0" } } },
        "network.dhcp.interfce",
      ],
      [{ board: "sim", trustedRoots: ["/x.pem"], network: { innerTls: 12 } }, "network.innerTls"],
      [{ board: "sim", trustedRoots: "/x.pem" }, "trustedRoots"],
    ];
    for (const [i, [json, key]] of bad.entries()) {
      const file = join(dir, `phone-${i}.json`);
      await writeFile(file, JSON.stringify(json));
      const r = await run(["run", "--config", file, "--json", "--timeout", "5"]);
      expect(r.code).toBe(1);
      expect(r.events).toHaveLength(1);
      expect(r.events[0]).toMatchObject({ event: "error", code: "config-invalid", key });
      expect(r.events[0]!["message"]).toContain(`${key}: `);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      const check = await run(["config", "--check", file, "--json"]);
      expect(check.code).toBe(1);
      expect(check.events[0]).toMatchObject({ event: "error", code: "config-invalid" });
    }
  });

  it("config --check prints the effective configuration of a valid file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "handset-config-"));
    const file = join(dir, "phone.json");
    await writeFile(file, JSON.stringify({ trustedRoots: ["/x.pem"], network: { ntp: "10.0.0.1:123" } }));
    const r = await run(["config", "--check", file, "--json"]);
    expect(r.code).toBe(0);
    expect(r.events[0]).toMatchObject({
      event: "config.valid",
      config: { board: "pi", "network.ntp": "10.0.0.1:123", "network.innerTls": "auto" },
    });
  });
});

describe("the PIN from standard input or the environment", () => {
  const provisionArgs = async () => [
    "provision",
    "--json",
    "--web",
    ready.certProv,
    "--extension",
    ready.users[0]!.extension,
    "--store",
    await mkdtemp(join(tmpdir(), "handset-pin-")),
    "--ca",
    ready.ca,
  ];

  it("provision --pin-stdin signs in with the PIN read from standard input", async () => {
    const r = await run([...(await provisionArgs()), "--pin-stdin"], { stdin: `${ready.users[0]!.pin}\n` });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.events.at(-1)).toMatchObject({ event: "state", state: "provisioned" });
  });

  it("provision signs in with HANDSET_PIN", async () => {
    const r = await run(await provisionArgs(), { env: { HANDSET_PIN: ready.users[0]!.pin } });
    expect(r.code).toBe(0);
    expect(r.events.at(-1)).toMatchObject({ event: "state", state: "provisioned" });
  });

  it("a wrong PIN on standard input is a PIN verdict (the PIN read is the one used)", async () => {
    const r = await run([...(await provisionArgs()), "--pin-stdin"], { stdin: "99999999\n" });
    expect(r.code).toBe(1);
    expect(r.events.at(-1)).toMatchObject({ event: "error", code: "invalid-pin" });
  });

  it("refuses --pin together with --pin-stdin, and no PIN at all", async () => {
    const both = await run([...(await provisionArgs()), "--pin", "1", "--pin-stdin"], { stdin: "2\n" });
    expect(both.code).toBe(2);
    expect(both.events.at(-1)).toMatchObject({ event: "error", code: "usage" });
    const none = await run(await provisionArgs(), { env: { HANDSET_PIN: "" } });
    expect(none.code).toBe(2);
    expect(none.events.at(-1)).toMatchObject({ event: "error", code: "usage" });
  });

  it("readPin: stdin's first line, then --pin, then HANDSET_PIN", async () => {
    const stdin = (text: string) => ({
      async *[Symbol.asyncIterator]() {
        yield Buffer.from(text);
      },
    });
    const none = stdin("");
    expect(await readPin({ "pin-stdin": true }, { env: {}, stdin: stdin("4321\r\nrest") })).toBe("4321");
    expect(await readPin({ "pin-stdin": true }, { env: { HANDSET_PIN: "1" }, stdin: stdin("55") })).toBe(
      "55",
    );
    expect(await readPin({ pin: "66" }, { env: { HANDSET_PIN: "1" }, stdin: none })).toBe("66");
    expect(await readPin({}, { env: { HANDSET_PIN: "77" }, stdin: none })).toBe("77");
    expect(await readPin({}, { env: {}, stdin: none })).toBeUndefined();
    await expect(readPin({ "pin-stdin": true }, { env: {}, stdin: none })).rejects.toMatchObject({
      code: "usage",
    });
  });
});

describe("the process never dies silently", () => {
  const preload = async (body: string) => {
    const dir = await mkdtemp(join(tmpdir(), "handset-crash-"));
    const file = join(dir, "crash.mjs");
    // Once the entry has loaded (its handlers are in place) and, here, finished its command: only
    // those handlers stand between this and a stack trace on stderr with exit code 1.
    await writeFile(
      file,
      `const start = Date.now();
const t = setInterval(() => {
  // (without handlers, as before this rule, fire anyway after 5 s: the test fails, not hangs)
  if (process.listenerCount("unhandledRejection") === 0 && Date.now() - start < 5000) return;
  clearInterval(t);
  ${body}
}, 20);\n`,
    );
    return ["--import", `file://${file}`];
  };

  it("an unhandled rejection is one JSON error line and exit code 70", async () => {
    const r = await run(["config", "--defaults", "--json"], {
      nodeArgs: await preload('Promise.reject(new Error("boom\\nsecond line"));'),
    });
    expect(r.code).toBe(CRASH_EXIT_CODE);
    expect(r.events.at(-1)).toMatchObject({ event: "error", code: "unhandled-rejection" });
    expect(String(r.events.at(-1)!["message"])).toContain("boom");
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("an uncaught exception is one line and exit code 70 (text mode)", async () => {
    const r = await run(["config", "--defaults"], { nodeArgs: await preload('throw new Error("bang");') });
    expect(r.code).toBe(CRASH_EXIT_CODE);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^handset: uncaught exception: bang .*\(uncaught-exception\)\n$/);
  });

  it("installCrashHandlers logs once and exits non-zero (unit)", () => {
    const listeners = new Map<string, (x: never) => void>();
    const lines: string[] = [];
    const exits: number[] = [];
    installCrashHandlers({
      out: createOutput(
        true,
        (l) => lines.push(l),
        () => {},
      ),
      exit: (c) => exits.push(c),
      proc: { on: (ev: string, fn: (x: never) => void) => listeners.set(ev, fn) },
    });
    (listeners.get("unhandledRejection") as (x: unknown) => void)("not an Error");
    (listeners.get("uncaughtException") as (x: Error) => void)(new Error("second"));
    expect(exits).toEqual([CRASH_EXIT_CODE]);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: "error", code: "unhandled-rejection" });
  });
});
