import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000);
// Adversarial tests for read pipelining (src/pool/lanes.ts): real clients try to break the isolation between
// clients that share an origin connection: different result shapes, errors, client-side pipelining, slow and
// vanishing readers, DDL that changes a result type, transactions competing with lanes, and cancel requests.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import pg from "pg";
import postgres from "postgres";
import type { Config } from "../../src/config.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { sendCancelRequest } from "./raw.ts";

let f: PoolerFixture;
const fixtures: PoolerFixture[] = [];
const opened: Array<{ end(): Promise<unknown> }> = [];

const TIMEOUT = Symbol("timeout");
/** Resolves with the value, or TIMEOUT when it takes longer than ms (a hang becomes an assertion failure). */
function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([p.finally(() => clearTimeout(timer)), new Promise<typeof TIMEOUT>((r) => (timer = setTimeout(() => r(TIMEOUT), ms)))]);
}

async function fixture(overrides: Partial<Config>): Promise<PoolerFixture> {
  const g = await startPoolerFixture({ queryCacheDisabled: "true", ...overrides }, undefined, f.pg);
  fixtures.push(g);
  return g;
}

async function pgClient(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  c.on("error", () => {});
  await c.connect();
  opened.push({ end: () => within(c.end(), 2000) });
  return c;
}

function pjs(url: string, o: Record<string, unknown> = {}) {
  const sql = postgres(url, { max: 1, onnotice: () => {}, ...o });
  opened.push({ end: () => within(sql.end({ timeout: 1 }), 3000) });
  return sql;
}

const pipelined = (g: PoolerFixture) => g.pooler.stats().pools.reduce((n, p) => n + p.pipelined, 0);
const streamOf = (c: pg.Client) => (c as unknown as { connection: { stream: net.Socket } }).connection.stream;
const codeOf = (e: unknown) => (e as { code?: string }).code ?? `(no code: ${(e as Error).message})`;

/** A CancelRequest for a client's backend key, sent to the pooler on its own socket. */
function cancel(port: number, c: pg.Client): Promise<void> {
  const { processID, secretKey } = c as unknown as { processID: number; secretKey: number };
  return sendCancelRequest(port, processID, secretKey);
}

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2, poolPipelineDepth: 4, poolMaxPreparedStatements: 3, queryCacheDisabled: "true" });
  fixtures.push(f);
  const d = new pg.Client({ connectionString: f.originUrl });
  await d.connect();
  await d.query("create table adv_t (id int primary key, v text, n numeric)");
  await d.query("insert into adv_t select g, 'v' || g, g * 1.5 from generate_series(1, 500) g");
  await d.query("create table adv_big (id int primary key, pad text)");
  await d.query("insert into adv_big select g, repeat(chr(97 + g % 26), 1000) from generate_series(1, 20000) g");
  await d.query("create table adv_tx (id int primary key, v int)");
  await d.query("insert into adv_tx select g, 0 from generate_series(1, 100) g");
  await d.query("create table adv_ddl (id int primary key, v text)");
  await d.query("insert into adv_ddl select g, 'd' || g from generate_series(1, 100) g");
  await d.query("analyze");
  await d.end();
}, 60_000);

afterAll(async () => {
  await Promise.all(opened.map((c) => c.end().catch(() => {})));
  for (const g of fixtures.reverse()) await within(g.stop(), 10_000);
}, 60_000);

// Eight statements with different result shapes; each answer is a pure function of the parameter.
const SHAPES: Array<{ text: string; want(id: number): Record<string, unknown>[] }> = [
  { text: "select id, v from adv_t where id = $1", want: (id) => [{ id, v: `v${id}` }] },
  { text: "select v as label, id * 2 as twice from adv_t where id = $1", want: (id) => [{ label: `v${id}`, twice: id * 2 }] },
  { text: "select id::text as txt, (id % 7 = 0) as sev from adv_t where id = $1", want: (id) => [{ txt: String(id), sev: id % 7 === 0 }] },
  { text: "select count(*)::int as c from adv_t where id <= $1", want: (id) => [{ c: id }] },
  {
    text: "select id, v, id + 1 as nxt, 'k' || id as k from adv_t where id between $1 and $1 + 2 order by id",
    want: (id) => [0, 1, 2].map((d) => id + d).filter((x) => x <= 500).map((x) => ({ id: x, v: `v${x}`, nxt: x + 1, k: `k${x}` })),
  },
  { text: "select n from adv_t where id = $1", want: (id) => [{ n: (id * 1.5).toFixed(1) }] },
  { text: "select array[id, id + 1] as arr from adv_t where id = $1", want: (id) => [{ arr: [id, id + 1] }] },
  { text: "select null::text as nothing, id as ident, v from adv_t where id = $1 and id > 0", want: (id) => [{ nothing: null, ident: id, v: `v${id}` }] },
];

