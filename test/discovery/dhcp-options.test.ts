import { describe, expect, it } from "vitest";
import type { DiscoveryError } from "../../firmware/discovery/dhcp-codec.ts";
import {
  decodeIpv4List,
  decodeSipServers,
  decodeTimeOffset,
  decodeUcVendorOption,
  interpretOptions,
} from "../../firmware/discovery/dhcp-options.ts";
import { asciiHex, hex } from "./helpers.ts";

const REL = "/CertProv/CertProvisioningService.svc";

/** Option 43 exactly as dnsmasq 2.90 sent it (behaviour §1.2): sub-options 5,4,3,2,1 then 0xFF. */
const DNSMASQ_43 = hex(
  [
    `05 25 ${asciiHex(REL)}`,
    `04 03 ${asciiHex("443")}`, // 343433
    `03 15 ${asciiHex("lyncpool.example.test")}`,
    `02 05 ${asciiHex("https")}`, // 6874747073
    `01 0c ${asciiHex("MS-UC-Client")}`, // 4d532d55432d436c69656e74
    "ff",
  ].join(""),
);

describe("option 43 (MS-UC-Client)", () => {
  it("joins dnsmasq's reverse-order sub-options into the CertProv URL", () => {
    const problems: DiscoveryError[] = [];
    const v = decodeUcVendorOption(DNSMASQ_43, problems);
    expect(problems).toEqual([]);
    expect(v).toMatchObject({
      identifier: "MS-UC-Client",
      scheme: "https",
      fqdn: "lyncpool.example.test",
      port: 443,
    });
    expect(v.url).toBe(`https://lyncpool.example.test:443${REL}`);
  });

  it("accepts the Microsoft order with pads, and the port as a 16-bit number", () => {
    const problems: DiscoveryError[] = [];
    const bytes = hex(
      `00 01 0c ${asciiHex("MS-UC-Client")} 00 00 02 05 ${asciiHex("https")} 03 08 ${asciiHex("pool.lab")}` +
        ` 04 02 01bb 05 05 ${asciiHex("/cert")} ff 01 02 0304`,
    );
    const v = decodeUcVendorOption(bytes, problems);
    expect(problems).toEqual([]);
    expect(v.port).toBe(443);
    expect(v.url).toBe("https://pool.lab:443/cert");
  });

  it("text port 4443 and a relative path without its slash", () => {
    const v = decodeUcVendorOption(
      hex(`03 04 ${asciiHex("a.io")} 04 04 ${asciiHex("4443")} 05 01 ${asciiHex("x")}`),
      [],
    );
    expect(v.url).toBe("https://a.io:4443/x");
  });

  it("collects a bad sub-option as a problem and keeps the rest", () => {
    const problems: DiscoveryError[] = [];
    const v = decodeUcVendorOption(hex(`04 03 ${asciiHex("4x3")} 03 04 ${asciiHex("a.io")}`), problems);
    expect(v.url).toBe("https://a.io:443");
    expect(problems.map((p) => p.code)).toEqual(["dhcp-option-malformed"]);
  });

  it("a truncated sub-option is a problem, not an exception", () => {
    const problems: DiscoveryError[] = [];
    expect(decodeUcVendorOption(hex("03 09 6162"), problems)).toEqual({});
    expect(problems[0]?.code).toBe("dhcp-option-malformed");
    expect(problems[0]?.option).toBe(43);
  });
});

describe("option 120 (RFC 3361)", () => {
  it("decodes the loopback vector for pool01.contoso.com", () => {
    const v = hex(`00 06 706f6f6c3031 07 636f6e746f736f 03 636f6d 00`);
    expect(decodeSipServers(v, [])).toEqual({ encoding: "fqdn", servers: ["pool01.contoso.com"] });
  });

  it("follows a compression pointer (offset from the byte after enc)", () => {
    const v = hex(`00 06 706f6f6c3031 07 636f6e746f736f 03 636f6d 00 03 736261 c007`);
    expect(decodeSipServers(v, [])?.servers).toEqual(["pool01.contoso.com", "sba.contoso.com"]);
  });

  it.each([
    ["a pointer loop", "00 03 616263 c000", "compression pointer loop"],
    ["a self pointer", "00 c000", "compression pointer loop"],
    ["an out-of-range pointer", "00 03 616263 c050", "out of range"],
    ["a label past the end", "00 09 6162", "past the end"],
    ["a name without its root label", "00 03 616263", "past the end"],
  ])("rejects %s safely", (_n, h, msg) => {
    const problems: DiscoveryError[] = [];
    expect(decodeSipServers(hex(h), problems)).toBeUndefined();
    expect(problems[0]?.message).toContain(msg);
  });

  it("keeps good names before a bad one", () => {
    const problems: DiscoveryError[] = [];
    const v = decodeSipServers(hex(`00 01 61 00 c0ff`), problems);
    expect(v?.servers).toEqual(["a"]);
    expect(problems).toHaveLength(1);
  });

  it("accepts a bare ASCII name (the DHCPUtil/Polycom-script mistake) with a warning", () => {
    const problems: DiscoveryError[] = [];
    const v = decodeSipServers(hex(asciiHex("pool01.contoso.com")), problems);
    expect(v).toEqual({ encoding: "bare-ascii", servers: ["pool01.contoso.com"] });
    expect(problems.map((p) => p.code)).toEqual(["dhcp-120-bare-ascii"]);
  });

  it("enc 1: IPv4 list", () => {
    const problems: DiscoveryError[] = [];
    expect(decodeSipServers(hex("01 c0000201 c0000202"), problems)?.servers).toEqual([
      "192.0.2.1",
      "192.0.2.2",
    ]);
    expect(decodeSipServers(hex("01 c00002"), problems)).toBeUndefined();
  });
});

describe("time and name options", () => {
  it("option 2: −5 h is FFFFB9B0", () => {
    expect(decodeTimeOffset(hex("ffffb9b0"))).toBe(-18000);
    expect(decodeTimeOffset(hex("00000e10"))).toBe(3600);
  });

  it("42 and 4 become NTP servers (42 first, de-duplicated); 6, 15, 100, 101", () => {
    const info = interpretOptions(
      new Map([
        [4, hex("c0000203 c0000201")],
        [42, hex("c0000201")],
        [2, hex("ffffb9b0")],
        [6, hex("c0000235")],
        [15, hex(`${asciiHex("lab.test")}00`)],
        [100, hex(asciiHex("EST5EDT,M3.2.0,M11.1.0"))],
        [101, hex(asciiHex("America/New_York"))],
      ]),
    );
    expect(info).toMatchObject({
      ntpServers: ["192.0.2.1", "192.0.2.3"],
      timeOffsetS: -18000,
      dnsServers: ["192.0.2.53"],
      domain: "lab.test",
      posixTz: "EST5EDT,M3.2.0,M11.1.0",
      tzName: "America/New_York",
      problems: [],
    });
  });

  it("malformed options become problems while the rest is used", () => {
    const info = interpretOptions(
      new Map([
        [42, hex("c00002")],
        [2, hex("ffff")],
        [120, hex(`00 03 ${asciiHex("sba")} 03 ${asciiHex("lab")} 00`)],
        [43, DNSMASQ_43],
      ]),
    );
    expect(info.sipServers).toEqual(["sba.lab"]);
    expect(info.certProvUrl).toBe(`https://lyncpool.example.test:443${REL}`);
    expect(info.problems.map((p) => p.option).sort()).toEqual([2, 42]);
    expect(() => decodeIpv4List(hex(""), 6)).toThrow(/Option 6/);
  });
});
