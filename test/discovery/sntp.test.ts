import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { DiscoveryError } from "../../firmware/discovery/dhcp-codec.ts";
import {
  buildSntpRequest,
  NTP_UNIX_OFFSET_S,
  ntpToUnixMs,
  parseSntpReply,
  querySntp,
  SntpKissError,
  type SntpRequest,
  unixMsToNtp,
} from "../../firmware/discovery/sntp.ts";
import { FakePort, toHex } from "./helpers.ts";

const T0 = Date.UTC(2026, 0, 1);

function reply(
  req: SntpRequest,
  o: {
    t2: number;
    t3: number;
    mode?: number;
    version?: number;
    stratum?: number;
    leap?: number;
    refId?: string;
  },
): Uint8Array {
  const b = Buffer.alloc(48);
  b[0] = ((o.leap ?? 0) << 6) | ((o.version ?? 4) << 3) | (o.mode ?? 4);
  b[1] = o.stratum ?? 2;
  if (o.refId) Buffer.from(o.refId, "latin1").copy(b, 12);
  b.writeUInt32BE(req.transmit.seconds, 24);
  b.writeUInt32BE(req.transmit.fraction, 28);
  const w = (at: number, ms: number) => {
    const t = unixMsToNtp(ms);
    b.writeUInt32BE(t.seconds, at);
    b.writeUInt32BE(t.fraction, at + 4);
  };
  w(32, o.t2);
  w(40, o.t3);
  return new Uint8Array(b);
}

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DiscoveryError);
    return (err as DiscoveryError).code;
  }
  return "no error";
}

