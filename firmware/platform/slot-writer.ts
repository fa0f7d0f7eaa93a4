/**
 * Writes one payload of a bundle to one partition (thin I/O; the decisions are in update/).
 *
 * - never the running slot: the target is refused when it is (after symlinks: by-partlabel
 *   names are links) the same file or block device as any protected partition;
 * - verify first: the payload's bytes in the bundle are hashed before the partition is opened;
 * - then copied in chunks, hashed again as they are read (the bundle may not change under us),
 *   fdatasync'ed, and read back from the partition and compared with the signed sha256.
 *
 * A streamed payload (writeStreamedPayload: a download too big to keep) cannot be hashed before
 * the write, so it is verified chunk by chunk instead: each chunk is hashed against its signed
 * digest and only then written at its offset; a mismatch stops before that chunk touches the
 * disk (the chunks before it, each verified, may have been written). Then fdatasync and the same
 * read-back against the whole payload's signed sha256.
 *
 * A partition is a block device on the phone (its size from /sys/dev/block/M:N/size) or a plain
 * file in a test (its size is the file's). A payload smaller than its partition leaves the rest
 * as it was (erofs and FAT know their own length).
 */
import { createHash } from "node:crypto";
import { type FileHandle, open, readFile, realpath, stat } from "node:fs/promises";
import { HandsetError } from "../core/errors.ts";
import { type PayloadEntry, verifiedChunks } from "../update/bundle-format.ts";

export const CHUNK_BYTES = 4 * 1024 * 1024;

/** Linux's dev_t split (glibc's gnu_dev_major/minor). */
function majorMinor(rdev: number): [number, number] {
  const big = BigInt(rdev);
  const major = Number(((big >> 8n) & 0xfffn) | ((big >> 32n) & ~0xfffn));
  const minor = Number((big & 0xffn) | ((big >> 12n) & ~0xffn));
  return [major, minor];
}

/** The size in bytes of a partition: a block device's from sysfs, a file's from stat. */
export async function partitionBytes(path: string): Promise<number> {
  let s: Awaited<ReturnType<typeof stat>>;
  try {
    s = await stat(path);
  } catch (err) {
    throw new HandsetError("partition-missing", `partition ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (s.isFile()) return s.size;
  if (s.isBlockDevice()) {
    const [major, minor] = majorMinor(s.rdev);
    const sectors = (await readFile(`/sys/dev/block/${major}:${minor}/size`, "utf8")).trim();
    if (!/^\d+$/.test(sectors))
      throw new HandsetError("partition-missing", `partition ${path}: unknown size`);
    return Number(sectors) * 512;
  }
  throw new HandsetError("partition-missing", `partition ${path} is neither a block device nor a file`);
}

/** The identity of a file or device, through symlinks. */
async function identity(path: string): Promise<string | undefined> {
  try {
    const real = await realpath(path);
    const s = await stat(real);
    return s.isBlockDevice() ? `blk:${s.rdev}` : `ino:${s.dev}:${s.ino}`;
  } catch {
    return undefined;
  }
}

/** Refuses a target that is one of the protected partitions (the running slot's). */
export async function assertNotProtected(target: string, protectedPaths: string[]): Promise<void> {
  const t = await identity(target);
  if (t === undefined) throw new HandsetError("partition-missing", `partition ${target} does not exist`);
  for (const p of protectedPaths) {
    if (p === target || (await identity(p)) === t)
      throw new HandsetError(
        "update-running-slot",
        `refusing to write ${target}: it is the running slot's partition (${p})`,
      );
  }
}

async function readFully(fh: FileHandle, buf: Buffer, length: number, position: number): Promise<void> {
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) throw new HandsetError("update-malformed", "update bundle: shorter than it said");
    got += bytesRead;
  }
}

/** sha256 (hex) of `size` bytes of a file from `start`. */
export async function sha256Range(
  path: string,
  start: number,
  size: number,
  chunk = CHUNK_BYTES,
): Promise<string> {
  const fh = await open(path, "r");
  try {
    const h = createHash("sha256");
    const buf = Buffer.allocUnsafe(Math.min(chunk, Math.max(size, 1)));
    for (let done = 0; done < size; ) {
      const n = Math.min(buf.length, size - done);
      await readFully(fh, buf, n, start + done);
      h.update(buf.subarray(0, n));
      done += n;
    }
    return h.digest("hex");
  } finally {
    await fh.close();
  }
}

