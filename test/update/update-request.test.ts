/**
 * A fleet update's request and result (firmware/update/update-request.ts), and
 * `handset update --request FILE`: the request is removed before anything is installed, and
 * result.json (0644, atomic) answers it — ok:true before the trial boot, ok:false with the code
 * on any failure (and the command fails).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { updateCommand } from "../../firmware/commands/update.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import {
  encodeUpdateResult,
  parseUpdateRequest,
  requestIdOf,
  type UpdateRequest,
  UpdateRequestError,
  updateResult,
  validateUpdateRequest,
  validateUpdateResult,
} from "../../firmware/update/update-request.ts";
import { type BundleServer, serveBundle } from "./bundle-server.ts";
import {
  captureOutput,
  diskFlags,
  fakeSystemctl,
  makeBundle,
  makeDisk,
  prefixHash,
  sha256,
  snapshot,
  type TestDisk,
} from "./fixtures.ts";

const YEAR = 365.25 * 86_400_000;

const good = (): Record<string, unknown> => ({
  format: 1,
  id: "4f1c9a0b2d3e4f5a",
  url: "https://updates.example.com/handset/2.0.0.bundle?X-Sig=abc",
  requestedAt: 1_767_225_600_000,
  clockOffsetMs: -1234,
});

function fault(v: unknown): string | undefined {
  try {
    validateUpdateRequest(v);
    return undefined;
  } catch (e) {
    expect(e).toBeInstanceOf(UpdateRequestError);
    expect((e as HandsetError).code).toBe("update-request-invalid");
    return (e as UpdateRequestError).field ?? "(none)";
  }
}

describe("update request (pure)", () => {
  it("accepts the format, with and without the optional fields", () => {
    expect(validateUpdateRequest(good())).toEqual(good());
    const full = {
      ...good(),
      version: "2.0.0-rc.1",
      ca: "/var/lib/handset/roots.pem",
      url: "http://10.0.0.5/b",
    };
    expect(validateUpdateRequest(full)).toEqual(full);
    expect(parseUpdateRequest(JSON.stringify(full))).toEqual(full);
    expect(fault({ ...good(), clockOffsetMs: 10 * YEAR })).toBeUndefined();
    expect(
      fault({ ...good(), id: "x".repeat(128), url: `https://h/${"a".repeat(2048 - 10)}` }),
    ).toBeUndefined();
  });

  it("refuses every way it can be wrong, naming the field", () => {
    const cases: Array<[Record<string, unknown> | unknown, string]> = [
      [[good()], "(none)"],
      [null, "(none)"],
      [{ ...good(), format: 2 }, "format"],
      [{ ...good(), extra: 1 }, "extra"],
      [{ ...good(), id: "" }, "id"],
      [{ ...good(), id: "x".repeat(129) }, "id"],
      [{ ...good(), id: "a\nb" }, "id"],
      [{ ...good(), id: 7 }, "id"],
      [{ ...good(), url: "ftp://h/b" }, "url"],
      [{ ...good(), url: "file:///etc/passwd" }, "url"],
      [{ ...good(), url: "/relative" }, "url"],
      [{ ...good(), url: "https://user:pw@h/b" }, "url"],
      [{ ...good(), url: `https://h/${"a".repeat(2048)}` }, "url"],
      [{ ...good(), requestedAt: "now" }, "requestedAt"],
      [{ ...good(), requestedAt: -1 }, "requestedAt"],
      [{ ...good(), clockOffsetMs: 10 * YEAR + 1 }, "clockOffsetMs"],
      [{ ...good(), clockOffsetMs: Number.NaN }, "clockOffsetMs"],
      [{ ...good(), version: "2.0" }, "version"],
      [{ ...good(), ca: "roots.pem" }, "ca"],
      [{ ...good(), ca: "/a/../etc/shadow" }, "ca"],
      [{ ...good(), ca: 5 }, "ca"],
    ];
    for (const [v, field] of cases) expect(fault(v), JSON.stringify(v)).toBe(field);
    for (const k of ["id", "url", "requestedAt", "clockOffsetMs"]) {
      const v = good();
      delete v[k];
      expect(fault(v), k).toBe(k);
    }
    expect(() => parseUpdateRequest("{nope")).toThrow(UpdateRequestError);
    expect(() => parseUpdateRequest(" ".repeat(20_000))).toThrow(UpdateRequestError);
  });

  it("an invalid request's id is still used for its answer when it has a usable one", () => {
    expect(requestIdOf(JSON.stringify({ ...good(), url: "ftp://x" }))).toBe("4f1c9a0b2d3e4f5a");
    expect(requestIdOf(JSON.stringify({ id: 5 }))).toBe("");
    expect(requestIdOf("{nope")).toBe("");
    expect(requestIdOf(undefined)).toBe("");
  });

  it("results: ok has no code, a failure always has one; one line of message, bounded", () => {
    const ok = updateResult({ id: "i", ok: true, version: "2.0.0", slot: "b", at: 5 });
    expect(ok).toEqual({ format: 1, id: "i", ok: true, version: "2.0.0", slot: "b", at: 5 });
    expect(validateUpdateResult(JSON.parse(encodeUpdateResult(ok)))).toEqual(ok);
    const bad = updateResult({
      id: "i",
      ok: false,
      code: "update-tampered",
      message: `x${"y".repeat(5000)}\nmore`,
      at: 6,
    });
    expect(bad.code).toBe("update-tampered");
    expect(bad.message).toHaveLength(1024);
    expect(updateResult({ id: "i", ok: false, code: "Not A Code", at: 1 }).code).toBe("internal");
    expect(() => validateUpdateResult({ ...ok, code: "x" })).toThrow(UpdateRequestError);
    expect(() => validateUpdateResult({ ...bad, code: undefined })).toThrow(UpdateRequestError);
    expect(() => validateUpdateResult({ ...ok, slot: "c" })).toThrow(UpdateRequestError);
    expect(() => validateUpdateResult({ ...ok, more: 1 })).toThrow(UpdateRequestError);
  });
});

describe("handset update --request FILE", () => {
  let d: TestDisk;
  let server: BundleServer | undefined;
  let dir: string;
  beforeEach(async () => {
    d = await makeDisk({ bootBytes: 1024 * 1024, systemBytes: 6 * 1024 * 1024 });
    dir = join(d.root, "updates");
    await mkdir(dir);
  });
  afterEach(async () => {
    await server?.close();
    server = undefined;
    await d.cleanup();
  });

  const payloads = () => ({ boot: randomBytes(300 * 1024), system: randomBytes(5 * 1024 * 1024 + 3) });

  async function request(r: Partial<UpdateRequest> & { url: string }): Promise<string> {
    const file = join(dir, "request.json");
    await writeFile(
      file,
      JSON.stringify({ format: 1, id: "req-1", requestedAt: 1_767_225_600_000, clockOffsetMs: 0, ...r }),
      { mode: 0o600 },
    );
    return file;
  }

  async function result(): Promise<Record<string, unknown>> {
    const p = join(dir, "result.json");
    expect((await stat(p)).mode & 0o777).toBe(0o644);
    return JSON.parse(await readFile(p, "utf8")) as Record<string, unknown>;
  }

  async function exists(p: string): Promise<boolean> {
    return stat(p).then(
      () => true,
      () => false,
    );
  }

  it("removes the request, installs its URL, writes ok:true before the trial reboot", async () => {
    const p = payloads();
    server = await serveBundle(makeBundle({ ...p, version: "2.1.0", key: d.privateKey }));
    const file = await request({ url: server.url, version: "2.1.0", clockOffsetMs: 5000 });
    const sys = fakeSystemctl({ status: "registered" });
    let seenAtReboot: Record<string, unknown> | undefined;
    let requestAtReboot = true;
    const reboot = {
      trial: async () => {
        seenAtReboot = await result();
        requestAtReboot = await exists(file);
      },
      plain: async () => {},
    };
    const t0 = Date.now();
    expect(
      await updateCommand(
        ["--request", file, ...diskFlags(d)],
        captureOutput().out,
        { run: sys.run },
        reboot,
      ),
    ).toBe(0);
    expect(requestAtReboot).toBe(false);
    expect(seenAtReboot).toEqual({
      format: 1,
      id: "req-1",
      ok: true,
      version: "2.1.0",
      slot: "b",
      at: expect.any(Number),
    });
    // `at` is the phone's clock: the OS's plus the request's offset.
    const at = seenAtReboot!["at"] as number;
    expect(at).toBeGreaterThanOrEqual(t0 + 5000);
    expect(at).toBeLessThanOrEqual(Date.now() + 5000);
    expect(await prefixHash(d, "system_b", p.system.length)).toBe(sha256(p.system));
    // Only result.json is left in the directory (no tmp file).
    expect(await readdir(dir)).toEqual(["result.json"]);
  });

  it("version mismatch → ok:false update-version-mismatch, nothing written, the command fails", async () => {
    server = await serveBundle(makeBundle({ ...payloads(), version: "2.1.0", key: d.privateKey }));
    const file = await request({ url: server.url, version: "2.2.0" });
    const before = await snapshot(d);
    const sys = fakeSystemctl({ status: "registered" });
    await expect(
      updateCommand(["--request", file, ...diskFlags(d)], captureOutput().out, { run: sys.run }),
    ).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === "update-version-mismatch");
    expect(await exists(file)).toBe(false);
    expect(await snapshot(d)).toEqual(before);
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
    expect(await result()).toMatchObject({
      format: 1,
      id: "req-1",
      ok: false,
      code: "update-version-mismatch",
      version: "2.1.0",
      slot: "b",
      message: expect.stringContaining("2.2.0"),
    });
  });

  it("a tampered stream → ok:false update-tampered", async () => {
    const p = payloads();
    const b = Buffer.from(makeBundle({ ...p, key: d.privateKey }));
    b[b.length - 10]! ^= 1;
    server = await serveBundle(b);
    const file = await request({ url: server.url });
    await expect(
      updateCommand(["--request", file, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    ).rejects.toThrow(HandsetError);
    expect(await result()).toMatchObject({ id: "req-1", ok: false, code: "update-tampered" });
  });

  it("the phone busy → ok:false update-busy, the request gone (the phone asks again)", async () => {
    const file = await request({ url: "http://127.0.0.1:9/never" });
    await expect(
      updateCommand(["--request", file, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "in-call" }).run,
      }),
    ).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === "update-busy");
    expect(await exists(file)).toBe(false);
    expect(await result()).toMatchObject({ id: "req-1", ok: false, code: "update-busy" });
  });

  it("an invalid request is removed and answered under its id (update-request-invalid)", async () => {
    const file = join(dir, "request.json");
    await writeFile(
      file,
      JSON.stringify({ format: 1, id: "req-9", url: "ftp://x/b", requestedAt: 1, clockOffsetMs: 0 }),
    );
    const before = await snapshot(d);
    await expect(
      updateCommand(["--request", file, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    ).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === "update-request-invalid");
    expect(await exists(file)).toBe(false);
    expect(await snapshot(d)).toEqual(before);
    const r = await result();
    expect(r).toMatchObject({ format: 1, id: "req-9", ok: false, code: "update-request-invalid" });
    expect(validateUpdateResult(r)).toEqual(r);
  });

  it("no request file: an error, and no result (a previous one is not overwritten)", async () => {
    await writeFile(join(dir, "result.json"), "previous", { mode: 0o644 });
    await expect(
      updateCommand(["--request", join(dir, "request.json"), ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    ).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === "update-request-invalid");
    expect(await readFile(join(dir, "result.json"), "utf8")).toBe("previous");
  });

  it("--request with a SOURCE, --ca or --clock-offset-ms is a usage error (the request says them)", async () => {
    const file = await request({ url: "http://127.0.0.1:9/b" });
    for (const extra of [["http://127.0.0.1:9/b"], ["--ca", "/x.pem"], ["--clock-offset-ms", "5"]])
      await expect(
        updateCommand(["--request", file, ...extra, ...diskFlags(d)], captureOutput().out, {
          run: fakeSystemctl({ status: "registered" }).run,
        }),
      ).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === "usage");
    expect(await exists(file)).toBe(true); // a usage error takes nothing
  });
});
