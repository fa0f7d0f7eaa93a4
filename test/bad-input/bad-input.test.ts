/**
 * Bad input (issue 14): every wrong flag, number or file is refused at start with exit code 2
 * (a usage error) or 1 (anything else), one line on stderr, in --json exactly one `error` event
 * with a typed code and an ISO time, the offending flag or file named, and never a stack trace.
 * Driven through the real command line (`node firmware/handset.mjs`, and the development entry for
 * demo and lab). A TCP/TLS listener stands in for the registrar and the web service: no row may
 * reach it, since every check runs before the first packet.
 */
import { spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createOutput, logSink } from "../../firmware/commands/output.ts";
import { LabCa } from "../lab/ca.ts";

const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");
const DEV_BIN = join(import.meta.dirname, "../dev/handset-dev.mjs");

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  events: Array<Record<string, unknown>>;
  ms: number;
}

function run(args: string[], o: { bin?: string; stdin?: string } = {}): Promise<Run> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [o.bin ?? BIN, ...args], {
      stdio: [o.stdin !== undefined ? "pipe" : "ignore", "pipe", "pipe"],
      env: { ...process.env, HANDSET_PIN: "" },
    });
    if (o.stdin !== undefined) child.stdin!.end(o.stdin);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d) => {
      stdout += d;
    });
    child.stderr!.on("data", (d) => {
      stderr += d;
    });
    child.on("close", (code) =>
      resolve({
        code,
        stdout,
        stderr,
        ms: Date.now() - started,
        events: stdout
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
  });
}

let dir: string;
let registrar: Server;
let registrarAddr: string;
const touched: string[] = [];
const files = {
  cert: "",
  key: "",
  ca: "",
  otherKey: "",
  garbage: "",
  aFile: "",
  missing: "",
  keyAsCert: "",
  configMissingRoot: "",
  configGarbageRoot: "",
  configStoreIsFile: "",
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "handset-bad-input-"));
  const ca = await LabCa.create();
  const client = await ca.issueClient("4711@lab.test");
  const other = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const write = async (name: string, text: string) => {
    const p = join(dir, name);
    await writeFile(p, text);
    return p;
  };
  files.cert = await write("client.pem", client.cert);
  files.key = await write("client.key", client.key);
  files.ca = await write("ca.pem", ca.cert);
  files.otherKey = await write(
    "other.key",
    other.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
  );
  files.garbage = await write("garbage.pem", "this is not PEM\n");
  files.keyAsCert = files.key;
  files.aFile = await write("a-file", "a file where a folder should be\n");
  files.missing = join(dir, "no-such.pem");
  const config = (o: object) => JSON.stringify({ board: "sim", ...o });
  files.configMissingRoot = await write(
    "missing-root.json",
    config({ trustedRoots: [files.missing], storeDir: join(dir, "s") }),
  );
  files.configGarbageRoot = await write(
    "garbage-root.json",
    config({ trustedRoots: [files.garbage], storeDir: join(dir, "s") }),
  );
  files.configStoreIsFile = await write(
    "store-file.json",
    config({ trustedRoots: [files.ca], storeDir: files.aFile }),
  );
  await mkdir(join(dir, "store"));
  // Any connection here is a row that got as far as the network: none may.
  registrar = createServer((s: Socket) => {
    touched.push(`${s.remoteAddress}:${s.remotePort}`);
    s.destroy();
  });
  await new Promise<void>((r) => registrar.listen(0, "127.0.0.1", r));
  const a = registrar.address() as { port: number };
  registrarAddr = `127.0.0.1:${a.port}`;
});

