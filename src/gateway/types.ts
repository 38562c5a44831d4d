// The Gateway: the one thing the KV API model (kv/service.ts) calls. Behind it are the read cache with
// read-your-own-write, group commit, read coalescing, cross-instance invalidation, expiry purge, replication
// and the namespace catalog; the KV side never sees a backend, a shard or a version. Built by openGateway().
import type { ListedEntry, ListQuery, NamespaceRow } from "../storage/backend.ts";
import type { ReplicationMode } from "./replicated.ts";

export type { ListedEntry, ListQuery, NamespaceRow, ReplicationMode };
export { REPLICATION_MODES } from "./replicated.ts";
/** A write refused because shutdown began (nothing was written). */
/** A short reason when an error means storage cannot serve now (retry later), else null. */
export { unavailableReason } from "../storage/unavailable.ts";

/** A live value. `metadata` stays serialized JSON; `expiration` is unix seconds. */
export interface GatewayValue {
  value: Uint8Array;
  metadata: string | null;
  expiration: number | null;
}

export interface GatewayWrite {
  key: string;
  value: Uint8Array;
  /** Serialized JSON, or null. */
  metadata: string | null;
  expiration: number | null;
}

export interface RedundancyInfo {
  defaultMode: ReplicationMode;
  replica: string | null;
  shards: string[];
  rebalancePending: boolean;
  repairQueueDepth: number;
  lastCrawl: unknown;
}

export interface Gateway {
  /**
   * The key's live value (null when missing, deleted or expired): from the cache when it holds an entry younger
   * than ttlSeconds, synchronously, else a promise of storage's answer.
   */
  get(ns: string, key: string, ttlSeconds: number): GatewayValue | null | Promise<GatewayValue | null>;
  getMany(ns: string, keys: readonly string[], ttlSeconds: number): Promise<Array<GatewayValue | null>>;
  /** Resolves once the write's batch has committed; later reads in this process see it. */
  put(ns: string, key: string, value: Uint8Array, metadata: string | null, expiration: number | null): Promise<void>;
  /** One batch: all or nothing. */
  putMany(ns: string, writes: readonly GatewayWrite[]): Promise<void>;
  delete(ns: string, key: string): Promise<void>;
  deleteMany(ns: string, keys: readonly string[]): Promise<void>;
  /** Keys in order, live at q.now. */
  list(q: ListQuery): Promise<ListedEntry[]>;

  /** The namespace's row as last read, without I/O (the hot path), or undefined. */
  namespace(id: string): NamespaceRow | undefined;
  /** Reads the row from the catalog and remembers it; null when there is none. */
  loadNamespace(id: string): Promise<NamespaceRow | null>;
  /** Drops the remembered row (the next loadNamespace reads it again). */
  forgetNamespace(id: string): void;
  /** False when the account already has a namespace with that title. */
  createNamespace(accountId: string, id: string, title: string): Promise<boolean>;
  listNamespaces(accountId: string, order: "id" | "title", direction: "asc" | "desc", limit: number, offset: number): Promise<{ rows: NamespaceRow[]; total: number }>;
  renameNamespace(accountId: string, id: string, title: string): Promise<"ok" | "missing" | "duplicate">;
  /** Removes the namespace, its entries and what is cached of it; false when the account has no such namespace. */
  deleteNamespace(accountId: string, id: string): Promise<boolean>;

  /** The mode in force for a namespace: its override, else the default. */
  modeOf(ns: string): ReplicationMode;
  /** Sets (null clears) a namespace's override; false when there is no such namespace. */
  setReplication(id: string, mode: ReplicationMode | null): Promise<boolean>;
  readonly defaultMode: ReplicationMode;
  /** The second backend ("s3://bucket", "postgres (2 clusters)"), or null. */
  readonly replicaKind: string | null;
  /** Shards, second backend, repair queue and crawler. */
  redundancy(): RedundancyInfo;
  /** One anti-entropy pass now; null without a second backend. */
  runCrawlerPass(): Promise<unknown>;

  /** True when storage answers within the backend timeout (at most 5 s). */
  ready(): Promise<boolean>;
  /** Flushes pending batches, stops background work and closes connections. */
  close(): Promise<void>;
}
