import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { cacheKey } from "../../src/pool/cache/key.ts";
import { createQueryCache } from "../../src/pool/cache/query-cache.ts";

const msg = (s: string) => [new TextEncoder().encode(s)];
const text = (r: { messages: Uint8Array[] }) => r.messages.map((m) => new TextDecoder().decode(m)).join("");
const key = (sql: string, extra: object = {}) => ({ database: "db", user: "u", sql, ...extra });

function setup(over: Record<string, unknown> = {}) {
  const clock = manualClock(1_000_000);
  const config = loadConfig({ queryCacheMaxAge: 60, queryCacheSwr: 15, ...over } as any, {});
  return { clock, cache: createQueryCache({ config, clock, metrics: createRegistry(), volatility: async (_db, fns) => fns.includes("vol") }) };
}

test("a hit after a miss, with no second load", async () => {
  const { cache } = setup();
  let loads = 0;
  const load = async () => (loads++, msg("r1"));
  expect(await cache.lookup(key("q"), ["t"], load)).toMatchObject({ status: "miss" });
  const hit = await cache.lookup(key("q"), ["t"], load);
  expect(hit.status).toBe("hit");
  expect(text(hit)).toBe("r1");
  expect(loads).toBe(1);
});

test("max_age, then stale-while-revalidate with one background refresh, then a miss", async () => {
  const { cache, clock } = setup();
  let n = 0;
  const load = async () => msg(`v${++n}`);
  await cache.lookup(key("q"), ["t"], load);
  clock.advance(61_000);
  const stale = await cache.lookup(key("q"), ["t"], load);
  expect(stale.status).toBe("stale");
  expect(text(stale)).toBe("v1");
  await cache.lookup(key("q"), ["t"], load); // still stale or refreshed, never a second refresh
  await Bun.sleep(0);
  expect(n).toBe(2);
  const fresh = await cache.lookup(key("q"), ["t"], load);
  expect(fresh.status).toBe("hit");
  expect(text(fresh)).toBe("v2");
  clock.advance(60_000 + 15_000 + 1);
  expect((await cache.lookup(key("q"), ["t"], load)).status).toBe("miss");
});

test("single flight: concurrent identical misses share one load; an error reaches every waiter and caches nothing", async () => {
  const { cache } = setup();
  let loads = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const load = async () => {
    loads++;
    await gate;
    return msg("shared");
  };
  const all = Promise.all(Array.from({ length: 10 }, () => cache.lookup(key("sf"), ["t"], load)));
  release();
  const results = await all;
  expect(loads).toBe(1);
  expect(results.every((r) => text(r) === "shared")).toBe(true);
  const failing = () => Promise.reject(new Error("origin down"));
  const errs = await Promise.allSettled([cache.lookup(key("e"), ["t"], failing), cache.lookup(key("e"), ["t"], failing)]);
  expect(errs.every((e) => e.status === "rejected")).toBe(true);
  expect((await cache.lookup(key("e"), ["t"], async () => msg("ok"))).status).toBe("miss");
});

test("invalidation drops entries reading the table, also when a load raced it", async () => {
  const { cache } = setup();
  await cache.lookup(key("a"), ["t"], async () => msg("a"));
  await cache.lookup(key("b"), ["u"], async () => msg("b"));
  cache.invalidate("db", ["t"]);
  expect((await cache.lookup(key("a"), ["t"], async () => msg("a2"))).status).toBe("miss");
  expect((await cache.lookup(key("b"), ["u"], async () => msg("b2"))).status).toBe("hit");
  // A load that began before a write must not store its (older) answer after it.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const racing = cache.lookup(key("c"), ["t"], async () => {
    await gate;
    return msg("before-write");
  });
  cache.invalidate("db", ["t"]);
  release();
  await racing;
  expect((await cache.lookup(key("c"), ["t"], async () => msg("after"))).status).toBe("miss");
  cache.invalidate("db", ["*"]);
  expect((await cache.lookup(key("b"), ["u"], async () => msg("b3"))).status).toBe("miss");
});

test("byte bound evicts least recently used; oversized results are not stored; null loads are uncacheable", async () => {
  const { cache } = setup({ queryCacheBytes: 4096, queryCacheMaxResultBytes: 1500 });
  for (let i = 0; i < 10; i++) await cache.lookup(key(`k${i}`), ["t"], async () => [new Uint8Array(1000)]);
  expect(cache.stats().bytes).toBeLessThanOrEqual(4096);
  expect((await cache.lookup(key("k9"), ["t"], async () => msg("x"))).status).toBe("hit");
  expect((await cache.lookup(key("k0"), ["t"], async () => msg("x"))).status).toBe("miss");
  await cache.lookup(key("big"), ["t"], async () => [new Uint8Array(2000)]);
  expect((await cache.lookup(key("big"), ["t"], async () => msg("x"))).status).toBe("miss");
  expect(await cache.lookup(key("n"), ["t"], async () => null)).toEqual({ status: "uncacheable", messages: [] });
});

