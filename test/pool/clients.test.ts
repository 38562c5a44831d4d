// node-pg and postgres.js through the pooler against a real Postgres: prepared statements, transactions,
// errors, pipelining, COPY, cancel, session pinning and parameter replay, with fewer origin connections
// than clients so that clients really move between connections.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { sendCancelRequest } from "./raw.ts";

let f: PoolerFixture;
const opened: Array<{ end(): Promise<unknown> }> = [];
const pgClient = async (poolUrl = f.url()) => {
  const c = new pg.Client({ connectionString: poolUrl });
  await c.connect();
  opened.push(c);
  return c;
};
const pjs = (opts: postgres.Options<{}> = {}) => {
  const sql = postgres(f.url(), { max: 1, onnotice: () => {}, ...opts });
  opened.push({ end: () => sql.end({ timeout: 1 }) });
  return sql;
};

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2 });
  const c = await pgClient();
  await c.query("create table clients_t (id int primary key, v text)");
  await c.query("insert into clients_t select g, 'v' || g from generate_series(1, 100) g");
}, 60_000);

afterAll(async () => {
  for (const c of opened) await c.end().catch(() => {});
  await f.stop();
}, 60_000);

describe("node-postgres", () => {
  test("named prepared statements work from more clients than origin connections", async () => {
    const clients = await Promise.all([1, 2, 3, 4, 5].map(() => pgClient()));
    for (let round = 0; round < 3; round++) {
      const rows = await Promise.all(
        clients.map((c, i) => c.query({ name: "get_v", text: "select v from clients_t where id = $1", values: [i + round + 1] })),
      );
      expect(rows.map((r) => r.rows[0].v)).toEqual(clients.map((_, i) => `v${i + round + 1}`));
    }
    // Two clients may use one name for different statements.
    const [a, b] = clients;
    const ra = await a!.query({ name: "mine", text: "select 1 as one" });
    const rb = await b!.query({ name: "mine", text: "select 'two' as two" });
    expect(ra.rows).toEqual([{ one: 1 }]);
    expect(rb.rows).toEqual([{ two: "two" }]);
  });

  test("a transaction keeps its connection; an error mid-transaction is followed by more work", async () => {
    const c = await pgClient();
    await c.query("begin");
    await c.query("insert into clients_t values (1001, 'tx')");
    await expect(c.query("select 1/0")).rejects.toMatchObject({ code: "22012" });
    await expect(c.query("select 1")).rejects.toMatchObject({ code: "25P02" });
    await c.query("rollback");
    const r = await c.query("select count(*)::int as n from clients_t where id = 1001");
    expect(r.rows[0].n).toBe(0);
    await c.query("begin");
    await c.query("insert into clients_t values (1002, 'tx2')");
    await c.query("commit");
    expect((await c.query("select v from clients_t where id = 1002")).rows[0].v).toBe("tx2");
  });

  test("an error in an extended-protocol query leaves the client usable", async () => {
    const c = await pgClient();
    await expect(c.query("select $1::int", ["not a number"])).rejects.toMatchObject({ code: "22P02" });
    await expect(c.query({ name: "bad", text: "select * from no_such_table" })).rejects.toMatchObject({ code: "42P01" });
    expect((await c.query("select $1::int + 1 as n", [41])).rows[0].n).toBe(42);
  });

  test("a statement whose result type changed after DDL is re-prepared", async () => {
    const c = await pgClient();
    await c.query("create table clients_ddl (a int)");
    await c.query("insert into clients_ddl values (1)");
    const q = { name: "ddl_sel", text: "select * from clients_ddl" };
    expect((await c.query(q)).rows).toEqual([{ a: 1 }]);
    await c.query("alter table clients_ddl add column b int default 7");
    // The origin answers the stale plan with 0A000; the pooler re-prepares and re-runs it, unseen by the client.
    expect((await c.query(q)).rows).toEqual([{ a: 1, b: 7 }]);
    await c.query("alter table clients_ddl drop column a");
    expect((await c.query(q)).rows).toEqual([{ b: 7 }]);
    // Other clients that prepared the same statement earlier get the fresh plan too.
    const d = await pgClient();
    expect((await d.query(q)).rows).toEqual([{ b: 7 }]);
  });

  test("a cancel reaches only the query of the client whose key it carries", async () => {
    const a = await pgClient();
    const b = await pgClient();
    const cancel = (pid: number, key: number) => sendCancelRequest(f.pooler.port, pid, key);
    const pidA = (a as any).processID as number;
    const keyA = (a as any).secretKey as number;
    const pidB = (b as any).processID as number;
    const keyB = (b as any).secretKey as number;
    // a is idle: its cancel must not touch b's running query; nor may a wrong key for b.
    const running = b.query("select pg_sleep(0.5), 'done' as r");
    await Bun.sleep(100);
    await cancel(pidA, keyA);
    await cancel(pidB, keyB ^ 1);
    expect((await running).rows[0].r).toBe("done");
    // The right key cancels b's query, and b goes on.
    const again = b.query("select pg_sleep(30)").catch((e) => e);
    await Bun.sleep(200);
    await cancel(pidB, keyB);
    expect((await again).code).toBe("57014");
    expect((await b.query("select 1 as one")).rows[0].one).toBe(1);
  });

  test("temp tables pin the client: the table survives across transactions", async () => {
    const c = await pgClient();
    await c.query("create temp table clients_tmp (x int)");
    const others = await Promise.all([1, 2, 3].map(() => pgClient()));
    for (let i = 0; i < 5; i++) {
      await c.query("insert into clients_tmp values ($1)", [i]);
      await Promise.all(others.map((o) => o.query("select pg_backend_pid()")));
    }
    expect((await c.query("select count(*)::int as n from clients_tmp")).rows[0].n).toBe(5);
    expect(f.pooler.stats().pools[0]!.pinnedClients).toBeGreaterThanOrEqual(1);
    expect(f.metrics.render()).toContain('kvdrive_pool_pinned_clients_total{database="postgres",reason="temp",user="postgres"}');
    await c.end();
    opened.splice(opened.indexOf(c), 1);
  });

  test("ParameterStatus values are replayed when a client moves to another connection", async () => {
    const a = await pgClient();
    const b = await pgClient();
    await a.query("set timezone to 'America/New_York'");
    await a.query("set statement_timeout to '12s'");
    // b runs on whichever connection is free, likely the one a used: it must see its own settings.
    for (let i = 0; i < 4; i++) {
      const [ra, rb] = await Promise.all([
        a.query("select current_setting('TimeZone') as tz, current_setting('statement_timeout') as st"),
        b.query("select current_setting('TimeZone') as tz, current_setting('statement_timeout') as st"),
      ]);
      expect(ra.rows[0]).toEqual({ tz: "America/New_York", st: "12s" });
      expect(rb.rows[0].tz).not.toBe("America/New_York");
      expect(rb.rows[0].st).toBe("0");
    }
    expect((await a.query("select now()::text as t")).rows[0].t).toMatch(/-0[45]$/);
  });
});

