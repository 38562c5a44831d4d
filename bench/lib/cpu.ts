// CPU time of processes from /proc, to split a load's cost between the load generator, the proxy and Postgres.
// A process's own time counts its threads; with `reaped`, the time of children it has waited for is added, so a
// postmaster's figure covers backends that came and went during the run (pgbench -C, direct connections).
import fs from "node:fs";
import type { Row } from "./result.ts";

const TICKS = 100; // USER_HZ on Linux

function stat(pid: number): string[] | null {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const f = stat(Number(d));
    if (f && Number(f[1]) === pid) out.push(Number(d));
  }
  return out;
}

/** CPU seconds of a process; with `tree`, also its live children and the children it has reaped. */
export function cpuSeconds(pid: number, tree = false): number {
  const f = stat(pid);
  if (!f) return NaN;
  // Fields after the command: state is [0], utime [11], stime [12], cutime [13], cstime [14].
  let t = Number(f[11]) + Number(f[12]);
  if (tree) {
    t += Number(f[13]) + Number(f[14]);
    for (const c of childrenOf(pid)) {
      const g = stat(c);
      if (g) t += Number(g[11]) + Number(g[12]);
    }
  }
  return t / TICKS;
}

/**
 * CPU seconds the whole machine spent busy (every state of /proc/stat's first line but idle and iowait) and
 * the seconds of all its cores, since boot: what no per-process figure misses (kernel work on loopback,
 * processes the bench does not know).
 */
export function machineSeconds(): { busy: number; all: number } {
  const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1, 9).map(Number);
  const all = f.reduce((a, b) => a + b, 0);
  return { busy: (all - f[3]! - f[4]!) / TICKS, all: all / TICKS };
}

/** The postmaster's pid of a cluster, from its data directory. */
export const postmasterPid = (dataDir: string): number => Number(fs.readFileSync(`${dataDir}/postmaster.pid`, "utf8").split("\n")[0]);

/**
 * Runs a measurement while counting the CPU the server process `pid` spends (µs per request, cores), and marks
 * the row when the load generator, not the server, was the limit: it used (nearly) every core its threads can
 * use, or more CPU than the server itself did.
 */
export async function withServerCpu(pid: number, fn: () => Promise<Row>): Promise<Row> {
  const before = cpuSeconds(pid);
  const started = performance.now();
  const row = await fn();
  const used = cpuSeconds(pid) - before;
  const wall = (performance.now() - started) / 1000;
  if (row.total && Number.isFinite(used)) {
    row.serverCpuUsPerReq = (used * 1e6) / row.total;
    // The run's own duration, not the wall time around it (process start-up and reporting are not load).
    row.serverCores = used / (row.durationSec ?? wall);
  }
  row.loadGenSaturated = generatorBound(row);
  return row;
}

export function generatorBound(r: Row): boolean {
  if (r.loadGenCores === undefined) return false;
  if (r.loadGenCores >= 0.9 * (r.loadGenThreads ?? 1)) return true;
  return r.serverCores !== undefined && r.loadGenCores > r.serverCores;
}
