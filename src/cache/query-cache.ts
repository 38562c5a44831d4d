// The query cache: recorded response messages of cacheable reads, with Hyperdrive's freshness rules
// (max_age, then stale-while-revalidate with one background refresh), single flight for concurrent misses,
// a byte-bounded cache evicting by CLOCK (an LRU approximation), and invalidation by table when a write through the proxy touches what an entry read.
//
// Contract (used by src/pool/cache-path.ts): createQueryCache({ config, clock, metrics, volatility }) ->
//   lookup(key, readTables, load) -> { status: 'hit'|'stale'|'miss'|'uncacheable'|'disabled', messages }
//     `load` runs the statement on an origin connection and resolves to its response messages, or null when
//     the result must not be cached (an error, COPY, a result over KVDRIVE_QUERY_CACHE_MAX_RESULT_BYTES):
//     then messages is empty and the caller runs the statement the ordinary way.
//   invalidate(database, tables)  ('*' = every table of the database)
//   isVolatile(database, functions)
//   fresh(id) -> the entry when a fresh answer is held (a hit, counted), else undefined: the synchronous hit path
//   knownVolatile(database, functions) -> the remembered answer of isVolatile, undefined when not known yet
//   recorder(key, readTables) -> for a miss that the caller runs itself (streaming the answer to its client):
//     done(messages | null) stores the answer (counted as a miss) unless a write invalidated its tables
//     meanwhile, done(null) gives up; until done, identical lookups wait for it (single flight); recorder()
//     is null when an entry (stale) or a load for the key exists, then lookup handles it
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import type { CacheStatus } from "./classify.ts";

export interface QueryKey {
  database: string;
  user: string;
  sql: string;
  params?: Array<Uint8Array | null>;
  paramFormats?: number[];
  resultFormats?: number[];
  paramTypes?: number[];
  /** Session settings that change results (TimeZone, DateStyle, search_path, SETs). */
  session?: string;
  /**
   * Instead of params and formats: a client Bind's bytes after the statement name (parameter formats, values,
   * result formats), as sent; the pooler keys extended-protocol statements by them without decoding.
   */
  bindTail?: Uint8Array;
  /** What else shapes the recorded answer (the pooler's "with or without RowDescription"). */
  variant?: string;
  /** cacheKey(this), when the caller has it already. */
  id?: string;
}

export interface LookupResult {
  status: CacheStatus;
  messages: Uint8Array[];
}

export interface Entry {
  key: string;
  database: string;
  tables: string[];
  messages: Uint8Array[];
  /** Wire forms of the answer built by the caller on its first hit, one per form (see the pooler's replies). */
  replies: Array<Uint8Array | undefined>;
  bytes: number;
  storedAt: number;
  refreshing: boolean;
  /** Hit since eviction last passed over it (second chance). */
  referenced: boolean;
}

/** A load or recording in flight, and whether a write touched what it reads meanwhile. */
interface Watch {
  database: string;
  tables: string[];
  dirty: boolean;
}

const ENTRY_OVERHEAD = 256;
const VOLATILITY_TTL_MS = 60_000;

const latin1 = new TextDecoder("latin1");
const part = (s: string) => s.length + ":" + s;

/**
 * The statement part of a key: every part length-prefixed, so no two different keys read the same. Exact
 * rather than hashed: a hash collision would serve one query's rows for another.
 */
export function keyPrefix(k: QueryKey): string {
  return part(k.database) + part(k.user) + part(k.session ?? "") + part((k.paramTypes ?? []).join(",")) + part(k.sql);
}

/** The parameter part of a key; `bindTail` bytes are kept as they are, one character per byte. */
export function keyTail(k: Pick<QueryKey, "variant" | "bindTail" | "params" | "paramFormats" | "resultFormats">): string {
  const v = part(k.variant ?? "");
  if (k.bindTail) return v + "B" + latin1.decode(k.bindTail);
  let s = v + "P" + part((k.paramFormats ?? []).join(",")) + part((k.resultFormats ?? []).join(","));
  for (const p of k.params ?? []) s += p === null ? "N" : part(latin1.decode(p));
  return s;
}

export const cacheKey = (k: QueryKey): string => k.id ?? keyPrefix(k) + keyTail(k);

