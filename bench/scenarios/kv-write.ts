// KV writes of 288-byte values: single PUTs with group commit (default window) and without (one row per
// batch), bulk writes, 95/5 and 50/50 read/write mixes, against single-row upserts sent straight to Postgres.
import { SQL } from "bun";
import os from "node:os";
import { freePort } from "../../src/embedded/postgres.ts";
import type { Context, Scenario } from "../lib/context.ts";
import { cpuSeconds, generatorBound, postmasterPid, withServerCpu } from "../lib/cpu.ts";
import { autocannon, wrk, wrkInstalled } from "../lib/http-load.ts";
import { pgbench } from "../lib/pgbench.ts";
import { closedLoop } from "../lib/recorder.ts";
import { failed, notInstalled, ratio, type Ratio, type Row } from "../lib/result.ts";
import { spawnUntil } from "../lib/procs.ts";
import { AUTH, TOKEN, checkHttp, namespace, type BenchPostgres, type KvdriveProcess } from "../lib/stack.ts";

const VALUE = "w".repeat(288);
const BULK_PAIRS = 100;
const MiB = 2 ** 20;
/** Connection counts at which kvdrive's PUT is compared with direct upserts at the same count. */
const LEVELS = [16, 64, 256] as const;
/** Seconds of load a fresh kvdrive gets before its first measured PUT level (see run). */
const JIT_WARMUP_SEC = 5;
const CORES = os.cpus().length;
/** Connections of the floor server's run (the issue's throughput figure). */
const FLOOR_CONNECTIONS = 64;
/** Postgres alone: rows a statement (a full batch at 64 connections) and statements in flight (kvdrive's default). */
const ALONE_ROWS = 32;
const ALONE_CLIENTS = 4;

/** Adds Postgres' CPU per request (postmaster and every backend) to a row measured by `fn`. */
async function withOriginCpu(pg: BenchPostgres, fn: () => Promise<Row>): Promise<Row> {
  const postmaster = postmasterPid(pg.dataDir);
  const before = cpuSeconds(postmaster, true);
  const row = await fn();
  if (row.total) row.originCpuUsPerTx = ((cpuSeconds(postmaster, true) - before) * 1e6) / row.total;
  return row;
}

/**
 * Settles Postgres before a measured write run, direct or through kvdrive alike: VACUUM ANALYZE of the table (as
 * pgbench does before its own runs), so the autovacuum the previous runs' inserts have earned does not land in
 * this run's window, then a CHECKPOINT, so no checkpoint falls inside a 4-second window by chance and decides its p99.
 */
async function settle(pg: BenchPostgres): Promise<void> {
  const sql = new SQL(pg.url, { max: 1 });
  try {
    await sql`VACUUM ANALYZE kv_entries`;
    await sql`CHECKPOINT`;
  } finally {
    await sql.close();
  }
}

/**
 * Direct conditional upserts from pgbench (a C client: it costs Postgres' side little), the statement kvdrive's
 * store sends, RETURNING included, each row a fresh key, one commit per statement: one row a statement for the
 * direct baseline, or `rows` for Postgres alone running kvdrive's group-commit statement (no HTTP, no server).
 */
function directScript(nsId: string, rows = 1): string {
  const tuples = Array.from({ length: rows }, (_, i) => `('${nsId}', convert_to('pgb-' || :client_id || '-' || :k${rows > 1 ? ` || '-${i}'` : ""}, 'UTF8'), convert_to('${VALUE}', 'UTF8'), NULL, NULL, (extract(epoch from clock_timestamp()) * 1000000)::bigint, 1, false)`);
  return `\\set k random(1, 2000000000)
INSERT INTO kv_entries AS e (ns, key, value, metadata, expiration, version_ts, version_nonce, tombstone)
  VALUES ${tuples.join(",\n    ")}
  ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, expiration = excluded.expiration,
    version_ts = excluded.version_ts, version_nonce = excluded.version_nonce, tombstone = excluded.tombstone
  WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)
  RETURNING ns, key;
`;
}

