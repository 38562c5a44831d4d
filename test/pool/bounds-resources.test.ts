// Resource tests: a pooler in its own process is flooded the ways an attacker would (Syncs without reading,
// huge messages before login, NOTIFY of invented table names), and its RSS, read from /proc, must grow by a
// bounded amount; every answer still arrives, in order.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(180_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import pg from "pg";
import { B } from "../../src/protocol/backend.ts";
import { encodeQuery, encodeStartup, SYNC } from "../../src/protocol/frontend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { floodConnect, startChildPooler, until, type ChildPooler } from "./bounds-helpers.ts";

const MiB = 1024 * 1024;
let origin: TestPostgres;
let pooler: ChildPooler;

beforeAll(async () => {
  origin = await startTestPostgres();
  pooler = await startChildPooler(origin.url, { pgAuth: "trust", pgMaxClientOutputBytes: MiB });
}, 120_000);
afterAll(async () => {
  await pooler?.stop();
  await origin?.destroy();
}, 60_000);

/**
 * Logs in, then writes `total` bytes of Syncs (after `prefix`) without reading; returns the RSS growth seen while
 * stalled. With `contended`, two processes spin on the machine's two cores meanwhile: the pooler then falls behind
 * both its client and its origin, which is when its queue to the origin drains while its client is over a bound.
 */
async function syncFlood(prefix: Uint8Array[], total: number, contended = false) {
  const conn = await floodConnect(pooler.port, origin.user);
  const statuses: number[] = [];
  let errors = 0;
  conn.onMessage((type, body) => {
    if (type === B.ReadyForQuery) statuses.push(body[0]!);
    if (type === B.ErrorResponse) errors++;
  });
  await until(() => statuses.length === 1, "login");
  for (const p of prefix) conn.write(p);
  await until(() => statuses.length === 1 + prefix.length, "the prefix's answers");
  const before = await pooler.retained();
  conn.reading(false);
  const block = new Uint8Array(64 * 1024 - ((64 * 1024) % 5));
  for (let i = 0; i < block.length; i += 5) block.set(SYNC, i);
  // Once the pooler stops reading, what the test wrote stays queued in the test: wait for that to settle. The
  // kernel's socket buffers take a share first, and how much depends on the machine and its load (this machine's
  // tcp_rmem allows 32 MiB, and in one full `bun test` run all 12 MiB of Syncs went through): so the flood goes on,
  // `total` at a time, up to eight times, until the test is left holding some of it.
  const settle = async () => {
    let last = -1;
    for (let still = 0, i = 0; still < 4 && i < 400; i++) {
      still = conn.unsent() === last ? still + 1 : 0;
      last = conn.unsent();
      await Bun.sleep(250);
    }
  };
  const spinners = contended ? [0, 1].map(() => Bun.spawn([process.execPath, "-e", "for (;;) {}"], { stdio: ["ignore", "ignore", "ignore"] })) : [];
  let blocks = 0;
  try {
    for (let round = 0; round < 8 && (round === 0 || conn.unsent() === 0); round++) {
      const more = Math.ceil(total / block.length);
      for (let i = 0; i < more; i++) conn.write(block);
      blocks += more;
      await settle();
    }
  } finally {
    for (const p of spinners) p.kill("SIGKILL");
  }
  const syncs = (blocks * block.length) / 5;
  // What the flooder still holds once the pooler settled: the pooler stopped reading (checked below). Taken now,
  // before the readings: the kernel's socket buffers keep growing meanwhile and let the pooler take a little more.
  const stalled = conn.unsent();
  // RSS right after a collection still holds pages the allocator frees a moment later: the lowest of three
  // readings, a quarter second apart, is what stays retained (one reading once came out 4 MiB over the bound).
  let after = Infinity;
  for (let i = 0; i < 3; i++) {
    if (i) await Bun.sleep(250);
    after = Math.min(after, await pooler.retained());
  }
  const grown = after - before;
  console.log(`sync flood${prefix.length ? " in a transaction" : ""}: ${JSON.stringify({ syncsWritten: syncs, stalledBytes: stalled, grownMiB: +(grown / MiB).toFixed(1) })}`);
  expect(stalled).toBeGreaterThan(0); // the pooler stopped reading: the flood waits on the flooder's side
  conn.reading(true);
  await until(() => statuses.length === 1 + prefix.length + syncs, `${syncs} ReadyForQuery`, 120_000);
  expect(errors).toBe(0);
  const expected = prefix.length ? 0x54 : 0x49; // 'T' inside the transaction the prefix opened, else 'I'
  expect(statuses.slice(1 + prefix.length).every((s) => s === expected)).toBe(true);
  conn.end();
  return grown;
}

