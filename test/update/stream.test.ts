/**
 * `handset update URL`: a bundle streamed from a local server (http and https on 127.0.0.1) into
 * partition files. A good stream installs and asks for the trial boot; a bad head (unsigned, bad
 * signature, other arch, too large) writes nothing; a tampered chunk is never written (the
 * verified chunks before it may be); a download without Content-Length, cut or stalled is
 * update-download-failed; an https server's certificate is judged at the OS time + the offset.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { updateCommand } from "../../firmware/commands/update.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { openBundleDownload } from "../../firmware/platform/bundle-download.ts";
import { CHUNK_BYTES, PREAMBLE_BYTES } from "../../firmware/update/bundle-format.ts";
import { LabCa } from "../lab/ca.ts";
import { type BundleServer, type ServeFaults, serveBundle } from "./bundle-server.ts";
import {
  captureOutput,
  diskFlags,
  fakeSystemctl,
  makeBundle,
  makeDisk,
  OTHER_ARCH,
  prefixHash,
  sha256,
  snapshot,
  type TestDisk,
} from "./fixtures.ts";

const MIB = 2 ** 20;
const DAY = 86_400_000;

let d: TestDisk;
let server: BundleServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
  await d.cleanup();
});

/** A fresh disk for each test of the describe: big enough for chunks, or small (faster). */
function useDisk(o: { bootBytes: number; systemBytes: number }): void {
  beforeEach(async () => {
    d = await makeDisk(o);
  });
}

/** boot: 2 chunks (the last short); system: 5 chunks. */
const payloads = () => ({ boot: randomBytes(5 * MIB + 77), system: randomBytes(4 * CHUNK_BYTES + 1000) });
/** One chunk each: where the chunking does not matter (refusals before any write, TLS). */
const small = () => ({ boot: randomBytes(200_000), system: randomBytes(MIB + 5) });

async function serve(bytes: Uint8Array, faults: ServeFaults = {}, tls?: { cert: string; key: string }) {
  server = await serveBundle(bytes, faults, tls);
  return server.url;
}

async function failsWith(p: Promise<unknown>): Promise<HandsetError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HandsetError);
  return err as HandsetError;
}

const slots = async (t: TestDisk) =>
  JSON.parse(await readFile(join(t.config, "handset-slots.json"), "utf8")) as Record<string, unknown>;

/** Where payload `name`'s bytes lie in a bundle made by makeBundle (boot first, then system). */
function payloadStart(
  bundle: Uint8Array,
  p: { boot: Uint8Array; system: Uint8Array },
  name: "boot" | "system",
) {
  const dataStart = bundle.length - p.boot.length - p.system.length;
  expect(Buffer.from(bundle).readUInt32BE(15) + PREAMBLE_BYTES + 64).toBe(dataStart);
  return name === "boot" ? dataStart : dataStart + p.boot.length;
}

