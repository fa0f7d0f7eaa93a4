/**
 * Every file a command is given is read and parsed at start, before any network I/O, so that a
 * wrong file is one line naming the flag, the file and what is wrong with it, not a TLS alert
 * half-way through a handshake.
 */
import { createPrivateKey, createPublicKey, type KeyObject, X509Certificate } from "node:crypto";
import { readFile, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { HandsetError } from "../core/errors.ts";

/** A bad input file or path: the flag (or configuration key) and the file are fields too. */
export class InputError extends HandsetError {
  readonly flag: string;
  readonly file: string;

  constructor(code: string, flag: string, file: string, what: string) {
    super(code, `${flag} ${file}: ${what}`);
    this.flag = flag;
    this.file = file;
  }
}

/** "--ca" for a flag name, or a configuration key as it is ("trustedRoots"). */
const label = (flag: string) => (/^[a-z][a-z-]*$/.test(flag) ? `--${flag}` : flag);

function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EISDIR") return "is a directory, not a file";
  if (code === "ENOTDIR") return "a folder on its path is a file, not a directory";
  return (err as Error).message.split("\n")[0]!;
}

async function readText(path: string, flag: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    throw new InputError("file-unreadable", label(flag), path, reason(err));
  }
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n[\s\S]*?-----END \1-----/g;

function blocks(text: string): Array<{ type: string; pem: string }> {
  return [...text.matchAll(PEM_BLOCK)].map((m) => ({ type: m[1]!, pem: m[0] }));
}

/** Every certificate in a PEM text; an error naming the file when there is none or one is broken. */
function certificatesIn(text: string, flag: string, path: string): X509Certificate[] {
  const certs = blocks(text).filter((b) => b.type === "CERTIFICATE");
  if (certs.length === 0) {
    const other = blocks(text)[0]?.type;
    throw new InputError(
      "pem-invalid",
      label(flag),
      path,
      other ? `no certificate in file (it holds a ${other})` : "no certificate in file (not PEM)",
    );
  }
  return certs.map((b, i) => {
    try {
      return new X509Certificate(b.pem);
    } catch {
      throw new InputError("pem-invalid", label(flag), path, `certificate ${i + 1} in file is not valid`);
    }
  });
}

/** A PEM file of one (the first) certificate: `--cert`. */
export async function readCertificateFile(path: string, flag: string): Promise<string> {
  const text = await readText(path, flag);
  certificatesIn(text, flag, path);
  return text;
}

/** A PEM file of trusted roots (one or more certificates): `--ca`, `trustedRoots`. */
export async function readTrustFile(path: string, flag: string): Promise<string> {
  const text = await readText(path, flag);
  certificatesIn(text, flag, path);
  return text;
}

/** A PEM file of a private key: `--key`. */
export async function readKeyFile(path: string, flag: string): Promise<{ pem: string; key: KeyObject }> {
  const text = await readText(path, flag);
  const keyBlock = blocks(text).find((b) => /PRIVATE KEY$/.test(b.type));
  if (!keyBlock) {
    const other = blocks(text)[0]?.type;
    throw new InputError(
      "pem-invalid",
      label(flag),
      path,
      other ? `no private key in file (it holds a ${other})` : "no private key in file (not PEM)",
    );
  }
  try {
    return { pem: text, key: createPrivateKey(keyBlock.pem) };
  } catch {
    throw new InputError(
      "pem-invalid",
      label(flag),
      path,
      keyBlock.type === "ENCRYPTED PRIVATE KEY"
        ? "the private key is encrypted (give an unencrypted key)"
        : "the private key in file is not valid",
    );
  }
}

/** The key must be the certificate's: compare the public keys. */
export function checkKeyMatchesCertificate(
  certPem: string,
  key: KeyObject,
  paths: { cert: string; key: string },
): void {
  const certKey = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  const ours = createPublicKey(key).export({ type: "spki", format: "der" });
  if (!Buffer.from(certKey).equals(Buffer.from(ours)))
    throw new InputError(
      "key-mismatch",
      "--key",
      paths.key,
      `the key does not match the certificate in --cert ${paths.cert}`,
    );
}

/**
 * A store directory: it may not exist yet (it is created), but what is there must be a
 * directory, and so must the nearest folder above it that exists.
 */
export async function checkStoreDir(path: string, flag: string): Promise<void> {
  const isDir = async (p: string) => {
    try {
      return (await stat(p)).isDirectory();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new InputError("store-path-invalid", label(flag), path, reason(err));
    }
  };
  const here = await isDir(path);
  if (here === false)
    throw new InputError("store-path-invalid", label(flag), path, "is a file, not a directory");
  if (here === true) return;
  let up = dirname(resolve(path));
  for (;;) {
    const d = await isDir(up);
    if (d === false)
      throw new InputError("store-path-invalid", label(flag), path, `${up} is a file, not a directory`);
    if (d === true || up === dirname(up)) return;
    up = dirname(up);
  }
}

/** `--NAME URL`: an https URL (a certificate provisioning service). */
export function httpsUrl(text: string, flag: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new HandsetError("usage", `--${flag} must be an https URL, got "${text}"`);
  }
  if (url.protocol !== "https:")
    throw new HandsetError("usage", `--${flag} must be an https URL, got "${text}" (${url.protocol} scheme)`);
  return text;
}
