// The server side's one state machine: a pooled origin connection's ServerState changes only through the pool's
// move(), and the pool's lists follow it (Idle in the idle stack; Active, Cancelling and Resetting in use).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { createPool, type Pool } from "../../src/pool/pool.ts";
import { connectOrigin, parseOriginUrl } from "../../src/pool/server/origin.ts";
import { createServer, ServerState, type Server } from "../../src/pool/server/server.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let origin: TestPostgres;
const pools: Pool[] = [];

beforeAll(async () => {
  origin = await startTestPostgres();
});
afterAll(async () => {
  for (const p of pools) p.close();
  await origin?.destroy();
});

function openPool(size = 1) {
  const target = parseOriginUrl(origin.url);
  const clock = manualClock(1_000_000);
  const pool = createPool({
    database: target.database, user: target.user, size, maxWaiting: 10, waitTimeoutMs: 10_000, idleTimeoutMs: 0, maxLifetimeMs: 0, clock,
    open: async () => createServer(await connectOrigin(target, target.database, clock.now)),
  });
  pools.push(pool);
  return pool;
}

const acquire = (pool: Pool) => new Promise<Server>((grant, fail) => pool.acquire({ grant, fail }));

test("acquire, release and close move a connection Active, Idle, Active, Closed", async () => {
  const pool = openPool();
  const s = await acquire(pool);
  expect(s.state).toBe(ServerState.Active);
  expect(pool.stats()).toMatchObject({ activeServers: 1, idleServers: 0 });
  pool.release(s, true);
  expect(s.state).toBe(ServerState.Idle);
  expect(pool.stats()).toMatchObject({ activeServers: 0, idleServers: 1 });
  expect(pool.takeIdle()).toBe(s);
  expect(s.state).toBe(ServerState.Active);
  pool.release(s, false);
  expect(s.state).toBe(ServerState.Closed);
  expect(s.conn.closed).toBe(true);
  expect(pool.stats()).toMatchObject({ activeServers: 0, idleServers: 0 });
});

test("a connection given back with untracked session state is Resetting (in use) until RESET_SQL ran, then Idle", async () => {
  const pool = openPool();
  const s = await acquire(pool);
  s.dirty = "a test";
  pool.release(s, true);
  expect(s.state).toBe(ServerState.Resetting);
  expect(pool.stats()).toMatchObject({ activeServers: 1, idleServers: 0 });
  while (s.state === ServerState.Resetting) await Bun.sleep(5);
  expect(s.state).toBe(ServerState.Idle);
  expect(pool.stats()).toMatchObject({ activeServers: 0, idleServers: 1 });
});

test("a connection with a CancelRequest on its way is Cancelling (in use) until it landed, then given back", async () => {
  const pool = openPool();
  const s = await acquire(pool);
  s.cancelsInFlight = 1;
  pool.release(s, true);
  expect(s.state).toBe(ServerState.Cancelling);
  expect(pool.stats()).toMatchObject({ activeServers: 1, idleServers: 0 });
  // What the pooler does when the cancel was delivered (pooler.ts cancelOrigin).
  s.cancelsInFlight = 0;
  const then = s.afterCancel!;
  s.afterCancel = null;
  then();
  expect(s.state).toBe(ServerState.Idle);
  expect(pool.stats()).toMatchObject({ activeServers: 0, idleServers: 1 });
});

test("a waiter gets a released connection directly: it stays Active; an origin close moves it to Closed", async () => {
  const pool = openPool();
  const a = await acquire(pool);
  const next = acquire(pool);
  pool.release(a, true);
  const b = await next;
  expect(b).toBe(a);
  expect(b.state).toBe(ServerState.Active);
  b.conn.close();
  while (b.state !== ServerState.Closed) await Bun.sleep(5);
  expect(pool.stats()).toMatchObject({ activeServers: 0, idleServers: 0 });
});
