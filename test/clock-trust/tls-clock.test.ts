/**
 * Every TLS edge checks the server certificate at the phone's clock, not the OS's (issue 9 §1):
 * outer SIP/TLS (tlsFlowConnector), HTTPS (createHttpsClient), and the inner TLS-DSK handshake on
 * both engines (Node/OpenSSL and node-forge). Each is shown
 * - accepting a certificate that is valid only at the phone's time, years away from the OS's;
 * - refusing one that the OS clock calls valid but that is expired at the phone's time;
 * - calling a time-only failure `clock-invalid` while the clock is not set;
 * - staying as strict as before on trust and names, whatever the clock says.
 */
import type { AddressInfo } from "node:net";
import * as tls from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Clock } from "../../firmware/core/clock.ts";
import { createHttpsClient, MAX_RESPONSE_BYTES } from "../../firmware/platform/https-client.ts";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { CertClock } from "../../firmware/sip/tls-dsk/cert-verify.ts";
import type { InnerTls, TlsDskClientEngine } from "../../firmware/sip/tls-dsk/engine.ts";
import { type IssuedCert, LabCa } from "../lab/ca.ts";
import { LabTlsDskServer } from "../lab/tls-dsk-server-engine.ts";

const DAY = 86_400_000;
const NAME = "pool.lab.test";
const FUTURE = Date.now() + 5 * 365 * DAY; // the phone's time in the "OS clock 5 years behind" case

/** A phone clock at a fixed distance from the OS clock; `set` says whether SNTP has answered. */
function phoneClock(at: number, set = true): Clock & CertClock {
  const shift = at - Date.now();
  return {
    now: () => Date.now() + shift,
    isSet: () => set,
    monotonic: () => performance.now(),
    setTimer: (ms, fn) => {
      const t = setTimeout(fn, ms);
      return { cancel: () => clearTimeout(t) };
    },
  };
}

let ca: LabCa;
let otherCa: LabCa;
let futureOnly: IssuedCert; // valid only around FUTURE
let now: IssuedCert; // valid now for 30 days
let wrongName: IssuedCert; // valid now and at FUTURE, another name
let foreign: IssuedCert; // another CA, valid at FUTURE
let client: IssuedCert;

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([LabCa.create(), LabCa.create("Some Other Root")]);
  const spec = { commonName: NAME, dnsNames: [NAME], ips: ["127.0.0.1"], serverAuth: true };
  [futureOnly, now, wrongName, foreign, client] = await Promise.all([
    ca.issue({ ...spec, notBefore: new Date(FUTURE - DAY), days: 30 }),
    ca.issue({ ...spec, days: 30 }),
    ca.issue({ ...spec, commonName: "other.lab.test", dnsNames: ["other.lab.test"], ips: [], days: 3000 }),
    otherCa.issue({ ...spec, notBefore: new Date(FUTURE - DAY), days: 30 }),
    ca.issueClient("alice@lab.test"),
  ]);
});

// ── outer TLS and HTTPS: a raw TLS server that records every byte it receives ─────────────────

const servers: tls.Server[] = [];
afterAll(async () => {
  for (const s of servers) await new Promise((r) => s.close(r));
});