describe("isolation between clients sharing lanes", () => {
  test("many clients with different prepared statements (different shapes) on 2 connections, with LRU eviction", async () => {
    const before = pipelined(f);
    const wrong: string[] = [];
    const pgs = await Promise.all(Array.from({ length: 12 }, () => pgClient(f.url())));
    const viaPg = pgs.map(async (c, i) => {
      for (let n = 0; n < 48; n++) {
        const k = (i + n) % SHAPES.length;
        const s = SHAPES[k]!;
        const id = 1 + ((i * 53 + n * 17) % 500);
        const r = await c.query({ name: `shape${k}`, text: s.text, values: [id] });
        const want = s.want(id);
        const names = r.fields.map((x) => x.name);
        if (JSON.stringify(names) !== JSON.stringify(Object.keys(want[0]!))) wrong.push(`pg shape${k}(${id}) columns ${names}`);
        if (JSON.stringify(r.rows) !== JSON.stringify(want)) wrong.push(`pg shape${k}(${id}) ${JSON.stringify(r.rows)} != ${JSON.stringify(want)}`);
      }
    });
    const viaPjs = Array.from({ length: 6 }, (_, i) => {
      const sql = pjs(f.url());
      return (async () => {
        for (let n = 0; n < 48; n++) {
          const k = (i * 3 + n) % SHAPES.length;
          const s = SHAPES[k]!;
          const id = 1 + ((i * 29 + n * 31) % 500);
          const rows = await sql.unsafe(s.text, [id], { prepare: true });
          const want = s.want(id);
          const names = rows.columns.map((x) => x.name);
          if (JSON.stringify(names) !== JSON.stringify(Object.keys(want[0]!))) wrong.push(`postgres.js shape${k}(${id}) columns ${names}`);
          if (JSON.stringify([...rows]) !== JSON.stringify(want)) wrong.push(`postgres.js shape${k}(${id}) ${JSON.stringify([...rows])} != ${JSON.stringify(want)}`);
        }
      })();
    });
    // Simple-protocol reads from yet other clients, on the same lanes.
    const simple = await Promise.all(Array.from({ length: 4 }, () => pgClient(f.url())));
    const viaSimple = simple.map(async (c, i) => {
      for (let n = 0; n < 48; n++) {
        const id = 1 + ((i * 7 + n * 11) % 500);
        const r = await c.query(`select v as simple_v, id from adv_t where id = ${id}`);
        if (JSON.stringify(r.rows) !== JSON.stringify([{ simple_v: `v${id}`, id }])) wrong.push(`simple ${id}: ${JSON.stringify(r.rows)}`);
      }
    });
    const done = await within(Promise.all([...viaPg, ...viaPjs, ...viaSimple]), 30_000);
    expect(done).not.toBe(TIMEOUT);
    expect(wrong).toEqual([]);
    expect(pipelined(f) - before).toBeGreaterThan(400);
    expect(f.pooler.stats().pools[0]!.pipelinedInFlight).toBe(0);
  });

  test("errors (division by zero, a cast error, a missing table) interleaved with successes reach only their own client, with their own SQLSTATE", async () => {
    const before = pipelined(f);
    const clients = await Promise.all(Array.from({ length: 10 }, () => pgClient(f.url())));
    const bad: string[] = [];
    await Promise.all(
      clients.map(async (c, i) => {
        for (let n = 0; n < 30; n++) {
          const kind = (i + n) % 5;
          try {
            if (kind === 0) {
              await c.query({ name: "adv_div", text: "select id / $1::int as q from adv_t where id = 10", values: [0] });
              bad.push("div by zero succeeded");
            } else if (kind === 1) {
              await c.query({ name: "adv_cast", text: "select v from adv_t where id = $1::int", values: ["not-a-number"] });
              bad.push("cast succeeded");
            } else if (kind === 2) {
              await c.query({ name: "adv_missing", text: "select * from adv_no_such_table where id = $1", values: [n] });
              bad.push("missing table succeeded");
            } else {
              const id = 1 + ((i * 13 + n) % 500);
              const r = await c.query({ name: "adv_div", text: "select id / $1::int as q from adv_t where id = 10", values: [kind] });
              const r2 = await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [id] });
              if (r.rows[0]?.q !== Math.trunc(10 / kind)) bad.push(`div ${kind}: ${JSON.stringify(r.rows)}`);
              if (JSON.stringify(r2.rows) !== JSON.stringify([{ id, v: `v${id}` }])) bad.push(`get ${id}: ${JSON.stringify(r2.rows)}`);
            }
          } catch (e) {
            const want = ["22012", "22P02", "42P01"][kind];
            if (codeOf(e) !== want) bad.push(`kind ${kind}: got ${codeOf(e)} ${(e as Error).message}, want ${want}`);
          }
        }
      }),
    );
    expect(bad).toEqual([]);
    expect(pipelined(f) - before).toBeGreaterThan(100);
    // Every client is still usable and in sync.
    for (const [i, c] of clients.entries()) expect((await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [i + 1] })).rows).toEqual([{ id: i + 1, v: `v${i + 1}` }]);
  });

  test("clients that pipeline their own queries (postgres.js, one connection, many queries in flight) get every answer in order", async () => {
    const wrong: string[] = [];
    const work = Array.from({ length: 5 }, (_, i) => {
      const sql = pjs(f.url());
      return (async () => {
        for (let round = 0; round < 4; round++) {
          const ids = Array.from({ length: 25 }, (_, n) => 1 + ((i * 97 + round * 41 + n * 7) % 500));
          const answers = await Promise.all(ids.map((id) => (id % 2 ? sql`select id, v from adv_t where id = ${id}` : sql`select v as w, id from adv_t where id = ${id}`)));
          answers.forEach((rows, n) => {
            const id = ids[n]!;
            const want = id % 2 ? [{ id, v: `v${id}` }] : [{ w: `v${id}`, id }];
            if (JSON.stringify([...rows]) !== JSON.stringify(want)) wrong.push(`${id}: ${JSON.stringify([...rows])}`);
          });
        }
      })();
    });
    const pgs = await Promise.all(Array.from({ length: 4 }, () => pgClient(f.url())));
    const steady = pgs.map(async (c, i) => {
      for (let n = 0; n < 50; n++) {
        const id = 1 + ((i * 11 + n * 3) % 500);
        const r = await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [id] });
        if (r.rows[0]?.id !== id) wrong.push(`pg ${id}: ${JSON.stringify(r.rows)}`);
      }
    });
    const done = await within(Promise.all([...work, ...steady]), 30_000);
    expect(done).not.toBe(TIMEOUT);
    expect(wrong).toEqual([]);
  });
});

