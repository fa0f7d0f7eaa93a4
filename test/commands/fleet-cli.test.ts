/**
 * Issue 11: `handset fleet`, the operator's CLI, against a real mosquitto 2 with a password file,
 * an ACL (each phone only its own topics, the operator everything under the prefix), TLS and a
 * client-certificate listener. The phones are scripted with MQTT.js directly (an independent
 * client) and speak the payloads of firmware/telemetry/: a retained state, replies on the
 * request's response topic with its correlation data, and config/reported from the phone's own
 * DesiredConfig.
 */
import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { connectAsync, type IPublishPacket, type MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../firmware/cli.ts";
import { fleetCommand } from "../../firmware/commands/fleet.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { DesiredConfig } from "../../firmware/telemetry/desired-config.ts";
import {
  type CommandReply,
  lostPayload,
  offlinePayload,
  replyPayload,
  reportedPayload,
  statePayload,
} from "../../firmware/telemetry/payloads.ts";
import {
  expectUsageError,
  type FleetBroker,
  fleetHelp,
  fleetMain,
  ofType,
  startFleetBroker,
} from "../fleet/fleet-rig.ts";
import { freePort, hasMosquitto, type Mosquitto, needMosquitto } from "../support/mosquitto.ts";

const execFileAsync = promisify(execFile);
const ROOT = resolve(import.meta.dirname, "../..");
const P = "handset/v1";
const NOW = Date.UTC(2026, 4, 1, 9, 30);

const USERS = {
  operator: "op-secret-1",
  "phone-1": "p1-secret",
  "phone-2": "p2-secret",
  "phone-3": "p3-secret",
  intruder: "in-secret",
};
type User = keyof typeof USERS;

let rig: FleetBroker | undefined;
const clients: MqttClient[] = [];

beforeAll(async () => {
  if (!hasMosquitto) return;
  rig = await startFleetBroker({ users: USERS, prefix: P, clientCa: true, dirPrefix: "handset-fleet-cli-" });
}, 30_000);

afterAll(async () => {
  for (const c of clients) await c.endAsync(true).catch(() => {});
  await rig?.dispose();
});

const b = (): Mosquitto => rig!.broker;

async function client(user: User, o: { will?: string } = {}): Promise<MqttClient> {
  const c = await connectAsync(b().url, {
    protocolVersion: 5,
    clientId: `${user}-${clients.length}`,
    username: user,
    password: USERS[user],
    reconnectPeriod: 0,
    ...(o.will
      ? { will: { topic: `${P}/${user}/state`, payload: Buffer.from(o.will), qos: 1, retain: true } }
      : {}),
  });
  clients.push(c);
  return c;
}

interface Request {
  name: string;
  payload: string;
  retain: boolean;
  qos: number;
  expiry: number | undefined;
}

/**
 * A phone as the fleet sees it: its retained state, commands answered on the response topic with
 * the request's correlation data (ping at once; reboot deferred, then ok; sign-out refused;
 * screenshot never), and desired configuration through the firmware's own DesiredConfig, live
 * keys applied at once and idle ones left pending.
 */
async function scriptedPhone(user: User) {
  const c = await client(user, { will: lostPayload(7) });
  const requests: Request[] = [];
  const config = new DesiredConfig();
  const reply = (packet: IPublishPacket, r: CommandReply) => {
    const to = packet.properties?.responseTopic;
    if (!to) return;
    c.publish(to, replyPayload(r), {
      qos: 1,
      properties: { correlationData: packet.properties?.correlationData ?? Buffer.alloc(0) },
    });
  };
  c.on("message", (topic, payload, packet) => {
    if (topic === `${P}/${user}/config/desired`) {
      config.set("device", payload.toString("utf8"));
      config.committed(config.changes("live"));
      c.publish(`${P}/${user}/config/reported`, reportedPayload(config.report(), NOW), {
        qos: 1,
        retain: true,
      });
      return;
    }
    const name = topic.slice(`${P}/${user}/cmd/`.length);
    requests.push({
      name,
      payload: payload.toString("utf8"),
      retain: packet.retain,
      qos: packet.qos,
      expiry: packet.properties?.messageExpiryInterval,
    });
    if (name === "ping") {
      // A stray reply first (someone else's correlation data): the CLI must wait for its own.
      const to = packet.properties?.responseTopic;
      if (to)
        c.publish(
          to,
          replyPayload({ command: "ping", status: "error", error: { code: "x", message: "x" } }),
          {
            qos: 1,
            properties: { correlationData: Buffer.from("not-yours") },
          },
        );
      reply(packet, {
        command: "ping",
        status: "ok",
        result: { uptimeS: 42, args: JSON.parse(payload.toString()) },
      });
    } else if (name === "reboot") {
      reply(packet, { command: "reboot", status: "deferred" });
      reply(packet, { command: "reboot", status: "ok" });
    } else if (name === "sign-out") {
      reply(packet, {
        command: "sign-out",
        status: "refused",
        error: { code: "command-disabled", message: "this command is disabled" },
      });
    }
    // screenshot: never answered (the phone is gone, as far as the CLI can tell)
  });
  await c.subscribeAsync([`${P}/${user}/cmd/+`, `${P}/${user}/config/desired`], { qos: 1 });
  await c.publishAsync(
    `${P}/${user}/state`,
    statePayload(
      {
        state: "registered",
        registrar: "10.1.0.5:5061",
        primary: true,
        limited: false,
        uri: `sip:${user}@contoso.com`,
        firmware: { version: "0.1.0", slot: "a" },
        uptimeS: 3600,
        addresses: { ip: "10.1.2.3" },
      },
      { birthSeq: 7, outbox: { queued: 0, dropped: 0 }, now: NOW },
    ),
    { qos: 1, retain: true },
  );
  return { client: c, requests };
}

/** `handset fleet …` in-process, as cli.ts would run it (fleet-rig.ts: the operator unless auth: false). */
const fleet: FleetBroker["fleet"] = (args, o) => rig!.fleet(args, o);

describe("handset fleet (real mosquitto)", () => {
  let phone1: Awaited<ReturnType<typeof scriptedPhone>>;

  beforeAll(async () => {
    if (!hasMosquitto) return;
    phone1 = await scriptedPhone("phone-1");
    // phone-2 stopped cleanly (offline); phone-3 vanished (its will: lost).
    const p2 = await client("phone-2");
    await p2.publishAsync(`${P}/phone-2/state`, offlinePayload(3, NOW), { qos: 1, retain: true });
    await p2.endAsync();
    const watcher = await client("operator");
    const lost = new Promise<void>((done) =>
      watcher.on("message", (topic, payload) => {
        if (topic === `${P}/phone-3/state` && JSON.parse(payload.toString()).state === "lost") done();
      }),
    );
    await watcher.subscribeAsync(`${P}/phone-3/state`, { qos: 1 });
    const p3 = await client("phone-3", { will: lostPayload(9) });
    p3.stream.destroy(); // no DISCONNECT: the broker publishes the will
    await lost;
  }, 30_000);

  it("list: one fleet.phone per retained state, lost and offline shown as such, then a summary", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet(["list", "--wait", "5"]);
    expect(code).toBe(0);
    const phones = ofType(events, "fleet.phone");
    expect(phones.map((p) => [p["deviceId"], p["state"], p["online"]])).toEqual([
      ["phone-1", "registered", true],
      ["phone-2", "offline", false],
      ["phone-3", "lost", false],
    ]);
    expect(phones[0]).toMatchObject({
      v: 1,
      registrar: "10.1.0.5:5061",
      primary: true,
      firmware: { version: "0.1.0", slot: "a" },
      birthSeq: 7,
      since: new Date(NOW).toISOString(),
    });
    expect(phones[0]!["ts"]).not.toBe(new Date(NOW).toISOString()); // the line's own time
    expect(phones[2]).toMatchObject({ birthSeq: 9 });
    expect(ofType(events, "fleet.summary")).toEqual([
      expect.objectContaining({
        phones: 3,
        online: 1,
        offline: 2,
        byState: { registered: 1, offline: 1, lost: 1 },
      }),
    ]);
  });

  it("list as text: one line per phone, then the summary", async (ctx) => {
    needMosquitto(ctx);
    const lines: string[] = [];
    const out = createOutput(
      false,
      (l) => lines.push(l),
      () => {},
    );
    const { passwordFile } = rig!;
    const args = ["list", "--broker", b().url, "--username", "operator", "--password-file", passwordFile];
    expect(await fleetCommand(args, out, { env: {}, settleMs: 300 })).toBe(0);
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(
      /^fleet\.phone deviceId=phone-1 state=registered online=true registrar=10\.1\.0\.5:5061 primary=true uri=sip:phone-1@contoso\.com firmware=0\.1\.0\/a uptimeS=3600 ip=10\.1\.2\.3 birthSeq=7 since=\S+$/,
    );
    expect(lines[1]).toMatch(
      /^fleet\.phone deviceId=phone-2 state=offline online=false birthSeq=3 since=\S+$/,
    );
    expect(lines[2]).toBe("fleet.phone deviceId=phone-3 state=lost online=false birthSeq=9");
    expect(lines[3]).toMatch(/^fleet\.summary prefix=handset\/v1 phones=3 online=1 offline=2 byState=/);
  });

  it("list over mqtts with --ca, and with a client certificate (--cert/--key, CN = user name)", async (ctx) => {
    needMosquitto(ctx);
    const tls = await fleet(["list", "--broker", b().tlsUrl, "--ca", b().caFile]);
    expect(tls.code).toBe(0);
    expect(ofType(tls.events, "fleet.summary")[0]).toMatchObject({ phones: 3 });

    const id = await b().issueClientCert("operator");
    const dir = rig!.dir;
    await writeFile(join(dir, "op.pem"), id.cert);
    await writeFile(join(dir, "op.key"), id.key, { mode: 0o600 });
    const cert = await fleet(
      [
        "list",
        "--broker",
        b().certUrl!,
        "--ca",
        b().caFile,
        "--cert",
        join(dir, "op.pem"),
        "--key",
        join(dir, "op.key"),
      ],
      { auth: false },
    );
    expect(cert.code).toBe(0);
    expect(ofType(cert.events, "fleet.summary")[0]).toMatchObject({ phones: 3 });
  });

  it("cmd ping: QoS 1, not retained, with an expiry; only the reply with our correlation data counts", async (ctx) => {
    needMosquitto(ctx);
    const before = phone1.requests.length;
    const { code, events } = await fleet([
      "cmd",
      "phone-1",
      "ping",
      "--args",
      '{"lines":5}',
      "--timeout",
      "5",
    ]);
    expect(code).toBe(0);
    expect(ofType(events, "fleet.reply")).toEqual([
      expect.objectContaining({
        deviceId: "phone-1",
        command: "ping",
        status: "ok",
        result: { uptimeS: 42, args: { lines: 5 } },
      }),
    ]);
    const req = phone1.requests.slice(before);
    expect(req).toEqual([{ name: "ping", payload: '{"lines":5}', retain: false, qos: 1, expiry: 5 }]);
  });

  it("cmd reboot: the deferred reply, then the final one; exit 0", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet(["cmd", "phone-1", "reboot"]);
    expect(code).toBe(0);
    expect(ofType(events, "fleet.reply").map((e) => e["status"])).toEqual(["deferred", "ok"]);
  });

  it("cmd refused: the reply is printed, then an error (fleet-refused), exit 1", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet(["cmd", "phone-1", "sign-out"]);
    expect(code).toBe(1);
    expect(ofType(events, "fleet.reply")[0]).toMatchObject({
      status: "refused",
      error: { code: "command-disabled" },
    });
    expect(ofType(events, "error")).toEqual([
      expect.objectContaining({
        code: "fleet-refused",
        message: expect.stringContaining("command-disabled"),
      }),
    ]);
  });

  it("cmd with no reply: fleet-timeout, exit 1", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet(["cmd", "phone-1", "screenshot", "--timeout", "0.5"]);
    expect(code).toBe(1);
    expect(ofType(events, "fleet.reply")).toEqual([]);
    expect(ofType(events, "error")).toEqual([
      expect.objectContaining({
        code: "fleet-timeout",
        message: expect.stringContaining("no reply from phone-1"),
      }),
    ]);
  });

  it("config: applied live keys are reported for the new version; an idle key is pending; the document is retained", async (ctx) => {
    needMosquitto(ctx);
    const first = await fleet([
      "config",
      "phone-1",
      "--set",
      'log.level="debug"',
      "--set",
      "telemetry.intervalS=60",
    ]);
    expect(first.code).toBe(0);
    expect(ofType(first.events, "fleet.config.sent")[0]).toMatchObject({
      version: 1,
      config: { "log.level": "debug", "telemetry.intervalS": 60 },
    });
    expect(ofType(first.events, "fleet.config")).toEqual([
      expect.objectContaining({
        version: 1,
        applied: { "log.level": "debug", "telemetry.intervalS": 60 },
        pending: [],
        refused: {},
      }),
    ]);

    // The next run reads the retained documents: one version up, the earlier keys kept.
    const second = await fleet(["config", "phone-1", "--set", 'network.staticRegistrars=["10.1.0.6:5061"]']);
    expect(second.code).toBe(0);
    expect(ofType(second.events, "fleet.config")[0]).toMatchObject({
      version: 2,
      pending: ["network.staticRegistrars"],
      refused: {},
    });

    const third = await fleet(["config", "phone-1", "--unset", "telemetry.intervalS"]);
    expect(third.code).toBe(0);
    expect(ofType(third.events, "fleet.config.sent")[0]!["config"]).toEqual({
      "log.level": "debug",
      "network.staticRegistrars": ["10.1.0.6:5061"],
    });

    // An independent client (mosquitto_sub) sees the retained desired document.
    const { retain, doc } = await rig!.retained(`${P}/phone-1/config/desired`);
    expect(retain).toBe("1");
    expect(doc).toEqual({
      v: 1,
      version: 3,
      config: { "log.level": "debug", "network.staticRegistrars": ["10.1.0.6:5061"] },
    });
  });

  it("config refused: the phone's reasons are printed, exit 1 (fleet-config-refused); an explicit stale version is refused", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet([
      "config",
      "phone-1",
      "--set",
      'storeDir="/tmp/x"',
      "--set",
      "no.such.option=1",
      "--set",
      "telemetry.intervalS=30",
    ]);
    expect(code).toBe(1);
    expect(ofType(events, "fleet.warning").map((w) => w["key"])).toEqual(["storeDir", "no.such.option"]);
    const report = ofType(events, "fleet.config")[0]!;
    expect(report["refused"]).toEqual({
      storeDir: expect.stringContaining("not settable over MQTT"),
      "no.such.option": "unknown option",
    });
    expect(report["applied"]).toMatchObject({ "telemetry.intervalS": 30 });
    expect(ofType(events, "error")).toEqual([
      expect.objectContaining({ code: "fleet-config-refused", message: expect.stringContaining("storeDir") }),
    ]);

    const stale = await fleet([
      "config",
      "phone-1",
      "--set",
      "telemetry.intervalS=40",
      "--config-version",
      "2",
    ]);
    expect(stale.code).toBe(2);
    expect(ofType(stale.events, "error")[0]).toMatchObject({ code: "usage" });
  });

  it("config with no phone to answer: fleet-timeout, exit 1", async (ctx) => {
    needMosquitto(ctx);
    const { code, events } = await fleet([
      "config",
      "phone-9",
      "--set",
      "telemetry.intervalS=60",
      "--timeout",
      "0.5",
    ]);
    expect(code).toBe(1);
    expect(ofType(events, "error")[0]).toMatchObject({ code: "fleet-timeout" });
    // take the retained document away again, so phone-9 leaves no trace for later tests
    const op = await client("operator");
    await op.publishAsync(`${P}/phone-9/config/desired`, "", { qos: 1, retain: true });
  });

  it("refuses to connect anonymously unless --anonymous; never takes --password; HANDSET_MQTT_PASSWORD works", async (ctx) => {
    needMosquitto(ctx);
    const anonymous = await fleet(["list"], { auth: false });
    expect(anonymous.code).toBe(2);
    expect(ofType(anonymous.events, "error")[0]).toMatchObject({
      code: "usage",
      message: expect.stringContaining("refusing to connect anonymously"),
    });
    // --anonymous is tried, and this broker (allow_anonymous false) says no.
    const tried = await fleet(["list", "--anonymous"], { auth: false });
    expect(tried.code).toBe(1);
    expect(ofType(tried.events, "error")[0]!["code"]).toMatch(/^mqtt-/);

    const password = await fleet(["list", "--username", "operator", "--password", USERS.operator], {
      auth: false,
    });
    expect(password.code).toBe(2);
    expect(ofType(password.events, "error")[0]!["message"]).toContain("--password-file");

    const env = await fleet(["list", "--username", "operator"], {
      auth: false,
      env: { HANDSET_MQTT_PASSWORD: USERS.operator },
    });
    expect(env.code).toBe(0);
    // No password in anything printed.
    for (const r of [anonymous, tried, password, env])
      expect(JSON.stringify(r.events) + r.stderr.join("\n")).not.toContain(USERS.operator);
  });

  it("the ACL is the gate: a user without rights cannot command (fleet-denied) nor list, a wrong password is refused", async (ctx) => {
    needMosquitto(ctx);
    const before = phone1.requests.length;
    const denied = await fleet(["cmd", "phone-1", "reboot", "--username", "intruder"], {
      auth: false,
      env: { HANDSET_MQTT_PASSWORD: USERS.intruder },
    });
    expect(denied.code).toBe(1);
    expect(ofType(denied.events, "error")[0]).toMatchObject({ code: "fleet-denied" });
    expect(phone1.requests.length).toBe(before);
    // …nor read any phone's state.
    const blind = await fleet(["list", "--username", "intruder"], {
      auth: false,
      env: { HANDSET_MQTT_PASSWORD: USERS.intruder },
    });
    expect(blind.code).toBe(0);
    expect(ofType(blind.events, "fleet.summary")[0]).toMatchObject({ phones: 0 });
    // A phone may not speak for another: phone-2 cannot overwrite phone-1's state.
    const p2 = await client("phone-2");
    await expect(
      p2.publishAsync(`${P}/phone-1/state`, lostPayload(1), { qos: 1, retain: true }),
    ).rejects.toThrow();
    const list = await fleet(["list"]);
    expect(ofType(list.events, "fleet.phone")[0]).toMatchObject({ deviceId: "phone-1", state: "registered" });

    const wrong = await fleet(["list", "--username", "operator"], {
      auth: false,
      env: { HANDSET_MQTT_PASSWORD: "wrong" },
    });
    expect(wrong.code).toBe(1);
    expect(ofType(wrong.events, "error")[0]!["code"]).toMatch(/^mqtt-/);
  });

  it("is a handset command: main() runs it, and the bin lists the fleet and exits by itself", async (ctx) => {
    needMosquitto(ctx);
    const lines: string[] = [];
    const code = await main(
      [
        "fleet",
        "list",
        "--broker",
        b().url,
        "--username",
        "operator",
        "--password-file",
        rig!.passwordFile,
        "--json",
      ],
      { write: (l) => lines.push(l), writeErr: () => {} },
    );
    expect(code).toBe(0);
    expect(lines.map((l) => JSON.parse(l).event)).toContain("fleet.summary");

    const { stdout } = await execFileAsync(
      process.execPath,
      [
        join(ROOT, "firmware/handset.mjs"),
        "fleet",
        "cmd",
        "phone-1",
        "ping",
        "--broker",
        b().url,
        "--username",
        "operator",
        "--json",
      ],
      { env: { ...process.env, HANDSET_MQTT_PASSWORD: USERS.operator }, timeout: 30_000 },
    );
    const events = stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ofType(events, "fleet.reply")[0]).toMatchObject({ status: "ok" });
  }, 40_000);
});

