// Read pipelining (src/pool/lanes.ts): read-only autocommit calls of different clients share origin
// connections. Real clients (node-postgres, postgres.js) against a real Postgres, more clients than origin
// connections, and every answer checked against the parameters that asked for it.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";

let f: PoolerFixture;
const opened: Array<{ end(): Promise<unknown> }> = [];
const pgClient = async (url = f.url()) => {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => {});
  await c.connect();
  opened.push(c);
  return c;
};
const pipelined = () => f.pooler.stats().pools.reduce((n, p) => n + p.pipelined, 0);

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 3, poolPipelineDepth: 4, queryCacheDisabled: "true" });
  const c = await pgClient();
  await c.query("create table lanes_t (id int primary key, v text)");
  await c.query("insert into lanes_t select g, 'v' || g from generate_series(1, 500) g");
  await c.query("create schema lanes_a; create schema lanes_b");
  await c.query("create table lanes_a.which (v text); insert into lanes_a.which values ('a')");
  await c.query("create table lanes_b.which (v text); insert into lanes_b.which values ('b')");
}, 60_000);

afterAll(async () => {
  for (const c of opened) await c.end().catch(() => {});
  await f.stop();
}, 60_000);

describe("read pipelining", () => {
  test("many clients on few connections each get the answer to their own parameters", async () => {
    const before = pipelined();
    const pgs = await Promise.all(Array.from({ length: 8 }, () => pgClient()));
    const pjs = Array.from({ length: 16 }, () => {
      const sql = postgres(f.url(), { max: 1, onnotice: () => {} });
      opened.push({ end: () => sql.end({ timeout: 1 }) });
      return sql;
    });
    const wrong: string[] = [];
    const viaPg = pgs.map(async (c, i) => {
      for (let n = 0; n < 60; n++) {
        const id = 1 + ((i * 61 + n * 7) % 500);
        const r = await c.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [id] });
        if (r.rows.length !== 1 || r.rows[0].id !== id || r.rows[0].v !== `v${id}`) wrong.push(`pg ${id}: ${JSON.stringify(r.rows)}`);
      }
    });
    const viaPjs = pjs.map(async (sql, i) => {
      for (let n = 0; n < 60; n++) {
        const id = 1 + ((i * 31 + n * 13) % 500);
        const rows = await sql`select id, v from lanes_t where id = ${id}`;
        if (rows.length !== 1 || rows[0]!.id !== id || rows[0]!.v !== `v${id}`) wrong.push(`postgres.js ${id}: ${JSON.stringify(rows)}`);
      }
    });
    await Promise.all([...viaPg, ...viaPjs]);
    expect(wrong).toEqual([]);
    // 1,440 calls on 3 connections: most of them went out pipelined with other clients' calls.
    expect(pipelined() - before).toBeGreaterThan(500);
    const s = f.pooler.stats().pools[0]!;
    expect(s.pipelinedInFlight).toBe(0);
    expect(s.lanes).toBe(0); // every lane went back to the pool once nothing was in flight
    const metrics = await f.metrics.render();
    expect(metrics).toMatch(/kvdrive_pool_pipelined_total\{[^}]*\} \d+/);
  });

  test("unnamed parameterised queries (node-postgres without a name) are pipelined too", async () => {
    const before = pipelined();
    const clients = await Promise.all(Array.from({ length: 12 }, () => pgClient()));
    const wrong: string[] = [];
    await Promise.all(
      clients.map(async (c, i) => {
        for (let n = 0; n < 40; n++) {
          const id = 1 + ((i * 37 + n * 5) % 500);
          const r = await c.query("select id, v from lanes_t where id = $1", [id]);
          if (r.rows.length !== 1 || r.rows[0].id !== id || r.rows[0].v !== `v${id}`) wrong.push(`${id}: ${JSON.stringify(r.rows)}`);
        }
      }),
    );
    expect(wrong).toEqual([]);
    expect(pipelined() - before).toBeGreaterThan(240);
  });

  test("simple-protocol reads (a Query of one read-only statement) are pipelined too; other Queries are not", async () => {
    const before = pipelined();
    const clients = await Promise.all(Array.from({ length: 12 }, () => pgClient()));
    const wrong: string[] = [];
    await Promise.all(
      clients.map(async (c, i) => {
        for (let n = 0; n < 30; n++) {
          const id = 1 + ((i * 41 + n * 3) % 500);
          const r = await c.query(`select id, v from lanes_t where id = ${id}`);
          if (r.rows.length !== 1 || r.rows[0].id !== id || r.rows[0].v !== `v${id}`) wrong.push(`${id}: ${JSON.stringify(r.rows)}`);
        }
      }),
    );
    expect(wrong).toEqual([]);
    const reads = pipelined() - before;
    expect(reads).toBeGreaterThan(180);
    // Two statements in one Query, a write, and a transaction block take the ordinary path.
    const c = clients[0]!;
    const multi = (await c.query("select 1 as a; select 2 as b")) as unknown as Array<{ rows: unknown[] }>;
    expect(multi.map((r) => r.rows)).toEqual([[{ a: 1 }], [{ b: 2 }]]);
    await c.query("begin");
    expect((await c.query("select v from lanes_t where id = 9")).rows).toEqual([{ v: "v9" }]);
    await c.query("update lanes_t set v = v where id = 9");
    await c.query("commit");
    expect(pipelined() - before).toBe(reads);
  });

  test("an error in one pipelined call reaches only its client, and the calls after it run", async () => {
    const before = pipelined();
    const clients = await Promise.all(Array.from({ length: 12 }, () => pgClient()));
    const results = await Promise.all(
      clients.map(async (c, i) => {
        const out: string[] = [];
        for (let n = 0; n < 30; n++) {
          const d = (i + n) % 3 === 0 ? 0 : 2;
          try {
            const r = await c.query({ name: "lanes_div", text: "select id / $1::int as q from lanes_t where id = 10", values: [d] });
            out.push(d === 0 ? `unexpected success ${JSON.stringify(r.rows)}` : r.rows[0].q === 5 ? "ok" : `wrong ${JSON.stringify(r.rows)}`);
          } catch (e) {
            const code = (e as { code?: string }).code;
            out.push(d === 0 && code === "22012" ? "ok" : `unexpected error ${code} ${(e as Error).message}`);
          }
        }
        return out;
      }),
    );
    expect(results.flat().filter((r) => r !== "ok")).toEqual([]);
    expect(pipelined() - before).toBeGreaterThan(100);
  });

  test("clients with different session settings never share a lane", async () => {
    const a = await Promise.all(Array.from({ length: 6 }, () => pgClient(f.url() + "?options=-c%20search_path%3Dlanes_a")));
    const b = await Promise.all(Array.from({ length: 6 }, () => pgClient(f.url() + "?options=-c%20search_path%3Dlanes_b")));
    const wrong: string[] = [];
    const run = (c: pg.Client, want: string) =>
      (async () => {
        for (let n = 0; n < 40; n++) {
          const r = await c.query({ name: "lanes_which", text: "select v from which where v is not null" });
          if (r.rows[0]?.v !== want) wrong.push(`${want}: ${JSON.stringify(r.rows)}`);
        }
      })();
    await Promise.all([...a.map((c) => run(c, "a")), ...b.map((c) => run(c, "b"))]);
    expect(wrong).toEqual([]);
  });

  test("a client that leaves with a call in flight does not shift answers to the next client", async () => {
    const steady = await Promise.all(Array.from({ length: 6 }, () => pgClient()));
    const wrong: string[] = [];
    let stop = false;
    const loops = steady.map(async (c, i) => {
      let n = 0;
      while (!stop) {
        const id = 1 + ((i * 83 + n++ * 11) % 500);
        const r = await c.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [id] });
        if (r.rows[0]?.id !== id) wrong.push(`${id}: ${JSON.stringify(r.rows)}`);
      }
      return n;
    });
    for (let k = 0; k < 20; k++) {
      const leaver = new pg.Client({ connectionString: f.url() });
      leaver.on("error", () => {});
      await leaver.connect();
      await leaver.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [1] });
      const p = leaver.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [2] }).catch(() => null);
      (leaver as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
      await p;
    }
    stop = true;
    const counts = await Promise.all(loops);
    expect(wrong).toEqual([]);
    expect(counts.every((n) => n > 0)).toBe(true);
    // The pool is whole afterwards.
    const c = await pgClient();
    expect((await c.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [42] })).rows).toEqual([{ id: 42, v: "v42" }]);
  });

  test("when a lane's origin connection is killed, only calls on it fail, and the pooler goes on", async () => {
    const clients = await Promise.all(Array.from({ length: 10 }, () => pgClient()));
    const direct = new pg.Client({ connectionString: f.originUrl });
    await direct.connect();
    const outcomes: string[] = [];
    let stop = false;
    const loops = clients.map(async (c, i) => {
      let n = 0;
      while (!stop) {
        const id = 1 + ((i * 17 + n++) % 500);
        try {
          const r = await c.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [id] });
          outcomes.push(r.rows[0]?.id === id ? "ok" : `wrong ${id} ${JSON.stringify(r.rows)}`);
        } catch (e) {
          const code = (e as { code?: string }).code ?? "";
          // The origin's FATAL, or the pooler's 08006 for a session whose origin connection went away.
          outcomes.push(/^(57P01|08006|08003)$/.test(code) || /terminat|closed|ended/i.test((e as Error).message) ? "failed-cleanly" : `error ${code} ${(e as Error).message}`);
          return;
        }
      }
    });
    await Bun.sleep(150);
    await direct.query("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() and datname = current_database() and backend_type = 'client backend'");
    await Bun.sleep(150);
    stop = true;
    await Promise.all(loops);
    await direct.end();
    expect(outcomes.filter((o) => o !== "ok" && o !== "failed-cleanly")).toEqual([]);
    expect(outcomes.filter((o) => o === "ok").length).toBeGreaterThan(0);
    const c = await pgClient();
    expect((await c.query({ name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [7] })).rows).toEqual([{ id: 7, v: "v7" }]);
  });
});

describe("read pipelining when the pool has no connection to give", () => {
  test("calls waiting for a lane get the pool's 53300 when the wait times out, and the client goes on", async () => {
    const g = await startPoolerFixture({ poolSize: 1, poolPipelineDepth: 4, poolWaitTimeoutMs: 300, queryCacheDisabled: "true" }, undefined, f.pg);
    const holder = new pg.Client({ connectionString: g.url() });
    const reader = new pg.Client({ connectionString: g.url() });
    try {
      await holder.connect();
      await reader.connect();
      const q = { name: "lanes_get", text: "select id, v from lanes_t where id = $1", values: [3] };
      expect((await reader.query(q)).rows).toEqual([{ id: 3, v: "v3" }]);
      await holder.query("begin");
      await holder.query("select 1"); // the only origin connection is now held by an open transaction
      const failed = await reader.query(q).catch((e) => e);
      expect(failed.code).toBe("53300");
      await holder.query("commit");
      expect((await reader.query(q)).rows).toEqual([{ id: 3, v: "v3" }]);
      expect(g.pooler.stats().pools[0]!.pipelinedInFlight).toBe(0);
    } finally {
      await holder.end().catch(() => {});
      await reader.end().catch(() => {});
      await g.stop();
    }
  });
});
