// `bun run bench` (quick suite, under 3 minutes), `bun run bench --full`, or `bun run bench <scenario>...`.
// Options: --duration <s> and --warmup <s> override the per-run times (e.g. for a smoke run).
// Each scenario writes bench/results/<date>-<scenario>.{json,md,svg} and refreshes bench/results/LATEST.md.
import { createContext, type Scenario } from "./lib/context.ts";
import { describeMachine, machine } from "./lib/machine.ts";
import { liveChildren } from "./lib/procs.ts";
import { writeResult } from "./lib/report.ts";
import { failed } from "./lib/result.ts";
import { kvRead } from "./scenarios/kv-read.ts";
import { kvWrite } from "./scenarios/kv-write.ts";
import { pooler } from "./scenarios/pooler.ts";
import { hyperdrive } from "./scenarios/hyperdrive.ts";
import { micro } from "./scenarios/micro.ts";
import { kvSizes } from "./scenarios/kv-sizes.ts";
import { kvPeers } from "./scenarios/kv-peers.ts";
import { redundancy } from "./scenarios/redundancy.ts";

const SCENARIOS: Scenario[] = [micro, kvRead, kvWrite, kvSizes, hyperdrive, pooler, kvPeers, redundancy];

function parseArgs(argv: string[]) {
  const o = { full: false, names: [] as string[], duration: undefined as number | undefined, warmup: undefined as number | undefined, list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--full") o.full = true;
    else if (a === "--list") o.list = true;
    else if (a === "--duration" || a === "--warmup") {
      const v = Number(argv[++i]);
      if (!(v > 0)) throw new Error(`${a} needs a positive number of seconds, got ${JSON.stringify(argv[i])}`);
      o[a === "--duration" ? "duration" : "warmup"] = v;
    } else if (a.startsWith("--")) throw new Error(`unknown option ${a}; known: --full, --list, --duration <s>, --warmup <s>`);
    else o.names.push(a);
  }
  return o;
}

const args = parseArgs(process.argv.slice(2));
if (args.list) {
  for (const s of SCENARIOS) console.log(`${s.name.padEnd(12)} ${s.quick ? "quick+full" : "full      "} ${s.title}`);
  process.exit(0);
}
const unknown = args.names.filter((n) => !SCENARIOS.some((s) => s.name === n));
if (unknown.length) {
  console.error(`unknown scenario ${unknown.join(", ")}; known: ${SCENARIOS.map((s) => s.name).join(", ")}`);
  process.exit(2);
}
const chosen = args.names.length ? SCENARIOS.filter((s) => args.names.includes(s.name)) : SCENARIOS.filter((s) => args.full || s.quick);
const durationSec = args.duration ?? (args.full ? 8 : 4);
const warmupSec = args.warmup ?? (args.full ? 2 : 1);
const m = machine();
const command = `bun run bench${args.full ? " --full" : ""}${args.names.length ? " " + args.names.join(" ") : ""}${args.duration ? ` --duration ${args.duration}` : ""}${args.warmup ? ` --warmup ${args.warmup}` : ""}`;

console.log(`kvdrive bench — ${args.full ? "full" : args.names.length ? "selected" : "quick"} suite: ${chosen.map((s) => s.name).join(", ")}`);
console.log(`  per run ${durationSec} s, warm-up ${warmupSec} s per target (excluded from results)`);
console.log(`  machine: ${describeMachine(m)}`);
if (m.dirty) console.log("  WARNING: src/, bench/ or package.json differ from the commit; results are marked as such.");

const run = createContext({ full: args.full, durationSec, warmupSec });
const stopAll = async () => {
  for (const c of liveChildren()) await c.stop().catch(() => {});
  await run.endRun().catch(() => {});
};
process.on("SIGINT", () => void stopAll().finally(() => process.exit(130)));
process.on("SIGTERM", () => void stopAll().finally(() => process.exit(143)));

const t0 = Date.now();
let failures = 0;
try {
  for (const [i, s] of chosen.entries()) {
    console.log(`\n== ${i + 1}/${chosen.length} ${s.name}: ${s.title}`);
    console.log(`  parameters: ${s.params}; ${durationSec} s per run, warm-up ${warmupSec} s excluded`);
    const started = new Date().toISOString();
    try {
      const result = await s.run(run.ctx);
      await run.endScenario();
      const files = await writeResult({ result, machine: m, date: started, command, warmup: result.warmup ?? `Warm-up: ${warmupSec} s per target before its measured runs, excluded.` });
      for (const r of result.ratios) console.log(`  ratio  ${r.name}: ${r.value === null ? `— (${r.note})` : `${r.value.toFixed(2)}×`}${r.target ? ` (target ${r.target}${r.pass === undefined ? "" : r.pass ? ", met" : ", NOT met"})` : ""}`);
      console.log(`  wrote ${[files.json, files.md, files.svg].filter(Boolean).join(", ")}`);
    } catch (e) {
      failures++;
      await run.endScenario();
      console.error(`  scenario ${s.name} failed: ${e instanceof Error ? e.stack : e}`);
      await writeResult({ result: { scenario: s.name, title: s.title, params: {}, rows: [failed(s.name, e)], ratios: [], notes: [] }, machine: m, date: started, command, warmup: "" });
    }
  }
} finally {
  await stopAll();
}
console.log(`\ndone in ${((Date.now() - t0) / 1000).toFixed(0)} s; bench/results/LATEST.md updated${failures ? `; ${failures} scenario(s) failed` : ""}`);
process.exit(failures ? 1 : 0);