async function direct(ctx: Context, pg: BenchPostgres, nsId: string, clients: number, rowsPerStatement = 1, label = `direct single-row upserts, pgbench, ${clients} connections`): Promise<Row> {
  const target = { host: "127.0.0.1", port: pg.port, user: pg.user, password: pg.password, db: "postgres" };
  // pgbench's -T clock runs while its clients log in (SCRAM, tens of ms each here): the run is lengthened by
  // that, and tps is pgbench's own "without initial connection time".
  const run = { clients, durationSec: ctx.durationSec + Math.ceil(clients / 25), mode: "prepared" as const, selectOnly: false, script: { name: "upsert", text: directScript(nsId, rowsPerStatement) } };
  await pgbench("warm-up", target, { ...run, durationSec: ctx.warmupSec + Math.ceil(clients / 25) });
  await settle(pg);
  const measured = await ctx.measure(label, ctx.durationSec, async () => {
    const postmaster = postmasterPid(pg.dataDir);
    const before = cpuSeconds(postmaster, true);
    const row = await pgbench(label, target, run);
    // Per row, not per statement: a batch statement's rows are what the PUT rows are compared with.
    row.rowsPerSec = (row.rps ?? 0) * rowsPerStatement;
    if (row.total) {
      row.serverCpuUsPerReq = row.originCpuUsPerTx = ((cpuSeconds(postmaster, true) - before) * 1e6) / row.total / rowsPerStatement;
      row.serverCores = (row.serverCpuUsPerReq * row.total * rowsPerStatement) / 1e6 / run.durationSec;
    }
    if (row.clientCpuMsPerTx !== undefined && row.total) {
      row.loadGenCpuUsPerReq = (row.clientCpuMsPerTx * 1000) / rowsPerStatement;
      row.loadGenCores = (row.loadGenCpuUsPerReq * row.total * rowsPerStatement) / 1e6 / run.durationSec;
      row.loadGenThreads = 2;
    }
    row.loadGenSaturated = generatorBound(row);
    return row;
  });
  // The machine's CPU is measured per statement; every CPU column of this row is per row.
  if (measured.machineCpuUsPerReq !== undefined) measured.machineCpuUsPerReq /= rowsPerStatement;
  return measured;
}

/** PUTs of fresh keys driven by wrk (a Lua script numbers the keys), with the server's and Postgres' CPU. */
async function putWrk(ctx: Context, pg: BenchPostgres, server: { origin: string; pid: number }, values: string, label: string, connections: number): Promise<Row> {
  const o = { url: `${server.origin}${values}warm`, connections, durationSec: ctx.durationSec, headers: AUTH, method: "PUT", body: VALUE, rowsPerRequest: 1 };
  await wrk("warm-up", { ...o, durationSec: ctx.warmupSec, unique: `${values}warm-${connections}-` });
  await settle(pg);
  return ctx.measure(label, ctx.durationSec, () => withOriginCpu(pg, () => withServerCpu(server.pid, () => wrk(label, { ...o, unique: `${values}${label.replace(/\W+/g, "-")}-` }))));
}

/** The floor server (kv-write-floor.ts) at `connections`, on its own port, writing into kvdrive's namespace `nsId`. */
async function floorPut(ctx: Context, pg: BenchPostgres, values: string, nsId: string, label: string, connections: number): Promise<Row> {
  const port = await freePort();
  const floor = await spawnUntil(["bun", new URL("./kv-write-floor.ts", import.meta.url).pathname, String(port), pg.url, nsId, TOKEN], {}, "ready");
  try {
    const server = { origin: `http://127.0.0.1:${port}`, pid: floor.proc.pid };
    await checkHttp(`${server.origin}${values}floor-check`, { method: "PUT", headers: AUTH, body: VALUE }, 200);
    await wrk("warm-up (JIT)", { url: `${server.origin}${values}floor-jit`, connections, durationSec: Math.max(ctx.warmupSec, JIT_WARMUP_SEC), headers: AUTH, method: "PUT", body: VALUE, unique: `${values}floor-jit-` });
    return await putWrk(ctx, pg, server, values, label, connections);
  } finally {
    await floor.stop();
  }
}

async function put(ctx: Context, pg: BenchPostgres, k: KvdriveProcess, label: string, connections: number): Promise<Row> {
  const ns = await namespace(k, "bench-write");
  await checkHttp(`${k.origin}${ns.values}check`, { method: "PUT", headers: AUTH, body: VALUE }, 200);
  const load = { origin: k.origin, connections, durationSec: ctx.durationSec, headers: AUTH, requests: [{ method: "PUT", path: `${ns.values}${label.replace(/\W+/g, "-")}-`, body: VALUE, unique: true }] };
  await autocannon("warm-up", { ...load, durationSec: ctx.warmupSec });
  await settle(pg);
  return ctx.measure(label, ctx.durationSec, () => withServerCpu(k.pid, () => autocannon(label, { ...load, rowsPerRequest: 1 })));
}

