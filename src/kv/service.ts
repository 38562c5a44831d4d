// The KV service: namespaces, reads through the cache, writes through group commit, listing and bulk
// operations. It never sees an HTTP request; it speaks KVService (types.ts) and throws ApiError.
import { randomBytes } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import { createReadCache, type CachedEntry } from "../gateway/cache.ts";
import { startInvalidation, type Invalidation } from "../gateway/invalidation.ts";
import { createVersionClock } from "../gateway/version.ts";
import { ZERO_VERSION } from "../storage/entry.ts";
import { BatcherClosedError, createBatcher } from "../gateway/batcher.ts";
import { createReadCoalescer } from "../gateway/coalescer.ts";
import { startPurger } from "../gateway/purge.ts";
import { onAbandon } from "../gateway/shutdown.ts";
import { unavailableReason } from "../storage/unavailable.ts";
import { openStorage } from "../storage/open.ts";
import type { NamespaceRow, StoredEntry } from "../storage/store.ts";
import { REPLICATION_MODES, type ReplicationMode } from "../gateway/replicated.ts";
import { ApiError, CODE } from "../errors.ts";
import { MIN_CACHE_TTL } from "./limits.ts";
import { decodeCursor, encodeCursor, prefixUpperBound } from "./cursor.ts";
import type { KVService, KVValue, Namespace, PutInput } from "./types.ts";

export interface ServiceOptions {
  urls: string[];
  config: Config;
  clock: Clock;
  metrics: Registry;
  log?: (msg: string) => void;
}

const DEFAULT_CACHE_TTL = 60;
// Single-key reads in flight before further misses wait to be coalesced. A quarter of the pool: measured
// (64 readers, 16 connections) well ahead of one query per read, and it leaves connections for write batches.
// Each cluster has its own pool and its own coalescer, so a batch of waiting reads goes to one cluster.
const readSlots = (c: Config) => Math.max(1, Math.floor(c.dbPoolSize / 4));
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const toNamespace = (r: NamespaceRow): Namespace => ({ id: r.id, title: r.title, supports_url_encoding: true });
const namespaceMissing = (id: string) => new ApiError(404, CODE.namespaceNotFound, `namespace ${JSON.stringify(id)} not found`);
const titleTaken = (title: string) => new ApiError(400, CODE.namespaceTitleExists, `a namespace with the title ${JSON.stringify(title)} already exists in this account`);
const cacheTtl = (o: { cacheTtl?: number } | undefined) => Math.max(MIN_CACHE_TTL, o?.cacheTtl ?? DEFAULT_CACHE_TTL);

/** A storage outage is the client's to retry (503), not a defect (500): every other error passes unchanged. */
function storageError(e: unknown): unknown {
  if (e instanceof ApiError) return e;
  const reason = unavailableReason(e);
  return reason === null ? e : new ApiError(503, CODE.internal, `storage is unavailable (${reason}): retry the request`);
}

// Methods that never touch storage, or whose callers want the raw answer.
const UNGUARDED = new Set(["close", "ready", "redundancy"]);

/** The service with every storage-facing method answering a storage outage as a 503 ApiError. */
function guarded(service: KVService): KVService {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(service)) {
    if (typeof f !== "function" || UNGUARDED.has(name)) {
      out[name] = f;
      continue;
    }
    out[name] = async (...args: unknown[]) => {
      try {
        return await (f as (...a: unknown[]) => Promise<unknown>)(...args);
      } catch (e) {
        throw storageError(e);
      }
    };
  }
  return out as unknown as KVService;
}

