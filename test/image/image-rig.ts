/**
 * What the image tests share: the peers they need, the build (`npm run image` with a test update
 * key made for this run: never a key in the repository, never one in a product image), the lab on
 * the host's loopback, and a disk prepared for a boot (the site's configuration and a provisioned
 * identity on the data partition, as a phone that signed in once has them).
 *
 * The guest reaches the host's loopback as 10.0.2.2 (qemu user networking), TCP and UDP, so the
 * phone's host table maps the lab's names there.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { chmod, chown, copyFile, cp, mkdir, readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { type Lab, startLab } from "../lab/lab.ts";
import { type Arch, writeDataPartition } from "./emulated-board.ts";

const run = promisify(execFile);
export const REPO = resolve(import.meta.dirname, "../..");
export const CI = process.env.CI === "true";
/** The handset user of the image (usr/lib/sysusers.d/handset.conf). */
export const HANDSET_UID = 998;
const GUEST_HOST = "10.0.2.2";

const TOOLS: Array<[string, string]> = [
  ["mmdebstrap", "mmdebstrap"],
  ["mkfs.erofs", "erofs-utils"],
  ["mke2fs", "e2fsprogs"],
  ["mkfs.vfat", "dosfstools"],
  ["mcopy", "mtools"],
  ["sfdisk", "fdisk"],
  ["qemu-system-x86_64", "qemu-system-x86"],
  ["qemu-system-aarch64", "qemu-system-arm"],
  ["aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"],
  // The fleet's update command: a broker on the host and its command-line client as the operator.
  ["/usr/sbin/mosquitto", "mosquitto"],
  ["mosquitto_rr", "mosquitto-clients"],
];

/** What is missing for the image tests, in words (undefined: nothing). */
export async function missingPeers(): Promise<string | undefined> {
  const missing: string[] = [];
  for (const [tool, pkg] of TOOLS) {
    try {
      await run("sh", ["-c", `command -v ${tool}`]);
    } catch {
      missing.push(`${tool} (Debian ${pkg})`);
    }
  }
  if (process.getuid?.() !== 0) missing.push("root (mmdebstrap --mode=root)");
  if (!existsSync("/proc/sys/fs/binfmt_misc/qemu-aarch64"))
    missing.push(
      "binfmt for arm64 (qemu-user-static, binfmt_misc mounted, update-binfmts --enable qemu-aarch64)",
    );
  return missing.length ? `image tests need: ${missing.join(", ")}` : undefined;
}

export async function sha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Runs a command, its output going to a log file; rejects with the log's tail. */
export async function runLogged(cmd: string, args: string[], log: string, env = process.env): Promise<void> {
  const { createWriteStream } = await import("node:fs");
  const out = createWriteStream(log);
  const child = spawn(cmd, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const code = await new Promise<number | null>((r) => child.on("exit", r));
  await new Promise((r) => out.end(r));
  if (code !== 0) {
    const text = await readFile(log, "utf8");
    throw new Error(`${cmd} ${args.join(" ")} → ${code}\n${text.split("\n").slice(-40).join("\n")}`);
  }
}

export interface Built {
  dir: string;
  version: string;
  /** The test update key pair (update-key.pem, update-keys/update-key.pub.pem). */
  keys: string;
  seconds: number;
}

/**
 * `npm run image` (which runs `npm run build` first, both arches' bundles) into DIR for one arch,
 * with a test update key made for this run.
 */
export async function buildImages(work: string, arch: Arch): Promise<Built> {
  const keys = join(work, "keys");
  const t0 = Date.now();
  if (!existsSync(join(keys, "update-key.pem")))
    await runLogged(
      "npx",
      ["tsx", "scripts/update-bundle.ts", "keygen", "--out", keys],
      join(work, "keygen.log"),
    );
  const dir = join(work, "image");
  await runLogged(
    "npm",
    ["run", "image", "--", "--arch", arch, "--out", dir, "--update-key", updatePublicKey(keys)],
    join(work, `image-build-${arch}.log`),
  );
  const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8")) as { version: string };
  return { dir, version: pkg.version, keys, seconds: (Date.now() - t0) / 1000 };
}

/**
 * The image of another arch from the bundles the first `npm run image` built (its second half,
 * scripts/image/build.sh, as `npm run image` runs it): the image tests start the arm64 build, 15
 * minutes of emulated package scripts, while the amd64 image boots on the other core.
 */
export async function buildArchImage(work: string, built: Built, arch: Arch): Promise<number> {
  const t0 = Date.now();
  await runLogged(
    "bash",
    [
      "scripts/image/build.sh",
      "--arch",
      arch,
      "--out",
      built.dir,
      "--update-key",
      updatePublicKey(built.keys),
    ],
    join(work, `image-build-${arch}.log`),
  );
  return (Date.now() - t0) / 1000;
}

const updatePublicKey = (keys: string) => join(keys, "update-keys", "update-key.pub.pem");

export function imagePath(b: Built, arch: Arch): string {
  return join(b.dir, arch, `handset-${b.version}-${arch}.img`);
}

export interface LabRig {
  lab: Lab;
  /** A provisioned identity store of the lab's first user (made once, copied into each disk). */
  store: string;
  stop(): Promise<void>;
}

const hostPort = (a: string) => ({
  host: a.slice(0, a.lastIndexOf(":")),
  port: a.slice(a.lastIndexOf(":") + 1),
});

/** The lab on loopback, and the first user signed in once into a store (`handset provision`). */
export async function startLabRig(work: string): Promise<LabRig> {
  const lab = await startLab({ site: "hq" });
  const store = join(work, "store");
  const user = lab.ready.users[0]!;
  await new Promise<void>((res, rej) => {
    const child = spawn(
      "node",
      [
        join(REPO, "firmware/handset.mjs"),
        "provision",
        "--json",
        "--web",
        lab.ready.certProv,
        "--extension",
        user.extension,
        "--store",
        store,
        "--ca",
        lab.ready.ca,
        "--pin-stdin",
      ],
      { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] },
    );
    let err = "";
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
    });
    child.stdout.on("data", (b: Buffer) => {
      err += b.toString();
    });
    child.stdin.end(`${user.pin}\n`);
    child.on("exit", (code) => (code === 0 ? res() : rej(new Error(`provision → ${code}: ${err}`))));
  });
  return { lab, store, stop: () => lab.stop() };
}

