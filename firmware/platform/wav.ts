/**
 * WAV files of the one format a narrowband call carries: 16-bit signed little-endian PCM, mono,
 * 8000 Hz. Used as a media source (play a prompt or a test signal into a call) and sink (record
 * what the far end sent). Anything else is refused with a typed error rather than resampled or
 * mixed down: a test that meant to send a tone should learn its file is wrong, not hear noise.
 *
 * Layout (RIFF): "RIFF" size "WAVE", then chunks of id(4) size(4, little-endian) body, each padded
 * to an even length. "fmt " holds format 1 (PCM) — or 0xFFFE (extensible) whose sub-format is
 * PCM —, channels, sample rate, byte rate, block align, bits per sample. "data" holds the samples.
 * Other chunks (LIST, fact, cue) are skipped. A data size larger than the file (a recorder that
 * never went back to patch it, or 0xFFFFFFFF for "unknown") is read as "up to the end".
 */
import { readFile, writeFile } from "node:fs/promises";
import { HandsetError } from "../core/errors.ts";

export const WAV_SAMPLE_RATE = 8000;

export type WavErrorCode = "wav-not-riff" | "wav-format" | "wav-no-data" | "wav-truncated" | "wav-io";

export class WavError extends HandsetError {
  constructor(code: WavErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

const FORMAT_PCM = 1;
const FORMAT_EXTENSIBLE = 0xfffe;

const tag = (b: Uint8Array, at: number) => String.fromCharCode(b[at]!, b[at + 1]!, b[at + 2]!, b[at + 3]!);

/** The samples of a 16-bit mono 8 kHz PCM WAV file. Throws WavError for anything else. */
export function parseWav(bytes: Uint8Array): Int16Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 12 || tag(bytes, 0) !== "RIFF" || tag(bytes, 8) !== "WAVE")
    throw new WavError("wav-not-riff", "not a RIFF/WAVE file");
  let fmt: { format: number; channels: number; rate: number; bits: number } | undefined;
  let at = 12;
  while (at + 8 <= bytes.length) {
    const id = tag(bytes, at);
    const size = v.getUint32(at + 4, true);
    const body = at + 8;
    if (id === "fmt ") {
      if (size < 16 || body + size > bytes.length)
        throw new WavError("wav-truncated", "fmt chunk is cut short");
      let format = v.getUint16(body, true);
      // WAVE_FORMAT_EXTENSIBLE names the real format in the first two bytes of its sub-format GUID.
      if (format === FORMAT_EXTENSIBLE && size >= 40) format = v.getUint16(body + 24, true);
      fmt = {
        format,
        channels: v.getUint16(body + 2, true),
        rate: v.getUint32(body + 4, true),
        bits: v.getUint16(body + 14, true),
      };
    } else if (id === "data") {
      if (!fmt) throw new WavError("wav-format", "data chunk before the fmt chunk");
      if (fmt.format !== FORMAT_PCM || fmt.channels !== 1 || fmt.rate !== WAV_SAMPLE_RATE || fmt.bits !== 16)
        throw new WavError(
          "wav-format",
          `need 16-bit mono ${WAV_SAMPLE_RATE} Hz PCM, file is format ${fmt.format}, ${fmt.channels} channel(s), ${fmt.rate} Hz, ${fmt.bits}-bit`,
        );
      const available = Math.min(size, bytes.length - body);
      const samples = Math.floor(available / 2);
      const out = new Int16Array(samples);
      for (let i = 0; i < samples; i++) out[i] = v.getInt16(body + 2 * i, true);
      return out;
    }
    at = body + size + (size & 1);
  }
  throw new WavError(fmt ? "wav-no-data" : "wav-format", fmt ? "no data chunk" : "no fmt chunk");
}

/** A 16-bit mono 8 kHz PCM WAV file holding `pcm`. */
export function encodeWav(pcm: Int16Array): Uint8Array {
  const dataBytes = pcm.length * 2;
  const out = new Uint8Array(44 + dataBytes);
  const v = new DataView(out.buffer);
  const put = (at: number, s: string) => {
    for (let i = 0; i < 4; i++) out[at + i] = s.charCodeAt(i);
  };
  put(0, "RIFF");
  v.setUint32(4, 36 + dataBytes, true);
  put(8, "WAVE");
  put(12, "fmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, FORMAT_PCM, true);
  v.setUint16(22, 1, true);
  v.setUint32(24, WAV_SAMPLE_RATE, true);
  v.setUint32(28, WAV_SAMPLE_RATE * 2, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  put(36, "data");
  v.setUint32(40, dataBytes, true);
  for (let i = 0; i < pcm.length; i++) v.setInt16(44 + 2 * i, pcm[i]!, true);
  return out;
}

export async function readWavFile(path: string): Promise<Int16Array> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new WavError("wav-io", `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseWav(bytes);
}

export async function writeWavFile(path: string, pcm: Int16Array): Promise<void> {
  try {
    await writeFile(path, encodeWav(pcm));
  } catch (err) {
    throw new WavError("wav-io", `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}
