// POST /sql and GET /admin/pools on a live server: the same pools and cache as wire clients.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startTestPostgres, type TestPostgres } from "./helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "./helpers/server.ts";

let pg: TestPostgres;
let srv: TestServer;
const sql = async (body: unknown, token = TEST_TOKEN) => {
  const res = await fetch(`${srv.httpUrl}/sql`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
};

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  await sql({ query: "create table sql_t (id int primary key, name text, score float8, ok bool, doc jsonb, big int8)" });
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

test("a parameterised write and read, with typed JSON values", async () => {
  const w = await sql({ query: "insert into sql_t values ($1, $2, $3, $4, $5, $6)", params: [1, "ada", 1.5, true, { k: [1] }, "9007199254740993"] });
  expect(w.status).toBe(200);
  expect(w.body).toMatchObject({ command: "INSERT", rowCount: 1, rows: [] });
  const r = await sql({ query: "select * from sql_t where id = $1", params: [1] });
  expect(r.body.rows).toEqual([{ id: 1, name: "ada", score: 1.5, ok: true, doc: { k: [1] }, big: "9007199254740993" }]);
  expect(r.body.fields.map((f: any) => f.name)).toEqual(["id", "name", "score", "ok", "doc", "big"]);
}, 60_000);

test("a hit after a miss through the cache, invalidated by a write through /sql", async () => {
  const q = { query: "select name from sql_t where id = $1", params: [1] };
  await sql(q);
  expect((await sql(q)).body.cache).toBe("hit");
  await sql({ query: "update sql_t set name = 'grace' where id = 1" });
  const after = await sql(q);
  expect(after.body.cache).toBe("miss");
  expect(after.body.rows).toEqual([{ name: "grace" }]);
}, 60_000);

test("an array runs as one transaction: all or nothing", async () => {
  const ok = await sql([{ query: "insert into sql_t (id, name) values (2, 'two')" }, { query: "select count(*)::int as n from sql_t" }]);
  expect(ok.status).toBe(200);
  expect(ok.body[1].rows).toEqual([{ n: 2 }]);
  const bad = await sql([{ query: "insert into sql_t (id, name) values (3, 'three')" }, { query: "insert into sql_t (id) values (1)" }]);
  expect(bad.status).toBe(400);
  expect(bad.body.errors[0].message).toContain("23505");
  expect((await sql({ query: "select count(*)::int as n from sql_t where id = 3" })).body.rows).toEqual([{ n: 0 }]);
});

test("errors: SQL errors carry the SQLSTATE; malformed bodies are 400; auth is required", async () => {
  const syntax = await sql({ query: "selec 1" });
  expect(syntax.status).toBe(400);
  expect(syntax.body.errors[0].message).toContain("42601");
  expect((await sql("{not json")).status).toBe(400);
  expect((await sql({ params: [] })).status).toBe(400);
  expect((await sql({ query: "select 1", params: "x" })).status).toBe(400);
  expect((await sql([])).status).toBe(400);
  expect((await sql({ query: "select 1" }, "wrong-token-xyz")).status).toBe(403);
});

test("GET /admin/pools shows pools with their counters", async () => {
  const res = await fetch(`${srv.httpUrl}/admin/pools`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
  expect(res.status).toBe(200);
  const body: any = await res.json();
  expect(body.pools.length).toBeGreaterThan(0);
  expect(body.pools[0]).toHaveProperty("cache");
  expect((await fetch(`${srv.httpUrl}/admin/pools`)).status).toBe(401);
});
