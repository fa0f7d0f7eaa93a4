/**
 * TLS-DSK inner-handshake engines (forge TLS 1.0, Node TLS 1.2/auto) against the lab registrar's
 * server engine, all in memory, plus the record helpers they rely on.
 */
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { AuthError } from "../firmware/core/errors.ts";
import { SeededRandom } from "../firmware/core/random.ts";
import { createTlsDskEngine } from "../firmware/platform/tls-dsk-engines.ts";
import type { InnerTls, TlsDskClientEngine, TlsDskHandshakeResult } from "../firmware/sip/tls-dsk/engine.ts";
import {
  alertInFlight,
  certificatesFromFlight,
  clientRandomFromHello,
  coalesceHandshakeRecords,
  encodeRecord,
  flightComplete,
  handshakeMessages,
  parseRecords,
  serverRandomFromFlight,
} from "../firmware/sip/tls-dsk/records.ts";
import { serverNeedsTls10 } from "../firmware/sip/tls-dsk/version-fallback.ts";
import { type IssuedCert, LabCa } from "./lab/ca.ts";
import { LabTlsDskServer, type TlsDskServerOptions } from "./lab/tls-dsk-server-engine.ts";

const TARGET = "pool.lab.test";

let ca: LabCa;
let otherCa: LabCa;
let srv: IssuedCert;
let cli: IssuedCert;
let foreignCli: IssuedCert;
let wrongNameSrv: IssuedCert;
let foreignSrv: IssuedCert;

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([LabCa.create(), LabCa.create("Some Other Root")]);
  [srv, cli, foreignCli, wrongNameSrv, foreignSrv] = await Promise.all([
    ca.issueServer(TARGET, []),
    ca.issueClient("alice@lab.test"),
    otherCa.issueClient("mallory@lab.test"),
    ca.issueServer("other.lab.test", []),
    otherCa.issueServer(TARGET, []),
  ]);
});

const cleanup: Array<{ destroy(): void }> = [];
afterEach(() => {
  for (const x of cleanup.splice(0)) x.destroy();
});

function client(
  innerTls: InnerTls,
  over: { cert?: IssuedCert; targetname?: string; timeoutMs?: number } = {},
) {
  const c = over.cert ?? cli;
  const engine = createTlsDskEngine(
    { cert: c.cert, key: c.key, ca: [ca.cert], targetname: over.targetname ?? TARGET, innerTls },
    { flightTimeoutMs: over.timeoutMs ?? 5000 },
  );
  cleanup.push(engine);
  return engine;
}

function server(over: Partial<TlsDskServerOptions> & { srvCert?: IssuedCert } = {}) {
  const s = over.srvCert ?? srv;
  const engine = new LabTlsDskServer({ cert: s.cert, key: s.key, ca: [ca.cert], ...over });
  cleanup.push(engine);
  return engine;
}

interface Transcript {
  hello: Buffer;
  flight1: Buffer;
  flight2: Buffer;
  serverFlight2: Buffer;
  client: TlsDskHandshakeResult;
  server: TlsDskHandshakeResult;
}

async function handshake(c: TlsDskClientEngine, s: LabTlsDskServer): Promise<Transcript> {
  const hello = await c.start();
  const f1 = await s.step(hello);
  const r1 = await c.step(f1.token);
  if (!("token" in r1)) throw new Error("client finished after flight 1");
  const f2 = await s.step(r1.token);
  if (!f2.done) throw new Error("server not done after client flight 2");
  const r2 = await c.step(f2.token);
  if (!("done" in r2)) throw new Error("client not done after server flight 2");
  return {
    hello,
    flight1: f1.token,
    flight2: r1.token,
    serverFlight2: f2.token,
    client: r2.done,
    server: f2.done,
  };
}

function pemBody(pem: string): string {
  return pem.replace(/-----[^-]+-----|\s/g, "");
}

async function expectAuthError(p: Promise<unknown>, code: string): Promise<AuthError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  expect((err as AuthError).code).toBe(code);
  return err as AuthError;
}