describe("handset update URL (streamed)", () => {
  useDisk({ bootBytes: 8 * MIB, systemBytes: 24 * MIB });
  it("installs a good stream into the inactive slot, records it written, asks for the trial boot", async () => {
    const p = payloads();
    const url = await serve(makeBundle({ ...p, key: d.privateKey }));
    const before = await snapshot(d);
    const oldSystemB = await readFile(join(d.disk, "system_b"));
    const sys = fakeSystemctl({ status: "registered" });
    const cap = captureOutput();
    expect(await updateCommand([url, ...diskFlags(d)], cap.out, { run: sys.run })).toBe(0);

    expect(await prefixHash(d, "boot_b", p.boot.length)).toBe(sha256(p.boot));
    expect(await prefixHash(d, "system_b", p.system.length)).toBe(sha256(p.system));
    // Past the payload the partition is as it was.
    const sysB = await readFile(join(d.disk, "system_b"));
    expect(sha256(sysB.subarray(p.system.length))).toBe(sha256(oldSystemB.subarray(p.system.length)));
    const after = await snapshot(d);
    for (const n of ["boot_a", "system_a", "data", "config/autoboot.txt"])
      expect(after[join(d.disk, n)], n).toEqual(before[join(d.disk, n)]);
    expect((await slots(d))["b"]).toMatchObject({
      version: "2.0.0",
      state: "written",
      payloads: {
        boot: { size: p.boot.length, sha256: sha256(p.boot) },
        system: { sha256: sha256(p.system) },
      },
    });
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([["systemctl", "reboot"]]);
    const events = cap.events.map((e) => e["event"]);
    expect(events).toEqual(
      expect.arrayContaining(["update.download", "update.verified", "update.written", "update.reboot"]),
    );
    // The logged URL has no query (a signed URL's query is a credential).
    const dl = cap.events.find((e) => e["event"] === "update.download");
    expect(dl).toMatchObject({ bytes: expect.any(Number) });
    expect(String(dl?.["url"])).not.toContain("secret");
    expect(cap.events.find((e) => e["event"] === "update.verified")).toMatchObject({
      stream: true,
      slot: "b",
    });
  });

  it("a tampered chunk k → update-tampered: chunk k and everything after it are never written", async () => {
    const p = payloads();
    const bundle = Buffer.from(makeBundle({ ...p, key: d.privateKey }));
    const k = 2;
    bundle[payloadStart(bundle, p, "system") + k * CHUNK_BYTES + 12_345]! ^= 0x40;
    const url = await serve(bundle);
    const oldSystemB = await readFile(join(d.disk, "system_b"));
    const before = await snapshot(d);
    const sys = fakeSystemctl({ status: "registered" });
    const err = await failsWith(updateCommand([url, ...diskFlags(d)], captureOutput().out, { run: sys.run }));
    expect(err.code).toBe("update-tampered");
    expect(err.message).toContain(`chunk ${k}`);

    const newSystemB = await readFile(join(d.disk, "system_b"));
    // From chunk k on: byte-identical to before.
    expect(sha256(newSystemB.subarray(k * CHUNK_BYTES))).toBe(sha256(oldSystemB.subarray(k * CHUNK_BYTES)));
    // The chunks before it were verified, and written (the help says so).
    expect(sha256(newSystemB.subarray(0, k * CHUNK_BYTES))).toBe(
      sha256(p.system.subarray(0, k * CHUNK_BYTES)),
    );
    expect(await prefixHash(d, "boot_b", p.boot.length)).toBe(sha256(p.boot));
    // The running slot and autoboot are untouched, the slot is marked unfinished, no reboot.
    const after = await snapshot(d);
    for (const n of ["boot_a", "system_a", "data", "config/autoboot.txt"])
      expect(after[join(d.disk, n)], n).toEqual(before[join(d.disk, n)]);
    expect((await slots(d))["b"]).toMatchObject({ state: "writing" });
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
  });

  it("a tampered first chunk of the boot payload: nothing of the slot is written", async () => {
    const p = payloads();
    const bundle = Buffer.from(makeBundle({ ...p, key: d.privateKey }));
    bundle[payloadStart(bundle, p, "boot") + 3]! ^= 0x01;
    const url = await serve(bundle);
    const before = await snapshot(d);
    const err = await failsWith(
      updateCommand([url, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    );
    expect(err.code).toBe("update-tampered");
    const after = await snapshot(d);
    for (const n of ["boot_a", "boot_b", "system_a", "system_b", "data"])
      expect(after[join(d.disk, n)], n).toEqual(before[join(d.disk, n)]);
  });

  const downloadFaults: Array<[string, ServeFaults, string[]]> = [
    ["no Content-Length", { noLength: true }, []],
    ["HTTP 404", { status: 404 }, []],
    ["connection cut mid-way", { cutAfter: 9 * MIB }, []],
    ["stalls mid-way (idle timeout)", { stallAfter: 9 * MIB }, ["--idle-timeout", "0.3"]],
  ];
  for (const [what, faults, extra] of downloadFaults)
    it(`${what} → update-download-failed, the running slot untouched, no reboot`, async () => {
      const p = payloads();
      const url = await serve(makeBundle({ ...p, key: d.privateKey }), faults);
      const before = await snapshot(d);
      const sys = fakeSystemctl({ status: "registered" });
      const err = await failsWith(
        updateCommand([url, ...diskFlags(d), ...extra], captureOutput().out, { run: sys.run }),
      );
      expect(err.code, err.message).toBe("update-download-failed");
      const after = await snapshot(d);
      for (const n of ["boot_a", "system_a", "data", "config/autoboot.txt"])
        expect(after[join(d.disk, n)], n).toEqual(before[join(d.disk, n)]);
      expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
      if (faults.cutAfter || faults.stallAfter)
        expect((await slots(d))["b"]).toMatchObject({ state: "writing" });
      else expect(await snapshot(d)).toEqual(before);
    }, 20_000);

  it("a stall fails after the idle timeout, not before", async () => {
    // Stalls for good after the head: with a 1 s idle timeout it fails after ~1 s, not at once.
    const p = payloads();
    const bundle = makeBundle({ ...p, key: d.privateKey });
    const url = await serve(bundle, { stallAfter: payloadStart(bundle, p, "boot") + 1000 });
    const t0 = performance.now();
    const err = await failsWith(
      updateCommand([url, ...diskFlags(d), "--idle-timeout", "1"], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    );
    expect(err.code).toBe("update-download-failed");
    expect(err.message).toContain("stalled");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(900);
  });
});

describe("handset update URL: a bad head is refused before a byte is written", () => {
  useDisk({ bootBytes: 512 * 1024, systemBytes: 2 * MIB });
  const refusals: Array<[string, string, (t: TestDisk) => Uint8Array]> = [
    ["unsigned", "update-unsigned", () => makeBundle({ ...small(), key: undefined })],
    [
      "signed by another key",
      "update-bad-signature",
      () => makeBundle({ ...small(), key: generateKeyPairSync("ed25519").privateKey }),
    ],
    [
      "header changed after signing",
      "update-bad-signature",
      (t) => {
        const b = Buffer.from(makeBundle({ ...small(), key: t.privateKey }));
        b.write('"version":"9.0.0"', b.indexOf('"version":"2.0.0"'));
        return b;
      },
    ],
    [
      "for the other arch",
      "update-wrong-arch",
      (t) => makeBundle({ ...small(), arch: OTHER_ARCH, key: t.privateKey }),
    ],
    [
      "system payload larger than its partition",
      "update-too-large",
      (t) =>
        makeBundle({ boot: randomBytes(1000), system: randomBytes(t.systemBytes + 1), key: t.privateKey }),
    ],
    ["not a bundle", "update-malformed", () => randomBytes(100_000)],
  ];
  for (const [what, code, make] of refusals)
    it(`${what} → ${code}, zero bytes written`, async () => {
      const url = await serve(make(d));
      const before = await snapshot(d);
      const sys = fakeSystemctl({ status: "registered" });
      const err = await failsWith(
        updateCommand([url, ...diskFlags(d)], captureOutput().out, { run: sys.run }),
      );
      expect(err.code).toBe(code);
      expect(await snapshot(d)).toEqual(before);
      expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
    });
});

describe("handset update https URL: the certificate at the phone's clock", () => {
  useDisk({ bootBytes: 512 * 1024, systemBytes: 2 * MIB });
  let ca: LabCa;
  let tls: { cert: string; key: string };
  beforeAll(async () => {
    ca = await LabCa.create();
    // Valid from 10 to 40 days from now: only a clock offset makes it valid.
    const issued = await ca.issue({
      commonName: "127.0.0.1",
      ips: ["127.0.0.1"],
      serverAuth: true,
      notBefore: new Date(Date.now() + 10 * DAY),
      days: 30,
    });
    tls = { cert: issued.cert, key: issued.key };
  }, 60_000);

  async function caFile(): Promise<string> {
    const p = join(d.root, "lab-ca.pem");
    await writeFile(p, ca.cert);
    return p;
  }

  it("accepted at a clock offset inside the certificate's validity (the OS clock alone would refuse it)", async () => {
    const p = small();
    const url = await serve(makeBundle({ ...p, key: d.privateKey }), {}, tls);
    const sys = fakeSystemctl({ status: "registered" });
    const flags = ["--ca", await caFile(), "--clock-offset-ms", String(20 * DAY), "--no-reboot"];
    expect(await updateCommand([url, ...diskFlags(d), ...flags], captureOutput().out, { run: sys.run })).toBe(
      0,
    );
    expect(await prefixHash(d, "system_b", p.system.length)).toBe(sha256(p.system));
    expect((await slots(d))["b"]).toMatchObject({ state: "written" });
  });

  for (const [what, offset] of [
    ["expired at the phone's clock", 60 * DAY],
    ["not yet valid at the phone's clock", 0],
    ["not yet valid, the clock behind the OS's", -5 * DAY],
  ] as const)
    it(`${what} → update-cert-time, zero bytes written`, async () => {
      const url = await serve(makeBundle({ ...small(), key: d.privateKey }), {}, tls);
      const before = await snapshot(d);
      const err = await failsWith(
        updateCommand(
          [url, ...diskFlags(d), "--ca", await caFile(), "--clock-offset-ms", String(offset)],
          captureOutput().out,
          { run: fakeSystemctl({ status: "registered" }).run },
        ),
      );
      expect(err.code, err.message).toBe("update-cert-time");
      expect(await snapshot(d)).toEqual(before);
      expect(server!.sent()).toBe(0); // no request was sent to a server that did not pass
    });

  it("without --ca (Node's roots) the lab's server is not trusted → update-cert-untrusted", async () => {
    const url = await serve(makeBundle({ ...small(), key: d.privateKey }), {}, tls);
    const before = await snapshot(d);
    const err = await failsWith(
      updateCommand([url, ...diskFlags(d), "--clock-offset-ms", String(20 * DAY)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    );
    expect(err.code, err.message).toBe("update-cert-untrusted");
    expect(await snapshot(d)).toEqual(before);
  });

  it("flags that make no sense are usage errors", async () => {
    for (const argv of [
      [join(d.root, "b.bin"), "--ca", "/x.pem"],
      ["http://127.0.0.1:1/b", "--clock-offset-ms", "1.5"],
      ["http://127.0.0.1:1/b", "--clock-offset-ms", String(11 * 366 * DAY)],
      ["http://127.0.0.1:1/b", "--idle-timeout", "0"],
    ]) {
      const err = await failsWith(
        updateCommand([...argv, ...diskFlags(d)], captureOutput().out, {
          run: fakeSystemctl({ status: "registered" }).run,
        }),
      );
      expect(err.code, argv.join(" ")).toBe("usage");
    }
    const err = await failsWith(
      updateCommand(
        ["http://127.0.0.1:1/b", "--ca", join(d.root, "missing.pem"), ...diskFlags(d)],
        captureOutput().out,
        {
          run: fakeSystemctl({ status: "registered" }).run,
        },
      ),
    );
    expect(err.code).toBe("update-ca-invalid");
  });
});

describe("bundle download (platform/bundle-download.ts)", () => {
  useDisk({ bootBytes: 4096, systemBytes: 4096 });
  it("is pulled: the server cannot run far ahead of what the reader took (TCP backpressure)", async () => {
    const body = randomBytes(64 * MIB);
    const url = await serve(body);
    const dl = await openBundleDownload(new URL(url), { clock: { now: () => Date.now() } });
    try {
      expect(dl.size).toBe(body.length);
      expect(Buffer.from(await dl.read(MIB)).equals(body.subarray(0, MIB))).toBe(true);
      await new Promise((r) => setTimeout(r, 300));
      // What the socket buffers hold (a few MiB on loopback), not the 64 MiB.
      expect(server!.sent()).toBeLessThan(24 * MIB);
      const rest = await dl.read(body.length - MIB);
      expect(sha256(rest)).toBe(sha256(body.subarray(MIB)));
      expect(dl.position).toBe(body.length);
      // Nothing past the Content-Length is ever asked for.
      await expect(dl.read(1)).rejects.toSatisfy(
        (e: unknown) => e instanceof HandsetError && e.code === "update-download-failed",
      );
    } finally {
      dl.close();
    }
  });
});
