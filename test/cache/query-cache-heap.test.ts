// The byte bound is honest: what the cache counts for an entry is about what the entry holds on Bun's heap,
// measured after a full collection, for the small entries a miss-only workload fills it with (pgbench -S shaped:
// one int parameter, one row). Interned statement prefixes never make two keys the same.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { createQueryCache } from "../../src/pool/cache/query-cache.ts";

const setup = (bytes: number) => createQueryCache({ config: loadConfig({ queryCacheBytes: bytes }, {}), clock: manualClock(1_000_000), metrics: createRegistry() });
const session = "ISO, MDY\0UTF8\0UTC\0on\0";
const sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
// RowDescription (abalance int4), DataRow, CommandComplete: one buffer, as the pooler's recorder keeps it.
const answer = (v: string) => [Buffer.concat([Buffer.from("540000001f0001616162616c616e636500000040060003000000170004ffffffff0000", "hex"), Buffer.from([0x44, 0, 0, 0, 10 + v.length, 0, 1, 0, 0, 0, v.length]), Buffer.from(v), Buffer.from("430000000d53454c454354203100", "hex")])];
const tail = (i: number) => {
  const v = Buffer.from(String(i));
  return Buffer.concat([Buffer.from([0, 0, 0, 1, 0, 0, 0, v.length]), v, Buffer.from([0, 0])]);
};

test("50,000 small entries: the heap they hold is within 20% of the bytes the cache counts for them", () => {
  const cache = setup(1024 * 1024 * 1024);
  const prefix = cache.keyPrefix({ database: "postgres", user: "postgres", sql, paramTypes: [], session });
  const n = 50_000;
  Bun.gc(true);
  const before = heapStats();
  for (let i = 0; i < n; i++) cache.recorder({ database: "postgres", user: "postgres", sql, id: prefix + cache.keyTail({ bindTail: tail(i) }) }, ["pgbench_accounts"])!.done(answer(String(i % 10_000)));
  Bun.gc(true);
  const after = heapStats();
  const held = after.heapSize + after.extraMemorySize - before.heapSize - before.extraMemorySize;
  const counted = cache.stats().bytes;
  expect(cache.stats().entries).toBe(n);
  expect(held / counted).toBeLessThan(1.2);
  expect(held / counted).toBeGreaterThan(0.6);
  expect(held / n).toBeLessThan(500); // about 360 bytes each; with an entry object per entry it was about 730
});

test("interned statement prefixes: the table is bounded, and a key made before it was forgotten never meets another statement's", () => {
  const cache = setup(64 * 1024); // prefixes bounded at 4 KiB of text
  const k = (i: number) => ({ database: "db", user: "u", sql: `select v from t${i} where id = $1 -- ${"x".repeat(100)}`, session: "" });
  const first = cache.keyPrefix(k(0));
  expect(cache.keyPrefix(k(0))).toBe(first);
  cache.recorder({ ...k(0), id: first + cache.keyTail({ bindTail: tail(1) }) }, ["t0"])!.done(answer("zero"));
  const seen = new Set([first]);
  for (let i = 1; i < 200; i++) seen.add(cache.keyPrefix(k(i)));
  expect(seen.size).toBe(200);
  expect(cache.stats().prefixes).toBeLessThan(200);
  const again = cache.keyPrefix(k(0)); // forgotten and interned anew: another key, a miss, never statement 1's answer
  expect(seen.has(again)).toBe(false);
  expect(cache.has(again + cache.keyTail({ bindTail: tail(1) }))).toBe(false);
  expect(cache.has(first + cache.keyTail({ bindTail: tail(1) }))).toBe(true);
  expect(first.length).toBeLessThan(8);
});
