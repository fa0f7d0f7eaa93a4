/**
 * The import rules of DESIGN.md "Layers and the direction of imports", enforced:
 * - imports point down the layer list, never up; no cycles;
 * - only firmware/platform/, board/ and the composition root touch Node I/O or I/O libraries
 *   (node:crypto is pure computation — hashes, HMAC — and allowed in any layer);
 * - board/ imports only firmware/hal and firmware/core;
 * - nothing but the composition root imports platform/ (adapters are plugged in at the top);
 * - shipped code never imports test/ (the lab is loaded lazily by the demo command alone).
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = resolve(import.meta.dirname, "../..");

function sourceFiles(dir: string): string[] {
  const abs = join(ROOT, dir);
  let entries: string[];
  try {
    entries = readdirSync(abs);
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const p = join(abs, e);
    if (statSync(p).isDirectory()) return sourceFiles(relative(ROOT, p));
    return /\.(ts|mts|mjs)$/.test(e) && !e.endsWith(".d.ts") ? [relative(ROOT, p)] : [];
  });
}

/** Layer rank: a file may import files of equal or lower rank. */
const RANKS: Array<[string, number]> = [
  ["firmware/core/", 0],
  ["firmware/hal/", 1],
  ["firmware/config/", 2],
  ["firmware/store/", 2],
  ["firmware/sip/", 3],
  ["firmware/telemetry/", 4],
  ["firmware/discovery/", 4],
  ["firmware/provisioning/", 4],
  ["firmware/accounts/", 5],
  ["firmware/phone/", 6],
  ["firmware/platform/", 7],
  ["board/", 7],
  ["firmware/commands/", 9],
  ["firmware/cli.ts", 9],
  ["firmware/main.ts", 9],
  ["firmware/handset.mjs", 10],
];

function rank(file: string): number {
  const hit = RANKS.find(([prefix]) => file.startsWith(prefix));
  if (!hit) throw new Error(`${file} is in no layer of DESIGN.md; add it to RANKS`);
  return hit[1];
}

const IO_PACKAGES =
  /^(node:(?!crypto$)|fs$|net$|tls$|dgram$|dns$|http$|https$|child_process$|os$|onoff|serialport|@serialport\/|mqtt)/;
const isRoot = (f: string) => rank(f) >= 9;
const mayDoIo = (f: string) => f.startsWith("firmware/platform/") || f.startsWith("board/") || isRoot(f);

interface Edge {
  from: string;
  to: string;
  dynamic: boolean;
}

function imports(file: string): { local: Edge[]; external: string[] } {
  const text = readFileSync(join(ROOT, file), "utf8");
  const info = ts.preProcessFile(text, true, true);
  const local: Edge[] = [];
  const external: string[] = [];
  for (const ref of info.importedFiles) {
    const spec = ref.fileName;
    if (spec.startsWith(".")) {
      const to = relative(ROOT, resolve(dirname(join(ROOT, file)), spec));
      local.push({ from: file, to, dynamic: /import\s*\(\s*$/.test(text.slice(0, ref.pos).slice(-20)) });
    } else external.push(spec);
  }
  return { local, external };
}

const files = [...sourceFiles("firmware"), ...sourceFiles("board")];

describe("layering (DESIGN.md)", () => {
  it("has files to check", () => {
    expect(files.length).toBeGreaterThan(10);
  });

  it("imports point down the layers and never into test/ (except the demo's lazy lab)", () => {
    const violations: string[] = [];
    for (const f of files) {
      for (const e of imports(f).local) {
        if (e.to.startsWith("test/")) {
          if (!(f === "firmware/commands/lab.ts" && e.dynamic)) violations.push(`${f} → ${e.to} (test code)`);
          continue;
        }
        if (rank(e.to) > rank(f)) violations.push(`${f} → ${e.to} (upward)`);
        if (e.to.startsWith("firmware/platform/") && !isRoot(f) && !f.startsWith("firmware/platform/"))
          violations.push(`${f} → ${e.to} (only the composition root plugs in adapters)`);
        if (f.startsWith("board/") && e.to.startsWith("firmware/") && !/^firmware\/(hal|core)\//.test(e.to))
          violations.push(`${f} → ${e.to} (board/ may use only firmware/hal and firmware/core)`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("only platform/, board/ and the composition root touch I/O", () => {
    const violations: string[] = [];
    for (const f of files) {
      if (mayDoIo(f)) continue;
      for (const spec of imports(f).external)
        if (IO_PACKAGES.test(spec)) violations.push(`${f} imports ${spec}`);
    }
    expect(violations).toEqual([]);
  });

  it("has no import cycles", () => {
    const graph = new Map<string, string[]>();
    for (const f of files)
      graph.set(
        f,
        imports(f)
          .local.filter((e) => !e.dynamic)
          .map((e) => e.to),
      );
    const state = new Map<string, "visiting" | "done">();
    const cycles: string[] = [];
    const visit = (n: string, path: string[]) => {
      if (state.get(n) === "done") return;
      if (state.get(n) === "visiting") {
        cycles.push([...path.slice(path.indexOf(n)), n].join(" → "));
        return;
      }
      state.set(n, "visiting");
      for (const m of graph.get(n) ?? []) visit(m, [...path, n]);
      state.set(n, "done");
    };
    for (const f of graph.keys()) visit(f, []);
    expect(cycles).toEqual([]);
  });
});
