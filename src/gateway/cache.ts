// The in-process read cache: an LRU bounded in bytes, holding values and negative entries.
// Write-through from this process gives read-your-own-write. Versions keep it monotonic: a read or write that
// lands late never replaces a newer entry, and a read that overlapped the eviction of a newer entry is not kept.
import type { Clock } from "../clock.ts";
import { compareVersions, type Version } from "../storage/entry.ts";

export interface CachedEntry {
  /** null for a negative entry (missing or deleted key). */
  value: Uint8Array | null;
  /** Serialized JSON, parsed only when asked for. */
  metadata: string | null;
  expiration: number | null;
  version: Version;
}

interface Slot extends CachedEntry {
  storedAt: number;
  size: number;
  /** Cache sequence when stored: compared with read tickets. */
  seq: number;
  /** `moves` when this slot last went to the recent end of the LRU order. */
  movedAt: number;
}

export interface ReadCache {
  /** A fresh entry (younger than ttlSeconds, not expired), or undefined. Never does I/O. */
  get(key: string, ttlSeconds: number): CachedEntry | undefined;
  /** Sequence to pass to setFromRead, taken before the storage read starts. */
  readTicket(): number;
  /** Keeps a storage read's answer unless something newer was cached, or dropped, since the read began. */
  setFromRead(key: string, entry: CachedEntry, ticket: number): void;
  /** Write-through of an acknowledged local write (value or tombstone), unless a newer version is cached. */
  setFromWrite(key: string, entry: CachedEntry): void;
  /**
   * An acknowledged local write. A cached entry of the key takes the newer version (as setFromWrite); an
   * uncached key is added only while the cache has room for it. A full cache does not let writes push out what
   * reads brought in (a write-only load would flush it, and pay an insertion and an eviction per write): the key
   * stays out, reads of it in flight are kept from caching what they bring back (they may predate the write), and
   * the next read goes to storage, which holds the write (read-your-own-write).
   */
  noteWrite(key: string, entry: CachedEntry): void;
  /** Evicts the matching keys; no read in flight when it runs is kept (they may predate the change). */
  deleteWhere(pred: (key: string) => boolean): void;
  /**
   * Another instance changed these keys of a namespace (by keyHash): evicts them, and keeps a read of one of
   * them already in flight from caching what it brings back (it may predate the change). Reads of other keys
   * are unaffected. Returns how many entries were evicted.
   */
  evictHashed(ns: string, hashes: readonly number[]): number;
  /** As evictHashed for every key of the namespace (too many changed to name them). */
  evictNamespace(ns: string): number;
  /** Evicts everything (an invalidation channel was lost and messages may be missing). */
  clear(): void;
  readonly bytes: number;
  readonly entries: number;
}

/**
 * The hash cross-instance invalidation names a key by: xxHash32 (seed 0) of the key's UTF-8 bytes, so a key
 * as a string and as its encoded bytes hash alike. Cache keys are `${ns}\0${key}`.
 */
export const keyHash = (key: string | Uint8Array): number => Bun.hash.xxHash32(key, 0);
const nsHash = (ns: string): number => Bun.hash.xxHash32(ns, 1);

/**
 * Map entry, slot object, Uint8Array header, version object and the hash index's share, as measured on Bun's
 * heap after a full collection (test/gateway/cache-heap.test.ts): 160 here left a 288-byte value's entry
 * holding 1.31 times what was counted.
 */
export const SLOT_OVERHEAD_BYTES = 330;
/** One value may take at most this share of the bound, so a few large values cannot flush everything else. */
const MAX_ENTRY_SHARE = 8;
/**
 * Changes remembered for reads in flight: a table of this many slots, each holding the sequence of the last
 * change (a remote eviction or a local write) of any key hashing to it. A read whose ticket is below its key's
 * slot is answered but not kept; two keys sharing a slot only cost a read that is not kept. Fixed size: nothing
 * is allocated per change. Namespace-wide evictions are remembered by namespace, up to MAX_EVICTED_NAMESPACES.
 */
const CHANGE_SLOTS = 1 << 16;
const MAX_EVICTED_NAMESPACES = 1024;

