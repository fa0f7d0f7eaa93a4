/**
 * The command-line contract, driven as a person or a script would: `handset lab --json` in one
 * process, `handset register --json` in another, over loopback.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LabReady } from "../lab/lab.ts";

const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");

let labProcess: ChildProcess;
let ready: LabReady;

function run(
  args: string[],
): Promise<{ code: number | null; events: Array<Record<string, unknown>>; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.on("close", (code) =>
      resolve({
        code,
        stderr: err,
        events: out
          .split("\n")
          .filter(Boolean)
          .map((l) => JSON.parse(l) as Record<string, unknown>),
      }),
    );
  });
}

beforeAll(async () => {
  labProcess = spawn(process.execPath, [BIN, "lab", "--json"], { stdio: ["ignore", "pipe", "inherit"] });
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
