/**
 * The MQTT edge checks the broker's certificate at the PHONE's time (createMqttPort({clock})), not
 * the OS's, and writes no byte of CONNECT (the password in it) before that check has passed.
 *
 * Two witnesses, one on each end of the wire:
 * - a fake TLS broker counts every application byte it ever receives and answers a CONNECT with a
 *   CONNACK; its certificates come from a LabCa with the dates each case needs, relative to the OS
 *   clock (so OpenSSL's own verdict is known);
 * - the phone's clock, when our check reads it, notes how many bytes the edge had handed its TLS
 *   socket by then (tls.connect is wrapped to see the socket): none, or the TLS layer could send
 *   them the moment its handshake is done, whatever our check then says. Deterministic, where the
 *   wire alone only shows a leak when Node's TLS layer happens to flush before the socket dies.
 * mosquitto (a real broker) takes the happy path and the "a year on" refusal once more.
 */
import { once } from "node:events";
import { createServer, type Server } from "node:net";
import { createSecureContext, TLSSocket } from "node:tls";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { HandsetError } from "../../firmware/core/errors.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { createMqttPort } from "../../firmware/platform/mqtt-connection.ts";
import type { CertClock } from "../../firmware/sip/tls-dsk/cert-verify.ts";
import type { MqttConnectOptions } from "../../firmware/telemetry/mqtt-port.ts";
import { LabCa } from "../lab/ca.ts";
import { hasMosquitto, type Mosquitto, needMosquitto, startMosquitto } from "../support/mosquitto.ts";

const DAY = 24 * 3600_000;
const PASSWORD = "s3cret-phone-pw";

const { clientSockets } = vi.hoisted(() => ({ clientSockets: [] as TLSSocket[] }));

// The real node:tls, with every socket the edge opens through tls.connect noted.
vi.mock("node:tls", async (importOriginal) => {
  const tls = await importOriginal<typeof import("node:tls")>();
  const connect = (...args: Parameters<typeof tls.connect>) => {
    const s = tls.connect(...args);
    clientSockets.push(s);
    return s;
  };
  return { ...tls, connect, default: { ...tls, connect } };
});

interface PhoneClock extends CertClock {
  /** Per reading: the bytes the edge had handed its newest TLS socket (CONNECT would be ~70). */
  handedAtCheck: number[];
}

/** The phone's clock as a certificate check sees it: a fixed time, set (SNTP answered) or not. */
function phoneClock(at: number, set = true): PhoneClock {
  const handedAtCheck: number[] = [];
  return {
    handedAtCheck,
    now: () => {
      handedAtCheck.push(clientSockets.at(-1)?.bytesWritten ?? Number.NaN);
      return at;
    },
    isSet: () => set,
  };
}

/** Keep-alive pings are not under test: a timer that never fires. */
const idleTimer = { set: () => 1, clear: () => {} };