/**
 * What is left of the per-row budget once Postgres has run the batches (`alone`, pgbench's own share taken out) and
 * wrk has sent the PUTs (`viaWrk`), and what the least Bun server (`floor`) adds on top: the most any Bun server
 * reaches against `direct` with every core busy. Undefined when a row it needs is missing.
 */
function floorBudget(alone: Row, viaWrk: Row | undefined, floor: Row, direct: Row | undefined): string | undefined {
  if (alone.status !== "ok" || alone.machineCpuUsPerReq === undefined) return undefined;
  if (viaWrk?.status !== "ok" || viaWrk.loadGenCpuUsPerReq === undefined) return undefined;
  if (floor.status !== "ok" || floor.serverCpuUsPerReq === undefined) return undefined;
  if (direct?.status !== "ok" || !direct.rowsPerSec) return undefined;
  const pgRow = alone.machineCpuUsPerReq - (alone.loadGenCpuUsPerReq ?? 0);
  const sum = pgRow + viaWrk.loadGenCpuUsPerReq + floor.serverCpuUsPerReq;
  const most = (CORES * 1e6) / sum;
  return `Postgres alone on the group-commit statement (${ALONE_ROWS} rows each, ${ALONE_CLIENTS} pgbench connections, no HTTP): ${Math.round(alone.rowsPerSec ?? 0).toLocaleString("en-US")} rows/s, the whole machine ${alone.machineCpuUsPerReq.toFixed(0)} µs per row of which pgbench ${(alone.loadGenCpuUsPerReq ?? 0).toFixed(0)}, ${Math.round((alone.machineBusy ?? 0) * 100)}% busy. With wrk's ${viaWrk.loadGenCpuUsPerReq.toFixed(0)} µs per PUT (${FLOOR_CONNECTIONS}-connection row) and the least a Bun server adds (the floor server's ${floor.serverCpuUsPerReq.toFixed(0)} µs): ${pgRow.toFixed(0)} + ${viaWrk.loadGenCpuUsPerReq.toFixed(0)} + ${floor.serverCpuUsPerReq.toFixed(0)} = ${sum.toFixed(0)} µs per row, at most ${Math.round(most).toLocaleString("en-US")} rows/s on ${CORES} fully busy cores, ${(most / direct.rowsPerSec).toFixed(2)}× direct at ${FLOOR_CONNECTIONS} connections.`;
}

