import { describe, expect, it } from "vitest";
import {
  DiscoveryError,
  decodeDhcp,
  encodeDhcp,
  encodeOption,
  messageType,
} from "../../firmware/discovery/dhcp-codec.ts";
import { buildInform } from "../../firmware/discovery/dhcp-inform.ts";
import { asciiHex, hex, toHex } from "./helpers.ts";

const HW = hex("02005e005301");

/** The DHCPINFORM of issue 4, byte by byte (RFC 2131 §2 layout). */
const INFORM_HEX = [
  "01 01 06 00", // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
  "12345678", // xid
  "0000 0000", // secs, flags (no broadcast: ciaddr is set, the server unicasts)
  "c0000214", // ciaddr 192.0.2.20
  "00000000 00000000 00000000", // yiaddr, siaddr, giaddr
  `02005e005301${"00".repeat(10)}`, // chaddr (16)
  "00".repeat(64 + 128), // sname, file
  "63825363", // magic cookie
  "350108", // 53 = DHCPINFORM
  "3d07 01 02005e005301", // 61 client id: type 1 + MAC
  `3c0c ${asciiHex("MS-UC-Client")}`, // 60 vendor class
  "3709 01 02 03 04 06 0f 2a 2b 78", // 55: 1,2,3,4,6,15,42,43,120
  "ff",
].join("");

describe("DHCP codec", () => {
  it("encodes the DHCPINFORM byte for byte, padded to the 300-byte BOOTP minimum", () => {
    const bytes = encodeDhcp(buildInform({ xid: 0x12345678, ciaddr: "192.0.2.20", hwAddress: HW }));
    const expected = hex(INFORM_HEX);
    expect(bytes.length).toBe(300);
    expect(toHex(bytes.subarray(0, expected.length))).toBe(toHex(expected));
    expect(bytes.subarray(expected.length).every((b) => b === 0)).toBe(true);
  });

  it("sets the broadcast flag when asked or when ciaddr is 0.0.0.0", () => {
    const a = encodeDhcp(buildInform({ xid: 1, ciaddr: "0.0.0.0", hwAddress: HW }));
    const b = encodeDhcp(buildInform({ xid: 1, ciaddr: "192.0.2.20", hwAddress: HW, broadcast: true }));
    expect(toHex(a.subarray(10, 12))).toBe("8000");
    expect(toHex(b.subarray(10, 12))).toBe("8000");
  });

  it("round-trips: decode(encode(m)) gives the same fields", () => {
    const m = buildInform({ xid: 0xdeadbeef, ciaddr: "192.0.2.20", hwAddress: HW, secs: 3 });
    const d = decodeDhcp(encodeDhcp(m));
    expect(d.xid).toBe(0xdeadbeef);
    expect(d.ciaddr).toBe("192.0.2.20");
    expect(d.secs).toBe(3);
    expect(toHex(d.chaddr)).toBe("02005e005301");
    expect(messageType(d)).toBe(8);
    expect(new TextDecoder().decode(d.options.get(60))).toBe("MS-UC-Client");
  });

  it("splits a 300-byte option into 255 + 45 (RFC 3396) and joins it back", () => {
    const value = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
    const enc = encodeOption(43, value);
    expect(enc.length).toBe(304);
    expect(toHex(enc.subarray(0, 2))).toBe("2bff");
    expect(toHex(enc.subarray(257, 259))).toBe("2b2d");
    const m = buildInform({ xid: 1, ciaddr: "192.0.2.20", hwAddress: HW });
    m.options.set(43, value);
    const d = decodeDhcp(encodeDhcp(m));
    expect(toHex(d.options.get(43)!)).toBe(toHex(value));
  });

  it("concatenates split instances even when other options sit between them", () => {
    const head = hex(INFORM_HEX).subarray(0, 240);
    const opts = hex(`3503 05 0000 2b03 010203 2a04 c0000201 2b02 0405 ff`.replace(/ /g, ""));
    // option 53 above is deliberately 3 bytes long: messageType() then reports undefined
    const d = decodeDhcp(new Uint8Array([...head, ...opts]));
    expect(toHex(d.options.get(43)!)).toBe("0102030405");
    expect(messageType(d)).toBeUndefined();
  });

  it("reads options from file and sname when option 52 overloads them", () => {
    const bytes = encodeDhcp(buildInform({ xid: 1, ciaddr: "192.0.2.20", hwAddress: HW }));
    const b = bytes.slice();
    // replace the options with 53=5, 52=3, end
    b.set(hex("350105 340103 ff"), 240);
    b.set(hex(`2b03 616263 ff`), 108); // file: 43 "abc"
    b.set(hex(`2b02 6465 ff`), 44); // sname: 43 "de" (joined after file, RFC 3396 §5)
    const d = decodeDhcp(b);
    expect(new TextDecoder().decode(d.options.get(43))).toBe("abcde");
    expect(d.file).toBe("");
    expect(d.sname).toBe("");
  });

  it.each([
    ["too short", hex("0101")],
    ["no magic cookie", new Uint8Array(300)],
    [
      "an option running past the end",
      new Uint8Array([...hex(INFORM_HEX).subarray(0, 240), 0x2b, 0x10, 1, 2]),
    ],
    [
      "hlen over 16",
      (() => {
        const b = hex(INFORM_HEX);
        b[2] = 17;
        return b;
      })(),
    ],
  ])("rejects %s with dhcp-malformed", (_name, bytes) => {
    try {
      decodeDhcp(bytes);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(DiscoveryError);
      expect((err as DiscoveryError).code).toBe("dhcp-malformed");
    }
  });
});
