// Client side: one wire-protocol client from its start-up packet to its Terminate. createClient builds the
// client's record (state.ts) and its socket handlers; each message goes to one handler named after it
// (query.ts, extended.ts, copy.ts), after the steps that may answer it without the origin (cache, lanes).
// Borrowing origin connections is in link.ts, session settings in settings.ts, start-up in login.ts.
import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { decodeParse, F } from "../../protocol/frontend.ts";
import { encodeReadyForQuery, errorMessage, errorMessageV2, PARSE_COMPLETE, READY_IDLE } from "../../protocol/backend.ts";
import { createOutbox } from "../outbox.ts";
import { sessionEffect } from "../session.ts";
import type { PoolerContext } from "../context.ts";
import { loggedIn, move, resumeReading, St, type Client } from "./state.ts";
import { collectBatch, endTee, preparedCall, unnamedCall } from "./call.ts";
import { onCopyData, onCopyEnd, onFunctionCall, FUNCTION_CALL_REFUSED } from "./copy.ts";
import { onBind, onClose, onDescribe, onExecute, onFlush, onParse, onSync } from "./extended.ts";
import { abandonHeld, heldStep } from "./held.ts";
import { acquire, createLaneClient, createOwner, createPoolWaiter, detach, flushToServer } from "./link.ts";
import { onAuthMessage, onStartupData } from "./login.ts";
import { onQuery, queryOnLane, tryCache } from "./query.ts";
import { createTracker } from "./settings.ts";
import { defineStatement, StatementMap } from "./statements.ts";
import { ProtocolError } from "../../errors.ts";

export interface ClientHandle {
  onData(chunk: Uint8Array): void;
  onDrain(): void;
  onClose(): void;
  isReady(): boolean;
}

export interface ClientSocketData {
  client: ClientHandle | null;
}

let nextPid = (randomBytes(4).readUInt32BE() % 1_000_000_000) + 1;

