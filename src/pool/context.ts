// What a client needs from the pooler it belongs to; the pooler implements it, tests may read it.
import type { Socket } from "bun";
import type { Config } from "../config.ts";
import type { Pool } from "./pool.ts";
import type { Server } from "./server/server.ts";
import type { ScramVerifier } from "./scram.ts";
import type { FunctionCatalog } from "./session.ts";
import type { Classification, Pin } from "./cache/classify.ts";
import type { CachePath } from "./cache/cache-path.ts";
import type { Lanes } from "./lanes.ts";

export interface UserAuth {
  scram: ScramVerifier;
  /** md5(password || user), hex: what MD5 authentication checks against. */
  md5: string;
}

export interface PoolerContext {
  config: Config;
  users: Map<string, UserAuth>;
  authMethod: "scram-sha-256" | "md5" | "trust";
  /** Verifier used for unknown users, so the exchange looks the same and then fails. */
  dummyVerifier: ScramVerifier;
  tls: boolean;
  /** Answers 'S' and switches the socket to TLS; false when that is not possible. */
  upgradeTls(socket: Socket<any>): boolean;
  pool(database: string, user: string): Pool;
  /** ParameterStatus values of the pool's origin connections, for a new client's start-up. */
  defaultParams(pool: Pool): Map<string, string>;
  nextClientId(): number;
  register(pid: number, key: Uint8Array, id: number, cancel: () => void, pool: Pool): void;
  unregister(pid: number, id: number, pinned: boolean, pool: Pool | null): void;
  cancel(pid: number, key: Uint8Array): void;
  cancelOrigin(server: Server): void;
  /** Origin-side name of a statement (query and parameter types), the same on every connection. */
  statementName(key: string): string;
  /** The origin said the statement's result type changed: future uses get a fresh name, hence a fresh plan. */
  planChanged(key: string): void;
  /** The origin's builtin functions per database (session.ts): calls of anything else reset the connection after. */
  functions?: FunctionCatalog;
  /** The shared statement classifier (pool/cache/classify.ts): used for pinning too. */
  classify: (sql: string) => Classification;
  /** The query cache, its admission and the classifier (pool/cache/cache-path.ts). */
  cachePath: CachePath;
  /** False when KVDRIVE_CACHE_DISABLED turns the cache off for this database (then statements skip it). */
  cacheOn(database: string): boolean;
  /** Runs a cache load for a client's statement on the pool, with the client's session settings. */
  recordQuery(pool: Pool, params: Map<string, string>, sets: Map<string, string>, sql: string, extended?: { bind: Uint8Array; paramTypes: number[] }, untracked?: string): Promise<Uint8Array[] | null>;
  /** Read pipelining on shared origin connections (lanes.ts); null when KVDRIVE_POOL_PIPELINE_DEPTH is below 2. */
  lanes: Lanes | null;
  metrics: {
    cacheStatus(pool: Pool, status: string): void;
    queries(pool: Pool): void;
    latency(pool: Pool, ms: number): void;
    pinned(pool: Pool, reason: Pin): void;
  };
  log(line: string): void;
}
