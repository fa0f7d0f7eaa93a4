/**
 * Issue 11: `handset fleet config --org` and `--site SITE`, the organisation's and a site's
 * desired documents, against a real mosquitto 2 (password file, the site ACL) and three phone
 * cores: the firmware's FleetAgent on the real MQTT edge and the system clock, each with its own
 * broker user, two in site "north" and one in "south". The agents merge the layers with the
 * firmware's own DesiredConfig and report them; the devices behind them only record what they
 * are told to apply (phone-n2 cannot apply utcOffsetMinutes, so that it refuses a key).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { createMqttPort } from "../../firmware/platform/mqtt-connection.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { FleetAgent, type FleetDevice } from "../../firmware/telemetry/fleet-agent.ts";
import type { OutboxSnapshot } from "../../firmware/telemetry/outbox.ts";
import { hasMosquitto, needMosquitto } from "../support/mosquitto.ts";
import {
  type Events,
  expectUsageError,
  type FleetBroker,
  fleetHelp,
  fleetMain,
  ofType,
  startFleetBroker,
} from "./fleet-rig.ts";
import { waitReal } from "./sim-wire.ts";

const P = "handset/v1";
const ORG_TOPIC = `${P}/org/config/desired`;
const OPERATOR_PASSWORD = "op-layers-pw";

/** The phones: device id → site (mqtt.site). */
const PHONES = { "phone-n1": "north", "phone-n2": "north", "phone-s1": "south" } as const;
type PhoneId = keyof typeof PHONES;
/** phone-n2's device fails to apply this key: its report refuses it ("could not apply: …"). */
const FAILS_ON: Partial<Record<PhoneId, string>> = { "phone-n2": "utcOffsetMinutes" };

interface TestPhone {
  agent: FleetAgent;
  /** Dotted key → the value the device was last told to run with (undefined: the file's). */
  applied: Record<string, unknown>;
}

let rig: FleetBroker | undefined;
const phones = new Map<PhoneId, TestPhone>();

/** A registered phone that does nothing but record the configuration it is given. */
function recordingDevice(id: PhoneId, applied: Record<string, unknown>): FleetDevice {
  return {
    state: () => ({
      state: "registered",
      limited: false,
      firmware: { version: "0.1.0" },
      uptimeS: 1,
      addresses: {},
    }),
    isIdle: () => true,
    run: async (name) => {
      throw new HandsetError("unknown-command", `No command ${name}`);
    },
    applyConfig: async (values) => {
      const fails = FAILS_ON[id];
      if (fails !== undefined && fails in values)
        throw new HandsetError("config-apply-failed", "this device cannot take it");
      Object.assign(applied, values);
    },
  };
}

/** The outbox's flash, in memory (nothing here is about surviving a reboot). */
function memoryStore() {
  let saved: OutboxSnapshot | undefined;
  return {
    load: async () => saved,
    save: async (s: OutboxSnapshot) => {
      saved = s;
    },
  };
}

beforeAll(async () => {
  if (!hasMosquitto) return;
  rig = await startFleetBroker({
    users: {
      operator: OPERATOR_PASSWORD,
      ...Object.fromEntries(Object.keys(PHONES).map((id) => [id, `${id}-pw`])),
    },
    prefix: P,
    dirPrefix: "handset-fleet-layers-",
  });
  const broker = rig.broker;
  const mark = broker.logMark();
  let seed = 0;
  for (const [id, site] of Object.entries(PHONES) as Array<[PhoneId, string]>) {
    const applied: Record<string, unknown> = {};
    const logger = createLogger(() => {});
    const agent = new FleetAgent({
      clock: new SystemClock(),
      random: new SeededRandom(++seed),
      logger,
      port: createMqttPort({ logger }),
      settings: {
        brokers: [broker.url],
        prefix: P,
        deviceId: id,
        site,
        username: id,
        password: `${id}-pw`,
        keepaliveS: 30,
        commands: ["ping"],
        outboxSize: 100,
        outboxRatePerS: 20,
        intervalS: 300,
      },
      device: recordingDevice(id, applied),
      store: memoryStore(),
    });
    phones.set(id, { agent, applied });
    await agent.start();
  }
  // Subscribed, each of them: from here on a retained document reaches them at once.
  for (const id of Object.keys(PHONES))
    await broker.waitForLog(new RegExp(`Sending SUBACK to ${id}\\b`), { from: mark });
}, 30_000);

afterAll(async () => {
  for (const p of phones.values()) await p.agent.stop().catch(() => {});
  await rig?.dispose();
});

const phone = (id: PhoneId): TestPhone => phones.get(id)!;

/** `handset fleet …` in-process as the operator, against the broker (fleet-rig.ts). */
const fleet = (args: string[]) => rig!.fleet(args);

const reportOf = (events: Events, id: PhoneId) =>
  ofType(events, "fleet.config").find((e) => e["deviceId"] === id);

/** The retained document on a topic, as an independent client (mosquitto_sub) sees it. */
const retained = (topic: string) => rig!.retained(topic);

