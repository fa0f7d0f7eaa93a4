import { describe, expect, it } from "vitest";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  encodeRtp,
  parseRtp,
  type RtpPacket,
  type RtpParseResult,
  RtpSender,
  seqDiff,
  tsDiff,
} from "../../firmware/media/rtp.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const bytes = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));

function parsed(r: RtpParseResult): RtpPacket {
  if (!r.ok) throw new Error(`expected a packet, got ${r.error}: ${r.detail}`);
  return r.packet;
}

describe("RTP header codec (RFC 3550 §5.1)", () => {
  it("encodes the fixed header bit for bit", () => {
    const b = encodeRtp({
      payloadType: 0,
      sequenceNumber: 0x1234,
      timestamp: 0xdeadbeef,
      ssrc: 0x01020304,
      payload: Uint8Array.of(0xff, 0xfe, 0x7f),
    });
    expect(hex(b)).toBe("80001234deadbeef01020304fffe7f");
  });

  it("puts the marker bit above the payload type", () => {
    const b = encodeRtp({
      marker: true,
      payloadType: 101,
      sequenceNumber: 0,
      timestamp: 0,
      ssrc: 0,
      payload: new Uint8Array(),
    });
    expect(b[1]).toBe(0xe5); // 0x80 | 101
    const p = parsed(parseRtp(b));
    expect(p.marker).toBe(true);
    expect(p.payloadType).toBe(101);
  });

  it("reads a hand-made packet with CSRCs, a skipped extension and padding", () => {
    // V=2 P=1 X=1 CC=2 | M=0 PT=8 | seq 0xfffe | ts 160 | ssrc 0xcafebabe
    // CSRC 0x11111111, 0x22222222 | ext profile 0xbede, 1 word: 0x10 0xaa 0x00 0x00
    // payload d5 d5 | padding 00 00 03
    const b = bytes(`b2 08 fffe 000000a0 cafebabe 11111111 22222222 bede0001 10aa0000 d5d5 000003`);
    const p = parsed(parseRtp(b));
    expect(p.payloadType).toBe(8);
    expect(p.sequenceNumber).toBe(0xfffe);
    expect(p.timestamp).toBe(160);
    expect(p.ssrc).toBe(0xcafebabe);
    expect(p.csrcs).toEqual([0x11111111, 0x22222222]);
    expect(p.extension?.profile).toBe(0xbede);
    expect(hex(p.extension!.data)).toBe("10aa0000");
    expect(hex(p.payload)).toBe("d5d5");
    expect(p.paddingBytes).toBe(3);
  });

  it("round-trips every optional part", () => {
    const init = {
      marker: true,
      payloadType: 127,
      sequenceNumber: 65535,
      timestamp: 0xffffffff,
      ssrc: 0xffffffff,
      csrcs: Array.from({ length: 15 }, (_, i) => i * 0x01010101),
      extension: { profile: 0x1000, data: Uint8Array.from({ length: 12 }, (_, i) => i) },
      payload: Uint8Array.from({ length: 160 }, (_, i) => i),
      paddingBytes: 4,
    };
    const b = encodeRtp(init);
    expect(b.length).toBe(12 + 60 + 4 + 12 + 160 + 4);
    const p = parsed(parseRtp(b));
    expect(p.marker).toBe(true);
    expect(p.payloadType).toBe(127);
    expect(p.sequenceNumber).toBe(65535);
    expect(p.timestamp).toBe(0xffffffff);
    expect(p.ssrc).toBe(0xffffffff);
    expect(p.csrcs).toEqual(init.csrcs);
    expect(p.extension?.profile).toBe(0x1000);
    expect([...p.extension!.data]).toEqual([...init.extension.data]);
    expect([...p.payload]).toEqual([...init.payload]);
    expect(p.paddingBytes).toBe(4);
    // and back again to the same bytes
    expect(hex(encodeRtp(p))).toBe(hex(b));
  });

  it("accepts an empty payload and padding that fills everything after the header", () => {
    const p = parsed(parseRtp(bytes("a0 00 0001 00000000 00000001 00000004")));
    expect(p.payload.length).toBe(0);
    expect(p.paddingBytes).toBe(4);
    expect(parsed(parseRtp(bytes("80 00 0001 00000000 00000001"))).payload.length).toBe(0);
  });

  describe("malformed input is a typed result, never a throw", () => {
    const cases: Array<[string, string, string]> = [
      ["empty", "", "too-short"],
      ["11 bytes", "80 00 0001 00000000 000000", "too-short"],
      ["version 0", "00 00 0001 00000000 00000001", "bad-version"],
      ["version 1", "40 00 0001 00000000 00000001", "bad-version"],
      ["version 3", "c0 00 0001 00000000 00000001", "bad-version"],
      ["CC=1 but no CSRC", "81 00 0001 00000000 00000001", "csrc-overflow"],
      ["CC=15 with 3 CSRCs", `8f 00 0001 00000000 00000001 ${"00000000".repeat(3)}`, "csrc-overflow"],
      ["X set, no extension header", "90 00 0001 00000000 00000001 0000", "extension-overflow"],
      [
        "extension longer than packet",
        "90 00 0001 00000000 00000001 bede0002 00000000",
        "extension-overflow",
      ],
      [
        "extension after CSRCs runs out",
        "91 00 0001 00000000 00000001 00000009 bede0001",
        "extension-overflow",
      ],
      ["padding count 0", "a0 00 0001 00000000 00000001 aabb00", "bad-padding"],
      ["padding larger than payload", "a0 00 0001 00000000 00000001 aabb04", "bad-padding"],
      [
        "padding reaching into the extension",
        "b0 00 0001 00000000 00000001 bede0001 00000000 05",
        "bad-padding",
      ],
    ];
    it.each(cases)("%s", (_name, h, error) => {
      const r = parseRtp(bytes(h));
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.error).toBe(error);
        expect(r.detail.length).toBeGreaterThan(0);
      }
    });

    it("survives random datagrams, and whatever it accepts lies inside the datagram", () => {
      const random = new SeededRandom(3550);
      let accepted = 0;
      const bad: string[] = [];
      for (let i = 0; i < 20_000; i++) {
        const n = Math.floor(random.unit() * 80);
        const b = random.bytes(n);
        if (random.unit() < 0.7 && n > 0) b[0] = 0x80 | (b[0]! & 0x3f); // mostly version 2, so the deeper checks run
        const r = parseRtp(b);
        if (!r.ok) continue;
        accepted++;
        const p = r.packet;
        const ext = p.extension ? 4 + p.extension.data.length : 0;
        if (12 + p.csrcs.length * 4 + ext + p.payload.length + p.paddingBytes !== n) bad.push(hex(b));
        if (p.payload.byteOffset + p.payload.length > b.byteOffset + n) bad.push(hex(b));
      }
      expect(bad).toEqual([]);
      expect(accepted).toBeGreaterThan(1000);
    });
  });

  it("refuses to build what no packet can carry", () => {
    const base = { payloadType: 0, sequenceNumber: 0, timestamp: 0, ssrc: 0, payload: new Uint8Array() };
    expect(() => encodeRtp({ ...base, payloadType: 128 })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, sequenceNumber: 65536 })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, timestamp: -1 })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, ssrc: 2 ** 32 })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, csrcs: new Array(16).fill(0) })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, paddingBytes: 256 })).toThrow(RangeError);
    expect(() => encodeRtp({ ...base, extension: { profile: 0, data: new Uint8Array(3) } })).toThrow(
      RangeError,
    );
  });
});

