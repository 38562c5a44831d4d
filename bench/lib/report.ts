// Results on disk: bench/results/<date>-<scenario>.{json,md,svg}, and LATEST.md, which gathers the latest
// run of every scenario (tables, ratios, charts, machine, how to reproduce) for the README.
import fs from "node:fs";
import path from "node:path";
import { renderChart } from "./chart.ts";
import { describeMachine, type Machine } from "./machine.ts";
import type { Ratio, Row, ScenarioResult } from "./result.ts";

export const RESULTS_DIR = path.join(import.meta.dir, "..", "results");

export interface Stored {
  result: ScenarioResult;
  machine: Machine;
  date: string;
  command: string;
  warmup: string;
}

function ms(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return "";
  // Micro benchmarks live far below a millisecond: give them a unit rather than "0.00".
  if (v < 0.001) return `${(v * 1e6).toFixed(0)} ns`;
  if (v < 0.1) return `${(v * 1e3).toFixed(1)} µs`;
  return v < 10 ? v.toFixed(2) : v.toFixed(1);
}
const num = (v: number | undefined) => (v === undefined || !Number.isFinite(v) ? "" : Math.round(v).toLocaleString("en-US"));

function rowLine(r: Row): string {
  const status = r.status === "ok" ? "ok" : r.status === "errors" ? "**ERRORS — not used in ratios**" : `**${r.status}**`;
  const note = r.note ? ` — ${r.note.replaceAll("|", "\\|")}` : "";
  const cpu = (us: number | undefined, cores: number | undefined) => (us === undefined || !Number.isFinite(us) ? "" : `${us.toFixed(1)}${cores !== undefined ? ` (${cores.toFixed(2)} cores)` : ""}`);
  const sat = r.loadGenSaturated ? " — **load generator saturated first**" : "";
  return `| ${r.label} | ${r.connections ?? ""} | ${num(r.rps)} | ${num(r.rowsPerSec)} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ${cpu(r.serverCpuUsPerReq, r.serverCores)} | ${cpu(r.loadGenCpuUsPerReq, r.loadGenCores)} | ${r.machineCpuUsPerReq === undefined ? "" : `${r.machineCpuUsPerReq.toFixed(1)} (${Math.round((r.machineBusy ?? 0) * 100)}%)`} | ${r.errors ?? ""} | ${r.non2xx ?? ""} | ${status}${sat}${note} |`;
}

