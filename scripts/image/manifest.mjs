// The image's manifest and SBOM (called by build.sh while the root tree still exists).
//   MANIFEST.json: version, arch, the outputs' sha256, and every file of the system slot
//                  (path, mode, size, sha256; symlinks with their target), sorted by path.
//   SBOM.json:     CycloneDX 1.5: every Debian package installed (name, version, arch, purl)
//                  and every npm package the bundle ships (from package-lock.json).
import { createHash } from "node:crypto";
import { createReadStream, lstatSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values: a } = parseArgs({
  options: {
    arch: { type: "string" },
    version: { type: "string" },
    rootfs: { type: "string" },
    out: { type: "string" },
    lockfile: { type: "string" },
    "bundle-manifest": { type: "string" },
    "build-seconds": { type: "string" },
  },
});

function sha256File(path) {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path)
      .on("data", (c) => h.update(c))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

async function walk(root) {
  const files = [];
  const stack = [""];
  while (stack.length > 0) {
    const rel = stack.pop();
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(join(root, r));
      const mode = (st.mode & 0o7777).toString(8).padStart(4, "0");
      if (st.isDirectory()) {
        files.push({ path: `/${r}/`, mode, uid: st.uid, gid: st.gid });
        stack.push(r);
      } else if (st.isSymbolicLink()) {
        files.push({ path: `/${r}`, link: readlinkSync(join(root, r)) });
      } else if (st.isFile()) {
        files.push({
          path: `/${r}`,
          mode,
          uid: st.uid,
          gid: st.gid,
          size: st.size,
          sha256: await sha256File(join(root, r)),
        });
      } else {
        files.push({ path: `/${r}`, mode, special: true });
      }
    }
  }
  return files.sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : 0));
}

function debianPackages(root) {
  const status = readFileSync(join(root, "var/lib/dpkg/status"), "utf8");
  const pkgs = [];
  for (const para of status.split(/\n\n+/)) {
    const f = Object.fromEntries(
      para
        .split("\n")
        .filter((l) => /^[A-Za-z-]+: /.test(l))
        .map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 2)]),
    );
    if (!f.Package || !/installed$/.test(f.Status ?? "")) continue;
    pkgs.push({ name: f.Package, version: f.Version, arch: f.Architecture, source: f.Source?.split(" ")[0] });
  }
  return pkgs.sort((x, y) => (x.name < y.name ? -1 : 1));
}

function npmPackages(lockfile) {
  const lock = JSON.parse(readFileSync(lockfile, "utf8"));
  const out = [];
  for (const [path, p] of Object.entries(lock.packages ?? {})) {
    if (path === "" || p.dev || p.devOptional) continue;
    out.push({
      name: path.replace(/^.*node_modules\//, ""),
      version: p.version,
      license: p.license,
      resolved: p.resolved,
      integrity: p.integrity,
    });
  }
  return out.sort((x, y) => (x.name < y.name ? -1 : 1));
}

const outputs = {};
for (const name of [`handset-${a.version}-${a.arch}.img`, "system.erofs", "boot.vfat"]) {
  const p = join(a.out, name);
  outputs[name] = { size: lstatSync(p).size, sha256: await sha256File(p) };
}
const epoch = Number(process.env.SOURCE_DATE_EPOCH);
let bundle;
try {
  bundle = JSON.parse(readFileSync(a["bundle-manifest"], "utf8"));
} catch {
  bundle = undefined;
}
const manifest = {
  name: "handset",
  version: a.version,
  arch: a.arch,
  debian: "trixie",
  sourceDateEpoch: epoch,
  buildSeconds: Number(a["build-seconds"]),
  outputs,
  bundle,
  files: await walk(a.rootfs),
};
writeFileSync(join(a.out, "MANIFEST.json"), `${JSON.stringify(manifest, null, 1)}\n`);

const deb = debianPackages(a.rootfs);
const npm = npmPackages(a.lockfile);
const sbom = {
  bomFormat: "CycloneDX",
  specVersion: "1.5",
  version: 1,
  metadata: {
    timestamp: new Date(epoch * 1000).toISOString(),
    component: { type: "firmware", name: "handset", version: a.version },
    properties: [{ name: "arch", value: a.arch }],
  },
  components: [
    ...deb.map((p) => ({
      type: "library",
      name: p.name,
      version: p.version,
      purl: `pkg:deb/debian/${p.name}@${encodeURIComponent(p.version)}?arch=${p.arch}&distro=debian-13`,
      ...(p.source ? { properties: [{ name: "debian:source", value: p.source }] } : {}),
    })),
    ...npm.map((p) => ({
      type: "library",
      name: p.name,
      version: p.version,
      purl: `pkg:npm/${p.name.replace("@", "%40")}@${p.version}`,
      ...(p.license ? { licenses: [{ license: { id: p.license } }] } : {}),
      ...(p.integrity
        ? {
            hashes: [
              {
                alg: "SHA-512",
                content: Buffer.from(p.integrity.replace(/^sha512-/, ""), "base64").toString("hex"),
              },
            ],
          }
        : {}),
    })),
  ],
};
writeFileSync(join(a.out, "SBOM.json"), `${JSON.stringify(sbom, null, 1)}\n`);
process.stderr.write(
  `manifest: ${manifest.files.length} files; SBOM: ${deb.length} Debian packages, ${npm.length} npm packages\n`,
);