/** onLoggedIn: the client finished start-up and authentication (the listener bounds clients still in it). */
export function createClient(socket: Socket<ClientSocketData>, ctx: PoolerContext, overTls = false, onLoggedIn?: () => void): ClientHandle {
  const cfg = ctx.config;
  const cl: Client = {
    st: St.Startup, socket, ctx, cfg, out: createOutbox(socket), overTls, onLoggedIn, id: ctx.nextClientId(), pid: nextPid++, key: randomBytes(4),
    loginTimer: null, startupBuf: null, authx: null, authFailing: false,
    frames: null, user: "", database: "", pool: null, server: null, waiter: null, pinned: null, status: 0x49, cacheOn: false,
    pendingDiscard: false, bypassCache: false, batch: null, deferred: [], flushingDeferred: false, pausedWhileBusy: false, outPaused: false, expectPaused: false,
    retryBatch: null, tee: null, held: null, toServer: [], inAcquire: false, grantedNow: false, poisoned: null,
    params: new Map(), sets: new Map(), stmts: new StatementMap(), pendingWrites: [], portals: new Map(),
    unnamed: null, unnamedSeq: 0, unnamedWrites: [], unnamedEff: sessionEffect(""), unnamedStmt: null, unnamedStmtParse: null, batchTracked: false,
    tracker: null!, sigCache: null, cacheSession: null, sessionGen: 0,
    owner: null!, laneClient: null!, poolWaiter: null!, emit: null!, onFrame: null!, resume: null!,
  };
  cl.tracker = createTracker(cl);
  cl.owner = createOwner(cl);
  cl.laneClient = createLaneClient(cl);
  cl.poolWaiter = createPoolWaiter(cl);
  cl.emit = (b) => toOrigin(cl, b);
  cl.onFrame = (type, body, buf, at) => onAuthOrReady(cl, type, body, buf, at);
  cl.resume = () => resumeMessages(cl);

  // A client that does not finish start-up in time is dropped, so idle half-open sockets cannot pile up.
  cl.loginTimer = setTimeout(() => {
    if (cl.st < St.Idle) fatal(cl, "08P01", `start-up not completed within ${cfg.pgLoginTimeoutSeconds} s (KVDRIVE_PG_LOGIN_TIMEOUT_SECONDS)`);
  }, cfg.pgLoginTimeoutSeconds * 1000);
  cl.loginTimer.unref?.();

  return {
    onData(chunk: Uint8Array) {
      try {
        if (cl.st === St.Startup) return onStartupData(cl, chunk);
        if (cl.st === St.Closed) return;
        // The common case first: one whole call in one chunk from an idle client (call.ts).
        if (cl.st === St.Idle && !cl.batch && !cl.pinned && cl.status === 0x49 && !cl.pendingDiscard && !cl.deferred.length && !cl.tee && cl.frames!.pending() === 0 && (chunk[0] === F.Parse ? unnamedCall(cl, chunk) : preparedCall(cl, chunk))) return;
        if (cl.st === St.Validating) {
          cl.frames!.push(chunk, HOLD);
          return;
        }
        cl.frames!.push(chunk, cl.onFrame);
        flushToServer(cl);
        if (cl.st === St.Busy && !cl.pausedWhileBusy && cl.frames!.pending() > 1024 * 1024) {
          cl.pausedWhileBusy = true;
          socket.pause();
        }
      } catch (e) {
        failed(cl, e);
      } finally {
        // A client that sends without reading its answers (a Sync flood) is not read from until they drain.
        if (!cl.outPaused && cl.st !== St.Closed && cl.out.queued() > cfg.pgMaxClientOutputBytes) {
          cl.outPaused = true;
          socket.pause();
        }
        // Pipelined requests the origin has not answered yet each hold an expectation: bounded the same way.
        if (!cl.expectPaused && cl.server && cl.server.expect.length > MAX_IN_FLIGHT) {
          cl.expectPaused = true;
          socket.pause();
        }
      }
    },
    onDrain() {
      if (!cl.out.drain()) return;
      if (cl.server) cl.server.conn.resume();
      else if (cl.st === St.Busy) ctx.lanes?.resume(cl.laneClient);
      if (cl.outPaused) {
        cl.outPaused = false;
        // Unless reading is stopped for another reason, whose own end resumes it.
        resumeReading(cl);
        if ((cl.st === St.Idle || cl.st === St.Active) && cl.frames?.pending()) resumeMessages(cl);
      }
    },
    onClose() {
      if (cl.st !== St.Closed) close(cl);
    },
    isReady: () => loggedIn(cl),
  };
}

/** Requests of one client awaiting the origin's answer (a pipeline) past which the client is not read from. */
export const MAX_IN_FLIGHT = 16_384;

const HOLD = () => false;

export function send(cl: Client, b: Uint8Array) {
  if (cl.st !== St.Closed) cl.out.write(b);
}

/** Sends a fatal error and closes: for protocol violations, failed authentication, and the pooler's own bugs. */
export function fatal(cl: Client, code: string, message: string) {
  if (cl.st === St.Closed) return;
  send(cl, errorMessage(code, message, "FATAL"));
  close(cl);
}

/** Bad input closes this client with its SQLSTATE; anything else is our bug, logged, and closes it too. */
export function failed(cl: Client, e: unknown) {
  if (e instanceof ProtocolError) {
    if (e.reply === "close") return close(cl); // as Postgres: no answer to what is not the protocol
    if (e.reply === "v2") send(cl, errorMessageV2(e.message));
    return e.reply === "v2" ? close(cl) : fatal(cl, e.code, e.message);
  }
  cl.ctx.log(`kvdrive pooler: client ${cl.id} failed: ${(e as Error).stack}`);
  fatal(cl, "XX000", "internal error in the pooler");
}

