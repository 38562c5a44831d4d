// Shared ending of every bench/micro/*.bench.ts: mitata's own table when run by hand
// (`bun bench/micro/codec.bench.ts`), or a JSON summary file when run by the `micro` scenario.
import fs from "node:fs";
import { run } from "mitata";

export interface MicroFigure {
  name: string;
  group?: string;
  avgNs: number;
  p50Ns: number;
  p99Ns: number;
}

export async function runMicro(): Promise<void> {
  const out = process.env.BENCH_MICRO_OUT;
  const r = await run(out ? { format: "quiet", throw: true } : { colors: !process.env.NO_COLOR });
  if (!out) return;
  const figures: MicroFigure[] = [];
  // mitata keeps each trial's group as an index into its layout; neither is in its published types.
  const layout = (r as unknown as { layout?: Array<{ name: string | null }> }).layout ?? [];
  for (const b of r.benchmarks) {
    const g = (b as unknown as { group?: number }).group;
    for (const x of b.runs) {
      if (!x.stats) throw new Error(`micro benchmark ${x.name} failed: ${String(x.error)}`);
      figures.push({ name: x.name, group: g === undefined ? undefined : (layout[g]?.name ?? undefined), avgNs: x.stats.avg, p50Ns: x.stats.p50, p99Ns: x.stats.p99 });
    }
  }
  fs.writeFileSync(out, JSON.stringify(figures));
}

/** A micro benchmark whose module is not in the tree says so, never silently. */
export function requireModules(paths: string[]): boolean {
  const root = new URL("../../", import.meta.url).pathname;
  const missing = paths.filter((p) => !fs.existsSync(root + p));
  for (const p of missing) console.log(`module not present: ${p} — skipped`);
  return missing.length === 0;
}
