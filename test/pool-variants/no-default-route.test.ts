/**
 * Issue 9 §5, "a link without a default route", on the INFORM core with a fake UDP socket that
 * refuses 255.255.255.255 the way Linux does there (ENETUNREACH): the INFORM goes to the
 * interface's directed broadcast instead, a known server is unicast to, and a send that fails
 * everywhere is reported as `dhcp-send-failed` with the errno at once, not as a "No DHCPACK"
 * timeout. (The same against dnsmasq in network namespaces: test/discovery/peers.test.ts.)
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { decodeDhcp, encodeDhcp } from "../../firmware/discovery/dhcp-codec.ts";
import {
  DhcpSendError,
  directedBroadcast,
  type InformOptions,
  informOnce,
} from "../../firmware/discovery/dhcp-inform.ts";
import { asciiHex, FakePort, hex } from "../discovery/helpers.ts";

const HW = hex("02005e005301");
const LIMITED = { host: "255.255.255.255", port: 67 };
const DIRECTED = { host: "192.0.2.255", port: 67 };
const SIP_120: [number, Uint8Array] = [120, hex(`00 03 ${asciiHex("sba")} 03 ${asciiHex("lab")} 00`)];

const enetunreach = () =>
  Object.assign(new Error("send ENETUNREACH 255.255.255.255:67"), { code: "ENETUNREACH", errno: -101 });

/** A socket on a link with only the connected route: unreachable hosts fail like sendmsg(2) does. */
class NoDefaultRoutePort extends FakePort {
  constructor(
    private readonly unreachable: Set<string>,
    private readonly style: "async" | "sync" = "async",
  ) {
    super();
  }

  override send(bytes: Uint8Array, host: string, port: number): void | Promise<void> {
    super.send(bytes, host, port);
    if (!this.unreachable.has(host)) return Promise.resolve();
    if (this.style === "sync") throw enetunreach();
    return Promise.reject(enetunreach());
  }
}

function ackFor(request: Uint8Array): Uint8Array {
  const req = decodeDhcp(request);
  return encodeDhcp({ ...req, op: 2, options: new Map([[53, Uint8Array.of(5)], SIP_120]) });
}

const flush = () => new Promise((r) => setImmediate(r));

function start(port: FakePort, extra: Partial<InformOptions> = {}) {
  const clock = new ManualClock();
  const run = informOnce({
    clock,
    random: new SeededRandom(3),
    port,
    server: LIMITED,
    fallbackServers: [DIRECTED],
    ciaddr: "192.0.2.20",
    hwAddress: HW,
    timeoutMs: 30_000,
    jitterMs: 0,
    ...extra,
  });
  return { clock, run };
}

describe("DHCPINFORM on a link without a default route", () => {
  for (const style of ["async", "sync"] as const) {
    it(`falls back to the directed broadcast when 255.255.255.255 fails (${style} ENETUNREACH)`, async () => {
      const port = new NoDefaultRoutePort(new Set([LIMITED.host]), style);
      const { clock, run } = start(port);
      await flush();
      expect(port.sent.map((s) => s.host)).toEqual([LIMITED.host, DIRECTED.host]);
      // Retransmissions go straight to the subnet: the limited broadcast is not tried again.
      clock.advance(4_000);
      await flush();
      expect(port.sent.map((s) => s.host)).toEqual([LIMITED.host, DIRECTED.host, DIRECTED.host]);
      port.deliver(ackFor(port.sent[2]!.bytes));
      const r = await run.result;
      expect(r.usable).toBe(true);
      expect(r.info.sipServers).toEqual(["sba.lab"]);
      expect(r.attempts).toBe(2);
    });
  }

  it("also unicasts to a known server, and keeps going if only one of the fallbacks works", async () => {
    const known = { host: "192.0.2.1", port: 67 };
    const port = new NoDefaultRoutePort(new Set([LIMITED.host, DIRECTED.host]));
    const { run } = start(port, { fallbackServers: [DIRECTED, known] });
    await flush();
    expect(port.sent.map((s) => `${s.host}:${s.port}`)).toEqual([
      "255.255.255.255:67",
      "192.0.2.255:67",
      "192.0.2.1:67",
    ]);
    port.deliver(ackFor(port.sent[2]!.bytes), { address: "192.0.2.1", port: 67 });
    await expect(run.result).resolves.toMatchObject({ usable: true, from: "192.0.2.1:67" });
  });

  it("reports a send that fails everywhere as dhcp-send-failed with the errno, at once", async () => {
    const port = new NoDefaultRoutePort(new Set([LIMITED.host, DIRECTED.host]));
    const { clock, run } = start(port);
    const err = await run.result.catch((e: unknown) => e);
    expect(clock.monotonic()).toBe(0); // no waiting for the 30 s timeout
    expect(err).toBeInstanceOf(DhcpSendError);
    expect(err).toMatchObject({
      code: "dhcp-send-failed",
      errno: "ENETUNREACH",
      errors: { "255.255.255.255:67": "ENETUNREACH", "192.0.2.255:67": "ENETUNREACH" },
    });
    expect(String((err as Error).message)).toContain("ENETUNREACH");
    expect(String((err as Error).message)).not.toMatch(/No DHCPACK/);
  });

  it("without fallbacks, the limited broadcast's own errno is the error", async () => {
    const port = new NoDefaultRoutePort(new Set([LIMITED.host]));
    const { run } = start(port, { fallbackServers: [] });
    await expect(run.result).rejects.toMatchObject({ code: "dhcp-send-failed", errno: "ENETUNREACH" });
    expect(port.sent).toHaveLength(1);
  });

  it("when the limited broadcast works, the fallbacks are never used", async () => {
    const port = new NoDefaultRoutePort(new Set());
    const { clock } = start(port);
    await flush();
    clock.advance(4_000);
    await flush();
    expect(port.sent.map((s) => s.host)).toEqual([LIMITED.host, LIMITED.host]);
  });
});

describe("directedBroadcast", () => {
  it("is the subnet's broadcast address; none for /31, /32 or a bad mask", () => {
    expect(directedBroadcast("192.0.2.20", "255.255.255.0")).toBe("192.0.2.255");
    expect(directedBroadcast("10.1.130.7", "255.255.192.0")).toBe("10.1.191.255");
    expect(directedBroadcast("172.16.0.9", "255.255.255.252")).toBe("172.16.0.11");
    expect(directedBroadcast("10.0.0.1", "255.0.0.0")).toBe("10.255.255.255");
    expect(directedBroadcast("192.0.2.20", "255.255.255.254")).toBeUndefined();
    expect(directedBroadcast("192.0.2.20", "255.255.255.255")).toBeUndefined();
    expect(directedBroadcast("192.0.2.20", "255.0.255.0")).toBeUndefined();
    expect(directedBroadcast("fe80::1", "ffff:ffff:ffff:ffff::")).toBeUndefined();
  });
});
