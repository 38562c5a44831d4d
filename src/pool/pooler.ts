// The Hyperdrive-like pooler assembled: listener, client authentication, pools per (database, user),
// cancel routing, metrics, and `execute` for the HTTP /sql endpoint.
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { Config } from "../config.ts";
import type { Clock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import { connectOrigin, cancelOrigin, parseOriginUrl, type OriginTarget } from "./server/origin.ts";
import { createPool, type Pool, type PoolStats } from "./pool.ts";
import { sessionResets } from "./server/replay.ts";
import { createServer, type Server } from "./server/server.ts";
import { createLanes } from "./lanes.ts";
import { listenForWrites, type OriginListener } from "./server/origin-notify.ts";
import { deriveScramVerifier, md5Verifier } from "./scram.ts";
import type { PoolerContext, UserAuth } from "./context.ts";
import { listen, type Listener } from "./client/listener.ts";
import { executeStatements, type ExecuteRequest, type ExecuteResult } from "./execute.ts";
import { BUILTIN_FUNCTIONS_SQL, createFunctionCatalog, readBuiltinFunctions } from "./session.ts";
import { createCachePath, recordQuery } from "./cache/cache-path.ts";
import { classify, type Pin } from "./cache/classify.ts";
import { OriginError } from "../errors.ts";

export interface PoolerOptions {
  config: Config;
  /** The origin: ORIGIN_DATABASE_URL or the embedded Postgres. */
  originUrl: string;
  clock: Clock;
  metrics: Registry;
  log?: (line: string) => void;
}

export interface PoolStatsFull extends PoolStats {
  clients: number;
  activeClients: number;
  pinnedClients: number;
  queries: number;
  /** Statements by cache status (hit, miss, stale, uncacheable, ...). */
  cache: Record<string, number>;
  /** Read calls pipelined on shared origin connections (lanes) since start, lanes open, and calls on them now. */
  pipelined: number;
  lanes: number;
  pipelinedInFlight: number;
}

export interface Pooler {
  port: number;
  /** A connection string for clients of the pooler, for the given database (default: the origin's). */
  connectionString(database?: string): string;
  execute(req: ExecuteRequest): Promise<ExecuteResult[]>;
  stats(): { pools: PoolStatsFull[]; clients: number };
  stop(): Promise<void>;
}

export type { ExecuteRequest, ExecuteResult } from "./execute.ts";

interface PoolInfo {
  pool: Pool;
  params: Map<string, string>;
  clients: number;
  pinned: number;
  queries: number;
  cache: Record<string, number>;
  /** Metric series bound to this pool's labels: the per-query path builds no label keys. */
  mQueries: { inc(by?: number): void };
  mLatency: { observe(value: number): void };
  mPipelined: { inc(by?: number): void };
  mCache: Map<string, { inc(by?: number): void }>;
}

export async function startPooler(o: PoolerOptions): Promise<Pooler> {
  const { config, clock, metrics } = o;
  const log = o.log ?? (() => {});
  const origin = parseOriginUrl(o.originUrl);
  const target: OriginTarget = origin;

  // Verifiers are derived once here: a new client connection then costs a few HMACs, not PBKDF2.
  const users = new Map<string, UserAuth>();
  // The password each client user logs in to the origin with (KVDRIVE_PG_ORIGIN_ROLE=client): its own.
  const originPasswords = new Map<string, string>([[origin.user, origin.password]]);
  const addUser = (user: string, password: string) => users.set(user, {
      scram: deriveScramVerifier(password, undefined, config.pgScramIterations),
      // The MD5 hash is password-equivalent for MD5 authentication: kept only when MD5 is configured.
      md5: config.pgAuth === "md5" ? md5Verifier(user, password) : "",
    });
  if (config.pgUsers.length) {
    for (const pair of config.pgUsers) {
      const eq = pair.indexOf("=");
      addUser(pair.slice(0, eq), pair.slice(eq + 1));
      if (pair.slice(0, eq) !== origin.user) originPasswords.set(pair.slice(0, eq), pair.slice(eq + 1));
    }
  } else addUser(origin.user, origin.password);
  const clientPassword = config.pgUsers.length ? undefined : origin.password;

  const pools = new Map<string, PoolInfo>();
  const byPool = new Map<Pool, PoolInfo>();
  const cancels = new Map<number, { key: Uint8Array; id: number; cancel: () => void }>();
  const planGens = new Map<string, number>();
  let clientIds = 0;
  let stopped = false;

  const mQueries = metrics.counter("kvdrive_pool_queries_total", "Queries run through the pooler, per pool.");
  const mPins = metrics.counter("kvdrive_pool_pinned_clients_total", "Clients pinned to one origin connection by a session-only feature, by reason.");
  const mLatency = metrics.histogram("kvdrive_pool_query_duration_seconds", "Time from a client's Sync or Query to the origin's ReadyForQuery.");
  const labels = (p: Pool) => ({ database: p.database, user: p.user });
  const gauge = (name: string, help: string, pick: (s: PoolStatsFull) => number) =>
    metrics.gauge(name, help, () => stats().pools.map((s) => [{ database: s.database, user: s.user }, pick(s)]));
  gauge("kvdrive_pool_clients", "Clients connected, per pool.", (s) => s.clients);
  gauge("kvdrive_pool_clients_active", "Clients holding an origin connection.", (s) => s.activeClients);
  gauge("kvdrive_pool_clients_waiting", "Clients waiting for an origin connection.", (s) => s.waitingClients);
  gauge("kvdrive_pool_clients_pinned", "Clients pinned to an origin connection.", (s) => s.pinnedClients);
  gauge("kvdrive_pool_servers_active", "Origin connections in use.", (s) => s.activeServers);
  gauge("kvdrive_pool_servers_idle", "Origin connections idle in the pool.", (s) => s.idleServers);
  gauge("kvdrive_pool_lanes", "Origin connections shared by pipelined read calls (lanes) now.", (s) => s.lanes);
  gauge("kvdrive_pool_pipelined_in_flight", "Pipelined read calls in flight on lanes now.", (s) => s.pipelinedInFlight);
  metrics.gauge("kvdrive_pool_session_resets", "Origin connections reset since start because a client left session state the pooler does not track (set_config, DO, a pinned client leaving, ...).", () => [[undefined, sessionResets.total]]);
  const mNotified = metrics.counter("kvdrive_query_cache_notifications_total", "Invalidations heard on KVDRIVE_CACHE_LISTEN_CHANNEL (writes that bypassed the pooler), and listening (re)connections.");
  const listeners = new Map<string, OriginListener>();
  const mPipelined = metrics.counter("kvdrive_pool_pipelined_total", "Read calls pipelined on shared origin connections (lanes).");

  /** One LISTEN connection per origin database with cached results (origin-notify.ts). */
  function listenOnce(database: string) {
    if (!ctx.cacheOn(database) || config.queryCacheListenChannel === "off" || listeners.has(database) || stopped) return;
    listeners.set(database, listenForWrites({
      originUrl: o.originUrl,
      database,
      channel: config.queryCacheListenChannel,
      invalidate(tables) {
        mNotified.inc();
        cachePath.cache.invalidate(database, tables);
      },
      log,
    }));
  }

  /** The origin login of a client user: its own name and password, or the origin URL's with KVDRIVE_PG_ORIGIN_ROLE=origin. */
  const targetFor = (user: string): OriginTarget =>
    config.pgOriginRole === "origin" ? target : { ...target, user, password: originPasswords.get(user) ?? "" };

  function poolFor(database: string, user: string): PoolInfo {
    const k = database + "\0" + user;
    let info = pools.get(k);
    if (info) return info;
    const login = targetFor(user);
    const pool = createPool({
      database,
      user,
      size: config.poolSize,
      maxWaiting: config.poolMaxWaiting,
      waitTimeoutMs: config.poolWaitTimeoutMs,
      idleTimeoutMs: config.poolIdleTimeoutSeconds * 1000,
      maxLifetimeMs: config.poolMaxLifetimeSeconds * 1000,
      clock,
      log,
      open: async () => {
        const conn = await connectOrigin(login, database, clock.now);
        listenOnce(database); // the database exists: hear the writes that bypass the pooler
        // and its builtin functions (session.ts), read once on this connection before clients call them
        if (ctx.functions && !ctx.functions.known(database)) {
          const names = await readBuiltinFunctions(conn).catch(() => null); // failed: the first client's call loads them
          if (names) ctx.functions.provide(database, names);
        }
        if (!info!.params.size) for (const [k, v] of conn.params) info!.params.set(k, v);
        bindMetrics(info!);
        return createServer(conn);
      },
      unusable() {
        // A database or login the origin refused, and nothing uses the pool: it is not kept (one per name tried
        // would be unbounded); the next client naming it starts over.
        // It holds nothing; whoever still has it (a request in flight) may retry and hear the origin's error again.
        if (pools.get(k) !== info || info!.clients > 0) return;
        pools.delete(k);
        byPool.delete(pool);
      },
    });
    info = { pool, params: new Map(), clients: 0, pinned: 0, queries: 0, cache: {}, mQueries: NO_COUNTER, mLatency: NO_HISTOGRAM, mPipelined: NO_COUNTER, mCache: new Map() };
    pools.set(k, info);
    byPool.set(pool, info);
    return info;
  }

  /** Metric series of a pool exist once the origin accepted a connection for it: no series per refused name. */
  function bindMetrics(info: PoolInfo) {
    if (info.mQueries !== NO_COUNTER) return;
    info.mQueries = mQueries.with(labels(info.pool));
    info.mLatency = mLatency.with(labels(info.pool));
    info.mPipelined = mPipelined.with(labels(info.pool));
  }

  const mCache = metrics.counter("kvdrive_pool_cache_total", "Statements by query cache status (hit, miss, stale, uncacheable, transaction, volatile, ...).");
  const volatility = async (database: string, functions: string[]) => {
    // provolatile <> 'i' for any function of that name: conservative for overloads.
    const r = await executeStatements(poolFor(database, origin.user).pool, () => poolFor(database, origin.user).params, {
      database, user: origin.user, transaction: false,
      // Safe only if every name exists and every overload of it is immutable; an unknown name counts as volatile.
      statements: [{ sql: "select coalesce(count(distinct proname) = cardinality($1::text[]) and bool_and(provolatile = 'i'), false) from pg_catalog.pg_proc where proname = any($1::text[])", params: [`{${functions.map((f) => JSON.stringify(f)).join(",")}}`] }],
    }, ctx);
    return r[0]?.rows[0]?.[0] !== "t";
  };
  const cachePath = createCachePath({ config, clock, metrics, volatility });

  const disabled = config.queryCacheDisabled.trim().toLowerCase();
  const disabledDbs = new Set(config.queryCacheDisabled.split(",").map((d) => d.trim()).filter(Boolean));
  const allOff = ["true", "1", "yes", "on"].includes(disabled);
  const noneOff = ["false", "0", "no", "off", ""].includes(disabled);

  const ctx: PoolerContext = {
    classify,
    // Functions a statement may call without the connection being reset after it: the origin's builtins.
    functions: createFunctionCatalog(async (database) => {
      const r = await executeStatements(poolFor(database, origin.user).pool, () => poolFor(database, origin.user).params, {
        database, user: origin.user, transaction: false, statements: [{ sql: BUILTIN_FUNCTIONS_SQL }],
      }, { ...ctx, metrics: QUIET_METRICS }); // the pooler's own look-up: not a client's query
      return (r[0]?.rows ?? []).map((row) => String(row[0]));
    }, log),
    cachePath,
    cacheOn: (database) => !allOff && (noneOff || !disabledDbs.has(database)),
    lanes: config.poolPipelineDepth >= 2 ? createLanes({ depth: config.poolPipelineDepth, maxPrepared: config.poolMaxPreparedStatements, pipelined: (pool) => byPool.get(pool)!.mPipelined.inc() }) : null,
    recordQuery: (pool, params, sets, sql, extended, untracked) => recordQuery(pool, params, sets, sql, extended ?? null, config.queryCacheMaxResultBytes, untracked),
    config,
    users,
    authMethod: config.pgAuth as PoolerContext["authMethod"],
    dummyVerifier: deriveScramVerifier(randomBytes(16).toString("hex")),
    tls: false,
    upgradeTls: () => false,
    pool: (database, user) => poolFor(database, user).pool,
    defaultParams: (pool) => byPool.get(pool)!.params,
    nextClientId: () => ++clientIds,
    register(pid, key, id, cancel, pool) {
      cancels.set(pid, { key, id, cancel });
      byPool.get(pool)!.clients++;
    },
    unregister(pid, id, pinned, pool) {
      if (cancels.get(pid)?.id === id) cancels.delete(pid);
      const info = pool && byPool.get(pool);
      if (!info) return;
      info.clients--;
      if (pinned) info.pinned--;
    },
    cancel(pid, key) {
      const c = cancels.get(pid);
      if (c && c.key.length === key.length && timingSafeEqual(c.key, key)) c.cancel();
    },
    cancelOrigin(server: Server) {
      server.cancelsInFlight++;
      void cancelOrigin(target, server.conn.pid, server.conn.key).finally(() => {
        if (--server.cancelsInFlight > 0 || !server.afterCancel) return;
        const then = server.afterCancel;
        server.afterCancel = null;
        then();
      });
    },
    statementName(key) {
      const gen = planGens.get(key);
      return "kv" + Bun.hash(key).toString(36) + (gen ? "_" + gen : "");
    },
    planChanged(key) {
      planGens.set(key, (planGens.get(key) ?? 0) + 1);
    },
    metrics: {
      cacheStatus(pool, status) {
        const info = byPool.get(pool)!;
        info.cache[status] = (info.cache[status] ?? 0) + 1;
        let m = info.mCache.get(status);
        if (!m) info.mCache.set(status, (m = mCache.with({ ...labels(pool), status })));
        m.inc();
      },
      queries(pool) {
        const info = byPool.get(pool)!;
        info.queries++;
        info.mQueries.inc();
      },
      latency: (pool, ms) => byPool.get(pool)!.mLatency.observe(ms / 1000),
      pinned(pool: Pool, reason: Pin) {
        byPool.get(pool)!.pinned++;
        mPins.inc({ ...labels(pool), reason });
      },
    },
    log,
  };

  function stats() {
    const list: PoolStatsFull[] = [];
    let clients = 0;
    for (const info of pools.values()) {
      const s = info.pool.stats();
      clients += info.clients;
      const l = ctx.lanes?.stats(info.pool) ?? { inFlight: 0, lanes: 0, pipelined: 0 };
      list.push({ ...s, clients: info.clients, activeClients: s.activeServers, pinnedClients: info.pinned, queries: info.queries, cache: { ...info.cache }, pipelined: l.pipelined, lanes: l.lanes, pipelinedInFlight: l.inFlight });
    }
    return { pools: list, clients };
  }

  const listener: Listener = listen(ctx, config.host, config.pgPort);
  const janitor = setInterval(() => {
    for (const info of pools.values()) info.pool.janitor();
  }, 1000);
  janitor.unref?.();
  log(`kvdrive Postgres pooler listening on ${config.host}:${listener.port}`);

  return {
    port: listener.port,
    connectionString(database = origin.database) {
      const user = config.pgUsers.length ? config.pgUsers[0]!.split("=")[0]! : origin.user;
      const pw = clientPassword !== undefined ? `:${encodeURIComponent(clientPassword)}` : "";
      return `postgres://${encodeURIComponent(user)}${pw}@${config.host}:${listener.port}/${encodeURIComponent(database)}`;
    },
    execute: (req) => executeStatements(poolFor(req.database, req.user).pool, () => poolFor(req.database, req.user).params, req, ctx),
    stats,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(janitor);
      listener.stop();
      for (const info of pools.values()) info.pool.close();
      await Promise.all([...listeners.values()].map((l) => l.stop()));
    },
  };
}

export { OriginError };

const QUIET_METRICS: PoolerContext["metrics"] = { cacheStatus() {}, queries() {}, latency() {}, pinned() {} };

const NO_COUNTER = { inc() {} };
const NO_HISTOGRAM = { observe() {} };
