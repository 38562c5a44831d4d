// Client side: one wire-protocol client from its start-up packet to its Terminate. It authenticates the
// client, borrows an origin connection for each transaction (or keeps one once pinned), rewrites statement
// names so protocol-level prepared statements survive moving between connections, and replays session
// parameters when it moves. Its state is in client-state.ts, its start-up in client-login.ts, and its cache
// and lane paths in client-fast.ts.
import type { Socket } from "bun";
import { randomBytes } from "node:crypto";
import { ProtocolError } from "../../protocol/bytes.ts";
import { checkBind, decodeParse, decodeQuery, encodeClose, encodeDescribe, encodeParse, encodeQuery, F, renameBindStatement as rewriteBind } from "../../protocol/frontend.ts";
import { CLOSE_COMPLETE, encodeParameterStatus, encodeReadyForQuery, errorMessage, errorMessageV2, PARSE_COMPLETE, READY_IDLE } from "../../protocol/backend.ts";
import { createOutbox, type Outbox } from "../outbox.ts";
import { EXPECT_BIND, EXPECT_CLOSE, EXPECT_CLOSE_HIDDEN, EXPECT_DESCRIBE, EXPECT_EXECUTE, EXPECT_PARSE, K, type Expect } from "../server/expect.ts";
import { replaySql, REPLAYED, REPLAYED_LOWER } from "../server/replay.ts";
import type { Owner, Server } from "../server/server.ts";
import { closePrepared, evictPrepared, nextPrepareSeq, prepareOn } from "../server/statements.ts";
import type { OriginError } from "../server/origin.ts";
import type { Waiter } from "../pool.ts";
import { sessionEffect, untracked, type Op, type SessionEffect } from "../session.ts";
import { createSessionTracker } from "../session-tracker.ts";
import type { PoolerContext } from "../context.ts";
import type { Classification } from "../cache/classify.ts";
import type { LaneClient } from "../lanes.ts";
import { St, type ClientState, type Stmt } from "./state.ts";
import { createFastPaths, type FastPaths } from "./call.ts";
import { createLogin } from "./login.ts";

export interface ClientSocketData {
  client: ReturnType<typeof createClient> | null;
}

let nextPid = (randomBytes(4).readUInt32BE() % 1_000_000_000) + 1;