describe("TLS-DSK client engines against the lab server engine", () => {
  it.each([
    ["1.2", "TLSv1.2"],
    ["1.0", "TLSv1"],
    ["auto", "TLSv1.2"],
  ] as const)(
    "innerTls %s negotiates %s; both sides derive the same 128-byte key material",
    async (inner, version) => {
      const t = await handshake(client(inner), server());
      expect(t.client.version).toBe(version);
      expect(t.server.version).toBe(version);
      expect(t.client.cipher).toBe(t.server.cipher);
      expect(t.client.keyMaterial).toHaveLength(128);
      expect(t.client.keyMaterial.equals(t.server.keyMaterial)).toBe(true);
      expect(pemBody(t.client.peerCertificatePem)).toBe(pemBody(srv.cert));
      expect(pemBody(t.server.peerCertificatePem)).toBe(pemBody(cli.cert));
      // Schannel layout: server flight 1 is a single handshake record.
      const recs = parseRecords(t.flight1);
      expect(recs).toHaveLength(1);
      expect(recs[0]?.type).toBe(22);
      const types = handshakeMessages(t.flight1).map((m) => m.type);
      // ServerHello, Certificate, [ServerKeyExchange for ECDHE], CertificateRequest, ServerHelloDone
      expect(types.filter((x) => x !== 12)).toEqual([2, 11, 13, 14]);
      expect(flightComplete(t.hello, "client")).toBe(true);
    },
  );

  it("innerTls 1.0 sends a pidgin-sipe-like hello: 0x0301, empty session id, AES-CBC-SHA only, no extensions", async () => {
    const hello = await client("1.0").start();
    const [msg] = handshakeMessages(hello);
    expect(msg?.type).toBe(1);
    const body = msg?.body as Buffer;
    expect(body.readUInt16BE(0)).toBe(0x0301);
    expect(body[34]).toBe(0); // session id length
    const suitesLen = body.readUInt16BE(35);
    expect(body.subarray(37, 37 + suitesLen).toString("hex")).toBe("002f0035");
    const compLen = body[37 + suitesLen] as number;
    expect(body.length).toBe(37 + suitesLen + 1 + compLen); // nothing after compression methods
  });

  it("auto against a server limited to TLS 1.0: server flight 1 calls for the 1.0 profile, which negotiates TLS 1.0", async () => {
    // "auto" never offers TLS 1.0 with @SECLEVEL=0 in a 1.2-capable hello: the registration sees
    // the server's version in flight 1 and starts a fresh handshake with the 1.0 profile.
    const f1 = await server({ minVersion: "TLSv1", maxVersion: "TLSv1" }).step(await client("auto").start());
    expect(serverNeedsTls10(f1.token)).toBe(true);
    const t = await handshake(client("1.0"), server({ minVersion: "TLSv1", maxVersion: "TLSv1" }));
    expect(t.client.version).toBe("TLSv1");
    expect(t.client.keyMaterial.equals(t.server.keyMaterial)).toBe(true);
  });

  it("auto against a TLS 1.2 server: no fall-back is called for", async () => {
    const f1 = await server().step(await client("auto").start());
    expect(serverNeedsTls10(f1.token)).toBe(false);
  });

  it("1.2 against a server limited to TLS 1.0 fails with tls-handshake-failed", async () => {
    const c = client("1.2");
    const s = server({ maxVersion: "TLSv1" });
    const f1 = await s.step(await c.start());
    await expectAuthError(c.step(f1.token), "tls-handshake-failed");
  });

  it.each(["1.0", "1.2"] as const)(
    "%s: a client certificate from another CA → server client-cert-untrusted",
    async (inner) => {
      const c = client(inner, { cert: foreignCli });
      const s = server();
      const f1 = await s.step(await c.start());
      const r1 = await c.step(f1.token);
      if (!("token" in r1)) throw new Error("unexpected done");
      await expectAuthError(s.step(r1.token), "client-cert-untrusted");
    },
  );

  it.each(["1.0", "1.2", "auto"] as const)(
    "%s: server certificate for another name → tls-server-name-mismatch, before client flight 2",
    async (inner) => {
      const c = client(inner);
      const f1 = await server({ srvCert: wrongNameSrv }).step(await c.start());
      await expectAuthError(c.step(f1.token), "tls-server-name-mismatch");
    },
  );

  it.each(["1.0", "1.2", "auto"] as const)(
    "%s: server certificate from another CA → tls-server-cert-untrusted, before client flight 2",
    async (inner) => {
      const c = client(inner);
      const f1 = await server({ srvCert: foreignSrv }).step(await c.start());
      await expectAuthError(c.step(f1.token), "tls-server-cert-untrusted");
    },
  );

  it.each(["1.0", "1.2"] as const)("%s: garbage tokens give typed errors", async (inner) => {
    const c = client(inner);
    await c.start();
    await expectAuthError(c.step(Buffer.from("this is not TLS at all")), "tls-record-malformed");

    // Well-formed records, nonsense handshake content.
    const c2 = client(inner);
    await c2.start();
    const junk = encodeRecord(22, 0x0301, Buffer.from("0200000401020304deadbeef", "hex"));
    const e = await c2.step(junk).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(AuthError);
    expect(["tls-handshake-failed", "tls-record-malformed"]).toContain((e as AuthError).code);

    // A fatal alert from the server.
    const c3 = client(inner);
    await c3.start();
    await expectAuthError(c3.step(encodeRecord(21, 0x0301, Buffer.from([2, 40]))), "tls-handshake-failed");

    await expectAuthError(server().step(Buffer.from([1, 2, 3])), "tls-record-malformed");
  });

  it.each(["1.0", "1.2"] as const)(
    "%s: an incomplete flight times out with tls-handshake-timeout",
    async (inner) => {
      const c = client(inner, { timeoutMs: 300 });
      const f1 = await server({ coalesce: false }).step(await c.start());
      const first = parseRecords(f1.token)[0];
      if (!first) throw new Error("no record");
      const t0 = Date.now();
      await expectAuthError(
        c.step(encodeRecord(first.type, first.version, first.fragment)),
        "tls-handshake-timeout",
      );
      expect(Date.now() - t0).toBeLessThan(3000);
    },
  );

  it.each(["1.0", "1.2"] as const)("%s: destroy is idempotent and later calls reject", async (inner) => {
    const c = client(inner);
    const hello = await c.start();
    c.destroy();
    c.destroy();
    await expectAuthError(c.step(hello), "tls-handshake-failed");
  });
});

