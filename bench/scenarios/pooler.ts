// Pooler throughput with pgbench: direct Postgres, PgBouncer (apt) in transaction mode, kvdrive with the query
// cache off and on; select-only (-S) and TPC-B, -M simple|extended|prepared, and -C (a connection per transaction).
import type { Context, Scenario } from "../lib/context.ts";
import { features } from "../lib/features.ts";
import { installed, startPgBouncer } from "../lib/peers.ts";
import { pgbench, pgbenchArgs, pgbenchInit, type PgbenchRun, type PgbenchTarget } from "../lib/pgbench.ts";
import { measuredAsCached } from "../lib/query-cache-stats.ts";
import { failed, notBuilt, notInstalled, ratio, type Ratio, type Row } from "../lib/result.ts";
import type { KvdriveProcess } from "../lib/stack.ts";
import { spawnUntil } from "../lib/procs.ts";
import { cpuSeconds, postmasterPid } from "../lib/cpu.ts";
import { freePort } from "../../src/embedded/postgres.ts";

const CLIENTS = 16;
const FLOOR = "Bun byte relay (no pooling, no parsing: one origin connection per client)";
const POOL = 20;
/** The miss-only script: its cache-on row is a row of misses by design, not checked as served from the cache. */
const MISS_ONLY = "miss-only.sql";

interface Target {
  name: string;
  target?: PgbenchTarget;
  /** The proxy's process (PgBouncer, the relay, kvdrive), for its CPU per transaction. */
  pid?: number;
  /** The kvdrive behind it, whose cache statuses prove a "cache on" row was served from the cache. */
  kvdrive?: KvdriveProcess;
  /** Why there is no target: not installed, not built. */
  missing?: (label: string, group: string) => Row;
}

