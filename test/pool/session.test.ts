// Which statements pin a client to its origin connection, and which SETs are replayed: pure checks.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { quiet, sessionEffect, untracked } from "../../src/pool/session.ts";
import { createSessionTracker } from "../../src/pool/session-tracker.ts";
import { readStartupParams } from "../../src/pool/client/startup.ts";
import { parserReady } from "../../src/pool/cache/parser.ts";

await parserReady();

test("session-only features pin", () => {
  expect(sessionEffect("LISTEN chan").pin).toBe("listen");
  expect(sessionEffect("  -- comment\n listen chan").pin).toBe("listen");
  expect(sessionEffect("select pg_advisory_lock(1)").pin).toBe("advisory");
  expect(sessionEffect("SELECT pg_try_advisory_lock_shared($1)").pin).toBe("advisory");
  expect(sessionEffect("create temp table t (x int)").pin).toBe("temp");
  expect(sessionEffect("CREATE TEMPORARY TABLE t AS SELECT 1").pin).toBe("temp");
  expect(sessionEffect("create global temporary table t (x int)").pin).toBe("temp");
  expect(sessionEffect("select * into temp t from x").pin).toBe("temp");
  expect(sessionEffect("declare c cursor with hold for select 1").pin).toBe("holdcursor");
  expect(sessionEffect("PREPARE p AS select 1").pin).toBe("prepare");
  expect(sessionEffect("set role app").pin).toBe("role");
  expect(sessionEffect("SET SESSION AUTHORIZATION app").pin).toBe("role");
  expect(sessionEffect("create table pg_temp.t (x int)").pin).toBe("temp");
  expect(sessionEffect("create function pg_temp.f() returns int language sql as 'select 1'").pin).toBe("temp");
  expect(sessionEffect("select 1; listen chan").pin).toBe("listen");
});

