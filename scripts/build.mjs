// `npm run build`: the release bundle of each architecture, what the image installs in
// /opt/handset/<version>/ (plain Node ESM: runs without tsx).
//
//   node scripts/build.mjs [--arch amd64|arm64|all (default all)] [--out DIR (default dist/bundle)]
//
// Output per arch, in DIR:
//   <arch>/handset.mjs        firmware/cli.ts's runEntry and everything it imports, in one ESM file
//                             (esbuild; every pure-JS dependency inlined; no source map)
//   <arch>/node_modules/      only the native-addon packages and what they need at run time
//                             (serialport, onoff and their closure), production packages only:
//                             serialport with the linux-<arch> glibc prebuild alone, onoff's epoll
//                             compiled here for <arch> (node-gyp against the local Node headers;
//                             arm64 cross-compiled with Debian's aarch64-linux-gnu-g++)
//   <arch>/package.json       {name, version, type: module}: what `handset --version` reads
//   <arch>/profiles/          the Pi board profiles (board/pi/profile.ts finds them beside the code)
//   <arch>/README.md          the unit's Documentation= page
//   <arch>/MANIFEST.json      version, arch, Node engine and ABI, path + mode + size + sha256 of every file
//   <arch>.tar                the same, reproducibly: sorted, mtime SOURCE_DATE_EPOCH (default: the
//                             last commit's time), owner 0:0, normalised modes (GNU tar)
//   handset.meta.json         esbuild's metafile: which source went into handset.mjs (not shipped)
//
// serialport and onoff are loaded on first use (when the Pi board opens its lines), not at start:
// see LAZY_EXTERNALS. Not minified: the crash handler and the journal print stack frames, and with
// no source map shipped, real names and line numbers are what makes them readable. Minifying
// would halve handset.mjs (about 1.5 → 0.75 MB, 0.32 → 0.23 MB compressed, as the erofs slot
// stores it) and measurably changed nothing in cold start.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The packages that ship as real node_modules (native addons), never inlined. */
const EXTERNAL_ROOTS = ["serialport", "onoff"];
/** What esbuild leaves as imports: the roots and the packages of their closure. */
const EXTERNAL = [...EXTERNAL_ROOTS, "@serialport/*", "epoll", "bindings", "file-uri-to-path"];
/**
 * Dependencies that are only headers for compiling an addon, never loaded at run time: they do not
 * ship (nan: epoll's C++ helpers; node-addon-api: @serialport/bindings-cpp's, prebuilt).
 */
const BUILD_ONLY = new Set(["nan", "node-addon-api"]);

const ARCHES = {
  amd64: { node: "x64", gyp: "x64", gnu: "x86_64-linux-gnu", debian: "g++-x86-64-linux-gnu", elf: 62 },
  arm64: { node: "arm64", gyp: "arm64", gnu: "aarch64-linux-gnu", debian: "g++-aarch64-linux-gnu", elf: 183 },
};

class BuildError extends Error {}

const log = (line) => process.stderr.write(`build: ${line}\n`);

function sha256(buf) {
  return createHash("sha256").update(buf).digest("hex");
}

function hostArch() {
  if (process.arch === "x64") return "amd64";
  if (process.arch === "arm64") return "arm64";
  return undefined;
}

function onPath(cmd) {
  return spawnSync("sh", ["-c", 'command -v "$1"', "sh", cmd], { encoding: "utf8" }).status === 0;
}

/** The compilers for an arch: the native ones on the same machine, Debian's cross toolchain otherwise. */
function toolchain(arch) {
  const a = ARCHES[arch];
  if (arch === hostArch()) {
    for (const t of ["gcc", "g++", "make"])
      if (!onPath(t)) throw new BuildError(`${t} is missing: apt-get install build-essential`);
    return { env: {}, strip: "strip" };
  }
  for (const t of [`${a.gnu}-g++`, `${a.gnu}-gcc`])
    if (!onPath(t))
      throw new BuildError(
        `${t} is missing: the ${arch} bundle cross-compiles epoll with it (apt-get install ${a.debian})`,
      );
  return { env: { CC: `${a.gnu}-gcc`, CXX: `${a.gnu}-g++` }, strip: `${a.gnu}-strip` };
}