describe("transactions next to busy lanes", () => {
  test("a transaction client gets a connection while 16 readers keep 2 lanes busy", async () => {
    const g = await fixture({ poolSize: 2, poolPipelineDepth: 4, poolWaitTimeoutMs: 4000 });
    const readers = await Promise.all(Array.from({ length: 16 }, () => pgClient(g.url())));
    const writers = await Promise.all(Array.from({ length: 2 }, () => pgClient(g.url())));
    const wrong: string[] = [];
    let stop = false;
    const loops = readers.map(async (c, i) => {
      let n = 0;
      while (!stop) {
        const id = 1 + ((i * 31 + n++ * 7) % 500);
        const r = await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [id] });
        if (JSON.stringify(r.rows) !== JSON.stringify([{ id, v: `v${id}` }])) wrong.push(`reader ${id}: ${JSON.stringify(r.rows)}`);
      }
      return n;
    });
    const started = Date.now();
    const txns = writers.map(async (c, w) => {
      const out: string[] = [];
      for (let k = 0; k < 10; k++) {
        const id = 1 + w * 50 + k;
        try {
          await c.query("begin");
          // The same named read the readers pipeline, but inside a transaction: it must see this transaction's write.
          await c.query({ name: "adv_tx_get", text: "select v from adv_tx where id = $1", values: [id] });
          await c.query({ name: "adv_tx_set", text: "update adv_tx set v = v + 1 where id = $1", values: [id] });
          const r = await c.query({ name: "adv_tx_get", text: "select v from adv_tx where id = $1", values: [id] });
          await c.query("commit");
          out.push(r.rows[0]?.v === 1 ? "ok" : `txn saw ${JSON.stringify(r.rows)}`);
        } catch (e) {
          out.push(`txn ${id} failed: ${codeOf(e)} ${(e as Error).message}`);
          await c.query("rollback").catch(() => {});
        }
      }
      return out;
    });
    const results = await within(Promise.all(txns), 25_000);
    const txnMs = Date.now() - started;
    stop = true;
    const counts = await within(Promise.all(loops), 10_000);
    expect(counts).not.toBe(TIMEOUT);
    expect(wrong).toEqual([]);
    expect(results).not.toBe(TIMEOUT);
    expect((results as string[][]).flat().filter((r) => r !== "ok")).toEqual([]);
    // 20 short transactions should not wait for seconds behind trivial reads.
    expect(txnMs).toBeLessThan(4000);
  });
});

