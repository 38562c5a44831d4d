// The pooler as part of a whole kvdrive: started with it, reachable with the connection string it prints,
// stopped first on shutdown.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, type TestServer } from "../helpers/server.ts";

let origin: TestPostgres;
let kvd: TestServer;
beforeAll(async () => {
  origin = await startTestPostgres();
  kvd = await startTestServer(origin.url);
}, 60_000);
afterAll(async () => {
  await kvd.destroy();
  await origin.destroy();
}, 60_000);

test("the printed connection string reaches the origin through the pooler", async () => {
  expect(kvd.pgPort).toBeGreaterThan(0);
  expect(kvd.pgUrl).toContain(`:${kvd.pgPort}/`);
  const c = new pg.Client({ connectionString: kvd.pgUrl });
  await c.connect();
  const r = await c.query("select current_database() as db, inet_server_port() as port");
  expect(r.rows[0]).toEqual({ db: "postgres", port: origin.port });
  await c.end();
  expect(kvd.pooler.stats().pools.length).toBe(1);
  expect(kvd.metrics.render()).toContain("kvdrive_pool_servers_idle");
});

test("stop closes the listener", async () => {
  const other = await startTestServer(origin.url);
  const url = other.pgUrl;
  await other.destroy();
  const err = await new pg.Client({ connectionString: url }).connect().catch((e) => e);
  expect(err).toBeInstanceOf(Error);
});