/** SOURCE_DATE_EPOCH, else the last commit's time (as scripts/image/build.sh does). */
function sourceDateEpoch() {
  const env = process.env.SOURCE_DATE_EPOCH;
  if (env !== undefined && env !== "") {
    if (!/^\d+$/.test(env)) throw new BuildError(`SOURCE_DATE_EPOCH must be whole seconds, got "${env}"`);
    return Number(env);
  }
  const r = spawnSync("git", ["-C", ROOT, "log", "-1", "--format=%ct"], { encoding: "utf8" });
  const t = Number.parseInt(r.stdout ?? "", 10);
  return r.status === 0 && Number.isFinite(t) ? t : 1767225600;
}

/** Where the Node headers are: npm's nodedir (configured for this machine), else Node's own prefix. */
function nodeDir() {
  const candidates = [];
  if (process.env.npm_config_nodedir) candidates.push(process.env.npm_config_nodedir);
  const npm = spawnSync("npm", ["config", "get", "nodedir"], { encoding: "utf8" });
  const configured = npm.status === 0 ? npm.stdout.trim() : "";
  if (configured && configured !== "undefined" && configured !== "null") candidates.push(configured);
  candidates.push(dirname(dirname(process.execPath)));
  const dir = candidates.find((d) => existsSync(join(d, "include/node/node.h")));
  if (!dir)
    throw new BuildError(
      `no Node headers (include/node/node.h) under ${candidates.join(", ")}: set npm's nodedir (npm config set nodedir DIR)`,
    );
  return dir;
}

/** The ABI the headers build for (NODE_MODULE_VERSION): the Node an addon built with them loads in. */
function nodeAbi(dir) {
  const h = readFileSync(join(dir, "include/node/node_version.h"), "utf8");
  const m = /#define NODE_MODULE_VERSION (\d+)/.exec(h);
  return m ? Number(m[1]) : undefined;
}

/** npm's own node-gyp (npm sets npm_config_node_gyp for scripts), else one on PATH. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(dirname(process.execPath)), "lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"),
  ];
  const npmCli = spawnSync("sh", ["-c", "command -v npm"], { encoding: "utf8" }).stdout?.trim();
  if (npmCli)
    candidates.push(join(dirname(realpathSync(npmCli)), "../node_modules/node-gyp/bin/node-gyp.js"));
  const js = candidates.find((c) => c && existsSync(c));
  if (js) return [process.execPath, js];
  if (onPath("node-gyp")) return ["node-gyp"];
  throw new BuildError("node-gyp is missing (it comes with npm; or npm install -g node-gyp)");
}

// ── the JavaScript ──────────────────────────────────────────────────────────────────────────────

/**
 * What the firmware imports from each native-addon package. The bundle loads such a package on
 * first use (the Pi board opening its GPIO lines or its serial port), not at process start:
 * `handset register`, `config`, `--version` or a sim board never pay for loading the addons
 * (node's ESM import of a CommonJS package also parses all its re-exports up front). A name
 * not listed here is a build error ("No matching export"), never a silent undefined.
 */
const LAZY_EXTERNALS = { serialport: ["SerialPort"], onoff: ["Gpio"] };

/** The module that stands for a lazy external: one Proxy per export, the package required on first touch. */
function lazyModule(pkg) {
  const names = LAZY_EXTERNALS[pkg];
  return `let loaded;
const load = () => (loaded ??= require(${JSON.stringify(pkg)}));
function lazy(name) {
  const real = () => load()[name];
  return new Proxy(function () {}, {
    get: (_, k) => Reflect.get(real(), k),
    set: (_, k, v) => Reflect.set(real(), k, v),
    has: (_, k) => Reflect.has(real(), k),
    getPrototypeOf: () => Reflect.getPrototypeOf(real()),
    apply: (_, self, args) => Reflect.apply(real(), self, args),
    construct: (_, args, newTarget) => Reflect.construct(real(), args, newTarget),
  });
}
${names.map((n) => `export const ${n} = lazy(${JSON.stringify(n)});`).join("\n")}
`;
}

const lazyExternals = {
  name: "lazy-externals",
  setup(b) {
    const filter = new RegExp(`^(${Object.keys(LAZY_EXTERNALS).join("|")})$`);
    b.onResolve({ filter }, (a) =>
      a.namespace === "lazy-external"
        ? { path: a.path, external: true }
        : { path: a.path, namespace: "lazy-external" },
    );
    b.onLoad({ filter: /.*/, namespace: "lazy-external" }, (a) => ({
      contents: lazyModule(a.path),
      loader: "js",
      resolveDir: ROOT,
    }));
  },
};