describe("postgres.js", () => {
  test("prepared statements (prepare: true), transactions and pipelining", async () => {
    const sql = pjs();
    const many = await Promise.all(Array.from({ length: 50 }, (_, i) => sql`select ${i + 1}::int as n, v from clients_t where id = ${i + 1}`));
    expect(many.map((r) => r[0]!.n)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    const res = await sql.begin(async (tx) => {
      await tx`insert into clients_t values (2001, 'pjs')`;
      return tx`select v from clients_t where id = 2001`;
    });
    expect(res[0]!.v).toBe("pjs");
    await expect(
      sql.begin(async (tx) => {
        await tx`insert into clients_t values (2002, 'x')`;
        await tx`select 1/0`;
      }),
    ).rejects.toMatchObject({ code: "22012" });
    expect((await sql`select count(*)::int as n from clients_t where id = 2002`)[0]!.n).toBe(0);
  });

  test("several postgres.js clients share two origin connections", async () => {
    const sqls = [1, 2, 3, 4].map(() => pjs());
    const out = await Promise.all(sqls.flatMap((s, i) => [1, 2, 3].map((j) => s`select ${i * 10 + j}::int as n`)));
    expect(out.map((r) => r[0]!.n).sort((x, y) => x - y)).toEqual([1, 2, 3, 11, 12, 13, 21, 22, 23, 31, 32, 33]);
  });

  test("COPY in and out", async () => {
    const sql = pjs();
    await sql`create table clients_copy (a int, b text)`;
    const w = await sql`copy clients_copy from stdin`.writable();
    await new Promise<void>((resolve, reject) => {
      w.on("error", reject);
      w.on("finish", resolve);
      for (let i = 0; i < 1000; i++) w.write(`${i}\trow ${i}\n`);
      w.end();
    });
    expect((await sql`select count(*)::int as n from clients_copy`)[0]!.n).toBe(1000);
    const r = await sql`copy (select a, b from clients_copy order by a limit 3) to stdout`.readable();
    let text = "";
    for await (const chunk of r) text += chunk.toString();
    expect(text).toBe("0\trow 0\n1\trow 1\n2\trow 2\n");
    expect((await sql`select 1 as ok`)[0]!.ok).toBe(1);
  });

  test("a cancelled pg_sleep does not affect the next query", async () => {
    const sql = pjs();
    const q = sql`select pg_sleep(30)`;
    const p = q.execute().then(
      () => null,
      (e) => e,
    );
    await Bun.sleep(300);
    q.cancel();
    const err = await p;
    expect(err?.code).toBe("57014");
    expect((await sql`select 42 as n`)[0]!.n).toBe(42);
  });

  test("LISTEN pins the client and notifications are delivered", async () => {
    const listener = pjs();
    const notifier = pjs();
    const got = new Promise<string>((resolve) => {
      void listener.listen("clients_chan", (payload) => resolve(payload));
    });
    await Bun.sleep(200);
    await notifier.notify("clients_chan", "hello");
    expect(await got).toBe("hello");
  });
});
