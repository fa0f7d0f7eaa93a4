/**
 * An in-memory FileSystem for unit tests (never shipped). writeFileAtomic is atomic by
 * construction; `crashAfter(n)` makes the n+1-th mutating operation fail and every later one
 * too, as if the power went: a write cut there leaves its tmp file half-written (debris),
 * exactly what a real crash between write and rename leaves behind.
 */
import type { FileSystem } from "../../firmware/store/file-system.ts";

export class PowerCut extends Error {
  constructor() {
    super("power cut");
  }
}

interface Entry {
  data: Buffer;
  mode: number;
}

export class MemoryFileSystem implements FileSystem {
  readonly files = new Map<string, Entry>();
  readonly dirs = new Set<string>();
  /** Every mutating operation, in order, e.g. "write identity.json". */
  readonly log: string[] = [];
  private budget = Number.POSITIVE_INFINITY;
  private seq = 0;

  /** Allow n more mutating operations, then fail them all. */
  crashAfter(n: number): void {
    this.budget = n;
  }

  /** Power back on. */
  restore(): void {
    this.budget = Number.POSITIVE_INFINITY;
  }

  private spend(what: string): void {
    if (this.budget <= 0) throw new PowerCut();
    this.budget--;
    this.log.push(what);
  }

  async readFile(path: string): Promise<Buffer | undefined> {
    const e = this.files.get(path);
    return e && Buffer.from(e.data);
  }

  async writeFileAtomic(path: string, data: Buffer, mode: number): Promise<void> {
    const tmp = `${path}.tmp-${(++this.seq).toString(16).padStart(6, "0")}`;
    if (this.budget <= 0) {
      // Cut before the rename: a torn tmp file is all that reaches the medium.
      this.files.set(tmp, { data: Buffer.from(data.subarray(0, data.length >> 1)), mode });
      throw new PowerCut();
    }
    this.spend(`write ${path.slice(path.lastIndexOf("/") + 1)}`);
    this.files.set(path, { data: Buffer.from(data), mode });
  }

  async remove(path: string): Promise<void> {
    if (!this.files.has(path)) return;
    this.spend(`remove ${path.slice(path.lastIndexOf("/") + 1)}`);
    this.files.delete(path);
  }

  async list(dir: string): Promise<string[]> {
    const prefix = dir.endsWith("/") ? dir : `${dir}/`;
    return [...this.files.keys()]
      .filter((p) => p.startsWith(prefix) && !p.slice(prefix.length).includes("/"))
      .map((p) => p.slice(prefix.length));
  }

  async mkdirp(dir: string, _mode: number): Promise<void> {
    this.dirs.add(dir);
  }

  async mode(path: string): Promise<number | undefined> {
    return this.files.get(path)?.mode;
  }

  async chmod(path: string, mode: number): Promise<void> {
    const e = this.files.get(path);
    if (!e) {
      if (this.dirs.has(path)) return; // directories carry no mode here
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: "ENOENT" });
    }
    this.spend(`chmod ${path.slice(path.lastIndexOf("/") + 1)}`);
    e.mode = mode;
  }
}