const ENTRY = `import { runEntry } from "./firmware/cli.ts";
process.exitCode = await runEntry(process.argv.slice(2));
`;

/** esbuild's options for the firmware bundle (scripts/bench-bundle.ts bundles its probe alike). */
export function bundleOptions() {
  return {
    stdin: { contents: ENTRY, resolveDir: ROOT, sourcefile: "handset-entry.ts", loader: "ts" },
    // Paths in the output's comments and the metafile are relative to the repository, wherever
    // the build runs from: the same tree gives the same bytes.
    absWorkingDir: ROOT,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    // CommonJS dependencies (node-forge, xml-crypto…) call require() for Node's modules.
    banner: {
      js: 'import { createRequire as __handsetCreateRequire } from "node:module";\nconst require = __handsetCreateRequire(import.meta.url);',
    },
    external: EXTERNAL,
    plugins: [lazyExternals],
    minify: false,
    sourcemap: false,
    legalComments: "eof",
    // ASCII output (esbuild escapes every non-ASCII character of strings, regexes and names) and
    // oneByteSource() for the comments esbuild keeps: V8 holds a source with any character above
    // U+00FF as two bytes per character, 2.4 MB more of the service's memory for handset.mjs.
    charset: "ascii",
    metafile: true,
    write: false,
    logLevel: "warning",
  };
}

/**
 * The bundle's text with the non-ASCII characters left in comments written as \\u{…} (they are
 * the only ones: esbuild's ASCII charset escapes the rest, and an escape cannot be written in a
 * comment). Comment text only: the code is unchanged, and a license notice keeps its characters
 * readable. Without it a single "—" in a kept comment makes V8 store all of handset.mjs two bytes
 * per character.
 */
export function oneByteSource(code) {
  return code.replace(/[^\x00-\x7f]/gu, (c) => `\\u{${c.codePointAt(0).toString(16)}}`);
}

async function bundleJs() {
  const esbuild = await import("esbuild");
  const r = await esbuild.build(bundleOptions());
  const code = r.outputFiles[0]?.contents;
  if (!code) throw new BuildError("esbuild produced no output");
  // What must never ship: test code (the lab, the development tools) and the dev toolchain.
  const bad = Object.keys(r.metafile.inputs).filter((p) =>
    /(^|\/)(test\/|node_modules\/(tsx|vitest|esbuild|@vitest|vite)\/)/.test(p),
  );
  if (bad.length > 0) throw new BuildError(`the bundle would contain ${bad.join(", ")}`);
  return { code: Buffer.from(oneByteSource(Buffer.from(code).toString("utf8"))), metafile: r.metafile };
}

// ── node_modules: the externals' closure ──────────────────────────────────────────────────────

/** The package folder `name` resolves to from `fromDir` (Node's lookup up the node_modules chain). */
function resolvePackage(name, fromDir) {
  for (let d = fromDir; d.startsWith(ROOT); d = dirname(d)) {
    const p = join(d, "node_modules", name);
    if (existsSync(join(p, "package.json"))) return p;
    if (d === ROOT) break;
  }
  throw new BuildError(`cannot find package ${name} (from ${relative(ROOT, fromDir) || "."}): run npm ci`);
}

/** Every package the externals load at run time, as folders relative to the repository. */
function externalClosure() {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8"));
  const seen = new Map();
  const visit = (dir) => {
    const rel = relative(ROOT, dir).split(sep).join("/");
    if (seen.has(rel)) return;
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    const entry = lock.packages?.[rel];
    if (!entry) throw new BuildError(`${rel} is not in package-lock.json: run npm ci`);
    if (entry.dev) throw new BuildError(`${rel} is a development package: it cannot ship`);
    seen.set(rel, pkg);
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) {
      if (BUILD_ONLY.has(dep)) continue;
      visit(resolvePackage(dep, dir));
    }
  };
  for (const name of EXTERNAL_ROOTS) visit(resolvePackage(name, ROOT));
  return [...seen.keys()].sort();
}

/** Copies one package without its own nested node_modules (those are in the closure on their own). */
function copyPackage(rel, stage) {
  const src = join(ROOT, rel);
  const dst = join(stage, rel);
  cpSync(src, dst, {
    recursive: true,
    dereference: true,
    filter: (from) => {
      const r = relative(src, from);
      return r === "" || !(r === "node_modules" || r.startsWith(`node_modules${sep}`));
    },
  });
}

