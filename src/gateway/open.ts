// openGateway(): storage's backends (storage/open.ts), replication above them (redundancy.ts), and in front
// the version clock, the read cache with read-your-own-write, cross-instance invalidation per cluster, group
// commit, one read coalescer per shard, the expiry purge and the namespace catalog: the Gateway kv calls.
import { randomBytes } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { ZERO_VERSION, type StoredEntry } from "../storage/entry.ts";
import type { Registry } from "../metrics/registry.ts";
import { openStorage } from "../storage/open.ts";
import type { NamespaceRow } from "../storage/backend.ts";
import { createBatcher } from "./batcher.ts";
import { createReadCache, type CachedEntry } from "./cache.ts";
import { createReadCoalescer } from "./coalescer.ts";
import { startInvalidation, type Invalidation } from "./invalidation.ts";
import { startPurger } from "./purge.ts";
import { startRedundancy, type Redundancy } from "./redundancy.ts";
import type { ReplicationMode } from "./replicated.ts";
import { onAbandon } from "./shutdown.ts";
import type { Gateway, GatewayValue } from "./types.ts";
import { createVersionClock } from "./version.ts";

export interface GatewayOptions {
  /** The primary's clusters (DATABASE_URL, or the embedded ones). */
  urls: string[];
  config: Config;
  clock: Clock;
  metrics: Registry;
  log?: (msg: string) => void;
}

// Single-key reads in flight before further misses wait to be coalesced. A quarter of the pool: measured
// (64 readers, 16 connections) well ahead of one query per read, and it leaves connections for write batches.
// Each cluster has its own pool and its own coalescer, so a batch of waiting reads goes to one cluster.
const readSlots = (c: Config) => Math.max(1, Math.floor(c.dbPoolSize / 4));
const encoder = new TextEncoder();