describe("large answers, slow and vanishing readers", () => {
  const BIG = { name: "adv_big", text: "select id, pad from adv_big where id <= $1 order by id" };
  const padOf = (id: number) => String.fromCharCode(97 + (id % 26)).repeat(1000);

  async function smallReaders(url: string, count: number) {
    const cs = await Promise.all(Array.from({ length: count }, () => pgClient(url)));
    // Warm the named statement (its first call takes the ordinary path) so later calls go on the lane.
    for (const c of cs) await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [1] });
    return cs;
  }
  const runSmall = (cs: pg.Client[], wrong: string[]) =>
    Promise.all(
      cs.map(async (c, i) => {
        for (let n = 0; n < 5; n++) {
          const id = 2 + i * 10 + n;
          const r = n % 2 ? await c.query(`select id, v from adv_t where id = ${id}`) : await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [id] });
          if (JSON.stringify(r.rows) !== JSON.stringify([{ id, v: `v${id}` }])) wrong.push(`small ${id}: ${JSON.stringify(r.rows)}`);
        }
      }),
    );

  test("a 20 MB answer to a client that stops reading for a while: everyone gets correct answers once it reads again", async () => {
    const g = await fixture({ poolSize: 1, poolPipelineDepth: 4 });
    const slow = await pgClient(g.url());
    await slow.query({ ...BIG, values: [1] });
    await slow.query({ ...BIG, values: [1] });
    const others = await smallReaders(g.url(), 4);
    const before = pipelined(g);
    streamOf(slow).pause();
    const big = slow.query({ ...BIG, values: [20000] });
    await Bun.sleep(100);
    const wrong: string[] = [];
    const small = runSmall(others, wrong);
    await Bun.sleep(1000);
    streamOf(slow).resume();
    const r = await within(big, 20_000);
    expect(r).not.toBe(TIMEOUT);
    const rows = (r as pg.QueryResult).rows;
    expect(rows.length).toBe(20000);
    expect(rows.every((x, i) => x.id === i + 1 && x.pad === padOf(i + 1))).toBe(true);
    expect(await within(small, 20_000)).not.toBe(TIMEOUT);
    expect(wrong).toEqual([]);
    expect(pipelined(g) - before).toBeGreaterThan(10);
  });

  test("a client that vanishes while its 20 MB answer is backed up does not stall the clients behind it", async () => {
    const g = await fixture({ poolSize: 1, poolPipelineDepth: 4 });
    const leaver = await pgClient(g.url());
    await leaver.query({ ...BIG, values: [1] });
    await leaver.query({ ...BIG, values: [1] });
    const others = await smallReaders(g.url(), 4);
    streamOf(leaver).pause();
    const big = leaver.query({ ...BIG, values: [20000] }).catch((e) => e);
    await Bun.sleep(100);
    const wrong: string[] = [];
    const small = runSmall(others, wrong);
    await Bun.sleep(300);
    streamOf(leaver).destroy();
    await big;
    const done = await within(small, 5000);
    if (done === TIMEOUT) console.log("stalled:", JSON.stringify(g.pooler.stats().pools[0]));
    expect(done).not.toBe(TIMEOUT); // the lane must go on after its head client left
    expect(wrong).toEqual([]);
    const fresh = await pgClient(g.url());
    expect(await within(fresh.query("select id, v from adv_t where id = 3").then((x) => x.rows), 5000)).toEqual([{ id: 3, v: "v3" }]);
  });

  test("clients destroyed mid-answer, over and over, while others read on the same lanes", async () => {
    const g = await fixture({ poolSize: 2, poolPipelineDepth: 4 });
    const steady = await smallReaders(g.url(), 6);
    const wrong: string[] = [];
    let stop = false;
    const loops = steady.map(async (c, i) => {
      let n = 0;
      while (!stop) {
        const id = 1 + ((i * 71 + n++ * 13) % 500);
        const r = await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [id] });
        if (JSON.stringify(r.rows) !== JSON.stringify([{ id, v: `v${id}` }])) wrong.push(`${id}: ${JSON.stringify(r.rows)}`);
      }
      return n;
    });
    for (let k = 0; k < 6; k++) {
      const c = new pg.Client({ connectionString: g.url() });
      c.on("error", () => {});
      await c.connect();
      await c.query({ ...BIG, values: [1] });
      await c.query({ ...BIG, values: [1] });
      const p = c.query({ ...BIG, values: [3000 + k * 500] }).catch(() => null);
      await Bun.sleep(5 + k * 3);
      streamOf(c).destroy();
      await p;
    }
    stop = true;
    const counts = await within(Promise.all(loops), 5000);
    if (counts === TIMEOUT) console.log("stalled:", JSON.stringify(g.pooler.stats().pools));
    expect(counts).not.toBe(TIMEOUT);
    expect(wrong).toEqual([]);
    expect((counts as number[]).every((n) => n > 0)).toBe(true);
  });
});

