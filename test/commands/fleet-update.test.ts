/**
 * The phone's half of the fleet `update` (firmware/commands/fleet-update.ts): the command's
 * arguments become a request file the root installer reads (validated as the installer validates
 * it, with the phone's clock as an offset from the OS's), and the installer's result file becomes
 * one report, read once. The root half and the emulated board's whole path are in
 * test/update/ and test/image/image.test.ts.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fleetUpdates, REQUEST_FILE, UPDATES_DIR } from "../../firmware/commands/fleet-update.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { RESULT_FILE, validateUpdateRequest } from "../../firmware/update/update-request.ts";

const OS_NOW = Date.UTC(2026, 11, 3, 12);
const PHONE_AHEAD_MS = 3_600_000; // the OS clock is an hour behind the phone's (no RTC, SNTP set the phone)

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "handset-fleet-update-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const updates = () =>
  fleetUpdates({
    storeDir: dir,
    fs: nodeFileSystem,
    random: new SeededRandom(7),
    phoneClock: { now: () => OS_NOW + PHONE_AHEAD_MS },
    osClock: { now: () => OS_NOW },
    ca: "/var/lib/handset/config/roots.pem",
  });

describe("fleet update: the request the phone leaves for the root installer", () => {
  it("writes a request the installer accepts: URL, version, the phone's clock offset, the roots, 0600", async () => {
    const r = await updates().request({
      url: "https://updates.example.test/b/0.2.0.bundle",
      version: "0.2.0",
    });
    expect(r).toMatchObject({ url: "https://updates.example.test/b/0.2.0.bundle", version: "0.2.0" });
    const path = join(dir, UPDATES_DIR, REQUEST_FILE);
    const written = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    expect(validateUpdateRequest(written)).toEqual({
      format: 1,
      id: r.id,
      url: "https://updates.example.test/b/0.2.0.bundle",
      requestedAt: OS_NOW + PHONE_AHEAD_MS,
      clockOffsetMs: PHONE_AHEAD_MS,
      version: "0.2.0",
      ca: "/var/lib/handset/config/roots.pem",
    });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, UPDATES_DIR))).mode & 0o777).toBe(0o700);
  });

  it.each([
    ["no url", {}],
    ["a url that is not http(s)", { url: "file:///etc/shadow" }],
    ["a version that is not semver", { url: "http://h/x.bundle", version: "latest" }],
    ["an argument it does not know", { url: "http://h/x.bundle", force: true }],
  ])("refuses %s, and leaves no request behind", async (_what, args) => {
    await expect(updates().request(args)).rejects.toMatchObject({
      code: expect.stringMatching(/^(bad-request|update-request-invalid)$/),
    });
    await expect(stat(join(dir, UPDATES_DIR, REQUEST_FILE))).rejects.toMatchObject({ code: "ENOENT" });
  });
});

describe("fleet update: the installer's result", () => {
  const resultPath = () => join(dir, UPDATES_DIR, RESULT_FILE);
  const put = async (v: unknown) => {
    await updates().request({ url: "http://h/x.bundle" }); // makes the folder, as a real run has
    await writeFile(resultPath(), typeof v === "string" ? v : JSON.stringify(v));
  };

  it("is read once, then gone", async () => {
    await put({ format: 1, id: "abc", ok: true, version: "0.2.0", slot: "b", at: OS_NOW });
    const u = updates();
    expect(await u.takeResult()).toMatchObject({ id: "abc", ok: true, version: "0.2.0", slot: "b" });
    expect(await u.takeResult()).toBeUndefined();
    await expect(stat(resultPath())).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("a failure carries its code", async () => {
    await put({ format: 1, id: "abc", ok: false, code: "update-tampered", message: "chunk 3", at: OS_NOW });
    expect(await updates().takeResult()).toMatchObject({ ok: false, code: "update-tampered" });
  });

  it("a file that is not the installer's is no result (and is removed)", async () => {
    await put({ format: 1, id: "abc", ok: true, code: "contradiction", at: OS_NOW });
    expect(await updates().takeResult()).toBeUndefined();
    await put("not json");
    expect(await updates().takeResult()).toBeUndefined();
    await expect(stat(resultPath())).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("none at all", async () => {
    expect(await updates().takeResult()).toBeUndefined();
  });
});