export async function openGateway({ urls, config, clock, metrics, log }: GatewayOptions): Promise<Gateway> {
  // Namespace rows are few and read on every request: keep them in memory, refreshed on a miss.
  const namespaces = new Map<string, NamespaceRow>();
  let defaultMode: ReplicationMode = "primary";
  const modeOf = (ns: string): ReplicationMode => (namespaces.get(ns)?.replication as ReplicationMode | null | undefined) ?? defaultMode;
  const storage = await openStorage({ config, urls, metrics, clock, log });
  let redundancy: Redundancy;
  try {
    redundancy = startRedundancy(storage, {
      config, metrics, clock, log, modeOf,
      async resolveMode(ns) {
        if (!namespaces.has(ns)) {
          const row = await redundancy.catalog.getNamespace(ns).catch(() => null);
          if (row) namespaces.set(ns, row);
        }
        return modeOf(ns);
      },
    });
  } catch (e) {
    await storage.close();
    throw e;
  }
  defaultMode = redundancy.defaultMode;
  const { primary } = storage;
  const backend = { ...redundancy.catalog, ...redundancy.data };
  const versions = createVersionClock(clock);
  const shardReaders = new Map(primary.shards.map((sh) => [sh, createReadCoalescer(backend, readSlots(config))]));
  const readKey = (ns: string, key: Uint8Array) => shardReaders.get(primary.ownerOf(ns, key))!.get(ns, key);
  const cache = createReadCache({ maxBytes: config.cacheBytes, clock });
  const batcher = createBatcher({
    write: (rows) => backend.write(rows),
    maxRows: config.batchMaxRows,
    maxBytes: config.batchMaxBytes,
    windowMs: config.batchWindowMs,
    concurrency: config.batchConcurrency,
    metrics,
    // By the primary's clusters: one cluster down (and its replica, if any) fails only the writes it holds.
    clusterOf: primary.shards.length > 1 ? (r) => primary.ownerOf(r.ns, r.key) : undefined,
  });
  // Other instances evict what this one writes (and this one what they write), over LISTEN/NOTIFY on every
  // cluster. Without it (disabled, or no cluster reachable), staleness across instances is the cache TTL.
  let invalidation: Invalidation | null = null;
  if (config.invalidation) {
    try {
      invalidation = await startInvalidation({
        urls,
        instanceId: randomBytes(8).toString("hex"),
        onEvict: (ns, hashes) => (hashes === "all" ? cache.evictNamespace(ns) : cache.evictHashed(ns, hashes)),
        onResync: () => cache.clear(),
        metrics,
        log,
      });
    } catch (e) {
      log?.(`cross-instance invalidation is off: ${(e as Error).message}`);
    }
  }
  // Announced on the cluster each key was written to (falling back to the others inside invalidation.ts).
  const clusterIndex = new Map(primary.shards.map((sh, i) => [sh, i]));
  function announce(ns: string, keys: readonly string[]) {
    if (!invalidation) return;
    if (clusterIndex.size === 1) {
      void invalidation.announce(ns, keys);
      return;
    }
    const byCluster = new Map<number, string[]>();
    for (const k of keys) {
      const c = clusterIndex.get(primary.ownerOf(ns, encoder.encode(k))) ?? 0;
      (byCluster.get(c) ?? byCluster.set(c, []).get(c)!).push(k);
    }
    for (const [c, ks] of byCluster) void invalidation.announce(ns, ks, c);
  }
  const hits = metrics.counter("kvdrive_cache_hits_total", "KV reads answered by the in-process cache");
  const misses = metrics.counter("kvdrive_cache_misses_total", "KV reads that went to storage");
  metrics.gauge("kvdrive_cache_bytes", "Bytes held by the KV read cache", () => [[undefined, cache.bytes]]);
  metrics.gauge("kvdrive_cache_entries", "Entries held by the KV read cache", () => [[undefined, cache.entries]]);

  const cacheKey = (ns: string, key: string) => ns + "\0" + key;

  // The entry itself is the answer (it has every GatewayValue field): a cache hit allocates nothing.
  function visible(e: CachedEntry): GatewayValue | null {
    if (e.value === null) return null;
    if (e.expiration !== null && e.expiration <= clock.now() / 1000) return null;
    return e as GatewayValue;
  }

  const fromStored = (s: StoredEntry | null): CachedEntry =>
    s === null || s.tombstone
      ? { value: null, metadata: null, expiration: null, version: s?.version ?? ZERO_VERSION }
      : { value: s.value ?? new Uint8Array(0), metadata: s.metadata, expiration: s.expiration, version: s.version };

  const row = (ns: string, key: string, value: Uint8Array, metadata: string | null, expiration: number | null): StoredEntry =>
    ({ ns, key: encoder.encode(key), value, metadata, expiration, version: versions.next(), tombstone: false });

  const tombstone = (ns: string, key: string): StoredEntry => ({ ns, key: encoder.encode(key), value: null, metadata: null, expiration: null, version: versions.next(), tombstone: true });

  const remember = (r: StoredEntry, key: string) => cache.noteWrite(cacheKey(r.ns, key), fromStored(r));

  // A shutdown cut short reports the rows it never committed (none of them was acknowledged).
  const forget = onAbandon(() => ({ unflushedRows: batcher.pendingRows }));

  const purger = startPurger({ backend, clock, intervalSeconds: config.purgeIntervalSeconds, tombstoneGraceSeconds: config.tombstoneGraceSeconds, metrics });

  /** A storage answer: later local writes must order after it (HLC), and it may be cached. */
  function fromRead(ck: string, s: StoredEntry | null, ticket: number): CachedEntry {
    const e = fromStored(s);
    versions.observe(e.version);
    cache.setFromRead(ck, e, ticket);
    return e;
  }

  async function readMiss(ck: string, ns: string, key: string): Promise<GatewayValue | null> {
    const ticket = cache.readTicket();
    return visible(fromRead(ck, await readKey(ns, encoder.encode(key)), ticket));
  }

  return {
    get(ns, key, ttlSeconds) {
      const ck = cacheKey(ns, key);
      const cached = cache.get(ck, ttlSeconds);
      if (cached) {
        hits.inc();
        return visible(cached);
      }
      misses.inc();
      return readMiss(ck, ns, key);
    },
    async getMany(ns, keys, ttlSeconds) {
      const out: Array<GatewayValue | null> = new Array(keys.length).fill(null);
      const missing: number[] = [];
      keys.forEach((k, i) => {
        const c = cache.get(cacheKey(ns, k), ttlSeconds);
        if (c) {
          hits.inc();
          out[i] = visible(c);
        } else missing.push(i);
      });
      if (missing.length) {
        misses.inc(undefined, missing.length);
        const ticket = cache.readTicket();
        const found = await backend.getMany(ns, missing.map((i) => encoder.encode(keys[i]!)));
        missing.forEach((i, j) => {
          out[i] = visible(fromRead(cacheKey(ns, keys[i]!), found[j]!, ticket));
        });
      }
      return out;
    },
    put(ns, key, value, metadata, expiration) {
      const r = row(ns, key, value, metadata, expiration);
      return batcher.submit(r).then(() => {
        remember(r, key);
        announce(ns, [key]);
      });
    },
    async putMany(ns, writes) {
      const rows = writes.map((w) => row(ns, w.key, w.value, w.metadata, w.expiration));
      await batcher.submitAll(rows);
      rows.forEach((r, i) => remember(r, writes[i]!.key));
      announce(ns, writes.map((w) => w.key));
    },
    async delete(ns, key) {
      const r = tombstone(ns, key);
      await batcher.submit(r);
      remember(r, key);
      announce(ns, [key]);
    },
    async deleteMany(ns, keys) {
      const rows = keys.map((k) => tombstone(ns, k));
      await batcher.submitAll(rows);
      rows.forEach((r, i) => remember(r, keys[i]!));
      announce(ns, keys);
    },
    list: (q) => backend.list(q),

    namespace: (id) => namespaces.get(id),
    async loadNamespace(id) {
      const found = await backend.getNamespace(id);
      if (found) namespaces.set(id, found);
      return found;
    },
    forgetNamespace: (id) => void namespaces.delete(id),
    async createNamespace(accountId, id, title) {
      if (!(await backend.createNamespace(accountId, id, title))) return false;
      namespaces.set(id, { account_id: accountId, id, title });
      return true;
    },
    listNamespaces: (accountId, order, direction, limit, offset) => backend.listNamespaces(accountId, order, direction, limit, offset),
    async renameNamespace(accountId, id, title) {
      const result = await backend.renameNamespace(accountId, id, title);
      if (result === "ok") namespaces.delete(id);
      return result;
    },
    async deleteNamespace(accountId, id) {
      if (!(await backend.deleteNamespace(accountId, id))) return false;
      namespaces.delete(id);
      // A write that resolved the namespace just before it went may still commit: let pending batches land,
      // then sweep once more so no orphan rows stay behind.
      await batcher.flush();
      await backend.dropNamespace(id);
      const prefix = id + "\0";
      cache.deleteWhere((k) => k.startsWith(prefix));
      return true;
    },

    modeOf,
    async setReplication(id, mode) {
      const done = await redundancy.catalog.setNamespaceReplication(id, mode);
      if (done) namespaces.delete(id);
      return done;
    },
    get defaultMode() {
      return defaultMode;
    },
    replicaKind: storage.replicaKind,
    redundancy() {
      return {
        defaultMode,
        replica: storage.replicaKind,
        shards: primary.shards.map((s) => s.id),
        rebalancePending: primary.previous() !== null,
        repairQueueDepth: redundancy.queue?.depth() ?? 0,
        lastCrawl: redundancy.crawler?.lastPass ?? null,
      };
    },
    runCrawlerPass: () => (redundancy.crawler ? redundancy.crawler.runPass() : Promise.resolve(null)),

    // A hung cluster must not hang the readiness probe: no answer within the backend timeout is "not ready".
    async ready() {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.min(config.backendTimeoutMs, 5_000))));
      try {
        return await Promise.race([backend.ping().catch(() => false), late]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      await purger.stop();
      await batcher.close();
      await invalidation?.close().catch(() => {});
      await redundancy.close();
      forget({ unflushedRows: batcher.failedAtClose });
    },
  };
}
