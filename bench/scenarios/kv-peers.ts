// Peers for KV: Redis (apt) GET/SET of 288-byte values at the same concurrency, measured with
// redis-benchmark, next to kvdrive's cached GET, uncached GET and PUT measured with autocannon.
import type { Context, Scenario } from "../lib/context.ts";
import { autocannon } from "../lib/http-load.ts";
import { installed, startRedis } from "../lib/peers.ts";
import { finish, notInstalled, ratio, type Ratio, type Row } from "../lib/result.ts";
import { AUTH, checkHttp, namespace } from "../lib/stack.ts";

const VALUE = "p".repeat(288);
const CONNS = 64;

/** redis-benchmark for a duration-like budget: -n sized from a short probe. CSV gives rps and percentiles. */
async function redisBenchmark(port: number, test: "get" | "set", requests: number, group: string): Promise<Row> {
  const proc = Bun.spawn(["redis-benchmark", "-h", "127.0.0.1", "-p", String(port), "-c", String(CONNS), "-n", String(requests), "-d", "288", "-t", test, "-r", "100000", "--csv"], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`redis-benchmark failed (${code}): ${err.slice(0, 300)}`);
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  const line = out.trim().split("\n").find((l) => l.startsWith(`"${test.toUpperCase()}"`));
  if (!line) throw new Error(`redis-benchmark gave no ${test} line: ${out.slice(0, 300)}`);
  const f = line.split(",").map((x) => x.replaceAll('"', ""));
  const rps = Number(f[1]);
  return finish({ label: `Redis ${test.toUpperCase()} (redis-benchmark, C client)`, group, connections: CONNS, total: requests, durationSec: requests / rps, rps, p50: Number(f[4]), p99: Number(f[6]), errors: 0, non2xx: 0 });
}

export const kvPeers: Scenario = {
  name: "kv-peers",
  title: "KV next to Redis: GET/SET of 288-byte values at 64 connections",
  quick: false,
  params: "64 connections; 288-byte values; redis-benchmark against redis-server (no persistence) vs autocannon against kvdrive",
  async run(ctx: Context) {
    const d = ctx.durationSec;
    const group = "64 connections, 288-byte values";
    const rows: Row[] = [];
    const cached = await ctx.kvdrive();
    const nocache = await ctx.kvdrive({ KVDRIVE_CACHE_BYTES: "0" });
    const ns = await namespace(cached, "bench-peers");
    const hot = `${ns.values}hot`;
    await checkHttp(cached.origin + hot, { method: "PUT", headers: AUTH, body: VALUE }, 200);
    await checkHttp(cached.origin + hot, { headers: AUTH }, 200, 288);
    const get = { origin: cached.origin, connections: CONNS, durationSec: d, headers: AUTH, requests: [{ path: hot }] };
    const runs: Array<[string, Parameters<typeof autocannon>[1]]> = [
      ["kvdrive GET, cache hit", get],
      ["kvdrive GET, miss served by Postgres (cache off)", { ...get, origin: nocache.origin }],
      ["kvdrive PUT (durable, group commit)", { ...get, rowsPerRequest: 1, requests: [{ method: "PUT", path: `${ns.values}peer-`, body: VALUE, unique: true }] }],
    ];
    for (const [label, load] of runs) {
      await autocannon("warm-up", { ...load, durationSec: ctx.warmupSec });
      rows.push(await ctx.measure(label, d, () => autocannon(label, load, group)));
    }
    if (installed("redis-server") && installed("redis-benchmark")) {
      const redis = await startRedis();
      ctx.defer(() => redis.stop());
      // Size each run from a probe so it lasts about as long as the kvdrive runs (warm-up, excluded).
      const probe = await redisBenchmark(redis.port, "set", 20_000, group);
      const n = Math.max(20_000, Math.round((probe.rps ?? 20_000) * d));
      for (const t of ["get", "set"] as const) rows.push(await ctx.measure(`Redis ${t.toUpperCase()}`, d, () => redisBenchmark(redis.port, t, n, group)));
    } else {
      rows.push(notInstalled("Redis GET (redis-benchmark)", "redis-server redis-tools", group), notInstalled("Redis SET (redis-benchmark)", "redis-server redis-tools", group));
    }
    const find = (prefix: string) => rows.find((r) => r.label.startsWith(prefix));
    const ratios: Ratio[] = [
      ratio("kvdrive cached GET / Redis GET (req/s)", find("kvdrive GET, cache hit"), find("Redis GET"), "rps"),
      ratio("kvdrive uncached GET / Redis GET (req/s)", find("kvdrive GET, miss"), find("Redis GET"), "rps"),
      ratio("kvdrive durable PUT / Redis SET (req/s; Redis here has no persistence)", find("kvdrive PUT"), find("Redis SET"), "rps"),
    ];
    return {
      scenario: "kv-peers",
      title: this.title,
      params: { connections: CONNS, "value size": "288 B", "duration per run": `${d} s (Redis: a request count sized to last about as long)` },
      rows,
      ratios,
      notes: [
        "Redis runs with --save '' --appendonly no (nothing durable), speaks RESP over TCP and is driven by redis-benchmark (C, no pipelining); kvdrive speaks HTTP, is driven by autocannon (Node), and acknowledges a PUT only after Postgres commits it. The gap includes all of that.",
        "redis-benchmark reports p50/p99 with its own resolution; it has no p99.9.",
      ],
    };
  },
};
