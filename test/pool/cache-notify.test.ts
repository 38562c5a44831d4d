// Writes that bypass the pooler: a statement-level trigger NOTIFYs the table's name at commit, and the pooler's
// LISTEN connection on that origin database drops what read it (src/pool/server/origin-notify.ts).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { notifiedTables } from "../../src/pool/server/origin-notify.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
let viaPooler: pg.Client;
let direct: pg.Client;

// The trigger README.md documents, as a user would install it.
const TRIGGER_SQL = `
create or replace function kvdrive_invalidate() returns trigger language plpgsql as $$
begin
  perform pg_notify('kvdrive_invalidate', tg_table_schema || '.' || tg_table_name);
  return null;
end $$;
`;

const statuses = () => {
  const out: Record<string, number> = {};
  for (const p of f.pooler.stats().pools) for (const [k, v] of Object.entries(p.cache)) out[k] = (out[k] ?? 0) + v;
  return out;
};

async function until(check: () => Promise<boolean>, ms = 5000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await Bun.sleep(20);
  }
  return false;
}

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2, queryCacheMaxAge: 3600 });
  direct = new pg.Client({ connectionString: f.originUrl });
  await direct.connect();
  await direct.query("create table notified_t (id int primary key, v text); insert into notified_t values (1, 'before')");
  await direct.query("create table unwatched_t (id int primary key, v text); insert into unwatched_t values (1, 'before')");
  await direct.query(TRIGGER_SQL);
  await direct.query("create trigger kvdrive_invalidate after insert or update or delete or truncate on notified_t for each statement execute function kvdrive_invalidate()");
  viaPooler = new pg.Client({ connectionString: f.url() });
  await viaPooler.connect();
}, 60_000);

afterAll(async () => {
  await viaPooler?.end().catch(() => {});
  await direct?.end().catch(() => {});
  await f?.stop();
}, 60_000);

test("a write straight to the origin on a table with the trigger drops the cached reads of that table at commit", async () => {
  const read = () => viaPooler.query("select v from notified_t where id = 1").then((r) => r.rows[0]?.v);
  // The listening connection starts with the first origin connection; wait until a cached read holds.
  expect(await until(async () => (await read()) === "before" && (statuses().hit ?? 0) > 0)).toBe(true);
  await direct.query("begin");
  await direct.query("update notified_t set v = 'after' where id = 1");
  expect(await read()).toBe("before"); // not committed: nothing is heard, the cached answer stands
  await direct.query("commit");
  expect(await until(async () => (await read()) === "after")).toBe(true);
  expect(f.metrics.render()).toMatch(/kvdrive_query_cache_notifications_total \d+/);
});

test("a table without the trigger keeps its cached answer until max_age (the documented limit)", async () => {
  const read = () => viaPooler.query("select v from unwatched_t where id = 1").then((r) => r.rows[0]?.v);
  expect(await read()).toBe("before");
  expect(await read()).toBe("before");
  await direct.query("update unwatched_t set v = 'after' where id = 1");
  await Bun.sleep(300);
  expect(await read()).toBe("before");
});

test("notification payloads: schema-qualified or not, several tables, or everything", () => {
  expect(notifiedTables("public.notified_t")).toEqual(["notified_t"]);
  expect(notifiedTables("A, b.C")).toEqual(["a", "c"]);
  expect(notifiedTables("")).toEqual(["*"]);
  expect(notifiedTables("*")).toEqual(["*"]);
});

test("when the listening connection is lost, the reconnection drops the database's cached results (notifications may have been missed)", async () => {
  const read = () => viaPooler.query("select v from unwatched_t where id = 1").then((r) => r.rows[0]?.v);
  expect(await read()).toBe("before"); // cached, stale: the previous test changed it behind the pooler's back
  const killed = await direct.query("select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'kvdrive cache invalidation'");
  expect(killed.rowCount).toBeGreaterThan(0);
  expect(await until(async () => (await read()) === "after", 15_000)).toBe(true);
});
