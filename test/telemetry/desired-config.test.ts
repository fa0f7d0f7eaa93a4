/**
 * Desired configuration (firmware/telemetry/desired-config.ts) checked against the option table,
 * layered org < site < device, split live / idle; and through the agent: applied, deferred to
 * idle, reported (retained) with refusals and reasons.
 */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { DesiredConfig, parseDesired } from "../../firmware/telemetry/desired-config.ts";
import { connected, settle, T } from "./fake-mqtt.ts";

const doc = (version: number, config: Record<string, unknown>) => JSON.stringify({ version, config });

describe("desired config (pure)", () => {
  it("accepts dotted keys and nested groups, typed by the option table", () => {
    const r = parseDesired(
      doc(2, {
        "log.level": "debug",
        telemetry: { intervalS: 60 },
        network: { staticRegistrars: ["pool.lab.test:5061"] },
      }),
    );
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.layer.version).toBe(2);
    expect(Object.fromEntries(r.layer.values)).toEqual({
      "log.level": "debug",
      "telemetry.intervalS": 60,
      "network.staticRegistrars": [{ host: "pool.lab.test", port: 5061 }],
    });
    expect(r.layer.refused).toEqual({});
  });

  it("refuses unknown keys, file-only options and wrong kinds, each with its reason", () => {
    const r = parseDesired(
      doc(1, {
        "log.levle": "debug",
        mqtt: { brokers: ["mqtt://evil:1883"], commands: ["reboot"] },
        storeDir: "/tmp",
        "telemetry.intervalS": 1,
        utcOffsetMinutes: "60",
        network: 3,
      }),
    );
    if (!r.ok) throw new Error(r.reason);
    expect(r.layer.values.size).toBe(0);
    expect(r.layer.refused).toEqual({
      "log.levle": "unknown option",
      "mqtt.brokers": "not settable over MQTT (only the configuration file sets it)",
      "mqtt.commands": "not settable over MQTT (only the configuration file sets it)",
      storeDir: "not settable over MQTT (only the configuration file sets it)",
      "telemetry.intervalS": "expected an integer in 10…86400 s, got 1",
      utcOffsetMinutes: 'expected an integer in -720…840 min, got "60"',
      network: "expected an object (a group of options)",
    });
  });

  it("refuses a document that is not {version, config} as a whole", () => {
    for (const [text, reason] of [
      ["{", "not JSON"],
      ["[]", "expected an object with version and config"],
      ['{"config":{}}', "version: expected an integer ≥ 0"],
      ['{"version":-1,"config":{}}', "version: expected an integer ≥ 0"],
      ['{"version":1.5,"config":{}}', "version: expected an integer ≥ 0"],
      ['{"version":1,"config":[]}', "config: expected an object"],
      [`{"version":1,"config":{"x":"${"a".repeat(70_000)}"}}`, "too large"],
    ])
      expect(parseDesired(text!), text!.slice(0, 40)).toEqual({ ok: false, reason });
  });

  it("layers org < site < device; null goes back to the file's value and wins", () => {
    const d = new DesiredConfig();
    d.set("org", doc(1, { "log.level": "warn", "telemetry.intervalS": 600, utcOffsetMinutes: 60 }));
    d.set("site", doc(5, { "log.level": "info", "telemetry.intervalS": 120 }));
    d.set("device", doc(3, { "log.level": "debug", "telemetry.intervalS": null }));
    expect(d.changes("live")).toEqual({ "log.level": "debug", "telemetry.intervalS": undefined });
    expect(d.changes("idle")).toEqual({ utcOffsetMinutes: 60 });
    d.committed(d.changes("live"));
    expect(d.changes("live")).toEqual({});
    const r = d.report();
    expect(r.version).toBe(3);
    expect(r.layers).toEqual({ org: 1, site: 5, device: 3 });
    expect(r.applied).toEqual({ "log.level": "debug", "telemetry.intervalS": null });
    expect(r.pending).toEqual(["utcOffsetMinutes"]);
  });

  it("a key no layer names any more goes back to the file's value", () => {
    const d = new DesiredConfig();
    d.set("device", doc(1, { "log.level": "debug" }));
    d.committed(d.changes("live"));
    d.set("device", doc(2, {}));
    expect(d.changes("live")).toEqual({ "log.level": undefined });
    d.committed(d.changes("live"));
    expect(d.report().applied).toEqual({});
    d.set("device", ""); // the retained document cleared
    expect(d.report()).toMatchObject({ version: 0, layers: {} });
  });

  it("the version is the device layer's, else the highest; a broken layer keeps its last good document", () => {
    const d = new DesiredConfig();
    d.set("org", doc(4, { "log.level": "warn" }));
    d.set("site", doc(9, {}));
    expect(d.report().version).toBe(9);
    d.set("site", "not json");
    expect(d.report()).toMatchObject({ version: 9, errors: { site: "not JSON" } });
    expect(d.changes("live")).toEqual({ "log.level": "warn" });
  });

  it("refusals of lower layers are reported, named by layer", () => {
    const d = new DesiredConfig();
    d.set("org", doc(1, { bogus: 1 }));
    d.set("device", doc(1, { other: 1 }));
    expect(d.report().refused).toEqual({ bogus: "org layer: unknown option", other: "unknown option" });
  });
});