async function tlsServer(
  cert: IssuedCert,
  onData: (socket: tls.TLSSocket, data: Buffer) => void = () => {},
): Promise<{ port: number; received: () => number }> {
  let received = 0;
  const server = tls.createServer({ cert: cert.cert, key: cert.key }, (socket) => {
    socket.on("error", () => {});
    socket.on("data", (d: Buffer) => {
      received += d.length;
      onData(socket, d);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as AddressInfo).port, received: () => received };
}

/** An HTTP/1.1 answer to whatever arrives: a small body, or `size` bytes. */
const httpAnswer =
  (size = 2) =>
  (socket: tls.TLSSocket, data: Buffer) => {
    if (!data.includes("\r\n\r\n")) return;
    socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n`);
    socket.end(Buffer.alloc(size, 0x61));
  };

describe("outer SIP/TLS at the phone's clock", () => {
  it("accepts a certificate valid only at the phone's time, 5 years from the OS clock", async () => {
    const { port } = await tlsServer(futureOnly);
    const connect = tlsFlowConnector({ ca: [ca.cert], clock: phoneClock(FUTURE) });
    const flow = await connect({ host: "127.0.0.1", port, serverName: NAME });
    expect(flow.remote).toBe(`127.0.0.1:${port}`);
    flow.close();
  });

  it("refuses a certificate the OS clock calls valid but that is expired at the phone's time", async () => {
    const { port, received } = await tlsServer(now);
    const connect = tlsFlowConnector({ ca: [ca.cert], clock: phoneClock(Date.now() + 60 * DAY) });
    await expect(connect({ host: "127.0.0.1", port, serverName: NAME })).rejects.toMatchObject({
      code: "registrar-cert-time",
    });
    expect(received()).toBe(0);
  });

  it("is clock-invalid when the check fails only on time and the clock is not set", async () => {
    const { port } = await tlsServer(now);
    const connect = tlsFlowConnector({ ca: [ca.cert], clock: phoneClock(Date.now() + 60 * DAY, false) });
    await expect(connect({ host: "127.0.0.1", port, serverName: NAME })).rejects.toMatchObject({
      code: "clock-invalid",
    });
  });

  it("stays strict on trust and names, whatever the clock", async () => {
    const a = await tlsServer(foreign);
    const b = await tlsServer(wrongName);
    const unset = tlsFlowConnector({ ca: [ca.cert], clock: phoneClock(FUTURE, false) });
    await expect(unset({ host: "127.0.0.1", port: a.port, serverName: NAME })).rejects.toMatchObject({
      code: "registrar-cert-untrusted",
    });
    const set = tlsFlowConnector({ ca: [ca.cert], clock: phoneClock(Date.now()) });
    await expect(set({ host: "127.0.0.1", port: b.port, serverName: NAME })).rejects.toMatchObject({
      code: "registrar-cert-name-mismatch",
    });
  });
});

describe("HTTPS at the phone's clock", () => {
  it("accepts a certificate valid only at the phone's time", async () => {
    const { port } = await tlsServer(futureOnly, httpAnswer());
    const client = createHttpsClient({ ca: [ca.cert], clock: phoneClock(FUTURE), timeoutMs: 5000 });
    try {
      const r = await client.request({ method: "GET", url: `https://127.0.0.1:${port}/x` });
      expect(r.status).toBe(200);
    } finally {
      client.close();
    }
  });

  it("refuses a certificate expired at the phone's time, and writes no request byte (the PIN) first", async () => {
    const { port, received } = await tlsServer(now, httpAnswer());
    const client = createHttpsClient({
      ca: [ca.cert],
      clock: phoneClock(Date.now() + 60 * DAY),
      timeoutMs: 5000,
    });
    try {
      await expect(
        client.request({ method: "POST", url: `https://127.0.0.1:${port}/pin`, body: "pin=1234" }),
      ).rejects.toMatchObject({ code: "server-cert-time" });
      expect(received()).toBe(0);
    } finally {
      client.close();
    }
  });

  it("is clock-invalid before the clock is set, and again writes nothing", async () => {
    const { port, received } = await tlsServer(now, httpAnswer());
    const client = createHttpsClient({
      ca: [ca.cert],
      clock: phoneClock(Date.now() + 60 * DAY, false),
      timeoutMs: 5000,
    });
    try {
      await expect(
        client.request({ method: "POST", url: `https://127.0.0.1:${port}/pin`, body: "pin=1234" }),
      ).rejects.toMatchObject({ code: "clock-invalid", display: "Time not set" });
      expect(received()).toBe(0);
    } finally {
      client.close();
    }
  });

  it("stays strict on a foreign CA with the clock unset", async () => {
    const { port, received } = await tlsServer(foreign, httpAnswer());
    const client = createHttpsClient({ ca: [ca.cert], clock: phoneClock(FUTURE, false) });
    try {
      await expect(
        client.request({ method: "GET", url: `https://127.0.0.1:${port}/` }),
      ).rejects.toMatchObject({
        code: "server-cert-untrusted",
      });
      expect(received()).toBe(0);
    } finally {
      client.close();
    }
  });

  it(`bounds a response body at ${MAX_RESPONSE_BYTES} bytes with response-too-large`, async () => {
    const big = await tlsServer(now, httpAnswer(MAX_RESPONSE_BYTES + 1));
    const fits = await tlsServer(now, httpAnswer(MAX_RESPONSE_BYTES));
    const client = createHttpsClient({ ca: [ca.cert], timeoutMs: 5000 });
    try {
      await expect(
        client.request({ method: "GET", url: `https://127.0.0.1:${big.port}/` }),
      ).rejects.toMatchObject({
        code: "response-too-large",
      });
      const ok = await client.request({ method: "GET", url: `https://127.0.0.1:${fits.port}/` });
      expect(ok.body.length).toBe(MAX_RESPONSE_BYTES);
    } finally {
      client.close();
    }
  });
});

// ── the inner TLS-DSK handshake, both engines ─────────────────────────────────────────────────

const cleanup: Array<{ destroy(): void }> = [];
afterEach(() => {
  for (const x of cleanup.splice(0)) x.destroy();
});

async function innerHandshake(innerTls: InnerTls, serverCert: IssuedCert, clock: CertClock): Promise<void> {
  const c: TlsDskClientEngine = createTlsDskEngine(
    { cert: client.cert, key: client.key, ca: [ca.cert], targetname: NAME, innerTls, clock },
    { flightTimeoutMs: 5000 },
  );
  const s = new LabTlsDskServer({ cert: serverCert.cert, key: serverCert.key, ca: [ca.cert] });
  cleanup.push(c, s);
  const hello = await c.start();
  const f1 = await s.step(hello);
  const r1 = await c.step(f1.token);
  if (!("token" in r1)) throw new Error("client finished after flight 1");
  const f2 = await s.step(r1.token);
  const r2 = await c.step(f2.token);
  if (!("done" in r2)) throw new Error("client not done after server flight 2");
}

describe.each([
  ["Node engine (1.2)", "1.2"],
  ["forge engine (1.0)", "1.0"],
] as const)("inner TLS-DSK, %s, at the phone's clock", (_name, innerTls) => {
  it("accepts a server certificate valid only at the phone's time", async () => {
    await expect(innerHandshake(innerTls, futureOnly, phoneClock(FUTURE))).resolves.toBeUndefined();
  });

  it("refuses a server certificate expired at the phone's time", async () => {
    await expect(innerHandshake(innerTls, now, phoneClock(Date.now() + 60 * DAY))).rejects.toMatchObject({
      code: "tls-server-cert-untrusted",
    });
  });

  it("is clock-invalid before the clock is set", async () => {
    await expect(
      innerHandshake(innerTls, now, phoneClock(Date.now() + 60 * DAY, false)),
    ).rejects.toMatchObject({
      code: "clock-invalid",
    });
  });

  it("stays strict on a foreign CA with the clock unset", async () => {
    await expect(innerHandshake(innerTls, foreign, phoneClock(FUTURE, false))).rejects.toMatchObject({
      code: "tls-server-cert-untrusted",
    });
  });
});
