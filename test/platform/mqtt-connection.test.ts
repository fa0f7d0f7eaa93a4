/**
 * Issue 11: the MQTT edge (firmware/platform/mqtt-connection.ts) against a real mosquitto 2
 * (plain and TLS listeners, a password file, an ACL; test/support/mosquitto.ts), with
 * mosquitto_sub / mosquitto_rr as independent clients, and a few byte-level fake brokers for
 * answers mosquitto never gives (a refusing SUBACK, a Server Keep Alive, a silent broker).
 *
 * Keep-alive pings run on a hand-fired fake timer: nothing here waits for a keep-alive in real
 * time. What mosquitto did is read from its log (log_type all), waited on, never slept for.
 */
import { once } from "node:events";
import { createServer, type Server, type Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { createMqttPort, type MqttEdgeConnection } from "../../firmware/platform/mqtt-connection.ts";
import type { MqttConnectOptions, MqttIncoming } from "../../firmware/telemetry/mqtt-port.ts";
import { LabCa } from "../lab/ca.ts";
import {
  freePort,
  hasMosquitto,
  type Mosquitto,
  mosquittoRr,
  mosquittoSub,
  needMosquitto,
  startMosquitto,
} from "../support/mosquitto.ts";

/** An interval timer that only fires when the test says so; ids start at 0 on purpose. */
class FakeTimer {
  private next = 0;
  readonly live = new Map<number, { fn: () => void; ms: number }>();
  readonly armed: number[] = [];

  readonly set = (fn: () => void, ms: number): number => {
    const id = this.next++;
    this.live.set(id, { fn, ms });
    this.armed.push(ms);
    return id;
  };

  readonly clear = (id: number): void => {
    this.live.delete(id);
  };

  /** One tick of every live interval. */
  fire(): void {
    for (const t of [...this.live.values()]) t.fn();
  }
}

const PASSWORD = "s3cret-phone-pw";
const ADMIN_PW = "s3cret-admin-pw";
const USERS = [
  { username: "phone-1", password: PASSWORD },
  { username: "phone-2", password: `${PASSWORD}-2` },
  { username: "admin", password: ADMIN_PW },
];
const ACL = ["user admin", "topic readwrite #", "pattern readwrite handset/v1/%u/#"];

const records: LogRecord[] = [];
const port = createMqttPort({ logger: createLogger((r) => records.push(r)) });

let seq = 0;
function options(b: { url: string; ca?: string }, o: Partial<MqttConnectOptions> = {}): MqttConnectOptions {
  return {
    url: b.url,
    clientId: "phone-1",
    keepaliveS: 60,
    connectTimeoutMs: 5000,
    username: "phone-1",
    password: PASSWORD,
    ...(b.ca ? { ca: [b.ca] } : {}),
    will: { topic: `handset/v1/phone-1/will-${++seq}`, payload: '{"state":"lost"}', qos: 1, retain: false },
    sessionExpiryS: 0,
    timer: new FakeTimer(),
    ...o,
  };
}

async function refusal(p: Promise<unknown>): Promise<HandsetError> {
  try {
    await p;
  } catch (err) {
    return err as HandsetError;
  }
  throw new Error("expected a rejection");
}

/** Sockets of this process connected to a loopback port (MQTT.js included), still open. */
function socketsTo(remotePort: number): number {
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles();
  return handles.filter(
    (h) =>
      typeof h === "object" &&
      h !== null &&
      (h as Socket).remotePort === remotePort &&
      !(h as Socket).destroyed &&
      typeof (h as Socket).write === "function",
  ).length;
}

/** Node timers alive in this process (MQTT.js's connack timer would be one). */
function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
}

/** Resolves once ok() holds, checked on every turn of the event loop (the test timeout bounds it). */
function until(ok: () => boolean): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => (ok() ? resolve() : setImmediate(poll));
    poll();
  });
}

/** The first event of `events`, now or later, for which ok() holds. */
async function first<T>(events: T[], ok: (e: T) => boolean = () => true): Promise<T> {
  await until(() => events.some(ok));
  return events.find(ok)!;
}

function collect(c: MqttEdgeConnection): MqttIncoming[] {
  const got: MqttIncoming[] = [];
  c.onMessage((m) => got.push(m));
  return got;
}