export const kvWrite: Scenario = {
  name: "kv-write",
  title: "KV writes, 288-byte values: group commit, bulk, read/write mixes, direct single-row upserts",
  quick: true,
  params: "288-byte values; PUTs at 16, 64 and 256 connections (wrk with a Lua script, and autocannon); direct single-row upserts (pgbench, custom script) at the same counts; --full adds no group commit, bulk (100 pairs) and 95/5, 50/50 mixes",
  async run(ctx) {
    const pg = await ctx.postgres();
    const rows: Row[] = [];
    const ratios: Ratio[] = [];
    const d = ctx.durationSec;
    const k = await ctx.kvdrive();
    const ns = await namespace(k, "bench-write");

    // Direct: what an application would do without kvdrive — one upsert (same statement shape as the store's,
    // one row) per write, each awaiting its commit, at the same connection counts as the PUTs.
    const directs = new Map<number, Row>();
    for (const c of LEVELS) {
      try {
        directs.set(c, await direct(ctx, pg, ns.id, c));
      } catch (e) {
        directs.set(c, failed(`direct single-row upserts, pgbench, ${c} connections`, e));
      }
      rows.push(directs.get(c)!);
    }
    // Postgres alone on kvdrive's group-commit statement: what a row costs the database with no HTTP and no server,
    // the part of the per-row budget no server can take back.
    const aloneLabel = `Postgres alone: the group-commit statement, ${ALONE_ROWS} rows each, ${ALONE_CLIENTS} pgbench connections (CPU per row)`;
    let alone: Row;
    try {
      alone = await direct(ctx, pg, ns.id, ALONE_CLIENTS, ALONE_ROWS, aloneLabel);
    } catch (e) {
      alone = failed(aloneLabel, e);
    }
    rows.push(alone);
    // The Bun.SQL closed loop of earlier runs, kept for continuity (16 connections).
    const sql = new SQL(pg.url, { max: 16 });
    ctx.defer(() => sql.close());
    const val = new TextEncoder().encode(VALUE);
    let ts = Date.now() * 1000;
    const upsert = (i: number) =>
      sql`INSERT INTO kv_entries AS e (ns, key, value, metadata, expiration, version_ts, version_nonce, tombstone)
          VALUES (${ns.id}, ${new TextEncoder().encode(`direct-${i}`)}, ${val}, ${null}, ${null}, ${ts++}, ${1}, ${false})
          ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, expiration = excluded.expiration,
            version_ts = excluded.version_ts, version_nonce = excluded.version_nonce, tombstone = excluded.tombstone
          WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)
          RETURNING ns, key`;
    if ((await upsert(-1)).length !== 1) throw new Error("endpoint check failed: direct upsert wrote no row");
    await closedLoop("warm-up", { concurrency: 16, durationSec: ctx.warmupSec }, upsert);
    await settle(pg);
    const directSql = await ctx.measure("direct single-row upserts, Bun.SQL, 16 connections", d, () => withOriginCpu(pg, () => closedLoop("direct single-row upserts, Bun.SQL, 16 connections", { concurrency: 16, durationSec: d, rowsPerOp: 1 }, (i) => upsert(i + 1_000_000))));
    rows.push(directSql);

    const viaWrk = new Map<number, Row>();
    // A freshly started kvdrive compiles its hot paths during its first seconds of load (measured: PUT p99 at 16
    // connections 13.3 ms in the first 5-second window, then 9.4, 8.8 and 10.4 ms): its first PUT level is warmed
    // for JIT_WARMUP_SEC on top of the usual warm-up. Postgres and pgbench have no JIT to warm.
    if (wrkInstalled()) {
      const jitNs = await namespace(k, "bench-write");
      await wrk("warm-up (JIT)", { url: `${k.origin}${jitNs.values}jit`, connections: LEVELS[0], durationSec: Math.max(ctx.warmupSec, JIT_WARMUP_SEC), headers: AUTH, method: "PUT", body: VALUE, unique: `${jitNs.values}jit-` });
    }
    for (const c of LEVELS) {
      const label = `kvdrive PUT, group commit, ${c} connections, wrk`;
      viaWrk.set(c, wrkInstalled() ? await putWrk(ctx, pg, k, (await namespace(k, "bench-write")).values, label, c) : notInstalled(label, "wrk"));
      rows.push(viaWrk.get(c)!);
    }
    // The floor: the least any Bun server must do for a group-commit PUT (kv-write-floor.ts), at 64 connections.
    const floorLabel = `floor: bare Bun.serve + Bun.SQL group commit, same statement, ${FLOOR_CONNECTIONS} connections, wrk`;
    let floor: Row;
    try {
      floor = wrkInstalled() ? await floorPut(ctx, pg, ns.values, ns.id, floorLabel, FLOOR_CONNECTIONS) : notInstalled(floorLabel, "wrk");
    } catch (e) {
      floor = failed(floorLabel, e);
    }
    rows.push(floor);
    const gc16 = await put(ctx, pg, k, "kvdrive PUT, group commit, 16 connections, autocannon", 16);
    const gc64 = await put(ctx, pg, k, "kvdrive PUT, group commit, 64 connections, autocannon", 64);
    const gc256 = await put(ctx, pg, k, "kvdrive PUT, group commit, 256 connections, autocannon", 256);
    rows.push(gc16, gc64, gc256);
    for (const c of LEVELS) {
      ratios.push(ratio(`PUT with group commit / direct single-row upserts (rows/s, wrk vs pgbench, both ${c} connections)`, viaWrk.get(c), directs.get(c), "rowsPerSec", { min: 3 }));
    }
    ratios.push(ratio(`floor server / direct single-row upserts (rows/s, wrk vs pgbench, both ${FLOOR_CONNECTIONS} connections): what any Bun server reaches here`, floor, directs.get(FLOOR_CONNECTIONS), "rowsPerSec"));
    ratios.push(ratio(`Postgres alone, group-commit statement of ${ALONE_ROWS} rows / direct single-row upserts at ${FLOOR_CONNECTIONS} connections (rows/s, pgbench both): the database's side, with no HTTP`, alone, directs.get(FLOOR_CONNECTIONS), "rowsPerSec"));
    ratios.push(ratio(`kvdrive PUT / floor server (rows/s, wrk, both ${FLOOR_CONNECTIONS} connections)`, viaWrk.get(FLOOR_CONNECTIONS), floor, "rowsPerSec"));
    const p16 = viaWrk.get(16);
    if (p16?.p99 !== undefined && p16.status === "ok") ratios.push({ name: `PUT group commit p99 within 10 ms, 16 conns, wrk (10 ms / p99 of ${p16.p99.toFixed(2)} ms)`, value: 10 / p16.p99, target: "≥ 1×", pass: p16.p99 <= 10 });
    ratios.push(ratio("PUT with group commit / direct single-row upserts (rows/s, autocannon vs pgbench, both 16 connections)", gc16, directs.get(16), "rowsPerSec", { min: 3 }));
    ratios.push(ratio("PUT with group commit / direct single-row upserts (rows/s, autocannon vs pgbench, both 64 connections)", gc64, directs.get(64), "rowsPerSec", { min: 3 }));
    ratios.push(ratio("PUT with group commit / direct single-row upserts (rows/s, autocannon, 16 connections, vs Bun.SQL at 16)", gc16, directSql, "rowsPerSec"));
    for (const r of [gc16, gc64, gc256]) {
      if (r.p99 !== undefined && r.status === "ok") ratios.push({ name: `PUT group commit p99 within 10 ms, ${r.connections} conns, autocannon (10 ms / p99 of ${r.p99} ms)`, value: 10 / r.p99, target: "≥ 1×", pass: r.p99 <= 10 });
    }
    const direct16 = directs.get(16) ?? directSql;

    if (ctx.full) {
      try {
        const single = await ctx.kvdrive({ KVDRIVE_BATCH_MAX_ROWS: "1" });
        const noGc = await put(ctx, pg, single, "kvdrive PUT, no group commit (KVDRIVE_BATCH_MAX_ROWS=1), 16 connections", 16);
        rows.push(noGc);
        ratios.push(ratio("group commit / no group commit (rows/s, 16 connections)", gc16, noGc, "rowsPerSec"));
      } catch (e) {
        rows.push(failed("kvdrive PUT, no group commit", e));
      }

      const pairs = Array.from({ length: BULK_PAIRS }, (_, i) => ({ key: `bulk-${i}`, value: VALUE }));
      const bulkUrl = `${k.origin}${ns.bulk}`;
      await checkHttp(bulkUrl, { method: "PUT", headers: AUTH, body: JSON.stringify(pairs) }, 200);
      const bulk = { origin: k.origin, connections: 16, durationSec: d, headers: AUTH, rowsPerRequest: BULK_PAIRS, requests: [{ method: "PUT", path: ns.bulk, body: JSON.stringify(pairs) }] };
      await autocannon("warm-up", { ...bulk, durationSec: ctx.warmupSec });
      const b = await ctx.measure(`kvdrive bulk PUT, ${BULK_PAIRS} pairs per request, 16 connections`, d, () => autocannon(`kvdrive bulk PUT, ${BULK_PAIRS} pairs per request, 16 connections`, bulk));
      rows.push(b);
      ratios.push(ratio("bulk PUT / direct single-row upserts at 16 connections (rows/s)", b, direct16, "rowsPerSec"));

      await checkHttp(`${k.origin}${ns.values}hot`, { method: "PUT", headers: AUTH, body: VALUE }, 200);
      for (const [name, reads, writes] of [["95/5", 19, 1], ["50/50", 1, 1]] as const) {
        const label = `kvdrive ${name} GET/PUT mix (cached GETs, unique-key PUTs), 64 connections`;
        const requests = [...Array.from({ length: reads }, () => ({ path: `${ns.values}hot` })), ...Array.from({ length: writes }, () => ({ method: "PUT", path: `${ns.values}mix-${name.replace("/", "-")}-`, body: VALUE, unique: true }))];
        const mix = { origin: k.origin, connections: 64, durationSec: d, headers: AUTH, requests };
        await autocannon("warm-up", { ...mix, durationSec: ctx.warmupSec });
        rows.push(await ctx.measure(label, d, () => autocannon(label, mix)));
      }
    }

    const peak = Math.max(0, ...ctx.peakRss().map((p) => p.bytes));
    // The floor: every process's CPU per PUT added up, and the rate two cores allow at that cost.
    const budget = (r: Row | undefined) => {
      if (!r || r.status !== "ok" || r.loadGenCpuUsPerReq === undefined || r.originCpuUsPerTx === undefined) return undefined;
      // A direct row's server is Postgres itself, already counted as the origin.
      const server = r.label.startsWith("direct") || r === alone ? 0 : (r.serverCpuUsPerReq ?? 0);
      const total = server + r.originCpuUsPerTx + r.loadGenCpuUsPerReq;
      return `${r.label}: ${server ? `${r.label.startsWith("floor") ? "floor server" : "kvdrive"} ${server.toFixed(0)} + ` : ""}Postgres ${r.originCpuUsPerTx.toFixed(0)} + load generator ${r.loadGenCpuUsPerReq.toFixed(0)} = ${total.toFixed(0)} µs per row, so at most ${Math.round((CORES * 1e6) / total).toLocaleString("en-US")} rows/s on ${CORES} cores (measured ${Math.round(r.rowsPerSec ?? r.rps ?? 0).toLocaleString("en-US")})${machine(r)}`;
    };
    // The processes above miss kernel work charged to no one of them (loopback, softirq): the machine's own
    // figure says how busy the two cores really were, and what a row costs all told.
    const machine = (r: Row) => (r.machineCpuUsPerReq === undefined ? "" : `; the whole machine ${r.machineCpuUsPerReq.toFixed(0)} µs per row, ${Math.round((r.machineBusy ?? 0) * 100)}% busy`);
    const direct64 = directs.get(64);
    const goal = direct64?.status === "ok" && direct64.rowsPerSec ? `3× direct at 64 connections is ${Math.round(3 * direct64.rowsPerSec).toLocaleString("en-US")} rows/s: on ${CORES} cores fully busy, at most ${((CORES * 1e6) / (3 * direct64.rowsPerSec)).toFixed(0)} µs of the whole machine per row.` : undefined;
    const rest = floorBudget(alone, viaWrk.get(FLOOR_CONNECTIONS), floor, direct64);
    const budgets = [...LEVELS.map((c) => budget(viaWrk.get(c))), budget(floor), ...LEVELS.map((c) => budget(directs.get(c))), budget(alone)].filter(Boolean);
    return {
      scenario: "kv-write",
      title: this.title,
      params: { "value size": "288 B", connections: "16, 64 and 256 for both kvdrive (wrk and autocannon) and direct upserts (pgbench)", "duration per run": `${d} s`, "group commit": "KVDRIVE_BATCH_WINDOW_MS default 2 ms, 512 rows, KVDRIVE_BATCH_CONCURRENCY default 4" },
      rows,
      ratios,
      notes: [
        ...(budgets.length ? [`CPU per row, all processes (the floor on this machine): ${budgets.join("; ")}.`] : []),
        ...(goal ? [goal] : []),
        ...(rest ? [rest] : []),
        "The floor server (bench/scenarios/kv-write-floor.ts, its own process) is the least a Bun server does for a PUT acknowledged after commit: Bun.serve with no framework, cache, metrics or validation; token check, body read, a queue shared among up to 4 batches in flight (kvdrive's default) that send kvdrive's own conditional upsert through Bun.SQL. kvdrive / floor is what kvdrive's features cost; floor / direct is what any Bun group-commit server reaches on this machine.",
        "Every PUT uses a fresh key; an HTTP 200 means the row's batch has committed (fsync on, Postgres defaults). kvdrive gets 5 s of PUT load before its first measured level (JIT warm-up of a fresh process), then 1 s before each level. Each measured write run, direct or through kvdrive, starts right after VACUUM ANALYZE of kv_entries and a CHECKPOINT, so no run has the autovacuum earned by earlier runs, or a checkpoint, in its window by chance.",
        "Direct upserts: pgbench (-M prepared, a custom script) sends the statement kvdrive's store sends, with one row and a fresh key, RETURNING included, at the same connection counts as the PUTs; the Bun.SQL row is the same from the bench process.",
        "CPU columns: the server is kvdrive's process (µs per PUT, from /proc), or Postgres (postmaster and backends) for the direct rows; Postgres' CPU per PUT behind kvdrive is in the JSON (originCpuUsPerTx). A row whose load generator used (nearly) all the cores its threads can use, or more CPU than the server, is marked, and its ratios are not kvdrive's.",
        `Peak kvdrive RSS during the scenario: ${(peak / MiB).toFixed(0)} MiB.`,
        "In a closed loop every writer waits for its own commit, so at equal concurrency rows/s ≤ writers / commit latency on both sides, and Postgres already shares WAL flushes between concurrent direct commits: group commit can only pull ahead with more writers in flight than the direct pool has connections (the 64- and 256-connection rows).",
      ],
    };
  },
};
