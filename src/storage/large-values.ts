// Large values, invisibly: a Backend wrapper that keeps values over a threshold in the blob store and only a
// pointer to them in the row. Callers read and write whole values as before.
//
// Safety rests on three rules:
//  1. Every write puts its blob under a key of its own (namespace, key, version and a random token), so no two
//     rows, and no two attempts at the same row, ever share a blob.
//  2. The blob is durable before the row that points at it is written.
//  3. A blob is deleted only once no row can point at it: the blob a write replaced (the version moved past it
//     and never comes back), the fresh blob of a write that lost, or, in the sweep, a blob no row points at
//     that is older than the grace (so a write between its put and its row is left alone).
// Whatever escapes the write path (a small value or tombstone replacing a large one, purge and removeIfVersion
// removing rows, a crash between blob and row, a failed delete) is an orphan that sweepOrphans removes.
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import { BLOB_KEY_MAX_BYTES, BLOB_LIST_MAX, readAll, type BlobEntry, type BlobStore } from "./blob.ts";
import { keyHex, keyString, type StoredEntry, type Version } from "./entry.ts";
import type { Backend } from "./backend.ts";
import { LargeValueError } from "../errors.ts";

export interface LargeValueOptions {
  /** Values longer than this many bytes go to the blob store; a value of exactly this length stays in the row. */
  thresholdBytes: number;
  /** Prefix of every blob key this wrapper writes, so the blob store can hold other things. Default "values/". */
  prefix?: string;
  metrics?: Registry;
  /** For the sweep's grace period. */
  clock?: Clock;
}

export type LargeValueBackend = Backend & {
  /**
   * Deletes blobs under the prefix that no row points at and that were last written more than graceMs ago.
   * Returns how many it removed. graceMs must exceed the longest write (blob put to row commit) and any clock
   * skew between this process and the blob store (S3 stamps objects with its own clock): minutes, not seconds.
   */
  sweepOrphans(graceMs: number): Promise<number>;
};

export const DEFAULT_PREFIX = "values/";
// Blob store calls in flight at once per write, read or sweep page: enough to hide latency, few enough not to
// flood the store or hold many large values in memory.
const PARALLEL = 8;
// A blob missing because a newer write replaced it is read again from the row; a writer replacing the same key
// again between each re-read is possible but rare, so a few rounds suffice.
const MAX_REREADS = 3;


/**
 * `${prefix}${ns}/${key}/${ts}-${nonce}-${token}`: ns percent-encoded (so it holds no "/"), key in base64url
 * (a 512-byte key is 683 characters, inside S3's 1024-byte key limit; hex would not fit).
 */
function blobKeyOf(prefix: string, r: StoredEntry): string {
  const token = Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex");
  const k = Buffer.from(r.key.buffer, r.key.byteOffset, r.key.byteLength).toString("base64url");
  return `${nsPrefix(prefix, r.ns)}${k}/${r.version.ts}-${r.version.nonce}-${token}`;
}

const nsPrefix = (prefix: string, ns: string) => `${prefix}${encodeURIComponent(ns)}/`;

/** The namespace, key and version a blob key was made from, or null when it is not one of ours. */
export function parseBlobKey(prefix: string, blobKey: string): { ns: string; key: Uint8Array; version: Version } | null {
  if (!blobKey.startsWith(prefix)) return null;
  const parts = blobKey.slice(prefix.length).split("/");
  if (parts.length !== 3) return null;
  const m = /^(\d{1,16})-(\d{1,10})-[0-9a-f]{16}$/.exec(parts[2]!);
  if (!m) return null;
  let ns: string;
  try {
    ns = decodeURIComponent(parts[0]!);
  } catch {
    return null;
  }
  const key = Buffer.from(parts[1]!, "base64url");
  if (key.toString("base64url") !== parts[1] || encodeURIComponent(ns) !== parts[0]) return null;
  return { ns, key: new Uint8Array(key), version: { ts: Number(m[1]), nonce: Number(m[2]) } };
}

/**
 * Runs fn over items with at most `limit` in flight. On the first failure it starts no more, waits for those
 * in flight (so nothing runs on after the caller has moved on), then throws that failure.
 */