async function checkTarget(t: PgbenchTarget, name: string): Promise<void> {
  const proc = Bun.spawn(["psql", "-X", "-A", "-t", "-c", "SELECT count(*) FROM pgbench_branches"], {
    env: { ...process.env, PGPASSWORD: t.password, PGHOST: t.host, PGPORT: String(t.port), PGUSER: t.user, PGDATABASE: t.db, PGSSLMODE: "disable" },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0 || out.trim() !== "1") throw new Error(`endpoint check failed for ${name}: psql gave ${code}: ${out.trim()} ${err.trim()}`);
}

/**
 * Puts the answer for every one of the 100,000 accounts in the cache: pgbench's own -S statement, with each aid
 * taken once from a sequence (the nextval itself is volatile, so it is not cached and goes to the origin) and read
 * twice in a row, since a scan's first reads are not admitted.
 */
async function warmEveryAccount(through: PgbenchTarget, direct: PgbenchTarget): Promise<void> {
  const psql = Bun.spawnSync(["psql", "-X", "-q", "-c", "DROP SEQUENCE IF EXISTS bench_warm_aid; CREATE SEQUENCE bench_warm_aid"], {
    env: { ...process.env, PGPASSWORD: direct.password, PGHOST: direct.host, PGPORT: String(direct.port), PGUSER: direct.user, PGDATABASE: direct.db, PGSSLMODE: "disable" },
  });
  if (psql.exitCode !== 0) throw new Error(`cache warm-up: psql failed: ${psql.stderr.toString().slice(0, 300)}`);
  // Twice each: a key read once in a scan is not admitted into the cache (TinyLFU's doorkeeper, cache-path.ts).
  const text = "SELECT nextval('bench_warm_aid') AS aid \\gset\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n";
  const r = await pgbench("cache warm-up", through, { clients: CLIENTS, durationSec: 0, transactions: 100_000 / CLIENTS, mode: "prepared", selectOnly: true, script: { name: "warm-every-account.sql", text } });
  if (r.status !== "ok") throw new Error(`cache warm-up failed: ${r.note ?? r.status}`);
}

export const pooler: Scenario = {
  name: "pooler",
  title: "Pooler throughput, pgbench: direct Postgres, PgBouncer (transaction mode), kvdrive cache off/on",
  quick: true,
  params: "pgbench -c 16 -j 2, scale 1, SCRAM; direct, PgBouncer (transaction mode, pool 20), kvdrive (pool 20) cache off/on; -S -M prepared and -S -C (--full: every -M with -S and TPC-B)",
  async run(ctx: Context) {
    const pg = await ctx.postgres();
    const base = { host: "127.0.0.1", user: pg.user, password: pg.password, db: "postgres" };
    const direct: PgbenchTarget = { ...base, port: pg.port };
    const postmaster = postmasterPid(pg.dataDir);
    await pgbenchInit(direct);
    const targets: Target[] = [{ name: "direct Postgres", target: direct }];

    if (installed("pgbouncer")) {
      const tx = await startPgBouncer({ originPort: pg.port, user: pg.user, password: pg.password, mode: "transaction", poolSize: POOL });
      ctx.defer(() => tx.stop());
      targets.push({ name: "PgBouncer, transaction mode", target: { ...base, port: tx.port }, pid: tx.pid });
    } else targets.push({ name: "PgBouncer, transaction mode", missing: (l, g) => notInstalled(l, "pgbouncer", g) });

    // The floor of any pooler on Bun: a byte relay with no parsing and no pooling (pooler-floor.ts).
    const floorPort = await freePort();
    const floor = await spawnUntil(["bun", new URL("./pooler-floor.ts", import.meta.url).pathname, String(floorPort), String(pg.port)], {}, "ready");
    ctx.defer(async () => void (await floor.stop()));
    targets.push({ name: FLOOR, target: { ...base, port: floorPort }, pid: floor.proc.pid });

    const off = await ctx.kvdrive({ KVDRIVE_CACHE_DISABLED: "true", KVDRIVE_POOL_SIZE: String(POOL) });
    targets.push({ name: "kvdrive, cache off", target: { ...base, port: off.pgPort }, pid: off.pid });
    if (features.queryCache()) {
      const on = await ctx.kvdrive({ KVDRIVE_POOL_SIZE: String(POOL) });
      targets.push({ name: "kvdrive, cache on", target: { ...base, port: on.pgPort }, kvdrive: on, pid: on.pid });
    } else targets.push({ name: "kvdrive, cache on", missing: (l, g) => notBuilt(l, "the pooler's query cache (issue 4) is not in the tree yet", g) });
    for (const t of targets) if (t.target) await checkTarget(t.target, t.name);

    const rows: Row[] = [];
    const runSet = async (group: string, run: PgbenchRun, names: string[]) => {
      for (const t of targets.filter((x) => names.includes(x.name))) {
        const label = t.name;
        if (!t.target) {
          rows.push(t.missing!(label, group));
          continue;
        }
        try {
          await pgbench("warm-up", t.target, { ...run, durationSec: ctx.warmupSec });
          // Built-in -S draws from 100,000 accounts, which a run of a few seconds mostly sees for the first
          // time: the cache-on row gets every account's answer cached first (one pass, excluded from results).
          if (t.kvdrive && run === prepared) await warmEveryAccount(t.target, direct);
          const measure = async () => {
            // CPU of the proxy and of Postgres over the measured run, per transaction: where the 2 cores went.
            const before = [t.pid ? cpuSeconds(t.pid) : NaN, cpuSeconds(postmaster, true)];
            const row = await pgbench(label, t.target!, run, group);
            const n = row.total ?? 0;
            if (n > 0) {
              if (t.pid) row.proxyCpuUsPerTx = ((cpuSeconds(t.pid) - before[0]!) * 1e6) / n;
              row.originCpuUsPerTx = ((cpuSeconds(postmaster, true) - before[1]!) * 1e6) / n;
            }
            return row;
          };
          rows.push(await ctx.measure(`${group}: ${label}`, run.durationSec, () => (t.kvdrive && run.script?.name !== MISS_ONLY ? measuredAsCached(t.kvdrive, measure) : measure())));
        } catch (e) {
          rows.push(failed(label, e, group));
        }
      }
    };
    const all = targets.map((t) => t.name);
    const d = ctx.durationSec;
    const groupName = (r: PgbenchRun) => `pgbench ${pgbenchArgs({ ...r, durationSec: d }).filter((a) => !a.startsWith("-T") && a !== "-j2").join(" ")}`;

    const prepared: PgbenchRun = { clients: CLIENTS, durationSec: d, mode: "prepared", selectOnly: true };
    const connectEach: PgbenchRun = { clients: CLIENTS, durationSec: d, mode: "simple", selectOnly: true, connectEach: true };
    await runSet(groupName(prepared), prepared, all);
    const notFloor = all.filter((n) => n !== FLOOR);
    // PgBouncer before 1.21 cannot keep protocol-level prepared statements in transaction mode; session mode
    // is what its users fall back to, so it is shown too, under its own name.
    const pgbTx = rows.find((r) => r.group === groupName(prepared) && r.label === "PgBouncer, transaction mode");
    if (installed("pgbouncer") && pgbTx && pgbTx.status !== "ok") {
      const s = await startPgBouncer({ originPort: pg.port, user: pg.user, password: pg.password, mode: "session", poolSize: POOL });
      ctx.defer(() => s.stop());
      targets.push({ name: "PgBouncer, session mode", target: { ...base, port: s.port }, pid: s.pid });
      await runSet(groupName(prepared), prepared, ["PgBouncer, session mode"]);
    }
    // A hot set of 1,000 accounts: what a query cache is for. Built-in -S draws from 100,000 accounts, which a
    // run of a few seconds mostly sees once, so it measures misses.
    const hot: PgbenchRun = { ...prepared, script: { name: "hot-1000.sql", text: "\\set aid random(1, 1000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n" } };
    if (features.queryCache()) await runSet(groupName(hot), hot, ["direct Postgres", "kvdrive, cache off", "kvdrive, cache on"]);
    else await runSet(groupName(hot), hot, ["kvdrive, cache on"]);
    await runSet(groupName(connectEach), connectEach, notFloor.filter((n) => n !== "kvdrive, cache on"));
    // Miss-only: keys drawn from 10,000,000 (100x the accounts), so nearly every read is a first read (a miss,
    // mostly of an empty result). Turning the cache on must not slow it down: a miss costs what a pass-through does.
    const missOnly: PgbenchRun = { ...prepared, script: { name: MISS_ONLY, text: "\\set aid random(1, 10000000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n" } };
    if (features.queryCache()) await runSet(groupName(missOnly), missOnly, ["kvdrive, cache off", "kvdrive, cache on"]);

    if (ctx.full) {
      for (const mode of ["simple", "extended", "prepared"] as const) {
        for (const selectOnly of [true, false]) {
          if (mode === "prepared" && selectOnly) continue;
          const r: PgbenchRun = { clients: CLIENTS, durationSec: d, mode, selectOnly };
          await runSet(groupName(r), r, notFloor);
        }
      }
    }

    const at = (group: string, label: string) => rows.find((r) => r.group === group && r.label === label);
    const gp = groupName(prepared);
    const gc = groupName(connectEach);
    const gh = groupName(hot);
    const ratios: Ratio[] = [
      ratio("-S -M prepared -c 16: kvdrive cache off / PgBouncer transaction mode (tps)", at(gp, "kvdrive, cache off"), at(gp, "PgBouncer, transaction mode"), "rps", { min: 1 }),
    ];
    if (at(gp, "PgBouncer, session mode")) ratios.push(ratio("-S -M prepared -c 16: kvdrive cache off / PgBouncer session mode (tps)", at(gp, "kvdrive, cache off"), at(gp, "PgBouncer, session mode"), "rps", { min: 1 }));
    ratios.push(
      ratio("-S -M prepared -c 16: kvdrive cache off / direct Postgres (tps)", at(gp, "kvdrive, cache off"), at(gp, "direct Postgres"), "rps"),
      ratio("-S -M prepared -c 16: Bun byte relay / PgBouncer session mode (tps): what a one-to-one relay reaches on Bun", at(gp, FLOOR), at(gp, "PgBouncer, session mode"), "rps"),
      ratio("-S -M prepared -c 16: kvdrive cache off / Bun byte relay (tps)", at(gp, "kvdrive, cache off"), at(gp, FLOOR), "rps"),
      ratio("-S -M prepared -c 16: kvdrive cache on / direct Postgres (tps)", at(gp, "kvdrive, cache on"), at(gp, "direct Postgres"), "rps", { min: 1.5 }),
      ratio("hot set of 1,000 accounts, -M prepared -c 16: kvdrive cache on / direct Postgres (tps)", at(gh, "kvdrive, cache on"), at(gh, "direct Postgres"), "rps", { min: 1.5 }),
      ratio("miss-only (10,000,000 keys), -M prepared -c 16: kvdrive cache on / cache off (tps)", at(groupName(missOnly), "kvdrive, cache on"), at(groupName(missOnly), "kvdrive, cache off"), "rps", { min: 0.9 }),
      ratio("-S -C -c 16: kvdrive / PgBouncer transaction mode (tps)", at(gc, "kvdrive, cache off"), at(gc, "PgBouncer, transaction mode"), "rps", { min: 1 }),
      ratio("-S -C -c 16: kvdrive / direct Postgres with SCRAM (tps)", at(gc, "kvdrive, cache off"), at(gc, "direct Postgres"), "rps", { min: 20 }),
    );
    if (ctx.full) {
      for (const mode of ["simple", "extended", "prepared"]) {
        const g = `pgbench -c${CLIENTS} -M${mode}`;
        ratios.push(ratio(`TPC-B -M ${mode}: kvdrive cache off / PgBouncer transaction mode (tps)`, at(g, "kvdrive, cache off"), at(g, "PgBouncer, transaction mode"), "rps"));
      }
    }
    const cpuNote = rows
      .filter((r) => r.group === gc && r.clientCpuMsPerTx !== undefined)
      .map((r) => `${r.label}: ${r.clientCpuMsPerTx!.toFixed(2)} ms`)
      .join(", ");
    const notes: string[] = [];
    // Where each row's CPU went, and what that allows on 2 cores: tps ≤ 2 s / (CPU per transaction, all processes).
    const split = (g: string) =>
      rows
        .filter((r) => r.group === g && r.status === "ok" && r.clientCpuMsPerTx !== undefined && r.originCpuUsPerTx !== undefined)
        .map((r) => {
          const client = r.clientCpuMsPerTx! * 1000;
          const proxy = r.proxyCpuUsPerTx ?? 0;
          const total = client + proxy + r.originCpuUsPerTx!;
          return `${r.label}: pgbench ${client.toFixed(1)}, proxy ${r.proxyCpuUsPerTx === undefined ? "—" : proxy.toFixed(1)}, Postgres ${r.originCpuUsPerTx!.toFixed(1)} (ceiling ${Math.round(2e6 / total).toLocaleString("en-US")} tps)`;
        })
        .join("; ");
    for (const g of [gp, gh]) {
      const line = split(g);
      if (line) notes.push(`CPU per transaction in \`${g}\`, µs (from /proc over the measured run; Postgres counts its backends, also those that exited): ${line}.`);
    }
    if (cpuNote) {
      const directRow = at(gc, "direct Postgres");
      const kv = at(gc, "kvdrive, cache off");
      const cap = kv?.clientCpuMsPerTx ? 2000 / kv.clientCpuMsPerTx : NaN;
      const reach = directRow?.rps && Number.isFinite(cap) ? ` With kvdrive's client-side figure that is at most ${Math.round(cap)} tps even for a pooler that cost nothing, ${(cap / directRow.rps).toFixed(1)}× the direct rate of this run: a 20× target cannot be reached on this machine without weakening SCRAM (KVDRIVE_PG_SCRAM_ITERATIONS lowers the client's cost, as Postgres' scram_iterations does; the bench keeps 4096).` : "";
      notes.push(`With -C, pgbench itself (libpq: a TCP connection and SCRAM-SHA-256 with 4096 PBKDF2 iterations, client side) spends this much CPU per transaction: ${cpuNote}. On 2 shared cores that caps any pooler's -C rate at roughly 2000 ms / (client CPU + pooler CPU) per second, whatever the pooler does.${reach}`);
    }
    return {
      scenario: "pooler",
      title: this.title,
      params: { clients: CLIENTS, threads: 2, "pool size (PgBouncer and kvdrive)": POOL, "duration per run": `${d} s`, scale: 1, auth: "SCRAM-SHA-256 everywhere (kvdrive verifiers: 4096 iterations)" },
      rows,
      ratios,
      notes: [
        "pgbench runs as its own process on the same 2 cores; tps is pgbench's own figure; latency percentiles come from its per-transaction log (-l). With -C, latency includes the connection and authentication.",
        "kvdrive cache off is KVDRIVE_CACHE_DISABLED=true; direct Postgres is the embedded Postgres 18 that kvdrive and PgBouncer use as their origin.",
        "The Bun byte relay (bench/scenarios/pooler-floor.ts) copies bytes between each client and its own origin connection with no parsing, pooling or authentication of its own: what Bun's sockets cost per transaction when every transaction is relayed one to one. kvdrive goes past it with read pipelining (README: Read pipelining): reads of several clients share origin connections and writes, so the proxy makes fewer origin reads and writes than the relay, and Postgres wakes up less often per read (see the CPU split below).",
        "PgBouncer from apt is 1.18, which cannot keep protocol-level prepared statements in transaction mode (that came in 1.21): its -M prepared rows in transaction mode fail with errors and are marked; the session-mode row is what its users fall back to.",
        ...notes,
      ],
    };
  },
};
