/**
 * Issue 10: `handset store init --store DIR [--json]`, what handset-firstboot.service runs before
 * the phone's first start: the factory-state identity (the store's own loadOrCreate), created
 * once, found as it is on every later run, with no secret in what it prints.
 */
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../../firmware/cli.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { storeCommand } from "../../firmware/commands/store.ts";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { IdentityStore } from "../../firmware/store/identity-store.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "handset-store-init-"));
  dirs.push(d);
  return d;
}

/** `handset store init …` through the command line, as the first-boot unit runs it. */
async function init(dir: string): Promise<{ code: number; events: Array<Record<string, unknown>> }> {
  const lines: string[] = [];
  const code = await main(["store", "init", "--json", "--store", dir], {
    write: (l) => lines.push(l),
    writeErr: () => {},
  });
  return { code, events: lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const mode = async (p: string) => (await stat(p)).mode & 0o777;

describe("handset store init", () => {
  it("creates the factory-state identity: a 0700 directory, files no one else can read, one JSON event", async () => {
    const dir = join(await tempDir(), "var-lib-handset");
    const { code, events } = await init(dir);
    expect(code).toBe(0);
    expect(events).toHaveLength(1);
    const record = await new IdentityStore(nodeFileSystem, dir).load();
    expect(record).toBeDefined();
    expect(events[0]).toEqual({
      event: "store-init",
      ts: expect.any(String),
      created: true,
      store: dir,
      deviceId: record!.deviceId,
      epid: record!.epid,
      instanceId: record!.instanceId,
      signedIn: false,
    });
    expect(record!.credential).toBeUndefined();
    expect(await mode(dir)).toBe(0o700);
    const files = await readdir(dir);
    expect(files).toContain("identity.json");
    for (const f of files) expect((await mode(join(dir, f))) & 0o077, f).toBe(0);
  });

  it("a second run finds the same identity (created: false) and changes nothing", async () => {
    const dir = await tempDir();
    const first = await init(dir);
    const before = await readFile(join(dir, "identity.json"));
    const second = await init(dir);
    expect(second.code).toBe(0);
    expect(second.events[0]).toMatchObject({ event: "store-init", created: false });
    for (const k of ["deviceId", "epid", "instanceId"])
      expect(second.events[0]![k]).toBe(first.events[0]![k]);
    expect(await readFile(join(dir, "identity.json"))).toEqual(before);
  });

  it("an existing directory with loose modes is tightened to 0700", async () => {
    const dir = await tempDir();
    await chmod(dir, 0o755);
    expect((await init(dir)).code).toBe(0);
    expect(await mode(dir)).toBe(0o700);
  });

  it("refuses a store path that is a file, or below one, with a typed error (store-path-invalid)", async () => {
    const base = await tempDir();
    const file = join(base, "not-a-dir");
    await writeFile(file, "x");
    const out = createOutput(
      true,
      () => {},
      () => {},
    );
    await expect(storeCommand(["init", "--store", file], out)).rejects.toMatchObject({
      code: "store-path-invalid",
      flag: "--store",
      file,
    });
    await expect(storeCommand(["init", "--store", join(file, "store")], out)).rejects.toMatchObject({
      code: "store-path-invalid",
    });
    // Through the command line: exit 1 and one error event.
    const lines: string[] = [];
    const code = await main(["store", "init", "--json", "--store", file], {
      write: (l) => lines.push(l),
      writeErr: () => {},
    });
    expect(code).toBe(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ event: "error", code: "store-path-invalid" });
  });

  it("a damaged store is not replaced by a fresh identity: store-damaged, the evidence kept", async () => {
    const dir = await tempDir();
    await init(dir);
    await writeFile(join(dir, "identity.json"), "{ half a fi");
    await rm(join(dir, "identity.prev.json"), { force: true });
    const out = createOutput(
      true,
      () => {},
      () => {},
    );
    await expect(storeCommand(["init", "--store", dir], out)).rejects.toMatchObject({
      code: "store-damaged",
    });
    expect((await readdir(dir)).some((f) => f.startsWith("identity.corrupt-"))).toBe(true);
    expect(await readdir(dir)).not.toContain("identity.json");
  });
});