export const entrySize = (key: string, e: CachedEntry) => SLOT_OVERHEAD_BYTES + key.length * 2 + (e.value?.byteLength ?? 0) + (e.metadata?.length ?? 0) * 2;

/** Values up to this size are always copied into the cache: cheaper than asking whether they need it (below). */
const COPY_ALWAYS_BYTES = 4096;
// A view into a larger buffer (a request body, a network read) would pin all of it: keep a copy instead. Asking a
// typed array for its .buffer makes JSC allocate an ArrayBuffer for it and move its bytes out of line (0.5-1 µs,
// 2.5% of kvdrive's CPU per PUT under load, and a heavier cached value); copying a small value costs less.
const own = (v: Uint8Array | null) => (v === null || (v.byteLength > COPY_ALWAYS_BYTES && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) ? v : v.slice());

export function createReadCache(opts: { maxBytes: number; clock: Clock }): ReadCache {
  const map = new Map<string, Slot>();
  const maxEntry = Math.floor(opts.maxBytes / MAX_ENTRY_SHARE);
  let bytes = 0;
  let seq = 0;
  // Re-inserts into the Map (stores and promotions). A hit promotes only a slot in the older half of the order:
  // a hot key then costs no Map churn, and only the older half is ever at risk of eviction.
  let moves = 0;
  // Highest seq among slots dropped (evicted, too large, deleted): a read whose ticket is below it may be older
  // than what was dropped, and is answered but not kept.
  let droppedSeq = 0;
  // The change table (see CHANGE_SLOTS) and namespace-wide evictions (namespace -> seq).
  const changedAt = new Float64Array(CHANGE_SLOTS);
  const slotOf = (ns: string, h: number) => (h ^ nsHash(ns)) & (CHANGE_SLOTS - 1);
  let evictedNamespaces = new Map<string, number>();

  // Namespace -> key hash -> cache keys, for evictHashed: eviction costs the keys evicted, not a scan.
  const byHash = new Map<string, Map<number, string | string[]>>();
  const splitKey = (key: string) => {
    const i = key.indexOf("\0");
    return i < 0 ? null : { ns: key.slice(0, i), h: keyHash(key.slice(i + 1)) };
  };
  function indexAdd(key: string) {
    const p = splitKey(key);
    if (!p) return;
    let hs = byHash.get(p.ns);
    if (!hs) byHash.set(p.ns, (hs = new Map()));
    const cur = hs.get(p.h);
    if (cur === undefined) hs.set(p.h, key);
    else if (typeof cur === "string") {
      if (cur !== key) hs.set(p.h, [cur, key]);
    } else if (!cur.includes(key)) cur.push(key);
  }
  function indexRemove(key: string) {
    const p = splitKey(key);
    if (!p) return;
    const hs = byHash.get(p.ns);
    const cur = hs?.get(p.h);
    if (cur === undefined) return;
    if (typeof cur === "string") {
      if (cur === key) hs!.delete(p.h);
    } else {
      const rest = cur.filter((k) => k !== key);
      if (rest.length === 0) hs!.delete(p.h);
      else hs!.set(p.h, rest.length === 1 ? rest[0]! : rest);
    }
    if (hs!.size === 0) byHash.delete(p.ns);
  }

  // Map iterates in insertion order and a hit re-inserts: the first slots are the least recently used. The
  // eviction cursor is one iterator kept across evictions: every slot before it has been evicted, so it never
  // walks them again (a fresh \`for…of\` from the start steps over every deleted slot still in the table: 20 µs
  // an eviction at 100,000 entries, paid by each write or miss once the cache was full).
  let cursor = map.entries();
  function oldest(): [string, Slot] {
    let r = cursor.next();
    if (r.done) r = (cursor = map.entries()).next();
    return r.value!;
  }

  const drop = (key: string, slot: Slot) => {
    map.delete(key);
    indexRemove(key);
    bytes -= slot.size;
    if (slot.seq > droppedSeq) droppedSeq = slot.seq;
  };

  function remember(ns: string, hashes: readonly number[] | null): number {
    const at = ++seq;
    if (hashes === null) {
      if (evictedNamespaces.size >= MAX_EVICTED_NAMESPACES) {
        // Forgetting them would let a read older than one of these evictions be kept: drop every read in flight.
        droppedSeq = at;
        evictedNamespaces = new Map();
      }
      evictedNamespaces.set(ns, at);
    } else for (const h of hashes) changedAt[slotOf(ns, h)] = at;
    return at;
  }

  /** A change of this key (or its namespace) happened after the read with this ticket began. */
  function changedSince(key: string, ticket: number): boolean {
    const p = splitKey(key);
    if (!p) return false;
    return changedAt[slotOf(p.ns, p.h)]! > ticket || (evictedNamespaces.size > 0 && (evictedNamespaces.get(p.ns) ?? 0) > ticket);
  }

  function dropAll(cur: string | string[]): number {
    let n = 0;
    for (const k of typeof cur === "string" ? [cur] : [...cur]) {
      const slot = map.get(k);
      if (slot) {
        drop(k, slot);
        n++;
      }
    }
    return n;
  }

  function store(key: string, entry: CachedEntry, size = entrySize(key, entry)) {
    const old = map.get(key);
    if (old) {
      map.delete(key);
      bytes -= old.size;
    }
    const slotSeq = ++seq;
    if (size > maxEntry) {
      if (old) indexRemove(key);
      droppedSeq = slotSeq;
      return;
    }
    if (!old) indexAdd(key);
    map.set(key, { value: own(entry.value), metadata: entry.metadata, expiration: entry.expiration, version: entry.version, storedAt: opts.clock.now(), size, seq: slotSeq, movedAt: ++moves });
    bytes += size;
    while (bytes > opts.maxBytes) {
      const [k, s] = oldest();
      drop(k, s);
    }
  }

  return {
    get(key, ttlSeconds) {
      const slot = map.get(key);
      if (!slot) return undefined;
      const now = opts.clock.now();
      if (now - slot.storedAt >= ttlSeconds * 1000) return undefined;
      if (moves - slot.movedAt > map.size >> 1) {
        map.delete(key);
        map.set(key, slot);
        slot.movedAt = ++moves;
      }
      if (slot.expiration !== null && slot.expiration * 1000 <= now) return { value: null, metadata: null, expiration: null, version: slot.version };
      return slot;
    },
    readTicket: () => seq,
    setFromRead(key, entry, ticket) {
      if (droppedSeq > ticket || changedSince(key, ticket)) return;
      const old = map.get(key);
      // An older answer is kept only when the newer slot was already cached before the read began: then storage
      // really has nothing newer (the row was purged) and the answer is current.
      if (old && old.seq > ticket && compareVersions(entry.version, old.version) < 0) return;
      store(key, entry);
    },
    setFromWrite(key, entry) {
      const old = map.get(key);
      // The conditional upsert did not apply an older write either; storage and cache agree on the newer one.
      if (old && compareVersions(entry.version, old.version) < 0) return;
      store(key, entry);
    },
    noteWrite(key, entry) {
      const old = map.get(key);
      if (old) {
        if (compareVersions(entry.version, old.version) >= 0) store(key, entry);
        return;
      }
      const size = entrySize(key, entry);
      if (bytes + size <= opts.maxBytes) return store(key, entry, size);
      const p = splitKey(key);
      if (p) changedAt[slotOf(p.ns, p.h)] = ++seq;
      else droppedSeq = ++seq;
    },
    deleteWhere(pred) {
      droppedSeq = ++seq;
      for (const [k, s] of map) if (pred(k)) drop(k, s);
    },
    evictHashed(ns, hashes) {
      remember(ns, hashes);
      const hs = byHash.get(ns);
      if (!hs) return 0;
      let n = 0;
      for (const h of hashes) {
        const cur = hs.get(h);
        if (cur !== undefined) n += dropAll(cur);
      }
      return n;
    },
    evictNamespace(ns) {
      remember(ns, null);
      const hs = byHash.get(ns);
      if (!hs) return 0;
      let n = 0;
      for (const cur of [...hs.values()]) n += dropAll(cur);
      return n;
    },
    clear() {
      map.clear();
      cursor = map.entries();
      byHash.clear();
      bytes = 0;
      droppedSeq = ++seq;
      evictedNamespaces = new Map();
    },
    get bytes() {
      return bytes;
    },
    get entries() {
      return map.size;
    },
  };
}