// ---------------------------------------------------------------------------------------------
// A fake broker speaking just enough MQTT v5 bytes for answers mosquitto never gives.

interface FakeBrokerScript {
  /** Bytes of the CONNACK's properties (default none); undefined = never answer. */
  connack?: { rc: number; properties?: number[] } | undefined;
  suback?: (filters: string[]) => number[];
}

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function readVarint(buf: Buffer, at: number): { value: number; next: number } | undefined {
  let value = 0;
  let mul = 1;
  for (let i = at; i < buf.length && i < at + 4; i++) {
    const b = buf[i]!;
    value += (b & 0x7f) * mul;
    mul *= 128;
    if ((b & 0x80) === 0) return { value, next: i + 1 };
  }
  return undefined;
}

async function fakeBroker(script: FakeBrokerScript): Promise<{ url: string; server: Server; port: number }> {
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on("error", () => {});
    s.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const len = readVarint(buf, 1);
        if (!len || buf.length < len.next + len.value) return;
        const type = buf[0]! >> 4;
        const body = buf.subarray(len.next, len.next + len.value);
        buf = buf.subarray(len.next + len.value);
        if (type === 1 && script.connack) {
          const props = script.connack.properties ?? [];
          const rest = [0x00, script.connack.rc, ...varint(props.length), ...props];
          s.write(Buffer.from([0x20, ...varint(rest.length), ...rest]));
        } else if (type === 8 && script.suback) {
          const id = [body[0]!, body[1]!];
          const propLen = readVarint(body, 2)!;
          const filters: string[] = [];
          for (let i = propLen.next + propLen.value; i < body.length; ) {
            const n = body.readUInt16BE(i);
            filters.push(body.subarray(i + 2, i + 2 + n).toString());
            i += 2 + n + 1;
          }
          const rest = [...id, 0x00, ...script.suback(filters)];
          s.write(Buffer.from([0x90, ...varint(rest.length), ...rest]));
        } else if (type === 12) s.write(Buffer.from([0xd0, 0x00]));
      }
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address() as { port: number };
  return { url: `mqtt://127.0.0.1:${address.port}`, server, port: address.port };
}

// ---------------------------------------------------------------------------------------------

