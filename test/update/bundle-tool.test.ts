/**
 * scripts/update-bundle.ts, run as the image test runs it (`tsx scripts/update-bundle.ts keygen
 * --out DIR`, `create --version --arch --boot --system --key --out`): the bundle it writes is
 * format 2, its chunk digests are those of the payload files' 4 MiB slices, and the phone
 * installs it from a file.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { updateCommand } from "../../firmware/commands/update.ts";
import { CHUNK_BYTES, parseBundleHead } from "../../firmware/update/bundle-format.ts";
import {
  ARCH,
  captureOutput,
  fakeSystemctl,
  makeDisk,
  prefixHash,
  sha256,
  type TestDisk,
} from "./fixtures.ts";

const ROOT = resolve(import.meta.dirname, "../..");
const run = promisify(execFile);
const tool = (args: string[]) =>
  run(process.execPath, ["--import", "tsx", join(ROOT, "scripts/update-bundle.ts"), ...args], { cwd: ROOT });

let d: TestDisk;
beforeEach(async () => {
  d = await makeDisk({ bootBytes: 1024 * 1024, systemBytes: 12 * 1024 * 1024 });
});
afterEach(async () => {
  await d.cleanup();
});

describe("scripts/update-bundle.ts", () => {
  it("keygen + create (the flags the image test uses) make a format-2 bundle the phone installs", async () => {
    const keys = join(d.root, "signer");
    await tool(["keygen", "--out", keys]);
    const boot = randomBytes(200_000);
    const system = randomBytes(2 * CHUNK_BYTES + 4321);
    await writeFile(join(d.root, "boot.vfat"), boot);
    await writeFile(join(d.root, "system.erofs"), system);
    const out = join(d.root, "out", "b.bundle");
    const { stdout } = await tool([
      "create",
      "--version",
      "3.0.0",
      "--arch",
      ARCH,
      "--boot",
      join(d.root, "boot.vfat"),
      "--system",
      join(d.root, "system.erofs"),
      "--key",
      join(keys, "update-key.pem"),
      "--out",
      out,
    ]);
    expect(JSON.parse(stdout)).toMatchObject({ event: "bundle", out });
    const bytes = await readFile(out);
    const head = parseBundleHead(bytes, bytes.length);
    expect(head.header).toMatchObject({ format: 2, chunkBytes: CHUNK_BYTES, version: "3.0.0" });
    const sys = head.header.payloads.find((p) => p.name === "system")!;
    expect(sys.chunks).toEqual([
      sha256(system.subarray(0, CHUNK_BYTES)),
      sha256(system.subarray(CHUNK_BYTES, 2 * CHUNK_BYTES)),
      sha256(system.subarray(2 * CHUNK_BYTES)),
    ]);
    expect(sys.sha256).toBe(sha256(system));

    // The phone trusts the public key keygen made, and installs the file.
    const flags = ["--disk", d.disk, "--proc", d.proc, "--keys", join(keys, "update-keys"), "--no-reboot"];
    const code = await updateCommand([out, ...flags], captureOutput().out, {
      run: fakeSystemctl({ status: "registered" }).run,
    });
    expect(code).toBe(0);
    expect(await prefixHash(d, "system_b", system.length)).toBe(sha256(system));
  }, 60_000);
});
