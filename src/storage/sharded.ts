// Shards: one Backend over several Postgres clusters. An entry lives on the cluster that owns (namespace, key)
// on the consistent-hash ring (ring.ts), so a hot namespace spreads over every cluster. Namespaces and the ring
// itself live on the first cluster (the catalog). Listing merges the sorted streams of every cluster.
//
// Adding a cluster: the ring as last completed is stored on the catalog. When the configured clusters differ
// from it, this process routes writes by the new ring and, until `kvdrive rebalance` has moved every key whose
// owner changed and stored the new ring, reads a key from its old owner when its new owner has nothing.
// Listing filters out copies a cluster holds for a key it no longer owns, so a key is listed once, from the
// cluster whose copy counts.
import { ConfigError, ShardConfigError } from "../errors.ts";
import { compareBytes } from "./digest.ts";
import { compareVersions, type Digest, type KeyRange, type StoredEntry } from "./entry.ts";
import { createRing, DEFAULT_VNODES, type Ring } from "./ring.ts";
import { openPostgresBackend } from "./store.ts";
import type { EntryRef, KeyVersion, ListedEntry, ListQuery, PostgresBackend, ScanQuery } from "./backend.ts";

export interface Shard {
  /** The cluster's own id (kvdrive_shard), its name on the ring. */
  id: string;
  url: string;
  backend: PostgresBackend;
}

export interface ShardedBackend extends PostgresBackend {
  readonly shards: readonly Shard[];
  /** The ring keys are written by. */
  readonly ring: Ring;
  /** The ring being moved away from while a rebalance is due, else null. */
  readonly previous: () => Ring | null;
  /** Re-reads the stored ring (a rebalance elsewhere may have completed). */
  refreshRing(): Promise<void>;
  /** The shard owning (ns, key) now. */
  ownerOf(ns: string, key: Uint8Array): Shard;
  /** Rows grouped by the cluster that owns them: the units that fail independently. */
  partition<T extends { ns: string; key: Uint8Array }>(rows: T[]): T[][];
}

// Rounds of merged listing before giving up on filling a page: only filtered-out stray copies (a rebalance
// half done) can make a round come back short, and each round advances past every key it saw.
const MAX_LIST_ROUNDS = 64;

/** The first `max` entries of several lists sorted by key, in key order: a k-way merge (native byte compare). */
function mergeSorted<T extends { key: Uint8Array }>(lists: T[][], max: number): T[] {
  const out: T[] = [];
  const at = lists.map(() => 0);
  while (out.length < max) {
    let best = -1;
    for (let i = 0; i < lists.length; i++) {
      if (at[i]! >= lists[i]!.length) continue;
      if (best < 0 || Buffer.compare(lists[i]![at[i]!]!.key, lists[best]![at[best]!]!.key) < 0) best = i;
    }
    if (best < 0) break;
    out.push(lists[best]![at[best]!++]!);
  }
  return out;
}

/** How often a process that routes around a pending rebalance looks whether it has completed. */
const RING_REFRESH_MS = 5_000;