// Tests that need mosquitto call needMosquitto(ctx): a plain skip without it, a failure under CI.
describe("MQTT edge against mosquitto", () => {
  let b: Mosquitto;

  beforeAll(async () => {
    if (hasMosquitto) b = await startMosquitto({ users: USERS, acl: ACL, clientCa: true });
  });
  afterAll(async () => {
    await b?.dispose();
  });

  it("connects with a password over TLS, and leaves nothing behind after a clean close", async (ctx) => {
    needMosquitto(ctx);
    const timer = new FakeTimer();
    const from = b.logMark();
    const timeouts = activeTimeouts();
    const c = await port.connect(options({ url: b.tlsUrl, ca: b.ca }, { timer }));
    // Connected, MQTT.js holds no Node timer: the connack timer is gone, pings are on ours.
    expect(activeTimeouts()).toBeLessThanOrEqual(timeouts);
    expect(timer.live.size).toBe(1);
    const line = await b.waitForLog(/New client connected from .* as phone-1 /, { from });
    // v5, clean start, keep-alive 60, the user from the password file.
    expect(line).toContain("(p5, c1, k60, u'phone-1')");
    expect(socketsTo(b.tlsPort)).toBe(1);
    expect(c.keepaliveS).toBe(60);
    await c.close();
    await b.waitForLog("Received DISCONNECT from phone-1", { from });
    expect(socketsTo(b.tlsPort)).toBe(0);
    expect(timer.live.size).toBe(0);
    expect(activeTimeouts()).toBeLessThanOrEqual(timeouts);
  });

  it("refuses a wrong password as mqtt-auth, with nothing left and no retry", async (ctx) => {
    needMosquitto(ctx);
    const timer = new FakeTimer();
    const from = b.logMark();
    const timeouts = activeTimeouts();
    const err = await refusal(
      port.connect(options({ url: b.tlsUrl, ca: b.ca }, { clientId: "phone-2", username: "phone-2", timer })),
    );
    expect(err.code).toBe("mqtt-auth");
    // mosquitto 2.0.11 answers a v5 CONNECT with a wrong password 0x87 "not authorized", not 0x86.
    expect(err.message).toMatch(/not authorized \(0x87\)|bad user name or password \(0x86\)/);
    expect(err.message).not.toContain(PASSWORD);
    expect(socketsTo(b.tlsPort)).toBe(0);
    expect(timer.live.size).toBe(0);
    expect(activeTimeouts()).toBeLessThanOrEqual(timeouts);
    await b.waitForLog("disconnected, not authorised", { from });
    // An unknown user too.
    const second = b.logMark();
    const unknown = await refusal(port.connect(options(b, { clientId: "nobody", username: "nobody" })));
    expect(unknown.code).toBe("mqtt-auth");
    await b.waitForLog("disconnected, not authorised", { from: second });
    // One attempt each: MQTT.js did not try again by itself.
    const attempts = b
      .log()
      .slice(from)
      .split("\n")
      .filter((l) => /New connection from .* on port/.test(l));
    expect(attempts).toHaveLength(2);
  });

  it("names TLS failures mqtt-tls: unknown CA, wrong name, missing client certificate", async (ctx) => {
    needMosquitto(ctx);
    const other = await LabCa.create("Some Other CA");
    const untrusted = await refusal(port.connect(options({ url: b.tlsUrl, ca: other.cert })));
    expect(untrusted.code).toBe("mqtt-tls");
    expect(untrusted.message).toMatch(/not issued by a trusted CA \(\w+\)/);
    expect(untrusted.message).not.toContain("BEGIN CERTIFICATE");

    const wrongName = await refusal(
      port.connect(options({ url: b.tlsUrl, ca: b.ca }, { servername: "broker.elsewhere.example" })),
    );
    expect(wrongName.code).toBe("mqtt-tls");
    expect(wrongName.message).toContain("not for broker.elsewhere.example (ERR_TLS_CERT_ALTNAME_INVALID)");

    const noClientCert = await refusal(port.connect(options({ url: b.certUrl!, ca: b.ca })));
    expect(noClientCert.code).toBe("mqtt-tls");
    expect(noClientCert.message).toContain("client certificate");

    // TLS to the plain listener: the handshake never completes.
    const plain = await refusal(port.connect(options({ url: `mqtts://127.0.0.1:${b.port}`, ca: b.ca })));
    expect(plain.code).toBe("mqtt-tls");
    for (const p of [b.tlsPort, b.certPort!, b.port]) expect(socketsTo(p)).toBe(0);
  });

  it("authenticates by client certificate (CN = user name) on the require_certificate listener", async (ctx) => {
    needMosquitto(ctx);
    const id = await b.issueClientCert("phone-2");
    const from = b.logMark();
    const c = await port.connect(
      options(
        { url: b.certUrl!, ca: b.ca },
        { clientId: "phone-2", username: undefined, password: undefined, cert: id.cert, key: id.key },
      ),
    );
    expect(await b.waitForLog(/New client connected .* as phone-2 /, { from })).toContain("u'phone-2'");
    // The ACL's %u applies to the certificate's name.
    expect(await c.subscribe(["handset/v1/phone-2/cmd/#"], 1)).toEqual([1]);
    const got = collect(c);
    const admin = await port.connect(
      options(b, { clientId: "admin-cert", username: "admin", password: ADMIN_PW }),
    );
    await admin.publish("handset/v1/phone-2/cmd/ping", "{}", { qos: 1 });
    await first(got);
    expect(got[0]?.topic).toBe("handset/v1/phone-2/cmd/ping");
    await admin.close();
    await c.close();
  });

  it("reports a closed port as mqtt-unreachable and a silent broker as mqtt-timeout", async (ctx) => {
    needMosquitto(ctx);
    const closed = await freePort();
    const err = await refusal(port.connect(options({ url: `mqtt://127.0.0.1:${closed}` })));
    expect(err.code).toBe("mqtt-unreachable");
    expect(err.message).toContain("ECONNREFUSED");
    const tlsErr = await refusal(port.connect(options({ url: `mqtts://127.0.0.1:${closed}`, ca: b.ca })));
    expect(tlsErr.code).toBe("mqtt-unreachable");

    const silent = await fakeBroker({ connack: undefined });
    const accepted: Socket[] = [];
    silent.server.on("connection", (s) => accepted.push(s));
    const timeout = await refusal(port.connect(options(silent, { connectTimeoutMs: 300 })));
    expect(timeout.code).toBe("mqtt-timeout");
    expect(socketsTo(silent.port)).toBe(0);
    // Our side closed it, so the fake broker's socket ends too.
    if (!accepted[0]?.closed) await once(accepted[0]!, "close");
    silent.server.close();
  });

  it("classifies CONNACK refusals: 0x87 → mqtt-auth, 0x88 / 0x9c → mqtt-refused", async () => {
    for (const [rc, code] of [
      [0x87, "mqtt-auth"],
      [0x88, "mqtt-refused"],
      [0x9c, "mqtt-refused"],
    ] as const) {
      const fake = await fakeBroker({ connack: { rc } });
      const err = await refusal(port.connect(options(fake)));
      expect(err.code).toBe(code);
      expect(err.message).toContain(`0x${rc.toString(16)}`);
      expect(socketsTo(fake.port)).toBe(0);
      fake.server.close();
    }
  });

  it("publishes QoS 1 retained: resolves at PUBACK, an independent mosquitto_sub gets it retained", async (ctx) => {
    needMosquitto(ctx);
    const from = b.logMark();
    const c = await port.connect(options(b));
    let packets = 0;
    c.onPacket(() => packets++);
    await c.publish("handset/v1/phone-1/state", '{"v":1,"state":"idle"}', {
      qos: 1,
      retain: true,
      contentType: "application/json",
      messageExpiryS: 3600,
    });
    // The one packet received before the promise resolved is the PUBACK.
    expect(packets).toBe(1);
    expect(b.log().slice(from)).toMatch(/Sending PUBACK to phone-1 \(m\d+, rc(0|16)\)/);
    const sub = mosquittoSub(b, {
      username: "admin",
      password: ADMIN_PW,
      tls: true,
      topics: ["handset/v1/phone-1/state"],
      format: "%r %q %t %C %p",
      count: 1,
      timeoutS: 10,
    });
    const result = await sub.done;
    expect(result.code).toBe(0);
    expect(sub.lines()).toEqual(['1 1 handset/v1/phone-1/state application/json {"v":1,"state":"idle"}']);
    await c.close();
  });

  it("carries the v5 response topic and correlation data both ways (our client, then mosquitto_rr)", async (ctx) => {
    needMosquitto(ctx);
    const phone = await port.connect(options(b));
    const requests = collect(phone);
    expect(await phone.subscribe(["handset/v1/phone-1/cmd/#"], 1)).toEqual([1]);
    phone.onMessage((m) => {
      requests.push(m);
      if (!m.responseTopic) return;
      phone
        .publish(m.responseTopic, `{"ok":true,"to":"${m.payload.toString()}"}`, {
          qos: 1,
          ...(m.correlationData ? { correlationData: m.correlationData } : {}),
          messageExpiryS: 30,
          contentType: "application/json",
        })
        .catch(() => {});
    });

    const operator = await port.connect(
      options(b, { clientId: "operator", username: "admin", password: ADMIN_PW }),
    );
    const replies = collect(operator);
    expect(await operator.subscribe(["handset/v1/+/reply/#"], 1)).toEqual([1]);
    const corr = Buffer.from([0x00, 0xff, 0x10, 0x42]);
    await operator.publish("handset/v1/phone-1/cmd/ping", "ping-1", {
      qos: 1,
      responseTopic: "handset/v1/phone-1/reply/r1",
      correlationData: corr,
    });
    const reply = await first(replies);
    expect(requests[0]?.responseTopic).toBe("handset/v1/phone-1/reply/r1");
    expect(requests[0]?.correlationData?.equals(corr)).toBe(true);
    expect(reply.topic).toBe("handset/v1/phone-1/reply/r1");
    expect(reply.correlationData?.equals(corr)).toBe(true);
    expect(reply.retain).toBe(false);
    expect(JSON.parse(reply.payload.toString())).toEqual({ ok: true, to: "ping-1" });

    // mosquitto_rr, a client that is not MQTT.js, sees the same correlation data come back.
    const rr = await mosquittoRr(b, {
      username: "admin",
      password: ADMIN_PW,
      tls: true,
      topic: "handset/v1/phone-1/cmd/ping",
      responseTopic: "handset/v1/phone-1/reply/rr",
      message: "ping-2",
      correlationData: "corr-7f3a",
      format: "%D %C %p",
    });
    expect(rr.code).toBe(0);
    expect(rr.stdout.trim()).toBe('corr-7f3a application/json {"ok":true,"to":"ping-2"}');
    await operator.close();
    await phone.close();
  });

  it("survives a handler that throws (MQTT.js would let it end the process)", async (ctx) => {
    needMosquitto(ctx);
    const phone = await port.connect(options(b));
    const seen: string[] = [];
    phone.onMessage((m) => {
      seen.push(m.payload.toString());
      throw new Error("handler bug");
    });
    phone.onPacket(() => {
      throw new Error("watchdog bug");
    });
    await phone.subscribe(["handset/v1/phone-1/cmd/#"], 1);
    const admin = await port.connect(
      options(b, { clientId: "admin-throw", username: "admin", password: ADMIN_PW }),
    );
    await admin.publish("handset/v1/phone-1/cmd/a", "one", { qos: 1 });
    await admin.publish("handset/v1/phone-1/cmd/b", "two", { qos: 1 });
    await until(() => seen.length === 2);
    expect(seen).toEqual(["one", "two"]);
    expect(records.some((r) => r.message === "onMessage handler threw")).toBe(true);
    await phone.publish("handset/v1/phone-1/event", "still here", { qos: 1 });
    await admin.close();
    await phone.close();
  });

  it("keeps the ACL: no delivery from a forbidden filter (mosquitto 2.0 grants it), a forbidden publish is refused", async (ctx) => {
    needMosquitto(ctx);
    const phone = await port.connect(options(b));
    const got = collect(phone);
    // mosquitto 2.0's acl_file does not refuse SUBSCRIBE: it grants, then filters at delivery.
    expect(await phone.subscribe(["handset/v1/phone-2/cmd/#", "handset/v1/phone-1/cmd/#"], 1)).toEqual([
      1, 1,
    ]);
    const admin = await port.connect(
      options(b, { clientId: "admin-acl", username: "admin", password: ADMIN_PW }),
    );
    const watched = collect(admin);
    await admin.subscribe(["handset/#"], 1);
    await admin.publish("handset/v1/phone-2/cmd/reboot", "{}", { qos: 1 });
    await admin.publish("handset/v1/phone-1/cmd/ping", "sentinel", { qos: 1 });
    await first(got, (m) => m.payload.toString() === "sentinel");
    expect(got.map((m) => m.topic)).toEqual(["handset/v1/phone-1/cmd/ping"]);

    // Publishing on another phone's topic: PUBACK 0x87, nothing delivered.
    const denied = await refusal(phone.publish("handset/v1/phone-2/state", '{"forged":true}', { qos: 1 }));
    expect(denied.code).toBe("mqtt-publish-refused");
    expect(denied.message).toContain("not authorized (0x87)");
    await phone.publish("handset/v1/phone-1/event", "sentinel-2", { qos: 1 });
    await first(watched, (m) => m.payload.toString() === "sentinel-2");
    expect(watched.map((m) => m.topic)).not.toContain("handset/v1/phone-2/state");
    expect(b.log()).toMatch(/Denied PUBLISH from phone-1 .*'handset\/v1\/phone-2\/state'/);
    await admin.close();
    await phone.close();
  });

  it("returns 128 for a filter a broker refuses in its SUBACK (v5 code 0x87, as a fake broker sends it)", async () => {
    const fake = await fakeBroker({
      connack: { rc: 0 },
      suback: (filters) => filters.map((f) => (f.startsWith("secret/") ? 0x87 : 1)),
    });
    const c = await port.connect(options(fake));
    expect(await c.subscribe(["open/a", "secret/b", "open/c"], 1)).toEqual([1, 128, 1]);
    expect(await c.subscribe(["open/again"], 0)).toEqual([1]);
    await c.close(true);
    fake.server.close();
  });

  it("has the broker publish the will on close(true) and not on close()", async (ctx) => {
    needMosquitto(ctx);
    const willTopic = "handset/v1/phone-1/state-will";
    const watcher = mosquittoSub(b, { username: "admin", password: ADMIN_PW, topics: [willTopic] });
    await watcher.subscribed;
    const will = {
      topic: willTopic,
      payload: '{"state":"lost","birthSeq":7}',
      qos: 1 as const,
      retain: false,
    };

    const forced = await port.connect(options(b, { will }));
    await forced.close(true);
    expect(await watcher.waitForLines(1)).toEqual([`0 1 ${willTopic} {"state":"lost","birthSeq":7}`]);

    const clean = await port.connect(options(b, { will }));
    await clean.close();
    const admin = await port.connect(
      options(b, { clientId: "admin-will", username: "admin", password: ADMIN_PW }),
    );
    await admin.publish(willTopic, "sentinel", { qos: 1 });
    // The broker processed the DISCONNECT before our close resolved; had it sent the will, it
    // would be ahead of the sentinel.
    expect((await watcher.waitForLines(2))[1]).toBe(`0 1 ${willTopic} sentinel`);
    await admin.close();
    await watcher.stop();
  });

  it("pings through the injected timer only: PINGREQ on the 2nd tick, PINGRESP seen by onPacket", async (ctx) => {
    needMosquitto(ctx);
    const timer = new FakeTimer();
    const c = await port.connect(options(b, { keepaliveS: 20, timer }));
    // One interval of keep-alive/2; the first id the fake hands out is 0, and still works.
    expect([...timer.live.keys()]).toEqual([0]);
    expect(timer.armed).toEqual([10_000]);
    const packets: number[] = [];
    c.onPacket(() => packets.push(packets.length));
    const from = b.logMark();
    timer.fire();
    timer.fire();
    await b.waitForLog("Received PINGREQ from phone-1", { from });
    await until(() => packets.length > 0);
    expect(b.log().slice(from)).toContain("Sending PINGRESP to phone-1");
    // PINGRESP re-armed the interval (old one cleared): still one live timer.
    expect(timer.live.size).toBe(1);
    expect(timer.armed).toEqual([10_000, 10_000]);
    await c.close();
    expect(timer.live.size).toBe(0);
  });

  it("closes by itself on the 3rd tick without an answer (1.5 × keep-alive), once, and the will goes out", async (ctx) => {
    needMosquitto(ctx);
    const timer = new FakeTimer();
    const willTopic = "handset/v1/phone-1/state-ka";
    const watcher = mosquittoSub(b, { username: "admin", password: ADMIN_PW, topics: [willTopic] });
    await watcher.subscribed;
    const c = await port.connect(
      options(b, { timer, will: { topic: willTopic, payload: "lost", qos: 1, retain: false } }),
    );
    const reasons: string[] = [];
    c.onClose((r) => reasons.push(r));
    // Three ticks in one turn: the PINGRESP cannot have arrived in between.
    timer.fire();
    timer.fire();
    timer.fire();
    await first(reasons);
    expect(reasons).toEqual([expect.stringContaining("keep-alive timeout")]);
    expect(await watcher.waitForLines(1)).toEqual([`0 1 ${willTopic} lost`]);
    expect(timer.live.size).toBe(0);
    await c.close();
    expect(reasons).toHaveLength(1);
    await watcher.stop();
  });

  it("uses the broker's Server Keep Alive and says so (keepaliveS)", async () => {
    // CONNACK property 0x13 Server Keep Alive = 30 s.
    const fake = await fakeBroker({ connack: { rc: 0, properties: [0x13, 0x00, 30] } });
    const timer = new FakeTimer();
    const c = await port.connect(options(fake, { keepaliveS: 60, timer }));
    expect(c.keepaliveS).toBe(30);
    expect(timer.armed).toEqual([15_000]);
    await c.close(true);
    fake.server.close();
  });

  it("rejects a publish or subscribe while not connected at once (mqtt-offline), and options out of range", async (ctx) => {
    needMosquitto(ctx);
    const c = await port.connect(options(b));
    const closing = c.close();
    expect((await refusal(c.publish("handset/v1/phone-1/event", "x", { qos: 1 }))).code).toBe("mqtt-offline");
    await closing;
    expect((await refusal(c.publish("handset/v1/phone-1/event", "x", { qos: 0 }))).code).toBe("mqtt-offline");
    expect((await refusal(c.subscribe(["handset/v1/phone-1/cmd/#"], 1))).code).toBe("mqtt-offline");
    for (const bad of [
      { keepaliveS: 70_000 },
      { keepaliveS: -1 },
      { connectTimeoutMs: 0 },
      { sessionExpiryS: 2 ** 32 },
      { url: "http://127.0.0.1:1" },
      { url: `mqtt://phone-1:${PASSWORD}@127.0.0.1:${b.port}` },
    ]) {
      const err = await refusal(port.connect(options(b, bad)));
      expect(err.code).toBe("mqtt-options");
      expect(err.message).not.toContain(PASSWORD);
    }
  });
});