function options(url: string, ca: string, o: Partial<MqttConnectOptions> = {}): MqttConnectOptions {
  return {
    url,
    clientId: "phone-1",
    keepaliveS: 60,
    connectTimeoutMs: 5000,
    username: "phone-1",
    password: PASSWORD,
    ca: [ca],
    will: { topic: "handset/v1/phone-1/state", payload: '{"state":"lost"}', qos: 1, retain: false },
    sessionExpiryS: 0,
    timer: idleTimer,
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

/** One TCP connection to the fake broker, watched from its first byte. */
interface Accepted {
  /** Every application byte decrypted, whenever it came. */
  bytes: Buffer;
  closed: Promise<void>;
}

interface TlsBroker {
  url: string;
  accepted: Accepted[];
  close(): Promise<void>;
}

/**
 * A TLS "broker" that records what it is sent and CONNACKs (v5, success) a whole CONNECT. The TLS
 * socket is made by hand over each accepted TCP socket (not tls.createServer, which shows a
 * connection only once its handshake is done), so a connection that ends right after the
 * handshake is still seen, and so is anything it sent.
 */
async function tlsBroker(cert: { cert: string; key: string }): Promise<TlsBroker> {
  const accepted: Accepted[] = [];
  const secureContext = createSecureContext({ cert: cert.cert, key: cert.key });
  const server: Server = createServer((raw) => {
    const s = new TLSSocket(raw, { isServer: true, secureContext });
    const a: Accepted = { bytes: Buffer.alloc(0), closed: once(s, "close").then(() => {}) };
    accepted.push(a);
    s.on("error", () => {});
    let answered = false;
    s.on("data", (chunk: Buffer) => {
      a.bytes = Buffer.concat([a.bytes, chunk]);
      // CONNECT: type 1, remaining length as a varint (a short one here: < 128 · 128 bytes).
      const b = a.bytes;
      if (answered || b.length < 3 || b[0] !== 0x10) return;
      const len = (b[1]! & 0x7f) + ((b[1]! & 0x80) !== 0 ? b[2]! * 128 : 0);
      const header = (b[1]! & 0x80) !== 0 ? 3 : 2;
      if (b.length < header + len) return;
      answered = true;
      s.write(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00]));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  return {
    url: `mqtts://127.0.0.1:${port}`,
    accepted,
    close: async () => {
      await Promise.all(accepted.map((a) => a.closed));
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The connection made since `before`, once it has closed: what the broker got over its life. */
async function lastConnection(b: TlsBroker, before: number): Promise<Accepted> {
  expect(b.accepted).toHaveLength(before + 1);
  const a = b.accepted[before]!;
  await a.closed;
  return a;
}

const records: LogRecord[] = [];
const logger = createLogger((r) => records.push(r));

describe("MQTT edge: the broker's certificate at the phone's time", () => {
  let ca: LabCa;
  /** Valid for the OS clock (from an hour ago, 30 days): OpenSSL accepts it. */
  let current: TlsBroker;
  /** Not yet valid for the OS clock (from 30 days on, for 30 days): OpenSSL says CERT_NOT_YET_VALID. */
  let future: TlsBroker;
  const now = Date.now();

  beforeAll(async () => {
    ca = await LabCa.create("Handset MQTT Clock CA");
    const spec = { commonName: "localhost", dnsNames: ["localhost"], ips: ["127.0.0.1"], serverAuth: true };
    current = await tlsBroker(await ca.issue({ ...spec, notBefore: new Date(now - 3600_000), days: 30 }));
    future = await tlsBroker(await ca.issue({ ...spec, notBefore: new Date(now + 30 * DAY), days: 30 }));
  });
  afterAll(async () => {
    await current?.close();
    await future?.close();
  });

  it("writes not one byte when the phone's clock (a year on) rejects a certificate OpenSSL accepts", async () => {
    const before = current.accepted.length;
    const clock = phoneClock(now + 365 * DAY);
    const port = createMqttPort({ logger, clock });
    const err = await refusal(port.connect(options(current.url, ca.cert)));
    expect(err.code).toBe("mqtt-tls");
    expect(err.message).toMatch(
      /outside its validity at the phone's time: certificate CN=localhost .* is not valid at 20\d\d-/,
    );
    expect(err.message).not.toContain("BEGIN CERTIFICATE");
    // Our handshake went through (the refusal is ours, from secureConnect); after it, until the
    // socket closed, the broker got nothing: no CONNECT, no user name, no password. (Our Finished
    // may not reach it either: we destroy the socket at once.)
    expect((await lastConnection(current, before)).bytes.length).toBe(0);
    // Nor did the TLS socket ever hold a byte of it: none handed over when the check ran, none after.
    expect(clock.handedAtCheck).toEqual([0]);
    expect(clientSockets.at(-1)?.bytesWritten).toBe(0);

    // The same broker, the OS's clock: OpenSSL's verdict alone would have let the CONNECT out.
    const osPort = createMqttPort({ logger });
    const c = await osPort.connect(options(current.url, ca.cert));
    const sent = current.accepted[before + 1]!;
    expect(sent.bytes[0]).toBe(0x10);
    expect(sent.bytes.includes(Buffer.from(PASSWORD))).toBe(true);
    await c.close(true);
  });

  it("connects once the phone's clock is inside the certificate's validity", async () => {
    const before = current.accepted.length;
    const clock = phoneClock(now + 10 * DAY);
    const port = createMqttPort({ logger, clock });
    const c = await port.connect(options(current.url, ca.cert));
    const a = current.accepted[before]!;
    expect(a.bytes[0]).toBe(0x10);
    expect(a.bytes.includes(Buffer.from(PASSWORD))).toBe(true);
    // Even on the way to success, CONNECT reached the TLS socket only after the check.
    expect(clock.handedAtCheck).toEqual([0]);
    expect(clientSockets.at(-1)?.bytesWritten).toBeGreaterThan(PASSWORD.length);
    await c.close(true);
  });

  it("overrules OpenSSL on time only: a certificate not yet valid at the OS's time connects at the phone's", async () => {
    const clock = phoneClock(now + 40 * DAY);
    const port = createMqttPort({ logger, clock });
    const c = await port.connect(options(future.url, ca.cert));
    expect(clock.handedAtCheck).toEqual([0]);
    await c.close(true);

    // At the OS's time it is refused, by our check (OpenSSL's CERT_NOT_YET_VALID alone decides nothing).
    const before = future.accepted.length;
    const osErr = await refusal(createMqttPort({ logger }).connect(options(future.url, ca.cert)));
    expect(osErr.code).toBe("mqtt-tls");
    expect(osErr.message).toContain("outside its validity at the phone's time");
    expect((await lastConnection(future, before)).bytes.length).toBe(0);
  });

  it("still checks the name when OpenSSL stopped at a time code", async () => {
    const before = future.accepted.length;
    const clock = phoneClock(now + 40 * DAY);
    const port = createMqttPort({ logger, clock });
    const err = await refusal(
      port.connect(options(future.url, ca.cert, { servername: "broker.elsewhere.example" })),
    );
    expect(err.code).toBe("mqtt-tls");
    expect(err.message).toMatch(/: certificate is not for broker\.elsewhere\.example$/);
    expect(clock.handedAtCheck).toEqual([0]);
    expect((await lastConnection(future, before)).bytes.length).toBe(0);
  });

  it("is clock-invalid while the phone's clock is not set and only time is wrong, mqtt-tls when more is", async () => {
    // A Pi booted without RTC nor SNTP answer yet: the clock says 2000, every certificate looks wrong.
    const unsetClock = phoneClock(Date.UTC(2000, 0, 1), false);
    const unset = createMqttPort({ logger, clock: unsetClock });
    let before = current.accepted.length;
    const err = await refusal(unset.connect(options(current.url, ca.cert)));
    expect(err.code).toBe("clock-invalid");
    expect(err.message).toMatch(
      /^Time not set: MQTT broker mqtts:\/\/127\.0\.0\.1:\d+ certificate cannot be checked yet/,
    );
    expect(err.message).toContain("is not valid at 2000-01-01");
    expect((await lastConnection(current, before)).bytes.length).toBe(0);

    // Not from our CA: no clock would make it good, so it is not a clock problem.
    const other = await LabCa.create("Some Other CA");
    before = current.accepted.length;
    const untrusted = await refusal(unset.connect(options(current.url, other.cert)));
    expect(untrusted.code).toBe("mqtt-tls");
    expect(untrusted.message).toMatch(/not issued by a trusted CA \(\w+\)/);
    expect((await lastConnection(current, before)).bytes.length).toBe(0);
    expect(unsetClock.handedAtCheck).toEqual([0, 0]);

    // A set clock that disagrees with the certificate is the certificate's fault: mqtt-tls.
    const wrong = createMqttPort({ logger, clock: phoneClock(Date.UTC(2000, 0, 1), true) });
    const late = await refusal(wrong.connect(options(current.url, ca.cert)));
    expect(late.code).toBe("mqtt-tls");
    expect(late.message).toContain("outside its validity at the phone's time");
  });
});

describe("MQTT edge: no CA of its own", () => {
  it("checks the broker against Node's bundled roots, at the phone's time too", async () => {
    const ca = await LabCa.create("Handset MQTT Private CA");
    const broker = await tlsBroker(
      await ca.issue({ commonName: "localhost", ips: ["127.0.0.1"], serverAuth: true, days: 30 }),
    );
    const clock = phoneClock(Date.now());
    const port = createMqttPort({ logger, clock });
    const { ca: _none, ...noCa } = options(broker.url, ca.cert);
    const err = await refusal(port.connect(noCa));
    expect(err.code).toBe("mqtt-tls");
    expect(err.message).toMatch(/not issued by a trusted CA \(\w+\)/);
    expect((await lastConnection(broker, 0)).bytes.length).toBe(0);
    // Our check ran (it read the phone's clock), before anything was handed to the socket.
    expect(clock.handedAtCheck).toEqual([0]);
    await broker.close();
  });
});

describe("MQTT edge: mosquitto's certificate at the phone's time", () => {
  let b: Mosquitto;

  beforeAll(async () => {
    if (hasMosquitto) b = await startMosquitto({ users: [{ username: "phone-1", password: PASSWORD }] });
  });
  afterAll(async () => {
    await b?.dispose();
  });

  it("connects inside the validity, and never logs in when the phone's clock is past it", async (ctx) => {
    needMosquitto(ctx);
    // The broker's certificate runs 398 days from an hour ago (LabCa.issueServer).
    const from = b.logMark();
    const inside = createMqttPort({ logger, clock: phoneClock(Date.now() + 100 * DAY) });
    const c = await inside.connect(options(b.tlsUrl, b.ca));
    await b.waitForLog(/New client connected from .* as phone-1 /, { from });
    await c.close();
    await b.waitForLog("Received DISCONNECT from phone-1", { from });

    const mark = b.logMark();
    const pastClock = phoneClock(Date.now() + 2 * 365 * DAY);
    const past = createMqttPort({ logger, clock: pastClock });
    const err = await refusal(past.connect(options(b.tlsUrl, b.ca, { clientId: "phone-late" })));
    expect(err.code).toBe("mqtt-tls");
    expect(err.message).toContain("outside its validity at the phone's time");
    // mosquitto saw a connection come and go, and no CONNECT from us. How it logs the going
    // depends on how far its TLS read had got when we dropped it: "closed its connection", or
    // "connection from … failed: … unexpected eof" (seen once in a loaded full run).
    await b.waitForLog(
      /Client <unknown> (closed its connection|disconnected)|Client connection from \S+ failed: .*unexpected eof/,
      { from: mark },
    );
    expect(b.log().slice(mark)).not.toMatch(/phone-late/);
    expect(pastClock.handedAtCheck).toEqual([0]);
  });
});

afterAll(() => {
  const text = JSON.stringify(records);
  expect(text).not.toContain(PASSWORD);
  expect(text).not.toContain("BEGIN CERTIFICATE");
});
