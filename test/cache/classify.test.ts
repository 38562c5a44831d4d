import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { classify, memoSize } from "../../src/pool/cache/classify.ts";
import { parserReady } from "../../src/pool/cache/parser.ts";

await parserReady();

const cases: Array<[string, Partial<ReturnType<typeof classify>>]> = [
  ["SELECT a FROM t WHERE id = $1", { cacheable: true, status: "miss", readTables: ["t"], writeTables: [] }],
  ["select * from public.Users u join orders o on o.uid = u.id", { cacheable: true, readTables: ["users", "orders"] }],
  ["VALUES (1), (2)", { cacheable: true }],
  ["TABLE t", { cacheable: true, readTables: ["t"] }],
  ["WITH x AS (SELECT * FROM t) SELECT * FROM x", { cacheable: true, readTables: ["t"] }],
  ["WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", { cacheable: false, status: "uncacheable", writeTables: ["t"] }],
  ["SELECT * FROM t FOR UPDATE", { cacheable: false, status: "uncacheable" }],
  ["SELECT * FROM t FOR SHARE", { cacheable: false, status: "uncacheable" }],
  ["SELECT * INTO z FROM t", { cacheable: false, writeTables: ["z"] }],
  ["SELECT now()", { cacheable: false, status: "volatile" }],
  ["SELECT current_timestamp", { cacheable: false, status: "volatile" }],
  ["SELECT random() FROM t", { cacheable: false, status: "volatile" }],
  ["SELECT lower(name) FROM t", { cacheable: true, functions: ["lower"] }],
  ["SELECT * FROM pg_catalog.pg_class", { cacheable: false, status: "uncacheable" }],
  ["SELECT * FROM pg_stat_activity", { cacheable: false, status: "uncacheable" }],
  ["SELECT * FROM information_schema.tables", { cacheable: false, status: "uncacheable" }],
  ["SELECT * FROM pg_temp.scratch", { cacheable: false, status: "uncacheable" }],
  ["SELECT 1; SELECT 2", { cacheable: false, status: "multiplestatements", statements: 2 }],
  ["INSERT INTO t VALUES (1)", { cacheable: false, writeTables: ["t"] }],
  ["UPDATE s.t SET a = 1", { writeTables: ["t"] }],
  ["DELETE FROM t USING u WHERE t.id = u.id", { writeTables: ["t"] }],
  ["MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", { writeTables: ["t"] }],
  ["TRUNCATE a, b", { writeTables: ["a", "b"] }],
  ["COPY t FROM STDIN", { writeTables: ["t"] }],
  ["COPY t TO STDOUT", { writeTables: [], cacheable: false }],
  ["ALTER TABLE t ADD COLUMN c int", { writeTables: ["t"] }],
  ["DROP TABLE a, s.b", { writeTables: ["a", "b"] }],
  ["CREATE INDEX ON t (a)", { writeTables: [] }],
  ["DO $$ BEGIN PERFORM 1; END $$", { writeTables: ["*"] }],
  ["CALL p()", { writeTables: ["*"] }],
  ["BEGIN", { txn: "begin", cacheable: false }],
  ["START TRANSACTION ISOLATION LEVEL SERIALIZABLE", { txn: "begin" }],
  ["COMMIT", { txn: "commit" }],
  ["END", { txn: "commit" }],
  ["ROLLBACK", { txn: "rollback" }],
  ["LISTEN ch", { pin: "listen" }],
  ["SELECT pg_advisory_lock(1)", { pin: "advisory", cacheable: false }],
  ["SELECT pg_advisory_xact_lock(1)", { pin: undefined }],
  ["CREATE TEMP TABLE x (a int)", { pin: "temp" }],
  ["CREATE TEMPORARY TABLE x AS SELECT 1", { pin: "temp" }],
  ["DECLARE c CURSOR WITH HOLD FOR SELECT 1", { pin: "holdcursor" }],
  ["DECLARE c CURSOR FOR SELECT 1", { pin: undefined }],
  ["PREPARE p AS SELECT 1", { pin: "prepare" }],
  ["SET search_path = x", { cacheable: false, writeTables: [] }],
  ["SELEC oops", { cacheable: false, status: "uncacheable", writeTables: ["*"] }],
];

for (const [sql, expected] of cases) {
  test(sql, () => {
    const c = classify(sql);
    for (const [k, v] of Object.entries(expected)) {
      if (Array.isArray(v)) expect([...(c as any)[k]].sort()).toEqual([...v].sort());
      else expect((c as any)[k]).toEqual(v);
    }
  });
}

test("memoized: the same text returns the same object", () => {
  expect(classify("SELECT a FROM memo_t")).toBe(classify("SELECT a FROM memo_t"));
});

test("the memo is bounded in bytes and keeps what is used (LRU, not first in, first out)", () => {
  const kept = classify("SELECT a FROM memo_kept");
  const early = classify("SELECT a FROM memo_early");
  const pad = "x".repeat(15_000);
  for (let i = 0; i < 400; i++) {
    classify(`SELECT ${i} /* ${pad} */`);
    if (i % 10 === 0) expect(classify("SELECT a FROM memo_kept")).toBe(kept);
  }
  expect(memoSize().bytes).toBeLessThanOrEqual(8 * 1024 * 1024);
  expect(classify("SELECT a FROM memo_kept")).toBe(kept);
  expect(classify("SELECT a FROM memo_early")).not.toBe(early);
});

test("a statement and a parse tree larger than the parser's first 1 MiB buffer are read whole (it grows), and errors still come back", () => {
  // 2.4 MB of SQL: an INSERT of 20,000 rows, whose parse tree is many times its size.
  const rows = Array.from({ length: 20_000 }, (_, i) => `(${i}, 'name-${i}-${"x".repeat(90)}')`).join(",");
  const c = classify(`INSERT INTO big_insert (id, name) VALUES ${rows}`);
  expect(c).toMatchObject({ cacheable: false, writeTables: ["big_insert"], statements: 1 });
  const r = classify(`SELECT count(*) FROM big_read WHERE name IN (${Array.from({ length: 30_000 }, (_, i) => `'n${i}'`).join(",")})`);
  expect(r).toMatchObject({ cacheable: true, readTables: ["big_read"] });
  // After the large ones, a small statement and a syntax error answer as before.
  expect(classify("SELECT a FROM after_big")).toMatchObject({ cacheable: true, readTables: ["after_big"] });
  expect(classify("SELEC a FROM after_big")).toMatchObject({ cacheable: false, status: "uncacheable", writeTables: ["*"] });
});