describe("handset fleet config --org / --site (real mosquitto, three phone cores)", () => {
  it("an org document reaches phones of every site; each report names the org version", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet([
      "config",
      "--org",
      "--set",
      "telemetry.intervalS=120",
      "--wait-for",
      "phone-n1",
      "--wait-for",
      "phone-s1",
    ]);
    expect(code).toBe(0);
    expect(ofType(events, "fleet.config.sent")).toEqual([
      expect.objectContaining({
        layer: "org",
        version: 1,
        config: { "telemetry.intervalS": 120 },
        topic: ORG_TOPIC,
        waitFor: ["phone-n1", "phone-s1"],
      }),
    ]);
    for (const id of ["phone-n1", "phone-s1"] as const)
      expect(reportOf(events, id)).toMatchObject({
        layer: "org",
        version: 1,
        layers: { org: 1 },
        applied: { "telemetry.intervalS": 120 },
        refused: {},
      });
    expect(ofType(events, "error")).toEqual([]);
    // Retained, QoS 1: the third phone was not waited for, and has it too.
    expect(await retained(ORG_TOPIC)).toEqual({
      retain: "1",
      doc: { v: 1, version: 1, config: { "telemetry.intervalS": 120 } },
    });
    await waitReal(
      "phone-n2 to apply the org's interval",
      () => phone("phone-n2").applied["telemetry.intervalS"] === 120,
    );
  });

  it("a site document overrides the org's for a phone in that site and not for one in another", async (ctx) => {
    needMosquitto(ctx);
    const site = await fleet([
      "config",
      "--site",
      "north",
      "--set",
      "telemetry.intervalS=60",
      "--wait-for",
      "phone-n1",
    ]);
    expect(site.code).toBe(0);
    expect(ofType(site.events, "fleet.config.sent")[0]).toMatchObject({
      layer: "site",
      site: "north",
      version: 1,
      topic: `${P}/site/north/config/desired`,
    });
    expect(reportOf(site.events, "phone-n1")).toMatchObject({
      layer: "site",
      site: "north",
      version: 1,
      layers: { org: 1, site: 1 },
      applied: { "telemetry.intervalS": 60 },
    });

    // The next org document is merged with the retained one (one version up, the interval kept),
    // and the site's interval still wins in north, while south keeps the org's.
    const org = await fleet([
      "config",
      "--org",
      "--set",
      'log.level="debug"',
      "--wait-for",
      "phone-n1",
      "--wait-for",
      "phone-s1",
    ]);
    expect(org.code).toBe(0);
    expect(ofType(org.events, "fleet.config.sent")[0]).toMatchObject({
      version: 2,
      config: { "telemetry.intervalS": 120, "log.level": "debug" },
    });
    expect(reportOf(org.events, "phone-n1")).toMatchObject({
      version: 2,
      layers: { org: 2, site: 1 },
      applied: { "telemetry.intervalS": 60, "log.level": "debug" },
    });
    expect(reportOf(org.events, "phone-s1")).toMatchObject({
      version: 2,
      layers: { org: 2 },
      applied: { "telemetry.intervalS": 120, "log.level": "debug" },
    });
    expect(reportOf(org.events, "phone-s1")!["layers"]).toEqual({ org: 2 });
    expect(phone("phone-n1").applied["telemetry.intervalS"]).toBe(60);
    expect(phone("phone-s1").applied["telemetry.intervalS"]).toBe(120);
  });

  it("--wait-for two phones: the one that never reports the version is a fleet-timeout naming it; without --wait-for nothing is awaited", async (ctx) => {
    needMosquitto(ctx);
    // phone-n1 is in north: south's document never reaches it. It reports north's version 1 for
    // its site layer, so south's first document is version 2: a report of 1 must not pass for it.
    const { code, events } = await fleet([
      "config",
      "--site",
      "south",
      "--set",
      "telemetry.intervalS=90",
      "--wait-for",
      "phone-s1",
      "--wait-for",
      "phone-n1",
      "--timeout",
      "1.5",
    ]);
    expect(code).toBe(1);
    expect(ofType(events, "fleet.config.sent")[0]).toMatchObject({ site: "south", version: 2 });
    expect(reportOf(events, "phone-s1")).toMatchObject({
      layer: "site",
      site: "south",
      version: 2,
      layers: { org: 2, site: 2 },
      applied: { "telemetry.intervalS": 90 },
    });
    expect(reportOf(events, "phone-n1")).toBeUndefined();
    const [error] = ofType(events, "error");
    expect(error).toMatchObject({ code: "fleet-timeout" });
    expect(error!["message"]).toContain("phone-n1 reported no site south version 2 within 1.5 s");
    expect(error!["message"]).not.toContain("phone-s1");

    const quiet = await fleet(["config", "--site", "south", "--set", "telemetry.intervalS=100"]);
    expect(quiet.code).toBe(0);
    expect(quiet.events.map((e) => e["event"])).toEqual(["fleet.config.sent"]);
    expect(quiet.events[0]).toMatchObject({ layer: "site", site: "south", version: 3 });
    await waitReal(
      "phone-s1 to apply south's interval",
      () => phone("phone-s1").applied["telemetry.intervalS"] === 100,
    );
    expect(phone("phone-n1").applied["telemetry.intervalS"]).toBe(60);
  });

  it("a key the option table refuses is a usage error and nothing is published; so is a stale version", async (ctx) => {
    needMosquitto(ctx);
    const cases: Array<[string[], string]> = [
      [["--org", "--set", 'storeDir="/tmp/x"'], "storeDir (not settable over MQTT"],
      [["--org", "--set", "no.such.option=1"], "no.such.option (unknown option)"],
      [["--site", "north", "--set", "telemetry.intervalS=5"], "telemetry.intervalS ("],
      [["--site", "north", "--set", 'mqtt.commands=["update"]'], "mqtt.commands (not settable over MQTT"],
    ];
    for (const [args, message] of cases) {
      const { code, events } = await fleet(["config", ...args, "--wait-for", "phone-n1"]);
      expect(code, args.join(" ")).toBe(2);
      expect(events.map((e) => e["event"])).toEqual(["error"]);
      expect(events[0]).toMatchObject({ code: "usage", message: expect.stringContaining(message) });
    }
    const stale = await fleet(["config", "--org", "--set", 'log.level="info"', "--config-version", "2"]);
    expect(stale.code).toBe(2);
    expect(ofType(stale.events, "error")[0]).toMatchObject({
      code: "usage",
      message: expect.stringContaining("--config-version 2 is not above"),
    });
    expect((await retained(ORG_TOPIC)).doc).toEqual({
      v: 1,
      version: 2,
      config: { "telemetry.intervalS": 120, "log.level": "debug" },
    });
    expect((await retained(`${P}/site/north/config/desired`)).doc).toMatchObject({ version: 1 });
  });

  it("a phone that cannot apply a key of ours: its report is printed, exit 1 (fleet-config-refused) naming it", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet([
      "config",
      "--site",
      "north",
      "--set",
      "utcOffsetMinutes=60",
      "--wait-for",
      "phone-n1",
      "--wait-for",
      "phone-n2",
    ]);
    expect(code).toBe(1);
    expect(reportOf(events, "phone-n1")).toMatchObject({
      version: 2,
      applied: { utcOffsetMinutes: 60, "telemetry.intervalS": 60 },
      refused: {},
    });
    expect(reportOf(events, "phone-n2")).toMatchObject({
      version: 2,
      refused: { utcOffsetMinutes: "could not apply: config-apply-failed" },
    });
    const [error] = ofType(events, "error");
    expect(error).toMatchObject({ code: "fleet-config-refused" });
    expect(error!["message"]).toContain("phone-n2 refused utcOffsetMinutes");
    expect(error!["message"]).not.toContain("phone-n1");
  });
});

