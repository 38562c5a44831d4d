// A list over shards with one cluster down: without a stand-in the list fails (never a partial page); with one,
// that cluster's share of every page comes from the stand-in (another backend holding the same entries),
// filtered to the keys the ring gives that cluster, and pages stay exact across cursors.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { openShardedBackend, type ShardedBackend } from "../../src/storage/sharded.ts";
import type { StoredEntry } from "../../src/storage/entry.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { ListedEntry, ListQuery, PostgresBackend } from "../../src/storage/backend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pgs: TestPostgres[] = [];
let sharded: ShardedBackend;
let other: PostgresBackend;
const enc = new TextEncoder();
const dec = new TextDecoder();
const NS = "stand-in";
const keys = Array.from({ length: 300 }, (_, i) => `k${String(i).padStart(3, "0")}`);

beforeAll(async () => {
  pgs = await Promise.all([0, 1, 2].map(() => startTestPostgres()));
  sharded = await openShardedBackend([pgs[0]!.url, pgs[1]!.url], 4);
  other = await openPostgresBackend(pgs[2]!.url, 4);
  const rows: StoredEntry[] = keys.map((k, i) => ({ ns: NS, key: enc.encode(k), value: enc.encode("v"), metadata: null, expiration: null, version: { ts: 1000 + i, nonce: 1 }, tombstone: false }));
  await sharded.write(rows);
  await other.write(rows);
  await pgs[1]!.stop();
});

afterAll(async () => {
  await sharded?.close();
  await other?.close();
  for (const pg of pgs) await pg.destroy();
});

async function listAll(standIn?: (q: ListQuery) => Promise<ListedEntry[]>): Promise<string[]> {
  const out: string[] = [];
  let after: Uint8Array | null = null;
  for (;;) {
    const page = await sharded.list({ ns: NS, after, from: null, before: null, limit: 50, now: 0, standIn });
    out.push(...page.map((e) => dec.decode(e.key)));
    if (page.length < 50) return out;
    after = page[page.length - 1]!.key;
  }
}

test("one cluster down: no stand-in, the list fails; with one, every key once, in order, and the stand-in only serves the down cluster's keys", async () => {
  await expect(listAll()).rejects.toThrow();
  const asked: string[] = [];
  const listed = await listAll(async (q) => {
    expect(q.only).toBeFunction();
    const page = await other.list({ ...q, standIn: undefined, only: undefined, limit: 1000 });
    const mine = page.filter((e) => q.only!(e.key)).slice(0, q.limit);
    asked.push(...mine.map((e) => dec.decode(e.key)));
    return mine;
  });
  expect(listed).toEqual(keys);
  const downShard = sharded.shards[1]!;
  // Every key the stand-in gave belongs to the stopped cluster, and it gave some.
  expect(asked.length).toBeGreaterThan(0);
  expect(asked.every((k) => sharded.ownerOf(NS, enc.encode(k)) === downShard)).toBe(true);
});
