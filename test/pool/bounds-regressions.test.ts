// Defects the wire fuzzer (test/fuzz/wire.test.ts) found, each replayed deterministically.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { encodeParse, encodeQuery, encodeStartup, SYNC } from "../../src/protocol/frontend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { rawConnect } from "./raw.ts";

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
