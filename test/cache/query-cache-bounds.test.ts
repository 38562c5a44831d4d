// What invalidations leave behind: nothing for tables no cached result read (a NOTIFY flood of invented names),
// and the index shrinks as entries go. A load in flight is still not stored after a write to what it reads.
import { expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { createQueryCache } from "../../src/pool/cache/query-cache.ts";

const msg = (s: string) => [new TextEncoder().encode(s)];
const key = (sql: string) => ({ database: "db", user: "u", sql });
const setup = () => createQueryCache({ config: loadConfig({}, {}), clock: manualClock(1_000_000), metrics: createRegistry() });

test("400,000 invalidations of invented table names keep nothing", async () => {
  const cache = setup();
  await cache.lookup(key("q"), ["real"], async () => msg("r"));
  for (let i = 0; i < 400_000; i++) cache.invalidate("db", [`invented_${i}`]);
  for (let i = 0; i < 1000; i++) cache.invalidate(`db_${i}`, ["t"]);
  expect(cache.stats()).toMatchObject({ entries: 1, tables: 1, watches: 0 });
  cache.invalidate("db", ["real"]);
  expect(cache.stats()).toMatchObject({ entries: 0, tables: 0, watches: 0 });
});

test("a load in flight is not stored after a write to its table, nor after a '*'; others are", async () => {
  const cache = setup();
  let release = () => {};
  const slow = async () => (await new Promise<void>((r) => (release = r)), msg("old"));
  const p = cache.lookup(key("a"), ["t"], slow);
  expect(cache.stats().watches).toBe(1);
  cache.invalidate("db", ["other"]);
  cache.invalidate("db", ["t"]);
  release();
  await p;
  expect(cache.stats()).toMatchObject({ entries: 0, watches: 0 });
  const q = cache.lookup(key("b"), ["u"], slow);
  cache.invalidate("db", ["*"]);
  release();
  await q;
  expect(cache.stats().entries).toBe(0);
  const r = cache.lookup(key("c"), ["v"], slow);
  cache.invalidate("db", ["w"]);
  cache.invalidate("elsewhere", ["v"]);
  release();
  await r;
  expect(cache.stats()).toMatchObject({ entries: 1, tables: 1, watches: 0 });
  const rec = cache.recorder(key("d"), ["x"])!;
  cache.invalidate("db", ["x"]);
  rec.done(msg("d"));
  expect(cache.stats()).toMatchObject({ entries: 1, watches: 0 });
});
