// The read cache on its own: byte bound, LRU order, TTL, and version safety (a late read or write never
// replaces a newer entry). Plus the hybrid logical clock that makes versions.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { createReadCache, entrySize, type CachedEntry } from "../../src/gateway/cache.ts";
import { createVersionClock } from "../../src/gateway/version.ts";
import { compareVersions, ZERO_VERSION } from "../../src/storage/entry.ts";

const entry = (v: string | null, ts = 1): CachedEntry => ({ value: v === null ? null : new TextEncoder().encode(v), metadata: null, expiration: null, version: { ts, nonce: 0 } });
const text = (e: CachedEntry | undefined) => (e === undefined ? undefined : e.value === null ? null : new TextDecoder().decode(e.value));

test("stays within its byte bound and evicts the least recently used", () => {
  const cache = createReadCache({ maxBytes: 10_000, clock: manualClock() });
  for (let i = 0; i < 100; i++) {
    cache.setFromWrite(`k${i}`, entry("x".repeat(500)));
    if (i === 5) cache.get("k0", 60); // k0 is used again, so k1 goes first
    expect(cache.bytes).toBeLessThanOrEqual(10_000);
  }
  expect(cache.get("k1", 60)).toBeUndefined();
  expect(cache.get("k99", 60)).toBeDefined();
  const per = entrySize("k99", entry("x".repeat(500)));
  expect(cache.entries).toBe(Math.floor(10_000 / per));
  expect(cache.bytes).toBe(cache.entries * per);
});

test("a value larger than an eighth of the bound is not kept and does not flush the rest", () => {
  const cache = createReadCache({ maxBytes: 80_000, clock: manualClock() });
  cache.setFromWrite("small", entry("s"));
  cache.setFromWrite("big", entry("b".repeat(5_000)));
  cache.setFromWrite("big", entry("y".repeat(20_000), 2));
  expect(cache.get("big", 60)).toBeUndefined();
  expect(text(cache.get("small", 60))).toBe("s");
  expect(cache.bytes).toBe(entrySize("small", entry("s")));
});

test("a zero bound caches nothing", () => {
  const cache = createReadCache({ maxBytes: 0, clock: manualClock() });
  cache.setFromWrite("k", entry("v"));
  cache.setFromRead("k", entry("v"), cache.readTicket());
  expect(cache.get("k", 60)).toBeUndefined();
  expect(cache.bytes).toBe(0);
});

test("entries older than the ttl miss; expired values read as missing at once", () => {
  const clock = manualClock(1_000_000);
  const cache = createReadCache({ maxBytes: 1e6, clock });
  cache.setFromWrite("a", entry("1"));
  cache.setFromWrite("e", { ...entry("2"), expiration: 1_000_000 / 1000 + 10 });
  expect(text(cache.get("e", 60))).toBe("2");
  clock.advance(10_000);
  expect(text(cache.get("e", 60))).toBeNull();
  clock.advance(10_000);
  expect(text(cache.get("a", 60))).toBe("1");
  expect(cache.get("a", 30)).toBeDefined();
  clock.advance(10_000);
  expect(cache.get("a", 30)).toBeUndefined();
  expect(cache.get("a", 60)).toBeDefined();
  clock.advance(30_000);
  expect(cache.get("a", 60)).toBeUndefined();
});

test("a read that began before a local write does not replace it", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  const ticket = cache.readTicket();
  cache.setFromWrite("k", entry("new", 2));
  cache.setFromRead("k", entry("old", 1), ticket);
  expect(text(cache.get("k", 60))).toBe("new");
  cache.setFromRead("k", entry("fresh", 3), cache.readTicket());
  expect(text(cache.get("k", 60))).toBe("fresh");
});

test("a delete is cached as a negative entry that an older late read cannot undo", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  cache.setFromWrite("k", entry("v", 1));
  const ticket = cache.readTicket();
  cache.setFromWrite("k", entry(null, 2));
  cache.setFromRead("k", entry("v", 1), ticket);
  expect(text(cache.get("k", 60))).toBeNull();
});

test("two overlapping reads: the older answer landing last does not replace the newer", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  const early = cache.readTicket();
  const late = cache.readTicket();
  cache.setFromRead("k", entry("v2", 2), late);
  cache.setFromRead("k", entry("v1", 1), early);
  expect(text(cache.get("k", 60))).toBe("v2");
});