describe("DDL changing a result type under pipelined prepared statements", () => {
  type Row = Record<string, unknown>;
  type Check = (id: number, row: Row | undefined, cols: string[], who: string) => void;
  const pgRound = (cs: pg.Client[], table: string) => (check: Check, times: number) =>
    Promise.all(
      cs.map(async (c, i) => {
        for (let n = 0; n < times; n++) {
          const id = 1 + ((i * 7 + n) % 100);
          try {
            const r = await c.query({ name: `get_${table}`, text: `select * from ${table} where id = $1`, values: [id] });
            check(id, r.rows[0], r.fields.map((x) => x.name), "pg");
          } catch (e) {
            check(id, { error: codeOf(e) }, [], "pg");
          }
        }
      }),
    );
  const pjsRound = (sqls: ReturnType<typeof pjs>[], table: string) => (check: Check, times: number) =>
    Promise.all(
      sqls.map(async (sql, i) => {
        for (let n = 0; n < times; n++) {
          const id = 1 + ((i * 11 + n) % 100);
          try {
            const rows = await sql.unsafe(`select * from ${table} where id = $1`, [id], { prepare: true });
            check(id, rows[0] ? { ...rows[0] } : undefined, rows.columns.map((x) => x.name), "postgres.js");
          } catch (e) {
            check(id, { error: codeOf(e) }, [], "postgres.js");
          }
        }
      }),
    );

  /** Runs the same `select *` through lanes before, across and after two ALTER TABLEs; returns what was wrong. */
  async function ddlScenario(g: PoolerFixture, table: string, round: (check: Check, times: number) => Promise<unknown>) {
    const direct = new pg.Client({ connectionString: g.originUrl });
    await direct.connect();
    await direct.query(`create table ${table} (id int primary key, v text); insert into ${table} select g, 'd' || g from generate_series(1, 100) g`);
    const wrong: string[] = [];
    const before = pipelined(g);
    await round((id, row, cols, who) => {
      if (JSON.stringify(row) !== JSON.stringify({ id, v: `d${id}` })) wrong.push(`${who} before: ${JSON.stringify(row)} ${cols}`);
    }, 10);
    const lanes = pipelined(g) - before;
    await direct.query(`alter table ${table} add column w int default 7`);
    await round((id, row, cols, who) => {
      if (JSON.stringify(row) !== JSON.stringify({ id, v: `d${id}`, w: 7 })) wrong.push(`${who} after add column: ${JSON.stringify(row)} columns ${cols}`);
    }, 10);
    // The type of a column changes while the calls are running: each answer is all old or all new.
    const during = round((id, row, cols, who) => {
      const s = JSON.stringify(row);
      if (s !== JSON.stringify({ id, v: `d${id}`, w: 7 }) && s !== JSON.stringify({ id, v: `d${id}`, w: "w7" })) wrong.push(`${who} during type change: ${s} columns ${cols}`);
    }, 15);
    await Bun.sleep(5);
    await direct.query(`alter table ${table} alter column w type text using 'w' || w`);
    await during;
    await round((id, row, cols, who) => {
      if (JSON.stringify(row) !== JSON.stringify({ id, v: `d${id}`, w: "w7" })) wrong.push(`${who} after type change: ${JSON.stringify(row)} columns ${cols}`);
    }, 5);
    await direct.end();
    return { lanes, wrong: [...new Set(wrong.map((w) => w.replace(/\d+/g, "#")))] };
  }

  test("clients that Describe every call (node-postgres) get the new shape after ALTER TABLE, never an error", async () => {
    const g = await fixture({ poolSize: 2, poolPipelineDepth: 4 });
    const cs = await Promise.all(Array.from({ length: 10 }, () => pgClient(g.url())));
    const r = await ddlScenario(g, "adv_ddl_pg", pgRound(cs, "adv_ddl_pg"));
    expect(r.lanes).toBeGreaterThan(50);
    expect(r.wrong).toEqual([]);
  });

  test("clients that Describe once and then only Bind/Execute (postgres.js) get the new shape after ALTER TABLE", async () => {
    // Straight to Postgres, postgres.js gets 0A000 "cached plan must not change result type" and re-prepares
    // (it retries RevalidateCachedQuery). Through the pooler the call is re-run silently, so the client must
    // not end up decoding rows of the new shape with the old column list.
    const g = await fixture({ poolSize: 2, poolPipelineDepth: 4 });
    const sqls = Array.from({ length: 10 }, () => pjs(g.url()));
    const r = await ddlScenario(g, "adv_ddl_pjs", pjsRound(sqls, "adv_ddl_pjs"));
    expect(r.lanes).toBeGreaterThan(50);
    expect(r.wrong).toEqual([]);
  });
});