describe("SNTP (RFC 4330)", () => {
  it("builds a 48-byte v4 client request carrying clock time", () => {
    const req = buildSntpRequest(T0);
    expect(req.bytes.length).toBe(48);
    expect(req.bytes[0]).toBe(0x23); // LI 0, VN 4, mode 3
    expect(toHex(req.bytes.subarray(40, 48))).toBe(
      `${(Math.floor(T0 / 1000) + NTP_UNIX_OFFSET_S).toString(16)}00000000`,
    );
    expect(
      req.bytes
        .subarray(0, 40)
        .slice(1)
        .every((x) => x === 0),
    ).toBe(true);
  });

  it("computes offset and delay: ((T2−T1)+(T3−T4))/2 and (T4−T1)−(T3−T2)", () => {
    const req = buildSntpRequest(T0);
    // server is 5 s ahead; 20 ms out, 2 ms processing, 30 ms back
    const out = parseSntpReply(reply(req, { t2: T0 + 5020, t3: T0 + 5022 }), req, T0 + 52);
    expect(out.kind).toBe("ok");
    if (out.kind !== "ok") return;
    expect(out.offsetMs).toBeCloseTo(4995, 3);
    expect(out.delayMs).toBeCloseTo(50, 3);
    expect(out.stratum).toBe(2);
  });

  it("randomises only the low 16 bits of the transmit fraction", () => {
    const req = buildSntpRequest(T0 + 500, new SeededRandom(3));
    expect(req.transmit.fraction >>> 16).toBe(0x8000);
    expect(Math.abs(req.t1Ms - (T0 + 500))).toBeLessThan(0.02);
  });

  it.each([
    ["wrong mode (3, a client)", { mode: 3 }, "sntp-mode"],
    ["wrong mode (5, broadcast)", { mode: 5 }, "sntp-mode"],
    ["version 2", { version: 2 }, "sntp-version"],
    ["version 5", { version: 5 }, "sntp-version"],
    ["LI 3 (unsynchronised)", { leap: 3 }, "sntp-unsynchronized"],
    ["stratum 16", { stratum: 16 }, "sntp-stratum"],
  ])("rejects %s", (_n, o, expected) => {
    const req = buildSntpRequest(T0);
    expect(code(() => parseSntpReply(reply(req, { t2: T0, t3: T0, ...o }), req, T0))).toBe(expected);
  });

  it("rejects a mismatched originate timestamp", () => {
    const req = buildSntpRequest(T0);
    const other = buildSntpRequest(T0 + 1);
    expect(code(() => parseSntpReply(reply(other, { t2: T0, t3: T0 }), req, T0))).toBe("sntp-originate");
  });

  it("rejects a zero transmit timestamp and a short packet", () => {
    const req = buildSntpRequest(T0);
    const r = reply(req, { t2: T0, t3: T0 });
    r.fill(0, 40, 48);
    expect(code(() => parseSntpReply(r, req, T0))).toBe("sntp-zero-transmit");
    expect(code(() => parseSntpReply(r.subarray(0, 47), req, T0))).toBe("sntp-malformed");
  });

  it("returns a kod outcome with the code for stratum 0", () => {
    const req = buildSntpRequest(T0);
    expect(parseSntpReply(reply(req, { t2: 0, t3: 0, stratum: 0, refId: "RATE" }), req, T0)).toEqual({
      kind: "kod",
      code: "RATE",
    });
    const spoof = buildSntpRequest(T0 + 9);
    expect(
      code(() => parseSntpReply(reply(spoof, { t2: 0, t3: 0, stratum: 0, refId: "DENY" }), req, T0)),
    ).toBe("sntp-originate");
  });

  describe("eras (RFC 4330 §3 pivot)", () => {
    const ERA1 = Date.UTC(2036, 1, 7, 6, 28, 16);

    it("seconds with the top bit set are 1968–2036, clear are 2036–2104", () => {
      expect(ntpToUnixMs({ seconds: NTP_UNIX_OFFSET_S, fraction: 0 })).toBe(0);
      expect(ntpToUnixMs({ seconds: 0, fraction: 0 })).toBe(ERA1);
      expect(ntpToUnixMs({ seconds: 0xffffffff, fraction: 0 })).toBe(ERA1 - 1000);
      expect(ntpToUnixMs({ seconds: 0x80000000, fraction: 0 })).toBe(Date.UTC(1968, 0, 20, 3, 14, 8));
      expect(ntpToUnixMs({ seconds: 0x7fffffff, fraction: 0x80000000 })).toBe(
        Date.UTC(2104, 1, 26, 9, 42, 23, 500),
      );
    });

    it("round-trips 2040 through the 32-bit field", () => {
      const t = Date.UTC(2040, 5, 1, 12, 0, 0, 250);
      const n = unixMsToNtp(t);
      expect(n.seconds).toBeLessThan(0x80000000);
      expect(ntpToUnixMs(n)).toBeCloseTo(t, 3);
    });

    it("measures across the 2036 rollover: client in era 0, server in era 1", () => {
      const client = ERA1 - 500;
      const req = buildSntpRequest(client);
      expect(req.transmit.seconds).toBe(0xffffffff);
      const out = parseSntpReply(reply(req, { t2: ERA1 + 1500, t3: ERA1 + 1500 }), req, client);
      expect(out.kind === "ok" && Math.round(out.offsetMs)).toBe(2000);
    });

    it("a Pi that boots at 1970 still gets a 2026 server right", () => {
      const req = buildSntpRequest(0);
      const out = parseSntpReply(reply(req, { t2: T0, t3: T0 }), req, 0);
      expect(out.kind === "ok" && out.offsetMs).toBe(T0);
    });
  });

  describe("querySntp over a port", () => {
    it("retries on the clock, ignores junk and stale replies, and resolves", async () => {
      const clock = new ManualClock(T0);
      const port = new FakePort();
      const p = querySntp({
        clock,
        random: new SeededRandom(1),
        port,
        server: { host: "192.0.2.1", port: 123 },
      });
      expect(port.sent).toHaveLength(1);
      clock.advance(2000);
      expect(port.sent).toHaveLength(2);
      port.deliver(new Uint8Array(10));
      const sent = port.sent[1]!.bytes;
      const req: SntpRequest = {
        bytes: sent,
        transmit: {
          seconds: Buffer.from(sent).readUInt32BE(40),
          fraction: Buffer.from(sent).readUInt32BE(44),
        },
        t1Ms: clock.now(),
      };
      port.deliver(reply(req, { t2: clock.now() + 100, t3: clock.now() + 100 }));
      const r = await p;
      expect(Math.round(r.offsetMs)).toBe(100);
      expect(r.server).toBe("192.0.2.1:123");
    });

    it("turns a Kiss-o'-Death into SntpKissError, and silence into sntp-timeout", async () => {
      const clock = new ManualClock(T0);
      const port = new FakePort();
      const p = querySntp({ clock, random: new SeededRandom(1), port, server: { host: "h", port: 1 } });
      const sent = Buffer.from(port.sent[0]!.bytes);
      const req = {
        bytes: port.sent[0]!.bytes,
        transmit: { seconds: sent.readUInt32BE(40), fraction: sent.readUInt32BE(44) },
        t1Ms: T0,
      };
      port.deliver(reply(req, { t2: 0, t3: 0, stratum: 0, refId: "DENY" }));
      await expect(p).rejects.toBeInstanceOf(SntpKissError);
      await expect(p).rejects.toMatchObject({ code: "sntp-kod", kodCode: "DENY" });

      const q = querySntp({
        clock,
        random: new SeededRandom(1),
        port: new FakePort(),
        server: { host: "h", port: 1 },
        tries: 3,
      });
      clock.advance(6000);
      await expect(q).rejects.toMatchObject({ code: "sntp-timeout" });
    });
  });
});
