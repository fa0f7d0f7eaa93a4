/**
 * The release bundle (`npm run build`, scripts/build.mjs): one ESM file with no test code, no lab
 * and no dev toolchain in it, that runs from a folder of its own with only the native-addon
 * packages beside it; epoll compiled for each architecture; a reproducible tar.
 *
 * Builds twice into a temporary folder (never dist/, which a person's build may be writing):
 * both architectures when the cross compiler is there (always under CI=true, where a missing one
 * fails the build), else the host's alone, and the other architecture's checks say they were skipped.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  accessSync,
  constants,
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { referenceRows } from "../../firmware/config/reference.ts";
import { LabCa } from "../lab/ca.ts";

const ROOT = join(import.meta.dirname, "../..");
const PKG = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { name: string; version: string };
const EPOCH = 1767225600;

type Arch = "amd64" | "arm64";
const ELF_MACHINE: Record<Arch, number> = { amd64: 62, arm64: 183 };
const NODE_ARCH: Record<Arch, string> = { amd64: "x64", arm64: "arm64" };
const CROSS: Record<Arch, { cxx: string; debian: string }> = {
  amd64: { cxx: "x86_64-linux-gnu-g++", debian: "g++-x86-64-linux-gnu" },
  arm64: { cxx: "aarch64-linux-gnu-g++", debian: "g++-aarch64-linux-gnu" },
};
const HOST: Arch = process.arch === "arm64" ? "arm64" : "amd64";
const OTHER: Arch = HOST === "amd64" ? "arm64" : "amd64";
const onPath = (cmd: string) => spawnSync("sh", ["-c", 'command -v "$1"', "sh", cmd]).status === 0;
const HAVE_CROSS = onPath(CROSS[OTHER].cxx);
const CI = process.env["CI"] === "true";
const ARCHES: Arch[] = HAVE_CROSS || CI ? ["amd64", "arm64"] : [HOST];
const SKIPPED = `${OTHER} not built: ${CROSS[OTHER].cxx} is missing (apt-get install ${CROSS[OTHER].debian}); under CI=true this fails`;

/** A machine where onoff could drive real lines (a Pi): there `handset run` is not run here. */
const GPIO_WRITABLE = (() => {
  try {
    accessSync("/sys/class/gpio/export", constants.W_OK);
    return true;
  } catch {
    return false;
  }
})();

const sha256 = (buf: Buffer) => createHash("sha256").update(buf).digest("hex");

let tmp: string;
const out = (build: "a" | "b") => join(tmp, build);

function build(dir: string): void {
  const r = spawnSync(
    process.execPath,
    ["scripts/build.mjs", "--arch", ARCHES.length === 2 ? "all" : HOST, "--out", dir],
    { cwd: ROOT, encoding: "utf8", env: { ...process.env, SOURCE_DATE_EPOCH: String(EPOCH) } },
  );
  if (r.status !== 0) throw new Error(`scripts/build.mjs failed (${r.status}):\n${r.stderr}`);
}

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), "handset-bundle-test-"));
  build(out("a"));
  build(out("b"));
}, 240_000);

afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Every file under dir, relative, sorted. */
function files(dir: string, rel = ""): string[] {
  return readdirSync(join(dir, rel), { withFileTypes: true })
    .flatMap((e) => {
      const r = rel ? `${rel}/${e.name}` : e.name;
      return e.isDirectory() ? files(dir, r) : [r];
    })
    .sort();
}

const count = (text: string, s: string) => text.split(s).length - 1;

