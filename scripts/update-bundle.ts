/**
 * The update bundle tool (firmware/update/bundle-format.ts), run with `npx tsx`:
 *
 *   tsx scripts/update-bundle.ts create --version V --arch arm64|amd64 --boot FILE --system FILE \
 *       --key PRIVATE.pem --out FILE
 *     signs the header (format 2: every payload's size, sha256 and the sha256 of each of its 4 MiB
 *     chunks, so that a phone streaming the bundle can check each chunk before writing it) with an
 *     Ed25519 private key (PKCS8 PEM) and writes magic ‖ length ‖ header ‖ signature ‖ boot ‖ system.
 *
 *   tsx scripts/update-bundle.ts keygen --out DIR
 *     DIR/update-key.pem (private, 0600: the signer keeps it) and DIR/update-keys/update-key.pub.pem
 *     (public: what the image installs in /etc/handset/update-keys/). For tests and the lab only.
 *
 * Prints one JSON line saying what it wrote.
 */
import { createPrivateKey, generateKeyPairSync, sign } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import {
  ARCHES,
  type Arch,
  encodeBundleHead,
  encodeHeader,
  isValidVersion,
  makeHeader,
  PayloadDigester,
  type PayloadDigests,
} from "../firmware/update/bundle-format.ts";

function fail(message: string): never {
  process.stderr.write(`update-bundle: ${message}\n`);
  process.exit(2);
}

/** A payload file's size, sha256 and chunk digests, in one read of it. */
async function digestFile(path: string): Promise<PayloadDigests> {
  const d = new PayloadDigester();
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 2 ** 20 })) d.update(chunk as Buffer);
  return d.digest();
}

export async function createBundle(o: {
  version: string;
  arch: Arch;
  boot: string;
  system: string;
  keyPem: string;
  out: string;
}): Promise<{ out: string; bytes: number; header: unknown }> {
  const key = createPrivateKey({ key: o.keyPem, format: "pem" });
  if (key.asymmetricKeyType !== "ed25519") throw new Error("the key is not an Ed25519 private key");
  const boot = await digestFile(o.boot);
  const system = await digestFile(o.system);
  const header = makeHeader({
    version: o.version,
    arch: o.arch,
    payloads: [
      { name: "boot", ...boot },
      { name: "system", ...system },
    ],
  });
  const headerBytes = encodeHeader(header);
  const signature = sign(null, headerBytes, key);
  const tmp = `${o.out}.tmp-${process.pid}`;
  const fh = await open(tmp, "w", 0o644);
  try {
    await fh.write(encodeBundleHead(headerBytes, signature));
    for (const file of [o.boot, o.system])
      for await (const chunk of createReadStream(file, { highWaterMark: 4 * 2 ** 20 }))
        await fh.write(chunk as Buffer);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, o.out);
  return { out: o.out, bytes: (await stat(o.out)).size, header };
}

export async function keygen(dir: string): Promise<{ privateKey: string; publicKey: string }> {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  await mkdir(join(dir, "update-keys"), { recursive: true });
  const priv = join(dir, "update-key.pem");
  const pub = join(dir, "update-keys", "update-key.pub.pem");
  await writeFile(priv, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600, flag: "wx" });
  await chmod(priv, 0o600);
  await writeFile(pub, publicKey.export({ type: "spki", format: "pem" }), { mode: 0o644 });
  return { privateKey: priv, publicKey: pub };
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const { values } = parseArgs({
    args: rest,
    strict: true,
    options: {
      version: { type: "string" },
      arch: { type: "string" },
      boot: { type: "string" },
      system: { type: "string" },
      key: { type: "string" },
      out: { type: "string" },
    },
  });
  if (cmd === "keygen") {
    if (!values.out) fail("keygen --out DIR");
    const r = await keygen(resolve(values.out));
    process.stdout.write(`${JSON.stringify({ event: "keygen", ...r })}\n`);
    return;
  }
  if (cmd !== "create") fail("usage: update-bundle.ts create … | keygen --out DIR");
  const { version, arch, boot, system, key, out } = values;
  if (!version || !arch || !boot || !system || !key || !out)
    fail("create needs --version --arch --boot --system --key --out");
  if (!isValidVersion(version)) fail(`--version ${version} is not MAJOR.MINOR.PATCH[-pre][+build]`);
  if (!(ARCHES as readonly string[]).includes(arch)) fail(`--arch must be ${ARCHES.join(" or ")}`);
  await mkdir(dirname(resolve(out)), { recursive: true });
  const r = await createBundle({
    version,
    arch: arch as Arch,
    boot,
    system,
    keyPem: await readFile(key, "utf8"),
    out: resolve(out),
  });
  process.stdout.write(
    `${JSON.stringify({ event: "bundle", out: r.out, bytes: r.bytes, header: r.header })}\n`,
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href)
  main(process.argv.slice(2)).catch((err: unknown) => fail((err as Error).message));
