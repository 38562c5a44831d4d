// HTTP load: autocannon (in a Node child process) and wrk as a second opinion when it is installed.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { finish, type Row } from "./result.ts";

export interface HttpRequestSpec {
  method?: string;
  /** Path and query, e.g. /client/v4/.../values/k. */
  path: string;
  body?: string;
  /** Append a counter to the path on every request. */
  unique?: boolean;
}

export interface HttpLoad {
  /** Origin, e.g. http://127.0.0.1:8787 */
  origin: string;
  connections: number;
  durationSec: number;
  headers?: Record<string, string>;
  /** One or more requests, issued in turn by each connection (a 95/5 mix is 19 GETs and one PUT). */
  requests: HttpRequestSpec[];
  /** Rows carried by one request, for rows/s (bulk writes). */
  rowsPerRequest?: number;
  /** Cap on requests per second across all connections: latency at a fixed offered load. */
  overallRate?: number;
}

const child = new URL("./autocannon-child.cjs", import.meta.url).pathname;

export async function autocannon(label: string, o: HttpLoad, group?: string): Promise<Row> {
  const spec = {
    url: o.origin,
    connections: o.connections,
    durationSec: o.durationSec,
    headers: o.headers,
    requests: o.requests.map((r) => ({ method: r.method ?? "GET", path: r.path, body: r.body, unique: r.unique })),
    overallRate: o.overallRate,
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-ac-"));
  const file = path.join(dir, "spec.json");
  fs.writeFileSync(file, JSON.stringify(spec));
  const proc = Bun.spawn(["node", child, file], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  fs.rmSync(dir, { recursive: true, force: true });
  if (code !== 0) throw new Error(`autocannon failed (exit ${code}): ${err.slice(0, 500)}`);
  const j = JSON.parse(out);
  const rps = j.requests.total / o.durationSec;
  return withLoadGenCpu(proc, 1, o.durationSec, {
    label,
    group,
    connections: o.connections,
    durationSec: o.durationSec,
    total: j.requests.total,
    rps,
    rowsPerSec: o.rowsPerRequest ? rps * o.rowsPerRequest : undefined,
    p50: j.latency.p50,
    p99: j.latency.p99,
    p999: j.latency.p99_9,
    errors: j.errors + j.timeouts,
    non2xx: j.non2xx,
  });
}

/** The load generator's CPU (µs per request, cores) from the child's resource usage; JS threads = `threads`. */
function withLoadGenCpu(proc: { resourceUsage(): { cpuTime: { total: number | bigint } } | undefined }, threads: number, durationSec: number, r: Omit<Row, "status">): Row {
  const row = finish(r);
  const used = proc.resourceUsage();
  if (used && r.total) {
    const us = Number(used.cpuTime.total);
    row.loadGenCpuUsPerReq = us / r.total;
    row.loadGenCores = us / 1e6 / durationSec;
    row.loadGenThreads = threads;
  }
  return row;
}

export const wrkInstalled = () => Bun.which("wrk") !== null;

const WRK_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50":%f,"p99":%f,"p999":%f,"errors":%d,"status":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50)/1000, latency:percentile(99)/1000, latency:percentile(99.9)/1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
`;

export interface WrkLoad {
  /** The origin and path of a GET (or of every request when neither `paths` nor `unique` is given). */
  url: string;
  connections: number;
  durationSec: number;
  headers?: Record<string, string>;
  method?: string;
  body?: string;
  /** Paths picked at random for each request (many keys), instead of the url's path. */
  paths?: string[];
  /** A path prefix to which each request appends a counter unique across wrk's threads (fresh keys). */
  unique?: string;
  /** Rows carried by one request, for rows/s. */
  rowsPerRequest?: number;
}

const lua = (s: string) => JSON.stringify(s); // a JSON string literal is a valid Lua string literal for this text

/** The Lua script: request generation (method, body, random or unique paths) and a JSON summary line. */
function wrkScript(o: WrkLoad): string {
  const lines = [WRK_LUA];
  if (o.paths || o.unique || o.method || o.body) {
    lines.push(`wrk.method = ${lua(o.method ?? "GET")}`);
    if (o.body !== undefined) lines.push(`wrk.body = ${lua(o.body)}`);
    // setup() runs in the main state: it numbers the threads so their counters never collide.
    lines.push("local threads = 0", "setup = function(thread) threads = threads + 1; thread:set('tid', threads) end");
    if (o.paths) {
      lines.push(`paths = {${o.paths.map(lua).join(",")}}`, "request = function() return wrk.format(nil, paths[math.random(#paths)]) end");
    } else if (o.unique) {
      lines.push("local n = 0", `request = function() n = n + 1; return wrk.format(nil, ${lua(o.unique)} .. tid .. "-" .. n) end`);
    }
  }
  return lines.join("\n");
}

const WRK_THREADS = 2;

/** wrk with two threads; non-2xx/3xx responses are counted by wrk as status errors. */
export async function wrk(label: string, o: WrkLoad, group?: string): Promise<Row> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-wrk-"));
  try {
    const script = path.join(dir, "report.lua");
    fs.writeFileSync(script, wrkScript(o));
    const args = ["wrk", `-t${WRK_THREADS}`, `-c${o.connections}`, `-d${o.durationSec}s`, "--latency", "-s", script];
    for (const [k, v] of Object.entries(o.headers ?? {})) args.push("-H", `${k}: ${v}`);
    args.push(o.url);
    const proc = Bun.spawn(args, { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    const line = /WRKJSON (.*)/.exec(out);
    if (code !== 0 || !line) throw new Error(`wrk failed (exit ${code}): ${(out + err).slice(0, 300)}`);
    const j = JSON.parse(line[1]!);
    const secs = j.duration_us / 1e6;
    const rps = j.requests / secs;
    return withLoadGenCpu(proc, WRK_THREADS, secs, { label, group, connections: o.connections, durationSec: o.durationSec, total: j.requests, rps, rowsPerSec: o.rowsPerRequest ? rps * o.rowsPerRequest : undefined, p50: j.p50, p99: j.p99, p999: j.p999, errors: j.errors, non2xx: j.status });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
