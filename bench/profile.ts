// `bun bench/profile.ts <target> [--duration s] [--connections n] [--strace] [--autocannon]`: runs one load against a kvdrive started with Bun's
// --cpu-prof and prints where its CPU time goes (self time by function and by source file), so a figure
// that falls short can be traced to the module that bounds it. Targets: get-hit, get-miss, put, pgbench.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { withServerCpu } from "./lib/cpu.ts";
import { autocannon, wrk, wrkInstalled } from "./lib/http-load.ts";
import { pgbench, pgbenchInit } from "./lib/pgbench.ts";
import { RESULTS_DIR } from "./lib/report.ts";
import { AUTH, checkHttp, namespace, startBenchPostgres, startKvdriveProcess } from "./lib/stack.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

const TARGETS = ["get-hit", "get-miss", "put", "pgbench", "pgbench-connect"] as const;
type Target = (typeof TARGETS)[number];

export function summarize(profile: { nodes: ProfileNode[]; samples?: number[]; timeDeltas?: number[]; startTime?: number; endTime?: number }, top = 25): string {
  const self = new Map<number, number>();
  if (profile.samples?.length) for (const id of profile.samples) self.set(id, (self.get(id) ?? 0) + 1);
  else for (const n of profile.nodes) self.set(n.id, n.hitCount ?? 0);
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const byFn = new Map<string, number>();
  const byFile = new Map<string, number>();
  const root = new URL("../", import.meta.url).pathname;
  for (const n of profile.nodes) {
    const c = self.get(n.id) ?? 0;
    if (!c) continue;
    const file = n.callFrame.url ? n.callFrame.url.replace("file://", "").replace(root, "") : `(${n.callFrame.functionName || "native"})`;
    const fn = `${n.callFrame.functionName || "(anonymous)"} ${file}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ""}`;
    byFn.set(fn, (byFn.get(fn) ?? 0) + c);
    const group = file.startsWith("node_modules/") ? file.split("/").slice(0, file.startsWith("node_modules/@") ? 3 : 2).join("/") : file;
    byFile.set(group, (byFile.get(group) ?? 0) + c);
  }
  const table = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `| ${((100 * v) / total).toFixed(1)}% | \`${k}\` |`)
      .join("\n");
  // Idle time is not sampled: samples × the typical interval over the wall time estimates how busy the thread was.
  const deltas = [...(profile.timeDeltas ?? [])].sort((a, b) => a - b);
  const interval = deltas.length ? deltas[Math.floor(deltas.length / 2)]! : NaN;
  const wall = profile.endTime !== undefined && profile.startTime !== undefined ? (profile.endTime - profile.startTime) / 1e6 : NaN;
  const busy = `${total} samples at a median interval of ${(interval / 1000).toFixed(2)} ms over ${wall.toFixed(1)} s of wall time: the JS thread was busy about ${((100 * total * interval) / 1e6 / wall).toFixed(0)}% of the time.`;
  return [busy, "", "Self time by source file (or package):", "", "| self | file |", "| ---: | --- |", table(byFile), "", "Self time by function:", "", "| self | function |", "| ---: | --- |", table(byFn)].join("\n");
}

/** sum/count of every histogram in a Prometheus text page, by series. */
function averages(text: string): string {
  const sums = new Map<string, number>();
  const counts = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+)_(sum|count)(\{[^}]*\})? ([\d.e+-]+)$/.exec(line);
    if (!m) continue;
    (m[2] === "sum" ? sums : counts).set(`${m[1]}${m[3] ?? ""}`, Number(m[4]));
  }
  const lines = [...sums.entries()].filter(([k]) => (counts.get(k) ?? 0) > 0).map(([k, v]) => `- ${k}: mean ${(v / counts.get(k)!).toPrecision(4)} over ${counts.get(k)}`);
  return lines.length ? lines.join("\n") : "(no histograms)";
}

