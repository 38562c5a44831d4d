// Regressions found by running the drivers' own suites through the pooler (issue 11), each against the real
// driver that found it: fresh Parses, rejected named Parses, per-user origin roles, postgres.js and the query
// cache, and pools for databases that do not exist.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { createAdmission } from "../../src/pool/cache/cache-path.ts";

let origin: TestPostgres;
let f: PoolerFixture;
const opened: Array<{ end(): Promise<unknown> }> = [];

const pjs = (url: string, opts: postgres.Options<{}> = {}) => {
  const sql = postgres(url, { max: 1, onnotice: () => {}, ...opts });
  opened.push({ end: () => sql.end({ timeout: 1 }) });
  return sql;
};
const pgClient = async (url: string) => {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  opened.push(c);
  return c;
};
const cacheCounts = (fx: PoolerFixture) => {
  const out: Record<string, number> = {};
  for (const p of fx.pooler.stats().pools) for (const [k, v] of Object.entries(p.cache)) out[k] = (out[k] ?? 0) + v;
  return out;
};

beforeAll(async () => {
  origin = await startTestPostgres();
  const admin = postgres(origin.url, { max: 1, onnotice: () => {} });
  await admin.unsafe("create role drv_app login password 'drv-app-pass' nosuperuser nocreatedb nocreaterole");
  await admin.unsafe("grant create on schema public to drv_app");
  await admin.end();
  f = await startPoolerFixture({ poolSize: 1, pgUsers: [`${origin.user}=${origin.password}`, "drv_app=drv-app-pass"] }, undefined, origin);
}, 60_000);

afterAll(async () => {
  for (const c of opened) await c.end().catch(() => {});
  await f?.stop();
  await origin?.destroy();
}, 60_000);

describe("a fresh Parse is answered by the origin (issue 11 item 2)", () => {
  test("postgres.js, max 1, pool of 1: B's statement is not A's plan for another table of the same name", async () => {
    const a = pjs(f.url());
    await a`create table fresh_t (x int)`;
    await a`insert into fresh_t values (1)`;
    expect(await a`select x from fresh_t`).toEqual([{ x: 1 }] as never);
    await a`drop table fresh_t`;
    const b = pjs(f.url());
    await b`create table fresh_t (x text)`;
    await b`insert into fresh_t values ('one')`;
    expect(await b`select x from fresh_t`).toEqual([{ x: "one" }] as never);
    await b`drop table fresh_t`;
  });

  test("postgres.js: altering a column's type after a parameterised insert is retried by the driver and succeeds", async () => {
    const sql = pjs(f.url());
    await sql`create table alter_t (x text)`;
    await sql`insert into alter_t values (${"1"})`;
    await sql`alter table alter_t alter column x type int using x::int`;
    // The driver's statement now fails with 42804 (text into an int column); postgres.js prepares it afresh.
    await sql`insert into alter_t values (${"2"})`;
    expect((await sql`select x from alter_t order by x`).map((r) => r.x)).toEqual([1, 2]);
    await sql`drop table alter_t`;
  });
});

describe("a named Parse the origin rejects (issue 11 item 3)", () => {
  const bad = { name: "bad-stmt", text: "SELECT $1::nonexistent_type_xyz", values: [1] };
  async function twice(url: string) {
    const c = await pgClient(url);
    const errs: string[] = [];
    for (let i = 0; i < 2; i++) await c.query(bad).then(() => errs.push("ok"), (e) => errs.push(e.code ?? e.message));
    // Postgres never created the name, so the driver may use it for another statement.
    const after = (await c.query({ name: "bad-stmt", text: "SELECT $1::int AS n", values: [1] })).rows[0].n;
    await c.end();
    return { errs, after };
  }
  test("node-postgres: the same error twice, as direct, and the client stays usable", async () => {
    const direct = await twice(origin.url);
    expect(direct).toEqual({ errs: ["42704", "42704"], after: 1 });
    expect(await twice(f.url())).toEqual(direct);
  });
  test("postgres.js: a rejected statement, then the same text fixed by its table, then both work", async () => {
    const sql = pjs(f.url());
    await expect(sql`select * from parse_missing_t where id = ${1}`).rejects.toMatchObject({ code: "42P01" });
    await sql`create table parse_missing_t (id int)`;
    expect(await sql`select * from parse_missing_t where id = ${1}`).toEqual([] as never);
    await sql`drop table parse_missing_t`;
  });
});

