// Defects the wire fuzzer (test/fuzz/wire.test.ts) found, each replayed deterministically.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { encodeBind, encodeParse, encodeQuery, encodeStartup, SYNC } from "../../src/protocol/frontend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { errorOf, rawConnect } from "./raw.ts";

let origin: TestPostgres;
let fx: PoolerFixture;
beforeAll(async () => {
  origin = await startTestPostgres();
  fx = await startPoolerFixture({ poolSize: 1, poolPipelineDepth: 0, pgAuth: "trust" }, undefined, origin);
}, 120_000);
afterAll(async () => {
  await fx?.stop();
  await origin?.destroy();
}, 60_000);

test("a DEALLOCATE ALL that never runs (only parsed, or in a failed transaction) does not break other clients' statements", async () => {
  const a = new pg.Client({ connectionString: fx.url() });
  await a.connect();
  expect((await a.query({ name: "mine", text: "select $1::int + 1 as n", values: [1] })).rows).toEqual([{ n: 2 }]);
  const b = await rawConnect(fx.pooler.port);
  b.write(encodeStartup({ user: origin.user, database: "postgres" }));
  await b.read((m) => m.type === "Z");
  // Parsed, never bound or executed: the origin keeps every statement.
  b.write(Buffer.concat([encodeParse({ name: "", query: "deallocate all", paramTypes: [] }), SYNC]));
  await b.read((m) => m.type === "Z");
  // Sent in a failed transaction: refused by the origin, which keeps every statement.
  b.write(encodeQuery("begin; select 1/0"));
  await b.read((m) => m.type === "Z");
  b.write(encodeQuery("deallocate all"));
  await b.read((m) => m.type === "Z");
  b.write(encodeQuery("rollback"));
  await b.read((m) => m.type === "Z");
  // The client's statement works, prepared again where needed (it used to fail: 42P05 "already exists").
  expect((await a.query({ name: "mine", text: "select $1::int + 1 as n", values: [2] })).rows).toEqual([{ n: 3 }]);
  const fresh = new pg.Client({ connectionString: fx.url() });
  await fresh.connect();
  expect((await fresh.query({ name: "other", text: "select $1::int + 1 as n", values: [4] })).rows).toEqual([{ n: 5 }]);
  // And a DEALLOCATE ALL that runs is followed too.
  b.write(encodeQuery("deallocate all"));
  await b.read((m) => m.type === "Z");
  expect((await a.query({ name: "mine", text: "select $1::int + 1 as n", values: [5] })).rows).toEqual([{ n: 6 }]);
  b.end();
  await fresh.end();
  await a.end();
});

test("after an extended-protocol error the connection stays with its client until its Sync, even if a simple Query came meanwhile", async () => {
  const a = await rawConnect(fx.pooler.port);
  a.write(encodeStartup({ user: origin.user, database: "postgres" }));
  await a.read((m) => m.type === "Z");
  // A Bind that fails, then a Query before any Sync: the origin ignores both until a Sync.
  a.write(encodeBind({ portal: "", statement: "no_such_statement", paramFormats: [], params: [], resultFormats: [] }));
  a.write(encodeQuery("select 1"));
  const err = (await a.read((m) => m.type === "E")).at(-1)!;
  expect(errorOf(err).C).toBe("26000");
  await Bun.sleep(200);
  // Another client on the one-connection pool: it used to get that ignoring connection and hang (or, with
  // extended-protocol calls, an answer without rows).
  const b = new pg.Client({ connectionString: fx.url() });
  const answered = b.connect().then(() => b.query("select 42 as n"));
  await Bun.sleep(300);
  a.write(SYNC);
  expect((await a.read((m) => m.type === "Z")).map((m) => m.type)).toEqual(["Z"]);
  const res = await Promise.race([answered, Bun.sleep(10_000).then(() => null)]);
  expect(res?.rows).toEqual([{ n: 42 }]);
  a.write(encodeQuery("select 'a still works' as s"));
  expect((await a.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("TDCZ");
  a.end();
  await b.end();
});
