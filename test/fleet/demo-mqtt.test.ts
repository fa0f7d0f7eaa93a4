/**
 * `npm start -- --mqtt URL` (the development demo, test/dev/demo.ts): the lab, the phone on the
 * simulated board, and the fleet link to a real mosquitto, with the user and password in the URL
 * (a development convenience; `handset run` reads them from files). The phone's retained state
 * reaches an independent subscriber under its device id from flash.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hasMosquitto, MOSQUITTO_MISSING, mosquittoSub, startMosquitto } from "../support/mosquitto.ts";

const DEV_BIN = join(import.meta.dirname, "../dev/handset-dev.mjs");
const CI = process.env.CI === "true";

describe.skipIf(!hasMosquitto && !CI)(
  `handset demo --mqtt${hasMosquitto ? "" : ` — skipped: ${MOSQUITTO_MISSING}`}`,
  () => {
    it("the demo phone publishes its retained state (registered) to the broker named on the command line", async () => {
      if (!hasMosquitto) throw new Error(MOSQUITTO_MISSING);
      const password = randomBytes(9).toString("hex");
      const broker = await startMosquitto({ users: [{ username: "demo", password }] });
      const url = `mqtt://demo:${password}@127.0.0.1:${broker.port}`;
      const child = spawn(
        process.execPath,
        [DEV_BIN, "demo", "--keys", "4711#1234#", "--json", "--timeout", "90", "--mqtt", url],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
      let stdout = "";
      child.stdout.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      try {
        const sub = mosquittoSub(broker, {
          username: "demo",
          password,
          topics: ["handset/v1/+/state"],
          format: "%r %t %p",
        });
        await expect
          .poll(() => sub.lines().some((l) => l.includes('"state":"registered"')), {
            timeout: 90_000,
            interval: 200,
          })
          .toBe(true);
        const line = sub.lines().find((l) => l.includes('"state":"registered"'))!;
        const [, topic, ...rest] = line.split(" ");
        const deviceId = topic!.split("/")[2]!;
        expect(deviceId).toMatch(/^[0-9a-f-]{8,}$/i); // the device id in flash
        expect(JSON.parse(rest.join(" "))).toMatchObject({
          v: 1,
          state: "registered",
          uri: "sip:4711@lab.test",
        });
        await sub.stop();
        // The password given in the URL is nowhere in what the demo printed.
        expect(stdout).not.toContain(password);
      } finally {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
        await broker.dispose();
      }
    }, 120_000);
  },
);