export interface PayloadWrite {
  /** The bundle file, and where the payload is in it. */
  source: string;
  start: number;
  size: number;
  /** The signed digest (lower-case hex). */
  sha256: string;
  /** The partition to write. */
  target: string;
  /** Partitions that must not be written (the running slot's). */
  protected: string[];
  chunkBytes?: number;
  /**
   * The caller hashed this range against the signed digest a moment ago (the update command
   * verifies every payload before it writes any): skip the pass before the write. The bytes are
   * hashed again as they are copied either way.
   */
  preverified?: boolean;
  /** After each chunk is written: bytes so far. */
  onProgress?: (written: number) => void;
}

export interface PayloadWritten {
  target: string;
  bytes: number;
  sha256: string;
}

/** Writes one payload: refuse → verify → write in chunks → fdatasync → read back and compare. */
export async function writePayload(w: PayloadWrite): Promise<PayloadWritten> {
  const chunk = w.chunkBytes ?? CHUNK_BYTES;
  await assertNotProtected(w.target, w.protected);
  const room = await partitionBytes(w.target);
  if (w.size > room)
    throw new HandsetError(
      "update-too-large",
      `payload of ${w.size} bytes does not fit ${w.target} (${room})`,
    );
  // Verify first: nothing is opened for writing before the bytes match their signed digest.
  if (!w.preverified && (await sha256Range(w.source, w.start, w.size, chunk)) !== w.sha256)
    throw new HandsetError(
      "update-tampered",
      `update payload for ${w.target} does not match its signed sha256`,
    );
  const src = await open(w.source, "r");
  try {
    const dst = await open(w.target, "r+");
    try {
      const h = createHash("sha256");
      const buf = Buffer.allocUnsafe(Math.min(chunk, w.size));
      for (let done = 0; done < w.size; ) {
        const n = Math.min(buf.length, w.size - done);
        await readFully(src, buf, n, w.start + done);
        h.update(buf.subarray(0, n));
        for (let off = 0; off < n; ) {
          const { bytesWritten } = await dst.write(buf, off, n - off, done + off);
          off += bytesWritten;
        }
        done += n;
        w.onProgress?.(done);
      }
      if (h.digest("hex") !== w.sha256)
        throw new HandsetError("update-tampered", "the update bundle changed while it was being written");
      await dst.datasync();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  const back = await sha256Range(w.target, 0, w.size, chunk);
  if (back !== w.sha256)
    throw new HandsetError(
      "update-write-failed",
      `${w.target} does not read back as written (sha256 ${back})`,
    );
  return { target: w.target, bytes: w.size, sha256: back };
}

async function writeFully(fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let off = 0; off < bytes.length; ) {
    const { bytesWritten } = await fh.write(bytes, off, bytes.length - off, position + off);
    off += bytesWritten;
  }
}

export interface StreamedPayloadWrite {
  /** The payload as the verified header signs it (size, sha256, chunk digests). */
  payload: PayloadEntry;
  chunkBytes: number;
  /** The next n bytes of the download: exactly n, or a rejection (update-download-failed). */
  read: (n: number) => Promise<Uint8Array>;
  target: string;
  protected: string[];
  /** After each chunk is written: bytes so far. */
  onProgress?: (written: number) => void;
}

/**
 * Writes one payload from a stream: refuse → for each chunk: verify against its signed digest,
 * then a positional write → fdatasync → read back and compare with the whole payload's sha256.
 */
export async function writeStreamedPayload(w: StreamedPayloadWrite): Promise<PayloadWritten> {
  const { payload: p } = w;
  await assertNotProtected(w.target, w.protected);
  const room = await partitionBytes(w.target);
  if (p.size > room)
    throw new HandsetError(
      "update-too-large",
      `payload of ${p.size} bytes does not fit ${w.target} (${room})`,
    );
  const whole = createHash("sha256");
  const dst = await open(w.target, "r+");
  try {
    for await (const c of verifiedChunks(p, w.chunkBytes, w.read)) {
      whole.update(c.bytes);
      await writeFully(dst, c.bytes, c.offset);
      w.onProgress?.(c.offset + c.bytes.length);
    }
    // Every chunk matched its signed digest; a whole digest that still disagrees is a header that
    // contradicts itself (signed so, but not a bundle `create` makes).
    if (whole.digest("hex") !== p.sha256)
      throw new HandsetError(
        "update-malformed",
        `update payload "${p.name}": its signed chunk digests and sha256 disagree`,
      );
    await dst.datasync();
  } finally {
    await dst.close();
  }
  const back = await sha256Range(w.target, 0, p.size);
  if (back !== p.sha256)
    throw new HandsetError(
      "update-write-failed",
      `${w.target} does not read back as written (sha256 ${back})`,
    );
  return { target: w.target, bytes: p.size, sha256: back };
}
