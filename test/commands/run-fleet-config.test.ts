/**
 * `handset run` with an `mqtt` section: what it refuses at start-up, one line naming the key,
 * before anything connects — a broker without credentials (the phone never connects
 * anonymously), half a credential, a reserved device id, an unreadable password file.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { LabCa } from "../lab/ca.ts";

const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");

describe("handset run: the mqtt section is checked at start-up", async () => {
  const dir = mkdtempSync(join(tmpdir(), "handset-run-mqtt-"));
  const roots = join(dir, "roots.pem");
  writeFileSync(roots, (await LabCa.create()).cert);
  const run = (mqtt: Record<string, unknown>) => {
    const file = join(dir, `phone-${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(
      file,
      JSON.stringify({ board: "sim", storeDir: join(dir, "store"), trustedRoots: [roots], mqtt }),
    );
    const r = spawnSync(process.execPath, [BIN, "run", "--config", file, "--json", "--timeout", "5"], {
      encoding: "utf8",
      timeout: 30_000,
    });
    const events = r.stdout
      .split("\n")
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    return { code: r.status, error: events.find((e) => e["event"] === "error") };
  };
  const brokers = ["mqtts://127.0.0.1:8883"];

  it.each([
    ["no credentials at all", { brokers }, "mqtt.brokers", /never connects to a broker anonymously/],
    [
      "a user name without its password file",
      { brokers, username: "p", cert: "/c", key: "/k" },
      "mqtt.username",
      /go together/,
    ],
    [
      "a reserved device id",
      { brokers, username: "p", passwordFile: "/etc/hostname", deviceId: "org" },
      "mqtt.deviceId",
      /reserved/,
    ],
    [
      "an unreadable password file",
      { brokers, username: "p", passwordFile: join(dir, "none") },
      "mqtt.passwordFile",
      /cannot read/,
    ],
  ])("%s", (_what, mqtt, key, reason) => {
    const r = run(mqtt);
    expect(r.code).toBe(1);
    expect(r.error).toMatchObject({ code: "config-invalid", key });
    expect(String(r.error?.["message"])).toMatch(reason);
  });
});