export async function createKVService({ urls, config, clock, metrics, log }: ServiceOptions): Promise<KVService> {
  // Namespace rows are few and read on every request: keep them in memory, refreshed on a miss.
  const namespaces = new Map<string, NamespaceRow>();
  let defaultMode: ReplicationMode = "primary";
  const modeOf = (ns: string): ReplicationMode => (namespaces.get(ns)?.replication as ReplicationMode | null | undefined) ?? defaultMode;
  const storage = await openStorage({
    config, urls, metrics, clock, log,
    modeOf,
    async resolveMode(ns) {
      if (!namespaces.has(ns)) {
        const row = await storage.catalog.getNamespace(ns).catch(() => null);
        if (row) namespaces.set(ns, row);
      }
      return modeOf(ns);
    },
  });
  defaultMode = storage.defaultMode;
  const backend = { ...storage.catalog, ...storage.data };
  const versions = createVersionClock(clock);
  const shardReaders = new Map(storage.primary.shards.map((sh) => [sh, createReadCoalescer(backend, readSlots(config))]));
  const readKey = (ns: string, key: Uint8Array) => shardReaders.get(storage.primary.ownerOf(ns, key))!.get(ns, key);
  const cache = createReadCache({ maxBytes: config.cacheBytes, clock });
  const batcher = createBatcher({
    write: (rows) => backend.write(rows),
    maxRows: config.batchMaxRows,
    maxBytes: config.batchMaxBytes,
    windowMs: config.batchWindowMs,
    concurrency: config.batchConcurrency,
    metrics,
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
  const clusterIndex = new Map(storage.primary.shards.map((sh, i) => [sh, i]));
  function announce(ns: string, keys: readonly string[]) {
    if (!invalidation) return;
    if (clusterIndex.size === 1) {
      void invalidation.announce(ns, keys);
      return;
    }
    const byCluster = new Map<number, string[]>();
    for (const k of keys) {
      const c = clusterIndex.get(storage.primary.ownerOf(ns, encoder.encode(k))) ?? 0;
      (byCluster.get(c) ?? byCluster.set(c, []).get(c)!).push(k);
    }
    for (const [c, ks] of byCluster) void invalidation.announce(ns, ks, c);
  }
  const hits = metrics.counter("kvdrive_cache_hits_total", "KV reads answered by the in-process cache");
  const misses = metrics.counter("kvdrive_cache_misses_total", "KV reads that went to storage");
  metrics.gauge("kvdrive_cache_bytes", "Bytes held by the KV read cache", () => [[undefined, cache.bytes]]);
  metrics.gauge("kvdrive_cache_entries", "Entries held by the KV read cache", () => [[undefined, cache.entries]]);

  async function namespace(accountId: string, id: string): Promise<NamespaceRow> {
    let row = namespaces.get(id);
    if (!row) {
      const found = await backend.getNamespace(id);
      if (found) namespaces.set(id, (row = found));
    }
    if (!row || row.account_id !== accountId) throw namespaceMissing(id);
    return row;
  }
  /** Admin routes address a namespace by id alone. */
  async function namespaceById(id: string): Promise<NamespaceRow> {
    const row = namespaces.get(id) ?? (await backend.getNamespace(id));
    if (!row) throw namespaceMissing(id);
    namespaces.set(id, row);
    return row;
  }
  // The hot path (a known namespace) without an extra promise.
  const knownNamespace = (accountId: string, id: string): NamespaceRow | Promise<NamespaceRow> => {
    const row = namespaces.get(id);
    return row !== undefined && row.account_id === accountId ? row : namespace(accountId, id);
  };

  const cacheKey = (ns: string, key: string) => ns + "\0" + key;
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  // The entry itself is the answer (it has every KVValue field): a cache hit allocates nothing.
  function visible(e: CachedEntry): KVValue | null {
    if (e.value === null) return null;
    if (e.expiration !== null && e.expiration <= clock.now() / 1000) return null;
    return e as KVValue;
  }

  const fromStored = (s: StoredEntry | null): CachedEntry =>
    s === null || s.tombstone
      ? { value: null, metadata: null, expiration: null, version: s?.version ?? ZERO_VERSION }
      : { value: s.value ?? new Uint8Array(0), metadata: s.metadata, expiration: s.expiration, version: s.version };

  function row(ns: string, input: PutInput): StoredEntry {
    const meta = input.metadata === undefined || input.metadata === null ? null : JSON.stringify(input.metadata);
    return { ns, key: encoder.encode(input.key), value: input.value, metadata: meta, expiration: input.expiration ?? null, version: versions.next(), tombstone: false };
  }

  const tombstone = (ns: string, key: string): StoredEntry => ({ ns, key: encoder.encode(key), value: null, metadata: null, expiration: null, version: versions.next(), tombstone: true });

  const remember = (r: StoredEntry, key: string) => cache.setFromWrite(cacheKey(r.ns, key), fromStored(r));

  // A shutdown cut short reports the rows it never committed (none of them was acknowledged).
  const forget = onAbandon(() => ({ unflushedRows: batcher.pendingRows }));

  const purger = startPurger({ backend, clock, intervalSeconds: config.purgeIntervalSeconds, tombstoneGraceSeconds: config.tombstoneGraceSeconds, metrics });

  // A write refused because shutdown began is not an input error: 503, and the client may retry elsewhere.
  async function commit(p: Promise<void>) {
    try {
      await p;
    } catch (e) {
      if (e instanceof BatcherClosedError) throw new ApiError(503, CODE.internal, "kvdrive is shutting down: the write was not accepted, retry it");
      throw e;
    }
  }

  /** A storage answer: later local writes must order after it (HLC), and it may be cached. */
  function fromRead(ck: string, s: StoredEntry | null, ticket: number): CachedEntry {
    const e = fromStored(s);
    versions.observe(e.version);
    cache.setFromRead(ck, e, ticket);
    return e;
  }

  const service: KVService = {
    async createNamespace(accountId, title) {
      const id = randomBytes(16).toString("hex");
      if (!(await backend.createNamespace(accountId, id, title))) throw titleTaken(title);
      const r = { account_id: accountId, id, title };
      namespaces.set(id, r);
      return toNamespace(r);
    },
    async listNamespaces(accountId, o) {
      const { rows, total } = await backend.listNamespaces(accountId, o.order, o.direction, o.perPage, (o.page - 1) * o.perPage);
      return { namespaces: rows.map(toNamespace), total };
    },
    async getNamespace(accountId, id) {
      namespaces.delete(id);
      return toNamespace(await namespace(accountId, id));
    },
    async renameNamespace(accountId, id, title) {
      const result = await backend.renameNamespace(accountId, id, title);
      if (result === "missing") throw namespaceMissing(id);
      if (result === "duplicate") throw titleTaken(title);
      namespaces.delete(id);
      return toNamespace(await namespace(accountId, id));
    },
    async deleteNamespace(accountId, id) {
      if (!(await backend.deleteNamespace(accountId, id))) throw namespaceMissing(id);
      namespaces.delete(id);
      // A write that resolved the namespace just before it went may still commit: let pending batches land,
      // then sweep once more so no orphan rows stay behind.
      await batcher.flush();
      await backend.dropNamespace(id);
      const prefix = id + "\0";
      cache.deleteWhere((k) => k.startsWith(prefix));
    },

    accountOf: async (nsId) => (await namespaceById(nsId)).account_id,

    async get(accountId, nsId, key, opts) {
      const known = knownNamespace(accountId, nsId);
      const ns = known instanceof Promise ? await known : known;
      const ck = cacheKey(ns.id, key);
      const cached = cache.get(ck, cacheTtl(opts));
      if (cached) {
        hits.inc();
        return visible(cached);
      }
      misses.inc();
      const ticket = cache.readTicket();
      return visible(fromRead(ck, await readKey(ns.id, encoder.encode(key)), ticket));
    },
    async getMany(accountId, nsId, keys, opts) {
      const ns = await namespace(accountId, nsId);
      const ttl = cacheTtl(opts);
      const out: Array<KVValue | null> = new Array(keys.length).fill(null);
      const missing: number[] = [];
      keys.forEach((k, i) => {
        const c = cache.get(cacheKey(ns.id, k), ttl);
        if (c) {
          hits.inc();
          out[i] = visible(c);
        } else missing.push(i);
      });
      if (missing.length) {
        misses.inc(undefined, missing.length);
        const ticket = cache.readTicket();
        const found = await backend.getMany(ns.id, missing.map((i) => encoder.encode(keys[i]!)));
        missing.forEach((i, j) => {
          out[i] = visible(fromRead(cacheKey(ns.id, keys[i]!), found[j]!, ticket));
        });
      }
      return out;
    },
    async put(accountId, nsId, input) {
      const ns = await namespace(accountId, nsId);
      const r = row(ns.id, input);
      await commit(batcher.submit(r));
      remember(r, input.key);
      announce(ns.id, [input.key]);
    },
    async putMany(accountId, nsId, inputs) {
      const ns = await namespace(accountId, nsId);
      const rows = inputs.map((i) => row(ns.id, i));
      await commit(batcher.submitAll(rows));
      rows.forEach((r, i) => remember(r, inputs[i]!.key));
      announce(ns.id, inputs.map((i) => i.key));
    },
    async delete(accountId, nsId, key) {
      const ns = await namespace(accountId, nsId);
      const r = tombstone(ns.id, key);
      await commit(batcher.submit(r));
      remember(r, key);
      announce(ns.id, [key]);
    },
    async deleteMany(accountId, nsId, keys) {
      const ns = await namespace(accountId, nsId);
      const rows = keys.map((k) => tombstone(ns.id, k));
      await commit(batcher.submitAll(rows));
      rows.forEach((r, i) => remember(r, keys[i]!));
      announce(ns.id, keys);
    },
    async list(accountId, nsId, o) {
      const ns = await namespace(accountId, nsId);
      const after = o.cursor ? decodeCursor(o.cursor) : null;
      const from = o.prefix ? encoder.encode(o.prefix) : null;
      const rows = await backend.list({ ns: ns.id, after, from, before: from ? prefixUpperBound(from) : null, limit: o.limit + 1, now: nowSeconds() });
      const more = rows.length > o.limit;
      const page = more ? rows.slice(0, o.limit) : rows;
      return {
        keys: page.map((r) => {
          const k: { name: string; expiration?: number; metadata?: string } = { name: decoder.decode(r.key) };
          if (r.expiration !== null) k.expiration = r.expiration;
          if (r.metadata !== null) k.metadata = r.metadata;
          return k;
        }),
        cursor: more ? encodeCursor(page[page.length - 1]!.key) : "",
      };
    },

    async replication(nsId) {
      const ns = await namespaceById(nsId);
      return { mode: modeOf(ns.id), override: (ns.replication as ReplicationMode | null | undefined) ?? null, default: defaultMode, replica: storage.replicaKind };
    },
    async setReplication(nsId, mode) {
      const ns = await namespaceById(nsId);
      if (mode !== null && !(REPLICATION_MODES as readonly string[]).includes(mode)) throw new ApiError(400, CODE.badRequest, `replication mode ${JSON.stringify(mode)} must be one of ${REPLICATION_MODES.join(", ")}`);
      if (mode !== null && mode !== "primary" && !storage.replicated) throw new ApiError(400, CODE.badRequest, `replication mode ${mode} needs a second backend: set KVDRIVE_REPLICA_S3_BUCKET or KVDRIVE_REPLICA_DATABASE_URL`);
      if (!(await storage.catalog.setNamespaceReplication(ns.id, mode))) throw namespaceMissing(nsId);
      namespaces.delete(ns.id);
      return service.replication(nsId);
    },
    redundancy() {
      return {
        defaultMode,
        replica: storage.replicaKind,
        shards: storage.primary.shards.map((s) => s.id),
        rebalancePending: storage.primary.previous() !== null,
        repairQueueDepth: storage.queue?.depth() ?? 0,
        lastCrawl: storage.crawler?.lastPass ?? null,
      };
    },
    runCrawlerPass: () => (storage.crawler ? storage.crawler.runPass() : Promise.resolve(null)),

    async close() {
      await purger.stop();
      await batcher.close();
      await invalidation?.close().catch(() => {});
      await storage.close();
      forget({ unflushedRows: batcher.failedAtClose });
    },
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
  };
  return guarded(service);
}
