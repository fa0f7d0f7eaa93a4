/**
 * Fuzz: random and mutated DHCP packets (deterministic, SeededRandom). Nothing may be thrown but
 * DiscoveryError; interpretOptions may throw nothing at all.
 */
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import { DiscoveryError, decodeDhcp, encodeDhcp } from "../../firmware/discovery/dhcp-codec.ts";
import { buildInform } from "../../firmware/discovery/dhcp-inform.ts";
import { interpretOptions } from "../../firmware/discovery/dhcp-options.ts";
import { asciiHex, fastBytes, hex, mutate, withoutStacks } from "./helpers.ts";

const N = 100_000;

describe("fuzz: DHCP", () => {
  it(`DHCP: ${N} random and mutated packets throw only DiscoveryError`, () => {
    const random = new SeededRandom(2024);
    const bytes = fastBytes(random);
    const ack = buildInform({ xid: 1, ciaddr: "192.0.2.20", hwAddress: hex("02005e005301") });
    ack.op = 2;
    ack.options = new Map<number, Uint8Array>([
      [53, Uint8Array.of(5)],
      [
        43,
        hex(
          `05 03 ${asciiHex("/cp")} 04 03 ${asciiHex("443")} 03 04 ${asciiHex("a.io")} 02 05 ${asciiHex("https")} ff`,
        ),
      ],
      [120, hex(`00 03 ${asciiHex("sba")} 03 ${asciiHex("lab")} 00 03 ${asciiHex("sip")} c004`)],
      [42, hex("c0000201 c0000202")],
      [2, hex("ffffb9b0")],
      [15, hex(asciiHex("lab.test"))],
      [52, Uint8Array.of(3)],
      [101, hex(asciiHex("Europe/Berlin"))],
    ]);
    const valid = encodeDhcp(ack);
    const header = valid.subarray(0, 240);
    let decoded = 0;
    let rejected = 0;
    const others: unknown[] = [];
    withoutStacks(() => {
      for (let i = 0; i < N; i++) {
        let packet: Uint8Array;
        const kind = i % 4;
        if (kind === 0) packet = bytes(bytes(1)[0]! + 200);
        else if (kind === 1) {
          const body = bytes(bytes(1)[0]! % 120);
          packet = new Uint8Array(240 + body.length);
          packet.set(header);
          packet.set(body, 240);
        } else packet = mutate(valid, bytes);
        try {
          const m = decodeDhcp(packet);
          decoded++;
          const info = interpretOptions(m.options);
          if (!Array.isArray(info.problems)) others.push("no problems list");
        } catch (err) {
          if (err instanceof DiscoveryError) rejected++;
          else others.push(err);
        }
      }
    });
    expect(others).toEqual([]);
    expect(decoded + rejected).toBe(N);
    expect(decoded).toBeGreaterThan(N / 20);
  });
});
