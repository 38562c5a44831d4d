// The storage backend interface: what every backend (Postgres, sharded, large values, S3 replica, replicated)
// answers. Writes are conditional: a row is applied only if its version is newer than the stored one, so replays,
// retries and repairs never go backwards.
import type { Digest, KeyRange, StoredEntry, Version } from "./entry.ts";

/** Every entry of a namespace in [after, before), tombstones and expired ones included: for the crawler,
 * backfill and rebalance. */
export interface ScanQuery {
  ns: string;
  /** Exclusive lower bound, or null. */
  after: Uint8Array | null;
  /** Exclusive upper bound, or null. */
  before: Uint8Array | null;
  limit: number;
}

/** A key's version without its value: what the crawler compares key by key. */
export interface KeyVersion {
  key: Uint8Array;
  version: Version;
  tombstone: boolean;
  expiration: number | null;
}

/** Identifies exactly one stored version of a key (tombstone removal, rebalance). */
export interface EntryRef {
  ns: string;
  key: Uint8Array;
  version: Version;
}

export interface ListQuery {
  ns: string;
  /** Exclusive lower bound (the cursor), or null. */
  after: Uint8Array | null;
  /** Inclusive lower bound (the prefix), or null. */
  from: Uint8Array | null;
  /** Exclusive upper bound (the prefix's successor), or null. */
  before: Uint8Array | null;
  limit: number;
  /** Unix seconds: entries expiring at or before it are hidden. */
  now: number;
  /**
   * Only keys this accepts are wanted (one cluster's share, listed from another backend). A backend may use it
   * to skip work per key (the S3 replica reads no head for the others); the caller filters in any case.
   */
  only?: (key: Uint8Array) => boolean;
  /**
   * Lists the share of a cluster that cannot answer, from another backend (`q.only` says which keys). Unset:
   * a cluster that cannot answer fails the list.
   */
  standIn?: (q: ListQuery) => Promise<ListedEntry[]>;
}

export interface ListedEntry {
  key: Uint8Array;
  metadata: string | null;
  expiration: number | null;
}

export interface NamespaceRow {
  account_id: string;
  id: string;
  title: string;
  /** The admin route's override of KVDRIVE_REPLICATION for this namespace, or null/absent. */
  replication?: string | null;
}

/** What every storage backend implements (Postgres now; shards and an S3 replica later). test/storage/contract.ts is its test. */
export interface Backend {
  get(ns: string, key: Uint8Array): Promise<StoredEntry | null>;
  /** Answers in the order asked, null where nothing is stored. */
  getMany(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>>;
  /**
   * Applies each row only if its version is newer than the stored one, all rows atomically. Rows for the same
   * key in one call: only the newest is applied. applied[i] tells whether rows[i] changed storage.
   */
  write(rows: StoredEntry[]): Promise<boolean[]>;
  /** Live entries (no tombstones, not expired) in byte order of their keys. */
  list(q: ListQuery): Promise<ListedEntry[]>;
  /** Removes entries expired at nowSeconds and tombstones older than tombstoneBeforeMicros; returns rows removed. */
  purge(nowSeconds: number, tombstoneBeforeMicros: number): Promise<number>;
  dropNamespace(ns: string): Promise<void>;

  // Anti-entropy, backfill and rebalance. Expired entries count as absent in digests (both backends purge
  // them on their own clocks); tombstones count, since both backends must hold them before they go.
  /** Entries with their values, tombstones and expired ones included, in key byte order. */
  scan(q: ScanQuery): Promise<StoredEntry[]>;
  /** Keys and versions only, same order and bounds as scan. */
  versions(q: ScanQuery): Promise<KeyVersion[]>;
  /** Digest of (key, version) over the namespace's entries in range, leaving out those expired at nowSeconds. */
  digest(ns: string, range: KeyRange, nowSeconds: number): Promise<Digest>;
  /** Namespaces that hold entries, in order, strictly after `after`. */
  namespaceIds(after: string | null, limit: number): Promise<string[]>;
  /** Tombstones written before beforeMicros, in (ns, key) order strictly after `after`. */
  tombstones(beforeMicros: number, after: { ns: string; key: Uint8Array } | null, limit: number): Promise<EntryRef[]>;
  /**
   * Removes each entry only while it still holds exactly that version (a newer write in between keeps it).
   * Returns how many were removed.
   */
  removeIfVersion(refs: EntryRef[]): Promise<number>;

  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface NamespaceStore {
  /** False when the account already has a namespace with that title. */
  createNamespace(accountId: string, id: string, title: string): Promise<boolean>;
  listNamespaces(accountId: string, order: "id" | "title", direction: "asc" | "desc", limit: number, offset: number): Promise<{ rows: NamespaceRow[]; total: number }>;
  getNamespace(id: string): Promise<NamespaceRow | null>;
  renameNamespace(accountId: string, id: string, title: string): Promise<"ok" | "missing" | "duplicate">;
  /** Removes the namespace and its entries; false when the account has no such namespace. */
  deleteNamespace(accountId: string, id: string): Promise<boolean>;
  /** Sets (or with null clears) the namespace's replication mode override; false when there is no such namespace. */
  setNamespaceReplication(id: string, mode: string | null): Promise<boolean>;
}

/** What a Postgres cluster says about itself, for sharding (src/storage/sharded.ts). */
export interface ClusterMeta {
  /** The id this cluster gave itself at its first migration: its name on the shard ring. */
  shardId(): Promise<string>;
  /** The ring as last completed (kept on the first cluster), or null before the first start. */
  getRing(): Promise<{ nodes: string[]; vnodes: number } | null>;
  setRing(nodes: string[], vnodes: number): Promise<void>;
  /** Rows stored (tombstones included): progress totals for rebalance and backfill. */
  countEntries(ns?: string): Promise<number>;
}

export type PostgresBackend = Backend & NamespaceStore & ClusterMeta;