if (import.meta.main) {
  const target = process.argv[2] as Target;
  const di = process.argv.indexOf("--duration");
  const durationSec = di > 0 ? Number(process.argv[di + 1]) : 8;
  const ci = process.argv.indexOf("--connections");
  const connections = ci > 0 ? Number(process.argv[ci + 1]) : undefined;
  if (!TARGETS.includes(target)) {
    console.error(`usage: bun bench/profile.ts <${TARGETS.join("|")}> [--duration s] [--connections n]`);
    process.exit(2);
  }
  const profDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-prof-"));
  const pg = await startBenchPostgres();
  try {
    const env: Record<string, string> = target === "get-miss" ? { KVDRIVE_CACHE_BYTES: "0" } : target.startsWith("pgbench") ? { KVDRIVE_CACHE_DISABLED: "true" } : {};
    // --env NAME=value (repeatable): a setting to compare, e.g. KVDRIVE_INVALIDATION=false.
    process.argv.forEach((a, i) => {
      if (a === "--env") {
        const [name, ...rest] = process.argv[i + 1]!.split("=");
        env[name!] = rest.join("=");
      }
    });
    const k = await startKvdriveProcess(pg.url, env, ["--cpu-prof", `--cpu-prof-dir=${profDir}`]);
    let summary = "";
    // --strace counts the system calls kvdrive makes during the load (per request, with the request count).
    const straceOut = path.join(profDir, "strace.txt");
    const strace = process.argv.includes("--strace") && Bun.which("strace") ? Bun.spawn(["strace", "-c", "-f", "-o", straceOut, "-p", String(k.pid)], { stdout: "ignore", stderr: "ignore" }) : undefined;
    if (strace) await Bun.sleep(500);
    try {
      const ns = await namespace(k, "bench-profile");
      const hot = `${ns.values}hot`;
      await checkHttp(k.origin + hot, { method: "PUT", headers: AUTH, body: "x".repeat(288) }, 200);
      if (target.startsWith("pgbench")) {
        const t = { host: "127.0.0.1", port: k.pgPort, user: pg.user, password: pg.password, db: "postgres" };
        await pgbenchInit({ ...t, port: pg.port });
        const connect = target === "pgbench-connect";
        const r = await pgbench(`pgbench -S ${connect ? "-C" : "-M prepared"} -c 16 through kvdrive`, t, { clients: 16, durationSec, mode: connect ? "simple" : "prepared", selectOnly: true, connectEach: connect });
        summary = `load: ${r.label}: ${Math.round(r.rps ?? 0)} tps, p50 ${r.p50?.toFixed(2)} ms, p99 ${r.p99?.toFixed(2)} ms, errors ${r.errors}`;
      } else {
        const requests = target === "put" ? [{ method: "PUT", path: `${ns.values}p-`, body: "x".repeat(288), unique: true }] : [{ path: hot }];
        const conns = connections ?? (target === "put" ? 16 : 64);
        // wrk (C) when installed: it leaves the cores to kvdrive; autocannon otherwise.
        const useWrk = wrkInstalled() && !process.argv.includes("--autocannon");
        const r = await withServerCpu(k.pid, () =>
          useWrk
            ? wrk(target, { url: k.origin + hot, connections: conns, durationSec, headers: AUTH, ...(target === "put" ? { method: "PUT", body: "x".repeat(288), unique: `${ns.values}p-` } : {}) })
            : autocannon(target, { origin: k.origin, connections: conns, durationSec, headers: AUTH, requests }),
        );
        summary = `load: ${target} with ${useWrk ? "wrk" : "autocannon"}, ${conns} connections, ${durationSec} s: ${Math.round(r.rps ?? 0)} req/s, p50 ${r.p50?.toFixed(2)} ms, p99 ${r.p99?.toFixed(2)} ms, errors ${r.errors}, non-2xx ${r.non2xx}; kvdrive CPU ${r.serverCpuUsPerReq?.toFixed(1)} µs per request (${r.serverCores?.toFixed(2)} cores), load generator ${r.loadGenCpuUsPerReq?.toFixed(1)} µs per request`;
      }
      if (strace) {
        strace.kill("SIGINT");
        await strace.exited;
        const lines = fs.readFileSync(straceOut, "utf8").split("\n");
        const total = Number(/(\d+)\s*(\d*)\s*total/.exec(lines.find((l) => l.includes("total")) ?? "")?.[1] ?? NaN);
        const requests = Number(/(\d+) (tps|req)/.exec(summary)?.[1] ?? NaN) * durationSec;
        summary += `\n\nSystem calls during the load (strace -c -f; about ${Math.round(requests)} requests):\n\n\`\`\`\n${lines.slice(0, 14).join("\n")}\n\`\`\``;
        void total;
      }
      const metrics = await (await fetch(`${k.origin}/metrics`, { headers: AUTH })).text();
      summary += "\n\nAverages from /metrics after the load:\n\n" + averages(metrics);
    } finally {
      await k.stop();
    }
    const file = fs.readdirSync(profDir).find((f) => f.endsWith(".cpuprofile"));
    if (!file) throw new Error(`no .cpuprofile written in ${profDir}`);
    const text = [`## CPU profile of kvdrive under ${target} (${new Date().toISOString()})`, "", summary, "", "Whole process lifetime (start-up, load, shutdown), sampled by `bun --cpu-prof`.", "", summarize(JSON.parse(fs.readFileSync(path.join(profDir, file), "utf8")))].join("\n");
    console.log(text);
    fs.mkdirSync(RESULTS_DIR, { recursive: true });
    const out = path.join(RESULTS_DIR, `${new Date().toISOString().slice(0, 10)}-profile-${target}.md`);
    fs.writeFileSync(out, text + "\n");
    console.log(`\nwrote ${out}`);
  } finally {
    await pg.destroy();
    fs.rmSync(profDir, { recursive: true, force: true });
  }
}