test("effects that cannot be known mark the connection for a reset; plain reads do not", () => {
  const safe = new Set(["lower", "count", "abs"]);
  for (const sql of [
    "select set_config('role', 'x', false)",
    "select set_config('role', 'x', $1)",
    "select pg_catalog.set_config('a.b', 'x', false)",
    "do $$begin perform set_config('statement_timeout', '1', false); end$$",
    "call p()",
    "select my_function(1)",
    "select public.lower('x')",
    "select setseed(0.5)",
    "set session characteristics as transaction read only",
    "set x.y from current",
    "execute p",
    "select query_to_xml('select 1', false, false, '')",
  ]) expect({ sql, why: untracked(sessionEffect(sql), safe) !== null }).toEqual({ sql, why: true });
  for (const sql of ["select 1", "select lower(name), count(*) from t group by 1", "select set_config('a.b', 'x', true)", "insert into t values (abs(-1))", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"]) {
    expect({ sql, why: untracked(sessionEffect(sql), safe) }).toEqual({ sql, why: null });
    expect(quiet(sessionEffect(sql), safe)).toBe(true);
  }
  // Until the origin's builtins are known, any function call counts as unknown.
  expect(untracked(sessionEffect("select lower('x')"), null)).toBe("function lower");
  expect(sessionEffect("load 'auto_explain'").poison).toBe("LOAD");
});

test("ordinary statements and transaction-scoped features do not pin", () => {
  for (const sql of [
    "select 1",
    "select pg_advisory_xact_lock(1)",
    "select * from temperatures",
    "insert into settings values (1)",
    "begin",
    "declare c cursor for select 1",
    "set local statement_timeout = 5",
    "set transaction isolation level serializable",
    "update holders set x = 1",
  ]) {
    expect({ sql, pin: sessionEffect(sql).pin }).toEqual({ sql, pin: undefined });
  }
});

test("session SETs are rebuilt from the parse tree in any position; RESET and DISCARD undo them", () => {
  expect(sessionEffect("SET statement_timeout = '5s'").ops).toEqual([{ k: "set", name: "statement_timeout", sql: `SET "statement_timeout" TO '5s'` }]);
  expect(sessionEffect("set session work_mem to '64MB';").ops).toEqual([{ k: "set", name: "work_mem", sql: `SET "work_mem" TO '64MB'` }]);
  expect(sessionEffect("/* hi */ -- there\n set search_path = a, \"B\", '$user'").ops).toEqual([{ k: "set", name: "search_path", sql: `SET "search_path" TO 'a', 'B', '$user'` }]);
  expect(sessionEffect("set myapp.x = 'it''s'").ops![0]).toEqual({ k: "set", name: "myapp.x", sql: `SET "myapp.x" TO 'it''s'` });
  expect(sessionEffect("set local work_mem to '64MB'").ops).toBeNull();
  expect(sessionEffect("select 1; set work_mem = 1; commit").ops).toEqual([{ k: "other" }, { k: "set", name: "work_mem", sql: `SET "work_mem" TO '1'` }, { k: "commit", chain: false }]);
  expect(sessionEffect("RESET work_mem").ops).toEqual([{ k: "reset", name: "work_mem" }]);
  expect(sessionEffect("set work_mem to default").ops).toEqual([{ k: "reset", name: "work_mem" }]);
  expect(sessionEffect("reset all").ops).toEqual([{ k: "resetall" }]);
  expect(sessionEffect("DISCARD ALL")).toMatchObject({ forgetsStatements: true, ops: [{ k: "resetall" }] });
  expect(sessionEffect("deallocate all").forgetsStatements).toBe(true);
  expect(sessionEffect("BEGIN;").txOnly).toBe(true);
  expect(sessionEffect("begin; set a.b = 1").txOnly).toBeUndefined();
});

test("the tracker keeps a SET only when its transaction commits", () => {
  const sets = new Map<string, string>();
  const t = createSessionTracker({ sets, reported: () => false, server: () => null, changed() {}, resync() {} });
  const run = (sql: string, completed: number, failed: boolean, status: "I" | "T" | "E") => {
    t.query(sessionEffect(sql).ops ?? [], completed, failed);
    t.ready(status.charCodeAt(0));
  };
  run("set a.x = 1", 1, false, "I");
  expect(sets.get("a.x")).toBe(`SET "a.x" TO '1'`);
  run("begin; set a.y = 1; rollback", 3, false, "I");
  run("select 1; set a.z = 1; select 1/0", 2, true, "I");
  expect([...sets.keys()]).toEqual(["a.x"]);
  run("begin; set a.y = 2", 2, false, "T");
  run("savepoint s; set a.z = 2; rollback to savepoint s; set a.w = 2", 4, false, "T");
  expect(sets.has("a.y")).toBe(false);
  run("commit", 1, false, "I");
  expect([...sets.keys()].sort()).toEqual(["a.w", "a.x", "a.y"]);
  run("begin; set a.v = 1; select 1/0", 2, true, "E");
  run("commit", 1, false, "I");
  expect(sets.has("a.v")).toBe(false);
  run("set a.v = 1; commit; select 1/0", 2, true, "I");
  expect(sets.has("a.v")).toBe(true);
  run("reset all", 1, false, "I");
  expect(sets.size).toBe(0);
});

test("start-up parameters: reported ones replayed, others as SETs, options parsed, replication refused", () => {
  const s = readStartupParams({ user: "u", application_name: "x".repeat(70), TimeZone: "UTC", statement_timeout: "5s", options: "-c search_path=a,b --work-mem=64MB -c x.y=it\\'s", "_pq_.opt": "1" });
  expect(s.user).toBe("u");
  expect(s.database).toBe("u");
  expect(Object.fromEntries(s.params)).toEqual({ application_name: "x".repeat(63), TimeZone: "UTC" });
  const sc = (n: string, v: string) => `SELECT pg_catalog.set_config('${n}', '${v}', false)`;
  expect(Object.fromEntries(s.sets)).toEqual({ statement_timeout: sc("statement_timeout", "5s"), work_mem: sc("work_mem", "64MB"), "x.y": sc("x.y", "it''s"), search_path: sc("search_path", "a,b") });
  expect(s.unsupported).toEqual(["_pq_.opt"]);
  expect(() => readStartupParams({ user: "u", replication: "database" })).toThrow("replication");
  expect(() => readStartupParams({ database: "d" })).toThrow("no PostgreSQL user name");
  // A name is pasted into the replayed SET: only identifier characters pass (42602), and it is quoted anyway.
  expect(() => readStartupParams({ user: "u", 'x" to default; set role "y': "1" })).toThrow("invalid configuration parameter name");
  expect(() => readStartupParams({ user: "u", "a;b": "1" })).toThrow("invalid configuration parameter name");
});