describe("handset.mjs: the firmware alone", () => {
  it("holds no test code, no lab, no development tool", () => {
    const bundle = readFileSync(join(out("a"), HOST, "handset.mjs"), "utf8");
    const meta = JSON.parse(readFileSync(join(out("a"), "handset.meta.json"), "utf8")) as {
      inputs: Record<string, unknown>;
    };
    const inputs = Object.keys(meta.inputs);
    expect(inputs.some((p) => p.startsWith("firmware/"))).toBe(true);
    expect(inputs.filter((p) => /^test\/|node_modules\/(tsx|vitest|@vitest|vite|esbuild)\//.test(p))).toEqual(
      [],
    );

    // The sources that are in the bundle: what the bundle may say, and how often.
    const shipped = inputs
      .filter((p) => existsSync(join(ROOT, p)))
      .map((p) => readFileSync(join(ROOT, p), "utf8"));
    const legit = (s: string) => shipped.reduce((n, text) => n + count(text, s), 0);

    // The lab's and the development tools' own names (classes, functions, constants they export).
    const labSources = ["test/lab", "test/dev"].flatMap((d) =>
      readdirSync(join(ROOT, d)).map((f) => readFileSync(join(ROOT, d, f), "utf8")),
    );
    const labNames = [
      ...new Set(
        labSources.flatMap((t) =>
          [...t.matchAll(/export\s+(?:async\s+)?(?:class|function|const)\s+([A-Za-z_$][\w$]{5,})/g)].map(
            (m) => m[1]!,
          ),
        ),
      ),
    ];
    expect(labNames).toContain("LabRegistrar");
    expect(labNames).toContain("runDevEntry");
    // Strings only the lab, the dev entry or the test runner use; where the firmware itself says one
    // (its help names sip:4711@lab.test and test/dev/handset-dev.mjs), no more often than it does.
    const strings = [
      "lab.test",
      "handset-dev",
      "test/lab",
      "test/dev",
      "vitest",
      "tsx",
      "lab.ready",
      "Handset Lab",
      "handset-lab-",
      "lab-ca.pem",
      "test-client.pem",
      "unknown wan action",
      "describe(",
      "expect(",
    ];
    // An identifier the shipped sources also use (a common word such as "descendants") is left to
    // the inputs check above: esbuild may add mentions of a bundled name (export maps).
    const strict = [...labNames.filter((n) => legit(n) === 0), ...strings.filter((s) => legit(s) === 0)];
    expect(strict).toContain("LabRegistrar");
    expect(strict).toContain("vitest");
    expect(strict).toContain("tsx");
    const found = strict.filter((s) => bundle.includes(s));
    const tooMany = strings
      .filter((s) => legit(s) > 0)
      .map((s) => ({ s, bundle: count(bundle, s), sources: legit(s) }))
      .filter((x) => x.bundle > x.sources);
    expect({ found, tooMany }).toEqual({ found: [], tooMany: [] });
  });

  it("needs no tsx to run: it imports only node: modules and the shipped native-addon packages", () => {
    const bundle = readFileSync(join(out("a"), HOST, "handset.mjs"), "utf8");
    const imports = [...bundle.matchAll(/^import (?:.* from )?"([^"]+)";$/gm)].map((m) => m[1]!);
    const requires = [...bundle.matchAll(/__require\("([^"]+)"\)/g)].map((m) => m[1]!);
    const bare = [...imports, ...requires].filter(
      (s) => !s.startsWith("node:") && !builtinModules.includes(s),
    );
    // Besides the addons: optional packages MQTT.js's dependencies try and do without (each
    // require sits in a try/catch there): ws's native speed-ups, debug's colour detection.
    const optional = ["bufferutil", "supports-color", "utf-8-validate"];
    expect([...new Set(bare)].filter((s) => !optional.includes(s)).sort()).toEqual(["onoff", "serialport"]);
  });
});

describe("handset.mjs: what a registered phone loads", () => {
  it("is ASCII only, so V8 keeps its source one byte per character", () => {
    const bytes = readFileSync(join(out("a"), HOST, "handset.mjs"));
    const at = bytes.findIndex((b) => b > 0x7f);
    expect(at, at < 0 ? "" : bytes.subarray(Math.max(0, at - 60), at + 20).toString("utf8")).toBe(-1);
  });

  it("keeps the dsp… names the service's --turbo-filter=dsp* optimises (G.722's loops)", () => {
    const text = readFileSync(join(out("a"), HOST, "handset.mjs"), "utf8");
    const wrapper = readFileSync(join(import.meta.dirname, "../../image/rootfs/usr/bin/handset"), "utf8");
    expect(wrapper).toMatch(/^NODE_FLAGS="[^"]*--turbo-filter=dsp\*[^"]*"$/m);
    for (const name of ["dspEncode(", "dspDecode(", "dspAdapt("])
      expect(count(text, name)).toBeGreaterThan(0);
  });

  it("runs no dependency's module code at start: node-forge, the XML stack and MQTT.js load on first use", () => {
    // esbuild wraps each CommonJS package in __commonJS(); the copy reports every first call.
    const text = readFileSync(join(out("a"), HOST, "handset.mjs"), "utf8");
    const helper = "var __commonJS = (cb, mod) => function __require2() {\n";
    expect(text).toContain(helper);
    const probe = join(out("a"), HOST, "loads-probe.mjs");
    writeFileSync(
      probe,
      text.replace(
        helper,
        `${helper}  if (!mod) process.stderr.write("cjs " + __getOwnPropNames(cb)[0] + "\\n");\n`,
      ),
    );
    try {
      for (const argv of [["--version"], ["run", "--help"], ["config", "--defaults", "--json"]]) {
        const r = spawnSync(process.execPath, [probe, ...argv], { cwd: tmp, encoding: "utf8" });
        expect(r.status, r.stderr).toBe(0);
        const loaded = r.stderr.split("\n").filter((l) => l.startsWith("cjs "));
        expect(loaded, argv.join(" ")).toEqual([]);
      }
    } finally {
      rmSync(probe, { force: true });
    }
  });
});

describe("the bundle folder", () => {
  let dir: string;
  let caPath: string;
  const run = (args: string[]) =>
    spawnSync(process.execPath, [join(dir, "handset.mjs"), ...args], {
      cwd: dir,
      encoding: "utf8",
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: dir },
      timeout: 30_000,
    });

  beforeAll(async () => {
    // A copy outside the repository: nothing resolves to the repository's node_modules.
    const base = mkdtempSync(join(tmpdir(), "handset-bundle-run-"));
    dir = join(base, "opt-handset");
    cpSync(join(out("a"), HOST), dir, { recursive: true });
    caPath = join(base, "ca.pem");
    writeFileSync(caPath, (await LabCa.create()).cert);
  }, 60_000);
  afterAll(() => {
    if (dir) rmSync(dirname(dir), { recursive: true, force: true });
  });

  it("is outside the repository, with no node_modules above it", () => {
    expect(dir.startsWith(ROOT)).toBe(false);
    for (let d = dirname(dir); d !== dirname(d); d = dirname(d))
      expect(existsSync(join(d, "node_modules")), `${d}/node_modules`).toBe(false);
  });

  it("says its version", () => {
    const r = run(["--version"]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`handset ${PKG.version}\n`);
    const j = run(["--version", "--json"]);
    expect(JSON.parse(j.stdout)).toMatchObject({ event: "version", version: PKG.version });
    expect(JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))).toEqual({
      name: PKG.name,
      version: PKG.version,
      type: "module",
    });
  });

  it("prints the configuration reference, the same as the source's", () => {
    const r = run(["config", "--defaults", "--json"]);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines).toHaveLength(1);
    const e = JSON.parse(lines[0]!) as { event: string; options: unknown };
    expect(e.event).toBe("config.reference");
    expect(e.options).toEqual(JSON.parse(JSON.stringify(referenceRows())));
  });

  it("prints the help of register", () => {
    const r = run(["register", "--help"]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^usage: handset register /);
  });

  it("reaches the Pi board: the shipped profile, onoff and its epoll addon load", (ctx) => {
    if (GPIO_WRITABLE) ctx.skip("this machine has GPIO: handset run would drive real lines");
    const config = join(dirname(dir), "phone.json");
    writeFileSync(
      config,
      JSON.stringify({ board: "pi", storeDir: join(dirname(dir), "store"), trustedRoots: [caPath] }),
    );
    const r = run(["run", "--json", "--config", config]);
    expect(r.status).toBe(1);
    const e = JSON.parse(r.stdout.trim().split("\n").at(-1)!) as { code: string; message: string };
    expect(e.code, e.message).toBe("gpio-unavailable");
    expect(e.message).toContain('board profile "handset-v1"');
    expect(e.message).toContain("Gpio.accessible is false");
  });

  it("loads serialport and onoff on first use, not at start, through stand-ins that act as the real ones", async () => {
    const build = (await import(pathToFileURL(join(ROOT, "scripts/build.mjs")).href)) as {
      bundleOptions: () => Record<string, unknown>;
    };
    const esbuild = await import("esbuild");
    const probe = `
      import { SerialPort } from "serialport";
      import { Gpio } from "onoff";
      const loaded = (p) => Object.keys(require.cache).some((k) => k.includes("/node_modules/" + p + "/"));
      const before = { serialport: loaded("serialport"), onoff: loaded("onoff") };
      const port = new SerialPort({ path: "/nonexistent/tty", baudRate: 9600, autoOpen: false });
      const accessible = Gpio.accessible;
      process.stdout.write(JSON.stringify({
        before,
        after: { serialport: loaded("serialport"), onoff: loaded("onoff") },
        instance: port instanceof SerialPort,
        path: port.path,
        isOpen: port.isOpen,
        accessible,
        gpio: typeof Gpio,
      }));`;
    const r = await esbuild.build({
      ...build.bundleOptions(),
      stdin: { contents: probe, resolveDir: ROOT, sourcefile: "probe.js", loader: "js" },
      metafile: false,
    });
    writeFileSync(join(dir, "probe.mjs"), r.outputFiles![0]!.contents);
    const p = spawnSync(process.execPath, [join(dir, "probe.mjs")], { cwd: dir, encoding: "utf8" });
    expect(p.stderr).toBe("");
    expect(JSON.parse(p.stdout)).toEqual({
      before: { serialport: false, onoff: false },
      after: { serialport: true, onoff: true },
      instance: true,
      path: "/nonexistent/tty",
      isOpen: false,
      accessible: GPIO_WRITABLE,
      gpio: "function",
    });
  });
});

