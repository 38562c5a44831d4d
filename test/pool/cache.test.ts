// The query cache on the wire: a hit after a miss, invalidation by a write through the proxy, freshness with an
// injected clock, and never a cached answer inside a transaction or for a volatile function.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import postgres from "postgres";
import { manualClock } from "../../src/clock.ts";
import { startPoolerFixture, type PoolerFixture } from "./setup.ts";
import { rawConnect } from "./raw.ts";
import { encodeBind, encodeDescribe, encodeExecute, encodeParse, encodeQuery, encodeStartup, SYNC } from "../../src/protocol/frontend.ts";

let f: PoolerFixture;
let client: pg.Client;
const clock = manualClock();
const statuses = () => {
  const out: Record<string, number> = {};
  for (const p of f.pooler.stats().pools) for (const [k, v] of Object.entries(p.cache)) out[k] = (out[k] ?? 0) + v;
  return out;
};
const delta = async (fn: () => Promise<unknown>) => {
  const before = statuses();
  await fn();
  const after = statuses();
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) if (v - (before[k] ?? 0)) d[k] = v - (before[k] ?? 0);
  return d;
};

beforeAll(async () => {
  f = await startPoolerFixture({ poolSize: 4, queryCacheMaxAge: 60, queryCacheSwr: 15 }, clock);
  client = new pg.Client(f.url());
  await client.connect();
  await client.query("create table cached_t (id int primary key, v text)");
  await client.query("insert into cached_t values (1, 'one')");
  await client.query("create function imm(x int) returns int language sql immutable as 'select x + 1'");
  await client.query("create function vol(x int) returns int language sql volatile as 'select x + 1'");
}, 60_000);
afterAll(async () => {
  await client.end();
  await f.stop();
}, 60_000);

test("a hit after a miss (simple and extended protocol)", async () => {
  expect(await delta(() => client.query("select v from cached_t where id = 1"))).toEqual({ miss: 1 });
  expect(await delta(() => client.query("select v from cached_t where id = 1"))).toEqual({ hit: 1 });
  // Extended protocol: a named prepared statement (node-postgres named query).
  const named = { name: "by_id", text: "select v from cached_t where id = $1", values: [1] };
  expect(await delta(() => client.query(named))).toEqual({ miss: 1 });
  expect(await delta(() => client.query(named))).toEqual({ hit: 1 });
  expect((await client.query(named)).rows).toEqual([{ v: "one" }]);
  expect((await client.query({ ...named, values: [2] })).rows).toEqual([]);
});

test("a write through the proxy invalidates what read its table", async () => {
  await client.query("select v from cached_t where id = 1");
  await client.query("update cached_t set v = 'uno' where id = 1");
  const r = await client.query("select v from cached_t where id = 1");
  expect(r.rows).toEqual([{ v: "uno" }]);
  // The same through a transaction: invalidated at COMMIT.
  await client.query("begin");
  await client.query("update cached_t set v = 'eins' where id = 1");
  await client.query("commit");
  expect((await client.query("select v from cached_t where id = 1")).rows).toEqual([{ v: "eins" }]);
});

test("max_age expiry and stale-while-revalidate follow the injected clock", async () => {
  await client.query("select v, 'swr' as tag from cached_t where id = 1");
  clock.advance(61_000);
  expect(await delta(() => client.query("select v, 'swr' as tag from cached_t where id = 1"))).toEqual({ stale: 1 });
  await Bun.sleep(50); // the one background refresh lands
  expect(await delta(() => client.query("select v, 'swr' as tag from cached_t where id = 1"))).toEqual({ hit: 1 });
  clock.advance(80_000);
  expect(await delta(() => client.query("select v, 'swr' as tag from cached_t where id = 1"))).toEqual({ miss: 1 });
});

test("never a cached answer inside a transaction, for volatile functions, or for catalog reads", async () => {
  await client.query("begin");
  const inTx = await delta(() => client.query("select v from cached_t where id = 1"));
  await client.query("commit");
  expect(inTx.hit ?? 0).toBe(0);
  for (const q of ["select vol(1)", "select vol(1)", "select now()"]) {
    const d = await delta(() => client.query(q));
    expect(d.volatile).toBe(1);
    expect(d.hit ?? 0).toBe(0);
  }
  await client.query("select imm(1)");
  expect(await delta(() => client.query("select imm(1)"))).toEqual({ hit: 1 });
  expect((await delta(() => client.query("select count(*) from pg_class"))).hit ?? 0).toBe(0);
});

