// The KV service: namespaces, reads through the cache, writes through group commit, listing and bulk
// operations. It never sees an HTTP request; it speaks KVService (types.ts) and throws KVError.
import { randomBytes } from "node:crypto";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import { createReadCache, type CachedEntry } from "../gateway/cache.ts";
import { createVersionClock, ZERO_VERSION } from "../gateway/version.ts";
import { createBatcher } from "../storage/batcher.ts";
import { openPostgresBackend, type NamespaceRow, type StoredEntry } from "../storage/store.ts";
import { KVError } from "./errors.ts";
import { decodeCursor, encodeCursor, prefixUpperBound } from "./cursor.ts";
import type { KVService, KVValue, Namespace, PutInput } from "./types.ts";

export interface ServiceOptions {
  urls: string[];
  config: Config;
  clock: Clock;
  metrics: Registry;
}

const DEFAULT_CACHE_TTL = 60;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const toNamespace = (r: NamespaceRow): Namespace => ({ id: r.id, title: r.title, supports_url_encoding: true });
const namespaceMissing = (id: string) => new KVError(404, 10013, `namespace ${JSON.stringify(id)} not found`);

export async function createKVService({ urls, config, clock, metrics }: ServiceOptions): Promise<KVService> {
  // Sharding over every URL arrives with the redundancy work; one cluster serves all keys until then.
  const backend = await openPostgresBackend(urls[0]!, config.dbPoolSize);
  const versions = createVersionClock(clock);
  const cache = createReadCache({ maxBytes: config.cacheBytes, clock });
  const batcher = createBatcher({
    write: (rows) => backend.write(rows),
    maxRows: config.batchMaxRows,
    maxBytes: config.batchMaxBytes,
    windowMs: config.batchWindowMs,
    concurrency: config.batchConcurrency,
    metrics,
  });
  const hits = metrics.counter("kvdrive_cache_hits_total", "KV reads answered by the in-process cache");
  const misses = metrics.counter("kvdrive_cache_misses_total", "KV reads that went to storage");
  metrics.gauge("kvdrive_cache_bytes", "Bytes held by the KV read cache", () => [[undefined, cache.bytes]]);
  metrics.gauge("kvdrive_cache_entries", "Entries held by the KV read cache", () => [[undefined, cache.entries]]);
  const purged = metrics.counter("kvdrive_purged_total", "Expired entries and old tombstones removed");

  // Namespace rows are few and read on every request: keep them in memory, refreshed on a miss.
  const namespaces = new Map<string, NamespaceRow>();
  async function namespace(accountId: string, id: string): Promise<NamespaceRow> {
    let row = namespaces.get(id);
    if (!row) {
      const found = await backend.getNamespace(id);
      if (found) namespaces.set(id, (row = found));
    }
    if (!row || row.account_id !== accountId) throw namespaceMissing(id);
    return row;
  }

  const cacheKey = (ns: string, key: string) => ns + "\0" + key;
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  function visible(e: CachedEntry): KVValue | null {
    if (e.value === null) return null;
    if (e.expiration !== null && e.expiration <= clock.now() / 1000) return null;
    return { value: e.value, metadata: e.metadata, expiration: e.expiration };
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

  const purgeTimer = setInterval(async () => {
    try {
      const now = clock.now();
      purged.inc(undefined, await backend.purge(Math.floor(now / 1000), (now - config.tombstoneGraceSeconds * 1000) * 1000));
    } catch {
      // Storage may be briefly away; the next round tries again.
    }
  }, config.purgeIntervalSeconds * 1000);
  purgeTimer.unref?.();

  return {
    async createNamespace(accountId, title) {
      const id = randomBytes(16).toString("hex");
      if (!(await backend.createNamespace(accountId, id, title))) {
        throw new KVError(400, 10014, `a namespace with the title ${JSON.stringify(title)} already exists in this account`);
      }
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
      if (result === "duplicate") throw new KVError(400, 10014, `a namespace with the title ${JSON.stringify(title)} already exists in this account`);
      namespaces.delete(id);
      return toNamespace(await namespace(accountId, id));
    },
    async deleteNamespace(accountId, id) {
      if (!(await backend.deleteNamespace(accountId, id))) throw namespaceMissing(id);
      namespaces.delete(id);
      const prefix = id + "\0";
      cache.deleteWhere((k) => k.startsWith(prefix));
    },

    async get(accountId, nsId, key, opts) {
      const ns = await namespace(accountId, nsId);
      const ck = cacheKey(ns.id, key);
      const cached = cache.get(ck, opts?.cacheTtl ?? DEFAULT_CACHE_TTL);
      if (cached) {
        hits.inc();
        return visible(cached);
      }
      misses.inc();
      const ticket = cache.readTicket();
      const entry = fromStored(await backend.get(ns.id, encoder.encode(key)));
      cache.setFromRead(ck, entry, ticket);
      return visible(entry);
    },
    async getMany(accountId, nsId, keys, opts) {
      const ns = await namespace(accountId, nsId);
      const ttl = opts?.cacheTtl ?? DEFAULT_CACHE_TTL;
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
          const e = fromStored(found[j]!);
          cache.setFromRead(cacheKey(ns.id, keys[i]!), e, ticket);
          out[i] = visible(e);
        });
      }
      return out;
    },
    async put(accountId, nsId, input) {
      const ns = await namespace(accountId, nsId);
      const r = row(ns.id, input);
      await batcher.submit(r);
      remember(r, input.key);
    },
    async putMany(accountId, nsId, inputs) {
      const ns = await namespace(accountId, nsId);
      const rows = inputs.map((i) => row(ns.id, i));
      await batcher.submitAll(rows);
      rows.forEach((r, i) => remember(r, inputs[i]!.key));
    },
    async delete(accountId, nsId, key) {
      const ns = await namespace(accountId, nsId);
      const r = tombstone(ns.id, key);
      await batcher.submit(r);
      remember(r, key);
    },
    async deleteMany(accountId, nsId, keys) {
      const ns = await namespace(accountId, nsId);
      const rows = keys.map((k) => tombstone(ns.id, k));
      await batcher.submitAll(rows);
      rows.forEach((r, i) => remember(r, keys[i]!));
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

    async close() {
      clearInterval(purgeTimer);
      await batcher.flush();
      await backend.close();
    },
    ready: () => backend.ping(),
  };
}
