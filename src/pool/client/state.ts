// The state of one pooler client, shared by its state machine (client.ts) and its cache and lane steps
// (client-fast.ts): where it is in its session, what it holds, and what waits.
import type { Frames } from "../../protocol/frames.ts";
import type { Recording } from "../cache/cache-path.ts";
import type { Classification, Pin } from "../cache/classify.ts";
import type { Pool, Waiter } from "../pool.ts";
import type { Expect } from "../server/expect.ts";
import type { Server } from "../server/server.ts";
import type { SessionEffect } from "../session.ts";

export const enum St {
  Startup,
  Auth,
  Validating,
  Ready,
  Closed,
}

/** A client's prepared statement, as the origin knows it. */
export interface Stmt {
  /** The statement as the origin should prepare it: query and parameter types. */
  key: string;
  query: string;
  paramTypes: number[];
  serverName: string;
  parse: Uint8Array | null;
  /** nextPrepareSeq() at the client's Parse: only origin copies prepared after it are used (server.ts prepareOn). */
  parsedAt: number;
  /** Tables the statement writes (from the shared classifier), for cache invalidation. */
  writes: string[];
  /** What running it does to the session (session.ts). */
  eff: SessionEffect;
  /** The shared classifier's verdict, when it has one: reads, functions and whether it may be cached. */
  cls: Classification | null;
  /** Its cache key prefix (statement and session), valid while prefixGen is the client's sessionGen. */
  prefix: string;
  prefixGen: number;
  /** serverName, encoded, and the Bind expectation naming it (shared: the relay only reads it). */
  nameBytes: Uint8Array | null;
  bindExpect: Expect | null;
}

export interface ClientState {
  st: St;
  frames: Frames | null;
  user: string;
  database: string;
  pool: Pool | null;
  /** The origin connection this client holds now (in a transaction, or pinned). */
  server: Server | null;
  waiter: Waiter | null;
  pinned: Pin | null;
  /** The last ReadyForQuery status the client saw. */
  status: number;
  /** An error was sent: messages are discarded up to the next Sync or Query. */
  pendingDiscard: boolean;
  /** A cache lookup or a pipelined call is in flight: later messages wait behind it. */
  busy: boolean;
  /** The next Query was already tried against the cache (and must reach the origin). */
  bypassCache: boolean;
  /** Bind, Describe, Execute of a cacheable prepared statement on an idle client, collected up to Sync. */
  batch: { stmt: Stmt; msgs: Uint8Array[]; describe: boolean; exec: boolean } | null;
  /** Messages taken for a cache lookup that must now go to the origin, before anything else. */
  deferred: Uint8Array[];
  cacheOn: boolean;
  /** Reading stopped because a client sent a lot while a lookup was in flight. */
  pausedWhileBusy: boolean;
  /**
   * The batch in flight when it is one Bind of a prepared statement up to its Sync, sent while idle: it can be
   * re-run if the origin says the cached plan's result type changed. Views into received chunks, not copies.
   */
  retryBatch: { stmt: Stmt; serverName: string; bind: Uint8Array; rest: Uint8Array[]; synced: boolean } | null;
  /** A miss in flight on this client's connection or lane: its answer, recorded for the cache as it streams back. */
  tee: Recording | null;
  /** The client's unnamed statement (its Parse as sent), and its sequence, to know which origin connection holds it. */
  unnamed: Uint8Array | null;
  unnamedSeq: number;
  unnamedWrites: string[];
  /** The last unnamed statement the fast path took, and its Parse (to recognise it again). */
  unnamedStmt: Stmt | null;
  unnamedStmtParse: Uint8Array | null;
}