/** The phone's configuration inside the guest: the lab's names at the host, no DHCP. */
/** A fleet broker on the host, as the guest's phone reaches it (plain MQTT, user and password). */
export interface GuestMqtt {
  /** The broker's port on the host's loopback. */
  port: number;
  deviceId: string;
  username: string;
  password: string;
  commands: string[];
}

export function guestConfig(lab: Lab, o: { deadRegistrar?: boolean; mqtt?: GuestMqtt } = {}): object {
  const guest = (a: string) => `${GUEST_HOST}:${hostPort(a).port}`;
  const r = lab.ready;
  return {
    ...(o.mqtt
      ? {
          mqtt: {
            brokers: [`mqtt://${GUEST_HOST}:${o.mqtt.port}`],
            deviceId: o.mqtt.deviceId,
            username: o.mqtt.username,
            passwordFile: "/var/lib/handset/config/mqtt.pw",
            commands: o.mqtt.commands,
          },
        }
      : {}),
    board: "sim",
    storeDir: "/var/lib/handset",
    trustedRoots: ["/var/lib/handset/config/roots.pem"],
    network: {
      ntp: guest(r.ntp),
      // A registrar that is not there: the phone cannot register (a failing health check).
      staticRegistrars: [o.deadRegistrar ? `${r.names.pool}:1` : `${r.names.pool}:5061`],
      hosts: o.deadRegistrar
        ? { [r.names.pool]: `${GUEST_HOST}:1` }
        : Object.fromEntries(Object.entries(r.hosts).map(([n, a]) => [n, guest(a)])),
      staticCertProvUrl: r.certProv.replace(/127\.0\.0\.1/, GUEST_HOST),
    },
  };
}

/**
 * The data partition of a phone that signed in once: the identity store, config/phone.json,
 * config/roots.pem (the lab's CA), config/handset.env; owned by the handset user, 0700.
 */
export async function prepareData(
  disk: string,
  rig: LabRig,
  work: string,
  o: { env?: Record<string, string>; deadRegistrar?: boolean; mqtt?: GuestMqtt } = {},
): Promise<void> {
  const tree = join(work, `data-tree-${Date.now()}`);
  await cp(rig.store, tree, { recursive: true });
  await mkdir(join(tree, "config"), { recursive: true });
  await copyFile(rig.lab.ready.ca, join(tree, "config", "roots.pem"));
  await writeFile(join(tree, "config", "phone.json"), JSON.stringify(guestConfig(rig.lab, o), null, 2));
  if (o.mqtt) await writeFile(join(tree, "config", "mqtt.pw"), `${o.mqtt.password}\n`);
  const env = { HANDSET_CONFIG: "/var/lib/handset/config/phone.json", ...(o.env ?? {}) };
  await writeFile(
    join(tree, "config", "handset.env"),
    Object.entries(env)
      .map(([k, v]) => `${k}=${v}\n`)
      .join(""),
  );
  await chownTree(tree, HANDSET_UID);
  await writeDataPartition(disk, tree, work);
}

async function chownTree(dir: string, uid: number): Promise<void> {
  const { readdir } = await import("node:fs/promises");
  await chown(dir, uid, uid);
  await chmod(dir, 0o700);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid);
    else {
      await chown(p, uid, uid);
      await chmod(p, 0o600);
    }
  }
}

/** A sparse copy of an image: each boot test gets its own disk. */
export async function copyDisk(img: string, to: string): Promise<string> {
  await run("cp", ["--sparse=always", img, to]);
  return to;
}

/** Update bundles over HTTP from the host, as a fleet's file server would give them to the guest. */
export interface FileServer {
  /** The server as the guest reaches it (http://10.0.2.2:PORT). */
  guestUrl: string;
  /** Bytes of file bodies sent so far. */
  served(): number;
  stop(): Promise<void>;
}

export async function serveFiles(dir: string): Promise<FileServer> {
  const { createServer } = await import("node:http");
  const { createReadStream, statSync } = await import("node:fs");
  const { basename } = await import("node:path");
  let sent = 0;
  const server = createServer((req, res) => {
    const name = basename(decodeURIComponent((req.url ?? "/").split("?")[0]!));
    let size: number;
    try {
      size = statSync(join(dir, name)).size;
    } catch {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": size });
    const body = createReadStream(join(dir, name));
    body.on("data", (b) => {
      sent += b.length;
    });
    body.pipe(res);
  });
  // Loopback only: qemu's user network hands the guest's 10.0.2.2 to the host's 127.0.0.1.
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    guestUrl: `http://${GUEST_HOST}:${port}`,
    served: () => sent,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
