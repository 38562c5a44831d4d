// The KV service: the Workers KV API model over the Gateway (namespaces by account, cache TTLs, metadata as
// JSON, list cursors, ApiError for every refusal). It never sees an HTTP request, a backend or a shard: it
// speaks KVService (types.ts) and calls the Gateway (gateway/types.ts).
import { randomBytes } from "node:crypto";
import type { Clock } from "../clock.ts";
import { openGateway, type GatewayOptions } from "../gateway/open.ts";
import { REPLICATION_MODES, unavailableReason, type Gateway, type GatewayWrite, type NamespaceRow, type ReplicationMode } from "../gateway/types.ts";
import { ApiError, CODE, ShuttingDownError } from "../errors.ts";
import { MIN_CACHE_TTL } from "./limits.ts";
import { decodeCursor, encodeCursor, prefixUpperBound } from "./cursor.ts";
import type { KVService, Namespace, PutInput } from "./types.ts";

export type ServiceOptions = GatewayOptions;

const DEFAULT_CACHE_TTL = 60;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

const toNamespace = (r: NamespaceRow): Namespace => ({ id: r.id, title: r.title, supports_url_encoding: true });
const namespaceMissing = (id: string) => new ApiError(404, CODE.namespaceNotFound, `namespace ${JSON.stringify(id)} not found`);
const titleTaken = (title: string) => new ApiError(400, CODE.namespaceTitleExists, `a namespace with the title ${JSON.stringify(title)} already exists in this account`);
const cacheTtl = (o: { cacheTtl?: number } | undefined) => Math.max(MIN_CACHE_TTL, o?.cacheTtl ?? DEFAULT_CACHE_TTL);
const serialized = (metadata: unknown): string | null => (metadata === undefined || metadata === null ? null : JSON.stringify(metadata));
const toWrite = (i: PutInput): GatewayWrite => ({ key: i.key, value: i.value, metadata: serialized(i.metadata), expiration: i.expiration ?? null });

/**
 * A storage outage is the client's to retry (503), not a defect (500), and so is a write refused because
 * shutdown began: every other error passes unchanged.
 */
function storageError(e: unknown): unknown {
  if (e instanceof ApiError) return e;
  if (e instanceof ShuttingDownError) return new ApiError(503, CODE.internal, "kvdrive is shutting down: the write was not accepted, retry it");
  const reason = unavailableReason(e);
  return reason === null ? e : new ApiError(503, CODE.internal, `storage is unavailable (${reason}): retry the request`);
}

const rethrowStorageError = (e: unknown): never => {
  throw storageError(e);
};

// Methods that never touch storage, or whose callers want the raw answer, or (get) that map storage errors
// themselves so a cache hit has no extra frame.
const UNGUARDED = new Set(["close", "ready", "redundancy", "get", "put"]);

/** KVService as written below, where a method may answer synchronously: guarded() makes every guarded one a promise. */
type MaybeSync<T> = { [K in keyof T]: T[K] extends (...a: infer A) => Promise<infer R> ? (...a: A) => R | Promise<R> : T[K] };