/** onLoggedIn: the client finished start-up and authentication (the listener bounds clients still in it). */
export function createClient(socket: Socket<ClientSocketData>, ctx: PoolerContext, overTls = false, onLoggedIn?: () => void) {
  const out: Outbox = createOutbox(socket);
  const cfg = ctx.config;
  /** The client's mutable state, shared with its cache and lane steps (client-fast.ts). */
  const c: ClientState = {
    st: St.Startup,
    frames: null,
    user: "",
    database: "",
    pool: null,
    server: null,
    waiter: null,
    pinned: null,
    status: 0x49,
    pendingDiscard: false,
    busy: false,
    bypassCache: false,
    batch: null,
    deferred: [],
    cacheOn: false,
    pausedWhileBusy: false,
    retryBatch: null,
    tee: null,
    unnamed: null,
    unnamedSeq: 0,
    unnamedWrites: [],
    unnamedStmt: null,
    unnamedStmtParse: null,
  };
  const params = new Map<string, string>();
  const sets = new Map<string, string>();
  const stmts = new Statements();
  const id = ctx.nextClientId();
  const pid = nextPid++;
  const key = randomBytes(4);
  const toServer: Uint8Array[] = [];
  /** Tables written since the last idle ReadyForQuery: their cached reads are invalidated when it arrives. */
  const pendingWrites: string[] = [];

  // A client that does not finish start-up in time is dropped, so idle half-open sockets cannot pile up.
  const loginTimer = setTimeout(() => {
    if (c.st !== St.Ready && c.st !== St.Closed) fatal("08P01", `start-up not completed within ${cfg.pgLoginTimeoutSeconds} s (KVDRIVE_PG_LOGIN_TIMEOUT_SECONDS)`);
  }, cfg.pgLoginTimeoutSeconds * 1000);
  loginTimer.unref?.();

  const send = (b: Uint8Array) => {
    if (c.st !== St.Closed) out.write(b);
  };
  /** Reading was stopped because the client's unsent answers passed KVDRIVE_PG_MAX_CLIENT_OUTPUT_BYTES. */
  let outPaused = false;
  /** Reading was stopped because more than MAX_IN_FLIGHT requests await the origin's answer. */
  let expectPaused = false;

  /** Sends a fatal error and closes: for protocol violations and failed authentication. */
  function fatal(code: string, message: string) {
    if (c.st === St.Closed) return;
    send(errorMessage(code, message, "FATAL"));
    close();
  }

  /** Bad input closes this client with its SQLSTATE; anything else is our bug, logged, and closes it too. */
  function failed(e: unknown) {
    if (e instanceof ProtocolError) {
      if (e.reply === "close") return close(); // as Postgres: no answer to what is not the protocol
      if (e.reply === "v2") send(errorMessageV2(e.message));
      return e.reply === "v2" ? close() : fatal(e.code, e.message);
    }
    ctx.log(`kvdrive pooler: client ${id} failed: ${(e as Error).stack}`);
    fatal("XX000", "internal error in the pooler");
  }

  /** Processes held messages; called from pool callbacks, outside onData's error handling. */
  function resumeMessages() {
    try {
      c.frames!.resume(onMessage);
      flushToServer();
    } catch (e) {
      failed(e);
    }
  }

  function close() {
    fast.abandonHeld();
    if (c.tee) fast.endTee(null);
    if (c.st === St.Closed) return;
    clearTimeout(loginTimer);
    const wasReady = c.st === St.Ready;
    c.st = St.Closed;
    if (c.waiter && c.pool) c.pool.cancelWait(c.waiter);
    c.waiter = null;
    if (c.server) {
      const s = c.server;
      const clean = s.expect.length === 0 && s.status === 0x49 && !s.copyIn && !s.unsynced && !s.discarding;
      // A pinned client's connection holds session state of its own: the pool resets it before reuse.
      if (c.pinned) s.dirty ??= `a client pinned by ${c.pinned} left`;
      detach(clean);
    }
    if (c.busy) ctx.lanes?.resume(laneClient); // its call may be the head of a lane paused for its sake
    if (wasReady) ctx.unregister(pid, id, c.pinned !== null, c.pool);
    socket.end();
  }

  // ---- owner of an origin connection --------------------------------------------------------------

  const owner: Owner = {
    hiddenAnswer(type, body) {
      // The RowDescription of a Describe added for a recorded miss: the recording needs it, the client must not see it.
      if (!c.tee) return;
      const msg = new Uint8Array(body.length + 5);
      msg[0] = type;
      new DataView(msg.buffer).setUint32(1, body.length + 4);
      msg.set(body, 5);
      if (c.tee.answer.feed(msg)) fast.endTee(c.tee.answer.result());
    },
    send(b) {
      if (c.tee) fast.record(b);
      send(b);
      if (expectPaused && (!c.server || c.server.expect.length <= MAX_IN_FLIGHT / 2)) {
        expectPaused = false;
        if (!outPaused && !c.waiter) socket.resume();
      }
    },
    backpressured: () => out.queued() > 0,
    parameterStatus(name, value, fromReplay) {
      if (params.get(name) === value) return;
      params.set(name, value);
      sessionChanged();
      if (c.server) c.server.sig = "";
      if (fromReplay) send(encodeParameterStatus(name, value));
    },
    idle() {
      if (!c.pinned && c.server && c.st === St.Ready) detach(true);
    },
    completed(e: Expect, type: number) {
      if (e.k === K.Execute || (type === 0x5a && e.k === K.Query)) ctx.metrics.queries(c.pool!);
      if (type === 0x5a && e.t !== undefined) ctx.metrics.latency(c.pool!, performance.now() - e.t);
      if (e.k === K.Execute && type !== 0x5a) {
        if (type === 0x45) tracker.failed();
        else if (e.ops && type === 0x43) tracker.done(e.ops[0]!);
      }
      if (type === 0x5a && (e.k === K.Sync || e.k === K.Query)) {
        c.status = c.server ? c.server.status : c.status;
        if (e.ops) {
          if (e.k === K.Query) tracker.query(e.ops, e.cc ?? 0, e.failed === true);
          else if (e.failed) tracker.failed();
        }
        tracker.ready(c.status);
        if (c.status === 0x49 && portals.size) portals.clear();
        // At commit (or autocommit) of writes that went through us; after a rollback too, which is only wasteful.
        if (c.status === 0x49 && pendingWrites.length && ctx.cachePath) ctx.cachePath.cache.invalidate(c.database, pendingWrites.splice(0));
      }
    },
    planChanged(serverName, retryable) {
      for (const s of c.unnamedStmt ? [...stmts.values(), c.unnamedStmt] : stmts.values()) {
        if (s.serverName !== serverName) continue;
        ctx.planChanged(s.key);
        s.serverName = ctx.statementName(s.key);
        s.parse = null;
      }
      const b = c.retryBatch;
      c.retryBatch = null;
      // Re-run only a call that describes its result: a client without the Describe would decode the new
      // rows with the old row description; it gets the error and prepares again, as against Postgres.
      if (!retryable || !b?.synced || b.serverName !== serverName || !b.rest.some((m) => m[0] === F.Describe)) return null;
      const name = b.stmt.serverName;
      b.stmt.parse = encodeParse({ name, query: b.stmt.query, paramTypes: b.stmt.paramTypes });
      return { name, bytes: Buffer.concat([b.stmt.parse, rewriteBind(b.bind, name), ...b.rest]) };
    },
    serverClosed(saidWhy) {
      if (c.tee) fast.endTee(null);
      if (c.st === St.Closed) return;
      c.server = null;
      // After the origin's own FATAL (relayed already) the client gets the close alone, as from Postgres.
      if (saidWhy) close();
      else fatal("08006", "the origin connection serving this session closed unexpectedly");
    },
    serverDrained() {
      socket.resume();
    },
    parseRejected(client, serverName) {
      const st = stmts.get(client);
      if (st && st.serverName === serverName) stmts.delete(client);
    },
  };

  /** This client as a turn-taker on a shared connection (lanes.ts): its pipelined call was answered. */
  const laneClient: LaneClient = {
    ...owner,
    // A client that left with its answer backed up must not hold the lane's connection paused.
    backpressured: () => c.st !== St.Closed && out.queued() > 0,
    laneDone() {
      c.busy = false;
      if (c.st === St.Closed) return;
      fast.resumeAfterBusy();
      if (c.frames!.pending()) queueMicrotask(resumeMessages);
    },
    laneFailed(code, message) {
      if (c.tee) fast.endTee(null);
      send(errorMessage(code, message));
      send(READY_IDLE);
      laneClient.laneDone();
    },
  };

  function detach(reusable: boolean) {
    const s = c.server!;
    if (s === poisoned) {
      poisoned = null;
      reusable = false;
    }
    c.server = null;
    s.owner = null;
    s.sig = sig();
    s.conn.resume();
    c.pool!.release(s, reusable);
  }

  let sigCache: string | null = null;
  /** The session part of cache keys, and a generation that statements' cached key prefixes are checked against. */
  let cacheSession: string | null = null;
  let sessionGen = 0;
  function sessionChanged() {
    sigCache = null;
    cacheSession = null;
    sessionGen++;
  }

  /** Results depend on session settings (TimeZone, DateStyle, search_path, SETs), but not on application_name. */
  function cacheSessionKey(): string {
    if (cacheSession !== null) return cacheSession;
    let s = "";
    for (const name of REPLAYED) if (name !== "application_name") s += (params.get(name) ?? "") + "\0";
    for (const [k, v] of sets) s += k + "=" + v + "\0";
    return (cacheSession = s);
  }

  function stmtKeyPrefix(stmt: Stmt): string {
    if (stmt.prefixGen !== sessionGen) {
      stmt.prefix = ctx.cachePath!.cache.keyPrefix({ database: c.database, user: c.user, sql: stmt.query, paramTypes: stmt.paramTypes, session: cacheSessionKey() });
      stmt.prefixGen = sessionGen;
    }
    return stmt.prefix;
  }

  /** The replayed part of the session state as one string, recomputed only after it changed. */
  function sig(): string {
    if (sigCache !== null) return sigCache;
    let out = "";
    for (const name of REPLAYED) out += (params.get(name) ?? "") + "\0";
    for (const [k, v] of sets) out += k + "=" + v + "\0";
    return (sigCache = out);
  }

  function attach(s: Server, onReplayed?: (error: Uint8Array | null) => void) {
    c.server = s;
    s.owner = owner;
    const mine = sig();
    const sql = s.sig === mine ? null : replaySql(s, params, sets);
    s.sig = mine;
    if (sql) {
      s.conn.write(encodeQuery(sql));
      s.push({
        k: K.Replay,
        done(error) {
          // Part of the replay failed: what the connection holds is not known any more; reset it before reuse.
          if (error) s.dirty ??= "a session replay failed";
          onReplayed?.(error);
        },
      });
    } else onReplayed?.(null);
  }

  /**
   * Borrows an origin connection. Returns true when one was granted at once; otherwise processing of the
   * client's bytes stops (the current message stays held) until it arrives or the wait fails.
   */
  function acquire(): boolean {
    inAcquire = true;
    grantedNow = false;
    c.waiter = poolWaiter;
    c.pool!.acquire(poolWaiter);
    inAcquire = false;
    if (c.waiter) socket.pause();
    return grantedNow;
  }

  // One waiter per client (it waits for one connection at a time), so borrowing allocates nothing.
  let inAcquire = false;
  let grantedNow = false;
  const poolWaiter: Waiter = {
    grant(s) {
      c.waiter = null;
      if (c.st === St.Closed) return c.pool!.release(s, true);
      attach(s);
      if (inAcquire) return void (grantedNow = true);
      if (c.deferred.length) {
        try {
          flushDeferred();
        } catch (e) {
          return failed(e);
        }
      }
      socket.resume();
      resumeMessages();
      flushToServer();
    },
    fail(err: OriginError) {
      c.waiter = null;
      if (c.st === St.Closed) return;
      // The client gets the error for its request and stays usable: what it sent up to the next
      // Sync or Query is answered with this error and one ReadyForQuery, like a failed query.
      send(errorMessage(err.code, err.message));
      c.pendingDiscard = true;
      if (c.deferred.length) {
        // The deferred batch ended with its Sync: its error is answered, later messages are not discarded.
        c.deferred = [];
        send(encodeReadyForQuery(String.fromCharCode(c.status) as "I"));
        c.pendingDiscard = false;
      }
      if (inAcquire) return;
      socket.resume();
      resumeMessages();
    },
  };

  function flushToServer() {
    if (!toServer.length || !c.server) return;
    const bytes = toServer.length === 1 ? toServer[0]! : Buffer.concat(toServer);
    toServer.length = 0;
    c.server.conn.write(bytes);
    if (c.server.conn.queued() > 0) socket.pause();
  }

  function toOrigin(b: Uint8Array) {
    // Consecutive messages forwarded unchanged are adjacent views of one chunk: send them as one view.
    const last = toServer.length ? toServer[toServer.length - 1]! : null;
    if (last && last.buffer === b.buffer && last.byteOffset + last.length === b.byteOffset) {
      toServer[toServer.length - 1] = new Uint8Array(b.buffer, last.byteOffset, last.length + b.length);
    } else toServer.push(b);
  }

  /** Makes sure the origin connection has a client statement prepared, injecting a hidden Parse if not. */
  const ensurePrepared = (s: Server, stmt: Stmt) => prepareOn(s, stmt, cfg.poolMaxPreparedStatements, toOrigin);

  /** The origin must see every unnamed Parse (it replaces its unnamed statement); the client owns it until the next. */
  function forwardUnnamedParse(s: Server, raw: Uint8Array): true {
    c.unnamedSeq++;
    s.unnamedOwner = id;
    s.unnamedSeq = c.unnamedSeq;
    toOrigin(raw);
    s.push(EXPECT_PARSE);
    return true;
  }

  const evictIfFull = (s: Server) => evictPrepared(s, cfg.poolMaxPreparedStatements, toOrigin);

  // ---- session state: what a statement does to it (session.ts), noted as it is sent and settled as it completes ----

  /** The connection it was LOADed into cannot be reset: it is closed when the client lets go of it. */
  let poisoned: Server | null = null;
  /** Effects of the statements bound to portals, for their Execute (cleared when the transaction ends). */
  const portals = new Map<string, SessionEffect>();
  /** The client's unnamed statement's effect. */
  let unnamedEff: SessionEffect = sessionEffect("");
  /** An Execute of this batch carries SETs: its Sync must say whether the batch failed. */
  let batchTracked = false;
  const tracker = createSessionTracker({
    sets,
    reported: (name) => REPLAYED_LOWER.has(name),
    server: () => c.server,
    changed: sessionChanged,
    resync() {
      const s = c.server;
      if (!s) return;
      s.sig = "";
      const sql = replaySql(s, params, sets);
      if (!sql) return;
      s.conn.write(encodeQuery(sql));
      s.push({ k: K.Replay, done: (error) => void (error && (s.dirty ??= "a session replay failed")) });
    },
  });

  /** At send time: pins, effects the pooler cannot track (the connection is reset before reuse), forgotten statements. */
  function noteSend(s: Server, eff: SessionEffect) {
    if (eff.none) return;
    if (eff.pin && !c.pinned) {
      c.pinned = eff.pin;
      ctx.metrics.pinned(c.pool!, eff.pin);
    }
    const why = untracked(eff, ctx.functions?.safe(c.database) ?? null);
    if (why) s.dirty ??= why;
    if (eff.createsTrigger) ctx.functions?.addTrigger(c.database, eff.createsTrigger);
    if (eff.poison) {
      poisoned = s;
      s.dirty ??= eff.poison;
    }
    if (eff.forgetsStatements) {
      // Whether it runs is not known here (a Parse that is never executed, a failed transaction): every name is
      // marked older than any client's Parse, so its next use closes and prepares it again, right either way.
      // Forgetting them instead made a later Parse of one fail with 42P05 "already exists" (the wire fuzzer).
      for (const name of s.prepared.keys()) s.prepared.set(name, 0);
      s.unnamedOwner = 0;
    }
  }

  // ---- messages from the client, in Ready state -----------------------------------------------------

  function onMessage(type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean {
    if (c.st !== St.Ready) return false;
    // Answers the client has not read pass the bound: the rest of what it sent waits (one small request can
    // ask for a large cached answer, so this is checked per message, not per chunk read).
    if (out.queued() > cfg.pgMaxClientOutputBytes && !flushingDeferred) {
      if (!outPaused) {
        outPaused = true;
        socket.pause();
      }
      return false;
    }
    if (c.pendingDiscard) {
      if (type === F.Sync || type === F.Query) {
        c.pendingDiscard = false;
        send(encodeReadyForQuery(String.fromCharCode(c.status) as "I"));
      } else if (type === F.Terminate) close();
      return true;
    }
    if (type === F.Terminate) {
      close();
      return false;
    }
    if (c.busy) return false;
    if (!c.server && c.cacheOn && !c.pinned && c.status === 0x49) {
      if (type === F.Query) {
        if (c.bypassCache) c.bypassCache = false;
        else if (fast.tryCache(body, buf.subarray(at, at + 5 + body.length))) return true;
      } else if (fast.collectBatch(type, body, buf.subarray(at, at + 5 + body.length))) return true;
    }
    if (!c.server && !c.deferred.length) {
      if (type === F.Sync) {
        send(READY_IDLE); // nothing outstanding: answer without borrowing a connection
        return true;
      }
      if (type === F.CopyData || type === F.CopyDone || type === F.CopyFail) return true; // ignored outside COPY, as Postgres does
      if (type === F.FunctionCall) {
        send(FUNCTION_CALL_REFUSED);
        send(READY_IDLE);
        return true;
      }
      if (type === F.Parse && body[0] !== 0 && c.pool!.saturated()) {
        // Every connection is busy (possibly with transactions of other clients of one synchronous program,
        // pgbench -M prepared with more clients than connections, all in one thread, waiting on this PQprepare):
        // then a named Parse outside a transaction is answered at once and prepared lazily where it is first
        // bound, and an error in it surfaces at Bind. Otherwise it goes to the origin, which answers it.
        // What it does to the session is noted when it is bound and run, not here.
        const m = decodeParse(body);
        try {
          defineStatement(m);
        } catch (e) {
          if (!(e instanceof ProtocolError) || e.code !== "53400") throw e;
          // Refused like a failed Parse: the client stays, its batch is discarded up to Sync.
          send(errorMessage(e.code, e.message));
          c.pendingDiscard = true;
          return true;
        }
        send(PARSE_COMPLETE);
        return true;
      }
    }
    if (!c.server && type === F.Query && ctx.lanes && !c.pinned && c.status === 0x49 && !c.deferred.length && !c.waiter && fast.queryOnLane(body, buf.subarray(at, at + 5 + body.length))) return true;
    if (!c.server) {
      if (!isFrontendType(type)) throw new ProtocolError(`unexpected message type ${type} (${JSON.stringify(String.fromCharCode(type))})`);
      if (c.waiter) return false;
      if (!acquire()) return c.pendingDiscard ? onMessage(type, body, buf, at) : false;
    }
    if (c.deferred.length) flushDeferred();
    const s = c.server!;
    const raw = buf.subarray(at, at + 5 + body.length);
    if (ctx.cachePath && fast.ordinary(type, body, s, raw)) return true;
    if (c.retryBatch) {
      if (!c.retryBatch.synced && (type === F.Describe || type === F.Execute || type === F.Sync)) {
        c.retryBatch.rest.push(raw);
        if (type === F.Sync) c.retryBatch.synced = true;
      } else if (type !== F.Bind) c.retryBatch = null;
    }
    const wasUnsynced = s.unsynced;
    if (type === F.Sync || type === F.Query) s.unsynced = false;
    else if (type === F.Parse || type === F.Bind || type === F.Describe || type === F.Execute || type === F.Close || type === F.Flush) s.unsynced = true;
    switch (type) {
      case F.Query: {
        const sql = decodeQuery(body);
        const eff = sessionEffect(sql);
        noteSend(s, eff);
        if (ctx.cachePath) pendingWrites.push(...writesOf(sql));
        toOrigin(raw);
        s.push(eff.ops ? { k: K.Query, t: performance.now(), ops: eff.ops } : { k: K.Query, t: performance.now() });
        return true;
      }
      case F.Parse: {
        if (body[0] === 0 && c.unnamed && Buffer.compare(c.unnamed, raw) === 0) {
          // The same unnamed statement again (drivers without named statements do this per query): it was
          // classified already, and the origin must see the Parse anyway to replace its unnamed statement.
          return forwardUnnamedParse(s, raw);
        }
        const m = decodeParse(body);
        if (m.name === "") {
          unnamedEff = sessionEffect(m.query);
          c.unnamedWrites = writesOf(m.query);
          c.unnamed = raw.slice();
          return forwardUnnamedParse(s, raw);
        }
        const stmt = defineStatement(m);
        // A fresh Parse is answered by the origin, never with a copy another client prepared (maybe against
        // another table of that name): an older copy on this connection is closed first.
        if (s.prepared.has(stmt.serverName)) closePrepared(s, stmt.serverName, toOrigin);
        evictIfFull(s);
        stmt.parse = encodeParse({ name: stmt.serverName, query: m.query, paramTypes: m.paramTypes });
        toOrigin(stmt.parse);
        s.prepared.set(stmt.serverName, nextPrepareSeq());
        s.push({ k: K.Parse, name: stmt.serverName, client: m.name });
        return true;
      }
      case F.Bind: {
        const [nameStart, nameEnd] = checkBind(body);
        const bound = nameEnd === nameStart ? unnamedEff : stmts.get(utf8.decode(body.subarray(nameStart, nameEnd)))?.eff;
        if (bound && !bound.none) {
          noteSend(s, bound);
          if (bound.ops) portals.set(utf8.decode(body.subarray(0, body.indexOf(0))), bound);
        } else if (portals.size) portals.delete(utf8.decode(body.subarray(0, body.indexOf(0))));
        if (nameEnd === nameStart) {
          if (c.unnamedWrites.length) pendingWrites.push(...c.unnamedWrites);
          ensureUnnamed(s);
          toOrigin(raw);
        } else {
          const name = utf8.decode(body.subarray(nameStart, nameEnd));
          const stmt = stmts.get(name);
          const idle = s.expect.length === 0 && c.status === 0x49 && !wasUnsynced;
          c.retryBatch = stmt && idle && s.prepared.has(stmt.serverName) ? { stmt, serverName: stmt.serverName, bind: body, rest: [], synced: false } : null;
          if (stmt) {
            if (stmt.writes.length) pendingWrites.push(...stmt.writes);
            ensurePrepared(s, stmt);
            toOrigin(rewriteBind(body, stmt.serverName));
            s.push({ k: K.Bind, name: stmt.serverName });
            return true;
          }
          toOrigin(rewriteBind(body, `kvdrive unknown statement ${name}`));
        }
        s.push(EXPECT_BIND);
        return true;
      }
      case F.Describe:
      case F.Close: {
        const kind = body[0];
        const name = utf8.decode(body.subarray(1, body.length - 1));
        if (body[body.length - 1] !== 0 || (kind !== 0x53 && kind !== 0x50)) throw new ProtocolError(`${type === F.Close ? "Close" : "Describe"} message is malformed`);
        if (kind === 0x50 || name === "") {
          if (kind === 0x53 && type === F.Describe) ensureUnnamed(s);
          if (kind === 0x53 && type === F.Close) c.unnamed = null;
          toOrigin(raw);
          s.push(type === F.Close ? EXPECT_CLOSE : EXPECT_DESCRIBE);
          return true;
        }
        const stmt = stmts.get(name);
        if (type === F.Close) {
          // The origin copy stays for other clients and the LRU; only this client's name goes.
          stmts.delete(name);
          s.push({ k: K.Synth, bytes: CLOSE_COMPLETE });
          return true;
        }
        if (stmt) {
          ensurePrepared(s, stmt);
          toOrigin(encodeDescribe({ kind: "S", name: stmt.serverName }));
        } else toOrigin(raw);
        s.push(EXPECT_DESCRIBE);
        return true;
      }
      case F.Execute: {
        toOrigin(raw);
        const ops = portals.size ? portals.get(utf8.decode(body.subarray(0, body.indexOf(0))))?.ops : undefined;
        if (ops) batchTracked = true;
        s.push(ops ? { k: K.Execute, ops } : EXPECT_EXECUTE);
        return true;
      }
      case F.Sync: {
        toOrigin(raw);
        const tracked = batchTracked || tracker.pending();
        batchTracked = false;
        if (!s.copyIn) s.push(tracked ? { k: K.Sync, t: performance.now(), ops: NO_OPS } : { k: K.Sync, t: performance.now() });
        return true;
      }
      case F.Flush:
        toOrigin(raw);
        return true;
      case F.CopyData:
        toOrigin(raw);
        return true;
      case F.CopyDone:
      case F.CopyFail:
        toOrigin(raw);
        s.copyIn = false;
        return true;
      case F.FunctionCall:
        s.push({ k: K.Synth, bytes: FUNCTION_CALL_REFUSED });
        s.push({ k: K.Synth, bytes: encodeReadyForQuery(String.fromCharCode(c.status) as "I") });
        return true;
      default:
        throw new ProtocolError(`unexpected message type ${type} (${JSON.stringify(String.fromCharCode(type))}) after start-up`);
    }
  }

  function classifyOrNull(sql: string): Classification | null {
    if (!ctx.cachePath) return null;
    try {
      return ctx.cachePath.classify(sql);
    } catch {
      return null;
    }
  }

  /** A miss in flight on this client's connection: its answer, recorded for the cache as it streams back. */

  /** Sends messages collected for the cache to the origin, in order, now that a connection is attached. */
  function flushDeferred() {
    const d = c.deferred;
    c.deferred = [];
    // These messages were read and accepted already: the output bound stops reading more, it must not drop them.
    flushingDeferred = true;
    try {
      for (const m of d) onMessage(m[0]!, m.subarray(5), m, 0);
    } finally {
      flushingDeferred = false;
    }
  }
  let flushingDeferred = false;

  /** Tables a statement writes, by the shared classifier; none without it (then there is no cache either). */
  function writesOf(sql: string): string[] {
    if (!ctx.cachePath) return [];
    try {
      return ctx.cachePath.classify(sql).writeTables;
    } catch {
      return [];
    }
  }

  function defineStatement(m: { name: string; query: string; paramTypes: number[] }): Stmt {
    if (stmts.size >= cfg.poolMaxPreparedStatements * 16 && !stmts.has(m.name)) {
      throw new ProtocolError(`client has more than ${cfg.poolMaxPreparedStatements * 16} prepared statements (16 x KVDRIVE_POOL_PREPARED_STATEMENTS)`, "54000");
    }
    const old = stmts.get(m.name);
    const total = stmts.bytes - (old ? statementBytes(old) : 0) + statementBytes(m);
    if (total > cfg.poolMaxPreparedBytes) {
      throw new ProtocolError(`prepared statements of this client would hold ${total} bytes, over the limit of ${cfg.poolMaxPreparedBytes} (KVDRIVE_POOL_MAX_PREPARED_BYTES); close some first`, "53400");
    }
    const stmt = makeStatement(m);
    stmts.set(m.name, stmt);
    return stmt;
  }

  function makeStatement(m: { query: string; paramTypes: number[] }): Stmt {
    const k = m.query + "\0" + m.paramTypes.join(",");
    const cls = classifyOrNull(m.query);
    return { key: k, query: m.query, paramTypes: m.paramTypes, serverName: ctx.statementName(k), parse: null, parsedAt: nextPrepareSeq(), writes: cls?.writeTables ?? [], eff: sessionEffect(m.query), cls, prefix: "", prefixGen: -1, nameBytes: null, bindExpect: null };
  }

  function ensureUnnamed(s: Server) {
    if (s.unnamedOwner === id && s.unnamedSeq === c.unnamedSeq) return;
    if (c.unnamed) {
      toOrigin(c.unnamed);
      s.push({ k: K.ParseHidden });
      s.unnamedOwner = id;
      s.unnamedSeq = c.unnamedSeq;
    } else {
      // Another client's unnamed statement may sit there: drop it so this Bind fails as it would directly.
      toOrigin(encodeClose({ kind: "S", name: "" }));
      s.push(EXPECT_CLOSE_HIDDEN);
      s.unnamedOwner = 0;
    }
  }

  function cancelRunning() {
    const s = c.server ?? (c.busy ? ctx.lanes?.soleServer(laneClient) : null);
    if (s) ctx.cancelOrigin(s);
  }

  const login = createLogin({
    c, ctx, socket, overTls, params, sets, pid, key, send, fatal, close, attach, detach, flushToServer, resumeMessages, onAuthOrReady,
    ready() {
      clearTimeout(loginTimer);
      tracker.started();
      onLoggedIn?.();
      ctx.register(pid, key, id, cancelRunning, c.pool!);
    },
  });

  const fast: FastPaths = createFastPaths({
    c, ctx, socket, params, sets, stmts, pendingWrites, laneClient, send, failed, acquire, flushToServer, toOrigin, ensurePrepared, resumeMessages, flushDeferred, onAuthOrReady,
    sig, stmtKeyPrefix, cacheSessionKey, classifyOrNull, makeStatement,
  });

  return {
    onData(chunk: Uint8Array) {
      try {
        if (c.st === St.Startup) return login.onStartupData(chunk);
        if (c.st === St.Closed) return;
        if (c.st === St.Ready && !c.server && !c.busy && !c.batch && !c.pinned && c.status === 0x49 && !c.pendingDiscard && !c.deferred.length && !c.waiter && !c.tee && c.frames!.pending() === 0 && (chunk[0] === F.Parse ? fast.unnamedCall(chunk) : fast.preparedCall(chunk))) return;
        if (c.st === St.Validating) {
          c.frames!.push(chunk, () => false);
          return;
        }
        c.frames!.push(chunk, onAuthOrReady);
        flushToServer();
        if (c.busy && !c.pausedWhileBusy && c.frames!.pending() > 1024 * 1024) {
          c.pausedWhileBusy = true;
          socket.pause();
        }
      } catch (e) {
        failed(e);
      } finally {
        // A client that sends without reading its answers (a Sync flood) is not read from until they drain.
        if (!outPaused && c.st !== St.Closed && out.queued() > cfg.pgMaxClientOutputBytes) {
          outPaused = true;
          socket.pause();
        }
        // Pipelined requests the origin has not answered yet each hold an expectation: bounded the same way.
        if (!expectPaused && c.server && c.server.expect.length > MAX_IN_FLIGHT) {
          expectPaused = true;
          socket.pause();
        }
      }
    },
    onDrain() {
      if (!out.drain()) return;
      if (c.server) c.server.conn.resume();
      else if (c.busy) ctx.lanes?.resume(laneClient);
      if (outPaused) {
        outPaused = false;
        // Unless reading is stopped for another reason, whose own end resumes it.
        if (!c.waiter && !c.pausedWhileBusy && !expectPaused && c.st !== St.Validating && !(c.server && c.server.conn.queued() > 0)) socket.resume();
        if (c.st === St.Ready && !c.busy && !c.waiter && c.frames?.pending()) resumeMessages();
      }
    },
    onClose() {
      if (c.st !== St.Closed) close();
    },
    isReady: () => c.st === St.Ready,
  };

  function onAuthOrReady(type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean {
    if (c.st === St.Auth) return login.onAuthMessage(type, body);
    if (c.st === St.Ready) return onMessage(type, body, buf, at);
    return false;
  }
}

const utf8 = new TextDecoder();
/** A Sync whose batch's failure the session tracker needs to hear of. */
const NO_OPS: Op[] = [];

/**
 * What a prepared statement holds in the pooler, roughly: its text about three times (its key, its Parse,
 * its cache key prefix), its parameter types, and the objects around them.
 */
const statementBytes = (s: { query: string; paramTypes: number[] }) => 256 + 3 * s.query.length + 8 * s.paramTypes.length;

/** A client's prepared statements by name, with their size (bounded by KVDRIVE_POOL_MAX_PREPARED_BYTES). */
class Statements extends Map<string, Stmt> {
  bytes = 0;
  override set(name: string, s: Stmt) {
    const old = super.get(name);
    if (old) this.bytes -= statementBytes(old);
    this.bytes += statementBytes(s);
    return super.set(name, s);
  }
  override delete(name: string) {
    const old = super.get(name);
    if (old) this.bytes -= statementBytes(old);
    return super.delete(name);
  }
  override clear() {
    this.bytes = 0;
    super.clear();
  }
}

/** Requests of one client awaiting the origin's answer (a pipeline) past which the client is not read from. */
const MAX_IN_FLIGHT = 16_384;

const FUNCTION_CALL_REFUSED = errorMessage("0A000", "the fastpath function call protocol is not supported by the pooler; use SELECT");
const FRONTEND_TYPES = new Set<number>(Object.values(F));
function isFrontendType(t: number) {
  return FRONTEND_TYPES.has(t) && t !== F.Password;
}