test("a Sync flood from an idle client that never reads grows the pooler's RSS by a bounded amount", async () => {
  const grown = await syncFlood([], 12 * MiB);
  expect(grown).toBeLessThan(48 * MiB); // before the bound: +389 MiB for 10 MB of Syncs
});

test("a Sync flood inside a transaction (answered by the origin) is bounded too", async () => {
  const grown = await syncFlood([encodeQuery("begin")], 12 * MiB);
  expect(grown).toBeLessThan(48 * MiB);
});

test("a Sync flood inside a transaction on a busy machine is bounded too", async () => {
  // Seen in CI: with the pooler short of CPU, its queue to the origin drained while its client was over the
  // output bound or MAX_IN_FLIGHT, and the drain started reading the client again; 5 million Syncs left 1.6
  // million expectations (+60 MiB) behind. Every end of a reason to stop reading now checks all the others.
  const grown = await syncFlood([encodeQuery("begin")], 12 * MiB, true);
  expect(grown).toBeLessThan(48 * MiB);
});

test("a NOTIFY flood of 400,000 invented table names leaves nothing behind", async () => {
  // A client's login opens the pool, and with it the pooler's LISTEN connection on this database.
  const viaPooler = new pg.Client({ connectionString: `postgres://${origin.user}@127.0.0.1:${pooler.port}/postgres` });
  await viaPooler.connect();
  await viaPooler.query("select 1");
  const direct = new pg.Client({ connectionString: origin.url });
  await direct.connect();
  const listening = async () => (await direct.query("select count(*)::int as n from pg_stat_activity where application_name = 'kvdrive cache invalidation' and query ilike 'listen%'")).rows[0].n === 1;
  for (let i = 0; i < 300 && !(await listening()); i++) await Bun.sleep(100);
  expect(await listening()).toBe(true);
  const before = await pooler.retained();
  await direct.query("select count(pg_notify('kvdrive_invalidate', 'invented_table_name_' || g)) from generate_series(1, 400000) g");
  // The queue empties once every listener has read it: then the pooler has heard all 400,000.
  for (let i = 0; i < 600 && (await direct.query("select pg_notification_queue_usage() as u")).rows[0].u > 0; i++) await Bun.sleep(100);
  expect((await direct.query("select pg_notification_queue_usage() as u")).rows[0].u).toBe(0);
  await Bun.sleep(500);
  const grown = (await pooler.retained()) - before;
  expect(grown).toBeLessThan(24 * MiB); // before: a counter per name, 66 MiB retained
  expect((await viaPooler.query("select 2 as n")).rows).toEqual([{ n: 2 }]);
  await viaPooler.end();
  await direct.end();
});

test("a prepared statement flood is refused past KVDRIVE_POOL_MAX_PREPARED_BYTES (53400), and RSS stays bounded", async () => {
  const c = new pg.Client({ connectionString: `postgres://${origin.user}@127.0.0.1:${pooler.port}/postgres` });
  c.on("error", () => {});
  await c.connect();
  await c.query("select 1");
  const before = await pooler.retained();
  const padding = "x".repeat(64 * 1024);
  let prepared = 0;
  let refused: { code?: string; message: string } | null = null;
  for (let i = 0; i < 1500 && !refused; i++) {
    try {
      await c.query({ name: `flood_${i}`, text: `select ${i} as n /* ${padding} */` });
      prepared++;
    } catch (e) {
      refused = e as { code?: string; message: string };
    }
  }
  const grown = (await pooler.retained()) - before;
  expect(refused?.code).toBe("53400");
  expect(refused?.message).toContain("KVDRIVE_POOL_MAX_PREPARED_BYTES");
  expect(prepared).toBeGreaterThan(40); // 16 MiB holds dozens of 64 KiB statements
  expect(grown).toBeLessThan(64 * MiB); // before: 4,096 statements of 64 KiB, +550 MiB
  await c.end().catch(() => {});
  // Another client is not affected.
  const other = new pg.Client({ connectionString: `postgres://${origin.user}@127.0.0.1:${pooler.port}/postgres` });
  await other.connect();
  expect((await other.query({ name: "fine", text: "select 3 as n" })).rows).toEqual([{ n: 3 }]);
  await other.end();
});

