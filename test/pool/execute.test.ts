// pooler.execute (the API behind HTTP /sql): text results, parameters, transactions, errors with SQLSTATE,
// on the same pools as wire clients.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { PoolerError } from "../../src/errors.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
const req = (statements: Array<{ sql: string; params?: unknown[] }>, transaction = false) => ({ database: "postgres", user: f.pg.user, statements, transaction });

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2 });
  await f.pooler.execute(req([{ sql: "create table exec_t (id int primary key, v text, j jsonb)" }]));
}, 60_000);
afterAll(async () => {
  await f.stop();
}, 60_000);

test("a select with parameters returns text rows and field types", async () => {
  const [r] = await f.pooler.execute(req([{ sql: "select $1::int + 1 as n, $2::text as s, null::text as z, $3::jsonb as j", params: [41, "hi", { a: 1 }] }]));
  expect(r).toEqual({
    command: "SELECT",
    rowCount: 1,
    fields: [
      { name: "n", dataTypeID: 23 },
      { name: "s", dataTypeID: 25 },
      { name: "z", dataTypeID: 25 },
      { name: "j", dataTypeID: 3802 },
    ],
    rows: [["42", "hi", null, '{"a": 1}']],
    cache: expect.any(String),
  });
});

test("writes report their command and row count", async () => {
  const [ins] = await f.pooler.execute(req([{ sql: "insert into exec_t values ($1, $2), ($3, $4)", params: [1, "a", 2, "b"] }]));
  expect(ins).toMatchObject({ command: "INSERT", rowCount: 2, fields: [], rows: [] });
  const [upd] = await f.pooler.execute(req([{ sql: "update exec_t set v = v || '!' where id > $1", params: [0] }]));
  expect(upd).toMatchObject({ command: "UPDATE", rowCount: 2 });
});

test("an array in a transaction is all or nothing", async () => {
  const err = await f.pooler
    .execute(req([{ sql: "insert into exec_t values (10, 'x')" }, { sql: "insert into exec_t values (10, 'dup')" }], true))
    .catch((e) => e);
  expect(err).toBeInstanceOf(PoolerError);
  expect(err.code).toBe("23505");
  const [r] = await f.pooler.execute(req([{ sql: "select count(*) from exec_t where id = 10" }]));
  expect(r!.rows).toEqual([["0"]]);
  const ok = await f.pooler.execute(req([{ sql: "insert into exec_t values (11, 'y')" }, { sql: "select v from exec_t where id = 11" }], true));
  expect(ok.map((x) => x.command)).toEqual(["INSERT", "SELECT"]);
  expect(ok[1]!.rows).toEqual([["y"]]);
});

test("errors carry the origin's SQLSTATE and message; the pool stays healthy", async () => {
  const e = await f.pooler.execute(req([{ sql: "select * from exec_no_such_table" }])).catch((x) => x);
  expect(e).toMatchObject({ code: "42P01" });
  expect(e.message).toContain("exec_no_such_table");
  const e2 = await f.pooler.execute({ ...req([{ sql: "select 1" }]), database: "exec_no_such_db" }).catch((x) => x);
  expect(e2).toMatchObject({ code: "3D000" });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => f.pooler.execute(req([{ sql: "select $1::int as i", params: [i] }]))));
  expect(results.map((r) => Number(r[0]!.rows[0]![0]))).toEqual(Array.from({ length: 20 }, (_, i) => i));
});

test("execute does not see a wire client's session settings", async () => {
  const c = new pg.Client({ connectionString: f.url() });
  await c.connect();
  await c.query("set timezone to 'Asia/Tokyo'");
  for (let i = 0; i < 3; i++) {
    const [r] = await f.pooler.execute(req([{ sql: "select current_setting('TimeZone')" }]));
    expect(r!.rows[0]![0]).not.toBe("Asia/Tokyo");
    expect((await c.query("select current_setting('TimeZone') as tz")).rows[0].tz).toBe("Asia/Tokyo");
  }
  await c.end();
});
