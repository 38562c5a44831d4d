// KV read cache (src/gateway/cache.ts): a hit, a miss and a write-through among 10,000 entries of 288 bytes; and
// at its byte bound (about 125,000 entries in 64 MiB), a read's insert that evicts the oldest entry, and writes.
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/gateway/cache.ts", "src/clock.ts"])) {
  const { createReadCache } = await import("../../src/gateway/cache.ts");
  const { systemClock } = await import("../../src/clock.ts");
  const cache = createReadCache({ maxBytes: 64 * 1024 * 1024, clock: systemClock });
  const value = new Uint8Array(288);
  const keys = Array.from({ length: 10_000 }, (_, i) => `ns-0123456789abcdef\u0000key-${i}`);
  let v = 1;
  for (const k of keys) cache.setFromWrite(k, { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } });
  let i = 0;
  summary(() => {
    group("read cache, 10k entries", () => {
      bench("get, hit", () => do_not_optimize(cache.get(keys[i++ % keys.length]!, 60)));
      bench("get, miss", () => do_not_optimize(cache.get("ns-0123456789abcdef\u0000absent", 60)));
      bench("setFromWrite (write-through)", () => cache.setFromWrite(keys[i++ % keys.length]!, { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } }));
    });
  });
  // Filled past its bound, so every new key evicts (the eviction cursor keeps this O(1): a walk from the start of
  // the Map stepped over every evicted slot, 44 µs an insert here).
  const full = createReadCache({ maxBytes: 64 * 1024 * 1024, clock: systemClock });
  let n = 0;
  const fresh = () => `ns-0123456789abcdef\u0000fresh-${n++}`;
  while (n < 200_000) full.setFromWrite(fresh(), { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } });
  summary(() => {
    group("read cache at its bound (64 MiB, ~125k entries)", () => {
      bench("setFromRead of a new key (evicts the oldest)", () => full.setFromRead(fresh(), { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } }, full.readTicket()));
      bench("setFromWrite of a new key (evicts the oldest)", () => full.setFromWrite(fresh(), { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } }));
      bench("noteWrite of a new key (no room: not added)", () => full.noteWrite(fresh(), { value, metadata: null, expiration: null, version: { ts: v++, nonce: 1 } }));
    });
  });
  await runMicro();
}