describe("handset fleet config: which document (flags, no broker)", () => {
  const run = (args: string[]) => fleetMain([...args, "--broker", "mqtt://127.0.0.1:1", "--anonymous"]);
  const set = ["--set", "telemetry.intervalS=60"];
  const ONE_OF = "exactly one of DEVICE, --site SITE or --org";

  // Exit 2 with a usage error: nothing listens on 127.0.0.1:1, so a connection would be exit 1.
  it.each([
    [["config", ...set], ONE_OF],
    [["config", "phone-1", "--org", ...set], ONE_OF],
    [["config", "phone-1", "--site", "north", ...set], ONE_OF],
    [["config", "--org", "--site", "north", ...set], ONE_OF],
    [["config", "--site", "a/b", ...set], "--site"],
    [["config", "--site", "+", ...set], "--site"],
    [["config", "--site", "#", ...set], "--site"],
    [["config", "--site", "", ...set], "--site"],
    [["config", "phone-1", "--wait-for", "phone-2", ...set], "--wait-for is for --site and --org"],
    [["config", "--org", "--wait-for", "a/b", ...set], "--wait-for"],
    [["config", "--org", "--wait-for", "org", ...set], "--wait-for org"],
    [["config", "--org"], "--set KEY=JSON or --unset KEY"],
    [["config", "--org", "--set", 'storeDir="/x"'], "not settable over MQTT"],
    [["list", "--org"], "are for fleet config"],
    [["cmd", "phone-1", "ping", "--site", "north"], "are for fleet config"],
  ])("%j is a usage error (exit 2) before any connection", async (args, message) => {
    expectUsageError(await run(args), message);
  });

  it("--set KEY=null (back to the file's value) passes the table, as on the phone", async () => {
    // Past the checks, so the connection is tried: the edge's error, not a usage error.
    const { code, events } = await run(["config", "--org", "--set", "telemetry.intervalS=null"]);
    expect(code).toBe(1);
    expect(events[0]).toMatchObject({ event: "error", code: "mqtt-unreachable" });
  });

  it("handset fleet --help shows the layer forms", async () => {
    const help = await fleetHelp();
    for (const text of ["config --site SITE|--org", "--site SITE", "--org", "--wait-for DEVICE (repeatable)"])
      expect(help).toContain(text);
  });
});