/** What a package's runtime never reads: its tests, examples, type declarations, docs (licences stay). */
const DEAD_DIRS = new Set([
  "test",
  "tests",
  "__tests__",
  "example",
  "examples",
  "integration-test",
  ".github",
]);
const isDeadFile = (name) =>
  name.startsWith(".") ||
  /\.(map|d\.ts|d\.mts|d\.cts)$/.test(name) ||
  (/\.(md|markdown)$/i.test(name) && !/^licen[cs]e/i.test(name));

function prunePackages(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) {
      if (DEAD_DIRS.has(name)) rmSync(p, { recursive: true });
      else prunePackages(p);
    } else if (isDeadFile(name)) rmSync(p);
  }
}

/** serialport: only the linux-<arch> glibc prebuild of @serialport/bindings-cpp, and no C++ source. */
function pruneSerialport(stage, arch) {
  const pkg = join(stage, "node_modules/@serialport/bindings-cpp");
  const prebuilds = join(pkg, "prebuilds");
  const keep = `linux-${ARCHES[arch].node}`;
  for (const d of readdirSync(prebuilds)) if (d !== keep) rmSync(join(prebuilds, d), { recursive: true });
  const dir = join(prebuilds, keep);
  if (!existsSync(dir)) throw new BuildError(`@serialport/bindings-cpp has no ${keep} prebuild`);
  const files = readdirSync(dir);
  for (const f of files) if (!f.includes(".glibc.")) rmSync(join(dir, f));
  if (readdirSync(dir).length !== 1)
    throw new BuildError(`@serialport/bindings-cpp: expected one glibc prebuild in ${keep}, found ${files}`);
  rmSync(join(pkg, "src"), { recursive: true, force: true });
  rmSync(join(pkg, "build"), { recursive: true, force: true });
}

