// A cacheable result past the cache's bounds is simply not cached: it streams to its client intact, and the
// origin connection that served it stays (a row over 1 MiB used to break the recorder and drop it).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let origin: TestPostgres;
let fx: PoolerFixture;
beforeAll(async () => {
  origin = await startTestPostgres();
  fx = await startPoolerFixture({ poolSize: 1, poolPipelineDepth: 0 }, undefined, origin);
  const c = new pg.Client({ connectionString: origin.url });
  await c.connect();
  await c.query("create table bounds_big(id int primary key, v text)");
  await c.query("insert into bounds_big values (1, repeat('a', 1500000)), (2, repeat('b', 3000000)), (3, 'small')");
  await c.end();
}, 120_000);
afterAll(async () => {
  await fx?.stop();
  await origin?.destroy();
}, 60_000);

test("rows over 1 MiB through the cache path: intact answers, the same origin connection throughout", async () => {
  const c = new pg.Client({ connectionString: fx.url() });
  await c.connect();
  const pid = (await c.query("select pg_backend_pid() as p")).rows[0].p;
  const sql = postgres(fx.url(), { max: 1, onnotice: () => {} });
  for (let i = 0; i < 6; i++) {
    const simple = await c.query("select id, length(v) as n, v from bounds_big where id = 1");
    expect(simple.rows[0].v.length).toBe(1_500_000);
    const named = await c.query({ name: "big", text: "select id, v from bounds_big where id = $1", values: [2] });
    expect(named.rows[0].v).toBe("b".repeat(3_000_000));
    const unnamed = await c.query("select id, v from bounds_big where id = $1", [1]);
    expect(unnamed.rows[0].v).toBe("a".repeat(1_500_000));
    const [row] = await sql`select id, v from bounds_big where id = ${i % 2 ? 1 : 2}`;
    expect(row!.v.length).toBe(i % 2 ? 1_500_000 : 3_000_000);
    expect((await c.query("select v from bounds_big where id = 3")).rows).toEqual([{ v: "small" }]);
  }
  expect((await c.query("select pg_backend_pid() as p")).rows[0].p).toBe(pid);
  await sql.end();
  await c.end();
});
