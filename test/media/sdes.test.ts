/** a=crypto values (RFC 4568): parse, format, generate, and the refusals. */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  formatCrypto,
  generateCrypto,
  isSdesSuite,
  parseCrypto,
  SDES_DEFAULT_LIFETIME,
  SDES_KEY_SALT_LENGTH,
  SdesError,
} from "../../firmware/media/sdes.ts";

/** The inline key of RFC 4568's examples (§7.3 and others). */
const RFC_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const KEY_A = "ZPslBVcUEyl4NkQI4ls0w01yOEVCDCb0X6H8cSQp";
const KEY_B = "tqjBlJriNKNA1k6sDRPWnzEsDRgfwM2zOX9VNB5r";

function sdesError(f: () => unknown): SdesError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(SdesError);
    expect(err).toBeInstanceOf(HandsetError);
    return err as SdesError;
  }
  throw new Error("expected an SdesError");
}

describe("parseCrypto", () => {
  it("reads RFC 4568's example line: tag, suite, 30-octet key, lifetime 2^20, MKI 1:4", () => {
    const c = parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${RFC_KEY}|2^20|1:4`);
    expect(c.tag).toBe(1);
    expect(c.suite).toBe("AES_CM_128_HMAC_SHA1_80");
    expect(c.keys).toHaveLength(1);
    expect(Buffer.from(c.keys[0]!.keySalt).toString("base64")).toBe(RFC_KEY);
    expect(c.keys[0]!.keySalt).toHaveLength(SDES_KEY_SALT_LENGTH);
    expect(c.keys[0]!.lifetime).toBe(2 ** 20);
    expect(c.keys[0]!.mki).toEqual({ value: 1n, length: 4 });
    expect(c.sessionParams).toEqual([]);
  });

  it("reads the lines Lync writes: with MKI 1:1 and without MKI, lifetime 2^31", () => {
    const withMki = parseCrypto(`2 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^31|1:1`);
    expect(withMki.keys[0]).toMatchObject({ lifetime: 2 ** 31, mki: { value: 1n, length: 1 } });
    const without = parseCrypto(`3 AES_CM_128_HMAC_SHA1_80 inline:${KEY_B}|2^31`);
    expect(without.keys[0]).toMatchObject({ lifetime: 2 ** 31, mki: undefined });
  });

  it("reads the _32 suite, a bare key, an MKI without lifetime, a decimal lifetime, tabs and INLINE", () => {
    expect(parseCrypto(`7 AES_CM_128_HMAC_SHA1_32 inline:${KEY_A}`)).toMatchObject({
      tag: 7,
      suite: "AES_CM_128_HMAC_SHA1_32",
      keys: [{ lifetime: undefined, mki: undefined }],
    });
    expect(parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|5:2`).keys[0]).toMatchObject({
      lifetime: undefined,
      mki: { value: 5n, length: 2 },
    });
    expect(parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|1048576`).keys[0]!.lifetime).toBe(2 ** 20);
    expect(parseCrypto(`1\tAES_CM_128_HMAC_SHA1_80  INLINE:${KEY_A}`).tag).toBe(1);
  });

  it("reads several keys when each has its own MKI of one width", () => {
    const c = parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:4;inline:${KEY_B}|2^20|2:4`);
    expect(c.keys.map((k) => k.mki?.value)).toEqual([1n, 2n]);
  });

  it("keeps session parameters: flags, KDR, WSH, FEC and '-' extensions", () => {
    const c = parseCrypto(
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} KDR=23 UNENCRYPTED_SRTCP WSH=64 FEC_ORDER=SRTP_FEC FEC_KEY=inline:x -MY_EXT`,
    );
    expect(c.sessionParams).toEqual([
      "KDR=23",
      "UNENCRYPTED_SRTCP",
      "WSH=64",
      "FEC_ORDER=SRTP_FEC",
      "FEC_KEY=inline:x",
      "-MY_EXT",
    ]);
  });

  const refusals: Array<[string, string, string]> = [
    ["two fields", `1 AES_CM_128_HMAC_SHA1_80`, "sdes-syntax"],
    ["leading space", ` 1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}`, "sdes-syntax"],
    ["a ten-digit tag", `1234567890 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}`, "sdes-tag"],
    ["a negative tag", `-1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}`, "sdes-tag"],
    ["an unknown suite", `1 AES_256_CM_HMAC_SHA1_80 inline:${KEY_A}${KEY_A}`, "sdes-unsupported-suite"],
    ["a lower-case suite", `1 aes_cm_128_hmac_sha1_80 inline:${KEY_A}`, "sdes-unsupported-suite"],
    ["another key method", `1 AES_CM_128_HMAC_SHA1_80 uri:${KEY_A}`, "sdes-syntax"],
    ["a key one character short", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A.slice(1)}`, "sdes-key"],
    [
      "a key of 33 octets",
      `1 AES_CM_128_HMAC_SHA1_80 inline:${Buffer.alloc(33, 7).toString("base64")}`,
      "sdes-key",
    ],
    ["a key with a bad character", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A.slice(1)}!`, "sdes-key"],
    ["a padded key of 29 octets", `1 AES_CM_128_HMAC_SHA1_80 inline:QUJD${"A".repeat(34)}Q=`, "sdes-key"],
    ["a key with non-zero pad bits", `1 AES_CM_128_HMAC_SHA1_80 inline:${"A".repeat(34)}AAAR==`, "sdes-key"],
    ["an empty key", `1 AES_CM_128_HMAC_SHA1_80 inline:|2^20`, "sdes-key"],
    ["lifetime 2^49", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^49`, "sdes-lifetime"],
    ["lifetime 0", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|0`, "sdes-lifetime"],
    ["lifetime 3^2", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|3^2`, "sdes-lifetime"],
    ["MKI length 0", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:0`, "sdes-mki"],
    ["MKI length 129", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:129`, "sdes-mki"],
    ["MKI 256 in one octet", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|256:1`, "sdes-mki"],
    ["MKI without length", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:`, "sdes-mki"],
    ["a third | field", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:4|x`, "sdes-syntax"],
    ["two keys without MKI", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A};inline:${KEY_B}`, "sdes-mki"],
    [
      "two keys, MKI widths differ",
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|1:4;inline:${KEY_B}|2:2`,
      "sdes-mki",
    ],
    [
      "two keys, one MKI value",
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|1:4;inline:${KEY_B}|1:4`,
      "sdes-mki",
    ],
    [
      "FEC_ORDER of another value",
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} FEC_ORDER=FEC_FIRST`,
      "sdes-session-param",
    ],
    ["an empty FEC_KEY", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} FEC_KEY=`, "sdes-session-param"],
    ["an unknown session parameter", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} FOO=1`, "sdes-session-param"],
    ["KDR=25", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} KDR=25`, "sdes-session-param"],
    ["WSH below 64", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} WSH=32`, "sdes-session-param"],
    ["a lone dash", `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A} -`, "sdes-session-param"],
  ];
  for (const [name, value, code] of refusals)
    it(`refuses ${name}`, () => {
      expect(sdesError(() => parseCrypto(value)).code).toBe(code);
    });
});

describe("formatCrypto", () => {
  it("writes what it reads, canonically", () => {
    for (const v of [
      `1 AES_CM_128_HMAC_SHA1_80 inline:${RFC_KEY}|2^20|1:4`,
      `2 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^31|1:1`,
      `3 AES_CM_128_HMAC_SHA1_32 inline:${KEY_B}`,
      `4 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20|1:4;inline:${KEY_B}|2^20|2:4 UNENCRYPTED_SRTCP -X`,
    ])
      expect(formatCrypto(parseCrypto(v))).toBe(v);
    expect(formatCrypto(parseCrypto(`1  AES_CM_128_HMAC_SHA1_80\tInline:${KEY_A}|1048576`))).toBe(
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|2^20`,
    );
    expect(formatCrypto(parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|1000`))).toBe(
      `1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}|1000`,
    );
  });

  it("refuses what could not be read back", () => {
    const good = parseCrypto(`1 AES_CM_128_HMAC_SHA1_80 inline:${KEY_A}`);
    expect(sdesError(() => formatCrypto({ ...good, tag: -1 })).code).toBe("sdes-tag");
    expect(sdesError(() => formatCrypto({ ...good, tag: 1.5 })).code).toBe("sdes-tag");
    expect(sdesError(() => formatCrypto({ ...good, keys: [] })).code).toBe("sdes-syntax");
    const short = { keySalt: new Uint8Array(29), lifetime: undefined, mki: undefined };
    expect(sdesError(() => formatCrypto({ ...good, keys: [short] })).code).toBe("sdes-key");
    const longLife = { ...good.keys[0]!, lifetime: 2 ** 50 };
    expect(sdesError(() => formatCrypto({ ...good, keys: [longLife] })).code).toBe("sdes-lifetime");
    const wideMki = { ...good.keys[0]!, mki: { value: 300n, length: 1 } };
    expect(sdesError(() => formatCrypto({ ...good, keys: [wideMki] })).code).toBe("sdes-mki");
    expect(sdesError(() => formatCrypto({ ...good, sessionParams: ["BOGUS"] })).code).toBe(
      "sdes-session-param",
    );
    // biome-ignore lint/suspicious/noExplicitAny: a caller outside the type system
    expect(sdesError(() => formatCrypto({ ...good, suite: "NULL" as any })).code).toBe(
      "sdes-unsupported-suite",
    );
  });
});

describe("generateCrypto", () => {
  it("draws a 30-octet key from the Random port, lifetime 2^31, and formats to a line that parses back", () => {
    const a = generateCrypto(new SeededRandom(7), 1, "AES_CM_128_HMAC_SHA1_80");
    const again = generateCrypto(new SeededRandom(7), 1, "AES_CM_128_HMAC_SHA1_80");
    const other = generateCrypto(new SeededRandom(8), 1, "AES_CM_128_HMAC_SHA1_80");
    expect(a.keys[0]!.keySalt).toHaveLength(30);
    expect(a.keys[0]!.keySalt).toEqual(again.keys[0]!.keySalt);
    expect(a.keys[0]!.keySalt).not.toEqual(other.keys[0]!.keySalt);
    expect(a.keys[0]!.lifetime).toBe(SDES_DEFAULT_LIFETIME);
    const text = formatCrypto(a);
    expect(text).toMatch(/^1 AES_CM_128_HMAC_SHA1_80 inline:[A-Za-z0-9+/]{40}\|2\^31$/);
    expect(parseCrypto(text)).toEqual(a);
  });

  it("refuses a Random that gives short keys", () => {
    const broken = { bytes: () => new Uint8Array(4), unit: () => 0 };
    expect(sdesError(() => generateCrypto(broken, 1, "AES_CM_128_HMAC_SHA1_32")).code).toBe("sdes-key");
  });

  it("isSdesSuite knows exactly the two suites", () => {
    expect(isSdesSuite("AES_CM_128_HMAC_SHA1_80")).toBe(true);
    expect(isSdesSuite("AES_CM_128_HMAC_SHA1_32")).toBe(true);
    expect(isSdesSuite("AES_256_CM_HMAC_SHA1_80")).toBe(false);
  });
});
