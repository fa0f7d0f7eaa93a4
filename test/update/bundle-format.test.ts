/** The bundle format: what parses, and every way a head can be wrong, each a typed refusal. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import {
  CHUNK_BYTES,
  checkBundleFits,
  checkChunk,
  checkPayloadDigests,
  chunkCount,
  digestPayload,
  encodeBundle,
  encodeHeader,
  headLength,
  isValidVersion,
  MAX_HEADER_BYTES,
  MAX_PAYLOAD_BYTES,
  makeHeader,
  PayloadDigester,
  parseBundleHead,
  payloadRanges,
  readBundleHead,
  validateHeader,
  verifiedChunks,
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
  format: 2,
  name: "handset",
  version: "1.0.0",
  arch: "arm64",
  compatible: "handset-arm64",
  chunkBytes: CHUNK_BYTES,
  payloads: [
    { name: "boot", offset: 0, size: boot.length, sha256: sha256(boot), chunks: [sha256(boot)] },
    {
      name: "system",
      offset: boot.length,
      size: system.length,
      sha256: sha256(system),
      chunks: [sha256(system)],
    },
  ],
});

describe("update bundle format", () => {
  it("parses a good bundle: header, signature, payload ranges that hold the payloads", () => {
    const h = parse(good);
    expect(h.header).toMatchObject({
      format: 2,
      chunkBytes: 4 * 1024 * 1024,
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
      (h) => ({ ...h, format: 1 }),
      (h) => ({ ...h, format: 3 }),
      (h) => ({ ...h, chunkBytes: 65_536 }),
      (h) => ({ ...h, chunkBytes: "4194304" }),
      (h) => {
        const { chunkBytes: _, ...rest } = h;
        return rest;
      },
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], chunks: [] }, h.payloads[1]] }),
      (h) => ({
        ...h,
        payloads: [{ ...h.payloads[0], chunks: [sha256(boot), sha256(boot)] }, h.payloads[1]],
      }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], chunks: ["AB".repeat(32)] }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], chunks: [7] }, h.payloads[1]] }),
      (h) => ({ ...h, payloads: [{ ...h.payloads[0], chunks: sha256(boot) }, h.payloads[1]] }),
      (h) => {
        const { chunks: _, ...rest } = h.payloads[0]!;
        return { ...h, payloads: [rest, h.payloads[1]] };
      },
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

describe("format 2: chunk digests", () => {
  const big = randomBytes(2 * CHUNK_BYTES + 12_345); // three chunks, the last one short
  const slices = [
    big.subarray(0, CHUNK_BYTES),
    big.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES),
    big.subarray(2 * CHUNK_BYTES),
  ];

  it("digests each 4 MiB slice, the last one shorter, whatever the pieces it is fed in", () => {
    const d = digestPayload(big);
    expect(d).toEqual({ size: big.length, sha256: sha256(big), chunks: slices.map(sha256) });
    const odd = new PayloadDigester();
    for (let at = 0; at < big.length; at += 999_983) odd.update(big.subarray(at, at + 999_983));
    expect(odd.digest()).toEqual(d);
    // exactly one chunk long: one digest, not an empty second one
    expect(digestPayload(big.subarray(0, CHUNK_BYTES)).chunks).toHaveLength(1);
    expect([1, CHUNK_BYTES, CHUNK_BYTES + 1, MAX_PAYLOAD_BYTES].map((n) => chunkCount(n))).toEqual([
      1, 1, 2, 256,
    ]);
  });

  it("the chunk count must be ceil(size / chunkBytes), each digest lower-case hex", () => {
    const h = makeHeader({
      version: "1.0.0",
      arch: "arm64",
      payloads: [
        { name: "boot", ...digestPayload(boot) },
        { name: "system", ...digestPayload(big) },
      ],
    });
    expect(h.payloads[1]!.chunks).toHaveLength(3);
    const json = JSON.parse(JSON.stringify(h)) as ReturnType<typeof baseHeader>;
    const sys = json.payloads[1]!;
    expect(code(() => validateHeader(json))).toBeUndefined();
    for (const chunks of [
      sys.chunks.slice(0, 2),
      [...sys.chunks, sys.chunks[0]!],
      [...sys.chunks.slice(0, 2), "x"],
    ])
      expect(code(() => validateHeader({ ...json, payloads: [json.payloads[0], { ...sys, chunks }] }))).toBe(
        "update-malformed",
      );
    // one byte more is a fourth chunk: three digests no longer do
    expect(
      code(() =>
        validateHeader({ ...json, payloads: [json.payloads[0], { ...sys, size: sys.size + CHUNK_BYTES }] }),
      ),
    ).toBe("update-malformed");
  });

  it("checkChunk and verifiedChunks: a chunk is handed out only when it matches; a bad one is update-tampered", async () => {
    const p = { name: "system" as const, offset: 0, ...digestPayload(big) };
    for (const [i, c] of slices.entries()) checkChunk(p, i, c, CHUNK_BYTES);
    expect(code(() => checkChunk(p, 1, slices[0]!, CHUNK_BYTES))).toBe("update-tampered");
    expect(code(() => checkChunk(p, 2, slices[2]!.subarray(1), CHUNK_BYTES))).toBe("update-tampered");
    expect(code(() => checkChunk(p, 3, new Uint8Array(0), CHUNK_BYTES))).toBe("update-tampered");

    const tampered = Buffer.from(big);
    tampered[CHUNK_BYTES + 5]! ^= 1;
    let at = 0;
    const reads: number[] = [];
    const read = async (n: number) => {
      reads.push(n);
      const b = tampered.subarray(at, at + n);
      at += n;
      return b;
    };
    const got: number[] = [];
    let err: unknown;
    try {
      for await (const c of verifiedChunks(p, CHUNK_BYTES, read)) got.push(c.index);
    } catch (e) {
      err = e;
    }
    expect(got).toEqual([0]); // chunk 1 was read, never handed out
    expect((err as HandsetError).code).toBe("update-tampered");
    expect(reads).toEqual([CHUNK_BYTES, CHUNK_BYTES]);

    at = 0;
    const ok: Array<[number, number, number]> = [];
    const good = async (n: number) => {
      const b = big.subarray(at, at + n);
      at += n;
      return b;
    };
    for await (const c of verifiedChunks(p, CHUNK_BYTES, good)) ok.push([c.index, c.offset, c.bytes.length]);
    expect(ok).toEqual([
      [0, 0, CHUNK_BYTES],
      [1, CHUNK_BYTES, CHUNK_BYTES],
      [2, 2 * CHUNK_BYTES, 12_345],
    ]);
  });

  it("the largest header (both payloads at MAX_PAYLOAD_BYTES, longest version and offsets) fits MAX_HEADER_BYTES", () => {
    const digest = "f".repeat(64);
    const chunks = Array.from({ length: chunkCount(MAX_PAYLOAD_BYTES) }, () => digest);
    const version = `999999999.999999999.999999999-${"x".repeat(34)}`;
    expect(version).toHaveLength(64);
    const h = makeHeader({
      version,
      arch: "arm64",
      payloads: [
        { name: "system", size: MAX_PAYLOAD_BYTES, sha256: digest, chunks },
        { name: "boot", size: MAX_PAYLOAD_BYTES, sha256: digest, chunks },
      ],
    });
    const bytes = encodeHeader(h).length;
    expect(bytes).toBeLessThanOrEqual(MAX_HEADER_BYTES);
    expect(bytes).toBeGreaterThan(30_000); // it is the big one: 512 digests
    // and one payload byte more is refused
    expect(
      code(() =>
        makeHeader({
          version,
          arch: "arm64",
          payloads: [
            { name: "system", size: MAX_PAYLOAD_BYTES + 1, sha256: digest, chunks: [...chunks, digest] },
            { name: "boot", size: 1, sha256: digest, chunks: [digest] },
          ],
        }),
      ),
    ).toBe("update-malformed");
  });

  it("headLength reads the head's length from the preamble alone; readBundleHead reads exactly the head", async () => {
    const dataStart = parse(good).dataStart;
    expect(headLength(good.subarray(0, 19))).toBe(dataStart);
    expect(code(() => headLength(good.subarray(0, 18)))).toBe("update-malformed");
    let at = 0;
    const read = async (n: number) => {
      const b = good.subarray(at, at + n);
      at += n;
      return b;
    };
    expect((await readBundleHead(read, good.length)).header.version).toBe("1.4.0-rc.1+b7");
    expect(at).toBe(dataStart); // not a payload byte more
    at = 0;
    await expect(readBundleHead(read, good.length + 1)).rejects.toSatisfy(
      (e: unknown) => e instanceof HandsetError && e.code === "update-malformed",
    );
  });
});
