// Redundancy costs, the redundancy issue's figures measured in one run:
//  - PUT p50 in active-active (Postgres primary + S3 replica) against primary-only (target ≤ 1.2×);
//  - latency with the replica slowed by a relay (follows the fast backend);
//  - listing 1,000 keys across 3 shards (p99 ≤ 20 ms);
//  - GET throughput on cache misses, 3 clusters against 1 (≥ 1.0×);
//  - the crawler's CPU at its default rate (≤ 10% of one core);
//  - the consistency harness, long form: RYOW violations and cross-instance staleness, with and without
//    LISTEN/NOTIFY invalidation.
import { readFileSync } from "node:fs";
import { analyse, runConsistency } from "../lib/consistency.ts";
import type { Context, Scenario } from "../lib/context.ts";
import { autocannon } from "../lib/http-load.ts";
import { startS3rver } from "../lib/peers.ts";
import { startRelay } from "../lib/relay.ts";
import { failed, finish, ratio, type Ratio, type Row } from "../lib/result.ts";
import { AUTH, checkHttp, namespace, startBenchPostgres, TOKEN, type KvdriveProcess } from "../lib/stack.ts";

const VALUE = "r".repeat(288);
const CONNS = 16;

/** CPU seconds (user + system) a process has used so far, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
}

async function fill(k: KvdriveProcess, bulkPath: string, n: number, prefix: string) {
  for (let i = 0; i < n; i += 5000) {
    const batch = Array.from({ length: Math.min(5000, n - i) }, (_, j) => ({ key: `${prefix}${String(i + j).padStart(6, "0")}`, value: VALUE }));
    await checkHttp(`${k.origin}${bulkPath}`, { method: "PUT", headers: { ...AUTH, "content-type": "application/json" }, body: JSON.stringify(batch) }, 200);
  }
}

async function putRun(ctx: Context, label: string, k: KvdriveProcess, values: string, group: string, overallRate?: number): Promise<Row> {
  const spec = { origin: k.origin, connections: CONNS, durationSec: ctx.durationSec, headers: AUTH, requests: [{ method: "PUT", path: `${values}put-`, body: VALUE, unique: true }], overallRate };
  await autocannon("warm-up", { ...spec, durationSec: ctx.warmupSec });
  return ctx.measure(label, ctx.durationSec, () => autocannon(label, spec, group));
}

/** Offered load for latency comparisons: within what the s3rver replica sustains on this machine. */
const RATE = 300;