afterAll(async () => {
  registrar?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Row {
  what: string;
  args: () => string[];
  bin?: string;
  exit: number;
  code: string;
  /** Texts the one line must hold (the flag, the file, what is wrong). */
  names: () => string[];
}

const reg = (...extra: string[]) => [
  "register",
  "--registrar",
  registrarAddr,
  "--uri",
  "sip:4711@lab.test",
  "--cert",
  files.cert,
  "--key",
  files.key,
  "--ca",
  files.ca,
  ...extra,
];
/** register with one flag's value replaced. */
const regWith = (flag: string, value: string, ...extra: string[]) => {
  const a = reg(...extra);
  a[a.indexOf(flag) + 1] = value;
  return a;
};
const web = () => `https://${registrarAddr}/CertProv/CertProvisioningService.svc`;
const prov = (...extra: string[]) => [
  "provision",
  "--web",
  web(),
  "--extension",
  "4711",
  "--pin",
  "1234",
  "--store",
  join(dir, "store"),
  "--ca",
  files.ca,
  ...extra,
];
const provWith = (flag: string, value: string) => {
  const a = prov();
  a[a.indexOf(flag) + 1] = value;
  return a;
};

const ROWS: Row[] = [
  {
    what: "register --uri 'not a uri'",
    args: () => regWith("--uri", "not a uri"),
    exit: 2,
    code: "usage",
    names: () => ["--uri", "not a uri"],
  },
  {
    what: "register --uri 4711@lab.test (no scheme)",
    args: () => regWith("--uri", "4711@lab.test"),
    exit: 2,
    code: "usage",
    names: () => ["--uri", "4711@lab.test"],
  },
  {
    what: "register --uri tel:4711 (not a SIP URI)",
    args: () => regWith("--uri", "tel:4711"),
    exit: 2,
    code: "usage",
    names: () => ["--uri", "tel:4711"],
  },
  {
    what: "register --cert with garbage",
    args: () => regWith("--cert", files.garbage),
    exit: 1,
    code: "pem-invalid",
    names: () => ["--cert", files.garbage, "no certificate"],
  },
  {
    what: "register --cert holding a key",
    args: () => regWith("--cert", files.keyAsCert),
    exit: 1,
    code: "pem-invalid",
    names: () => ["--cert", files.keyAsCert, "no certificate"],
  },
  {
    what: "register --key with garbage",
    args: () => regWith("--key", files.garbage),
    exit: 1,
    code: "pem-invalid",
    names: () => ["--key", files.garbage, "no private key"],
  },
  {
    what: "register --key not the certificate's",
    args: () => regWith("--key", files.otherKey),
    exit: 1,
    code: "key-mismatch",
    names: () => ["--key", files.otherKey, "does not match", files.cert],
  },
  {
    what: "register --ca with garbage",
    args: () => regWith("--ca", files.garbage),
    exit: 1,
    code: "pem-invalid",
    names: () => ["--ca", files.garbage, "no certificate"],
  },
  {
    what: "register --ca missing",
    args: () => regWith("--ca", files.missing),
    exit: 1,
    code: "file-unreadable",
    names: () => ["--ca", files.missing, "no such file"],
  },
  {
    what: "register --store that is a file",
    args: () => ["register", "--registrar", registrarAddr, "--store", files.aFile, "--ca", files.ca],
    exit: 1,
    code: "store-path-invalid",
    names: () => ["--store", files.aFile, "not a directory"],
  },
  ...["0", "x", "-5"].map(
    (t): Row => ({
      what: `register --timeout ${t}`,
      args: () => reg("--timeout", t),
      exit: 2,
      code: "usage",
      names: () => ["--timeout", `"${t}"`],
    }),
  ),
  {
    what: "register --refreshes -1",
    args: () => reg("--refreshes", "-1"),
    exit: 2,
    code: "usage",
    names: () => ["--refreshes", '"-1"'],
  },
  {
    what: "register --refreshes 1.5",
    args: () => reg("--refreshes", "1.5"),
    exit: 2,
    code: "usage",
    names: () => ["--refreshes", '"1.5"'],
  },
  {
    what: "register --inner-tls 1.3",
    args: () => reg("--inner-tls", "1.3"),
    exit: 2,
    code: "usage",
    names: () => ["--inner-tls", '"1.3"'],
  },
  {
    what: "provision --web notaurl",
    args: () => provWith("--web", "notaurl"),
    exit: 2,
    code: "usage",
    names: () => ["--web", "notaurl"],
  },
  {
    what: "provision --web http:// (not https)",
    args: () => provWith("--web", web().replace("https:", "http:")),
    exit: 2,
    code: "usage",
    names: () => ["--web", "https URL"],
  },
  {
    what: "provision --store that is a file",
    args: () => provWith("--store", files.aFile),
    exit: 1,
    code: "store-path-invalid",
    names: () => ["--store", files.aFile, "not a directory"],
  },
  {
    what: "provision --store under a file",
    args: () => provWith("--store", join(files.aFile, "store")),
    exit: 1,
    code: "store-path-invalid",
    names: () => ["--store", files.aFile],
  },
  {
    what: "provision --ca with garbage",
    args: () => provWith("--ca", files.garbage),
    exit: 1,
    code: "pem-invalid",
    names: () => ["--ca", files.garbage, "no certificate"],
  },
  {
    what: "run: a trustedRoots file that is missing",
    args: () => ["run", "--config", files.configMissingRoot, "--timeout", "5"],
    exit: 1,
    code: "config-invalid",
    names: () => ["trustedRoots", files.missing, "no such file", files.configMissingRoot],
  },
  {
    what: "run: a trustedRoots file of garbage",
    args: () => ["run", "--config", files.configGarbageRoot, "--timeout", "5"],
    exit: 1,
    code: "config-invalid",
    names: () => ["trustedRoots", files.garbage, "no certificate"],
  },
  {
    what: "run: a storeDir that is a file",
    args: () => ["run", "--config", files.configStoreIsFile, "--timeout", "5"],
    exit: 1,
    code: "config-invalid",
    names: () => ["storeDir", files.aFile, "not a directory"],
  },
  {
    what: "run --keys with a letter",
    args: () => ["run", "--config", files.configStoreIsFile, "--keys", "47x11#"],
    exit: 2,
    code: "usage",
    names: () => ["--keys", '"x"'],
  },
  {
    what: "demo --keys with a letter (refused before the lab starts)",
    bin: DEV_BIN,
    args: () => ["demo", "--keys", "47x11#1234#"],
    exit: 2,
    code: "usage",
    names: () => ["--keys", '"x"'],
  },
  {
    what: "demo --site mars",
    bin: DEV_BIN,
    args: () => ["demo", "--site", "mars"],
    exit: 2,
    code: "usage",
    names: () => ["--site", "mars"],
  },
  {
    what: "demo --timeout 0",
    bin: DEV_BIN,
    args: () => ["demo", "--timeout", "0"],
    exit: 2,
    code: "usage",
    names: () => ["--timeout", '"0"'],
  },
  {
    what: "demo --web notaurl",
    bin: DEV_BIN,
    args: () => ["demo", "--web", "notaurl"],
    exit: 2,
    code: "usage",
    names: () => ["--web", "notaurl"],
  },
  {
    what: "demo --store that is a file",
    bin: DEV_BIN,
    args: () => ["demo", "--store", files.aFile],
    exit: 1,
    code: "store-path-invalid",
    names: () => ["--store", files.aFile],
  },
  {
    what: "an unknown flag",
    args: () => reg("--registar", "x"),
    exit: 2,
    code: "usage",
    names: () => ["--registar"],
  },
];

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

describe("bad input: one line, a typed code, the offending thing named, never a stack trace", () => {
  for (const row of ROWS) {
    it(`${row.what} → exit ${row.exit}, ${row.code}`, async () => {
      const r = await run([...row.args(), "--json"], row.bin ? { bin: row.bin } : {});
      const context = `stdout: ${r.stdout}\nstderr: ${r.stderr}`;
      expect(r.code, context).toBe(row.exit);
      // Exactly one event, the error: nothing started (no lab.ready, no "registering").
      expect(r.events, context).toHaveLength(1);
      const e = r.events[0]!;
      expect(e, context).toMatchObject({ event: "error", code: row.code });
      expect(String(e["ts"])).toMatch(ISO);
      const lines = r.stderr.split("\n").filter(Boolean);
      expect(lines, context).toHaveLength(1);
      expect(lines[0]).toBe(`handset: ${String(e["message"])} (${row.code})`);
      for (const name of row.names()) expect(String(e["message"]), context).toContain(name);
      expect(`${r.stdout}${r.stderr}`).not.toMatch(/^\s+at /m);
      expect(r.stdout.split("\n").filter(Boolean)).toHaveLength(1);
    }, 30_000);
  }

  it("no row reached the network (every check runs before the first packet)", () => {
    expect(touched).toEqual([]);
  });

  it("the same input in text mode is the same one line on stderr and nothing on stdout", async () => {
    const r = await run(regWith("--key", files.otherKey));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^handset: --key .* does not match the certificate .*\(key-mismatch\)\n$/);
  }, 30_000);
});

describe("--timeout is honoured by register", () => {
  it("a registrar that accepts and never answers: a timeout within the time given, not 10 s", async () => {
    const sockets: Socket[] = [];
    const silent = createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    try {
      const port = (silent.address() as { port: number }).port;
      const r = await run(regWith("--registrar", `127.0.0.1:${port}`, "--timeout", "1", "--json"));
      expect(r.code).toBe(1);
      expect(r.ms).toBeLessThan(6_000);
      expect(r.events.at(-1)).toMatchObject({ event: "error" });
      expect(String(r.events.at(-1)!["code"])).toMatch(/timeout/);
      expect(r.stderr.split("\n").filter(Boolean)).toHaveLength(1);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 30_000);
});

describe("--help, -h and --version list every flag a command takes", () => {
  it("--version prints package.json's version", async () => {
    const pkg = JSON.parse(await readFile(join(import.meta.dirname, "../../package.json"), "utf8")) as {
      version: string;
    };
    const r = await run(["--version"]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`handset ${pkg.version}`);
  }, 30_000);

  it("handset <command> --help and -h name every flag of the command's table, and the overview too", async () => {
    const { PRODUCT_SPECS } = await import("../../firmware/cli.ts");
    const { DEMO_SPEC } = await import("../dev/demo.ts");
    const { LAB_SPEC } = await import("../dev/lab-command.ts");
    const overview = await run(["--help"], { bin: DEV_BIN });
    expect(overview.code).toBe(0);
    const all = { ...PRODUCT_SPECS, demo: DEMO_SPEC, lab: LAB_SPEC };
    for (const [name, spec] of Object.entries(all)) {
      const flags = [...Object.keys(spec.flags), "json", "help"];
      const bin = name === "demo" || name === "lab" ? DEV_BIN : BIN;
      for (const h of ["--help", "-h"]) {
        const r = await run([name, h], { bin });
        expect(r.code, `${name} ${h}`).toBe(0);
        expect(r.stdout).toContain(`handset ${name}`);
        for (const flag of flags) expect(r.stdout, `${name} ${h}: --${flag}`).toContain(`--${flag}`);
      }
      for (const flag of Object.keys(spec.flags))
        expect(overview.stdout, `overview: ${name} --${flag}`).toMatch(new RegExp(`--${flag}\\b`));
    }
    // The tables are what the commands parse: a flag the help names is one the command takes.
    const r = await run(["register", "--frobnicate", "--json"]);
    expect(r.events[0]).toMatchObject({ event: "error", code: "usage" });
  }, 120_000);
});

describe("--json events carry an ISO time; --verbose log events carry their fields", () => {
  it("every JSON event has ts", async () => {
    const r = await run(["config", "--defaults", "--json"]);
    expect(r.code).toBe(0);
    expect(r.events.length).toBeGreaterThan(0);
    for (const e of r.events) expect(String(e["ts"])).toMatch(ISO);
  }, 30_000);

  it("a log record's fields reach the log event (the reason of a failure, not just its message)", () => {
    const lines: string[] = [];
    const out = createOutput(
      true,
      (l) => lines.push(l),
      () => {},
      () => Date.parse("2026-01-02T03:04:05.000Z"),
    );
    logSink(out, true)
      .child("registration")
      .warn("registration failed", { code: "tls-handshake-failed", message: "bad record mac" });
    expect(JSON.parse(lines[0]!)).toEqual({
      event: "log",
      ts: "2026-01-02T03:04:05.000Z",
      level: "warn",
      category: "handset.registration",
      message: "registration failed",
      fields: { code: "tls-handshake-failed", message: "bad record mac" },
    });
  });
});
