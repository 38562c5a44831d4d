// The read cache on its own: byte bound, LRU order, TTL, and a late read never replacing a newer write.
import { expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { createReadCache } from "../../src/gateway/cache.ts";
import { compareVersions, createVersionClock } from "../../src/gateway/version.ts";

const entry = (v: string, ts = 1) => ({ value: new TextEncoder().encode(v), metadata: null, expiration: null, version: { ts, nonce: 0 } });

test("stays within its byte bound and evicts the least recently used", () => {
  const cache = createReadCache({ maxBytes: 10_000, clock: manualClock() });
  for (let i = 0; i < 100; i++) cache.setFromWrite(`k${i}`, entry("x".repeat(500)));
  expect(cache.bytes).toBeLessThanOrEqual(10_000);
  expect(cache.get("k0", 60)).toBeUndefined();
  expect(cache.get("k99", 60)).toBeDefined();
  cache.setFromWrite("huge", entry("y".repeat(20_000)));
  expect(cache.get("huge", 60)).toBeUndefined();
  expect(cache.bytes).toBeLessThanOrEqual(10_000);
});

test("entries older than the ttl miss; expired values read as missing", () => {
  const clock = manualClock(1_000_000);
  const cache = createReadCache({ maxBytes: 1e6, clock });
  cache.setFromWrite("a", entry("1"));
  cache.setFromWrite("e", { ...entry("2"), expiration: 1_000_000 / 1000 + 10 });
  clock.advance(20_000);
  expect(cache.get("a", 60)?.value).toBeDefined();
  expect(cache.get("e", 60)?.value).toBeNull();
  clock.advance(40_000);
  expect(cache.get("a", 60)).toBeUndefined();
});

test("a read that began before a local write does not replace it", () => {
  const cache = createReadCache({ maxBytes: 1e6, clock: manualClock() });
  const ticket = cache.readTicket();
  cache.setFromWrite("k", entry("new", 2));
  cache.setFromRead("k", entry("old", 1), ticket);
  expect(new TextDecoder().decode(cache.get("k", 60)!.value!)).toBe("new");
  cache.setFromRead("k", entry("fresh", 3), cache.readTicket());
  expect(new TextDecoder().decode(cache.get("k", 60)!.value!)).toBe("fresh");
});

test("versions stay strictly increasing when the wall clock steps back", () => {
  const clock = manualClock(5_000_000);
  const vc = createVersionClock(clock);
  const a = vc.next();
  clock.set(1_000_000);
  const b = vc.next();
  const c = vc.next();
  expect(compareVersions(b, a)).toBeGreaterThan(0);
  expect(compareVersions(c, b)).toBeGreaterThan(0);
  vc.observe({ ts: 9e15, nonce: 0 });
  expect(vc.next().ts).toBeGreaterThan(9e15);
  expect(compareVersions({ ts: 1, nonce: 2 }, { ts: 1, nonce: 1 })).toBeGreaterThan(0);
});