export const redundancy: Scenario = {
  name: "redundancy",
  title: "Redundancy: active-active vs primary-only, a slowed backend, shards, crawler CPU, consistency",
  quick: false,
  params: `PUT/GET of ${VALUE.length}-byte values, ${CONNS} connections, autocannon; 3 embedded Postgres clusters; s3rver replica`,
  async run(ctx) {
    const rows: Row[] = [];
    const ratios: Ratio[] = [];
    const notes: string[] = [];
    const pg1 = await ctx.postgres();
    const [pg2, pg3] = await Promise.all([startBenchPostgres(), startBenchPostgres()]);
    ctx.defer(() => Promise.all([pg2.destroy(), pg3.destroy()]));
    const s3 = await startS3rver("kv-replica");
    ctx.defer(() => s3.stop());
    const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: Number(new URL(s3.endpoint).port) });
    ctx.defer(() => relay.stop());
    const replicaEnv = {
      KVDRIVE_REPLICA_S3_BUCKET: s3.bucket,
      KVDRIVE_REPLICA_S3_ENDPOINT: `http://127.0.0.1:${relay.port}`,
      KVDRIVE_REPLICA_S3_ACCESS_KEY_ID: s3.accessKeyId,
      KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY: s3.secretAccessKey,
    };
    const three = [pg1.url, pg2.url, pg3.url].join(",");

    // 1. Active-active against primary-only, same single cluster: latency at a fixed offered load (the figure
    // the issue asks for), then saturated throughput. A Postgres replica first (the replication machinery's own
    // cost), then the S3 replica (adds an S3 client's per-request work to the same event loop, and s3rver's CPU),
    // whose process is stopped afterwards so its background catch-up cannot slow later runs.
    const group1 = `PUT latency at ${RATE} req/s offered: active-active vs primary-only`;
    const solo = await ctx.kvdrive({}, pg1.url);
    const nsSolo = await namespace(solo, "bench-aa-solo");
    const primaryOnly = await putRun(ctx, `kvdrive PUT, primary only, ${RATE} req/s`, solo, nsSolo.values, group1, RATE);
    const bothPg = await ctx.kvdrive({ KVDRIVE_REPLICA_DATABASE_URL: pg2.url, KVDRIVE_CRAWLER_KEYS_PER_SECOND: "0" }, pg1.url);
    const nsBothPg = await namespace(bothPg, "bench-aa-pg");
    const aaPg = await putRun(ctx, `kvdrive PUT, active-active with a Postgres replica, ${RATE} req/s`, bothPg, nsBothPg.values, group1, RATE);
    await bothPg.stop();
    const both = await ctx.kvdrive({ ...replicaEnv, KVDRIVE_CRAWLER_KEYS_PER_SECOND: "0" }, pg1.url);
    const nsBoth = await namespace(both, "bench-aa-both");
    const aa = await putRun(ctx, `kvdrive PUT, active-active with an S3 (s3rver) replica, ${RATE} req/s`, both, nsBoth.values, group1, RATE);
    // The replica slowed by 20 ms each way: acknowledgements still follow the fast backend.
    relay.setDelay(20);
    const slowed = await putRun(ctx, `kvdrive PUT, active-active, S3 replica 20 ms away, ${RATE} req/s`, both, nsBoth.values, group1, RATE);
    relay.setDelay(0);
    rows.push(primaryOnly, aaPg, aa, slowed);
    ratios.push({ ...ratio("active-active (Postgres replica) PUT p50 / primary-only PUT p50", aaPg, primaryOnly, "p50"), target: "≤ 1.2×", ...invert(aaPg, primaryOnly, "p50", 1.2) });
    ratios.push({ ...ratio("active-active (S3 replica) PUT p50 / primary-only PUT p50", aa, primaryOnly, "p50"), target: "≤ 1.2×", ...invert(aa, primaryOnly, "p50", 1.2) });
    ratios.push({ ...ratio("PUT p50 with the S3 replica 20 ms away / S3 replica near", slowed, aa, "p50"), target: "follows the fast backend (≈ 1×)", ...invert(slowed, aa, "p50") });

    const groupSat = "PUT throughput, saturated (16 connections, closed loop)";
    const satSolo = await putRun(ctx, "kvdrive PUT, primary only, saturated", solo, nsSolo.values, groupSat);
    const satBoth = await putRun(ctx, "kvdrive PUT, active-active with an S3 replica, saturated", both, nsBoth.values, groupSat);
    await both.stop();
    await solo.stop();
    rows.push(satSolo, satBoth);
    ratios.push(ratio("saturated PUT throughput, active-active (S3) / primary-only", satBoth, satSolo, "rps"));
    notes.push("Saturated, the replica's backlog is bounded: past 20,000 rows in flight, rows go to it through the durable repair queue (kvdrive_backend_shed_rows_total).");

    // 3. Listing 1,000 keys: one client listing, across three shards and on one cluster.
    const group3 = "list 1,000 keys (one client)";
    const listRows: Row[] = [];
    for (const [label, url] of [["list 1,000 keys, 1 cluster", pg1.url], ["list 1,000 keys across 3 shards", three]] as const) {
      const k = await ctx.kvdrive({}, url);
      const ns = await namespace(k, `bench-list-${listRows.length}`);
      await fill(k, ns.bulk, 5000, "l");
      const listSpec = { origin: k.origin, connections: 1, durationSec: ctx.durationSec, headers: AUTH, requests: [{ path: `${ns.values.replace(/values\/$/, "keys")}?limit=1000&prefix=l` }] };
      await autocannon("warm-up", { ...listSpec, durationSec: ctx.warmupSec });
      listRows.push(await ctx.measure(label, ctx.durationSec, () => autocannon(label, listSpec, group3)));
    }
    rows.push(...listRows);
    const list = listRows[1]!;
    ratios.push({ name: "list 1,000 keys across 3 shards: p99 (ms)", value: list.status === "ok" ? list.p99! : null, target: "≤ 20 ms", pass: list.status === "ok" ? list.p99! <= 20 : undefined });
    ratios.push(ratio("list 1,000 keys, 3 shards / 1 cluster (throughput)", listRows[1], listRows[0], "rps"));

    // 4. GET misses, three clusters against one: on loopback (every cluster shares the same 2 cores, so this
    // is CPU-bound), and with each cluster 1 ms away through a relay (clusters as separate machines).
    const viaRelay = async (url: string) => {
      const r = await startRelay({ targetHost: "127.0.0.1", targetPort: Number(new URL(url).port), delayMs: 1 });
      ctx.defer(() => r.stop());
      const u = new URL(url);
      u.port = String(r.port);
      return u.toString();
    };
    const far = await Promise.all([pg1.url, pg2.url, pg3.url].map(viaRelay));
    for (const [group, one, all] of [
      ["GET on cache misses (cache off), 1 cluster vs 3, loopback", pg1.url, three],
      ["GET on cache misses (cache off), 1 cluster vs 3, each 1 ms away", far[0]!, far.join(",")],
    ] as const) {
      const missRows: Row[] = [];
      for (const [label, url] of [["kvdrive GET miss, 1 cluster", one], ["kvdrive GET miss, 3 clusters", all]] as const) {
        const k = await ctx.kvdrive({ KVDRIVE_CACHE_BYTES: "0" }, url);
        const ns = await namespace(k, `bench-miss-${missRows.length}-${group.length}`);
        await fill(k, ns.bulk, 2000, "m");
        const spec = { origin: k.origin, connections: 64, durationSec: ctx.durationSec, headers: AUTH, requests: Array.from({ length: 50 }, (_, i) => ({ path: `${ns.values}m${String(i * 37).padStart(6, "0")}` })) };
        await autocannon("warm-up", { ...spec, durationSec: ctx.warmupSec });
        missRows.push(await ctx.measure(`${label} (${group.split(", ").pop()})`, ctx.durationSec, () => autocannon(label, spec, group)));
      }
      rows.push(...missRows);
      ratios.push(ratio(`GET miss throughput, 3 clusters / 1 cluster (${group.split(", ").pop()})`, missRows[1], missRows[0], "rps", { min: 1.0 }));
    }

    // 5. The crawler's CPU at its default rate, over a pass that finds all 5,000 keys of a namespace missing on
    // the replica (written while the namespace was in primary mode) and copies them, then a pass with nothing to do.
    try {
      const crawl = await ctx.kvdrive({ ...replicaEnv, KVDRIVE_CRAWLER_INTERVAL_SECONDS: "86400" }, three);
      const ns = await namespace(crawl, "bench-crawl");
      const modeUrl = `${crawl.origin}/admin/kv/namespaces/${ns.id}/replication`;
      await checkHttp(modeUrl, { method: "PUT", headers: AUTH, body: JSON.stringify({ mode: "primary" }) }, 200);
      await fill(crawl, ns.bulk, 5_000, "c");
      await checkHttp(modeUrl, { method: "PUT", headers: AUTH, body: JSON.stringify({ mode: null }) }, 200);
      for (const what of ["repairing 5,000 missing keys", "with nothing to repair"]) {
        const before = cpuSeconds(crawl.pid);
        const t = performance.now();
        // The pass runs in the background (202); its status is polled until it is no longer running.
        let res = await fetch(`${crawl.origin}/admin/kv/crawl`, { method: "POST", headers: AUTH });
        type Status = { state: string; result: { keysCompared: number; divergent: number; failed: number; error?: string } | null; error: string | null };
        let body = (await res.json()) as { result: Status | null; errors?: Array<{ message: string }> };
        while (body.result?.state === "running") {
          await Bun.sleep(100);
          res = await fetch(`${crawl.origin}/admin/kv/crawl`, { headers: AUTH });
          body = (await res.json()) as typeof body;
        }
        if (!body.result?.result) throw new Error(`crawl failed: ${res.status} ${body.result?.error ?? body.errors?.[0]?.message ?? ""}`);
        const pass = body.result.result;
        const wall = (performance.now() - t) / 1000;
        const cpu = cpuSeconds(crawl.pid) - before;
        rows.push(finish({ label: `crawler pass ${what}: ${pass.divergent} divergent, ${wall.toFixed(1)} s wall, ${cpu.toFixed(2)} s CPU${pass.failed ? `, ${pass.failed} namespace(s) failed: ${pass.error}` : ""}`, group: "crawler (default 2,000 keys/s)", total: pass.keysCompared, durationSec: wall, errors: res.ok ? 0 : 1 }));
        ratios.push({ name: `crawler CPU ${what} (share of one core)`, value: cpu / wall, target: "≤ 0.10", pass: cpu / wall <= 0.1 });
      }
    } catch (e) {
      rows.push(failed("crawler pass", e, "crawler"));
    }

    // 6. The consistency harness, long form: two instances on the same backends, with and without invalidation.
    for (const invalidation of ["true", "false"]) {
      const group = `consistency harness, 2 instances, invalidation ${invalidation === "true" ? "on" : "off"}`;
      try {
        const env = { ...replicaEnv, KVDRIVE_INVALIDATION: invalidation };
        const a = await ctx.kvdrive(env, three);
        const b = await ctx.kvdrive(env, three);
        const ns = await namespace(a, `bench-consistency-${invalidation}`);
        const history = await runConsistency({
          instances: [a, b].map((k, i) => ({ name: `i${i}`, baseURL: `${k.origin}/client/v4`, apiToken: TOKEN })),
          accountId: "bench", namespaceId: ns.id, clientsPerInstance: 8, keys: 16, durationMs: ctx.durationSec * 3000,
        });
        const r = analyse(history);
        rows.push(finish({ label: `${r.ops} ops: RYOW violations ${r.ryowViolations} (${r.ryowViolationPct.toFixed(3)}%), stale cross-instance reads ${r.stalePct.toFixed(2)}%, staleness p50 ${r.staleness.p50.toFixed(1)} ms p99 ${r.staleness.p99.toFixed(1)} ms max ${r.staleness.max.toFixed(1)} ms`, group, total: r.ops, errors: r.failed }));
        ratios.push({ name: `RYOW violations, invalidation ${invalidation === "true" ? "on" : "off"} (%)`, value: r.ryowViolationPct, target: "0", pass: r.ryowViolations === 0 });
        ratios.push({ name: `cross-instance staleness p99, invalidation ${invalidation === "true" ? "on" : "off"} (ms)`, value: r.staleness.p99, target: "Workers KV: up to 60 s" });
      } catch (e) {
        rows.push(failed("consistency harness", e, group));
      }
    }
    notes.push("Active-active acknowledges a write on the first backend that commits it; the other is repaired from the queue if it fails.");
    notes.push("Staleness is measured from the acknowledgement of the newer write to the start of the read that missed it.");
    return { scenario: "redundancy", title: this.title, params: { connections: CONNS, valueBytes: VALUE.length, clusters: 3 }, rows, ratios, notes };
  },
};

/** For "at most" targets: the ratio a/b on a latency, passing when ≤ max. */
function invert(a: Row, b: Row, metric: "p50" | "p99", max?: number): Partial<Ratio> {
  if (a.status !== "ok" || b.status !== "ok") return {};
  const value = a[metric]! / b[metric]!;
  return { value, pass: max === undefined ? undefined : value <= max };
}
