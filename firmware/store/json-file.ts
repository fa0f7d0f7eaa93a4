/**
 * One small JSON document in flash beside the identity record (the fleet outbox, the fleet's
 * applied configuration): written whole and atomically (tmp, fsync, rename, directory fsync), 0600,
 * read back tolerantly — a file that does not parse is reported as absent with the reason, so a
 * damaged side file can never stop the phone (it only loses what that file held).
 */
import { type FileSystem, joinPath } from "./file-system.ts";

export interface JsonFile<T> {
  /** The document, or undefined when the file is missing or unreadable (`onDamaged` says why). */
  load(): Promise<T | undefined>;
  save(value: T): Promise<void>;
  remove(): Promise<void>;
}

const FILE_MODE = 0o600;

export function jsonFile<T>(
  fs: FileSystem,
  dir: string,
  name: string,
  o: { check: (v: unknown) => v is T; onDamaged?: (reason: string) => void },
): JsonFile<T> {
  const path = joinPath(dir, name);
  return {
    async load() {
      const bytes = await fs.readFile(path);
      if (!bytes) return undefined;
      let v: unknown;
      try {
        v = JSON.parse(bytes.toString("utf8"));
      } catch {
        o.onDamaged?.(`${name}: not JSON`);
        return undefined;
      }
      if (!o.check(v)) {
        o.onDamaged?.(`${name}: unexpected content`);
        return undefined;
      }
      return v;
    },
    async save(value) {
      await fs.mkdirp(dir, 0o700);
      await fs.writeFileAtomic(path, Buffer.from(`${JSON.stringify(value)}\n`), FILE_MODE);
    },
    remove: () => fs.remove(path),
  };
}
