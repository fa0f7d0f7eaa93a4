/**
 * Flash as a port. The store layer decides WHAT is written and in which order; the adapter
 * (platform/file-system.ts in production, an in-memory map in tests) decides HOW bytes reach
 * the medium. Paths are plain strings joined with "/" by the caller.
 */
export interface FileSystem {
  /** The file's bytes, or undefined when it does not exist. Other errors (EIO…) throw. */
  readFile(path: string): Promise<Buffer | undefined>;
  /**
   * Atomic replace: write `path.tmp-<rand>` (created exclusively, with `mode`), fsync it,
   * rename it over `path`, fsync the directory. After a power cut `path` holds either the
   * old bytes or the new ones; a `*.tmp-*` file may be left behind for the owner to clean.
   */
  writeFileAtomic(path: string, data: Buffer, mode: number): Promise<void>;
  /** Removes the file (and makes the removal durable); a missing file is fine. */
  remove(path: string): Promise<void>;
  /** Names (not paths) of the directory's entries; [] when the directory is missing. */
  list(dir: string): Promise<string[]>;
  /** Creates the directory and its parents; an existing directory is fine. */
  mkdirp(dir: string, mode: number): Promise<void>;
  /** Permission bits (e.g. 0o600), or undefined when the file does not exist. */
  mode(path: string): Promise<number | undefined>;
  /** Sets the permission bits of an existing file or directory, durably (no umask applies). */
  chmod(path: string, mode: number): Promise<void>;
}

/** Marker in the names of in-flight atomic writes; a leftover one is debris from a crash. */
export const TMP_MARKER = ".tmp-";

export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}
