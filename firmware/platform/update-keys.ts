/**
 * The keys an update must be signed with: Ed25519 public keys, PEM SPKI ("BEGIN PUBLIC KEY"),
 * one per *.pem file in a directory (default /etc/handset/update-keys/, where the image build
 * installs them). There is never a key in the code: no key file → every update is refused
 * (update-no-key). A file that is not an Ed25519 public key (a private key put there by
 * mistake, an RSA key, garbage) is refused loudly rather than skipped.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { HandsetError } from "../core/errors.ts";

export const DEFAULT_UPDATE_KEYS_DIR = "/etc/handset/update-keys";

export interface UpdateKey {
  file: string;
  key: KeyObject;
}

export async function loadUpdateKeys(dir = DEFAULT_UPDATE_KEYS_DIR): Promise<UpdateKey[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith(".pem")).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ENOTDIR")
      names = [];
    else throw err;
  }
  const keys: UpdateKey[] = [];
  for (const n of names) {
    const file = join(dir, n);
    const pem = await readFile(file, "utf8");
    if (!/^-----BEGIN PUBLIC KEY-----/m.test(pem) || /PRIVATE KEY-----/.test(pem))
      throw new HandsetError("update-key-invalid", `${file} is not a PEM public key (SPKI)`);
    let key: KeyObject;
    try {
      key = createPublicKey({ key: pem, format: "pem" });
    } catch (err) {
      throw new HandsetError("update-key-invalid", `${file}: cannot read the key`, { cause: err });
    }
    if (key.asymmetricKeyType !== "ed25519")
      throw new HandsetError(
        "update-key-invalid",
        `${file} is a ${key.asymmetricKeyType ?? "unknown"} key, updates are signed with Ed25519`,
      );
    keys.push({ file, key });
  }
  if (keys.length === 0)
    throw new HandsetError(
      "update-no-key",
      `no update key in ${dir}: this phone accepts no update (install an Ed25519 public key there)`,
    );
  return keys;
}

/** The key that made this signature over `data`, or undefined when none did. */
export function verifyEd25519(
  keys: UpdateKey[],
  data: Uint8Array,
  signature: Uint8Array,
): UpdateKey | undefined {
  if (signature.length !== 64) return undefined;
  return keys.find((k) => {
    try {
      return verify(null, data, k.key, signature);
    } catch {
      return false;
    }
  });
}
