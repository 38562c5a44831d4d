// The KV read cache's byte bound is honest: what it counts for an entry is about what the entry holds on Bun's
// heap, measured after a full collection, for the entries a PUT load fills it with (288-byte values, keys as
// `${namespace id}\0${key}`). With 160 bytes counted per slot it held 1.31 times what it counted, so a 64 MiB
// bound held about 84 MiB; with 330 it holds 1.00 times (722 bytes an entry).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { manualClock } from "../../src/clock.ts";
import { createReadCache } from "../../src/gateway/cache.ts";

test("50,000 PUT-shaped entries: the heap they hold is within 15% of the bytes the cache counts for them", () => {
  const cache = createReadCache({ maxBytes: 1024 * 1024 * 1024, clock: manualClock(1_000_000) });
  const n = 50_000;
  Bun.gc(true);
  const before = heapStats();
  for (let i = 0; i < n; i++) {
    // A request body: a fresh 288-byte array each time, as a PUT brings it.
    const value = new Uint8Array(288).fill(i & 255);
    cache.setFromWrite(`0f3c9a7e1b2d4c6e8f0a1b2c3d4e5f60\0bench-put-64-${i}`, { value, metadata: null, expiration: null, version: { ts: 1_700_000_000_000_000 + i, nonce: i } });
  }
  Bun.gc(true);
  const after = heapStats();
  const held = after.heapSize + after.extraMemorySize - before.heapSize - before.extraMemorySize;
  expect(cache.bytes / n).toBeGreaterThan(288);
  expect(held / cache.bytes).toBeLessThan(1.15);
  expect(held / cache.bytes).toBeGreaterThan(0.7);
});
