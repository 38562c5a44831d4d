// The source tree's layers, checked from the imports themselves (ARCHITECTURE.md draws them):
// which folder may import which, no folder cycle, no file over 450 lines, no import() of a computed path.
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const SRC = join(ROOT, "src");
const MAX_LINES = 450;

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sourceFiles(p));
    else if (p.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** The files at the top, which wire every layer together. */
const WIRING = new Set(["main.ts", "cli.ts"]);

/** The layer a file belongs to: its first folder under src/; of src/*.ts, "main" for the wiring and "root" for
 *  the leaf modules (config.ts, clock.ts, errors.ts, client.ts) that any layer may import. */
const layerOf = (file: string) => {
  const rel = relative(SRC, file).split("/");
  if (rel.length > 1) return rel[0]!;
  return WIRING.has(rel[0]!) ? "main" : "root";
};

// Static imports, re-exports and import() calls with a literal specifier (relative ones only: packages are not layers).
const STATIC = /(?:^|\n)\s*(?:import|export)\s[^;]*?\sfrom\s*["']([^"']+)["']|(?:^|\n)\s*import\s*["']([^"']+)["']/g;
const DYNAMIC = /\bimport\s*\(\s*([^)]*)\)/g;

interface Edge { from: string; to: string }

function readTree() {
  const files = sourceFiles(SRC);
  const edges: Edge[] = [];
  const computed: string[] = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(STATIC)) {
      const spec = m[1] ?? m[2]!;
      if (spec.startsWith(".")) edges.push({ from: file, to: resolve(dirname(file), spec) });
    }
    for (const m of text.matchAll(DYNAMIC)) {
      const arg = m[1]!.trim();
      const literal = /^(["'])[^"'`$]*\1$/.test(arg);
      if (!literal) computed.push(`${relative(ROOT, file)}: import(${arg})`);
      else if (arg.slice(1, -1).startsWith(".")) edges.push({ from: file, to: resolve(dirname(file), arg.slice(1, -1)) });
    }
  }
  return { files, edges, computed };
}

const tree = readTree();
const layerEdges = tree.edges
  .map((e) => ({ ...e, fromLayer: layerOf(e.from), toLayer: layerOf(e.to) }))
  .filter((e) => e.fromLayer !== e.toLayer);
const importsOf = (layer: string) => layerEdges.filter((e) => e.fromLayer === layer);
const show = (es: { from: string; to: string }[]) => es.map((e) => `${relative(ROOT, e.from)} -> ${relative(ROOT, e.to)}`);

/** What each layer may import besides itself. */
const ALLOWED: Record<string, readonly string[]> = {
  root: ["metrics"],
  protocol: ["root"],
  metrics: [],
  embedded: [],
  storage: ["root", "metrics"],
  gateway: ["root", "metrics", "storage"],
  http: ["root", "metrics"],
  kv: ["root", "metrics", "http", "gateway"],
  pool: ["root", "metrics", "protocol", "http"],
  workerd: ["root", "metrics", "http", "kv"],
};

describe("source layers", () => {
  test("every folder under src/ has its rule", () => {
    const layers = new Set(tree.files.map(layerOf));
    layers.delete("main");
    expect([...layers].filter((l) => !(l in ALLOWED))).toEqual([]);
  });

  for (const [layer, allowed] of Object.entries(ALLOWED)) {
    test(`${layer}/ imports only ${allowed.length ? allowed.join(", ") : "itself"}`, () => {
      expect(show(importsOf(layer).filter((e) => !allowed.includes(e.toLayer)))).toEqual([]);
    });
  }

  test("nothing but main.ts and cli.ts imports main.ts or cli.ts", () => {
    expect(show(layerEdges.filter((e) => e.toLayer === "main"))).toEqual([]);
  });

  test("no folder cycle", () => {
    const next = new Map<string, Set<string>>();
    for (const e of layerEdges) {
      if (!next.has(e.fromLayer)) next.set(e.fromLayer, new Set());
      next.get(e.fromLayer)!.add(e.toLayer);
    }
    const cycles: string[] = [];
    const reaches = (from: string, to: string, seen = new Set<string>()): boolean => {
      for (const n of next.get(from) ?? []) {
        if (n === to) return true;
        if (!seen.has(n)) { seen.add(n); if (reaches(n, to, seen)) return true; }
      }
      return false;
    };
    for (const [a, ns] of next) for (const b of ns) if (reaches(b, a)) cycles.push(`${a} <-> ${b}`);
    expect(cycles).toEqual([]);
  });

  test(`no file in src/ over ${MAX_LINES} lines`, () => {
    const long = tree.files
      .map((f) => ({ f: relative(ROOT, f), n: readFileSync(f, "utf8").split("\n").length - 1 }))
      .filter((x) => x.n > MAX_LINES)
      .map((x) => `${x.f}: ${x.n}`);
    expect(long).toEqual([]);
  });

  test("no import() of a computed path", () => {
    expect(tree.computed).toEqual([]);
  });

  test("the checker sees the imports it checks (kv imports gateway, pool imports protocol)", () => {
    expect(importsOf("kv").some((e) => e.toLayer === "gateway")).toBe(true);
    expect(importsOf("pool").some((e) => e.toLayer === "protocol")).toBe(true);
    expect(tree.edges.length).toBeGreaterThan(200);
  });
});
