// The state of one pooler client: where it is in its session (St, changed only by move(), as PgBouncer's
// change_client_state), and what it holds. Every handler of the client side reads and writes this one record.
import type { Socket } from "bun";
import type { Config } from "../../config.ts";
import type { Frames } from "../../protocol/frames.ts";
import type { Recording } from "../cache/cache-path.ts";
import type { Classification, Pin } from "../cache/classify.ts";
import type { PoolerContext } from "../context.ts";
import type { LaneClient } from "../lanes.ts";
import type { Outbox } from "../outbox.ts";
import type { Pool, Waiter } from "../pool.ts";
import type { Expect } from "../server/expect.ts";
import type { Owner, Server } from "../server/server.ts";
import type { SessionEffect } from "../session.ts";
import type { createSessionTracker } from "../session-tracker.ts";
import type { AuthExchange } from "./startup.ts";
import { fatal } from "./client.ts";

export const enum St {
  /** Before the StartupMessage: SSLRequest, GSSENCRequest, CancelRequest. */
  Startup,
  /** The password exchange. */
  Auth,
  /** Authenticated; the database and start-up settings are checked on an origin connection before the greeting. */
  Validating,
  /** Logged in, holding no origin connection, nothing in flight. */
  Idle,
  /** Waiting for the pool to grant an origin connection; the message that asked for it is held. */
  Waiting,
  /** Holding an origin connection (a transaction, a pipeline up to its ReadyForQuery, or pinned). */
  Active,
  /** A cache lookup or a call pipelined on a shared connection (lanes.ts) is in flight: later messages wait. */
  Busy,
  Closed,
}

const NAMES = ["Startup", "Auth", "Validating", "Idle", "Waiting", "Active", "Busy", "Closed"];
const to = (...s: St[]) => s.reduce((m, x) => m | (1 << x), 0);
/** The states each state may move to. */
const LEGAL: number[] = [
  /* Startup */ to(St.Auth, St.Closed),
  /* Auth */ to(St.Validating, St.Closed),
  /* Validating */ to(St.Idle, St.Active, St.Closed),
  /* Idle */ to(St.Waiting, St.Busy, St.Closed),
  /* Waiting */ to(St.Active, St.Idle, St.Closed),
  /* Active */ to(St.Idle, St.Closed),
  /* Busy */ to(St.Idle, St.Closed),
  /* Closed */ 0,
];

/** Whether the state machine has the change from -> next (staying where it is is always allowed). */
export const canMove = (from: St, next: St) => from === next || (LEGAL[from]! & (1 << next)) !== 0;
export const stateName = (s: St) => NAMES[s] ?? String(s);

/**
 * The only place a client's state changes. An illegal change is a bug of the pooler: it is logged and that
 * client is closed with XX000 (the process and the other clients go on).
 */
export function move(cl: Client, next: St): boolean {
  const from = cl.st;
  if (from === next) return true;
  if (!canMove(from, next)) {
    cl.ctx.log(`kvdrive pooler: client ${cl.id}: illegal state change ${stateName(from)} -> ${stateName(next)}`);
    fatal(cl, "XX000", "internal error in the pooler");
    return false;
  }
  cl.st = next;
  return true;
}

/**
 * Reading from a client stops for several reasons at once (a connection awaited, the origin's write queue, its
 * own unread answers, too many requests in flight, a lookup in flight, start-up checks); each is a flag or a
 * queue, and whatever ends one calls this, which reads again only when none holds. A resume that skipped this
 * let a client flooding inside a transaction pile up 1.6 million expectations past MAX_IN_FLIGHT.
 */
export function resumeReading(cl: Client) {
  if (cl.st === St.Closed || cl.st === St.Validating || cl.authFailing) return;
  if (cl.waiter || cl.pausedWhileBusy || cl.outPaused || cl.expectPaused) return;
  if (cl.server && cl.server.conn.queued() > 0) return;
  cl.socket.resume();
}

/** Past start-up and not closed. */
export const loggedIn = (cl: Client) => cl.st >= St.Idle && cl.st < St.Closed;

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
  /** serverName, encoded, and the Bind expectation naming it (shared: the server side only reads it). */
  nameBytes: Uint8Array | null;
  bindExpect: Expect | null;
}

/** A client's prepared statements by name, with their size (bounded by KVDRIVE_POOL_MAX_PREPARED_BYTES). */
export interface Statements extends Map<string, Stmt> {
  bytes: number;
}

/** The first call on a connection after a Parse (held.ts): kept back for a fresh cached answer, or recorded. */
export interface Held {
  s: Server;
  parseOnly: boolean;
  rec: { done(messages: Uint8Array[] | null): void } | null;
  described: boolean;
  executed: boolean;
  hit: Uint8Array[] | null;
  id: string;
}

