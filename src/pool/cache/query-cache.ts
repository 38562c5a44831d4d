// The query cache: recorded response messages of cacheable reads, with Hyperdrive's freshness rules
// (max_age, then stale-while-revalidate with one background refresh), single flight for concurrent misses,
// a byte-bounded cache evicting by CLOCK (an LRU approximation), and invalidation by table when a write through the proxy touches what an entry read.
//
// Used by cache-path.ts: createQueryCache({ config, clock, metrics, volatility }) ->
//   lookup(key, readTables, load) -> { status: 'hit'|'stale'|'miss'|'uncacheable'|'disabled', messages }
//     `load` runs the statement on an origin connection and resolves to its response messages, or null when
//     the result must not be cached (an error, COPY, a result over KVDRIVE_QUERY_CACHE_MAX_RESULT_BYTES):
//     then messages is empty and the caller runs the statement the ordinary way.
//   invalidate(database, tables)  ('*' = every table of the database)
//   isVolatile(database, functions)
//   fresh(id) -> the slot of a fresh answer (a hit, counted), else -1: the synchronous hit path; reply(slot, form,
//     build) -> the answer in a wire form; has(id) -> whether a fresh answer is held (nothing counted)
//   keyPrefix(k) -> the statement part of keys, interned (short); key(k) -> an exact key
//   knownVolatile(database, functions) -> the remembered answer of isVolatile, undefined when not known yet
//   recorder(key, readTables) -> for a miss that the caller runs itself (streaming the answer to its client):
//     done(messages | null) stores the answer (counted as a miss) unless a write invalidated its tables
//     meanwhile, done(null) gives up; until done, identical lookups wait for it (single flight); recorder()
//     is null when an entry (stale) or a load for the key exists, then lookup handles it
import type { Clock } from "../../clock.ts";
import type { Config } from "../../config.ts";
import type { Registry } from "../../metrics/registry.ts";
import type { CacheStatus } from "./classify.ts";
import { cacheKey, keyPrefix, keyTail, type QueryKey } from "./key.ts";

export interface LookupResult {
  status: CacheStatus;
  messages: Uint8Array[];
}

/** A load or recording in flight, and whether a write touched what it reads meanwhile. */
interface Watch {
  database: string;
  tables: string[];
  dirty: boolean;
}

/** Entries that read the same tables of one database: invalidated together, listed through their slots. */
interface Group {
  id: string;
  database: string;
  tables: string[];
  /** First slot of the list (-1: none), and how many. */
  head: number;
  count: number;
}

/**
 * What an entry costs beyond its key's characters and its answer's bytes, measured with Bun's heapStats() after
 * a full collection (bench/micro/query-cache-heap.ts): the Map's record and the key's string cell, the answer's
 * Uint8Array, and this cache's per-slot arrays: about 275 bytes for 50,000 to 300,000 small entries (it was about
 * 480 with an entry object, a Set of keys per table and the full statement text in every key). Charged to the byte
 * bound, so 64 MiB means about 64 MiB of heap.
 */
const ENTRY_OVERHEAD = 280;
/** What a built reply costs beyond its bytes (its own Uint8Array): measured in a real pooler (pgbench -M prepared, 40,000 entries hit). */
const REPLY_OVERHEAD = 96;
const REFERENCED = 1;
const REFRESHING = 2;
const VOLATILITY_TTL_MS = 60_000;

