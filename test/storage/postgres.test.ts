// The Postgres backend: the shared backend contract, plus what is Postgres's own (schema migration).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { SCHEMA_VERSION, migrate } from "../../src/storage/schema.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { backendContract } from "./contract.ts";

let pg: TestPostgres;
let backend: Backend;
beforeAll(async () => {
  pg = await startTestPostgres();
  backend = await openPostgresBackend(pg.url, 4);
}, 60_000);
afterAll(async () => {
  await backend.close();
  await pg.destroy();
}, 60_000);

backendContract("postgres", () => backend);

test("postgres: the schema migrates idempotently, also from several processes at once", async () => {
  const sqls = [0, 1, 2].map(() => new Bun.SQL(pg.url, { max: 1 }));
  await Promise.all(sqls.map((s) => migrate(s)));
  await migrate(sqls[0]!);
  const rows = await sqls[0]!`SELECT version FROM kvdrive_schema`;
  expect(rows.map((r: { version: number }) => r.version)).toEqual([SCHEMA_VERSION]);
  const idx = await sqls[0]!`SELECT indexname FROM pg_indexes WHERE tablename = 'kv_entries' ORDER BY indexname`;
  expect(idx.map((r: { indexname: string }) => r.indexname)).toEqual(["kv_entries_expiration", "kv_entries_pkey", "kv_entries_tombstones"]);
  await Promise.all(sqls.map((s) => s.close()));
});

test("postgres: a second backend on the same database sees the same data", async () => {
  const other = await openPostgresBackend(pg.url, 1);
  await backend.write([{ ns: "shared", key: new Uint8Array([1]), value: new Uint8Array([2]), metadata: null, expiration: null, version: { ts: 5, nonce: 5 }, tombstone: false }]);
  expect((await other.get("shared", new Uint8Array([1])))!.value).toEqual(Buffer.from([2]));
  await other.close();
});

test("postgres: an unreachable database fails to open with the driver's error", async () => {
  const url = new URL(pg.url);
  url.password = "wrong-password";
  await expect(openPostgresBackend(url.toString(), 1)).rejects.toThrow();
});