test("huge messages before login are refused at their header: four half-logged-in clients streaming 32 MB each hold nothing", async () => {
  const scram = await startChildPooler(origin.url, {});
  try {
    const before = await scram.retained();
    const conns = await Promise.all([1, 2, 3, 4].map(() => floodConnect(scram.port, origin.user)));
    const errors: string[] = [];
    let asked = 0;
    for (const c of conns) {
      c.onMessage((type, body) => {
        if (type === B.Authentication) asked++;
        if (type === B.ErrorResponse) errors.push(new TextDecoder().decode(body));
      });
    }
    await until(() => asked === 4, "the SASL requests");
    const chunk = new Uint8Array(1024 * 1024).fill(0x61);
    for (const c of conns) {
      c.write(new Uint8Array([0x70, 0x04, 0, 0, 0])); // a password message of 64 MiB, announced
      for (let i = 0; i < 32; i++) c.write(chunk);
    }
    await until(() => conns.every((c) => c.closed()), "the pooler to close all four");
    const grown = (await scram.retained()) - before;
    expect(errors.length).toBe(4);
    expect(errors.every((e) => e.includes("54000") && e.includes("KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES"))).toBe(true);
    expect(grown).toBeLessThan(16 * MiB); // before: the messages were read, 120-250 MiB held until the login timeout
  } finally {
    await scram.stop();
  }
});

test("a thousand clients that never finish start-up: past KVDRIVE_PG_MAX_STARTING_CLIENTS they are turned away with 53300", async () => {
  const before = await pooler.retained();
  const refused: number[] = [];
  const conns = [];
  for (let i = 0; i < 1000; i++) {
    // The first bytes of a 9,000-byte start-up packet, and then nothing.
    const c = await floodConnect(pooler.port, origin.user, "postgres", new Uint8Array([0, 0, 0x23, 0x28, 0, 3, 0, 0, 0x75])).catch(() => null);
    if (!c) continue;
    const n = i;
    c.onMessage((type, body) => {
      if (type === B.ErrorResponse && new TextDecoder().decode(body).includes("53300")) refused.push(n);
    });
    conns.push(c);
  }
  await until(() => refused.length >= 1000 - 512, "the refusals", 60_000);
  const grown = (await pooler.retained()) - before;
  expect(refused.length).toBe(1000 - 512);
  expect(grown).toBeLessThan(32 * MiB);
  for (const c of conns) c.end();
  await Bun.sleep(500);
  // Once they are gone, logins work again.
  const c = new pg.Client({ connectionString: `postgres://${origin.user}@127.0.0.1:${pooler.port}/postgres` });
  await c.connect();
  expect((await c.query("select 4 as n")).rows).toEqual([{ n: 4 }]);
  await c.end();
});

test("cached answers requested in one burst by a client that does not read are bounded too (no amplification)", async () => {
  const direct = new pg.Client({ connectionString: origin.url });
  await direct.connect();
  await direct.query("create table if not exists bounds_wide_rows as select g as id, repeat('w', 200) as v from generate_series(1, 1000) g");
  await direct.end();
  const conn = await floodConnect(pooler.port, origin.user);
  let ready = 0;
  let rows = 0;
  conn.onMessage((type) => {
    if (type === B.ReadyForQuery) ready++;
    if (type === B.DataRow) rows++;
  });
  await until(() => ready === 1, "login");
  const query = encodeQuery("select id, v from bounds_wide_rows order by id"); // about 220 KB of answer
  conn.write(query);
  await until(() => ready === 2, "the first answer, which fills the cache");
  const before = await pooler.retained();
  conn.reading(false);
  const burst = Buffer.concat(Array(2000).fill(query)); // 2,000 cache hits asked at once: about 440 MB of answers
  conn.write(burst);
  await Bun.sleep(3000);
  const grown = (await pooler.retained()) - before;
  conn.reading(true);
  await until(() => ready === 2002, "every answer", 120_000);
  expect(rows).toBe(2001 * 1000);
  expect(grown).toBeLessThan(64 * MiB);
  conn.end();
});
