// The contract between the KV HTTP routes (src/kv/routes.ts) and the KV service (src/kv/service.ts).
// The service never sees the request context; routes never see SQL.
import type { RedundancyInfo } from "../gateway/types.ts";

export type { RedundancyInfo };

export interface Namespace {
  id: string; // 32 hex chars, like Cloudflare's
  title: string;
  supports_url_encoding: boolean;
}

export interface NamespaceListOptions {
  page: number; // 1-based
  perPage: number;
  order: "id" | "title";
  direction: "asc" | "desc";
}

/** A value as the API sees it. `expiration` is unix seconds. `metadata` stays serialized JSON so that a
 * plain value read never parses it. */
export interface KVValue {
  value: Uint8Array;
  metadata: string | null;
  expiration: number | null;
}

export interface PutInput {
  key: string;
  value: Uint8Array;
  metadata?: unknown | null;
  /** Absolute unix seconds, already validated by the routes (ttl resolved to an expiration). */
  expiration?: number | null;
}

export interface ListOptions {
  prefix?: string;
  limit: number; // 1..1000, validated by routes
  /** Opaque cursor from a previous page, or undefined. The service validates it and throws ApiError 400 when bad. */
  cursor?: string;
}

export interface ListedKey {
  name: string;
  expiration?: number;
  /** Serialized JSON. */
  metadata?: string;
}

export interface ListResult {
  keys: ListedKey[];
  /** Empty string when the listing is complete (Cloudflare's convention). */
  cursor: string;
}

export interface GetOptions {
  /** Seconds a cached value may be served; min 30, default 60. */
  cacheTtl?: number;
}

export interface KVService {
  createNamespace(accountId: string, title: string): Promise<Namespace>;
  listNamespaces(accountId: string, opts: NamespaceListOptions): Promise<{ namespaces: Namespace[]; total: number }>;
  getNamespace(accountId: string, namespaceId: string): Promise<Namespace>;
  renameNamespace(accountId: string, namespaceId: string, title: string): Promise<Namespace>;
  deleteNamespace(accountId: string, namespaceId: string): Promise<void>;
  /** The account owning a namespace addressed by id alone (the workerd binding listener); ApiError 404 when unknown. */
  accountOf(namespaceId: string): Promise<string>;

  /** A cached value of a known namespace comes back as it is, not in a promise (the GET hot path stays synchronous). */
  get(accountId: string, namespaceId: string, key: string, opts?: GetOptions): KVValue | null | Promise<KVValue | null>;
  getMany(accountId: string, namespaceId: string, keys: string[], opts?: GetOptions): Promise<Array<KVValue | null>>;
  /** Resolves once the write's batch has committed. */
  put(accountId: string, namespaceId: string, input: PutInput): Promise<void>;
  /** A bulk write goes in as one batch: all or nothing. */
  putMany(accountId: string, namespaceId: string, inputs: PutInput[]): Promise<void>;
  delete(accountId: string, namespaceId: string, key: string): Promise<void>;
  deleteMany(accountId: string, namespaceId: string, keys: string[]): Promise<void>;
  list(accountId: string, namespaceId: string, opts: ListOptions): Promise<ListResult>;

  /** The namespace's replication mode (admin). */
  replication(namespaceId: string): Promise<ReplicationInfo>;
  /** Overrides (or with null clears) the namespace's replication mode (admin). */
  setReplication(namespaceId: string, mode: string | null): Promise<ReplicationInfo>;
  /** Shards, second backend, repair queue and crawler, for the admin view. */
  redundancy(): RedundancyInfo;
  /** One anti-entropy pass now (admin, tests); null without a second backend. */
  runCrawlerPass(): Promise<unknown>;

  /** Flushes pending batches and closes connections. */
  close(): Promise<void>;
  /** True when storage answers. */
  ready(): Promise<boolean>;
}

export interface ReplicationInfo {
  /** The mode in force for the namespace. */
  mode: string;
  /** The namespace's own override, or null when it follows the default. */
  override: string | null;
  default: string;
  /** The second backend ("s3://bucket", "postgres (2 clusters)"), or null. */
  replica: string | null;
}
