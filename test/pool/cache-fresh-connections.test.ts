// Hyperdrive across connections: a Worker opens a new driver connection per request, runs one parameterised
// read and ends. The second request's fresh connection must get the first one's answer from the cache, for
// postgres.js with prepared statements (Parse, Describe, Flush, then Bind, Execute, Sync), postgres.js with
// prepare: false, and node-postgres' unnamed parameterised queries. A row changed on the origin behind the
// pooler's back proves the answer came from the cache; a write through the pooler invalidates it.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { rawConnect } from "./raw.ts";
import { encodeBind, encodeDescribe, encodeExecute, encodeParse, encodeStartup, FLUSH, SYNC } from "../../src/protocol/frontend.ts";

let f: PoolerFixture;
let direct: pg.Client;
const cache = () => f.pooler.stats().pools.find((p) => p.database === "postgres")!.cache;
const hits = () => cache().hit ?? 0;

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 2, queryCacheMaxAge: 60, pgAuth: "trust" }); // trust: the raw protocol case logs in without a password
  direct = new pg.Client({ connectionString: f.originUrl });
  await direct.connect();
  await direct.query("create table fresh_t (id int primary key, v text)");
  await direct.query("insert into fresh_t values (1, 'one'), (2, 'two'), (3, 'three')");
}, 60_000);
afterAll(async () => {
  await direct.end();
  await f.stop();
}, 60_000);

/** One Worker request: a new connection, one read, end. */
type Request = (id: number) => Promise<Array<{ v: string }>>;
const postgresJs =
  (prepare: boolean): Request =>
  async (id) => {
    const sql = postgres(f.url(), { max: 1, prepare });
    try {
      return [...(await sql`select v from fresh_t where id = ${id}`)] as Array<{ v: string }>;
    } finally {
      await sql.end();
    }
  };
const nodePg: Request = async (id) => {
  const c = new pg.Client({ connectionString: f.url() });
  await c.connect();
  try {
    return (await c.query("select v from fresh_t where id = $1", [id])).rows;
  } finally {
    await c.end();
  }
};

async function acrossConnections(request: Request, id: number, name: string) {
  expect(await request(id)).toEqual([{ v: name }]);
  // Changed behind the pooler's back: every fresh connection within max_age still sees the cached answer.
  await direct.query("update fresh_t set v = 'behind' where id = $1", [id]);
  for (let i = 0; i < 3; i++) {
    const before = hits();
    expect(await request(id)).toEqual([{ v: name }]);
    expect(hits()).toBe(before + 1);
  }
  // A write through the pooler invalidates: the next fresh connection reads the origin.
  const w = postgres(f.url(), { max: 1 });
  await w`update fresh_t set v = ${"through"} where id = ${id}`;
  await w.end();
  expect(await request(id)).toEqual([{ v: "through" }]);
  expect(await request(id)).toEqual([{ v: "through" }]);
}

test("postgres.js (max: 1, prepared statements): a fresh connection's first read is a cache hit", async () => {
  await acrossConnections(postgresJs(true), 1, "one");
});

test("postgres.js with prepare: false: a fresh connection's first read is a cache hit", async () => {
  await acrossConnections(postgresJs(false), 2, "two");
});

test("node-postgres unnamed parameterised query: a fresh connection's first read is a cache hit", async () => {
  await acrossConnections(nodePg, 3, "three");
});

test("the hit keeps the row description the client was told, and another parameter is another entry", async () => {
  const read = async (id: number) => {
    const sql = postgres(f.url(), { max: 1 });
    try {
      const r = await sql`select id, v, id * 2 as twice from fresh_t where id = ${id}`;
      return { rows: [...r], columns: r.columns.map((c) => [c.name, c.type]) };
    } finally {
      await sql.end();
    }
  };
  const first = await read(1);
  const before = hits();
  expect(await read(1)).toEqual(first);
  expect(hits()).toBe(before + 1);
  expect(first.columns).toEqual([["id", 23], ["v", 25], ["twice", 23]]);
  expect((await read(2)).rows).toEqual([{ id: 2, v: "through", twice: 4 }]); // changed through the pooler above
});