describe("records.ts", () => {
  let flights: { hello: Buffer; flight1: Buffer; flight2: Buffer; serverFlight2: Buffer }[];

  beforeAll(async () => {
    // Uncoalesced server flights (one record per message) and both client engines' layouts.
    const a = await handshake(client("1.0"), server({ coalesce: false }));
    const b = await handshake(client("1.2"), server({ coalesce: false }));
    flights = [a, b];
  });

  it("detects flight completion at exactly the last byte, over every split point", () => {
    for (const f of flights) {
      for (const [bytes, side] of [
        [f.hello, "client"],
        [f.flight1, "server"],
        [f.flight2, "client"],
        [f.serverFlight2, "server"],
      ] as const) {
        for (let i = 0; i < bytes.length; i++) expect(flightComplete(bytes.subarray(0, i), side)).toBe(false);
        expect(flightComplete(bytes, side)).toBe(true);
      }
    }
  });

  it("an alert record completes a flight; a ServerHello alone does not", () => {
    expect(flightComplete(encodeRecord(21, 0x0303, Buffer.from([2, 48])), "server")).toBe(true);
    const f1 = flights[0]?.flight1 as Buffer;
    const firstRecord = encodeRecord(22, 0x0301, parseRecords(f1)[0]?.fragment as Buffer);
    expect(flightComplete(firstRecord, "server")).toBe(false);
    expect(alertInFlight(encodeRecord(21, 0x0301, Buffer.from([2, 42])))).toEqual({
      level: 2,
      description: 42,
    });
    expect(alertInFlight(f1)).toBeNull();
  });

  it("coalesces a multi-record server flight 1 into one record with the same handshake bytes", () => {
    for (const f of flights) {
      expect(parseRecords(f.flight1).length).toBeGreaterThan(1);
      const merged = coalesceHandshakeRecords(f.flight1);
      expect(parseRecords(merged)).toHaveLength(1);
      expect(handshakeMessages(merged)).toEqual(handshakeMessages(f.flight1));
      expect(coalesceHandshakeRecords(merged).equals(merged)).toBe(true);
      expect(serverRandomFromFlight(merged).equals(serverRandomFromFlight(f.flight1))).toBe(true);
    }
  });

  it("never merges past ChangeCipherSpec, splits at 16384 bytes, keeps record versions apart", () => {
    const ccsFlight = Buffer.concat([
      encodeRecord(22, 0x0303, Buffer.from("04000002abcd", "hex")),
      encodeRecord(20, 0x0303, Buffer.from([1])),
      encodeRecord(22, 0x0303, Buffer.alloc(40, 7)),
    ]);
    expect(coalesceHandshakeRecords(ccsFlight).equals(ccsFlight)).toBe(true);

    const big = Buffer.alloc(30000, 0x5a);
    const chunks = [big.subarray(0, 10000), big.subarray(10000, 20000), big.subarray(20000)];
    const split = coalesceHandshakeRecords(Buffer.concat(chunks.map((c) => encodeRecord(22, 0x0301, c))));
    const recs = parseRecords(split);
    expect(recs.map((r) => r.fragment.length)).toEqual([16384, 30000 - 16384]);
    expect(Buffer.concat(recs.map((r) => r.fragment)).equals(big)).toBe(true);

    const mixed = Buffer.concat([
      encodeRecord(22, 0x0301, Buffer.from([1])),
      encodeRecord(22, 0x0303, Buffer.from([2])),
      encodeRecord(22, 0x0303, Buffer.from([3])),
    ]);
    expect(parseRecords(coalesceHandshakeRecords(mixed)).map((r) => [r.version, r.fragment.length])).toEqual([
      [0x0301, 1],
      [0x0303, 2],
    ]);
  });

  it("reads the client random of Vector A's ClientHello and the server random of a flight", () => {
    const hello = Buffer.from(
      "FgMBADUBAAAxAwFrCxE2WOsa7I9bu+MYfG9+XU5F9oRF9FtGFobV6bubUAAACgAEAAUALwA1AAMBAA==",
      "base64",
    );
    expect(clientRandomFromHello(hello).toString("hex").toUpperCase()).toBe(
      "6B0B113658EB1AEC8F5BBBE3187C6F7E5D4E45F68445F45B461686D5E9BB9B50",
    );
    expect(flightComplete(hello, "client")).toBe(true);
    const f = flights[0] as (typeof flights)[number];
    expect(serverRandomFromFlight(f.flight1)).toHaveLength(32);
    const chain = certificatesFromFlight(f.flight1);
    expect(chain.length).toBeGreaterThanOrEqual(1);
    expect(chain[0]?.toString("base64")).toBe(pemBody(srv.cert));
    expect(() => serverRandomFromFlight(hello)).toThrow(AuthError);
  });

  it.each([
    ["bad content type", Buffer.from("1903010001ff", "hex")],
    ["bad major version", Buffer.from("1604010001ff", "hex")],
    ["oversized record", Buffer.from("160301ffff", "hex")],
    ["truncated record", Buffer.from("16030100050102", "hex")],
    ["empty token", Buffer.alloc(0)],
  ])("rejects malformed input (%s) with tls-record-malformed", (_name, bytes) => {
    const fns = [
      () => parseRecords(bytes),
      () => coalesceHandshakeRecords(bytes),
      () => serverRandomFromFlight(bytes),
      () => clientRandomFromHello(bytes),
    ];
    for (const fn of fns) {
      try {
        fn();
        expect.unreachable("should have thrown");
      } catch (err) {
        expect(err).toBeInstanceOf(AuthError);
        expect((err as AuthError).code).toBe("tls-record-malformed");
      }
    }
  });

  it("seeded fuzz: 20 000 mutated flights throw nothing but AuthError", () => {
    const rnd = new SeededRandom(0x7d5c);
    const seeds = flights.flatMap((f) => [
      f.hello,
      f.flight1,
      f.flight2,
      f.serverFlight2,
      coalesceHandshakeRecords(f.flight1),
    ]);
    const int = (n: number): number => Math.floor(rnd.unit() * n);
    let thrown = 0;
    for (let i = 0; i < 20_000; i++) {
      let b = Buffer.from(seeds[int(seeds.length)] as Buffer);
      const ops = 1 + int(4);
      for (let k = 0; k < ops; k++) {
        switch (int(5)) {
          case 0: // flip bytes, biased toward record/handshake headers
            for (let j = 0; j < 1 + int(4); j++) {
              const at = rnd.unit() < 0.5 ? int(Math.min(b.length, 16)) : int(b.length);
              if (b.length > 0) b[at] = int(256);
            }
            break;
          case 1:
            b = b.subarray(0, int(b.length + 1));
            break;
          case 2:
            b = Buffer.concat([b, Buffer.from(rnd.bytes(int(40)))]);
            break;
          case 3: {
            const at = int(b.length + 1);
            b = Buffer.concat([b.subarray(0, at), Buffer.from(rnd.bytes(int(8))), b.subarray(at)]);
            break;
          }
          default: {
            const at = int(b.length + 1);
            b = Buffer.concat([b.subarray(at), b.subarray(0, at)]);
          }
        }
      }
      for (const fn of [
        () => flightComplete(b, "client"),
        () => flightComplete(b, "server"),
        () => coalesceHandshakeRecords(b),
        () => serverRandomFromFlight(b),
        () => clientRandomFromHello(b),
        () => certificatesFromFlight(b),
        () => handshakeMessages(b),
      ]) {
        try {
          fn();
        } catch (err) {
          thrown++;
          if (!(err instanceof AuthError) || err.code !== "tls-record-malformed") throw err;
        }
      }
    }
    expect(thrown).toBeGreaterThan(1000);
  });
});
