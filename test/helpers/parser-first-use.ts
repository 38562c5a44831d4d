// Child process for test/pool/parser-on-first-use.test.ts: a fresh kvdrive whose first SQL arrives either from
// several wire clients at once (mode "wire") or from several HTTP /sql requests at once (mode "http"), after KV
// traffic that must not have started the Postgres parser. Prints one JSON line with what it saw.
import { heapStats } from "bun:jsc";
import pg from "pg";
import postgres from "postgres";
import { parserLoaded } from "../../src/pool/cache/parser.ts";
import { startTestServer, TEST_TOKEN } from "./server.ts";

const [databaseUrl, mode] = process.argv.slice(2) as [string, "wire" | "http"];
const MiB = 1024 * 1024;
const srv = await startTestServer(databaseUrl);
const auth = { authorization: `Bearer ${TEST_TOKEN}` };
const out: Record<string, unknown> = {};
try {
  const base = `${srv.httpUrl}/client/v4/accounts/a/storage/kv/namespaces`;
  const ns = ((await (await fetch(base, { method: "POST", headers: auth, body: JSON.stringify({ title: `parser-${mode}` }) })).json()) as any).result.id;
  await fetch(`${base}/${ns}/values/k`, { method: "PUT", headers: auth, body: "v" });
  out.kvValue = await (await fetch(`${base}/${ns}/values/k`, { headers: auth })).text();
  out.loadedAfterKv = parserLoaded();
  out.extraMiBAfterKv = heapStats().extraMemorySize / MiB;

  if (mode === "wire") {
    // pg queues its query before the login finishes; Postgres.js pipelines two; a third client writes.
    const a = new pg.Client({ connectionString: srv.pgUrl });
    const first = a.connect().then(() => a.query("select 1 + $1::int as n", [1]));
    const b = postgres(srv.pgUrl, { max: 1 });
    const c = new pg.Client({ connectionString: srv.pgUrl });
    const [ra, rb, rc] = await Promise.all([
      first,
      Promise.all([b`select ${"x"}::text as t`, b`select current_user as u`]),
      c.connect().then(() => c.query("create table if not exists parser_first (id int)")).then(() => c.query("insert into parser_first values (1)")),
    ]);
    out.wire = [ra.rows[0].n, rb[0][0].t, rb[1][0].u === decodeURIComponent(new URL(srv.pgUrl).username), rc.command];
    await Promise.all([a.end(), b.end(), c.end()]);
  } else {
    const sql = (query: string, params: unknown[] = []) =>
      fetch(`${srv.httpUrl}/sql`, { method: "POST", headers: auth, body: JSON.stringify({ query, params }) }).then(async (r) => [r.status, ((await r.json()) as any).rows]);
    out.http = await Promise.all([sql("select 1 + $1::int as n", [1]), sql("select $1::text as t", ["x"]), sql("select 2 as n")]);
  }
  out.loadedAfterSql = parserLoaded();
  out.extraMiBAfterSql = heapStats().extraMemorySize / MiB;
} catch (e) {
  out.error = String((e as Error)?.stack ?? e);
}
await srv.destroy();
console.log(JSON.stringify(out));
process.exit(0);
