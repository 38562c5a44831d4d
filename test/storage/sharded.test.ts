// Shards over three real Postgres clusters: the backend contract through the ring, spread, exact merged
// listing, and adding a cluster: reads find unmoved keys on their old owner, rebalance moves about 1/N of the
// keys, resumes after an interruption, and completes the ring.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import { openShardedBackend, type ShardedBackend } from "../../src/storage/sharded.ts";
import { rebalance } from "../../src/storage/rebalance.ts";
import type { StoredEntry } from "../../src/storage/entry.ts";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { backendContract } from "./contract.ts";

const b = (s: string) => new TextEncoder().encode(s);
const str = (u: Uint8Array | null | undefined) => (u ? new TextDecoder().decode(u) : null);
const row = (ns: string, key: string, value: string | null, ts: number): StoredEntry => ({
  ns, key: b(key), value: value === null ? null : b(value), metadata: null, expiration: null, version: { ts, nonce: 1 }, tombstone: value === null,
});

let pgs: TestPostgres[] = [];
let sharded: ShardedBackend;
let dir: string;
beforeAll(async () => {
  pgs = await Promise.all([0, 1, 2, 3].map(() => startTestPostgres()));
  sharded = await openShardedBackend(pgs.slice(0, 3).map((p) => p.url), 4);
  dir = tempDir("kvdrive-rebalance-");
}, 120_000);
afterAll(async () => {
  await sharded?.close();
  await Promise.all(pgs.map((p) => p.destroy()));
  fs.rmSync(dir, { recursive: true, force: true });
}, 60_000);

// Bulk writes are atomic per cluster only: a write spanning clusters commits on each independently.
backendContract("sharded", () => sharded, "sharded", { atomic: false });

test("sharded: one namespace's keys spread over every cluster, each key on exactly its owner", async () => {
  const rows = Array.from({ length: 3000 }, (_, i) => row("spread", `k${i}`, `v${i}`, 1));
  await sharded.write(rows);
  const counts = await Promise.all(sharded.shards.map((s) => s.backend.countEntries("spread")));
  expect(counts.reduce((a, c) => a + c, 0)).toBe(3000);
  for (const c of counts) expect(c).toBeGreaterThan(700); // 1000 expected each; 128 vnodes keep it near
  const k = b("k42");
  const owner = sharded.ownerOf("spread", k);
  expect(str((await owner.backend.get("spread", k))!.value)).toBe("v42");
  for (const s of sharded.shards) if (s !== owner) expect(await s.backend.get("spread", k)).toBeNull();
});

test("sharded: paging through a merged listing returns every key once, in byte order, with exact cursors", async () => {
  const keys = Array.from({ length: 2500 }, (_, i) => `p/${String(i).padStart(5, "0")}`);
  await sharded.write(keys.map((k) => row("paged", k, "x", 1)));
  await sharded.write([row("paged", "p/00007", null, 2), row("paged", "q-outside", "x", 1)]);
  const seen: string[] = [];
  let after: Uint8Array | null = null;
  for (;;) {
    const page = await sharded.list({ ns: "paged", after, from: b("p/"), before: b("p0"), limit: 333, now: 0 });
    seen.push(...page.map((e) => str(e.key)!));
    if (page.length < 333) break;
    after = page[page.length - 1]!.key;
  }
  const expected = keys.filter((k) => k !== "p/00007");
  expect(seen).toEqual(expected);
});

test("sharded: the same cluster listed twice is refused", async () => {
  await expect(openShardedBackend([pgs[0]!.url, pgs[0]!.url], 1)).rejects.toThrow(/same Postgres cluster twice/);
});

test("sharded: adding a cluster: reads follow old owners until rebalance moves about 1/N of the keys, resumably", async () => {
  const urls3 = pgs.slice(0, 3).map((p) => p.url);
  const ns = "grow";
  const rows = Array.from({ length: 4000 }, (_, i) => row(ns, `g${i}`, `v${i}`, 10));
  await sharded.write(rows);
  await sharded.write([row(ns, "g5", null, 20)]); // a deleted key must stay deleted through the move

  const four = await openShardedBackend([...urls3, pgs[3]!.url], 4);
  try {
    expect(four.previous()).not.toBeNull();
    // Before any move: every key still reads back (from its old owner), the deleted one stays deleted.
    const got = await four.getMany(ns, rows.map((r) => r.key));
    expect(got.filter((e) => e !== null && !e.tombstone).length).toBe(3999);
    expect((await four.get(ns, b("g5")))!.tombstone).toBe(true);
    // A write during the migration goes to the new owner and wins.
    await four.write([row(ns, "g1", "new", 30)]);
    expect(str((await four.get(ns, b("g1")))!.value)).toBe("new");
    // The listing shows each live key once.
    const listed = await four.list({ ns, after: null, from: null, before: null, limit: 5000, now: 0 });
    expect(listed.length).toBe(3999);

    // Interrupted after a few pages, then resumed.
    const checkpointFile = path.join(dir, "rebalance.json");
    let pages = 0;
    const first = await rebalance(four, { checkpointFile, pageSize: 200, shouldStop: () => ++pages > 5 });
    expect(first.complete).toBe(false);
    expect(fs.existsSync(checkpointFile)).toBe(true);
    const done = await rebalance(four, { checkpointFile, pageSize: 200 });
    expect(done.complete).toBe(true);
    // About 1/4 of all keys (every namespace of the earlier tests too) move, all to the new cluster.
    const share = done.moved / done.scanned;
    console.log(`rebalance 3 -> 4 clusters: moved ${done.moved} of ${done.scanned} entries (${(share * 100).toFixed(1)}%, ideal 25%)`);
    expect(done.scanned).toBe(await four.countEntries());
    expect(share).toBeGreaterThan(0.15);
    expect(share).toBeLessThan(0.35);
    expect(four.previous()).toBeNull();
    const onNew = await four.shards[3]!.backend.countEntries(ns);
    expect(onNew).toBeGreaterThan(4000 * 0.15);
    expect(onNew).toBeLessThan(4000 * 0.35);
    // Each key now lives only on its owner, and reads no longer need old owners.
    for (const r of rows.slice(0, 200)) {
      const owner = four.ownerOf(ns, r.key);
      for (const s of four.shards) expect((await s.backend.get(ns, r.key)) !== null).toBe(s === owner);
    }
    expect(str((await four.get(ns, b("g1")))!.value)).toBe("new");
    expect((await four.get(ns, b("g5")))!.tombstone).toBe(true);
    expect((await four.list({ ns, after: null, from: null, before: null, limit: 5000, now: 0 })).length).toBe(3999);
  } finally {
    await four.close();
  }
  // A process started with the old list of clusters is refused rather than misplacing keys.
  await expect(openShardedBackend(urls3, 1)).rejects.toThrow(/removing a cluster is not supported/);
});
