// Origin connections are closed after the idle timeout and retired after their max lifetime (injected clock),
// and the admin numbers and Prometheus series follow.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { manualClock } from "../../src/clock.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

const clock = manualClock();
let f: PoolerFixture;
beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 4, poolIdleTimeoutSeconds: 10, poolMaxLifetimeSeconds: 100 }, clock);
}, 60_000);
afterAll(async () => {
  await f.stop();
}, 60_000);

const pool = () => f.pooler.stats().pools.find((p) => p.database === "postgres")!;
/** The janitor runs every second of real time; wait until it has seen the new clock. */
async function until(cond: () => boolean) {
  for (let i = 0; i < 60 && !cond(); i++) await Bun.sleep(100);
  return cond();
}

test("idle connections close after KVDRIVE_POOL_IDLE_TIMEOUT_SECONDS", async () => {
  const c = new pg.Client({ connectionString: f.url() });
  await c.connect();
  await c.query("select 1");
  expect(pool().idleServers).toBe(1);
  clock.advance(5_000);
  await Bun.sleep(1200);
  expect(pool().idleServers).toBe(1);
  clock.advance(6_000);
  expect(await until(() => pool().idleServers === 0)).toBe(true);
  expect((await c.query("select 2 as n")).rows[0].n).toBe(2);
  expect(pool().idleServers).toBe(1);
  await c.end();
});

test("a connection past KVDRIVE_POOL_MAX_LIFETIME_SECONDS is retired when its transaction ends", async () => {
  const c = new pg.Client({ connectionString: f.url() });
  await c.connect();
  await c.query("begin");
  const pid1 = (await c.query("select pg_backend_pid() as p")).rows[0].p;
  clock.advance(101_000);
  await c.query("commit");
  expect(pool().idleServers + pool().activeServers).toBe(0);
  const pid2 = (await c.query("select pg_backend_pid() as p")).rows[0].p;
  expect(pid2).not.toBe(pid1);
  await c.end();
});

test("stats and Prometheus series per pool", async () => {
  const s = pool();
  expect(s).toMatchObject({ database: "postgres", user: f.pg.user, waitingClients: 0 });
  expect(s.queries).toBeGreaterThan(0);
  const text = f.metrics.render();
  expect(text).toContain(`kvdrive_pool_queries_total{database="postgres",user="${f.pg.user}"}`);
  expect(text).toContain("kvdrive_pool_servers_idle{");
  expect(text).toContain("kvdrive_pool_query_duration_seconds_bucket{");
});
