// The query cache: recorded response messages of cacheable reads, with Hyperdrive's freshness rules
// (max_age, then stale-while-revalidate with one background refresh), single flight for concurrent misses,
// a byte-bounded LRU, and invalidation by table when a write through the proxy touches what an entry read.
//
// Contract (used by src/pool/cache-path.ts): createQueryCache({ config, clock, metrics, volatility }) ->
//   lookup(key, readTables, load) -> { status: 'hit'|'stale'|'miss'|'uncacheable'|'disabled', messages }
//     `load` runs the statement on an origin connection and resolves to its response messages, or null when
//     the result must not be cached (an error, COPY, a result over KVDRIVE_QUERY_CACHE_MAX_RESULT_BYTES):
//     then messages is empty and the caller runs the statement the ordinary way.
//   invalidate(database, tables)  ('*' = every table of the database)
//   isVolatile(database, functions)
import { createHash } from "node:crypto";
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
}

export interface LookupResult {
  status: CacheStatus;
  messages: Uint8Array[];
}

interface Entry {
  database: string;
  tables: string[];
  messages: Uint8Array[];
  bytes: number;
  storedAt: number;
  refreshing: boolean;
}

const ENTRY_OVERHEAD = 256;
const VOLATILITY_TTL_MS = 60_000;

/** A collision-resistant key: every part, length-prefixed, through SHA-256. */
export function cacheKey(k: QueryKey): string {
  const h = createHash("sha256");
  const part = (s: string) => h.update(`${s.length}:`).update(s);
  part(k.database);
  part(k.user);
  part(k.sql);
  part(k.session ?? "");
  part((k.paramFormats ?? []).join(","));
  part((k.resultFormats ?? []).join(","));
  part((k.paramTypes ?? []).join(","));
  for (const p of k.params ?? []) {
    if (p === null) h.update("N");
    else h.update(`${p.byteLength}:`).update(p);
  }
  return h.digest("base64");
}

export function createQueryCache(o: { config: Config; clock: Clock; metrics: Registry; volatility?: (database: string, functions: string[]) => Promise<boolean> }) {
  const { config, clock } = o;
  const maxAgeMs = config.queryCacheMaxAge * 1000;
  const swrMs = config.queryCacheSwr * 1000;
  const maxBytes = config.queryCacheBytes;
  const entries = new Map<string, Entry>();
  const inflight = new Map<string, Promise<Uint8Array[] | null>>();
  // database -> table -> keys reading it; and generations, bumped by every invalidation.
  const index = new Map<string, Map<string, Set<string>>>();
  const generations = new Map<string, number>();
  const volatileAnswers = new Map<string, { at: number; answer: Promise<boolean> }>();
  let bytes = 0;

  const requests = o.metrics.counter("kvdrive_query_cache_requests_total", "Query cache lookups by status");
  const invalidations = o.metrics.counter("kvdrive_query_cache_invalidations_total", "Cached results dropped because a write touched their tables");
  o.metrics.gauge("kvdrive_query_cache_bytes", "Bytes held by the query cache", () => [[undefined, bytes]]);
  o.metrics.gauge("kvdrive_query_cache_entries", "Results held by the query cache", () => [[undefined, entries.size]]);

  const gen = (database: string, table: string) => (generations.get(database + "\0" + table) ?? 0) + (generations.get(database + "\0*") ?? 0);
  const snapshot = (database: string, tables: string[]) => tables.map((t) => gen(database, t)).join(",");

  function remove(key: string) {
    const e = entries.get(key);
    if (!e) return;
    entries.delete(key);
    bytes -= e.bytes;
    const byTable = index.get(e.database);
    for (const t of e.tables) byTable?.get(t)?.delete(key);
  }

  function store(key: string, database: string, tables: string[], messages: Uint8Array[]) {
    const size = ENTRY_OVERHEAD + messages.reduce((n, m) => n + m.byteLength, 0);
    if (size - ENTRY_OVERHEAD > config.queryCacheMaxResultBytes || size > maxBytes) return;
    remove(key);
    entries.set(key, { database, tables, messages, bytes: size, storedAt: clock.now(), refreshing: false });
    bytes += size;
    let byTable = index.get(database);
    if (!byTable) index.set(database, (byTable = new Map()));
    for (const t of tables) {
      let keys = byTable.get(t);
      if (!keys) byTable.set(t, (keys = new Set()));
      keys.add(key);
    }
    for (const [k] of entries) {
      if (bytes <= maxBytes) break;
      remove(k);
    }
  }

  /** Runs a load and stores its answer unless a write invalidated its tables while it ran. */
  function loadAndStore(key: string, database: string, tables: string[], load: () => Promise<Uint8Array[] | null>): Promise<Uint8Array[] | null> {
    const before = snapshot(database, tables);
    return load().then((messages) => {
      if (messages && snapshot(database, tables) === before) store(key, database, tables, messages);
      return messages;
    });
  }

  function count(status: CacheStatus, messages: Uint8Array[]): LookupResult {
    requests.inc({ status });
    return { status, messages };
  }

  return {
    key: cacheKey,

    async lookup(k: QueryKey | string, readTables: string[], load: () => Promise<Uint8Array[] | null>): Promise<LookupResult> {
      if (maxBytes === 0) return count("disabled", []);
      const key = typeof k === "string" ? k : cacheKey(k);
      const database = typeof k === "string" ? "" : k.database;
      const tables = readTables.length ? readTables : ["*"];
      const e = entries.get(key);
      if (e) {
        const age = clock.now() - e.storedAt;
        if (age < maxAgeMs) {
          // Recency for the LRU: re-insert at the end.
          entries.delete(key);
          entries.set(key, e);
          return count("hit", e.messages);
        }
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
      for (const t of names) generations.set(database + "\0" + t, (generations.get(database + "\0" + t) ?? 0) + 1);
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
      const id = database + "\0" + [...functions].sort().join(",");
      const now = clock.now();
      const known = volatileAnswers.get(id);
      if (known && now - known.at < VOLATILITY_TTL_MS) return known.answer;
      if (volatileAnswers.size > 10_000) volatileAnswers.clear();
      // Unknown or unanswerable counts as volatile: the safe side.
      const answer = o.volatility(database, functions).catch(() => true);
      volatileAnswers.set(id, { at: now, answer });
      return answer;
    },

    stats() {
      return { entries: entries.size, bytes };
    },
  };
}