describe("handset fleet (flags, no broker)", () => {
  const run = fleetMain;

  it.each([
    [["bogus"], 'fleet needs "list", "cmd" or "config"'],
    [["list"], "--broker URL is required"],
    [["list", "--broker", "http://x:1", "--anonymous"], "--broker"],
    [["cmd", "phone-1", "--broker", "mqtt://127.0.0.1:1", "--anonymous"], "needs DEVICE and NAME"],
    [["cmd", "a/b", "ping", "--broker", "mqtt://127.0.0.1:1", "--anonymous"], "DEVICE"],
    [
      ["cmd", "phone-1", "ping", "--args", "[1]", "--broker", "mqtt://127.0.0.1:1", "--anonymous"],
      "JSON object",
    ],
    [["config", "phone-1", "--broker", "mqtt://127.0.0.1:1", "--anonymous"], "--set KEY=JSON or --unset KEY"],
    [
      ["config", "phone-1", "--set", "log.level=debug", "--broker", "mqtt://127.0.0.1:1", "--anonymous"],
      "must be JSON",
    ],
    [["list", "--broker", "mqtt://127.0.0.1:1", "--cert", "c.pem", "--key", "k.pem"], "mqtts://"],
    [["list", "--broker", "mqtt://127.0.0.1:1", "--username", "u", "--anonymous"], "--anonymous"],
    [["list", "--broker", "mqtt://127.0.0.1:1", "--timeout", "-5", "--anonymous"], "--timeout"],
  ])("%j is a usage error (exit 2) before any connection", async (args, message) => {
    expectUsageError(await run(args), message);
  });

  it("a missing password file is one line naming the flag and the file", async () => {
    const { code, events } = await run([
      "list",
      "--broker",
      "mqtt://127.0.0.1:1",
      "--username",
      "u",
      "--password-file",
      "/nonexistent/pw",
    ]);
    expect(code).toBe(1);
    expect(events[0]).toMatchObject({
      code: "file-unreadable",
      flag: "--password-file",
      file: "/nonexistent/pw",
    });
  });

  it("a broker nobody listens on: the edge's error (mqtt-unreachable), exit 1", async () => {
    const port = await freePort();
    const { code, events } = await run(["list", "--broker", `mqtt://127.0.0.1:${port}`, "--anonymous"]);
    expect(code).toBe(1);
    expect(events[0]).toMatchObject({ event: "error", code: "mqtt-unreachable" });
  });

  it("handset fleet --help lists its flags", async () => {
    const help = await fleetHelp();
    for (const flag of ["--broker", "--password-file", "--anonymous", "--config-version", "--set"])
      expect(help).toContain(flag);
  });
});
