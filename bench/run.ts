// `bun run bench [scenario] [--full]`: runs the benchmark scenarios and writes bench/results/<date>-<scenario>.{json,md}.
import { execSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { runKv } from "./scenarios/kv.ts";
import type { LoadResult } from "./lib/load.ts";

const args = process.argv.slice(2);
const full = args.includes("--full");
const only = args.find((a) => !a.startsWith("--"));
const durationSec = full ? 15 : 5;

const scenarios: Record<string, () => Promise<void>> = {
  kv: async () => {
    const r = await runKv({ durationSec, log: (l) => console.log(`  ${l}`) });
    const rows = Object.values(r.results).map((x: LoadResult) => `| ${x.label} | ${Math.round(x.requestsPerSec)} | ${x.p50Ms.toFixed(2)} | ${x.p99Ms.toFixed(2)} | ${x.errors} | ${x.non2xx} |`);
    const md = [
      `### KV (issue 2), ${durationSec} s per run, 288-byte values`,
      "",
      "| target | req/s | p50 ms | p99 ms | errors | non-2xx |",
      "| --- | ---: | ---: | ---: | ---: | ---: |",
      ...rows,
      "",
      "| ratio | measured | target |",
      "| --- | ---: | ---: |",
      `| cached GET / Bun.serve hello-world | ${r.ratios.cachedGetVsHello.toFixed(2)}× | ≥ 0.6× |`,
      `| PUT with group commit / direct single-row upserts (rows/s) | ${r.ratios.putGroupCommitVsDirectUpsert.toFixed(2)}× | ≥ 3× |`,
      `| GET miss / direct Bun.SQL keyed select | ${r.ratios.getMissVsDirectSelect.toFixed(2)}× | ≥ 0.5× |`,
      `| peak kvdrive RSS | ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB | < cache bound + 150 MiB = ${(r.cacheBoundBytes / 2 ** 20 + 150).toFixed(0)} MiB |`,
    ].join("\n");
    write("kv", r, md);
  },
};

function commit(): string {
  try {
    return execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim() + (execSync("git status --porcelain --untracked-files=no", { encoding: "utf8" }).trim() ? "+dirty" : "");
  } catch {
    return "unknown";
  }
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? "cpu"}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ${os.platform()} ${os.release()}, Bun ${Bun.version}`;

function write(name: string, data: unknown, md: string) {
  const date = new Date().toISOString().slice(0, 10);
  const dir = path.join(import.meta.dir, "results");
  fs.mkdirSync(dir, { recursive: true });
  const header = `<!-- commit ${commit()}; ${machine}; warm-up excluded -->\n`;
  fs.writeFileSync(path.join(dir, `${date}-${name}.json`), JSON.stringify({ scenario: name, date: new Date().toISOString(), commit: commit(), machine, durationSec, data }, null, 2));
  fs.writeFileSync(path.join(dir, `${date}-${name}.md`), header + md + "\n");
  console.log("\n" + md + "\n");
}

const names = only ? [only] : Object.keys(scenarios);
console.log(`kvdrive bench: ${names.join(", ")}; ${durationSec} s per run; commit ${commit()}; ${machine}`);
for (const n of names) {
  const run = scenarios[n];
  if (!run) {
    console.error(`unknown scenario ${JSON.stringify(n)}; known: ${Object.keys(scenarios).join(", ")}`);
    process.exit(2);
  }
  console.log(`\n== ${n}`);
  await run();
}