export async function openShardedBackend(urls: readonly string[], poolSize: number, opts: { vnodes?: number } = {}): Promise<ShardedBackend> {
  if (urls.length === 0) throw new ShardConfigError("DATABASE_URL lists no Postgres cluster");
  const vnodes = opts.vnodes ?? DEFAULT_VNODES;
  const opened: PostgresBackend[] = [];
  try {
    for (const url of urls) opened.push(await openPostgresBackend(url, poolSize));
  } catch (e) {
    await Promise.all(opened.map((b) => b.close().catch(() => {})));
    throw e;
  }
  const shards: Shard[] = [];
  for (let i = 0; i < urls.length; i++) shards.push({ id: await opened[i]!.shardId(), url: urls[i]!, backend: opened[i]! });
  const byId = new Map<string, Shard>();
  for (const s of shards) {
    if (byId.has(s.id)) {
      await Promise.all(opened.map((b) => b.close().catch(() => {})));
      throw new ShardConfigError(`DATABASE_URL lists the same Postgres cluster twice (shard ${s.id})`);
    }
    byId.set(s.id, s);
  }
  const catalog = shards[0]!.backend;
  const ring = createRing(shards.map((s) => s.id), vnodes);
  let previous: Ring | null = null;

  async function refreshRing() {
    const stored = await catalog.getRing();
    if (stored === null) {
      await catalog.setRing([...ring.nodes], ring.vnodes);
      previous = null;
      return;
    }
    const same = stored.vnodes === ring.vnodes && stored.nodes.length === ring.nodes.length && [...stored.nodes].sort().every((n, i) => n === ring.nodes[i]);
    if (same) {
      previous = null;
      return;
    }
    const missing = stored.nodes.filter((n) => !byId.has(n));
    if (missing.length) {
      throw new ShardConfigError(
        `the shard ring stored on the first cluster holds ${missing.join(", ")}, which DATABASE_URL does not list: ` +
          "removing a cluster is not supported, list every cluster (new ones at the end)",
      );
    }
    previous = createRing(stored.nodes, stored.vnodes);
  }
  try {
    await refreshRing();
  } catch (e) {
    await Promise.all(opened.map((b) => b.close().catch(() => {})));
    throw e;
  }
  const refresher = setInterval(() => {
    if (previous) refreshRing().catch(() => {});
  }, RING_REFRESH_MS);
  refresher.unref?.();

  const single = shards.length === 1;
  const ownerOf = (ns: string, key: Uint8Array): Shard => (single ? shards[0]! : byId.get(ring.owner(ns, key))!);
  const oldOwnerOf = (ns: string, key: Uint8Array): Shard | null => {
    if (!previous) return null;
    const s = byId.get(previous.owner(ns, key))!;
    return s === ownerOf(ns, key) ? null : s;
  };

  /** Indices of items grouped by the shard that pick() names. */
  function groupBy<T>(items: readonly T[], pick: (t: T) => Shard | null): Map<Shard, number[]> {
    const groups = new Map<Shard, number[]>();
    items.forEach((t, i) => {
      const s = pick(t);
      if (!s) return;
      const g = groups.get(s);
      if (g) g.push(i);
      else groups.set(s, [i]);
    });
    return groups;
  }

  async function getMany(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>> {
    const out: Array<StoredEntry | null> = new Array(keys.length).fill(null);
    await Promise.all(
      [...groupBy(keys, (k) => ownerOf(ns, k))].map(async ([s, idx]) => {
        const got = await s.backend.getMany(ns, idx.map((i) => keys[i]!));
        idx.forEach((i, j) => (out[i] = got[j]!));
      }),
    );
    if (previous) {
      // Keys not moved yet: their new owner has nothing, the old one may.
      const pending = keys.map((_, i) => i).filter((i) => out[i] === null);
      await Promise.all(
        [...groupBy(pending, (i) => oldOwnerOf(ns, keys[i]!))].map(async ([s, idx]) => {
          const got = await s.backend.getMany(ns, idx.map((j) => keys[pending[j]!]!));
          idx.forEach((j, n) => (out[pending[j]!] = got[n]!));
        }),
      );
    }
    return out;
  }

  /**
   * Keeps only the copies that count: a shard's entry for a key it owns, or the old owner's while the new owner
   * has nothing for it (not moved yet). Entries come from `from`.
   */
  async function counted<T extends { key: Uint8Array }>(ns: string, from: Shard, entries: T[]): Promise<T[]> {
    // With the ring settled, rebalance left no copies behind: every entry a cluster holds is its own.
    if (!previous) return entries;
    const keep: T[] = [];
    const unsure: T[] = [];
    for (const e of entries) {
      if (ownerOf(ns, e.key) === from) keep.push(e);
      else if (oldOwnerOf(ns, e.key) === from) unsure.push(e);
    }
    if (unsure.length) {
      const groups = groupBy(unsure, (e) => ownerOf(ns, e.key));
      await Promise.all(
        [...groups].map(async ([s, idx]) => {
          const got = await s.backend.getMany(ns, idx.map((i) => unsure[i]!.key));
          idx.forEach((i, j) => {
            if (got[j] === null) keep.push(unsure[i]!);
          });
        }),
      );
    }
    return keep;
  }

  /**
   * Merges one sorted page per shard into one sorted page of up to `limit` entries. Each shard is asked for
   * `limit` entries after the position reached; a shard that filled its page bounds how far the merge is
   * complete, so nothing past that bound is returned in this round, and the next round starts there.
   */
  async function mergedPage<T extends { key: Uint8Array }>(
    ns: string,
    limit: number,
    after: Uint8Array | null,
    fetch: (s: Shard, after: Uint8Array | null, limit: number) => Promise<T[]>,
  ): Promise<T[]> {
    if (single) return fetch(shards[0]!, after, limit);
    const out: T[] = [];
    let position = after;
    for (let round = 0; round < MAX_LIST_ROUNDS && out.length < limit; round++) {
      const want = limit - out.length;
      // Keys spread evenly, so each cluster holds about want/N of the next want keys: ask each for a margin
      // above that, not for want; a cluster that fills its page bounds the round, and the next round goes on.
      const ask = Math.min(want, Math.ceil((want / shards.length) * 1.25) + 16);
      const pages = await Promise.all(shards.map(async (s) => ({ s, rows: await fetch(s, position, ask) })));
      let bound: Uint8Array | null = null;
      for (const p of pages) {
        if (p.rows.length < ask) continue;
        const last = p.rows[p.rows.length - 1]!.key;
        if (bound === null || compareBytes(last, bound) < 0) bound = last;
      }
      const lists: T[][] = [];
      for (const p of pages) {
        const within = bound === null ? p.rows : p.rows.filter((r) => Buffer.compare(r.key, bound!) <= 0);
        lists.push(await counted(ns, p.s, within));
      }
      // While a rebalance is due, a scan can meet a key on two shards; counted() keeps one of them.
      out.push(...mergeSorted(lists, want));
      if (bound === null) break; // every shard is exhausted
      position = out.length >= limit ? null : bound;
      if (position === null) break;
    }
    return out;
  }

  const shardsFor = (ns: string, key: Uint8Array) => {
    const s = [ownerOf(ns, key)];
    const old = oldOwnerOf(ns, key);
    if (old) s.push(old);
    return s;
  };

  return {
    shards,
    ring,
    previous: () => previous,
    refreshRing,
    ownerOf,
    partition(rows) {
      if (single) return [rows];
      return [...groupBy(rows, (r) => ownerOf(r.ns, r.key)).values()].map((idx) => idx.map((i) => rows[i]!));
    },

    async get(ns, key) {
      const got = await ownerOf(ns, key).backend.get(ns, key);
      if (got !== null || !previous) return got;
      const old = oldOwnerOf(ns, key);
      return old ? old.backend.get(ns, key) : null;
    },
    getMany: (ns, keys) => (single ? shards[0]!.backend.getMany(ns, keys) : getMany(ns, keys)),
    async write(rows) {
      if (single) return shards[0]!.backend.write(rows);
      const applied: boolean[] = new Array(rows.length).fill(false);
      // Bulk writes are atomic per cluster; a write spanning clusters commits on each independently.
      await Promise.all(
        [...groupBy(rows, (r) => ownerOf(r.ns, r.key))].map(async ([s, idx]) => {
          const flags = await s.backend.write(idx.map((i) => rows[i]!));
          idx.forEach((i, j) => (applied[i] = flags[j]!));
        }),
      );
      return applied;
    },
    list(q: ListQuery): Promise<ListedEntry[]> {
      // `after` (the cursor) and `from` (the prefix) are both lower bounds: the merge advances `after` only.
      const { standIn, only: _, ...plain } = q;
      return mergedPage(q.ns, q.limit, q.after, (s, after, limit) => {
        const own = s.backend.list({ ...plain, after, limit });
        // A cluster that cannot answer: its share of this page comes from the stand-in (another backend), unless
        // a rebalance is due (then which cluster's copy counts needs every cluster).
        if (!standIn || previous) return own;
        return own.catch(() => standIn({ ...plain, after, limit, only: (k) => ownerOf(q.ns, k) === s }));
      });
    },
    async purge(nowSeconds, tombstoneBeforeMicros) {
      const n = await Promise.all(shards.map((s) => s.backend.purge(nowSeconds, tombstoneBeforeMicros)));
      return n.reduce((a, b) => a + b, 0);
    },
    async dropNamespace(ns) {
      await Promise.all(shards.map((s) => s.backend.dropNamespace(ns)));
    },
    scan(q: ScanQuery): Promise<StoredEntry[]> {
      return mergedPage(q.ns, q.limit, q.after, (s, after, limit) => s.backend.scan({ ...q, after, limit }));
    },
    versions(q: ScanQuery): Promise<KeyVersion[]> {
      return mergedPage(q.ns, q.limit, q.after, (s, after, limit) => s.backend.versions({ ...q, after, limit }));
    },
    async digest(ns: string, range: KeyRange, nowSeconds: number): Promise<Digest> {
      // A digest is a sum over entries, so the clusters' digests add up. While a rebalance is due, a key held
      // twice counts twice and the range looks different: the crawler then compares it key by key.
      const parts = await Promise.all(shards.map((s) => s.backend.digest(ns, range, nowSeconds)));
      return parts.reduce((a, d) => ({ count: a.count + d.count, sum: (a.sum + d.sum) & ((1n << 64n) - 1n) }), { count: 0, sum: 0n });
    },
    async namespaceIds(after, limit) {
      const all = new Set<string>();
      for (const ids of await Promise.all(shards.map((s) => s.backend.namespaceIds(after, limit)))) for (const id of ids) all.add(id);
      return [...all].sort().slice(0, limit);
    },
    async tombstones(beforeMicros, after, limit) {
      const pages = await Promise.all(shards.map((s) => s.backend.tombstones(beforeMicros, after, limit)));
      const cmp = (a: EntryRef, b: EntryRef) => (a.ns !== b.ns ? (a.ns < b.ns ? -1 : 1) : compareBytes(a.key, b.key));
      let bound: EntryRef | null = null;
      for (const p of pages) if (p.length >= limit && (bound === null || cmp(p[p.length - 1]!, bound) < 0)) bound = p[p.length - 1]!;
      const merged = pages.flat().filter((t) => bound === null || cmp(t, bound) <= 0);
      merged.sort((a, b) => cmp(a, b) || compareVersions(b.version, a.version));
      return merged.slice(0, limit);
    },
    async removeIfVersion(refs) {
      if (single) return shards[0]!.backend.removeIfVersion(refs);
      const groups = new Map<Shard, EntryRef[]>();
      for (const r of refs) for (const s of shardsFor(r.ns, r.key)) (groups.get(s) ?? groups.set(s, []).get(s)!).push(r);
      const n = await Promise.all([...groups].map(([s, rs]) => s.backend.removeIfVersion(rs)));
      return n.reduce((a, b) => a + b, 0);
    },
    async ping() {
      // Ready when every cluster answers: a missing cluster means a share of the keys cannot be served.
      const ok = await Promise.all(shards.map((s) => s.backend.ping()));
      return ok.every(Boolean);
    },
    async close() {
      clearInterval(refresher);
      await Promise.all(shards.map((s) => s.backend.close()));
    },

    createNamespace: (a, id, t) => catalog.createNamespace(a, id, t),
    listNamespaces: (a, o, d, l, off) => catalog.listNamespaces(a, o, d, l, off),
    getNamespace: (id) => catalog.getNamespace(id),
    renameNamespace: (a, id, t) => catalog.renameNamespace(a, id, t),
    async deleteNamespace(accountId, id) {
      if (!(await catalog.deleteNamespace(accountId, id))) return false;
      await Promise.all(shards.slice(1).map((s) => s.backend.dropNamespace(id)));
      return true;
    },
    setNamespaceReplication: (id, mode) => catalog.setNamespaceReplication(id, mode),
    shardId: () => catalog.shardId(),
    getRing: () => catalog.getRing(),
    setRing: (nodes, v) => catalog.setRing(nodes, v),
    async countEntries(ns) {
      const n = await Promise.all(shards.map((s) => s.backend.countEntries(ns)));
      return n.reduce((a, b) => a + b, 0);
    },
  };
}
