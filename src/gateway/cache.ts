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

/** Map entry, slot object, Uint8Array header and version object, roughly. */
export const SLOT_OVERHEAD_BYTES = 160;
/** One value may take at most this share of the bound, so a few large values cannot flush everything else. */
const MAX_ENTRY_SHARE = 8;
/**
 * Remote evictions remembered for reads in flight (key hashes plus namespaces). Past this, the record is
 * dropped and every read in flight is treated as overlapping an eviction: correct, only less is kept.
 */
const MAX_REMEMBERED_EVICTIONS = 16_384;

export const entrySize = (key: string, e: CachedEntry) => SLOT_OVERHEAD_BYTES + key.length * 2 + (e.value?.byteLength ?? 0) + (e.metadata?.length ?? 0) * 2;

// A view into a larger buffer (a request body, a network read) would pin all of it: keep a copy instead.
const own = (v: Uint8Array | null) => (v === null || (v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) ? v : v.slice());

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
  // Remote evictions by key (namespace -> key hash -> seq) and by namespace (-> seq): a read whose ticket is
  // below the seq of its key's eviction is answered but not kept, without holding back reads of other keys.
  let evictedKeys = new Map<string, Map<number, number>>();
  let evictedNamespaces = new Map<string, number>();
  let remembered = 0;

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

  const drop = (key: string, slot: Slot) => {
    map.delete(key);
    indexRemove(key);
    bytes -= slot.size;
    if (slot.seq > droppedSeq) droppedSeq = slot.seq;
  };

  function remember(ns: string, hashes: readonly number[] | null): number {
    const at = ++seq;
    if (hashes === null) evictedNamespaces.set(ns, at);
    else if (hashes.length > 0) {
      let hs = evictedKeys.get(ns);
      if (!hs) evictedKeys.set(ns, (hs = new Map()));
      for (const h of hashes) hs.set(h, at);
    }
    remembered += hashes === null ? 1 : hashes.length;
    if (remembered > MAX_REMEMBERED_EVICTIONS) {
      droppedSeq = at;
      evictedKeys = new Map();
      evictedNamespaces = new Map();
      remembered = 0;
    }
    return at;
  }

  /** A remote eviction of this key (or its namespace) happened after the read with this ticket began. */
  function evictedSince(key: string, ticket: number): boolean {
    if (remembered === 0) return false;
    const p = splitKey(key);
    if (!p) return false;
    return (evictedNamespaces.get(p.ns) ?? 0) > ticket || (evictedKeys.get(p.ns)?.get(p.h) ?? 0) > ticket;
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

  function store(key: string, entry: CachedEntry) {
    const size = entrySize(key, entry);
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
    if (bytes > opts.maxBytes) {
      // Map iterates in insertion order and a hit re-inserts: the first slots are the least recently used.
      for (const [k, s] of map) {
        if (bytes <= opts.maxBytes) break;
        drop(k, s);
      }
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
      if (droppedSeq > ticket || evictedSince(key, ticket)) return;
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
      byHash.clear();
      bytes = 0;
      droppedSeq = ++seq;
      evictedKeys = new Map();
      evictedNamespaces = new Map();
      remembered = 0;
    },
    get bytes() {
      return bytes;
    },
    get entries() {
      return map.size;
    },
  };
}
