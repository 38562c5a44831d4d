// Experiment: Postgres alone running kvdrive's group-commit statement (batches of N fresh keys) from pgbench.
import fs from "node:fs";
import { startTempPostgres } from "../src/embedded/postgres.ts";
import { migrate } from "../src/storage/schema.ts";
import { SQL } from "bun";

const VALUE = "x".repeat(288);
const pg = await startTempPostgres("kvdrive-bench-");
const sql = new SQL({ url: pg.url, max: 2 });
await migrate(sql);
const ns = "0f3c9a7e1b2d4c6e8f0a1b2c3d4e5f60";
function script(n: number) {
  const tuples = Array.from({ length: n }, (_, i) => `('${ns}', convert_to('pgb-' || :client_id || '-' || :k || '-${i}', 'UTF8'), convert_to('${VALUE}', 'UTF8'), NULL::text, NULL::bigint, (extract(epoch from clock_timestamp()) * 1000000)::bigint, 1, false, NULL::text)`);
  return `\\set k random(1, 2000000000)
INSERT INTO kv_entries AS e (ns, key, value, metadata, expiration, version_ts, version_nonce, tombstone, blob) VALUES ${tuples.join(",")}
  ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, metadata = excluded.metadata, expiration = excluded.expiration,
    version_ts = excluded.version_ts, version_nonce = excluded.version_nonce, tombstone = excluded.tombstone, blob = excluded.blob
  WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)
  RETURNING ns, key;
`;
}
const stat = () => fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number);
const u = new URL(pg.url);
const env = { ...process.env, PGHOST: u.hostname, PGPORT: u.port, PGUSER: decodeURIComponent(u.username), PGPASSWORD: decodeURIComponent(u.password), PGDATABASE: "postgres" };
for (const [n, c] of [[1, 64], [16, 4], [32, 4], [32, 2], [64, 4], [128, 2]] as const) {
  fs.writeFileSync("/tmp/pgfloor/s.sql", script(n));
  await sql`VACUUM ANALYZE kv_entries`.simple();
  await sql`CHECKPOINT`.simple();
  const a = stat();
  const p = Bun.spawn(["pgbench", "-n", "-M", "prepared", "-c", String(c), "-j", "1", "-T", "6", "-f", "/tmp/pgfloor/s.sql"], { env, stdout: "pipe", stderr: "pipe" });
  const out = await new Response(p.stdout).text();
  await p.exited;
  const b = stat();
  const d = b.map((x, i) => x - a[i]!);
  const total = d.reduce((s, x) => s + x, 0);
  const busy = total - d[3]! - d[4]!;
  const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1]);
  const rows = tps * n;
  const busyCores = (busy / total) * 2;
  console.log(`rows/stmt ${n} clients ${c}: ${Math.round(rows)} rows/s, machine ${((busy / total) * 100).toFixed(0)}% busy, ${((busyCores * 1e6) / rows).toFixed(1)} µs machine CPU/row (pgbench included)`);
}
await sql.close();
await pg.destroy();
