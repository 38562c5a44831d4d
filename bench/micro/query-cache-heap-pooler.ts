// The query cache's byte bound against the heap in a real pooler (bun bench/micro/query-cache-heap-pooler.ts): pgbench -M prepared reads of 40,000 distinct accounts (each seen twice: admitted and stored), then
// the pooler process's heap growth against the cache's counted bytes.
import { heapStats } from "bun:jsc";
import { startPoolerFixture } from "../../test/pool/setup.ts";
import { pgbenchInit } from "../lib/pgbench.ts";
const f = await startPoolerFixture({ poolSize: 8, pgAuth: "trust", queryCacheMaxAge: 3600 } as any);
const t = { host: "127.0.0.1", port: f.pg.port, user: f.pg.user, password: f.pg.password, db: "postgres" };
await pgbenchInit(t, 1);
const script = `${process.env.TMPDIR ?? "/tmp"}/query-cache-heap-pooler.sql`;
await Bun.write(script, "\\set aid random(1, 40000)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n");
const run = async (n: number) => {
  const p = Bun.spawn([Bun.which("pgbench") ?? "/usr/lib/postgresql/15/bin/pgbench", "-n", "-c4", "-j2", `-t${n}`, "-Mprepared", "-f", script], { env: { ...process.env, PGHOST: "127.0.0.1", PGPORT: String(f.pooler.port), PGUSER: f.pg.user, PGDATABASE: "postgres", PGPASSWORD: f.pg.password }, stdout: "pipe", stderr: "pipe" });
  const [o, e] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text()]);
  await p.exited;
  return (o + e).split("\n").filter((l) => /tps|failed|error/i.test(l)).join(" | ");
};
console.log(await run(100)); // the statement prepared, pools warm
Bun.gc(true);
const before = heapStats();
console.log(await run(60_000));
Bun.gc(true);
const after = heapStats();
const s = f.pooler.stats().pools.find((p: any) => p.database === "postgres")!;
const cache = (f.pooler as any).cachePath?.cache?.stats?.();
const held = after.heapSize + after.extraMemorySize - before.heapSize - before.extraMemorySize;
console.log("statuses", JSON.stringify(s.cache), "metrics", f.metrics.render().split("\n").filter((l) => /kvdrive_query_cache_(bytes|entries) /.test(l)).join(" "));
console.log(`heap/counted ${(held / (cache?.bytes ?? Number(/kvdrive_query_cache_bytes (\d+)/.exec(f.metrics.render())?.[1]))).toFixed(2)}; heap grew ${held} (GC heap ${after.heapSize - before.heapSize}, extra ${after.extraMemorySize - before.extraMemorySize}), objects ${after.objectCount - before.objectCount}`);
await f.stop();
