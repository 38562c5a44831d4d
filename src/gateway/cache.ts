// The in-process read cache: an LRU bounded in bytes, holding values and negative entries.
// Write-through from this process gives read-your-own-write; a sequence number stops a read that began
// before a local write from replacing the written entry when it lands late.
import type { Clock } from "../clock.ts";
import type { Version } from "./version.ts";

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
  seq: number;
}

export interface ReadCache {
  /** A fresh entry (younger than ttlSeconds and not expired), or undefined. Never does I/O. */
  get(key: string, ttlSeconds: number): CachedEntry | undefined;
  /** Sequence to pass to setFromRead: taken before a storage read starts. */
  readTicket(): number;
  /** Stores a storage read's answer unless a local write to the key happened after the read began. */
  setFromRead(key: string, entry: CachedEntry, ticket: number): void;
  /** Write-through of an acknowledged local write (value or tombstone). */
  setFromWrite(key: string, entry: CachedEntry): void;
  deleteWhere(pred: (key: string) => boolean): void;
  readonly bytes: number;
  readonly entries: number;
  readonly hits: number;
  readonly misses: number;
}

const SLOT_OVERHEAD = 96;

export function createReadCache(opts: { maxBytes: number; clock: Clock }): ReadCache {
  const map = new Map<string, Slot>();
  let bytes = 0;
  let seq = 0;
  let hits = 0;
  let misses = 0;

  const remove = (key: string, slot: Slot) => {
    map.delete(key);
    bytes -= slot.size;
  };

  function store(key: string, entry: CachedEntry, slotSeq: number) {
    const size = SLOT_OVERHEAD + key.length * 2 + (entry.value?.byteLength ?? 0) + (entry.metadata?.length ?? 0) * 2;
    const old = map.get(key);
    if (old) remove(key, old);
    if (size > opts.maxBytes) return;
    map.set(key, { ...entry, storedAt: opts.clock.now(), size, seq: slotSeq });
    bytes += size;
    if (bytes > opts.maxBytes) {
      for (const [k, s] of map) {
        if (bytes <= opts.maxBytes) break;
        remove(k, s);
      }
    }
  }

  return {
    get(key, ttlSeconds) {
      const slot = map.get(key);
      if (!slot) {
        misses++;
        return undefined;
      }
      const now = opts.clock.now();
      if (now - slot.storedAt >= ttlSeconds * 1000) {
        misses++;
        return undefined;
      }
      // Refresh recency: Map keeps insertion order, so the first entries are the least recently used.
      map.delete(key);
      map.set(key, slot);
      hits++;
      if (slot.expiration !== null && slot.expiration * 1000 <= now) return { value: null, metadata: null, expiration: null, version: slot.version };
      return slot;
    },
    readTicket: () => seq,
    setFromRead(key, entry, ticket) {
      const old = map.get(key);
      if (old && old.seq > ticket) return;
      store(key, entry, old?.seq ?? 0);
    },
    setFromWrite(key, entry) {
      store(key, entry, ++seq);
    },
    deleteWhere(pred) {
      for (const [k, s] of map) if (pred(k)) remove(k, s);
    },
    get bytes() {
      return bytes;
    },
    get entries() {
      return map.size;
    },
    get hits() {
      return hits;
    },
    get misses() {
      return misses;
    },
  };
}
