/**
 * Fuzz: random and mutated SNTP packets (deterministic, SeededRandom). Nothing may be thrown but
 * DiscoveryError.
 */
import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import { DiscoveryError } from "../../firmware/discovery/dhcp-codec.ts";
import { buildSntpRequest, parseSntpReply, unixMsToNtp } from "../../firmware/discovery/sntp.ts";
import { fastBytes, mutate, withoutStacks } from "./helpers.ts";

const N = 100_000;

describe("fuzz: SNTP", () => {
  it(`SNTP: ${N} random and mutated replies throw only DiscoveryError`, () => {
    const random = new SeededRandom(4330);
    const bytes = fastBytes(random);
    const now = Date.UTC(2026, 0, 1);
    const req = buildSntpRequest(now, random);
    const good = new Uint8Array(48);
    good[0] = 0x24;
    good[1] = 2;
    good.set(req.bytes.subarray(40, 48), 24);
    const t = unixMsToNtp(now + 10);
    const dv = new DataView(good.buffer);
    dv.setUint32(32, t.seconds);
    dv.setUint32(40, t.seconds);
    dv.setUint32(44, t.fraction);
    let ok = 0;
    let kod = 0;
    const others: unknown[] = [];
    withoutStacks(() => {
      for (let i = 0; i < N; i++) {
        let packet: Uint8Array;
        if (i % 3 === 0) {
          packet = bytes(48 + (bytes(1)[0]! % 24));
          if (i % 6 === 0) packet.set(req.bytes.subarray(40, 48), 24); // get past the originate check
        } else packet = mutate(good, bytes);
        try {
          const r = parseSntpReply(packet, req, now + 20);
          if (r.kind === "ok") {
            ok++;
            if (!Number.isFinite(r.offsetMs) || !Number.isFinite(r.delayMs)) others.push("non-finite");
          } else kod++;
        } catch (err) {
          if (!(err instanceof DiscoveryError)) others.push(err);
        }
      }
    });
    expect(others).toEqual([]);
    expect(ok).toBeGreaterThan(1000);
    expect(kod).toBeGreaterThan(0);
  });
});