export function close(cl: Client) {
  abandonHeld(cl);
  if (cl.tee) endTee(cl, null);
  if (cl.st === St.Closed) return;
  if (cl.loginTimer) clearTimeout(cl.loginTimer);
  const wasReady = loggedIn(cl);
  const wasBusy = cl.st === St.Busy;
  move(cl, St.Closed);
  if (cl.waiter && cl.pool) cl.pool.cancelWait(cl.waiter);
  cl.waiter = null;
  if (cl.server) {
    const s = cl.server;
    const clean = s.expect.length === 0 && s.status === 0x49 && !s.copyIn && !s.unsynced && !s.discarding;
    // A pinned client's connection holds session state of its own: the pool resets it before reuse.
    if (cl.pinned) s.dirty ??= `a client pinned by ${cl.pinned} left`;
    detach(cl, clean);
  }
  if (wasBusy) cl.ctx.lanes?.resume(cl.laneClient); // its call may be the head of a lane paused for its sake
  if (wasReady) cl.ctx.unregister(cl.pid, cl.id, cl.pinned !== null, cl.pool);
  cl.socket.end();
}

/** Processes held messages; called from pool and lane callbacks, outside onData's error handling. */
export function resumeMessages(cl: Client) {
  try {
    cl.frames!.resume(cl.onFrame);
    flushToServer(cl);
  } catch (e) {
    failed(cl, e);
  }
}

function onAuthOrReady(cl: Client, type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean {
  if (cl.st === St.Auth) return onAuthMessage(cl, type, body);
  if (loggedIn(cl)) return onMessage(cl, type, body, buf, at);
  return false;
}

/** Queues bytes for the origin. Consecutive messages forwarded unchanged are adjacent views of one chunk: sent as one view. */
export function toOrigin(cl: Client, b: Uint8Array) {
  const q = cl.toServer;
  const last = q.length ? q[q.length - 1]! : null;
  if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
    q[q.length - 1] = new Uint8Array(b.buffer, last.byteOffset, last.length + b.length);
  } else q.push(b);
}

/** Sends messages collected for the cache to the origin, in order, now that a connection is attached. */
export function flushDeferred(cl: Client) {
  const d = cl.deferred;
  cl.deferred = [];
  // These messages were read and accepted already: the output bound stops reading more, it must not drop them.
  cl.flushingDeferred = true;
  try {
    for (const m of d) onMessage(cl, m[0]!, m.subarray(5), m, 0);
  } finally {
    cl.flushingDeferred = false;
  }
}

