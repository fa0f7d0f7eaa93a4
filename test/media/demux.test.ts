import { describe, expect, it } from "vitest";
import { classifyPacket, isRtcpPacketType, payloadTypeCollidesWithRtcp } from "../../firmware/media/demux.ts";
import { encodeRtp } from "../../firmware/media/rtp.ts";

const bytes = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));
const first = (b0: number, b1 = 0) => classifyPacket(Uint8Array.of(b0, b1, 0, 0));

describe("demultiplexing one media socket (RFC 7983 §7, RFC 5761 §4)", () => {
  it("classifies each first-byte range at its edges", () => {
    const expectations: Array<[number, string]> = [
      [0, "stun"],
      [3, "stun"],
      [4, "unknown"],
      [15, "unknown"],
      [16, "zrtp"],
      [19, "zrtp"],
      [20, "dtls"],
      [63, "dtls"],
      [64, "turn-channel"],
      [79, "turn-channel"],
      [80, "unknown"],
      [127, "unknown"],
      [128, "rtp"],
      [191, "rtp"],
      [192, "unknown"],
      [255, "unknown"],
    ];
    for (const [b0, kind] of expectations) expect([b0, first(b0)]).toEqual([b0, kind]);
  });

  it("tells RTCP from RTP by packet type 192–223 in the second byte", () => {
    expect(first(0x80, 191)).toBe("rtp");
    expect(first(0x80, 192)).toBe("rtcp");
    expect(first(0x80, 223)).toBe("rtcp");
    expect(first(0x80, 224)).toBe("rtp");
    expect([191, 192, 223, 224].map(isRtcpPacketType)).toEqual([false, true, true, false]);
  });

  it("recognises real packets of each protocol", () => {
    // STUN Binding Request: type 0x0001, length 0, magic cookie, transaction id.
    expect(classifyPacket(bytes("0001 0000 2112a442 000102030405060708090a0b"))).toBe("stun");
    // STUN Binding Success Response.
    expect(classifyPacket(bytes("0101 0000 2112a442 000102030405060708090a0b"))).toBe("stun");
    // DTLS 1.2 handshake record (content type 22) and application data (23).
    expect(classifyPacket(bytes("16 fefd 0000 000000000000 0010"))).toBe("dtls");
    expect(classifyPacket(bytes("17 fefd 0001 000000000001 0010"))).toBe("dtls");
    // TURN ChannelData on channel 0x4001.
    expect(classifyPacket(bytes("4001 0004 deadbeef"))).toBe("turn-channel");
    // RTCP SR (200), RR with one report block (201), SDES (202), BYE (203), XR (207).
    for (const pt of [200, 201, 202, 203, 207])
      expect(classifyPacket(Uint8Array.of(0x81, pt, 0, 7, 1, 2, 3, 4))).toBe("rtcp");
    // RTP PCMU, PCMA and telephone-event with the marker set (second byte 0xE5).
    for (const [pt, marker] of [
      [0, false],
      [8, true],
      [101, true],
    ] as const) {
      const rtp = encodeRtp({
        payloadType: pt,
        marker,
        sequenceNumber: 1,
        timestamp: 2,
        ssrc: 3,
        payload: new Uint8Array(4),
      });
      expect(classifyPacket(rtp)).toBe("rtp");
    }
  });

  it("shows why payload types 64–95 are barred with rtcp-mux", () => {
    // PT 72 with M set puts 200 (an SR) in the second byte: the receiver reads it as RTCP.
    const rtp = encodeRtp({
      payloadType: 72,
      marker: true,
      sequenceNumber: 1,
      timestamp: 2,
      ssrc: 3,
      payload: new Uint8Array(4),
    });
    expect(classifyPacket(rtp)).toBe("rtcp");
    expect([63, 64, 72, 95, 96, 101].map(payloadTypeCollidesWithRtcp)).toEqual([
      false,
      true,
      true,
      true,
      false,
      false,
    ]);
  });

  it("never throws and calls too-short input unknown", () => {
    expect(classifyPacket(new Uint8Array())).toBe("unknown");
    expect(classifyPacket(Uint8Array.of(0x80))).toBe("unknown");
    expect(classifyPacket(Uint8Array.of(0x00))).toBe("stun");
    // Every first and second byte: a throw would escape as a test error.
    const kinds = new Set<string>();
    for (let b0 = 0; b0 < 256; b0++) for (let b1 = 0; b1 < 256; b1++) kinds.add(first(b0, b1));
    expect([...kinds].sort()).toEqual(["dtls", "rtcp", "rtp", "stun", "turn-channel", "unknown", "zrtp"]);
  });
});
