/**
 * No PIN, ticket, key or password in any payload (issue 11 "Must show"): a rich fake phone and
 * settings carry planted secrets everywhere they could hide; every payload type is produced
 * (state, will, offline, events, config/reported, every command reply and status), and neither
 * what went to the broker, nor the outbox in flash, nor a log record, nor a status holds one.
 */
import { describe, expect, it } from "vitest";
import type { DeviceState } from "../../firmware/telemetry/payloads.ts";
import { harness, settle, T } from "./fake-mqtt.ts";

const PEM =
  "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC PLANTED-PEM\n-----END PRIVATE KEY-----\n";
const PIN = "PLANTED-PIN-1234";
const PASSWORD = "PLANTED-password-hunter2";
const TICKET = "PLANTED-webticket-eyJhbGciOi";
const MARKERS = ["PLANTED", "PRIVATE KEY", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"];

describe("secret scan of every payload", () => {
  it("finds none of the planted secrets anywhere", async () => {
    const h = harness({
      settings: {
        brokers: [`mqtts://phone-1:${PASSWORD}@mqtt1.lab.test:8883`, "mqtts://mqtt2.lab.test:8883"],
        username: "phone-1",
        password: PASSWORD,
        cert: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        key: PEM,
        ca: ["-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"],
      },
    });
    const rich = {
      ...h.device.current,
      pin: PIN,
      webTicket: TICKET,
      certificate: { notAfter: Date.UTC(2026, 6, 1), subject: "CN=4711", privateKey: PEM, pem: PEM },
      firmware: { version: "0.1.0", slot: "a", signingKey: PEM },
      addresses: { ip: "192.0.2.10", mac: "02:00:00:00:00:01", password: PASSWORD },
      credentials: { pin: PIN, password: PASSWORD },
    } as DeviceState;
    h.device.current = rich;
    h.device.results.diagnostics = {
      recentLog: ["registered to sba.lab.test:5061", "certificate renewed"],
      certificate: { subject: "CN=4711", issuer: "CN=Lab CA", notAfter: "2026-07-01", privateKey: PEM },
      identity: { pin: PIN, password: PASSWORD, webTicket: TICKET, key: PEM, pinCode: PIN },
      keyDump: PEM,
      registrations: [{ registrar: "sba.lab.test:5061", ok: true, accessToken: TICKET }],
    };
    h.device.results.screenshot = { lines: ["4711", "Registered"], pinEntry: PIN, secret: PASSWORD };
    h.device.failures.reprovision = new Error(`failed with ${PIN} and ${PASSWORD}`);

    h.port.refuse("mqtt-auth"); // a failed CONNECT first: status and logs of a failure too
    h.agent.event("sign-in.failed", {
      code: "invalid-pin",
      pin: PIN,
      message: `the user typed ${PIN}`,
      detail: PEM,
      password: PASSWORD,
      ticket: TICKET,
      note: `${PASSWORD} ${PIN}`,
    });
    await h.agent.start();
    await h.run(2_000);
    const conn = h.port.current!;
    expect(conn).toBeDefined();
    const ask = (name: string, payload = "") =>
      conn.deliver({
        topic: T.cmd(name),
        payload,
        responseTopic: "ops/r",
        correlationData: Buffer.from(name),
      });
    for (const name of ["ping", "diagnostics", "screenshot", "reprovision", "nope"])
      ask(name, `{"password":"${PASSWORD}"}`);
    ask("update", "{not json");
    h.agent.updateSettings({ commands: ["ping"] });
    ask("reboot");
    h.device.idle = false;
    h.agent.updateSettings({ commands: ["reboot"] });
    ask("reboot", `{"pin":"${PIN}"}`);
    conn.deliver({ topic: T.cmd("reboot"), payload: "", retain: true });
    conn.deliver({
      topic: T.desired,
      payload: JSON.stringify({
        version: 1,
        config: {
          "mqtt.passwordFile": PASSWORD,
          mqtt: { key: PEM },
          "log.level": "debug",
          utcOffsetMinutes: 60,
        },
      }),
    });
    h.agent.stateChanged();
    h.agent.event("registration.ok", { registrar: "sba.lab.test:5061", pin: PIN });
    await settle();
    h.device.idle = true;
    h.agent.idleChanged();
    await settle();
    conn.drop("reset");
    await h.run(30_000);
    await h.agent.stop({ clean: true });

    // every payload type was produced
    const kinds = new Set(
      h.port.published.map((p) => {
        const j = JSON.parse(p.payload) as Record<string, unknown>;
        return p.topic === T.state ? `state:${j.state}` : p.topic === "ops/r" ? `reply:${j.status}` : p.topic;
      }),
    );
    expect([...kinds].sort()).toEqual(
      [
        "state:registered",
        "state:offline",
        T.event,
        T.reported,
        "reply:ok",
        "reply:error",
        "reply:refused",
        "reply:deferred",
      ].sort(),
    );
    const texts = [
      ...h.port.published.map((p) => `${p.topic} ${p.payload} ${p.o.correlationData?.toString() ?? ""}`),
      ...h.port.connects.map((c) => c.options.will.payload),
      JSON.stringify(h.store.saved),
      ...h.logs.map((l) => JSON.stringify(l)),
      ...h.statuses.map((s) => JSON.stringify(s)),
    ];
    expect(texts.length).toBeGreaterThan(30);
    for (const t of texts) for (const m of MARKERS) expect(t, t.slice(0, 200)).not.toContain(m);
    // and the interesting parts did arrive
    expect(h.port.payloads("ops/r").find((r) => r.command === "diagnostics")).toMatchObject({
      result: { certificate: { subject: "CN=4711", issuer: "CN=Lab CA" }, keyDump: "(withheld)" },
    });
    expect(h.port.payloads(T.event)[0]).toMatchObject({ type: "sign-in.failed", code: "invalid-pin" });
  });
});
