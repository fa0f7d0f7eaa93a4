import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { type FileSystem, TMP_MARKER } from "../store/file-system.ts";

function isENOENT(err: unknown): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

/** fsync a directory so that a rename or unlink in it survives a power cut. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * The flash store's FileSystem on node:fs. The write recipe is the one that survives a pulled
 * plug on an SD card: exclusive tmp file with the final mode → write → fsync → close → rename
 * over the target → fsync the directory (without the last step the rename may be lost).
 */
export const nodeFileSystem: FileSystem = {
  async readFile(path) {
    try {
      return await readFile(path);
    } catch (err) {
      if (isENOENT(err)) return undefined;
      throw err;
    }
  },

  async writeFileAtomic(path, data, mode) {
    const tmp = `${path}${TMP_MARKER}${randomBytes(6).toString("hex")}`;
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.chmod(mode); // open()'s mode is filtered by the umask
      await fh.writeFile(data);
      await fh.sync();
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    try {
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    await syncDir(dirname(path));
  },

  async remove(path) {
    try {
      await rm(path);
    } catch (err) {
      if (isENOENT(err)) return;
      throw err;
    }
    await syncDir(dirname(path));
  },

  async list(dir) {
    try {
      return await readdir(dir);
    } catch (err) {
      if (isENOENT(err)) return [];
      throw err;
    }
  },

  async mkdirp(dir, mode) {
    const created = await mkdir(dir, { recursive: true, mode });
    if (created !== undefined) await chmod(dir, mode); // the umask applies to mkdir too
  },

  async mode(path) {
    try {
      return (await stat(path)).mode & 0o777;
    } catch (err) {
      if (isENOENT(err)) return undefined;
      throw err;
    }
  },

  async chmod(path, mode) {
    // Through a handle, so that the inode's new mode can be fsynced like any other write.
    const fh = await open(path, "r");
    try {
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
};
