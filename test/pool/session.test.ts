// Which statements pin a client to its origin connection, and which SETs are replayed: pure checks.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { sessionEffect } from "../../src/pool/session.ts";
import { readStartupParams } from "../../src/pool/startup.ts";

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

test("session SETs are recorded for replay; RESET and DISCARD undo them", () => {
  expect(sessionEffect("SET statement_timeout = '5s'").set).toEqual({ name: "statement_timeout", sql: "SET statement_timeout = '5s'" });
  expect(sessionEffect("set session work_mem to '64MB';").set).toEqual({ name: "work_mem", sql: "set session work_mem to '64MB'" });
  expect(sessionEffect("set local work_mem to '64MB'").set).toBeUndefined();
  expect(sessionEffect("set work_mem = 1; select 1")).toEqual({ pin: "set" });
  expect(sessionEffect("RESET work_mem").reset).toBe("work_mem");
  expect(sessionEffect("reset all").reset).toBe("");
  expect(sessionEffect("DISCARD ALL")).toEqual({ forgetsStatements: true, reset: "" });
  expect(sessionEffect("deallocate all").forgetsStatements).toBe(true);
});

test("start-up parameters: reported ones replayed, others as SETs, options parsed, replication refused", () => {
  const s = readStartupParams({ user: "u", application_name: "x".repeat(70), TimeZone: "UTC", statement_timeout: "5s", options: "-c search_path=a,b --work-mem=64MB -c x.y=it\\'s", "_pq_.opt": "1" });
  expect(s.user).toBe("u");
  expect(s.database).toBe("u");
  expect(Object.fromEntries(s.params)).toEqual({ application_name: "x".repeat(63), TimeZone: "UTC", search_path: "a,b" });
  expect(Object.fromEntries(s.sets)).toEqual({ statement_timeout: `SET "statement_timeout" TO '5s'`, work_mem: `SET "work_mem" TO '64MB'`, "x.y": `SET "x.y" TO 'it''s'` });
  expect(s.unsupported).toEqual(["_pq_.opt"]);
  expect(() => readStartupParams({ user: "u", replication: "database" })).toThrow("replication");
  expect(() => readStartupParams({ database: "d" })).toThrow("no PostgreSQL user name");
});
