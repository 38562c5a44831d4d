// The read cache's remote eviction (src/gateway/cache.ts evictHashed, evictNamespace): exactly the named keys go,
// the byte and entry counts follow, and a read in flight of an evicted key is answered but not kept, while reads
// of other keys still are.
import { expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { createReadCache, entrySize, keyHash, type CachedEntry } from "../../src/gateway/cache.ts";

const entry = (v: string, ts = 1): CachedEntry => ({ value: new TextEncoder().encode(v), metadata: null, expiration: null, version: { ts, nonce: 0 } });
const cache = () => createReadCache({ maxBytes: 1 << 24, clock: manualClock() });

/** Two distinct keys with one xxHash32 (found by search): the index must keep both. */
const COLLIDING = ["c6060", "c820911"] as const;

test("keyHash is the hash of the key's UTF-8 bytes, as a string or as bytes", () => {
  for (const k of ["a", "ключ/😀", "a\0b", ""]) expect(keyHash(k)).toBe(keyHash(new TextEncoder().encode(k)));
  expect(keyHash("a")).not.toBe(keyHash("b"));
});

test("evictHashed evicts exactly the keys of that namespace with a listed hash, and the counts follow", () => {
  const c = cache();
  const [x, y] = COLLIDING;
  expect(keyHash(x)).toBe(keyHash(y));
  const keys = ["ns1\0a", "ns1\0b", "ns1\0c", `ns1\0${x}`, `ns1\0${y}`, "ns2\0a", "ns2\0b", "nosep"];
  for (const k of keys) c.setFromWrite(k, entry("value of " + k));
  const all = keys.reduce((n, k) => n + entrySize(k, entry("value of " + k)), 0);
  expect(c.bytes).toBe(all);

  expect(c.evictHashed("ns1", [keyHash("a"), keyHash(x), keyHash("absent")])).toBe(3);
  const gone = ["ns1\0a", `ns1\0${x}`, `ns1\0${y}`];
  for (const k of keys) expect(c.get(k, 60) === undefined).toBe(gone.includes(k));
  expect(c.entries).toBe(keys.length - 3);
  expect(c.bytes).toBe(all - gone.reduce((n, k) => n + entrySize(k, entry("value of " + k)), 0));

  expect(c.evictHashed("ns1", [keyHash("a")])).toBe(0);
  expect(c.evictHashed("ns3", [keyHash("a")])).toBe(0);
  // A key stored again after its eviction is indexed again.
  c.setFromWrite("ns1\0a", entry("again"));
  expect(c.evictHashed("ns1", [keyHash("a")])).toBe(1);
});

test("evictNamespace evicts every key of that namespace and no other", () => {
  const c = cache();
  for (let i = 0; i < 100; i++) {
    c.setFromWrite(`ns1\0k${i}`, entry("v"));
    c.setFromWrite(`ns10\0k${i}`, entry("v"));
  }
  const kept = c.bytes - Array.from({ length: 100 }, (_, i) => entrySize(`ns1\0k${i}`, entry("v"))).reduce((a, b) => a + b);
  expect(c.evictNamespace("ns1")).toBe(100);
  expect(c.entries).toBe(100);
  expect(c.bytes).toBe(kept);
  expect(c.get("ns10\0k7", 60)).toBeDefined();
  expect(c.evictNamespace("ns1")).toBe(0);
});

test("an LRU drop and an overwrite keep the index right", () => {
  const c = createReadCache({ maxBytes: 8 * entrySize("ns\0k00", entry("x".repeat(100))), clock: manualClock() });
  for (let i = 0; i < 20; i++) c.setFromWrite(`ns\0k${String(i).padStart(2, "0")}`, entry("x".repeat(100), i + 1));
  c.setFromWrite("ns\0k19", entry("y".repeat(100), 100));
  const hashes = Array.from({ length: 20 }, (_, i) => keyHash(`k${String(i).padStart(2, "0")}`));
  expect(c.evictHashed("ns", hashes)).toBe(8);
  expect(c.entries).toBe(0);
  expect(c.bytes).toBe(0);
});

test("a read in flight when its key is evicted is answered but not kept; reads of other keys are kept", () => {
  const c = cache();
  c.setFromWrite("ns\0x", entry("old", 1));
  const before = c.readTicket();
  expect(c.evictHashed("ns", [keyHash("x")])).toBe(1);
  c.setFromRead("ns\0x", entry("read before the remote write", 1), before);
  expect(c.get("ns\0x", 60)).toBeUndefined();
  // Uncached keys too: the read may have started before the change it missed.
  c.evictHashed("ns", [keyHash("never cached")]);
  c.setFromRead("ns\0never cached", entry("old"), before);
  expect(c.get("ns\0never cached", 60)).toBeUndefined();
  // Other keys and other namespaces are not held back.
  c.setFromRead("ns\0y", entry("y"), before);
  c.setFromRead("other\0x", entry("x elsewhere"), before);
  expect(c.get("ns\0y", 60)).toBeDefined();
  expect(c.get("other\0x", 60)).toBeDefined();
  // A read that began after the eviction is kept.
  c.setFromRead("ns\0x", entry("fresh", 2), c.readTicket());
  expect(c.get("ns\0x", 60)).toBeDefined();
});

test("a read in flight when its namespace is evicted whole is not kept", () => {
  const c = cache();
  const before = c.readTicket();
  c.evictNamespace("ns");
  c.setFromRead("ns\0x", entry("old"), before);
  c.setFromRead("ns2\0x", entry("other namespace"), before);
  expect(c.get("ns\0x", 60)).toBeUndefined();
  expect(c.get("ns2\0x", 60)).toBeDefined();
  c.setFromRead("ns\0x", entry("fresh"), c.readTicket());
  expect(c.get("ns\0x", 60)).toBeDefined();
});

test("past its bound, the record of remote evictions is dropped and every read in flight is held back", () => {
  const c = cache();
  const before = c.readTicket();
  for (let i = 0; i < 20; i++) c.evictHashed("ns", Array.from({ length: 1000 }, (_, j) => i * 1000 + j));
  c.setFromRead("ns2\0unrelated", entry("v"), before);
  expect(c.get("ns2\0unrelated", 60)).toBeUndefined();
  const after = c.readTicket();
  c.setFromRead("ns2\0unrelated", entry("v"), after);
  expect(c.get("ns2\0unrelated", 60)).toBeDefined();
});

test("deleteWhere holds back every read in flight", () => {
  const c = cache();
  const before = c.readTicket();
  c.deleteWhere((k) => k.startsWith("ns\0"));
  c.setFromRead("ns\0x", entry("old"), before);
  expect(c.get("ns\0x", 60)).toBeUndefined();
});