describe.each(["amd64", "arm64"] as const)("%s bundle", (arch) => {
  const skipUnbuilt = (ctx: { skip: (note?: string) => never }) => {
    if (!ARCHES.includes(arch)) ctx.skip(SKIPPED);
  };
  const at = (...p: string[]) => join(out("a"), arch, ...p);
  const elfMachine = (file: string) => {
    const b = readFileSync(file);
    expect(b.subarray(0, 4).toString("latin1")).toBe("\x7fELF");
    return b.readUInt16LE(18);
  };

  it(`epoll's addon is an ELF for ${arch}, and so is the one serialport prebuild kept`, (ctx) => {
    skipUnbuilt(ctx);
    expect(elfMachine(at("node_modules/epoll/build/Release/epoll.node"))).toBe(ELF_MACHINE[arch]);
    const prebuilds = at("node_modules/@serialport/bindings-cpp/prebuilds");
    expect(readdirSync(prebuilds)).toEqual([`linux-${NODE_ARCH[arch]}`]);
    const kept = readdirSync(join(prebuilds, `linux-${NODE_ARCH[arch]}`));
    expect(kept).toHaveLength(1);
    expect(kept[0]).toMatch(/\.glibc\.node$/);
    expect(elfMachine(join(prebuilds, `linux-${NODE_ARCH[arch]}`, kept[0]!))).toBe(ELF_MACHINE[arch]);
  });

  it("node_modules is the native-addon packages' run-time closure, production packages only", (ctx) => {
    skipUnbuilt(ctx);
    // A package is a folder right under a node_modules (or an @scope in one) with a package.json.
    const pkgs = files(at("node_modules"))
      .map((f) => `node_modules/${f}`)
      .filter((f) => /node_modules\/(@[^/]+\/)?[^/@]+\/package\.json$/.test(f))
      .map((f) => f.slice("node_modules/".length, -"/package.json".length));
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { dev?: boolean }>;
    };
    for (const p of [
      "serialport",
      "@serialport/bindings-cpp",
      "onoff",
      "epoll",
      "bindings",
      "file-uri-to-path",
    ])
      expect(pkgs).toContain(p);
    for (const p of [
      "nan",
      "node-addon-api",
      "tsx",
      "esbuild",
      "vitest",
      "node-forge",
      "@xmldom/xmldom",
      "xml-crypto",
    ])
      expect(pkgs).not.toContain(p);
    for (const p of pkgs) {
      expect(lock.packages[`node_modules/${p}`], p).toBeDefined();
      expect(lock.packages[`node_modules/${p}`]?.dev, p).toBeUndefined();
    }
    expect(files(at("node_modules")).filter((f) => /(^|\/)(test|tests|examples?)\//.test(f))).toEqual([]);
  });

  it("MANIFEST.json names every file with its size and sha256", (ctx) => {
    skipUnbuilt(ctx);
    const m = JSON.parse(readFileSync(at("MANIFEST.json"), "utf8")) as {
      version: string;
      arch: string;
      node: string;
      files: Array<{ path: string; size: number; sha256: string }>;
    };
    expect(m).toMatchObject({ version: PKG.version, arch, node: ">=20.19" });
    const real = files(at()).filter((f) => f !== "MANIFEST.json");
    expect(m.files.map((f) => f.path)).toEqual(real);
    for (const f of m.files) {
      expect(f.size, f.path).toBe(statSync(at(f.path)).size);
      expect(f.sha256, f.path).toBe(sha256(readFileSync(at(f.path))));
    }
  });

  it("two builds of the same tree give the same tar, owned by 0:0 at SOURCE_DATE_EPOCH", (ctx) => {
    skipUnbuilt(ctx);
    const a = readFileSync(join(out("a"), `${arch}.tar`));
    const b = readFileSync(join(out("b"), `${arch}.tar`));
    expect(sha256(a)).toBe(sha256(b));
    // The tar's headers (ustar/GNU): owner, group, mtime, mode of every entry.
    const bad: string[] = [];
    let names = 0;
    for (let off = 0; off + 512 <= a.length; ) {
      const h = a.subarray(off, off + 512);
      if (h.every((x) => x === 0)) break;
      const field = (o: number, n: number) =>
        h
          .subarray(o, o + n)
          .toString("latin1")
          .replace(/\0.*$/s, "");
      const num = (o: number, n: number) => Number.parseInt(field(o, n).trim() || "0", 8);
      const name = field(0, 100);
      const size = num(124, 12);
      const type = field(156, 1);
      if (type !== "L") {
        names++;
        const mode = num(100, 8);
        if (num(108, 8) !== 0 || num(116, 8) !== 0 || num(136, 12) !== EPOCH || mode & 0o022)
          bad.push(`${name} ${mode.toString(8)}`);
      }
      off += 512 + Math.ceil(size / 512) * 512;
    }
    expect(names).toBeGreaterThan(20);
    expect(bad).toEqual([]);
  });
});
