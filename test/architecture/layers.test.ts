/**
 * The import rules of DESIGN.md "Layers and the direction of imports", enforced on every file of
 * firmware/ and board/:
 * - imports point down the layer list, never up; no cycles;
 * - the product never reaches test/ or scripts/: no static import, no import() of them, and no
 *   import()/require() whose target is not a string literal (it could go anywhere). The demo and
 *   the lab are development tools in test/dev/ (`npm start`), which import the product, not the
 *   other way round;
 * - inside firmware/sip/ the layers are grammar ← message ← transaction ← dialog ←
 *   user-agent-core ← {registration, session}; grammar and message are the shared vocabulary
 *   (any SIP layer may use them); each machine above uses only the machine directly below it
 *   (user-agent-core uses transaction while there is no dialog layer); tls-dsk/ is the auth
 *   scheme, used by user-agent-core and registration, and itself uses only the vocabulary;
 *   flow.ts is the transport contract (vocabulary only), used by user-agent-core and above;
 * - only firmware/platform/, board/ and the composition root (firmware/commands/, cli.ts,
 *   main.ts, handset.mjs) import node:* or I/O libraries. node:crypto is pure computation (hashes,
 *   HMAC, signatures, X.509 parsing) and allowed in any layer, except its randomness
 *   (randomBytes, randomInt, randomUUID, getRandomValues), which comes from the Random port;
 * - board/ imports only firmware/hal and firmware/core;
 * - nothing but the composition root imports platform/ (adapters are plugged in at the top);
 * - time and randomness come from the Clock and Random ports: setTimeout, setInterval,
 *   setImmediate (and their clear*), Date.now(), new Date() / Date() without an argument,
 *   performance.now(), process.hrtime and Math.random appear only in firmware/platform/ (the
 *   SystemClock and CryptoRandom adapters) and board/ (hardware timing: debounce, scan, serial).
 *   Not even the composition root uses them: it builds a SystemClock and uses that.
 *   (new Date(epochMs), Date.UTC and Date.parse are pure conversions and allowed anywhere.)
 * - no fire-and-forget promise without a catch: `void p` only as `void p.catch(…)` (or
 *   `.then(ok, fail)`), so a rejection is logged where it happens instead of ending the process.
 *
 * ALLOWED lists existing exceptions in files other work owns, each with its reason; an entry
 * that no longer matches a violation fails the test, so the list only shrinks.
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
  // RTP, SRTP, SDP, codecs, jitter buffer, tones: pure media cores (issue 12), beside sip/.
  ["firmware/media/", 3],
  ["firmware/telemetry/", 4],
  ["firmware/discovery/", 4],
  ["firmware/provisioning/", 4],
  ["firmware/update/", 4],
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

/** firmware/sip/ sublayers, and which sublayers each may import (besides itself). */
const SIP_LAYERS: Array<[RegExp, string]> = [
  [/^firmware\/sip\/grammar\//, "grammar"],
  [/^firmware\/sip\/message\//, "message"],
  [/^firmware\/sip\/flow\.ts$/, "flow"],
  [/^firmware\/sip\/transaction\//, "transaction"],
  [/^firmware\/sip\/dialog\//, "dialog"],
  [/^firmware\/sip\/tls-dsk\//, "tls-dsk"],
  [/^firmware\/sip\/user-agent-core(\.ts$|\/)/, "user-agent-core"],
  [/^firmware\/sip\/registration\//, "registration"],
  [/^firmware\/sip\/session\//, "session"],
];
const VOCABULARY = ["grammar", "message"];
const SIP_MAY_IMPORT: Record<string, string[]> = {
  grammar: [],
  message: ["grammar"],
  flow: VOCABULARY,
  transaction: VOCABULARY,
  dialog: ["transaction", ...VOCABULARY],
  "tls-dsk": VOCABULARY,
  "user-agent-core": ["dialog", "transaction", "tls-dsk", "flow", ...VOCABULARY],
  registration: ["user-agent-core", "tls-dsk", "flow", ...VOCABULARY],
  session: ["user-agent-core", "flow", ...VOCABULARY],
};

function sipLayer(file: string): string | undefined {
  return SIP_LAYERS.find(([re]) => re.test(file))?.[1];
}

const IO_PACKAGES =
  /^(node:(?!crypto$)|fs$|net$|tls$|dgram$|dns$|http$|https$|child_process$|os$|onoff|serialport|@serialport\/|mqtt)/;
const CRYPTO_RANDOMNESS = new Set([
  "randomBytes",
  "randomInt",
  "randomUUID",
  "getRandomValues",
  "randomFill",
]);
const isRoot = (f: string) => rank(f) >= 9;
const mayDoIo = (f: string) => f.startsWith("firmware/platform/") || f.startsWith("board/") || isRoot(f);
const mayUseTime = (f: string) => f.startsWith("firmware/platform/") || f.startsWith("board/");

/**
 * Existing exceptions, in files owned by other work, each with its reason. Key: the violation
 * text as the test reports it.
 */
const ALLOWED: Record<string, string> = {
  "firmware/sip/registration/registration.ts → firmware/sip/transaction/non-invite-client.ts (sip: registration may not use transaction)":
    "type-only: user-agent-core's request() hands out the NonInviteClientTransaction; the core should expose its own request handle",
  "firmware/sip/tls-dsk/forge-engine.ts uses setTimeout":
    "the forge engine's per-flight timeout; should take the Clock port (Registration passes it one)",
  "firmware/sip/tls-dsk/forge-engine.ts uses clearTimeout": "the same timer as above",
  "firmware/store/identity-store.ts uses node:crypto randomBytes":
    "the store's fallback Random when none is injected (first-boot ids); every caller in firmware passes CryptoRandom",
};

/**
 * Files (owned by other work) that still hold `void p` without a catch, with the most such lines
 * they may have and why. Counted per file: line numbers move while the files are edited.
 */
const ALLOWED_UNCAUGHT_VOIDS: Record<string, { max: number; reason: string }> = {};

interface Edge {
  from: string;
  to: string;
  dynamic: boolean;
  typeOnly: boolean;
}

interface FileFacts {
  local: Edge[];
  external: Array<{ spec: string; names: string[] }>;
  /** import(x) / require(x) whose x is not a string literal. */
  opaqueLoads: number[];
  /** Uses of the process's time and randomness globals: "setTimeout", "Date.now", … */
  timeGlobals: string[];
  /** Lines of `void <call>` whose promise has no catch. */
  uncaughtVoids: number[];
}

const cache = new Map<string, FileFacts>();

function facts(file: string): FileFacts {
  const hit = cache.get(file);
  if (hit) return hit;
  const out = factsOf(file, readFileSync(join(ROOT, file), "utf8"));
  cache.set(file, out);
  return out;
}

function factsOf(file: string, text: string): FileFacts {
  const src = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const out: FileFacts = { local: [], external: [], opaqueLoads: [], timeGlobals: [], uncaughtVoids: [] };
  const line = (n: ts.Node) => src.getLineAndCharacterOfPosition(n.getStart(src)).line + 1;
  const addSpec = (spec: string, dynamic: boolean, typeOnly: boolean, names: string[]) => {
    if (spec.startsWith(".")) {
      const to = relative(ROOT, resolve(dirname(join(ROOT, file)), spec));
      out.local.push({ from: file, to, dynamic, typeOnly });
    } else out.external.push({ spec, names });
  };
  const isCatching = (e: ts.Expression): boolean => {
    let x = e;
    while (ts.isParenthesizedExpression(x) || ts.isAwaitExpression(x)) x = x.expression;
    if (!ts.isCallExpression(x)) return true; // `void value`: not a call, nothing floats
    const callee = x.expression;
    if (ts.isPropertyAccessExpression(callee)) {
      if (callee.name.text === "catch") return true;
      if (callee.name.text === "then" && x.arguments.length >= 2) return true;
      // p.catch(…).then(f): f's own throw is uncaught again; only finally passes the catch on.
      if (callee.name.text === "finally") return isCatching(callee.expression);
    }
    return false;
  };
  const visit = (n: ts.Node): void => {
    if (ts.isImportDeclaration(n) && ts.isStringLiteral(n.moduleSpecifier)) {
      const names: string[] = [];
      const b = n.importClause?.namedBindings;
      if (b && ts.isNamedImports(b))
        for (const el of b.elements) names.push((el.propertyName ?? el.name).text);
      addSpec(n.moduleSpecifier.text, false, n.importClause?.isTypeOnly === true, names);
    } else if (ts.isExportDeclaration(n) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
      addSpec(n.moduleSpecifier.text, false, n.isTypeOnly, []);
    } else if (ts.isImportTypeNode(n)) {
      const arg = n.argument;
      if (ts.isLiteralTypeNode(arg) && ts.isStringLiteral(arg.literal))
        addSpec(arg.literal.text, false, true, []);
    } else if (ts.isCallExpression(n)) {
      const isImport = n.expression.kind === ts.SyntaxKind.ImportKeyword;
      const isRequire = ts.isIdentifier(n.expression) && n.expression.text === "require";
      if (isImport || isRequire) {
        const arg = n.arguments[0];
        if (arg && ts.isStringLiteralLike(arg)) addSpec(arg.text, true, false, []);
        else out.opaqueLoads.push(line(n));
      }
    } else if (ts.isVoidExpression(n)) {
      if (!isCatching(n.expression)) out.uncaughtVoids.push(line(n));
    }
    // time and randomness globals
    if (ts.isIdentifier(n) && !ts.isPropertyAccessExpression(n.parent)) {
      if (/^(setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|clearImmediate)$/.test(n.text))
        out.timeGlobals.push(n.text);
    }
    if (ts.isPropertyAccessExpression(n) && ts.isIdentifier(n.expression)) {
      const obj = n.expression.text;
      const prop = n.name.text;
      const key = `${obj}.${prop}`;
      if (["Date.now", "Math.random", "performance.now", "process.hrtime"].includes(key))
        out.timeGlobals.push(key);
      if (
        obj === "globalThis" &&
        /^(setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|performance|Date)$/.test(prop)
      )
        out.timeGlobals.push(key);
    }
    if (
      (ts.isNewExpression(n) || ts.isCallExpression(n)) &&
      ts.isIdentifier(n.expression) &&
      n.expression.text === "Date" &&
      (n.arguments?.length ?? 0) === 0
    )
      out.timeGlobals.push(ts.isNewExpression(n) ? "new Date()" : "Date()");
    ts.forEachChild(n, visit);
  };
  visit(src);
  return out;
}

const files = [...sourceFiles("firmware"), ...sourceFiles("board")];

/** Splits violations into those the allow-list explains and those it does not. */
function check(found: string[], kind: RegExp): { unexplained: string[]; stale: string[] } {
  const allowed = Object.keys(ALLOWED).filter((k) => kind.test(k));
  return {
    unexplained: found.filter((v) => !Object.hasOwn(ALLOWED, v)),
    stale: allowed.filter((k) => !found.includes(k)),
  };
}

describe("layering (DESIGN.md)", () => {
  it("has files to check", () => {
    expect(files.length).toBeGreaterThan(10);
  });

  it("the checks see what they look for", () => {
    const x = factsOf(
      "firmware/phone/x.ts",
      `import type { A } from "../../test/lab/lab.ts";
       import { randomBytes } from "node:crypto";
       const lab = await import("../../test/lab/lab.ts");
       const other = await import(name);
       setTimeout(() => {}, 1); globalThis.setInterval(f, 1); Date.now(); new Date(); Math.random();
       new Date(0); Date.UTC(2026, 0, 1); obj.setTimeout(1);
       void run(); void run().catch(log); void run().catch(log).then(f); void run().then(f, log);
       void run().catch(log).finally(g); void 0;`,
    );
    expect(x.local.map((e) => [e.to, e.dynamic])).toEqual([
      ["test/lab/lab.ts", false],
      ["test/lab/lab.ts", true],
    ]);
    expect(x.external).toEqual([{ spec: "node:crypto", names: ["randomBytes"] }]);
    expect(x.opaqueLoads).toEqual([4]);
    expect(x.timeGlobals.sort()).toEqual(
      ["setTimeout", "globalThis.setInterval", "Date.now", "new Date()", "Math.random"].sort(),
    );
    expect(x.uncaughtVoids).toEqual([7, 7]);
  });

  it("imports point down the layers", () => {
    const violations: string[] = [];
    for (const f of files) {
      for (const e of facts(f).local) {
        if (e.to.startsWith("test/") || e.to.startsWith("scripts/")) continue; // the next test
        if (rank(e.to) > rank(f)) violations.push(`${f} → ${e.to} (upward)`);
        if (e.to.startsWith("firmware/platform/") && !isRoot(f) && !f.startsWith("firmware/platform/"))
          violations.push(`${f} → ${e.to} (only the composition root plugs in adapters)`);
        if (f.startsWith("board/") && e.to.startsWith("firmware/") && !/^firmware\/(hal|core)\//.test(e.to))
          violations.push(`${f} → ${e.to} (board/ may use only firmware/hal and firmware/core)`);
      }
    }
    expect(violations).toEqual([]);
  });

  it("the product never reaches test/ or scripts/ (static, import() or require; no opaque loads)", () => {
    const violations: string[] = [];
    for (const f of files) {
      const x = facts(f);
      for (const e of x.local)
        if (e.to.startsWith("test/") || e.to.startsWith("scripts/"))
          violations.push(`${f} → ${e.to}${e.dynamic ? " (dynamic)" : ""}`);
      for (const l of x.opaqueLoads) violations.push(`${f}:${l} import()/require() of a computed path`);
    }
    expect(violations).toEqual([]);
  });

  it("inside firmware/sip/ each layer uses only the one below it and the vocabulary", () => {
    const found: string[] = [];
    for (const f of files) {
      const from = sipLayer(f);
      if (!from) continue;
      for (const e of facts(f).local) {
        const to = sipLayer(e.to);
        if (!to || to === from) continue;
        if (!SIP_MAY_IMPORT[from]!.includes(to))
          found.push(`${f} → ${e.to} (sip: ${from} may not use ${to})`);
      }
    }
    const { unexplained, stale } = check(found, / \(sip: /);
    expect(unexplained).toEqual([]);
    expect(stale).toEqual([]);
  });

  it("only platform/, board/ and the composition root touch I/O; node:crypto's randomness only in platform/ and board/", () => {
    const found: string[] = [];
    for (const f of files) {
      for (const { spec, names } of facts(f).external) {
        if (!mayDoIo(f) && IO_PACKAGES.test(spec)) found.push(`${f} imports ${spec}`);
        if (!mayUseTime(f) && /^(node:)?crypto$/.test(spec))
          for (const n of names) if (CRYPTO_RANDOMNESS.has(n)) found.push(`${f} uses node:crypto ${n}`);
      }
    }
    const { unexplained, stale } = check(found, / (imports|uses node:crypto) /);
    expect(unexplained).toEqual([]);
    expect(stale).toEqual([]);
  });

  it("time and randomness globals appear only in platform/ and board/ (everything else takes Clock and Random)", () => {
    const found = new Set<string>();
    for (const f of files) {
      if (mayUseTime(f)) continue;
      for (const g of facts(f).timeGlobals) found.add(`${f} uses ${g}`);
    }
    const { unexplained, stale } = check([...found], / uses (?!node:crypto)/);
    expect(unexplained).toEqual([]);
    expect(stale).toEqual([]);
  });

  it("no fire-and-forget promise without a catch (`void p` only as `void p.catch(…)`)", () => {
    const unexplained: string[] = [];
    const counts = new Map<string, number>();
    for (const f of files) {
      const lines = facts(f).uncaughtVoids;
      if (lines.length > 0) counts.set(f, lines.length);
      const allowed = ALLOWED_UNCAUGHT_VOIDS[f];
      if (!allowed || lines.length > allowed.max)
        unexplained.push(...lines.map((l) => `${f}:${l} void without catch`));
    }
    expect(unexplained).toEqual([]);
    // The list only shrinks: a file that got its catches is taken off it.
    expect(Object.keys(ALLOWED_UNCAUGHT_VOIDS).filter((f) => !counts.has(f))).toEqual([]);
  });

  it("has no import cycles", () => {
    const graph = new Map<string, string[]>();
    for (const f of files)
      graph.set(
        f,
        facts(f)
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