test("session settings are in the key: a fresh connection with another TimeZone is not served the other's answer", async () => {
  const read = async (tz: string) => {
    const sql = postgres(f.url(), { max: 1, connection: { TimeZone: tz } });
    try {
      return (await sql`select to_char(timestamptz '2020-01-01 12:00:00+00', 'HH24') as h, ${1}::int as one`)[0];
    } finally {
      await sql.end();
    }
  };
  expect(await read("UTC")).toEqual({ h: "12", one: 1 });
  expect(await read("Asia/Tokyo")).toEqual({ h: "21", one: 1 });
  expect(await read("UTC")).toEqual({ h: "12", one: 1 });
});

test("an error on a fresh connection is the origin's, and is not cached", async () => {
  const sql = postgres(f.url(), { max: 1 });
  try {
    const e = await sql`select v from fresh_t where id = ${"x"}`.catch((e) => e);
    expect(e.code).toBe("22P02");
  } finally {
    await sql.end();
  }
  const again = postgres(f.url(), { max: 1 });
  try {
    expect((await again`select v from fresh_t where id = ${"x"}`.catch((e) => e)).code).toBe("22P02");
  } finally {
    await again.end();
  }
});

test("a call that is not Bind, Execute (all rows), Sync after the Parse goes to the origin, cached entry or not", async () => {
  const text = "select v from fresh_t where id <= $1 order by id";
  const viaPostgresJs = async () => {
    const sql = postgres(f.url(), { max: 1 });
    try {
      return [...(await sql.unsafe(text, [3]))];
    } finally {
      await sql.end();
    }
  };
  const rows = await viaPostgresJs();
  const before = hits();
  expect(await viaPostgresJs()).toEqual(rows);
  expect(hits()).toBe(before + 1);
  // The same statement on a fresh raw connection, fetched one row at a time: the origin answers (PortalSuspended).
  const r = await rawConnect(f.pooler.port);
  try {
    r.write(encodeStartup({ user: f.pg.user, database: "postgres" }));
    await r.read((m) => m.type === "Z");
    r.write(Buffer.concat([encodeParse({ name: "s1", query: text, paramTypes: [] }), encodeDescribe({ kind: "S", name: "s1" }), FLUSH]));
    expect((await r.read((m) => m.type === "T")).map((m) => m.type).join("")).toBe("1tT");
    const bind = encodeBind({ portal: "", statement: "s1", paramFormats: [], params: [Buffer.from("3")], resultFormats: [] });
    r.write(Buffer.concat([bind, encodeExecute("", 1), SYNC]));
    expect((await r.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("2DsZ");
    // A Flush between Execute and Sync: given back to the origin too, the whole answer from it.
    r.write(Buffer.concat([bind, encodeExecute(""), FLUSH]));
    expect((await r.read((m) => m.type === "C")).map((m) => m.type).join("")).toBe("2DDDC");
    r.write(SYNC);
    expect((await r.read((m) => m.type === "Z")).map((m) => m.type).join("")).toBe("Z");
    expect(hits()).toBe(before + 1);
  } finally {
    r.end();
  }
});

test("DDL through the pooler drops the cached answer: the next fresh connection's row description and rows are the new ones", async () => {
  await direct.query("create table ddl_t (id int primary key, v text); insert into ddl_t values (1, '5')");
  const read = async () => {
    const sql = postgres(f.url(), { max: 1 });
    try {
      return [...(await sql`select * from ddl_t where id = ${1}`)];
    } finally {
      await sql.end();
    }
  };
  expect(await read()).toEqual([{ id: 1, v: "5" }]);
  const before = hits();
  expect(await read()).toEqual([{ id: 1, v: "5" }]);
  expect(hits()).toBe(before + 1);
  const w = postgres(f.url(), { max: 1 });
  await w.unsafe("alter table ddl_t alter column v type int using v::int");
  await w.end();
  expect(await read()).toEqual([{ id: 1, v: 5 }]);
  expect(await read()).toEqual([{ id: 1, v: 5 }]);
});