test("keys differ by user, parameters, formats and session; volatility is asked once", async () => {
  const base = key("q", { params: [new Uint8Array([1])] });
  expect(cacheKey(base)).toBe(cacheKey({ ...base, params: [new Uint8Array([1])] }));
  expect(cacheKey(base)).not.toBe(cacheKey({ ...base, user: "v" }));
  expect(cacheKey(base)).not.toBe(cacheKey({ ...base, params: [new Uint8Array([2])] }));
  expect(cacheKey(base)).not.toBe(cacheKey({ ...base, params: [null] }));
  expect(cacheKey(base)).not.toBe(cacheKey({ ...base, resultFormats: [1] }));
  expect(cacheKey(base)).not.toBe(cacheKey({ ...base, session: "UTC" }));
  const { cache } = setup();
  expect(await cache.isVolatile("db", ["lower"])).toBe(false);
  expect(await cache.isVolatile("db", ["vol", "lower"])).toBe(true);
});

test("a recorded miss is stored unless a write invalidated its tables meanwhile; none while an entry exists", async () => {
  const { cache } = setup();
  const rec = cache.recorder(key("r"), ["t"])!;
  rec.done(msg("streamed"));
  expect(text((await cache.lookup(key("r"), ["t"], async () => msg("loaded"))) as never)).toBe("streamed");
  expect(cache.recorder(key("r"), ["t"])).toBeNull();
  const raced = cache.recorder(key("s"), ["t"])!;
  cache.invalidate("db", ["t"]);
  raced.done(msg("old"));
  expect((await cache.lookup(key("s"), ["t"], async () => msg("new"))).status).toBe("miss");
  const given = cache.recorder(key("g"), ["t"])!;
  given.done(null);
  expect(cache.fresh(cacheKey(key("g")))).toBe(-1);
});

test("eviction gives an entry hit since it was stored a second chance (CLOCK): the unused one goes first", async () => {
  const { cache } = setup({ queryCacheBytes: 4096, queryCacheMaxResultBytes: 1500 });
  for (const k of ["k0", "k1", "k2"]) await cache.lookup(key(k), ["t"], async () => [new Uint8Array(1000)]);
  expect(cache.stats().entries).toBe(3);
  expect((await cache.lookup(key("k0"), ["t"], async () => msg("x"))).status).toBe("hit");
  await cache.lookup(key("k3"), ["t"], async () => [new Uint8Array(1000)]);
  expect(cache.stats().bytes).toBeLessThanOrEqual(4096);
  expect(cache.fresh(cacheKey(key("k0")))).toBeGreaterThanOrEqual(0);
  expect(cache.fresh(cacheKey(key("k1")))).toBe(-1);
});

test("single flight with a recorded miss: identical lookups meanwhile wait for the recording instead of loading", async () => {
  const { cache } = setup();
  const rec = cache.recorder(key("sf"), ["t"])!;
  let loads = 0;
  const waiting = [1, 2, 3].map(() => cache.lookup(key("sf"), ["t"], async () => (loads++, msg("loaded"))));
  expect(cache.recorder(key("sf"), ["t"])).toBeNull();
  rec.done(msg("recorded"));
  const answers = await Promise.all(waiting);
  expect(loads).toBe(0);
  for (const a of answers) expect(text(a as never)).toBe("recorded");
  // A recording that gives up lets the waiters fall back (uncacheable), and the next lookup loads.
  const gaveUp = cache.recorder(key("sf2"), ["t"])!;
  const w = cache.lookup(key("sf2"), ["t"], async () => (loads++, msg("x")));
  gaveUp.done(null);
  expect((await w).status).toBe("uncacheable");
  expect((await cache.lookup(key("sf2"), ["t"], async () => (loads++, msg("loaded")))).status).toBe("miss");
  expect(loads).toBe(1);
});

test("a recorder is refused while an entry is fresh or stale (lookup serves and refreshes it), and replaces a dead one", async () => {
  const { cache, clock } = setup();
  cache.recorder(key("d"), ["t"])!.done(msg("first"));
  expect(cache.recorder(key("d"), ["t"])).toBeNull(); // fresh
  clock.advance(61_000);
  expect(cache.recorder(key("d"), ["t"])).toBeNull(); // stale: within stale-while-revalidate
  clock.advance(15_000);
  const again = cache.recorder(key("d"), ["t"]); // past max_age + swr: dead, recorded anew
  expect(again).not.toBeNull();
  again!.done(msg("second"));
  expect(text((await cache.lookup(key("d"), ["t"], async () => msg("loaded"))) as never)).toBe("second");
});