describe("cancel requests and pipelined reads", () => {
  const SLOW = { name: "adv_slow", text: "select count(*)::int as c from adv_big a join adv_big b on a.id < b.id where a.id <= $1" };

  test("a cancel for a long read alone on its lane cancels it, and the lane goes on", async () => {
    const g = await fixture({ poolSize: 1, poolPipelineDepth: 8 });
    const c = await pgClient(g.url());
    await c.query({ ...SLOW, values: [1] });
    await c.query({ ...SLOW, values: [1] });
    const before = pipelined(g);
    const t0 = Date.now();
    const p = c.query({ ...SLOW, values: [20000] }).then(
      () => "finished",
      (e) => codeOf(e),
    );
    await Bun.sleep(300);
    expect(pipelined(g) - before).toBe(1);
    await cancel(g.pooler.port, c);
    expect(await within(p, 60_000)).toBe("57014");
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await c.query({ name: "adv_get", text: "select id, v from adv_t where id = $1", values: [5] })).rows).toEqual([{ id: 5, v: "v5" }]);
  });

  test("a cancel for a client whose pipelined read is alone on its lane never cancels the next client's read", async () => {
    // The canceller's short read is alone on the lane, so the pooler forwards its cancel; another client's read
    // arrives right after the pooler took the cancel request. The origin must not kill that other read.
    const g = await fixture({ poolSize: 1, poolPipelineDepth: 8 });
    const QUICK = { name: "adv_quick", text: "select count(*)::int as c from adv_big where id <= $1" };
    const c = await pgClient(g.url());
    const v = await pgClient(g.url());
    for (let i = 0; i < 2; i++) {
      await c.query({ ...QUICK, values: [1] });
      await v.query({ ...SLOW, values: [1] });
    }
    const before = pipelined(g);
    const want = (k: number) => Array.from({ length: k }, (_, i) => 20000 - (i + 1)).reduce((a, b) => a + b, 0);
    const hurt: string[] = [];
    let cancelled = 0;
    for (let k = 0; k < 30; k++) {
      const lim = 1 + (k % 15) * 1000;
      const mine = c.query({ ...QUICK, values: [lim] }).then(
        (r) => (r.rows[0]?.c === lim ? "ok" : `wrong ${JSON.stringify(r.rows)}`),
        (e) => codeOf(e),
      );
      await cancel(g.pooler.port, c); // resolves when the pooler has taken the request and closed the socket
      const theirs = v.query({ ...SLOW, values: [40] }).then(
        (r) => (r.rows[0]?.c === want(40) ? "ok" : `wrong ${JSON.stringify(r.rows)}`),
        (e) => `${codeOf(e)} ${(e as Error).message}`,
      );
      const [a, b] = await Promise.all([mine, theirs]);
      if (a === "57014") cancelled++;
      else if (a !== "ok") hurt.push(`canceller #${k}: ${a}`);
      if (b !== "ok") hurt.push(`other client #${k}: ${b}`);
    }
    expect(pipelined(g) - before).toBeGreaterThanOrEqual(60);
    expect(hurt).toEqual([]);
    console.log(`canceller's own reads cancelled: ${cancelled} of 30`);
  });
});