/** The service with every storage-facing method answering a storage outage as a 503 ApiError. */
function guarded(service: MaybeSync<KVService>): KVService {
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

/** Opens the Gateway from the config and serves KV over it. */
export async function createKVService(opts: ServiceOptions): Promise<KVService> {
  return kvService(await openGateway(opts), opts.clock);
}

export function kvService(gateway: Gateway, clock: Clock): KVService {
  async function namespace(accountId: string, id: string): Promise<NamespaceRow> {
    const row = gateway.namespace(id) ?? (await gateway.loadNamespace(id));
    if (!row || row.account_id !== accountId) throw namespaceMissing(id);
    return row;
  }
  /** Admin routes address a namespace by id alone. */
  async function namespaceById(id: string): Promise<NamespaceRow> {
    const row = gateway.namespace(id) ?? (await gateway.loadNamespace(id));
    if (!row) throw namespaceMissing(id);
    return row;
  }
  // The hot path (a known namespace) without an extra promise.
  const knownNamespace = (accountId: string, id: string): NamespaceRow | Promise<NamespaceRow> => {
    const row = gateway.namespace(id);
    return row !== undefined && row.account_id === accountId ? row : namespace(accountId, id);
  };

  const nowSeconds = () => Math.floor(clock.now() / 1000);

  const service: MaybeSync<KVService> = {
    async createNamespace(accountId, title) {
      const id = randomBytes(16).toString("hex");
      if (!(await gateway.createNamespace(accountId, id, title))) throw titleTaken(title);
      return toNamespace({ account_id: accountId, id, title });
    },
    async listNamespaces(accountId, o) {
      const { rows, total } = await gateway.listNamespaces(accountId, o.order, o.direction, o.perPage, (o.page - 1) * o.perPage);
      return { namespaces: rows.map(toNamespace), total };
    },
    async getNamespace(accountId, id) {
      gateway.forgetNamespace(id);
      return toNamespace(await namespace(accountId, id));
    },
    async renameNamespace(accountId, id, title) {
      const result = await gateway.renameNamespace(accountId, id, title);
      if (result === "missing") throw namespaceMissing(id);
      if (result === "duplicate") throw titleTaken(title);
      return toNamespace(await namespace(accountId, id));
    },
    async deleteNamespace(accountId, id) {
      if (!(await gateway.deleteNamespace(accountId, id))) throw namespaceMissing(id);
    },

    accountOf: async (nsId) => (await namespaceById(nsId)).account_id,

    // Not async and not wrapped by guarded(): a cached value of a known namespace is answered as it is, with no
    // promise at all; a read that needs the namespace row or storage maps storage errors itself.
    get(accountId, nsId, key, opts) {
      try {
        const known = knownNamespace(accountId, nsId);
        const v = known instanceof Promise ? known.then((ns) => gateway.get(ns.id, key, cacheTtl(opts))) : gateway.get(known.id, key, cacheTtl(opts));
        return v instanceof Promise ? v.catch(rethrowStorageError) : v;
      } catch (e) {
        return Promise.reject(storageError(e));
      }
    },
    async getMany(accountId, nsId, keys, opts) {
      const ns = await namespace(accountId, nsId);
      return gateway.getMany(ns.id, keys, cacheTtl(opts));
    },
    // As get: not async and not wrapped by guarded(), so a PUT to a known namespace costs one promise chain
    // (the batch's) instead of three async frames; storage errors are mapped here, alike.
    put(accountId, nsId, input) {
      try {
        const metadata = serialized(input.metadata);
        const expiration = input.expiration ?? null;
        const known = knownNamespace(accountId, nsId);
        const done = known instanceof Promise ? known.then((ns) => gateway.put(ns.id, input.key, input.value, metadata, expiration)) : gateway.put(known.id, input.key, input.value, metadata, expiration);
        return done.catch(rethrowStorageError);
      } catch (e) {
        return Promise.reject(storageError(e));
      }
    },
    async putMany(accountId, nsId, inputs) {
      const ns = await namespace(accountId, nsId);
      await gateway.putMany(ns.id, inputs.map(toWrite));
    },
    async delete(accountId, nsId, key) {
      const ns = await namespace(accountId, nsId);
      await gateway.delete(ns.id, key);
    },
    async deleteMany(accountId, nsId, keys) {
      const ns = await namespace(accountId, nsId);
      await gateway.deleteMany(ns.id, keys);
    },
    async list(accountId, nsId, o) {
      const ns = await namespace(accountId, nsId);
      const after = o.cursor ? decodeCursor(o.cursor) : null;
      const from = o.prefix ? encoder.encode(o.prefix) : null;
      const rows = await gateway.list({ ns: ns.id, after, from, before: from ? prefixUpperBound(from) : null, limit: o.limit + 1, now: nowSeconds() });
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
      return { mode: gateway.modeOf(ns.id), override: (ns.replication as ReplicationMode | null | undefined) ?? null, default: gateway.defaultMode, replica: gateway.replicaKind };
    },
    async setReplication(nsId, mode) {
      const ns = await namespaceById(nsId);
      if (mode !== null && !(REPLICATION_MODES as readonly string[]).includes(mode)) throw new ApiError(400, CODE.badRequest, `replication mode ${JSON.stringify(mode)} must be one of ${REPLICATION_MODES.join(", ")}`);
      if (mode !== null && mode !== "primary" && gateway.replicaKind === null) throw new ApiError(400, CODE.badRequest, `replication mode ${mode} needs a second backend: set KVDRIVE_REPLICA_S3_BUCKET or KVDRIVE_REPLICA_DATABASE_URL`);
      if (!(await gateway.setReplication(ns.id, mode as ReplicationMode | null))) throw namespaceMissing(nsId);
      return service.replication(nsId);
    },
    redundancy: () => gateway.redundancy(),
    runCrawlerPass: () => gateway.runCrawlerPass(),

    close: () => gateway.close(),
    ready: () => gateway.ready(),
  };
  return guarded(service);
}
