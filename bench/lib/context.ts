// What a scenario gets from the runner: its durations, a shared Postgres, kvdrive processes that are
// stopped when the scenario ends, RSS sampling of everything kvdrive, and progress lines.
import { machineSeconds } from "./cpu.ts";
import { sampleRss } from "./procs.ts";
import type { Row } from "./result.ts";
import { startBenchPostgres, startKvdriveProcess, type BenchPostgres, type KvdriveProcess } from "./stack.ts";

export interface Context {
  full: boolean;
  /** Seconds per measured run. */
  durationSec: number;
  /** Seconds of warm-up before a target's first measured run; its results are discarded. */
  warmupSec: number;
  log(line: string): void;
  /** Runs one measurement with a progress line before and a summary line after. */
  measure(label: string, durationSec: number, fn: () => Promise<Row>): Promise<Row>;
  postgres(): Promise<BenchPostgres>;
  /** A kvdrive process with extra environment, stopped at the end of the scenario; its RSS is sampled. */
  kvdrive(env?: Record<string, string>, databaseUrl?: string): Promise<KvdriveProcess>;
  /** Peak RSS of each kvdrive process started in this scenario, by its environment. */
  peakRss(): Array<{ env: Record<string, string>; bytes: number }>;
  /** Registers cleanup to run when the scenario ends (relays, peers, clients). */
  defer(fn: () => Promise<unknown> | unknown): void;
}

const fmt = (r: Row) =>
  (r.status === "ok" || r.status === "errors") && r.rps !== undefined
    ? `${Math.round(r.rowsPerSec ?? r.rps ?? 0)} ${r.rowsPerSec !== undefined ? "rows/s" : "req/s"}, p50 ${r.p50?.toFixed(2)} ms, p99 ${r.p99?.toFixed(2)} ms, p99.9 ${r.p999?.toFixed(2)} ms, errors ${r.errors}, non-2xx ${r.non2xx}${r.machineBusy !== undefined ? `, machine ${Math.round(r.machineBusy * 100)}% busy` : ""}${r.status === "errors" ? "  << MARKED: errors" : ""}${r.note ? ` (${r.note})` : ""}`
    : `${r.status}${r.note ? `: ${r.note}` : ""}`;

export function createContext(o: { full: boolean; durationSec: number; warmupSec: number }) {
  let pg: Promise<BenchPostgres> | undefined;
  let cleanups: Array<() => Promise<unknown> | unknown> = [];
  let samplers: Array<{ env: Record<string, string>; s: { stop(): number; peak(): number } }> = [];
  let step = 0;

  const ctx: Context = {
    ...o,
    log: (line) => console.log(`  ${line}`),
    async measure(label, durationSec, fn) {
      step++;
      const started = Date.now();
      console.log(`  [${step}] ${label} — ${durationSec} s`);
      // Long runs show progress so a silent terminal is never mistaken for a hang.
      const ticker = durationSec >= 8 ? setInterval(() => console.log(`      … ${Math.round((Date.now() - started) / 1000)} s of ${durationSec} s`), 5000) : undefined;
      try {
        const m0 = machineSeconds();
        const r = await fn();
        const m1 = machineSeconds();
        if (r.total && m1.all > m0.all) {
          r.machineCpuUsPerReq = ((m1.busy - m0.busy) * 1e6) / r.total;
          r.machineBusy = (m1.busy - m0.busy) / (m1.all - m0.all);
        }
        console.log(`      ${fmt(r)}`);
        return r;
      } finally {
        if (ticker) clearInterval(ticker);
      }
    },
    postgres: () => (pg ??= startBenchPostgres()),
    async kvdrive(env = {}, databaseUrl) {
      const url = databaseUrl ?? (await ctx.postgres()).url;
      const k = await startKvdriveProcess(url, env);
      const s = sampleRss(k.pid);
      samplers.push({ env, s });
      cleanups.push(async () => {
        s.stop();
        await k.stop();
      });
      return k;
    },
    peakRss: () => samplers.map(({ env, s }) => ({ env, bytes: s.peak() })),
    defer: (fn) => void cleanups.push(fn),
  };

  return {
    ctx,
    /** Ends a scenario: stops its kvdrive processes, relays and peers, newest first. */
    async endScenario() {
      const list = cleanups.reverse();
      cleanups = [];
      samplers = [];
      step = 0;
      for (const fn of list) await Promise.resolve().then(fn).catch((e) => console.error(`  cleanup failed: ${e}`));
    },
    async endRun() {
      await this.endScenario();
      if (pg) await (await pg).destroy();
    },
  };
}

export interface Scenario {
  name: string;
  title: string;
  /** Part of the quick suite (`bun run bench`); every scenario is part of --full. */
  quick: boolean;
  /** Its parameters in one line (connections, value sizes, tools), printed before it runs. */
  params: string;
  run(ctx: Context): Promise<import("./result.ts").ScenarioResult>;
}
