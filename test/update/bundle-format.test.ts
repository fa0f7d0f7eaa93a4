/** The bundle format: what parses, and every way a head can be wrong, each a typed refusal. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import {
  checkBundleFits,
  checkPayloadDigests,
  encodeBundle,
  encodeHeader,
  isValidVersion,
  parseBundleHead,
  payloadRanges,
} from "../../firmware/update/bundle-format.ts";
import { makeBundle, newKeyPair, sha256 } from "./fixtures.ts";

const { privateKey } = newKeyPair();
const boot = randomBytes(300);
const system = randomBytes(900);
const good = makeBundle({ version: "1.4.0-rc.1+b7", arch: "arm64", boot, system, key: privateKey });

function code(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (e) {
    return e instanceof HandsetError ? e.code : `plain: ${(e as Error).message}`;
  }
}

const parse = (b: Uint8Array) => parseBundleHead(b, b.length);

function withHeader(header: unknown, payloads: Uint8Array[] = [boot, system]): Uint8Array {
  return encodeBundle(encodeHeader(header), new Uint8Array(64).fill(7), payloads);
}

const baseHeader = () => ({
  format: 1,
  name: "handset",
  version: "1.0.0",
  arch: "arm64",
  compatible: "handset-arm64",
  payloads: [
    { name: "boot", offset: 0, size: boot.length, sha256: sha256(boot) },
    { name: "system", offset: boot.length, size: system.length, sha256: sha256(system) },
  ],
});

describe("update bundle format", () => {
  it("parses a good bundle: header, signature, payload ranges that hold the payloads", () => {
    const h = parse(good);
    expect(h.header).toMatchObject({
      format: 1,
      name: "handset",
      version: "1.4.0-rc.1+b7",
      arch: "arm64",
      compatible: "handset-arm64",
    });
    expect(h.unsigned).toBe(false);
    expect(h.signature).toHaveLength(64);
    const [b, s] = payloadRanges(h);
    expect(sha256(good.subarray(b!.start, b!.start + b!.size))).toBe(sha256(boot));
    expect(sha256(good.subarray(s!.start, s!.start + s!.size))).toBe(sha256(system));
    expect(s!.start + s!.size).toBe(good.length);
    checkPayloadDigests(h, { boot: sha256(boot), system: sha256(system) });
    expect(code(() => checkPayloadDigests(h, { boot: sha256(boot), system: sha256(boot) }))).toBe(
      "update-tampered",
    );
  });

  it("an all-zero signature is an unsigned bundle", () => {
    expect(parse(makeBundle({ boot, system, key: undefined })).unsigned).toBe(true);
  });

  it("refuses every truncation and any trailing byte as update-malformed", () => {
    for (let n = 0; n < good.length; n += n < 400 ? 1 : 97)
      expect(
        code(() => parse(good.subarray(0, n))),
        `cut at ${n}`,
      ).toBe("update-malformed");
    const longer = new Uint8Array(good.length + 1);
    longer.set(good);
    expect(code(() => parse(longer))).toBe("update-malformed");
    // a head shorter than the file says it is (the caller read too little) is not trusted either
    expect(code(() => parseBundleHead(good.subarray(0, 100), good.length))).toBe("update-malformed");
  });

  it("refuses a bad magic and header lengths out of range", () => {
    const b = Buffer.from(good);
    b[0] = 0x68;
    expect(code(() => parse(b))).toBe("update-malformed");
    for (const len of [0, 1, 65_537, 0xffffffff]) {
      const c = Buffer.from(good);
      c.writeUInt32BE(len, 15);
      expect(
        code(() => parse(c)),
        `${len}`,
      ).toBe("update-malformed");
    }
  });

  it("refuses headers that are not exactly the format", () => {
    const variants: Array<(h: ReturnType<typeof baseHeader>) => unknown> = [
      (h) => ({ ...h, format: 2 }),
      (h) => ({ ...h, name: "other" }),
      (h) => ({ ...h, extra: true }),
      (h) => ({ ...h, arch: "riscv64", compatible: "handset-riscv64" }),
      (h) => ({ ...h, compatible: "handset-amd64" }),
      (h) => ({ ...h, version: "1.0" }),
      (h) => ({ ...h, version: "v1.0.0" }),
      (h) => ({ ...h, version: "01.0.0" }),
      (h) => ({ ...h, version: `1.0.0-${"x".repeat(70)}` }),
      (h) => ({ ...h, payloads: [h.payloads[0]] }),
      (h) => ({ ...h, payloads: [h.payloads[0], { ...h.payloads[0], offset: boot.length }] }),
      (h) => ({ ...h, payloads: [h.payloads[0], { ...h.payloads[1], name: "data" }] }),
      (h) => ({ ...h, payloads: [h.payloads[0], { ...h.payloads[1], offset: boot.length + 1 }] }),
      (h) => ({ ...h, payloads: [h.payloads[0], { ...h.payloads[1], offset: 0 }] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], size: 0 }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], size: -1 }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], size: 1.5 }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], sha256: "AB".repeat(32) }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], sha256: "ab" }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], more: 1 }, h.payloads[1]] }),
      (h) => [h],
    ];
    expect(code(() => parse(withHeader(baseHeader())))).toBeUndefined();
    for (const [i, v] of variants.entries())
      expect(
        code(() => parse(withHeader(v(baseHeader())))),
        `variant ${i}`,
      ).toBe("update-malformed");
    const notJson = encodeBundle(new TextEncoder().encode("{nope"), new Uint8Array(64), [boot, system]);
    expect(code(() => parse(notJson))).toBe("update-malformed");
  });

  it("version grammar", () => {
    for (const v of ["0.1.0", "1.2.3", "10.20.30-rc.1", "1.0.0+20260101", "1.0.0-beta+exp.sha.5114f85"])
      expect(isValidVersion(v), v).toBe(true);
    for (const v of ["", "1", "1.2", "1.2.3.4", "a.b.c", "1.2.3-", "1.2.3 ", " 1.2.3", "1.2.3-ü"])
      expect(isValidVersion(v), v).toBe(false);
  });

  it("arch and partition sizes, after the signature", () => {
    const h = parse(good);
    expect(
      code(() => checkBundleFits(h, { arch: "arm64", partitionBytes: { boot: 300, system: 900 } })),
    ).toBeUndefined();
    expect(
      code(() => checkBundleFits(h, { arch: "amd64", partitionBytes: { boot: 300, system: 900 } })),
    ).toBe("update-wrong-arch");
    expect(
      code(() => checkBundleFits(h, { arch: "arm64", partitionBytes: { boot: 300, system: 899 } })),
    ).toBe("update-too-large");
    expect(
      code(() => checkBundleFits(h, { arch: "arm64", partitionBytes: { boot: 299, system: 900 } })),
    ).toBe("update-too-large");
  });
});
