// Parameter counts are unsigned 16-bit in Parse and Bind, as Postgres reads them: more than 32,767 parameters
// go through the pooler exactly as they go to Postgres directly, with node-postgres and Postgres.js.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { encodeBind, encodeExecute, encodeParse, encodeStartup, SYNC } from "../../src/protocol/frontend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { errorOf, rawConnect } from "./raw.ts";

let origin: TestPostgres;
let fx: PoolerFixture;
let trust: PoolerFixture;
beforeAll(async () => {
  origin = await startTestPostgres();
  fx = await startPoolerFixture({}, undefined, origin);
  trust = await startPoolerFixture({ pgAuth: "trust" }, undefined, origin);
  const c = new pg.Client({ connectionString: origin.url });
  await c.connect();
  await c.query("create table bounds_params(id int primary key)");
  await c.query("insert into bounds_params select g from generate_series(1, 70000) g");
  await c.query("create table bounds_wide(x int)");
  await c.end();
}, 120_000);
afterAll(async () => {
  await trust?.stop();
  await fx?.stop();
  await origin?.destroy();
}, 60_000);

const ids = (n: number) => Array.from({ length: n }, (_, i) => i * 2 + 1);
const inList = (n: number) => `select count(*)::int as n, sum(id)::bigint as s from bounds_params where id in (${ids(n).map((_, i) => "$" + (i + 1)).join(",")})`;

test("node-postgres: 40,000 parameters, direct and through the pooler, named and unnamed", async () => {
  for (const url of [origin.url, fx.url()]) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const unnamed = await c.query(inList(40_000), ids(40_000));
    expect(unnamed.rows).toEqual([{ n: 35_000, s: String(35_000 * 35_000) }]); // the odd ids up to 70,000
    const named = await c.query({ name: "forty-thousand", text: inList(40_000), values: ids(40_000) });
    expect(named.rows).toEqual(unnamed.rows);
    await c.end();
  }
});

test("Postgres.js: an insert of 60,000 values, and 65,533 parameters (the most postgres.js sends)", async () => {
  for (const url of [origin.url, fx.url()]) {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    await sql`truncate bounds_wide`;
    const rows = Array.from({ length: 60_000 }, (_, i) => ({ x: i }));
    await sql`insert into bounds_wide ${sql(rows, "x")}`;
    expect(await sql`select count(*)::int as n, sum(x)::bigint as s from bounds_wide`).toEqual([{ n: 60_000, s: String((59_999 * 60_000) / 2) }] as never);
    const max = await sql.unsafe(inList(65_533), ids(65_533));
    expect(max).toEqual([{ n: 35_000, s: String(35_000 * 35_000) }] as never);
    await sql.end();
  }
});

test("a raw Parse and Bind with 65,535 parameter types and values get ParseComplete and BindComplete", async () => {
  const r = await rawConnect(trust.pooler.port);
  r.write(encodeStartup({ user: origin.user, database: "postgres" }));
  await r.read((m) => m.type === "Z");
  const n = 65_535;
  const sqlText = `select ${Array.from({ length: n }, (_, i) => "$" + (i + 1)).slice(0, 1).join("")}::int + ${n} - ${n} as one, cardinality(array[${Array.from({ length: n - 1 }, (_, i) => "$" + (i + 2)).join(",")}]::int[]) as rest`;
  r.write(encodeParse({ name: "", query: sqlText, paramTypes: Array(n).fill(23) }));
  r.write(encodeBind({ portal: "", statement: "", paramFormats: [], params: Array.from({ length: n }, (_, i) => new TextEncoder().encode(String(i))), resultFormats: [] }));
  r.write(encodeExecute(""));
  r.write(SYNC);
  const msgs = await r.read((m) => m.type === "Z" || m.type === "E");
  const err = msgs.find((m) => m.type === "E");
  expect(err ? errorOf(err) : null).toBeNull();
  expect(msgs.map((m) => m.type).join("")).toBe("12DCZ");
  r.end();
});
