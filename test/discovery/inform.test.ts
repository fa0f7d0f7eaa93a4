/** The DHCPINFORM client core on a ManualClock and an in-memory port: timers, xid matching, winners. */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { decodeDhcp, encodeDhcp } from "../../firmware/discovery/dhcp-codec.ts";
import { informOnce, informRetransmitDelay } from "../../firmware/discovery/dhcp-inform.ts";
import { asciiHex, FakePort, hex } from "./helpers.ts";

const HW = hex("02005e005301");
const SERVER = { host: "255.255.255.255", port: 67 };

function ack(
  request: Uint8Array,
  options: Array<[number, Uint8Array]>,
  tweak: { xid?: number } = {},
): Uint8Array {
  const req = decodeDhcp(request);
  return encodeDhcp({
    ...req,
    op: 2,
    xid: tweak.xid ?? req.xid,
    options: new Map<number, Uint8Array>([[53, Uint8Array.of(5)], ...options]),
  });
}

const SIP_120: [number, Uint8Array] = [120, hex(`00 03 ${asciiHex("sba")} 03 ${asciiHex("lab")} 00`)];
const NTP_42: [number, Uint8Array] = [42, hex("c0000201")];

function setup(timeoutMs = 60_000) {
  const clock = new ManualClock();
  const port = new FakePort();
  const run = informOnce({
    clock,
    random: new SeededRandom(7),
    port,
    server: SERVER,
    ciaddr: "192.0.2.20",
    hwAddress: HW,
    timeoutMs,
    jitterMs: 0,
  });
  return { clock, port, run };
}

describe("DHCPINFORM retransmission (RFC 2131 §4.1)", () => {
  it("sends at 0, 4, 12, 28, 60 s: delays 4 s, 8 s, 16 s, 32 s…, capped at 64 s", () => {
    const { clock, port, run } = setup(200_000);
    const at: number[] = [];
    const seen = () => {
      while (at.length < port.sent.length) at.push(clock.monotonic());
    };
    seen();
    for (let t = 0; t < 190_000; t += 500) {
      clock.advance(500);
      seen();
    }
    expect(at.slice(0, 6)).toEqual([0, 4000, 12000, 28000, 60000, 124000]);
    expect(at[6]).toBe(188000); // 64 s cap
    expect(new Set(port.sent.map((s) => decodeDhcp(s.bytes).xid)).size).toBe(1);
    expect(decodeDhcp(port.sent[3]!.bytes).secs).toBe(28);
    run.cancel();
    void run.result.catch(() => {});
  });

  it("jitters each delay by at most ±1 s by default", () => {
    const r = new SeededRandom(1);
    for (let n = 0; n < 200; n++) {
      const d = informRetransmitDelay(n % 6, r);
      const base = Math.min(64_000, 4000 * 2 ** (n % 6));
      expect(Math.abs(d - base)).toBeLessThanOrEqual(1000);
    }
  });

  it("stops retransmitting once answered and leaves no timers behind", async () => {
    const { clock, port, run } = setup();
    clock.advance(4000);
    port.deliver(ack(port.sent[1]!.bytes, [SIP_120]));
    const r = await run.result;
    expect(r.info.sipServers).toEqual(["sba.lab"]);
    expect(r.attempts).toBe(2);
    expect(clock.pendingTimers()).toBe(0);
    clock.advance(100_000);
    expect(port.sent).toHaveLength(2);
  });

  it("times out with dhcp-timeout when nobody answers", async () => {
    const { clock, run } = setup(10_000);
    clock.advance(10_000);
    await expect(run.result).rejects.toMatchObject({ code: "dhcp-timeout" });
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("DHCPINFORM answers", () => {
  it("ignores other xids, other chaddrs, non-ACKs and garbage", async () => {
    const { port, run, clock } = setup();
    const req = port.sent[0]!.bytes;
    port.deliver(ack(req, [SIP_120], { xid: 1 }));
    port.deliver(new Uint8Array(50));
    const nak = decodeDhcp(ack(req, [SIP_120]));
    nak.options.set(53, Uint8Array.of(6));
    port.deliver(encodeDhcp(nak));
    const otherHw = decodeDhcp(ack(req, [SIP_120]));
    otherHw.chaddr = hex("02005e005302");
    port.deliver(encodeDhcp(otherHw));
    clock.advance(1);
    port.deliver(ack(req, [[120, hex(`00 01 ${asciiHex("x")} 00`)]]));
    expect((await run.result).info.sipServers).toEqual(["x"]);
  });

  it("the first answer with an FQDN or URL wins; an answer without is kept only as a fallback", async () => {
    const { port, run } = setup();
    const req = port.sent[0]!.bytes;
    port.deliver(ack(req, [NTP_42]), { address: "192.0.2.9", port: 67 });
    port.deliver(ack(req, [SIP_120]), { address: "192.0.2.1", port: 67 });
    port.deliver(ack(req, [[120, hex(`00 01 ${asciiHex("y")} 00`)]]), { address: "192.0.2.2", port: 67 });
    const r = await run.result;
    expect(r.from).toBe("192.0.2.1:67");
    expect(r.usable).toBe(true);
    expect(r.ignored).toBe(1);
  });

  it("falls back to the best answer without an FQDN when time runs out", async () => {
    const { port, run, clock } = setup(10_000);
    port.deliver(ack(port.sent[0]!.bytes, [NTP_42]));
    clock.advance(10_000);
    const r = await run.result;
    expect(r.usable).toBe(false);
    expect(r.info.ntpServers).toEqual(["192.0.2.1"]);
  });
});
