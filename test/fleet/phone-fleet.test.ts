/**
 * The product's path end to end: `handset run --config FILE` (a child process, the simulated
 * board, keys typed at sign-in) against the lab pool and a REAL mosquitto 2 with TLS, a password
 * file and an ACL. An operator (MQTT.js), mosquitto_sub and mosquitto_rr (independent clients)
 * watch and command it. Checked: retained state for a fresh subscriber; every command's reply on
 * the response topic with the request's correlation data; desired configuration applied and
 * reported within 2 s, an unknown key refused with a reason, an idle key applied by a core restart;
 * the ACL keeps an intruder out; another phone's topic is not this phone's business; no PIN,
 * password, key or ticket in any payload the broker carried; SIGKILL → the will ("lost") within
 * 1.5 × keep-alive.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import mqtt, { type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Lab, startLab } from "../lab/lab.ts";
import {
  hasMosquitto,
  MOSQUITTO_MISSING,
  type Mosquitto,
  mosquittoRr,
  mosquittoSub,
  siteAcl,
  startMosquitto,
} from "../support/mosquitto.ts";

const BIN = join(import.meta.dirname, "../../firmware/handset.mjs");
const PREFIX = "handset/v1";
const DEVICE = "phone-a";
const KEEPALIVE_S = 5;

const ACL = siteAcl(PREFIX);

interface Phone {
  child: ChildProcess;
  events: Array<Record<string, unknown>>;
  waitFor(
    pred: (e: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
}

function startPhoneProcess(config: string, keys: string): Phone {
  const child = spawn(process.execPath, [BIN, "run", "--config", config, "--json", "--keys", keys], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const events: Array<Record<string, unknown>> = [];
  const waiters = new Set<() => void>();
  void (async () => {
    for await (const line of createInterface({ input: child.stdout! })) {
      try {
        events.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        events.push({ event: "unparsed", line });
      }
      for (const w of [...waiters]) w();
    }
  })();
  child.stderr!.resume();
  return {
    child,
    events,
    waitFor: (pred, timeoutMs = 60_000) =>
      new Promise((resolve, reject) => {
        let from = 0;
        const check = () => {
          for (; from < events.length; from++) {
            const e = events[from]!;
            if (pred(e)) {
              waiters.delete(check);
              clearTimeout(t);
              resolve(e);
              return;
            }
          }
        };
        const t = setTimeout(() => {
          waiters.delete(check);
          reject(
            new Error(
              `phone: no matching event in ${timeoutMs} ms; last: ${JSON.stringify(events.slice(-5))}`,
            ),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}

/** One MQTT v5 request → the replies on a fresh response topic carrying our correlation data. */
async function request(
  c: MqttClient,
  device: string,
  name: string,
  args: Record<string, unknown> = {},
  o: { replies?: number; timeoutMs?: number } = {},
): Promise<Array<{ payload: Record<string, unknown>; correlation: string | undefined }>> {
  const responseTopic = `${PREFIX}/_fleet/${randomBytes(6).toString("hex")}/reply`;
  const correlation = randomBytes(8);
  const got: Array<{ payload: Record<string, unknown>; correlation: string | undefined }> = [];
  const want = o.replies ?? 1;
  await c.subscribeAsync(responseTopic, { qos: 1 });
  const done = new Promise<void>((resolve) => {
    const onMessage = (topic: string, payload: Buffer, packet: mqtt.IPublishPacket) => {
      if (topic !== responseTopic) return;
      const cd = packet.properties?.correlationData;
      got.push({
        payload: JSON.parse(payload.toString()) as Record<string, unknown>,
        correlation: cd ? Buffer.from(cd).toString("hex") : undefined,
      });
      if (got.length >= want) {
        c.off("message", onMessage);
        resolve();
      }
    };
    c.on("message", onMessage);
  });
  await c.publishAsync(`${PREFIX}/${device}/cmd/${name}`, JSON.stringify(args), {
    qos: 1,
    properties: { responseTopic, correlationData: correlation },
  });
  await Promise.race([done, new Promise((r) => setTimeout(r, o.timeoutMs ?? 10_000))]);
  await c.unsubscribeAsync(responseTopic);
  for (const g of got) expect(g.correlation).toBe(correlation.toString("hex"));
  return got;
}

const CI = process.env.CI === "true";