export function createQueryCache(o: { config: Config; clock: Clock; metrics: Registry; volatility?: (database: string, functions: string[]) => Promise<boolean> }) {
  const { config, clock } = o;
  const maxAgeMs = config.queryCacheMaxAge * 1000;
  const swrMs = config.queryCacheSwr * 1000;
  const maxBytes = config.queryCacheBytes;
  // Entries live in slots: the key maps to a slot number, and what an entry holds is spread over arrays indexed
  // by it (its key, its answer in one buffer, one built reply, times, flags, its group's list links). Per entry
  // that is a key string, one Uint8Array and a Map record: no entry object, no Set of keys per table.
  const slots = new Map<string, number>();
  const keys: Array<string | undefined> = [];
  const answers: Array<Uint8Array | undefined> = [];
  const replies: Array<Uint8Array | undefined> = [];
  let replyForm = new Int8Array(1024);
  let storedAt = new Float64Array(1024);
  let charged = new Uint32Array(1024);
  let flags = new Uint8Array(1024);
  let groupOf = new Int32Array(1024);
  let next = new Int32Array(1024);
  let prev = new Int32Array(1024);
  const free: number[] = [];
  let used = 0;
  let hand = 0;
  // Groups by number (slots point at them) and by database. Only table sets some entry read are here: a NOTIFY
  // naming any other table (400,000 invented names, say) finds nothing and leaves nothing behind.
  const groups: Array<Group | undefined> = [];
  const groupIds = new Map<string, number>();
  const groupsByDb = new Map<string, Set<number>>();
  const freeGroups: number[] = [];
  // The statement parts of keys, interned: a key is a short number and the Bind's bytes, not the database, user,
  // session and SQL text again for every parameter. Numbers are never reused, so forgetting the table (past its
  // bound) leaves older keys unreachable, never wrong.
  const prefixes = new Map<string, string>();
  let prefixChars = 0;
  let nextPrefix = 0;
  const maxPrefixChars = maxBytes >>> 4;
  const inflight = new Map<string, Promise<Uint8Array[] | null>>();
  // database -> loads and recordings in flight: an invalidation of a table one of them reads marks it dirty,
  // and a dirty answer is not stored. Nothing is kept per table name between loads.
  const watches = new Map<string, Set<Watch>>();
  const volatileAnswers = new Map<string, { at: number; answer: Promise<boolean>; value?: boolean }>();
  let bytes = 0;

  const requests = o.metrics.counter("kvdrive_query_cache_requests_total", "Query cache lookups by status");
  const byStatus = new Map<CacheStatus, { inc(by?: number): void }>();
  const counted = (status: CacheStatus) => {
    let c = byStatus.get(status);
    if (!c) byStatus.set(status, (c = requests.with({ status })));
    return c;
  };
  const invalidations = o.metrics.counter("kvdrive_query_cache_invalidations_total", "Cached results dropped because a write touched their tables");
  o.metrics.gauge("kvdrive_query_cache_bytes", "Bytes held by the query cache", () => [[undefined, bytes]]);
  o.metrics.gauge("kvdrive_query_cache_entries", "Results held by the query cache", () => [[undefined, slots.size]]);

  function internPrefix(full: string): string {
    let p = prefixes.get(full);
    if (p !== undefined) return p;
    if (prefixChars + full.length > maxPrefixChars) {
      bytes -= prefixChars;
      prefixes.clear();
      prefixChars = 0;
    }
    p = "#" + (nextPrefix++).toString(36) + ":"; // a full key starts with a digit: never the same string
    prefixes.set(full, p);
    prefixChars += full.length;
    bytes += full.length;
    return p;
  }
  const prefixOf = (k: QueryKey) => internPrefix(keyPrefix(k));

  function watch(database: string, tables: string[]): Watch {
    const w: Watch = { database, tables, dirty: false };
    let set = watches.get(database);
    if (!set) watches.set(database, (set = new Set()));
    set.add(w);
    return w;
  }
  function unwatch(w: Watch) {
    const set = watches.get(w.database);
    if (!set) return;
    set.delete(w);
    if (!set.size) watches.delete(w.database);
  }

  function grow() {
    const n = replyForm.length * 2;
    const more = <T extends Int8Array | Uint8Array | Int32Array | Uint32Array | Float64Array>(a: T, make: (n: number) => T) => {
      const b = make(n);
      b.set(a as never);
      return b;
    };
    replyForm = more(replyForm, (n) => new Int8Array(n));
    storedAt = more(storedAt, (n) => new Float64Array(n));
    charged = more(charged, (n) => new Uint32Array(n));
    flags = more(flags, (n) => new Uint8Array(n));
    groupOf = more(groupOf, (n) => new Int32Array(n));
    next = more(next, (n) => new Int32Array(n));
    prev = more(prev, (n) => new Int32Array(n));
  }

  function groupFor(database: string, tables: string[]): number {
    const id = database + "\0" + tables.join("\0");
    let g = groupIds.get(id);
    if (g !== undefined) return g;
    g = freeGroups.pop() ?? groups.length;
    groups[g] = { id, database, tables, head: -1, count: 0 };
    groupIds.set(id, g);
    let set = groupsByDb.get(database);
    if (!set) groupsByDb.set(database, (set = new Set()));
    set.add(g);
    return g;
  }

  function removeSlot(s: number) {
    const key = keys[s]!;
    slots.delete(key);
    bytes -= charged[s]!;
    keys[s] = answers[s] = replies[s] = undefined;
    flags[s] = 0;
    const g = groups[groupOf[s]!]!;
    if (prev[s]! >= 0) next[prev[s]!] = next[s]!;
    else g.head = next[s]!;
    if (next[s]! >= 0) prev[next[s]!] = prev[s]!;
    if (--g.count === 0) {
      groupIds.delete(g.id);
      const set = groupsByDb.get(g.database)!;
      set.delete(groupOf[s]!);
      if (!set.size) groupsByDb.delete(g.database);
      groups[groupOf[s]!] = undefined;
      freeGroups.push(groupOf[s]!);
    }
    free.push(s);
  }

  function remove(key: string) {
    const s = slots.get(key);
    if (s !== undefined) removeSlot(s);
  }

  function store(key: string, database: string, tables: string[], messages: Uint8Array[]) {
    let result = 0;
    for (const m of messages) result += m.byteLength;
    const size = ENTRY_OVERHEAD + key.length + result;
    if (result > config.queryCacheMaxResultBytes || size > maxBytes) return;
    remove(key);
    // One buffer of exactly the answer's size (the recorder's may be a view of a larger one).
    const answer = new Uint8Array(result);
    let at = 0;
    for (const m of messages) {
      answer.set(m, at);
      at += m.byteLength;
    }
    const s = free.length ? free.pop()! : used++;
    if (s >= replyForm.length) grow();
    slots.set(key, s);
    keys[s] = key;
    answers[s] = answer;
    replies[s] = undefined;
    storedAt[s] = clock.now();
    charged[s] = size;
    flags[s] = 0;
    const g = groupFor(database, tables);
    const group = groups[g]!;
    groupOf[s] = g;
    prev[s] = -1;
    next[s] = group.head;
    if (group.head >= 0) prev[group.head] = s;
    group.head = s;
    group.count++;
    bytes += size;
    evict();
  }

  /**
   * Drops entries until the byte bound holds, with a clock hand over the slots (the CLOCK approximation of LRU,
   * as Postgres' buffer manager does it): an entry hit since the hand last passed keeps its place once. A slot
   * freed is reused by the next entry stored, which the hand then reaches last.
   */
  function evict() {
    for (let steps = 2 * used + 2; bytes > maxBytes && slots.size && steps > 0; steps--) {
      if (hand >= used) hand = 0;
      const s = hand++;
      if (keys[s] === undefined) continue;
      if (flags[s]! & REFERENCED) {
        flags[s]! &= ~REFERENCED;
        continue;
      }
      removeSlot(s);
    }
  }

  /** Runs a load and stores its answer unless a write invalidated its tables while it ran. */
  function loadAndStore(key: string, database: string, tables: string[], load: () => Promise<Uint8Array[] | null>): Promise<Uint8Array[] | null> {
    const w = watch(database, tables);
    return load()
      .then((messages) => {
        if (messages && !w.dirty) store(key, database, tables, messages);
        return messages;
      })
      .finally(() => unwatch(w));
  }

  function count(status: CacheStatus, messages: Uint8Array[]): LookupResult {
    counted(status).inc();
    return { status, messages };
  }

  /** The slot of a fresh entry, marked as used (see evict); -1 when absent or past max_age. */
  function fresh(key: string): number {
    const s = slots.get(key);
    if (s === undefined || clock.now() - storedAt[s]! >= maxAgeMs) return -1;
    flags[s]! |= REFERENCED;
    return s;
  }

  const volatileId = (database: string, functions: string[]) => database + "\0" + (functions.length > 1 ? [...functions].sort().join(",") : functions[0]);

  return {
    /** The exact key (cacheKey), for a statement seen once: a simple Query's text, say. */
    key: cacheKey,
    /** The statement part of keys for a statement that is called again and again: interned, short. */
    keyPrefix: prefixOf,
    keyTail,

    /** The slot of a fresh entry for an exact key (a hit, counted), or -1: the synchronous hit path. */
    fresh(key: string): number {
      const s = fresh(key);
      if (s >= 0) counted("hit").inc();
      return s;
    },

    has(key: string): boolean {
      const s = slots.get(key);
      return s !== undefined && clock.now() - storedAt[s]! < maxAgeMs;
    },

    recorder(k: QueryKey, readTables: string[]): { done(messages: Uint8Array[] | null): void } | null {
      if (maxBytes === 0) return null;
      const key = cacheKey(k);
      const old = slots.get(key);
      // An entry past max_age and stale-while-revalidate is dead: the recording replaces it. A stale one is
      // served and refreshed by lookup instead.
      if (old !== undefined && clock.now() - storedAt[old]! >= maxAgeMs + swrMs) removeSlot(old);
      else if (old !== undefined) return null;
      if (inflight.has(key)) return null;
      const tables = readTables.length ? readTables : ["*"];
      const w = watch(k.database, tables);
      let open = true;
      // Single flight: identical misses meanwhile wait for this answer (lookup awaits in-flight loads).
      let settle: (m: Uint8Array[] | null) => void = () => {};
      inflight.set(key, new Promise((resolve) => (settle = resolve)));
      return {
        done(messages) {
          if (!open) return;
          open = false;
          inflight.delete(key);
          unwatch(w);
          if (messages) counted("miss").inc();
          if (messages && !w.dirty) store(key, k.database, tables, messages);
          settle(messages);
        },
      };
    },

    /** The answer of a slot in one of the caller's wire forms; the last form built is kept, counted in the byte bound. */
    reply(s: number, form: number, build: (messages: Uint8Array[]) => Uint8Array): Uint8Array {
      const r = replies[s];
      if (r && replyForm[s] === form) return r;
      const b = build([answers[s]!]);
      const grown = b.byteLength - (r ? r.byteLength : -REPLY_OVERHEAD);
      replies[s] = b;
      replyForm[s] = form;
      charged[s]! += grown;
      bytes += grown;
      evict();
      return b;
    },

    knownVolatile(database: string, functions: string[]): boolean | undefined {
      if (functions.length === 0) return false;
      const known = volatileAnswers.get(volatileId(database, functions));
      return known && clock.now() - known.at < VOLATILITY_TTL_MS ? known.value : undefined;
    },

    async lookup(k: QueryKey, readTables: string[], load: () => Promise<Uint8Array[] | null>): Promise<LookupResult> {
      if (maxBytes === 0) return count("disabled", []);
      const key = cacheKey(k);
      const database = k.database;
      const tables = readTables.length ? readTables : ["*"];
      const hit = fresh(key);
      if (hit >= 0) return count("hit", [answers[hit]!]);
      const s = slots.get(key);
      if (s !== undefined) {
        const age = clock.now() - storedAt[s]!;
        if (age < maxAgeMs + swrMs) {
          if (!(flags[s]! & REFRESHING)) {
            flags[s]! |= REFRESHING;
            loadAndStore(key, database, tables, load)
              .catch(() => {})
              .finally(() => {
                const now = slots.get(key);
                if (now !== undefined) flags[now]! &= ~REFRESHING;
              });
          }
          return count("stale", [answers[s]!]);
        }
        removeSlot(s);
      }
      let p = inflight.get(key);
      if (!p) {
        p = loadAndStore(key, database, tables, load).finally(() => inflight.delete(key));
        inflight.set(key, p);
      }
      const messages = await p;
      return messages ? count("miss", messages) : count("uncacheable", []);
    },

    invalidate(database: string, tables: string[]) {
      const names = tables.includes("*") ? ["*"] : tables;
      // A load of unknown tables ("*") is dirtied by any write to its database: the safe side.
      for (const w of watches.get(database) ?? []) if (names[0] === "*" || w.tables[0] === "*" || w.tables.some((t) => names.includes(t))) w.dirty = true;
      const ids = groupsByDb.get(database);
      if (!ids) return;
      let dropped = 0;
      for (const g of [...ids]) {
        const group = groups[g]!;
        if (names[0] !== "*" && group.tables[0] !== "*" && !group.tables.some((t) => names.includes(t))) continue;
        dropped += group.count;
        while (groups[g] === group && group.head >= 0) removeSlot(group.head);
      }
      if (dropped) invalidations.inc(undefined, dropped);
    },

    isVolatile(database: string, functions: string[]): Promise<boolean> {
      if (functions.length === 0) return Promise.resolve(false);
      if (!o.volatility) return Promise.resolve(true);
      const id = volatileId(database, functions);
      const now = clock.now();
      const known = volatileAnswers.get(id);
      if (known && now - known.at < VOLATILITY_TTL_MS) return known.answer;
      if (volatileAnswers.size > 10_000) volatileAnswers.clear();
      // Unknown or unanswerable counts as volatile: the safe side.
      const answer = o.volatility(database, functions).catch(() => true);
      const slot: { at: number; answer: Promise<boolean>; value?: boolean } = { at: now, answer };
      volatileAnswers.set(id, slot);
      void answer.then((v) => (slot.value = v));
      return answer;
    },

    /** tables: table names indexed; watches: loads and recordings in flight (what invalidations look at). */
    stats() {
      const names = new Set<string>();
      for (const g of groups) if (g) for (const t of g.tables) names.add(g.database + "\0" + t);
      let inFlight = 0;
      for (const set of watches.values()) inFlight += set.size;
      return { entries: slots.size, bytes, tables: names.size, watches: inFlight, prefixes: prefixes.size };
    },
  };
}