describe("each client runs as its own role on the origin (issue 11 item 5)", () => {
  test("a non-superuser logged in through the pooler is that role, and cannot do superuser things", async () => {
    const sql = pjs(f.url("postgres", "drv_app", "drv-app-pass"));
    expect(await sql`select current_user as c, session_user as s, (select rolsuper from pg_roles where rolname = current_user) as su`).toEqual([{ c: "drv_app", s: "drv_app", su: false }] as never);
    await expect(sql`create role drv_evil superuser`).rejects.toMatchObject({ code: "42501" });
    await expect(sql.unsafe("select pg_read_file('PG_VERSION')")).rejects.toMatchObject({ code: "42501" });
    const admin = pjs(f.url());
    expect(await admin`select current_user as c`).toEqual([{ c: origin.user }] as never);
    const pools = f.pooler.stats().pools.map((p) => p.user).sort();
    expect(pools).toContain("drv_app");
  });
  test("a role without a password in KVDRIVE_PG_USERS cannot log in", async () => {
    await expect(pgClient(f.url("postgres", "drv_nobody", "x"))).rejects.toMatchObject({ code: "28P01" });
  });
});

describe("the query cache serves postgres.js prepared reads (issue 11 item 7)", () => {
  test("max 1, default prepared statements: the second read is a hit, even when the origin changed behind the pooler", async () => {
    const setup = pjs(origin.url);
    await setup`create table pjs_cached_t (id int primary key, v text)`;
    await setup`insert into pjs_cached_t values (1, 'before')`;
    const sql = pjs(f.url());
    expect(await sql`select v from pjs_cached_t where id = ${1}`).toEqual([{ v: "before" }] as never);
    await setup`update pjs_cached_t set v = 'after' where id = 1`;
    const before = cacheCounts(f).hit ?? 0;
    expect(await sql`select v from pjs_cached_t where id = ${1}`).toEqual([{ v: "before" }] as never);
    expect((cacheCounts(f).hit ?? 0) - before).toBe(1);
    expect(await setup`select v from pjs_cached_t where id = 1`).toEqual([{ v: "after" }] as never);
  });
});

describe("pools are bounded (issue 10 item 11)", () => {
  test("failed logins to databases that do not exist leave no pool behind", async () => {
    const t = await startPoolerFixture({ pgAuth: "trust" }, undefined, origin);
    try {
      for (let i = 0; i < 60; i++) {
        await expect(pgClient(t.url(`nodb_${i}`))).rejects.toMatchObject({ code: "3D000" });
      }
      const c = await pgClient(t.url());
      expect((await c.query("select 1 as one")).rows[0].one).toBe(1);
      await c.end();
      expect(t.pooler.stats().pools.map((p) => p.database)).toEqual(["postgres"]);
    } finally {
      await t.stop();
    }
  });
});

describe("admission of misses into the query cache (issue 11 item 8)", () => {
  test("every miss is recorded while reads hit; in a scan of keys read once, only a key seen twice is", () => {
    const a = createAdmission({ window: 100, minHitRatio: 0.1, slots: 1024 });
    // Warm: hits and misses mixed, a third of them hits.
    for (let i = 0; i < 300; i++) {
      if (i % 3 === 0) a.hit();
      else expect(a.admit(`warm-${i}`)).toBe(true);
    }
    // A scan: every key new. Once hits fall under a tenth, a key is recorded only when it comes back.
    const admitted = Array.from({ length: 2000 }, (_, i) => a.admit(`scan-${i}`));
    expect(admitted.slice(-1000).filter(Boolean).length).toBe(0);
    expect(a.admit("scan-1999")).toBe(true);
    // Hits come back: every miss is recorded again.
    for (let i = 0; i < 400; i++) a.hit();
    expect(a.admit("after-the-scan")).toBe(true);
  });
});
