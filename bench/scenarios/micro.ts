// Hot paths at the micro level: every bench/micro/*.bench.ts (mitata) in its own process. A file whose
// module is not in the tree prints "module not present", which becomes a row saying so.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Scenario } from "../lib/context.ts";
import type { MicroFigure } from "../lib/micro.ts";
import { failed, notBuilt, type Row } from "../lib/result.ts";

const DIR = path.join(import.meta.dir, "..", "micro");

export const micro: Scenario = {
  name: "micro",
  title: "Micro benchmarks (mitata): protocol codec, caches, versions, batching, ring, classification",
  quick: false,
  params: "every bench/micro/*.bench.ts with mitata, one process each",
  async run(ctx) {
    const rows: Row[] = [];
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-micro-"));
    ctx.defer(() => fs.rmSync(tmp, { recursive: true, force: true }));
    for (const file of fs.readdirSync(DIR).filter((f) => f.endsWith(".bench.ts")).sort()) {
      const out = path.join(tmp, `${file}.json`);
      const label = file.replace(/\.bench\.ts$/, "");
      await ctx.measure(`bun bench/micro/${file}`, 0, async () => {
        const proc = Bun.spawn(["bun", path.join(DIR, file)], { env: { ...process.env, BENCH_MICRO_OUT: out, NO_COLOR: "1" }, stdout: "pipe", stderr: "pipe", cwd: path.join(import.meta.dir, "..", "..") });
        const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
        if (code !== 0) {
          const r = failed(label, stderr || stdout, label);
          rows.push(r);
          return r;
        }
        if (!fs.existsSync(out)) {
          const missing = /module not present[^\n]*/.exec(stdout)?.[0];
          const r = missing ? notBuilt(label, missing, label) : notBuilt(label, "ran, but reported through mitata's own output only: run it by hand to see the table", label);
          rows.push(r);
          return r;
        }
        const figures = JSON.parse(fs.readFileSync(out, "utf8")) as MicroFigure[];
        for (const f of figures) {
          rows.push({ label: `${f.group ? `${f.group}: ` : ""}${f.name}`, group: label, status: "ok", rps: 1e9 / f.avgNs, p50: f.p50Ns / 1e6, p99: f.p99Ns / 1e6, note: `avg ${f.avgNs < 1000 ? `${f.avgNs.toFixed(1)} ns` : `${(f.avgNs / 1000).toFixed(2)} µs`} per op` });
        }
        return { label, status: "ok", note: `${figures.length} benchmarks` };
      });
    }
    return {
      scenario: "micro",
      title: this.title,
      params: { tool: "mitata (warm-up and sample counts are mitata's own)", "req/s column": "operations per second (1 / average time)" },
      rows,
      ratios: [],
      warmup: "Warm-up: mitata's own, excluded.",
      notes: ["Run one file by hand for mitata's full table, e.g. `bun bench/micro/codec.bench.ts`."],
    };
  },
};