test("concurrent local writes acknowledged out of order keep the newer version", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  cache.setFromWrite("k", entry("second", 2));
  cache.setFromWrite("k", entry("first", 1));
  expect(text(cache.get("k", 60))).toBe("second");
});

test("a row purged from storage replaces the cached entry when read afresh", () => {
  const clock = manualClock();
  const cache = createReadCache({ maxBytes: 1e6, clock });
  cache.setFromWrite("k", entry(null, 5));
  clock.advance(61_000);
  // The tombstone was purged: storage answers "nothing" with the zero version, and that answer is current.
  cache.setFromRead("k", { ...entry(null), version: ZERO_VERSION }, cache.readTicket());
  expect(text(cache.get("k", 60))).toBeNull();
});

test("a read that overlapped the eviction of a newer entry is answered but not kept", () => {
  const cache = createReadCache({ maxBytes: 4_000, clock: manualClock() });
  const ticket = cache.readTicket();
  cache.setFromWrite("k", entry("new", 2));
  for (let i = 0; i < 20; i++) cache.setFromWrite(`filler${i}`, entry("x".repeat(40)));
  expect(cache.get("k", 60)).toBeUndefined();
  cache.setFromRead("k", entry("old", 1), ticket);
  expect(cache.get("k", 60)).toBeUndefined();
  cache.setFromRead("k", entry("new", 2), cache.readTicket());
  expect(text(cache.get("k", 60))).toBe("new");
});

test("a cached value never pins a larger buffer it was a view of", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  const body = new Uint8Array(100_000);
  cache.setFromWrite("k", { ...entry(null), value: body.subarray(10, 20) });
  const got = cache.get("k", 60)!;
  expect(got.value!.byteLength).toBe(10);
  expect(got.value!.buffer.byteLength).toBe(10);
});

test("versions stay strictly increasing when the wall clock steps back", () => {
  const clock = manualClock(5_000_000);
  const vc = createVersionClock(clock);
  const a = vc.next();
  expect(a.ts).toBe(5_000_000_000);
  clock.set(1_000_000);
  const b = vc.next();
  const c = vc.next();
  expect(compareVersions(b, a)).toBeGreaterThan(0);
  expect(compareVersions(c, b)).toBeGreaterThan(0);
  vc.observe({ ts: 9e15, nonce: 0 });
  expect(vc.next().ts).toBeGreaterThan(9e15);
  expect(compareVersions({ ts: 1, nonce: 2 }, { ts: 1, nonce: 1 })).toBeGreaterThan(0);
  expect(compareVersions({ ts: 2, nonce: 0 }, { ts: 1, nonce: 0x7ffffffe })).toBeGreaterThan(0);
});

test("nonces are random 31-bit integers", () => {
  const vc = createVersionClock(manualClock());
  const nonces = Array.from({ length: 1000 }, () => vc.next().nonce);
  expect(nonces.every((n) => Number.isInteger(n) && n >= 0 && n <= 0x7fffffff)).toBe(true);
  expect(new Set(nonces).size).toBeGreaterThan(990);
  expect(createVersionClock(manualClock(), () => 0.999999999999).next().nonce).toBeLessThanOrEqual(0x7fffffff);
});

test("eviction follows use: keys read again survive a stream of new keys, unread ones go", () => {
  const cache = createReadCache({ maxBytes: 100 * entrySize("k000", entry("x".repeat(100))), clock: manualClock() });
  for (let i = 0; i < 100; i++) cache.setFromWrite(`k${String(i).padStart(3, "0")}`, entry("x".repeat(100)));
  const hot = ["k000", "k001", "k002", "k003"];
  for (let i = 100; i < 400; i++) {
    for (const h of hot) expect(cache.get(h, 60)).toBeDefined();
    cache.setFromWrite(`k${String(i).padStart(3, "0")}`, entry("x".repeat(100)));
  }
  expect(cache.entries).toBe(100);
  expect(cache.get("k004", 60)).toBeUndefined();
  expect(cache.get("k299", 60)).toBeUndefined();
  expect(cache.get("k399", 60)).toBeDefined();
});