describe("desired config through the agent", () => {
  it("applies live keys at once and reports within the same turn of work", async () => {
    const h = await connected();
    h.conn.deliver({
      topic: T.desired,
      payload: doc(7, { "log.level": "debug", nope: true, "mqtt.keepaliveS": 5 }),
      retain: true,
    });
    await settle();
    expect(h.device.applied).toEqual([{ values: { "log.level": "debug" }, mode: "live" }]);
    const reported = h.port.published.filter((p) => p.topic === T.reported);
    expect(reported).toHaveLength(1);
    expect(reported[0]!.o).toMatchObject({ qos: 1, retain: true });
    expect(JSON.parse(reported[0]!.payload)).toMatchObject({
      v: 1,
      version: 7,
      layers: { device: 7 },
      applied: { "log.level": "debug" },
      pending: [],
      refused: {
        nope: "unknown option",
        "mqtt.keepaliveS": "not settable over MQTT (only the configuration file sets it)",
      },
    });
  });

  it("defers idle keys until the phone is idle, then applies and reports again", async () => {
    const h = await connected();
    h.device.idle = false;
    h.conn.deliver({
      topic: T.desired,
      payload: doc(2, {
        utcOffsetMinutes: 120,
        "network.staticRegistrars": ["pool.lab.test:5061"],
        "log.level": "warn",
      }),
    });
    await settle();
    expect(h.device.applied).toEqual([{ values: { "log.level": "warn" }, mode: "live" }]);
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({
      applied: { "log.level": "warn" },
      pending: ["network.staticRegistrars", "utcOffsetMinutes"],
    });
    h.agent.idleChanged(); // still busy: nothing
    await settle();
    expect(h.device.applied).toHaveLength(1);
    h.device.idle = true;
    h.agent.idleChanged();
    await settle();
    expect(h.device.applied[1]).toEqual({
      values: { utcOffsetMinutes: 120, "network.staticRegistrars": [{ host: "pool.lab.test", port: 5061 }] },
      mode: "idle",
    });
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({
      applied: {
        "log.level": "warn",
        "network.staticRegistrars": ["pool.lab.test:5061"],
        utcOffsetMinutes: 120,
      },
      pending: [],
    });
  });

  it("merges the retained layers arriving together into one apply and one report", async () => {
    const h = await connected();
    h.conn.deliver({
      topic: T.orgDesired,
      payload: doc(1, { "log.level": "error", utcOffsetMinutes: 60 }),
      retain: true,
    });
    h.conn.deliver({ topic: T.siteDesired!, payload: doc(2, { "log.level": "warn" }), retain: true });
    h.conn.deliver({ topic: T.desired, payload: doc(3, { "log.level": "debug" }), retain: true });
    await settle();
    expect(h.device.applied).toEqual([
      { values: { "log.level": "debug" }, mode: "live" },
      { values: { utcOffsetMinutes: 60 }, mode: "idle" },
    ]);
    expect(h.port.payloads(T.reported)).toHaveLength(1);
    expect(h.port.payloads(T.reported)[0]).toMatchObject({
      version: 3,
      layers: { org: 1, site: 2, device: 3 },
    });
    // the same documents again (a reconnect): nothing to apply, the same report
    h.conn.deliver({ topic: T.desired, payload: doc(3, { "log.level": "debug" }), retain: true });
    await settle();
    expect(h.device.applied).toHaveLength(2);
  });

  it("null puts a key back to the file's value (undefined to the device)", async () => {
    const h = await connected();
    h.conn.deliver({ topic: T.desired, payload: doc(1, { "log.level": "debug" }) });
    await settle();
    h.conn.deliver({ topic: T.desired, payload: doc(2, { "log.level": null }) });
    await settle();
    expect(h.device.applied.at(-1)).toEqual({ values: { "log.level": undefined }, mode: "live" });
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({ version: 2, applied: { "log.level": null } });
  });

  it("the telemetry interval applies to the agent itself", async () => {
    const h = await connected();
    const states = () => h.port.published.filter((p) => p.topic === T.state).length;
    h.conn.deliver({ topic: T.desired, payload: doc(1, { telemetry: { intervalS: 10 } }) });
    await settle();
    const before = states();
    await h.run(35_000);
    expect(states() - before).toBe(3);
    h.conn.deliver({ topic: T.desired, payload: doc(2, {}) }); // back to the file's 300 s
    await settle();
    const after = states();
    await h.run(299_000);
    expect(states()).toBe(after);
    await h.run(1_000);
    expect(states()).toBe(after + 1);
  });

  it("a value the device cannot apply is refused with its code, and retried only for a new value", async () => {
    const h = await connected();
    h.device.applyFailure = new HandsetError("config-apply-failed", "no");
    h.conn.deliver({ topic: T.desired, payload: doc(1, { "log.level": "debug" }) });
    await settle();
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({
      applied: {},
      pending: [],
      refused: { "log.level": "could not apply: config-apply-failed" },
    });
    h.device.applyFailure = undefined;
    h.conn.deliver({ topic: T.desired, payload: doc(1, { "log.level": "debug" }) });
    await settle();
    expect(h.device.applied).toEqual([]);
    h.conn.deliver({ topic: T.desired, payload: doc(2, { "log.level": "warn" }) });
    await settle();
    expect(h.device.applied).toEqual([{ values: { "log.level": "warn" }, mode: "live" }]);
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({
      applied: { "log.level": "warn" },
      refused: {},
    });
  });

  it("a broken document is reported with its reason", async () => {
    const h = await connected();
    h.conn.deliver({ topic: T.desired, payload: "{oops" });
    await settle();
    expect(h.port.payloads(T.reported).at(-1)).toMatchObject({ errors: { device: "not JSON" } });
    expect(h.device.applied).toEqual([]);
  });
});