describe("sequence and timestamp arithmetic across the wrap", () => {
  it("orders 16-bit sequence numbers", () => {
    expect(seqDiff(1, 0)).toBe(1);
    expect(seqDiff(0, 65535)).toBe(1);
    expect(seqDiff(65535, 0)).toBe(-1);
    expect(seqDiff(5, 65530)).toBe(11);
    expect(seqDiff(0x8000, 0)).toBe(-0x8000);
    expect(seqDiff(0x7fff, 0)).toBe(0x7fff);
  });

  it("orders 32-bit timestamps", () => {
    expect(tsDiff(160, 0)).toBe(160);
    expect(tsDiff(0, 0xffffff60)).toBe(160);
    expect(tsDiff(0xffffff60, 0)).toBe(-160);
  });
});

describe("RtpSender", () => {
  it("stamps sequence and timestamp from the caller's start values, wrapping both", () => {
    const s = new RtpSender({
      ssrc: 0x11223344,
      payloadType: 0,
      initialSequence: 65534,
      initialTimestamp: 0xffffff00,
    });
    const frames = [0, 1, 2].map(() => parsed(parseRtp(s.frame(new Uint8Array(160).fill(0xff), 160))));
    expect(frames.map((p) => p.sequenceNumber)).toEqual([65534, 65535, 0]);
    expect(frames.map((p) => p.timestamp)).toEqual([0xffffff00, 0xffffffa0, 0x40]);
    expect(frames.every((p) => p.ssrc === 0x11223344 && p.payloadType === 0 && !p.marker)).toBe(true);
    expect(s.nextSequence).toBe(1);
    expect(s.nextTimestamp).toBe((0xffffff00 + 480) >>> 0);
  });

  it("sends at an explicit timestamp without moving the media clock, and can skip time", () => {
    const s = new RtpSender({ ssrc: 1, payloadType: 0, initialSequence: 10, initialTimestamp: 1000 });
    const ev = parsed(
      parseRtp(s.packet(Uint8Array.of(1, 0x0a, 0, 160), { timestamp: 1000, marker: true, payloadType: 101 })),
    );
    expect([ev.sequenceNumber, ev.timestamp, ev.payloadType, ev.marker]).toEqual([10, 1000, 101, true]);
    expect(s.nextTimestamp).toBe(1000);
    s.advance(800);
    const audio = parsed(parseRtp(s.frame(new Uint8Array(160), 160, { marker: true })));
    expect([audio.sequenceNumber, audio.timestamp, audio.payloadType, audio.marker]).toEqual([
      11,
      1800,
      0,
      true,
    ]);
    expect(() => s.advance(-1)).toThrow(RangeError);
  });

  it("carries its CSRC list on every packet", () => {
    const s = new RtpSender({
      ssrc: 1,
      payloadType: 8,
      initialSequence: 0,
      initialTimestamp: 0,
      csrcs: [7, 9],
    });
    expect(parsed(parseRtp(s.frame(new Uint8Array(1), 1))).csrcs).toEqual([7, 9]);
  });
});