test("postgres.js with prepared statements gets cached answers that match the origin", async () => {
  const sql = postgres(f.url(), { max: 2 });
  const a = await sql`select v from cached_t where id = ${1}`;
  const b = await sql`select v from cached_t where id = ${1}`;
  expect([...b]).toEqual([...a]);
  await sql`update cached_t set v = ${"un"} where id = ${1}`;
  expect([...(await sql`select v from cached_t where id = ${1}`)]).toEqual([{ v: "un" }]);
  await sql.end();
});

/** A trust-auth pooler of its own and a raw protocol session on it: `answer` sends bytes and returns the reply up to ReadyForQuery, as type + hex. */
async function rawSession() {
  const t = await startPoolerFixture({ pgAuth: "trust", queryCacheMaxAge: 60, queryCacheSwr: 15 }, clock, f.pg);
  const r = await rawConnect(t.pooler.port);
  r.write(encodeStartup({ user: f.pg.user, database: "postgres" }));
  await r.read((m) => m.type === "Z");
  return {
    r,
    counts: () => t.pooler.stats().pools[0]?.cache ?? {},
    pipelined: () => t.pooler.stats().pools[0]?.pipelined ?? 0,
    async answer(bytes: Uint8Array) {
      r.write(bytes);
      return (await r.read((m) => m.type === "Z")).map((m) => m.type + Buffer.from(m.body).toString("hex"));
    },
    async stop() {
      r.end();
      await t.stop();
    },
  };
}

test("a prepared call in one write (Bind, Describe, Execute, Sync) gets the origin's answer byte for byte from the cache", async () => {
  const { r, counts, answer, stop } = await rawSession();
  try {
    r.write(Buffer.concat([encodeParse({ name: "s1", query: "select v, id from cached_t where id = $1", paramTypes: [] }), SYNC]));
    await r.read((m) => m.type === "Z");
    const call = (id: string, describe: boolean) =>
      Buffer.concat([
        encodeBind({ portal: "", statement: "s1", paramFormats: [], params: [new TextEncoder().encode(id)], resultFormats: [] }),
        ...(describe ? [encodeDescribe({ kind: "P", name: "" })] : []),
        encodeExecute(""),
        SYNC,
      ]);
    const miss = await answer(call("1", true));
    expect(miss.map((m) => m[0]).join("")).toBe("2TDCZ");
    expect(counts()).toEqual({ miss: 1 });
    expect(await answer(call("1", true))).toEqual(miss);
    expect(await answer(call("1", false))).toEqual(miss.filter((m) => m[0] !== "T"));
    expect(counts()).toEqual({ miss: 1, hit: 2 });
    // Other parameters are another entry; a session setting is part of the key too.
    expect((await answer(call("2", true))).map((m) => m[0]).join("")).toBe("2TCZ");
    r.write(encodeQuery("set timezone = 'Asia/Tokyo'"));
    await r.read((m) => m.type === "Z");
    await answer(call("1", true));
    expect(counts().miss).toBe(3);
  } finally {
    await stop();
  }
});

test("unnamed parameterised queries (node-postgres without a name) are cached too", async () => {
  const q = { text: "select v from cached_t where id = $1", values: [1] };
  expect(await delta(() => client.query(q))).toEqual({ miss: 1 });
  expect(await delta(() => client.query(q))).toEqual({ hit: 1 });
  const direct = new pg.Client({ connectionString: f.originUrl });
  await direct.connect();
  try {
    expect((await client.query(q)).rows).toEqual((await direct.query(q)).rows);
  } finally {
    await direct.end();
  }
  expect((await client.query({ ...q, values: [999] })).rows).toEqual([]);
});

test("an unnamed Parse and call in one write: the origin's answer byte for byte from the cache, and a later Bind without Parse still works", async () => {
  const { r, counts, answer, stop } = await rawSession();
  try {
    const bind = (id: string) => encodeBind({ portal: "", statement: "", paramFormats: [], params: [new TextEncoder().encode(id)], resultFormats: [] });
    const parsedCall = (id: string) => Buffer.concat([encodeParse({ name: "", query: "select id, v from cached_t where id = $1", paramTypes: [] }), bind(id), encodeDescribe({ kind: "P", name: "" }), encodeExecute(""), SYNC]);
    const miss = await answer(parsedCall("1"));
    expect(miss.map((m) => m[0]).join("")).toBe("12TDCZ");
    expect(await answer(parsedCall("1"))).toEqual(miss);
    expect(counts()).toEqual({ miss: 1, hit: 1 });
    // The last answer came from the cache, so no origin connection holds this unnamed statement: a Bind of it
    // without a Parse (legal: the unnamed statement lasts until the next Parse) must still run it.
    const again = await answer(Buffer.concat([bind("1"), encodeDescribe({ kind: "P", name: "" }), encodeExecute(""), SYNC]));
    expect(again.map((m) => m[0]).join("")).toBe("2TDCZ");
    expect(again.slice(1)).toEqual(miss.slice(2));
  } finally {
    await stop();
  }
});

