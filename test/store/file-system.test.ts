/** One contract for every FileSystem: the production adapter and the in-memory test double. */
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import type { FileSystem } from "../../firmware/store/file-system.ts";
import { MemoryFileSystem } from "./memory-file-system.ts";

const impls: Array<[string, () => FileSystem]> = [
  ["nodeFileSystem", () => nodeFileSystem],
  ["MemoryFileSystem", () => new MemoryFileSystem()],
];

describe.each(impls)("FileSystem contract: %s", (_name, make) => {
  let fs: FileSystem;
  let dir: string;

  beforeEach(async () => {
    fs = make();
    dir = join(await mkdtemp(join(tmpdir(), "handset-fs-")), "a", "b");
    await fs.mkdirp(dir, 0o700);
  });

  afterEach(async () => {
    await rm(join(dir, "..", ".."), { recursive: true, force: true });
  });

  it("reads undefined for a missing file and [] for a missing directory", async () => {
    expect(await fs.readFile(join(dir, "nope"))).toBeUndefined();
    expect(await fs.mode(join(dir, "nope"))).toBeUndefined();
    expect(await fs.list(join(dir, "missing"))).toEqual([]);
  });

  it("writes atomically with the given mode, replaces, and leaves no tmp file", async () => {
    const p = join(dir, "f.json");
    await fs.writeFileAtomic(p, Buffer.from("one"), 0o600);
    await fs.writeFileAtomic(p, Buffer.from("two"), 0o600);
    expect((await fs.readFile(p))?.toString()).toBe("two");
    expect(await fs.mode(p)).toBe(0o600);
    expect(await fs.list(dir)).toEqual(["f.json"]);
  });

  it("removes, and removing a missing file is fine", async () => {
    const p = join(dir, "f");
    await fs.writeFileAtomic(p, Buffer.from("x"), 0o600);
    await fs.remove(p);
    await fs.remove(p);
    expect(await fs.readFile(p)).toBeUndefined();
    expect(await fs.list(dir)).toEqual([]);
  });
});

describe("nodeFileSystem specifics", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "handset-fs-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("applies the mode despite the umask (0600 file, 0700 directory)", async () => {
    const old = process.umask(0o022);
    try {
      const dir = join(root, "store");
      await nodeFileSystem.mkdirp(dir, 0o700);
      await nodeFileSystem.writeFileAtomic(join(dir, "k"), Buffer.from("secret"), 0o600);
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      expect((await stat(join(dir, "k"))).mode & 0o777).toBe(0o600);
    } finally {
      process.umask(old);
    }
  });

  it("cleans its tmp file when the write fails", async () => {
    await expect(
      nodeFileSystem.writeFileAtomic(join(root, "no-such-dir", "f"), Buffer.from("x"), 0o600),
    ).rejects.toThrow();
    await nodeFileSystem.mkdirp(join(root, "d"), 0o700);
    // rename onto a directory fails after the tmp file was written
    await expect(nodeFileSystem.writeFileAtomic(join(root, "d"), Buffer.from("x"), 0o600)).rejects.toThrow();
    expect(await readdir(root)).toEqual(["d"]);
  });
});