describe("MQTT edge when the broker dies", () => {
  let b: Mosquitto;

  beforeAll(async () => {
    if (hasMosquitto) b = await startMosquitto({ users: USERS, acl: ACL });
  });
  afterAll(async () => {
    await b?.dispose();
  });

  it("calls onClose once on SIGKILL, refuses to publish after it, and never reconnects by itself", async (ctx) => {
    needMosquitto(ctx);
    const timer = new FakeTimer();
    const c = await port.connect(options(b, { timer, keepaliveS: 2 }));
    const reasons: string[] = [];
    c.onClose((r) => reasons.push(r));
    await c.subscribe(["handset/v1/phone-1/cmd/#"], 1);
    await b.kill();
    await first(reasons);
    expect(reasons).toHaveLength(1);
    expect(socketsTo(b.port)).toBe(0);
    expect(timer.live.size).toBe(0);
    expect((await refusal(c.publish("handset/v1/phone-1/event", "x", { qos: 1 }))).code).toBe("mqtt-offline");
    await c.close();
    await c.close(true);
    expect(reasons).toHaveLength(1);

    // The broker is back on the same port: nobody comes back unless the agent asks. Tick our
    // timer past any keep-alive; then give MQTT.js's default reconnect period (1 s) half again.
    const from = b.logMark();
    await b.restart();
    for (let i = 0; i < 5; i++) timer.fire();
    const probe = await port.connect(
      options(b, { clientId: "probe", username: "admin", password: ADMIN_PW }),
    );
    await b.waitForLog("as probe ", { from });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect(b.log().slice(from)).not.toMatch(/as phone-1 /);
    expect(socketsTo(b.port)).toBe(1);
    await probe.close();
    expect(reasons).toHaveLength(1);
  });

  it("fails a QoS 1 publish still waiting for its PUBACK when the connection is lost (MQTT.js would not)", async (ctx) => {
    needMosquitto(ctx);
    if (!b.running()) await b.restart();
    const c = await port.connect(options(b));
    const reasons: string[] = [];
    c.onClose((r) => reasons.push(r));
    // Frozen, the broker takes the bytes and answers nothing: the PUBACK cannot come first.
    b.freeze();
    const late = refusal(c.publish("handset/v1/phone-1/event", "in-flight", { qos: 1 }));
    await b.kill();
    const err = await late;
    expect(err.code).toBe("mqtt-offline");
    await first(reasons);
    expect(reasons).toHaveLength(1);
    expect(socketsTo(b.port)).toBe(0);
  });

  it("bounds a clean close() by connectTimeoutMs when the broker no longer answers", async (ctx) => {
    needMosquitto(ctx);
    if (!b.running()) await b.restart();
    const c = await port.connect(options(b, { connectTimeoutMs: 300 }));
    const reasons: string[] = [];
    c.onClose((r) => reasons.push(r));
    b.freeze();
    const late = refusal(c.publish("handset/v1/phone-1/event", "never-acked", { qos: 1 }));
    // MQTT.js's end(false) would wait for that PUBACK for ever.
    await c.close();
    expect((await late).code).toBe("mqtt-offline");
    expect(reasons).toEqual(["closed by us"]);
    expect(socketsTo(b.port)).toBe(0);
    b.thaw();
  });
});

afterAll(() => {
  // Every record the edge logged in this file, failures included: no password, no key.
  const text = JSON.stringify(records);
  for (const secret of [PASSWORD, ADMIN_PW, "PRIVATE KEY"]) expect(text).not.toContain(secret);
  if (hasMosquitto) expect(records.length).toBeGreaterThan(20);
});