async function eachLimited<T>(items: T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: { error: unknown } | null = null;
  const worker = async () => {
    while (!failed && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (error) {
        failed ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed) throw (failed as { error: unknown }).error;
}

/**
 * Wraps a backend so values longer than thresholdBytes live in `blobs`. close() closes the inner backend only:
 * the blob store belongs to the caller, who may share it, and closes it after this.
 */
export function withLargeValues(inner: Backend, blobs: BlobStore, opts: LargeValueOptions): LargeValueBackend {
  const threshold = opts.thresholdBytes;
  if (!Number.isSafeInteger(threshold) || threshold < 0) throw new RangeError(`large value threshold ${threshold} must be a non-negative integer`);
  const prefix = opts.prefix ?? DEFAULT_PREFIX;
  const clock = opts.clock ?? systemClock;
  const labels = { store: blobs.kind };
  const m = opts.metrics;
  const written = m?.counter("kvdrive_large_value_blobs_written_total", "Large values put into the blob store, by store").with(labels);
  const writtenBytes = m?.counter("kvdrive_large_value_blob_bytes_written_total", "Bytes of large values put into the blob store, by store").with(labels);
  const deleted = m?.counter("kvdrive_large_value_blobs_deleted_total", "Replaced, losing or orphaned blobs deleted, by store").with(labels);
  const deleteErrors = m?.counter("kvdrive_large_value_blob_delete_errors_total", "Blob deletes that failed (left to the orphan sweep), by store").with(labels);
  const swept = m?.counter("kvdrive_large_value_orphans_swept_total", "Orphaned blobs removed by the sweep, by store").with(labels);
  const rereads = m?.counter("kvdrive_large_value_rereads_total", "Rows read again because their blob was missing when read (replaced by a newer write), by store").with(labels);

  const isLarge = (r: StoredEntry) => !r.tombstone && r.value !== null && r.value.byteLength > threshold;

  /** Deletes blobs, never throwing: a blob that stays is an orphan for the sweep, not a failed write. */
  async function deleteQuietly(keys: Iterable<string>): Promise<number> {
    let n = 0;
    await eachLimited([...new Set(keys)], PARALLEL, async (k) => {
      try {
        await blobs.delete(k);
        n++;
        deleted?.inc();
      } catch {
        deleteErrors?.inc();
      }
    });
    return n;
  }

  /** The blob each (ns, key) of rows points at now, by keyString. */
  async function currentPointers(rows: StoredEntry[]): Promise<Map<string, string>> {
    const byNs = new Map<string, Map<string, Uint8Array>>();
    for (const r of rows) {
      let keys = byNs.get(r.ns);
      if (!keys) byNs.set(r.ns, (keys = new Map()));
      keys.set(keyString(r.ns, r.key), r.key);
    }
    const out = new Map<string, string>();
    for (const [ns, keys] of byNs) {
      for (const e of await inner.getMany(ns, [...keys.values()])) if (e?.blob) out.set(keyString(ns, e.key), e.blob);
    }
    return out;
  }

  async function readBlob(key: string): Promise<Uint8Array | null> {
    const stream = await blobs.get(key);
    return stream ? readAll(stream) : null;
  }

  /**
   * The entry with its value read from the blob store. A blob that is missing (or fails to read) while the row
   * has since moved to another pointer was replaced by a newer write: follow the row. A row still pointing at
   * a missing blob is an error, never a wrong or empty value.
   */
  async function resolve(ns: string, key: Uint8Array, entry: StoredEntry | null): Promise<StoredEntry | null> {
    let cur = entry;
    for (let round = 0; ; round++) {
      if (!cur || !cur.blob) return cur;
      let failure: unknown = null;
      try {
        const bytes = await readBlob(cur.blob);
        if (bytes) return { ...cur, value: bytes, blob: null };
      } catch (e) {
        failure = e;
      }
      if (round < MAX_REREADS) rereads?.inc();
      const again = round < MAX_REREADS ? await inner.get(ns, key) : cur;
      if (again?.blob === cur.blob) {
        if (failure) throw failure;
        throw new LargeValueError(
          `namespace ${JSON.stringify(ns)} key ${keyHex(key)} (hex): its value is in blob ${JSON.stringify(cur.blob)}, which is missing from the ${blobs.kind} blob store`,
        );
      }
      cur = again;
    }
  }

  async function resolveAll(ns: string, entries: Array<StoredEntry | null>): Promise<Array<StoredEntry | null>> {
    const out = entries.slice();
    const todo: number[] = [];
    const seen = new Map<StoredEntry, number>(); // getMany may answer a repeated key with the same entry
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e?.blob && !seen.has(e)) {
        seen.set(e, i);
        todo.push(i);
      }
    }
    if (todo.length === 0) return out;
    await eachLimited(todo, PARALLEL, async (i) => {
      out[i] = await resolve(ns, entries[i]!.key, entries[i]!);
    });
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (e?.blob) out[i] = out[seen.get(e)!]!;
    }
    return out;
  }

  async function write(rows: StoredEntry[]): Promise<boolean[]> {
    let large: number[] | null = null;
    let pointers = false;
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      if (r.blob != null) pointers = true;
      if (isLarge(r)) (large ??= []).push(i);
    }
    // Blob pointers are this wrapper's own business: a row given with one carries its value (or is refused).
    const input = pointers ? rows.map(ownPointer) : rows;
    if (!large) return inner.write(input);

    // Large rows: pointers of what they replace, read before the write, alongside the blob puts.
    const before = currentPointers(input);
    before.catch(() => {}); // awaited below; a failing put must not leave it unhandled
    const fresh: Array<string | null> = new Array(rows.length).fill(null);
    const out = input.slice();
    try {
      await eachLimited(large, PARALLEL, async (i) => {
        const r = input[i]!;
        const key = blobKeyOf(prefix, r);
        // A namespace too long for a blob key: the value stays in the row (Postgres takes it, only slower).
        if (Buffer.byteLength(key) > BLOB_KEY_MAX_BYTES) return;
        fresh[i] = key;
        await blobs.put(key, r.value!, r.value!.byteLength);
        written?.inc();
        writtenBytes?.inc(r.value!.byteLength);
        out[i] = { ...r, value: null, blob: key };
      });
    } catch (e) {
      // No row points at any of them yet (a failed put may still have landed: delete those too).
      await deleteQuietly(fresh.filter((k): k is string => k !== null));
      throw e;
    }
    let old: Map<string, string>;
    try {
      old = await before;
    } catch (e) {
      await deleteQuietly(fresh.filter((k): k is string => k !== null));
      throw e;
    }
    // If this fails the rows may or may not have been applied (a lost connection after commit), so the fresh
    // blobs may be pointed at: they stay, and the sweep removes those that are not.
    const applied = await inner.write(out);
    const doomed: string[] = [];
    for (let i = 0; i < out.length; i++) {
      const r = out[i]!;
      if (applied[i]) {
        const replaced = old.get(keyString(r.ns, r.key));
        if (replaced && replaced !== r.blob) doomed.push(replaced);
      } else if (fresh[i] && r.blob === fresh[i]) doomed.push(fresh[i]!);
    }
    if (doomed.length) await deleteQuietly(doomed);
    return applied;
  }

  /** Walks blobs under `under`; deletes those no row points at and (with a cutoff) last written before it. */
  async function sweep(under: string, cutoff: number): Promise<number> {
    let removed = 0;
    let after: string | undefined;
    for (;;) {
      const page = await blobs.list(under, after, BLOB_LIST_MAX);
      const byNs = new Map<string, Array<{ entry: BlobEntry; key: Uint8Array }>>();
      for (const entry of page.entries) {
        if (entry.modified >= cutoff) continue;
        const parsed = parseBlobKey(prefix, entry.key);
        if (!parsed) continue; // not one of ours: leave it alone
        let list = byNs.get(parsed.ns);
        if (!list) byNs.set(parsed.ns, (list = []));
        list.push({ entry, key: parsed.key });
      }
      const orphans: string[] = [];
      for (const [ns, list] of byNs) {
        const rows = await inner.getMany(ns, list.map((x) => x.key));
        list.forEach((x, i) => {
          if (rows[i]?.blob !== x.entry.key) orphans.push(x.entry.key);
        });
      }
      removed += await deleteQuietly(orphans);
      if (!page.next || page.entries.length === 0) return removed;
      after = page.next;
    }
  }

  return {
    get: async (ns, key) => resolve(ns, key, await inner.get(ns, key)),
    getMany: async (ns, keys) => resolveAll(ns, await inner.getMany(ns, keys)),
    write,
    async scan(q) {
      // A row removed between the scan and a blob re-read is left out.
      return (await resolveAll(q.ns, await inner.scan(q))).filter((e): e is StoredEntry => e !== null);
    },
    list: (q) => inner.list(q),
    versions: (q) => inner.versions(q),
    digest: (ns, range, now) => inner.digest(ns, range, now),
    namespaceIds: (after, limit) => inner.namespaceIds(after, limit),
    tombstones: (before, after, limit) => inner.tombstones(before, after, limit),
    removeIfVersion: (refs) => inner.removeIfVersion(refs),
    purge: (now, tombstoneBefore) => inner.purge(now, tombstoneBefore),
    ping: () => inner.ping(),
    async dropNamespace(ns) {
      await inner.dropNamespace(ns);
      // No grace: the namespace is gone. A blob some row still points at (a write that raced the drop) stays.
      await sweep(nsPrefix(prefix, ns), Infinity);
    },
    close: () => inner.close(),
    async sweepOrphans(graceMs) {
      if (!Number.isFinite(graceMs) || graceMs < 0) throw new RangeError(`orphan sweep grace ${graceMs} ms must be a non-negative number`);
      const n = await sweep(prefix, clock.now() - graceMs);
      swept?.inc(n);
      return n;
    },
  };
}

function ownPointer(r: StoredEntry): StoredEntry {
  if (r.blob == null) return r;
  if (!r.tombstone && r.value === null) {
    throw new LargeValueError(`namespace ${JSON.stringify(r.ns)} key ${keyHex(r.key)} (hex): a row written through the large-value store must carry its value, not a blob pointer`);
  }
  return { ...r, blob: null };
}