test("a miss without a Describe (postgres.js after its first call) is recorded on the way through: the client sees no RowDescription, the next call is a hit", async () => {
  const { r, counts, pipelined, answer, stop } = await rawSession();
  try {
    r.write(Buffer.concat([encodeParse({ name: "nd", query: "select v, id from cached_t where id = $1 and id > 0", paramTypes: [] }), SYNC]));
    await r.read((m) => m.type === "Z");
    const call = Buffer.concat([encodeBind({ portal: "", statement: "nd", paramFormats: [], params: [new TextEncoder().encode("1")], resultFormats: [] }), encodeExecute(""), SYNC]);
    const miss = await answer(call);
    expect(miss.map((m) => m[0]).join("")).toBe("2DCZ");
    expect(counts()).toEqual({ miss: 1 });
    expect(pipelined()).toBe(1); // recorded on its way through a lane, not loaded again on a second connection
    expect(await answer(call)).toEqual(miss);
    expect(counts()).toEqual({ miss: 1, hit: 1 });
    // With a Describe, the same entry answers with its RowDescription.
    const described = await answer(Buffer.concat([encodeBind({ portal: "", statement: "nd", paramFormats: [], params: [new TextEncoder().encode("1")], resultFormats: [] }), encodeDescribe({ kind: "P", name: "" }), encodeExecute(""), SYNC]));
    expect(described.map((m) => m[0]).join("")).toBe("2TDCZ");
    expect(counts()).toEqual({ miss: 1, hit: 2 });
  } finally {
    await stop();
  }
});

test("a prepared call in one write follows max_age and stale-while-revalidate too: stale is served and refreshed, a dead entry is recorded again", async () => {
  const { r, counts, answer, stop } = await rawSession();
  const direct = new pg.Client({ connectionString: f.originUrl });
  await direct.connect();
  try {
    await direct.query("insert into cached_t values (40, 'forty') on conflict (id) do update set v = 'forty'");
    r.write(Buffer.concat([encodeParse({ name: "swr", query: "select v from cached_t where id = $1 and id >= 40", paramTypes: [] }), SYNC]));
    await r.read((m) => m.type === "Z");
    const call = Buffer.concat([encodeBind({ portal: "", statement: "swr", paramFormats: [], params: [new TextEncoder().encode("40")], resultFormats: [] }), encodeDescribe({ kind: "P", name: "" }), encodeExecute(""), SYNC]);
    const value = (reply: string[]) => Buffer.from(reply.find((m) => m[0] === "D")!.slice(1), "hex").subarray(6).toString();
    expect(value(await answer(call))).toBe("forty");
    expect(value(await answer(call))).toBe("forty");
    expect(counts()).toEqual({ miss: 1, hit: 1 });
    // Changed behind the pooler's back; past max_age the stale answer is served once and refreshed.
    await direct.query("update cached_t set v = 'FORTY' where id = 40");
    clock.advance(61_000);
    expect(value(await answer(call))).toBe("forty");
    expect(counts().stale).toBe(1);
    let fresh = "";
    for (let i = 0; i < 50 && fresh !== "FORTY"; i++) {
      await Bun.sleep(20);
      fresh = value(await answer(call));
    }
    expect(fresh).toBe("FORTY");
    // Past max_age and stale-while-revalidate the entry is dead: the next call is a miss, recorded again, then hits.
    await direct.query("update cached_t set v = 'XL' where id = 40");
    clock.advance(80_000);
    expect(value(await answer(call))).toBe("XL");
    const before = counts().hit ?? 0;
    expect(value(await answer(call))).toBe("XL");
    expect(counts().hit).toBe(before + 1);
  } finally {
    await direct.end();
    await stop();
  }
});

test("a prepared call of a statement with a volatile function is never cached, and is counted as volatile each time", async () => {
  const { r, counts, answer, stop } = await rawSession();
  try {
    r.write(Buffer.concat([encodeParse({ name: "vv", query: "select vol($1::int) as n", paramTypes: [] }), SYNC]));
    await r.read((m) => m.type === "Z");
    const call = Buffer.concat([encodeBind({ portal: "", statement: "vv", paramFormats: [], params: [new TextEncoder().encode("1")], resultFormats: [] }), encodeDescribe({ kind: "P", name: "" }), encodeExecute(""), SYNC]);
    for (let i = 0; i < 3; i++) expect((await answer(call)).map((m) => m[0]).join("")).toBe("2TDCZ");
    // (The pooler's own pg_proc lookup counts as one uncacheable statement.)
    expect(counts().volatile).toBe(3);
    expect(counts().hit ?? 0).toBe(0);
    expect(counts().miss ?? 0).toBe(0);
  } finally {
    await stop();
  }
});