export function rowsTable(rows: Row[]): string {
  const out: string[] = [];
  const groups = [...new Set(rows.map((r) => r.group ?? ""))];
  for (const g of groups) {
    if (g) out.push(`**${g}**`, "");
    out.push("| target | conns | req/s | rows/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | load generator CPU µs/req | machine CPU µs/req (busy) | errors | non-2xx | status |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for (const r of rows.filter((x) => (x.group ?? "") === g)) out.push(rowLine(r));
    out.push("");
  }
  return out.join("\n");
}

function ratioLine(r: Ratio, scenario?: string): string {
  // A figure in its own unit (the name ends "(ms)" or "(%)") is shown in it, not as a ratio.
  const unit = /\((ms|%)\)$/.exec(r.name)?.[1];
  const v = r.value === null ? `— (${r.note ?? "no figure"})` : (unit ? `**${r.value.toFixed(unit === "%" ? 3 : 1)} ${unit}**` : `**${r.value.toFixed(2)}×**`) + (r.note ? ` (${r.note})` : "");
  const pass = r.pass === undefined ? "" : r.pass ? "yes" : "**no**";
  return `| ${scenario ? `${scenario} | ` : ""}${r.name} | ${v} | ${r.target ?? ""} | ${pass} |`;
}

export function ratiosTable(ratios: Ratio[]): string {
  if (ratios.length === 0) return "";
  return ["| ratio | measured | target | meets target |", "| --- | ---: | ---: | --- |", ...ratios.map((r) => ratioLine(r))].join("\n");
}

export function scenarioMarkdown(s: Stored, svgFile: string | null, level = "###"): string {
  const r = s.result;
  const params = Object.entries(r.params).map(([k, v]) => `${k}: ${v}`).join("; ");
  return [
    `${level} ${r.title}`,
    "",
    `Scenario \`${r.scenario}\`, run ${s.date} with \`${s.command}\`. ${params}. ${s.warmup}`,
    "",
    ratiosTable(r.ratios),
    "",
    rowsTable(r.rows),
    ...r.notes.map((n) => `- ${n}`),
    "",
    svgFile ? `![${r.title}](${svgFile})` : "",
    "",
  ].join("\n");
}

export async function writeResult(s: Stored): Promise<{ json: string; md: string; svg: string | null }> {
  fs.mkdirSync(RESULTS_DIR, { recursive: true });
  const base = `${s.date.slice(0, 10)}-${s.result.scenario}`;
  const json = path.join(RESULTS_DIR, `${base}.json`);
  fs.writeFileSync(json, JSON.stringify(s, null, 2) + "\n");
  const svg = await renderChart(s.result).catch((e) => {
    console.error(`chart for ${s.result.scenario} failed: ${e}`);
    return null;
  });
  const svgPath = svg ? path.join(RESULTS_DIR, `${base}.svg`) : null;
  if (svg && svgPath) fs.writeFileSync(svgPath, svg);
  const md = path.join(RESULTS_DIR, `${base}.md`);
  fs.writeFileSync(md, `<!-- ${describeMachine(s.machine)} -->\n` + scenarioMarkdown(s, svg ? `${base}.svg` : null));
  writeLatest();
  return { json, md, svg: svgPath };
}

/** The newest stored run of each scenario. */
export function latestRuns(): Stored[] {
  if (!fs.existsSync(RESULTS_DIR)) return [];
  const best = new Map<string, Stored>();
  for (const f of fs.readdirSync(RESULTS_DIR).filter((f) => /^\d{4}-\d\d-\d\d-.+\.json$/.test(f))) {
    try {
      const s = JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, f), "utf8")) as Stored;
      if (!s.result?.scenario) continue;
      const prev = best.get(s.result.scenario);
      if (!prev || prev.date < s.date) best.set(s.result.scenario, s);
    } catch {
      // Files from older layouts of the bench are not results of this one.
    }
  }
  return [...best.values()];
}

const ORDER = ["micro", "relay", "kv-read", "kv-write", "kv-sizes", "hyperdrive", "pooler", "kv-peers", "redundancy"];

export function writeLatest(): void {
  const runs = latestRuns().sort((a, b) => (ORDER.indexOf(a.result.scenario) + 100) % 100 - (ORDER.indexOf(b.result.scenario) + 100) % 100);
  if (runs.length === 0) return;
  const headline = runs.flatMap((s) => s.result.ratios.map((r) => ({ s: s.result.scenario, r })));
  const lines = [
    "# kvdrive benchmark results",
    "",
    "Generated by `bun run bench` (bench/run.ts) from the newest run of each scenario in this directory. Ratios are the headline: absolute times on a shared 2-core machine are noise, but ratios measured side by side in one run are not. Warm-up runs are excluded. A run with errors or non-2xx responses is marked and never enters a ratio; a peer that is not installed, or a feature not built yet, has a row that says so.",
    "",
    "The runs, one line each:",
    "",
    ...runs.map((r) => `- ${r.result.scenario}: ${r.date.slice(0, 16).replace("T", " ")} UTC, ${describeMachine(r.machine)}`),
    "",
    "Reproduce: `bun install`, `apt-get install -y pgbouncer redis-server wrk` (peers; rows say \"not installed\" otherwise), then `bun run bench` (quick suite, under 3 minutes), `bun run bench --full`, or `bun run bench <scenario>`. Scenarios: " + ORDER.map((s) => `\`${s}\``).join(", ") + ".",
    "",
    "## Ratios",
    "",
    "| scenario | ratio | measured | target | meets target |",
    "| --- | --- | ---: | ---: | --- |",
    ...headline.map(({ s, r }) => ratioLine(r, s)),
    "",
    "## Scenarios",
    "",
    ...runs.map((s) => scenarioMarkdown(s, fs.existsSync(path.join(RESULTS_DIR, `${s.date.slice(0, 10)}-${s.result.scenario}.svg`)) ? `${s.date.slice(0, 10)}-${s.result.scenario}.svg` : null)),
  ];
  fs.writeFileSync(path.join(RESULTS_DIR, "LATEST.md"), lines.join("\n"));
}
