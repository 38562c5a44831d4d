// CPU time of processes from /proc, to split a load's cost between the load generator, the proxy and Postgres.
// A process's own time counts its threads; with `reaped`, the time of children it has waited for is added, so a
// postmaster's figure covers backends that came and went during the run (pgbench -C, direct connections).
import fs from "node:fs";

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

/** The postmaster's pid of a cluster, from its data directory. */
export const postmasterPid = (dataDir: string): number => Number(fs.readFileSync(`${dataDir}/postmaster.pid`, "utf8").split("\n")[0]);
