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

test("any number of remote evictions: each evicted key's read in flight is held back, with nothing kept per eviction", () => {
  const c = cache();
  const before = c.readTicket();
  const keys = Array.from({ length: 200_000 }, (_, i) => `k${i}`);
  // Retained, not allocated: a full collection before each reading, so the 3 MB or so of slices and hash arrays
  // this loop leaves as garbage (or whatever another test file left) does not count.
  Bun.gc(true);
  const heapBefore = process.memoryUsage().heapUsed;
  for (let i = 0; i < keys.length; i += 1000) c.evictHashed("ns", keys.slice(i, i + 1000).map((k) => keyHash(k)));
  Bun.gc(true);
  // The record is a fixed table: 200,000 evictions retain no per-key state (a Map of them took over 10 MB).
  expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(4 * 2 ** 20);
  for (let i = 0; i < keys.length; i += 997) {
    c.setFromRead(`ns\0${keys[i]}`, entry("read before the eviction"), before);
    expect(c.get(`ns\0${keys[i]}`, 60)).toBeUndefined();
  }
  // A read that began after them is kept.
  c.setFromRead("ns\0k5", entry("fresh", 2), c.readTicket());
  expect(c.get("ns\0k5", 60)).toBeDefined();
});

test("past its bound, the record of namespace-wide evictions is dropped and every read in flight is held back", () => {
  const c = cache();
  const before = c.readTicket();
  for (let i = 0; i < 1025; i++) c.evictNamespace(`ns${i}`);
  c.setFromRead("unrelated\0x", entry("v"), before);
  expect(c.get("unrelated\0x", 60)).toBeUndefined();
  c.setFromRead("unrelated\0x", entry("v"), c.readTicket());
  expect(c.get("unrelated\0x", 60)).toBeDefined();
});

test("noteWrite: a cached key takes the newer version; an uncached key is added while there is room, and a full cache keeps it out without evicting", () => {
  const value = "v".repeat(100);
  const c = createReadCache({ maxBytes: 16 * entrySize("ns\0w00", entry(value)), clock: manualClock() });
  const text = (k: string) => new TextDecoder().decode(c.get(k, 60)!.value!);
  c.setFromRead("ns\0hot", entry("old", 1), c.readTicket());
  c.noteWrite("ns\0hot", entry("new", 2));
  expect(text("ns\0hot")).toBe("new");
  // An older acknowledged write (its conditional upsert did not apply) leaves the newer entry.
  c.noteWrite("ns\0hot", entry("older", 1));
  expect(text("ns\0hot")).toBe("new");
  // Room left: written keys are cached, up to the bound.
  for (let i = 0; i < 15; i++) c.noteWrite(`ns\0w${String(i).padStart(2, "0")}`, entry(value));
  expect(c.entries).toBe(16);
  const full = c.bytes;
  // Full: a write of a fresh key evicts nothing and is not added.
  const before = c.readTicket();
  for (let i = 0; i < 50; i++) c.noteWrite(`ns\0fresh${i}`, entry(value, 5));
  expect(c.entries).toBe(16);
  expect(c.bytes).toBe(full);
  expect(text("ns\0hot")).toBe("new");
  expect(text("ns\0w00")).toBe(value);
  expect(c.get("ns\0fresh0", 60)).toBeUndefined();
  // A read that began before the write may bring back the older row: answered, not kept.
  c.setFromRead("ns\0fresh0", entry("older row", 4), before);
  expect(c.get("ns\0fresh0", 60)).toBeUndefined();
  // A read that began after the write is kept (a read may evict, as reads always could).
  c.setFromRead("ns\0fresh0", entry("written", 5), c.readTicket());
  expect(text("ns\0fresh0")).toBe("written");
});

test("deleteWhere holds back every read in flight", () => {
  const c = cache();
  const before = c.readTicket();
  c.deleteWhere((k) => k.startsWith("ns\0"));
  c.setFromRead("ns\0x", entry("old"), before);
  expect(c.get("ns\0x", 60)).toBeUndefined();
});
