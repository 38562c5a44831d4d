// The pooler's side of the query cache: cache statuses counted per pool in stats(), a write that bypasses the
// proxy stays unseen until max_age while one through the proxy invalidates, prepared statements with different
// parameters are different entries, and execute (HTTP /sql) shares the cache.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
let c: pg.Client;
let direct: pg.Client;
const cache = () => f.pooler.stats().pools.find((p) => p.database === "postgres")!.cache;
const delta = async (fn: () => Promise<unknown>) => {
  const before = { ...cache() };
  await fn();
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(cache())) if (v !== (before[k] ?? 0)) out[k] = v - (before[k] ?? 0);
  return out;
};

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2 });
  c = new pg.Client({ connectionString: f.url() });
  await c.connect();
  direct = new pg.Client({ connectionString: f.originUrl });
  await direct.connect();
  await direct.query("create table cpath_t (id int primary key, v text)");
  await direct.query("insert into cpath_t values (1, 'one'), (2, 'two')");
}, 60_000);
afterAll(async () => {
  await c.end();
  await direct.end();
  await f.stop();
}, 60_000);

test("statuses per pool; a write around the proxy is unseen, one through it invalidates", async () => {
  expect(await delta(() => c.query("select v from cpath_t where id = 1"))).toEqual({ miss: 1 });
  expect(await delta(() => c.query("select v from cpath_t where id = 1"))).toEqual({ hit: 1 });
  await direct.query("update cpath_t set v = 'uno' where id = 1");
  expect((await c.query("select v from cpath_t where id = 1")).rows).toEqual([{ v: "one" }]);
  await c.query("update cpath_t set v = 'eins' where id = 1");
  expect(await delta(() => c.query("select v from cpath_t where id = 1"))).toEqual({ miss: 1 });
  expect((await c.query("select v from cpath_t where id = 1")).rows).toEqual([{ v: "eins" }]);
  expect(f.metrics.render()).toContain('kvdrive_pool_cache_total{database="postgres",status="hit"');
});

test("prepared statements: parameters are part of the key; a transaction's writes invalidate at commit", async () => {
  const q = { name: "cpath_get", text: "select v from cpath_t where id = $1", values: [2] };
  expect(await delta(() => c.query(q))).toEqual({ miss: 1 });
  expect(await delta(() => c.query(q))).toEqual({ hit: 1 });
  expect((await c.query({ ...q, values: [1] })).rows).toEqual([{ v: "eins" }]);
  await c.query("begin");
  await c.query("update cpath_t set v = 'zwei' where id = 2");
  await c.query("commit");
  expect((await c.query(q)).rows).toEqual([{ v: "zwei" }]);
});

test("execute (HTTP /sql) shares the cache and reports its status", async () => {
  const run = () => f.pooler.execute({ database: "postgres", user: f.pg.user, statements: [{ sql: "select v from cpath_t where id = $1", params: [2] }], transaction: false });
  expect((await run())[0]!.rows).toEqual([["zwei"]]);
  const second = await run();
  expect(second[0]!.cache).toBe("hit");
  expect(second[0]!.rows).toEqual([["zwei"]]);
  const tx = await f.pooler.execute({ database: "postgres", user: f.pg.user, statements: [{ sql: "select 1" }], transaction: true });
  expect(tx[0]!.cache).toBe("transaction");
});

test("different statements are different entries: simple queries, a prepared statement's parameters, and a fresh connection's", async () => {
  const reads = async () => [
    (await c.query("select v from cpath_t where id = 1")).rows,
    (await c.query("select v from cpath_t where id = 2")).rows,
    (await c.query("select v, 'x' as x from cpath_t where id = 1")).rows,
    (await c.query("select v from cpath_t where id = $1", [2])).rows,
    (await c.query({ name: "cpath_other", text: "select v from cpath_t where id = $1", values: [1] })).rows,
  ];
  const first = await reads();
  expect(first).toEqual([[{ v: "eins" }], [{ v: "zwei" }], [{ v: "eins", x: "x" }], [{ v: "zwei" }], [{ v: "eins" }]]);
  expect(await reads()).toEqual(first); // now every one a hit, each its own
  const fresh = new pg.Client({ connectionString: f.url() });
  await fresh.connect();
  expect((await fresh.query({ name: "cpath_fresh", text: "select v from cpath_t where id = $1", values: [1] })).rows).toEqual([{ v: "eins" }]);
  expect((await fresh.query({ name: "cpath_fresh", text: "select v from cpath_t where id = $1", values: [2] })).rows).toEqual([{ v: "zwei" }]);
  await fresh.end();
});