/** One message of a logged-in client. False: it stays held (and what follows it) until resumeMessages. */
export function onMessage(cl: Client, type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean {
  if (!loggedIn(cl)) return false;
  // Answers the client has not read pass the bound: the rest of what it sent waits (one small request can
  // ask for a large cached answer, so this is checked per message, not per chunk read).
  if (cl.out.queued() > cl.cfg.pgMaxClientOutputBytes && !cl.flushingDeferred) {
    if (!cl.outPaused) {
      cl.outPaused = true;
      cl.socket.pause();
    }
    return false;
  }
  if (cl.pendingDiscard) {
    if (type === F.Sync || type === F.Query) {
      cl.pendingDiscard = false;
      send(cl, encodeReadyForQuery(String.fromCharCode(cl.status) as "I"));
    } else if (type === F.Terminate) close(cl);
    return true;
  }
  if (type === F.Terminate) {
    close(cl);
    return false;
  }
  // A lookup or lane call in flight, or a connection being waited for: this message waits its turn.
  if (cl.st === St.Busy || cl.st === St.Waiting) return false;
  const idle = cl.st === St.Idle;
  if (idle && cl.cacheOn && !cl.pinned && cl.status === 0x49) {
    if (type === F.Query) {
      if (cl.bypassCache) cl.bypassCache = false;
      else if (tryCache(cl, body, buf.subarray(at, at + 5 + body.length))) return true;
    } else if (collectBatch(cl, type, body, buf.subarray(at, at + 5 + body.length))) return true;
  }
  if (idle && !cl.deferred.length && answeredIdle(cl, type, body)) return true;
  if (idle && type === F.Query && cl.ctx.lanes && !cl.pinned && cl.status === 0x49 && !cl.deferred.length && queryOnLane(cl, body, buf.subarray(at, at + 5 + body.length))) return true;
  if (idle) {
    if (!isFrontendType(type)) throw new ProtocolError(`unexpected message type ${type} (${JSON.stringify(String.fromCharCode(type))})`);
    if (!acquire(cl)) return cl.pendingDiscard ? onMessage(cl, type, body, buf, at) : false;
  }
  if (cl.deferred.length) flushDeferred(cl);
  const s = cl.server!;
  const raw = buf.subarray(at, at + 5 + body.length);
  if (cl.ctx.cachePath && heldStep(cl, type, body, s, raw)) return true;
  const r = cl.retryBatch;
  if (r) {
    if (!r.synced && (type === F.Describe || type === F.Execute || type === F.Sync)) {
      r.rest.push(raw);
      if (type === F.Sync) r.synced = true;
    } else if (type !== F.Bind) cl.retryBatch = null;
  }
  const wasUnsynced = s.unsynced;
  if (type === F.Sync || type === F.Query) s.unsynced = false;
  else if (type === F.Parse || type === F.Bind || type === F.Describe || type === F.Execute || type === F.Close || type === F.Flush) s.unsynced = true;
  switch (type) {
    case F.Query:
      return onQuery(cl, s, body, raw);
    case F.Parse:
      return onParse(cl, s, body, raw);
    case F.Bind:
      return onBind(cl, s, body, raw, wasUnsynced);
    case F.Describe:
      return onDescribe(cl, s, body, raw);
    case F.Close:
      return onClose(cl, s, body, raw);
    case F.Execute:
      return onExecute(cl, s, body, raw);
    case F.Sync:
      return onSync(cl, s, raw);
    case F.Flush:
      return onFlush(cl, raw);
    case F.CopyData:
      return onCopyData(cl, raw);
    case F.CopyDone:
    case F.CopyFail:
      return onCopyEnd(cl, s, raw);
    case F.FunctionCall:
      return onFunctionCall(cl, s);
    default:
      throw new ProtocolError(`unexpected message type ${type} (${JSON.stringify(String.fromCharCode(type))}) after start-up`);
  }
}

/** What an idle client holding no connection is answered without borrowing one. True: answered. */
function answeredIdle(cl: Client, type: number, body: Uint8Array): boolean {
  if (type === F.Sync) {
    send(cl, READY_IDLE); // nothing outstanding
    return true;
  }
  if (type === F.CopyData || type === F.CopyDone || type === F.CopyFail) return true; // ignored outside COPY, as Postgres does
  if (type === F.FunctionCall) {
    send(cl, FUNCTION_CALL_REFUSED);
    send(cl, READY_IDLE);
    return true;
  }
  if (type === F.Parse && body[0] !== 0 && cl.pool!.saturated()) {
    // Every connection is busy (possibly with transactions of other clients of one synchronous program,
    // pgbench -M prepared with more clients than connections, all in one thread, waiting on this PQprepare):
    // then a named Parse outside a transaction is answered at once and prepared lazily where it is first
    // bound, and an error in it surfaces at Bind. Otherwise it goes to the origin, which answers it.
    // What it does to the session is noted when it is bound and run, not here.
    const m = decodeParse(body);
    try {
      defineStatement(cl, m);
    } catch (e) {
      if (!(e instanceof ProtocolError) || e.code !== "53400") throw e;
      // Refused like a failed Parse: the client stays, its batch is discarded up to Sync.
      send(cl, errorMessage(e.code, e.message));
      cl.pendingDiscard = true;
      return true;
    }
    send(cl, PARSE_COMPLETE);
    return true;
  }
  return false;
}

const FRONTEND_TYPES = new Set<number>(Object.values(F));
function isFrontendType(t: number) {
  return FRONTEND_TYPES.has(t) && t !== F.Password;
}
