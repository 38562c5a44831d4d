// The shape every scenario reports: rows of measurements, ratios between them, and the honesty rules
// (a row with errors or non-2xx is marked and never enters a ratio).

export type Status = "ok" | "errors" | "not installed" | "not built yet" | "failed";

export interface Row {
  label: string;
  /** Sub-table, e.g. "no delay" or "1 ms one-way to storage". */
  group?: string;
  status: Status;
  /** Why a row has no figures, or what it means (apt command, missing module, failure message). */
  note?: string;
  connections?: number;
  durationSec?: number;
  total?: number;
  rps?: number;
  /** Rows per second when a request carries several rows (bulk writes). */
  rowsPerSec?: number;
  p50?: number;
  p99?: number;
  p999?: number;
  errors?: number;
  non2xx?: number;
  /** CPU time the load generator itself spent per request (pgbench under /usr/bin/time). */
  clientCpuMsPerTx?: number;
  /** CPU per transaction of the proxy process (µs), when measured. */
  proxyCpuUsPerTx?: number;
  /** CPU per transaction of Postgres (postmaster and backends, µs), when measured. */
  originCpuUsPerTx?: number;
  /** CPU per request of the server under test (kvdrive, or the hello world), µs, from /proc. */
  serverCpuUsPerReq?: number;
  /** Cores the server under test used on average during the run. */
  serverCores?: number;
  /** The whole machine's busy CPU per request (µs) and its busy share of every core (0-1), during the run. */
  machineCpuUsPerReq?: number;
  machineBusy?: number;
  /** CPU per request of the load generator (wrk, autocannon, pgbench), µs. */
  loadGenCpuUsPerReq?: number;
  /** Cores the load generator used on average during the run. */
  loadGenCores?: number;
  /** Threads the load generator runs on (the most cores it could use). */
  loadGenThreads?: number;
  /** The load generator, not the server, was the limit: the row's rate is not the server's. */
  loadGenSaturated?: boolean;
}

export interface Ratio {
  name: string;
  value: number | null;
  /** e.g. "≥ 0.6×" — what an issue requires, or the article's figure. */
  target?: string;
  pass?: boolean;
  note?: string;
}

export interface ScenarioResult {
  scenario: string;
  title: string;
  params: Record<string, string | number>;
  rows: Row[];
  ratios: Ratio[];
  notes: string[];
  /** How warm-up was handled, when not the runner's per-target warm-up (e.g. mitata's own). */
  warmup?: string;
}

export const usable = (r: Row | undefined): r is Row => !!r && r.status === "ok";

/** Marks a measured row: any error or non-2xx response makes it "errors". */
export function finish(r: Omit<Row, "status">): Row {
  return { ...r, status: (r.errors ?? 0) > 0 || (r.non2xx ?? 0) > 0 ? "errors" : "ok" };
}

export const notInstalled = (label: string, apt: string, group?: string): Row => ({ label, group, status: "not installed", note: `not installed — apt-get install ${apt}` });
export const notBuilt = (label: string, why: string, group?: string): Row => ({ label, group, status: "not built yet", note: why });
export const failed = (label: string, e: unknown, group?: string): Row => ({ label, group, status: "failed", note: String(e instanceof Error ? e.message : e).split("\n")[0]!.slice(0, 200) });

type Metric = "rps" | "rowsPerSec" | "p50" | "p99";

/**
 * a/b on one metric. For latencies the ratio is b/a, so that "higher is better" holds for every ratio.
 * A row that is missing, failed or had errors gives no ratio, with the reason.
 */
export function ratio(name: string, a: Row | undefined, b: Row | undefined, metric: Metric, target?: { min?: number; text?: string }): Ratio {
  const targetText = target?.text ?? (target?.min !== undefined ? `≥ ${target.min}×` : undefined);
  const bad = [a, b].find((r) => r && r.status !== "ok");
  if (bad) return { name, value: null, target: targetText, note: `${bad.label}: ${bad.status}` };
  if (!a || !b) return { name, value: null, target: targetText, note: "missing row" };
  const av = a[metric] ?? NaN;
  const bv = b[metric] ?? NaN;
  const value = metric === "p50" || metric === "p99" ? bv / av : av / bv;
  if (!Number.isFinite(value)) return { name, value: null, target: targetText, note: "no figure" };
  // A rate the load generator bounded is the generator's, not the server's: shown, marked, never passed.
  const saturated = metric !== "p50" && metric !== "p99" ? [a, b].filter((r) => r.loadGenSaturated) : [];
  if (saturated.length) return { name, value, target: targetText, note: `load generator saturated first in: ${saturated.map((r) => r.label).join("; ")}` };
  return { name, value, target: targetText, pass: target?.min !== undefined ? value >= target.min : undefined };
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * p) - 1))]!;
}