/** onoff's epoll: compiled for the arch in a copy of the package; only the .node ships. */
function buildEpoll(stage, arch, gyp, headers) {
  const tc = toolchain(arch);
  const work = mkdtempSync(join(tmpdir(), `handset-epoll-${arch}-`));
  try {
    const src = join(work, "epoll");
    cpSync(resolvePackage("epoll", ROOT), src, {
      recursive: true,
      dereference: true,
      filter: (from) => !/[/\\](build|node_modules)$/.test(from),
    });
    // binding.gyp finds nan's headers with require("nan") from the package folder.
    cpSync(resolvePackage("nan", resolvePackage("epoll", ROOT)), join(src, "node_modules/nan"), {
      recursive: true,
      dereference: true,
    });
    const r = spawnSync(
      gyp[0],
      [...gyp.slice(1), "rebuild", `--arch=${ARCHES[arch].gyp}`, `--nodedir=${headers}`],
      { cwd: src, env: { ...process.env, ...tc.env }, encoding: "utf8" },
    );
    if (r.status !== 0)
      throw new BuildError(`epoll for ${arch}: node-gyp failed\n${r.stdout ?? ""}${r.stderr ?? ""}`);
    const built = join(src, "build/Release/epoll.node");
    if (onPath(tc.strip)) execFileSync(tc.strip, ["--strip-unneeded", built]);
    const machine = readFileSync(built).readUInt16LE(18);
    if (machine !== ARCHES[arch].elf)
      throw new BuildError(`epoll for ${arch}: built for ELF machine ${machine}, not ${ARCHES[arch].elf}`);
    const dst = join(stage, "node_modules/epoll");
    for (const d of ["build", "src", "example"]) rmSync(join(dst, d), { recursive: true, force: true });
    mkdirSync(join(dst, "build/Release"), { recursive: true });
    writeFileSync(join(dst, "build/Release/epoll.node"), readFileSync(built));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

// ── the bundle folder, its manifest and its tar ───────────────────────────────────────────────

/** Every file under dir, relative, sorted bytewise; directories get 0755, files 0644 or 0755. */
function normalise(dir) {
  const files = [];
  const walk = (rel) => {
    for (const name of readdirSync(join(dir, rel))) {
      const r = rel === "" ? name : `${rel}/${name}`;
      const p = join(dir, r);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) throw new BuildError(`${r}: a symlink in the bundle`);
      if (st.isDirectory()) {
        chmodSync(p, 0o755);
        walk(r);
      } else {
        chmodSync(p, st.mode & 0o111 ? 0o755 : 0o644);
        files.push(r);
      }
    }
  };
  walk("");
  chmodSync(dir, 0o755);
  return files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function manifest(dir, o) {
  const files = normalise(dir).map((path) => {
    const p = join(dir, path);
    const st = statSync(p);
    return {
      path,
      mode: (st.mode & 0o777).toString(8).padStart(4, "0"),
      size: st.size,
      sha256: sha256(readFileSync(p)),
    };
  });
  return { name: "handset", ...o, files };
}

function tar(dir, file, epoch) {
  const r = spawnSync(
    "tar",
    [
      "--create",
      `--file=${file}`,
      "--format=gnu",
      "--sort=name",
      `--mtime=@${epoch}`,
      "--owner=0",
      "--group=0",
      "--numeric-owner",
      "--mode=go-w",
      `--directory=${dir}`,
      ".",
    ],
    { env: { ...process.env, LC_ALL: "C" }, encoding: "utf8" },
  );
  if (r.error) throw new BuildError(`GNU tar is missing: ${r.error.message}`);
  if (r.status !== 0) throw new BuildError(`tar failed: ${r.stderr}`);
}

export async function build({ arches, out }) {
  const t0 = performance.now();
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  const epoch = sourceDateEpoch();
  for (const arch of arches) toolchain(arch); // every missing tool named before any work
  const gyp = nodeGyp();
  const headers = nodeDir();
  const abi = nodeAbi(headers);
  const { code, metafile } = await bundleJs();
  const closure = externalClosure();
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "handset.meta.json"), `${JSON.stringify(metafile, null, 1)}\n`);
  const results = [];
  for (const arch of arches) {
    const stage = join(out, arch);
    rmSync(stage, { recursive: true, force: true });
    mkdirSync(stage, { recursive: true });
    writeFileSync(join(stage, "handset.mjs"), code);
    writeFileSync(
      join(stage, "package.json"),
      `${JSON.stringify({ name: pkg.name, version: pkg.version, type: "module" }, null, 2)}\n`,
    );
    cpSync(join(ROOT, "board/pi/profiles"), join(stage, "profiles"), { recursive: true });
    cpSync(join(ROOT, "README.md"), join(stage, "README.md"));
    for (const rel of closure) copyPackage(rel, stage);
    prunePackages(join(stage, "node_modules"));
    pruneSerialport(stage, arch);
    buildEpoll(stage, arch, gyp, headers);
    const m = manifest(stage, {
      version: pkg.version,
      arch,
      node: pkg.engines?.node,
      nodeModuleVersion: abi,
      sourceDateEpoch: epoch,
      packages: closure.map((rel) => {
        const p = JSON.parse(readFileSync(join(ROOT, rel, "package.json"), "utf8"));
        return { path: rel, name: p.name, version: p.version, license: p.license };
      }),
    });
    writeFileSync(join(stage, "MANIFEST.json"), `${JSON.stringify(m, null, 1)}\n`);
    chmodSync(join(stage, "MANIFEST.json"), 0o644);
    const tarFile = join(out, `${arch}.tar`);
    tar(stage, tarFile, epoch);
    const bytes = readFileSync(tarFile);
    const r = { arch, tar: tarFile, size: bytes.length, sha256: sha256(bytes), js: code.length };
    results.push(r);
    log(`${arch}: ${relative(process.cwd(), tarFile)} ${r.size} bytes sha256 ${r.sha256}`);
  }
  log(
    `handset.mjs ${code.length} bytes; node_modules: ${closure.length} packages; ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  return results;
}

async function cli() {
  const { values } = parseArgs({
    options: { arch: { type: "string", default: "all" }, out: { type: "string" }, help: { type: "boolean" } },
  });
  if (values.help) {
    process.stdout.write("usage: node scripts/build.mjs [--arch amd64|arm64|all] [--out DIR]\n");
    return 0;
  }
  const arches = values.arch === "all" ? ["amd64", "arm64"] : [values.arch];
  for (const a of arches)
    if (!Object.hasOwn(ARCHES, a)) throw new BuildError(`--arch must be amd64, arm64 or all, got "${a}"`);
  await build({ arches, out: values.out ? resolve(values.out) : join(ROOT, "dist/bundle") });
  return 0;
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = await cli();
  } catch (err) {
    if (!(err instanceof BuildError) && !(err instanceof TypeError && err.code?.startsWith("ERR_PARSE_ARGS")))
      throw err;
    process.stderr.write(`build: ${err.message}\n`);
    process.exitCode = 1;
  }
}