export function createQueryCache(o: { config: Config; clock: Clock; metrics: Registry; volatility?: (database: string, functions: string[]) => Promise<boolean> }) {
  const { config, clock } = o;
  const maxAgeMs = config.queryCacheMaxAge * 1000;
  const swrMs = config.queryCacheSwr * 1000;
  const maxBytes = config.queryCacheBytes;
  const entries = new Map<string, Entry>();
  const inflight = new Map<string, Promise<Uint8Array[] | null>>();
  // database -> table -> keys reading it. Only tables some entry read are here: a NOTIFY naming any other
  // table (400,000 invented names, say) finds nothing and leaves nothing behind.
  const index = new Map<string, Map<string, Set<string>>>();
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
  o.metrics.gauge("kvdrive_query_cache_entries", "Results held by the query cache", () => [[undefined, entries.size]]);

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

  function remove(key: string) {
    const e = entries.get(key);
    if (!e) return;
    entries.delete(key);
    bytes -= e.bytes;
    const byTable = index.get(e.database);
    if (!byTable) return;
    for (const t of e.tables) {
      const keys = byTable.get(t);
      if (!keys) continue;
      keys.delete(key);
      if (!keys.size) byTable.delete(t);
    }
    if (!byTable.size) index.delete(e.database);
  }

  function store(key: string, database: string, tables: string[], messages: Uint8Array[]) {
    const result = messages.reduce((n, m) => n + m.byteLength, 0);
    const size = ENTRY_OVERHEAD + 2 * key.length + result;
    if (result > config.queryCacheMaxResultBytes || size > maxBytes) return;
    remove(key);
    entries.set(key, { key, database, tables, messages, replies: [], bytes: size, storedAt: clock.now(), refreshing: false, referenced: false });
    bytes += size;
    let byTable = index.get(database);
    if (!byTable) index.set(database, (byTable = new Map()));
    for (const t of tables) {
      let keys = byTable.get(t);
      if (!keys) byTable.set(t, (keys = new Set()));
      keys.add(key);
    }
    evict();
  }

  /**
   * Drops entries until the byte bound holds, oldest first (Map order) with a second chance (the CLOCK
   * approximation of LRU, as Postgres' buffer manager does it): an entry hit since it was last passed over
   * moves to the young end instead. A hit only sets a flag; reordering a large Map on every hit costs more.
   */
  function evict() {
    for (const [k, e] of entries) {
      if (bytes <= maxBytes) break;
      if (e.referenced) {
        e.referenced = false;
        entries.delete(k);
        entries.set(k, e);
        continue;
      }
      remove(k);
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

  /** A fresh entry, marked as used (see evict); undefined when absent or past max_age. */
  function fresh(key: string): Entry | undefined {
    const e = entries.get(key);
    if (!e || clock.now() - e.storedAt >= maxAgeMs) return undefined;
    if (!e.referenced) e.referenced = true; // a write only when it changes: old entries stay clean for the GC
    return e;
  }

  const volatileId = (database: string, functions: string[]) => database + "\0" + (functions.length > 1 ? [...functions].sort().join(",") : functions[0]);

  return {
    key: cacheKey,
    keyPrefix,
    keyTail,

    fresh(key: string): Entry | undefined {
      const e = fresh(key);
      if (e) counted("hit").inc();
      return e;
    },

    has(key: string): boolean {
      const e = entries.get(key);
      return e !== undefined && clock.now() - e.storedAt < maxAgeMs;
    },

    recorder(k: QueryKey, readTables: string[]): { done(messages: Uint8Array[] | null): void } | null {
      if (maxBytes === 0) return null;
      const key = cacheKey(k);
      const old = entries.get(key);
      // An entry past max_age and stale-while-revalidate is dead: the recording replaces it. A stale one is
      // served and refreshed by lookup instead.
      if (old && clock.now() - old.storedAt >= maxAgeMs + swrMs) remove(key);
      else if (old) return null;
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

    /** The answer in one of the caller's wire forms, built once per entry and counted in the byte bound. */
    reply(e: Entry, form: number, build: (messages: Uint8Array[]) => Uint8Array): Uint8Array {
      const r = e.replies[form];
      if (r) return r;
      const b = build(e.messages);
      e.replies[form] = b;
      if (entries.get(e.key) === e) {
        e.bytes += b.byteLength;
        bytes += b.byteLength;
        evict();
      }
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
      if (hit) return count("hit", hit.messages);
      const e = entries.get(key);
      if (e) {
        const age = clock.now() - e.storedAt;
        if (age < maxAgeMs + swrMs) {
          if (!e.refreshing) {
            e.refreshing = true;
            loadAndStore(key, database, tables, load)
              .catch(() => {})
              .finally(() => {
                e.refreshing = false;
              });
          }
          return count("stale", e.messages);
        }
        remove(key);
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
      const byTable = index.get(database);
      const names = tables.includes("*") ? ["*"] : tables;
      // A load of unknown tables ("*") is dirtied by any write to its database: the safe side.
      for (const w of watches.get(database) ?? []) if (names[0] === "*" || w.tables[0] === "*" || w.tables.some((t) => names.includes(t))) w.dirty = true;
      if (!byTable) return;
      const doomed = new Set<string>();
      if (names[0] === "*") for (const keys of byTable.values()) for (const k of keys) doomed.add(k);
      else for (const t of [...names, "*"]) for (const k of byTable.get(t) ?? []) doomed.add(k);
      for (const k of doomed) remove(k);
      if (doomed.size) invalidations.inc(undefined, doomed.size);
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
      let tables = 0;
      for (const byTable of index.values()) tables += byTable.size;
      let inFlight = 0;
      for (const set of watches.values()) inFlight += set.size;
      return { entries: entries.size, bytes, tables, watches: inFlight };
    },
  };
}