describe.skipIf(!hasMosquitto && !CI)(
  `a phone in the fleet: handset run + mosquitto (TLS, password file, ACL)${hasMosquitto ? "" : ` — skipped: ${MOSQUITTO_MISSING}`}`,
  () => {
    let lab: Lab;
    let broker: Mosquitto;
    let dir: string;
    let config: string;
    let phone: Phone;
    let operator: MqttClient;
    const pin = String(randomInt(100_000_000_000, 999_999_999_999));
    const phonePassword = `pw-${randomBytes(12).toString("hex")}`;
    const operatorPassword = `op-${randomBytes(12).toString("hex")}`;
    /** Every payload the broker carried under the prefix, for the secret scan. */
    const seen: Array<{ topic: string; payload: string; retain: boolean; at: number }> = [];

    beforeAll(async () => {
      if (!hasMosquitto) throw new Error(MOSQUITTO_MISSING);
      lab = await startLab({ site: "branch", users: [{ extension: "4711", pin }] });
      broker = await startMosquitto({
        users: [
          { username: DEVICE, password: phonePassword },
          { username: "operator", password: operatorPassword },
          { username: "intruder", password: "intruder-pw" },
        ],
        acl: ACL,
      });
      dir = await mkdtemp(join(tmpdir(), "handset-fleet-"));
      const caFile = join(dir, "lab-ca.pem");
      await writeFile(caFile, lab.ca.cert);
      const passwordFile = join(dir, "mqtt-password");
      await writeFile(passwordFile, `${phonePassword}\n`, { mode: 0o600 });
      const split = (a: string) => a;
      config = join(dir, "phone.json");
      await writeFile(
        config,
        JSON.stringify({
          board: "sim",
          storeDir: join(dir, "store"),
          trustedRoots: [caFile],
          network: { dhcp: { server: split(lab.ready.dhcp) }, ntp: lab.ready.ntp, hosts: lab.ready.hosts },
          mqtt: {
            brokers: [broker.tlsUrl],
            deviceId: DEVICE,
            username: DEVICE,
            passwordFile,
            ca: broker.caFile,
            keepaliveS: KEEPALIVE_S,
          },
        }),
      );
      operator = await mqtt.connectAsync(broker.url, {
        protocolVersion: 5,
        username: "operator",
        password: operatorPassword,
        clientId: `operator-${process.pid}`,
        reconnectPeriod: 0,
      });
      operator.on("message", (topic, payload, packet) =>
        seen.push({ topic, payload: payload.toString(), retain: packet.retain, at: Date.now() }),
      );
      await operator.subscribeAsync(`${PREFIX}/#`, { qos: 1 });
      phone = startPhoneProcess(config, `4711#${pin}#`);
      await phone.waitFor((e) => e["event"] === "state" && e["state"] === "registered", 90_000);
    }, 120_000);

    afterAll(async () => {
      phone?.child.kill("SIGKILL");
      await operator?.endAsync().catch(() => {});
      await broker?.dispose();
      await lab?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    const stateOf = () =>
      seen
        .filter((m) => m.topic === `${PREFIX}/${DEVICE}/state`)
        .map((m) => JSON.parse(m.payload) as Record<string, unknown>);

    it("a fresh subscriber (mosquitto_sub) gets the retained state: registered, on the SBA, with the firmware and certificate", async () => {
      // The state is republished on each change; wait for the registered one to reach the broker.
      await expect
        .poll(() => stateOf().some((s) => s["state"] === "registered"), { timeout: 10_000 })
        .toBe(true);
      const sub = mosquittoSub(broker, {
        username: "operator",
        password: operatorPassword,
        tls: true,
        topics: [`${PREFIX}/+/state`],
        format: "%r %t %p",
        count: 1,
        timeoutS: 10,
      });
      const [line] = await sub.waitForLines(1);
      await sub.done;
      const [retained, topic, ...rest] = line!.split(" ");
      expect(retained).toBe("1");
      expect(topic).toBe(`${PREFIX}/${DEVICE}/state`);
      const s = JSON.parse(rest.join(" ")) as Record<string, unknown>;
      expect(s).toMatchObject({
        v: 1,
        state: "registered",
        registrar: lab.ready.sba,
        primary: true,
        limited: false,
      });
      expect(s["uri"]).toBe("sip:4711@lab.test");
      expect(typeof s["birthSeq"]).toBe("number");
      expect(s["firmware"]).toMatchObject({ version: expect.any(String) });
      expect(Date.parse((s["certificate"] as { notAfter: string }).notAfter)).toBeGreaterThan(Date.now());
    });

    it("events: the state transitions of the boot and sign-in, QoS 1, in order", async () => {
      const events = seen
        .filter((m) => m.topic === `${PREFIX}/${DEVICE}/event`)
        .map((m) => JSON.parse(m.payload) as Record<string, unknown>);
      const seqs = events.map((e) => e["seq"] as number);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      const to = events.filter((e) => e["type"] === "state").map((e) => e["to"]);
      expect(to).toEqual(
        expect.arrayContaining([
          "sign-in-required",
          "signing-in",
          "provisioned",
          "registering",
          "registered",
        ]),
      );
      expect(events).toContainEqual(expect.objectContaining({ type: "sign-in", result: "ok" }));
    });

    it("every command replies on the response topic with the request's correlation data", async () => {
      const [ping] = await request(operator, DEVICE, "ping");
      expect(ping?.payload).toMatchObject({ v: 1, command: "ping", status: "ok" });
      const [shot] = await request(operator, DEVICE, "screenshot");
      expect(shot?.payload).toMatchObject({ command: "screenshot", status: "ok" });
      const lines = (shot?.payload["result"] as { lines: string[] } | undefined)?.lines ?? [];
      expect(lines.join("\n")).toContain("4711");
      const [diag] = await request(operator, DEVICE, "diagnostics");
      expect(diag?.payload).toMatchObject({ command: "diagnostics", status: "ok" });
      const r = diag?.payload["result"] as Record<string, unknown>;
      expect(r["diagnostics"]).toMatchObject({ registrar: { inUse: lab.ready.sba } });
      expect((r["diagnostics"] as { certificate: { issuer: string } }).certificate.issuer).toBeTruthy();
      expect((r["registrationHistory"] as Array<{ state: string }>).map((h) => h.state)).toContain(
        "registered",
      );
      expect(Array.isArray(r["log"])).toBe(true);
      const [unknown] = await request(operator, DEVICE, "self-destruct");
      expect(unknown?.payload).toMatchObject({ status: "refused", error: { code: "unknown-command" } });
      const [disabled] = await request(operator, DEVICE, "update");
      expect(disabled?.payload).toMatchObject({ status: "refused", error: { code: "command-disabled" } });
    });

    it("mosquitto_rr (an independent client) gets the ping's reply", async () => {
      const r = await mosquittoRr(broker, {
        username: "operator",
        password: operatorPassword,
        tls: true,
        topic: `${PREFIX}/${DEVICE}/cmd/ping`,
        responseTopic: `${PREFIX}/_fleet/rr/reply`,
        message: "{}",
        correlationData: "rr-1",
        timeoutS: 10,
      });
      expect(r.code).toBe(0);
      expect(JSON.parse(r.stdout.trim())).toMatchObject({ command: "ping", status: "ok" });
    });

    it("desired config: a live key applied and reported within 2 s, an unknown key and a file-only key refused with reasons", async () => {
      const t0 = Date.now();
      await operator.publishAsync(
        `${PREFIX}/${DEVICE}/config/desired`,
        JSON.stringify({ version: 1, config: { "log.level": "debug", "bogus.key": 1, storeDir: "/tmp/x" } }),
        { qos: 1, retain: true },
      );
      let reported: Record<string, unknown> | undefined;
      await expect
        .poll(
          () => {
            const m = seen.filter((x) => x.topic === `${PREFIX}/${DEVICE}/config/reported`).at(-1);
            reported = m ? (JSON.parse(m.payload) as Record<string, unknown>) : undefined;
            return reported?.["version"];
          },
          { timeout: 2_000, interval: 20 },
        )
        .toBe(1);
      const ms = Date.now() - t0;
      process.stdout.write(`${JSON.stringify({ fleet_desired_to_reported_ms: ms })}\n`);
      expect(ms).toBeLessThan(2_000);
      expect(reported?.["applied"]).toMatchObject({ "log.level": "debug" });
      const refused = reported?.["refused"] as Record<string, string>;
      expect(refused["bogus.key"]).toMatch(/unknown option/);
      expect(refused["storeDir"]).toMatch(/not settable/);
    });

    it("desired config: an idle key (failback probe) restarts the core at an idle moment and is reported applied", async () => {
      const from = phone.events.length;
      await operator.publishAsync(
        `${PREFIX}/${DEVICE}/config/desired`,
        JSON.stringify({ version: 2, config: { "log.level": "debug", "network.failbackProbeMs": 15_000 } }),
        { qos: 1, retain: true },
      );
      await expect
        .poll(
          () => {
            const m = seen.filter((x) => x.topic === `${PREFIX}/${DEVICE}/config/reported`).at(-1);
            const r = m ? (JSON.parse(m.payload) as Record<string, unknown>) : undefined;
            return (
              r?.["version"] === 2 && (r["applied"] as Record<string, unknown>)["network.failbackProbeMs"]
            );
          },
          { timeout: 10_000 },
        )
        .toBe(15_000);
      // the core restarted and registered again, with the overlay kept in flash
      await phone.waitFor(
        (e) => e["event"] === "state" && e["state"] === "registered" && phone.events.indexOf(e) > from,
        60_000,
      );
      const overlay = JSON.parse(await readFile(join(dir, "store", "fleet-config.json"), "utf8")) as {
        values: Record<string, unknown>;
      };
      expect(overlay.values["network.failbackProbeMs"]).toBe(15_000);
    });

    it("the ACL is the gate: an intruder's command gets no reply and it cannot read the phone's state", async () => {
      const intruder = await mqtt.connectAsync(broker.url, {
        protocolVersion: 5,
        username: "intruder",
        password: "intruder-pw",
        clientId: `intruder-${process.pid}`,
        reconnectPeriod: 0,
      });
      try {
        // mosquitto grants every filter and filters at delivery: the retained state never arrives.
        const got: string[] = [];
        intruder.on("message", (topic) => got.push(topic));
        await intruder.subscribeAsync(`${PREFIX}/${DEVICE}/state`, { qos: 1 });
        await new Promise((r) => setTimeout(r, 1_000));
        expect(got).toEqual([]);
        // Its PUBLISH is refused (MQTT v5 PUBACK 0x87) and never reaches the phone.
        await expect(request(intruder, DEVICE, "ping", {}, { timeoutMs: 3_000 })).rejects.toThrow(
          /Not authorized/,
        );
        // The phone never saw it: the broker dropped the PUBLISH (mosquitto logs the denial).
        expect(broker.log()).toMatch(/Denied PUBLISH from intruder/);
      } finally {
        await intruder.endAsync();
      }
    });

    it("a command on another phone's topic is ignored by this one", async () => {
      const before = seen.filter((m) => m.topic.includes("/_fleet/")).length;
      const replies = await request(operator, "phone-b", "ping", {}, { timeoutMs: 3_000 });
      expect(replies).toHaveLength(0);
      expect(seen.filter((m) => m.topic.includes("/_fleet/")).length).toBe(before);
    });

    it("README's ACL is the one these tests run", async () => {
      const readme = await readFile(join(import.meta.dirname, "../../README.md"), "utf8");
      const block = readme.split("\n");
      for (const line of siteAcl("handset/v1").filter(Boolean)) expect(block).toContain(line);
    });

    it("no PIN, MQTT password, private key or web ticket in anything the broker carried", async () => {
      const store = await readFile(join(dir, "store", "identity.json"), "utf8").catch(() => "");
      const keyPem = (/"keyPem":"([^"]+)"/.exec(store)?.[1] ?? "").replace(/\\n/g, "\n");
      const keyBody = keyPem
        .split("\n")
        .filter((l) => l && !l.startsWith("-----"))
        .join("");
      expect(seen.length).toBeGreaterThan(10);
      for (const m of seen) {
        expect(m.payload).not.toContain(pin);
        expect(m.payload).not.toContain(phonePassword);
        expect(m.payload).not.toContain(operatorPassword);
        expect(m.payload).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE|saml|<Assertion|WebTicket/i);
        if (keyBody) {
          for (let i = 0; i + 40 <= keyBody.length; i += 200)
            expect(m.payload).not.toContain(keyBody.slice(i, i + 40));
        }
      }
    });

    it("reboot (idle phone): replied ok, then the phone core restarts and registers again", async () => {
      const from = phone.events.length;
      const [r] = await request(operator, DEVICE, "reboot");
      expect(r?.payload).toMatchObject({ command: "reboot", status: "ok" });
      await phone.waitFor(
        (e) => e["event"] === "state" && e["state"] === "booting" && phone.events.indexOf(e) >= from,
        10_000,
      );
      await phone.waitFor(
        (e) => e["event"] === "state" && e["state"] === "registered" && phone.events.indexOf(e) >= from,
        60_000,
      );
    });

    it("SIGKILL of the phone: mosquitto publishes its will, state lost with the birthSeq, within 1.5 × keep-alive", async () => {
      const last = stateOf().at(-1)!;
      const t0 = Date.now();
      phone.child.kill("SIGKILL");
      await expect
        .poll(() => stateOf().at(-1)?.["state"], { timeout: 1.5 * KEEPALIVE_S * 1000, interval: 20 })
        .toBe("lost");
      const ms = Date.now() - t0;
      process.stdout.write(`${JSON.stringify({ fleet_kill_to_lost_ms: ms })}\n`);
      expect(ms).toBeLessThan(1.5 * KEEPALIVE_S * 1000);
      expect(stateOf().at(-1)).toEqual({ v: 1, state: "lost", birthSeq: last["birthSeq"] });
    });
  },
);
