/**
 * The demo driven from outside, as a person would: `npm start`'s command with --keys and --json
 * in a child process; the lab's control endpoint (named in lab.ready) stops the SBA; the phone's
 * state events show it moving to the backup and, with --until, the process exits 0.
 */
import { spawn } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { describe, expect, it } from "vitest";
import { startLab } from "../lab/lab.ts";

/** The development entry (`npm start`): demo and lab are not in the product's bin. */
const DEV_BIN = join(import.meta.dirname, "../dev/handset-dev.mjs");
const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");

describe("handset demo, driven from outside", () => {
  it("signs in at the keypad, registers on the SBA, and fails over when the control API stops the SBA", async () => {
    const child = spawn(
      process.execPath,
      [DEV_BIN, "demo", "--keys", "4711#1234#", "--json", "--timeout", "60"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const events: Array<Record<string, unknown>> = [];
    let control = "";
    let sba = "";
    let pool = "";
    let stopped = false;
    try {
      for await (const line of createInterface({ input: child.stdout })) {
        const e = JSON.parse(line) as Record<string, unknown>;
        events.push(e);
        if (e["event"] === "lab.ready") {
          control = e["control"] as string;
          sba = e["sba"] as string;
          pool = e["pool"] as string;
        }
        if (e["event"] === "state" && e["state"] === "registered" && e["registrar"] === sba && !stopped) {
          stopped = true;
          const res = await fetch(`${control}/registrar/sba/stop`, { method: "POST" });
          expect(res.status).toBe(200);
        }
        if (e["event"] === "state" && e["state"] === "limited" && e["registrar"] === pool) break;
      }
    } finally {
      child.kill("SIGTERM");
    }
    const states = events.filter((e) => e["event"] === "state").map((e) => e["state"]);
    expect(states.slice(0, 4)).toEqual(["booting", "discovering", "clock-set", "sign-in-required"]);
    expect(states).toContain("signing-in");
    expect(events).toContainEqual(
      expect.objectContaining({ event: "state", state: "registered", registrar: sba }),
    );
    expect(events.at(-1)).toMatchObject({ event: "state", state: "limited", registrar: pool });
    expect(events.some((e) => e["event"] === "display")).toBe(true);
  });

  it("npm start's command exits 0 once --until is reached", async () => {
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(
        process.execPath,
        [DEV_BIN, "demo", "--keys", "4711#1234#", "--until", "registered", "--json", "--timeout", "60"],
        { stdio: "ignore" },
      );
      child.on("close", resolve);
    });
    expect(code).toBe(0);
  });

  it("the PIN appears nowhere: not in stdout (but the lab's own lab.ready), stderr, --verbose logs or the store", async () => {
    // A 12-digit PIN cannot turn up by chance in a port, a hash, a certificate or a key; "1234" could.
    const pin = String(randomInt(100_000_000_000, 999_999_999_999));
    const credential = Buffer.from(`4711:${pin}`).toString("base64");
    const store = await mkdtemp(join(tmpdir(), "handset-leak-"));
    const child = spawn(
      process.execPath,
      [
        DEV_BIN,
        "demo",
        "--user",
        `4711:${pin}`,
        "--keys",
        `4711#${pin}#`,
        "--until",
        "registered",
        "--store",
        store,
        "--verbose",
        "--json",
        "--timeout",
        "60",
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    child.stderr.on("data", (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(code, stderr).toBe(0);
    const lines = stdout.split("\n").filter(Boolean);
    const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    // The run really happened, with the logs on: sign-in with this PIN, then registered.
    expect(events).toContainEqual(expect.objectContaining({ event: "state", state: "registered" }));
    expect(events.filter((e) => e["event"] === "log").length).toBeGreaterThan(10);
    // The lab announces its fixture users (PINs included): that line is the lab's, not the phone's.
    const phoneLines = lines.filter((_, i) => events[i]!["event"] !== "lab.ready");
    expect(phoneLines.length).toBe(lines.length - 1);
    const files: Array<[string, string]> = [];
    for (const name of await readdir(store, { recursive: true })) {
      const path = join(store, name);
      const text = await readFile(path, "latin1").catch(() => undefined); // directories fail
      if (text !== undefined) files.push([name, text]);
    }
    expect(files.length).toBeGreaterThan(0);
    const places: Array<[string, string]> = [
      ["stdout", phoneLines.join("\n")],
      ["stderr", stderr],
      ...files.map(([n, t]): [string, string] => [`store/${n}`, t]),
    ];
    for (const [where, text] of places) {
      expect(text.includes(pin), `the PIN in ${where}`).toBe(false);
      expect(text.includes(credential), `base64(extension:PIN) in ${where}`).toBe(false);
    }
  });

  it("handset run --config runs the firmware on the simulated board from a configuration file", async () => {
    const lab = await startLab({ site: "hq" });
    try {
      const dir = await mkdtemp(join(tmpdir(), "handset-run-"));
      const config = join(dir, "phone.json");
      await writeFile(
        config,
        JSON.stringify({
          board: "sim",
          storeDir: join(dir, "store"),
          trustedRoots: [lab.ready.ca],
          network: { dhcp: { server: lab.ready.dhcp }, ntp: lab.ready.ntp, hosts: lab.ready.hosts },
        }),
      );
      const lines: string[] = [];
      const code = await new Promise<number | null>((resolve) => {
        const child = spawn(
          process.execPath,
          [
            BIN,
            "run",
            "--config",
            config,
            "--keys",
            "4711#1234#",
            "--until",
            "registered",
            "--json",
            "--timeout",
            "60",
          ],
          { stdio: ["ignore", "pipe", "inherit"] },
        );
        createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
        child.on("close", resolve);
      });
      expect(code).toBe(0);
      expect(lines.map((l) => JSON.parse(l) as Record<string, unknown>)).toContainEqual(
        expect.objectContaining({ event: "state", state: "registered", registrar: lab.ready.pool }),
      );
    } finally {
      await lab.stop();
    }
  });
});