export interface Client {
  st: St;
  readonly socket: Socket<any>;
  readonly ctx: PoolerContext;
  readonly cfg: Config;
  readonly out: Outbox;
  readonly overTls: boolean;
  readonly onLoggedIn: (() => void) | undefined;
  readonly id: number;
  /** The BackendKeyData the client gets (the pooler's own, mapped to origin backends by ctx.cancel). */
  readonly pid: number;
  readonly key: Uint8Array;
  loginTimer: ReturnType<typeof setTimeout> | null;
  /** Start-up bytes not yet a whole packet; the password exchange; a failed login waiting out its delay. */
  startupBuf: Uint8Array | null;
  authx: AuthExchange | null;
  authFailing: boolean;

  frames: Frames | null;
  user: string;
  database: string;
  pool: Pool | null;
  /** The origin connection this client holds now (in a transaction, or pinned; or the login check's). */
  server: Server | null;
  waiter: Waiter | null;
  pinned: Pin | null;
  /** The last ReadyForQuery status the client saw. */
  status: number;
  cacheOn: boolean;

  /** An error was sent: messages are discarded up to the next Sync or Query. */
  pendingDiscard: boolean;
  /** The next Query was already tried against the cache (and must reach the origin). */
  bypassCache: boolean;
  /** Bind, Describe, Execute of a cacheable prepared statement on an idle client, collected up to Sync. */
  batch: { stmt: Stmt; msgs: Uint8Array[]; describe: boolean; exec: boolean } | null;
  /** Messages taken for a cache lookup that must now go to the origin, before anything else. */
  deferred: Uint8Array[];
  /** The deferred messages are being sent: read and accepted already, the output bound must not hold them. */
  flushingDeferred: boolean;
  /** Reading stopped because a client sent a lot while a lookup was in flight. */
  pausedWhileBusy: boolean;
  /** Reading was stopped because the client's unsent answers passed KVDRIVE_PG_MAX_CLIENT_OUTPUT_BYTES. */
  outPaused: boolean;
  /** Reading was stopped because more than MAX_IN_FLIGHT requests await the origin's answer. */
  expectPaused: boolean;
  /**
   * The batch in flight when it is one Bind of a prepared statement up to its Sync, sent while idle: it can be
   * re-run if the origin says the cached plan's result type changed. Views into received chunks, not copies.
   */
  retryBatch: { stmt: Stmt; serverName: string; bind: Uint8Array; rest: Uint8Array[]; synced: boolean } | null;
  /** A miss in flight on this client's connection or lane: its answer, recorded for the cache as it streams back. */
  tee: Recording | null;
  held: Held | null;

  /** Messages for the origin, sent with one write per chunk read. */
  readonly toServer: Uint8Array[];
  /** acquire() is on the stack, and whether the pool granted a connection during it. */
  inAcquire: boolean;
  grantedNow: boolean;
  /** The connection it was LOADed into cannot be reset: it is closed when the client lets go of it. */
  poisoned: Server | null;

  readonly params: Map<string, string>;
  readonly sets: Map<string, string>;
  readonly stmts: Statements;
  /** Tables written since the last idle ReadyForQuery: their cached reads are invalidated when it arrives. */
  readonly pendingWrites: string[];
  /** Effects of the statements bound to portals, for their Execute (cleared when the transaction ends). */
  readonly portals: Map<string, SessionEffect>;
  /** The client's unnamed statement (its Parse as sent), and its sequence, to know which origin connection holds it. */
  unnamed: Uint8Array | null;
  unnamedSeq: number;
  unnamedWrites: string[];
  unnamedEff: SessionEffect;
  /** The last unnamed statement a cache path took, and its Parse (to recognise it again). */
  unnamedStmt: Stmt | null;
  unnamedStmtParse: Uint8Array | null;
  /** An Execute of this batch carries SETs: its Sync must say whether the batch failed. */
  batchTracked: boolean;
  tracker: ReturnType<typeof createSessionTracker>;
  /** The replayed session state as one string, the session part of cache keys, and a generation for statements' prefixes. */
  sigCache: string | null;
  cacheSession: string | null;
  sessionGen: number;

  /** This client as the owner of an origin connection, as a turn-taker on a lane, and as the pool's waiter. */
  owner: Owner;
  laneClient: LaneClient;
  poolWaiter: Waiter;
  /** Made once per client, so the hot path allocates no closure: toOrigin, the frame handler, resumeMessages. */
  emit: (b: Uint8Array) => void;
  onFrame: (type: number, body: Uint8Array, buf: Uint8Array, at: number) => boolean;
  resume: () => void;
}
