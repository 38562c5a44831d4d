// A pooler client's fast paths, beside its state machine (client.ts): answers from the query cache and reads
// pipelined on shared origin connections (lanes.ts), for a simple Query, a prepared call in one chunk, an unnamed
// Parse with its call, or Bind/Describe/Execute/Sync collected message by message. Each either takes the
// request (answered, or in flight with the client busy until it is) or leaves it to the ordinary path.
import type { Socket } from "bun";
import { checkBind, checkBindAt, DESCRIBE_PORTAL, decodeParse, decodeQuery, F, matchPreparedCall, matchUnnamedCall, renameBindStatement as rewriteBind, renamePreparedCall, withPortalDescribe } from "../../protocol/frontend.ts";
import { PARSE_COMPLETE, READY_IDLE } from "../../protocol/backend.ts";
import { createAnswerRecorder, REPLY_BOUND, REPLY_BUILDERS, REPLY_DESCRIBED, REPLY_PARSED, REPLY_SIMPLE } from "../cache/cache-path.ts";
import type { Classification } from "../cache/classify.ts";
import { St, type ClientState, type Stmt } from "./state.ts";
import type { PoolerContext } from "../context.ts";
import type { LaneClient } from "../lanes.ts";
import { EXPECT_DESCRIBE, EXPECT_DESCRIBE_HIDDEN, EXPECT_EXECUTE, K, SKIPPED } from "../server/expect.ts";
import type { Server } from "../server/server.ts";
import { quiet, sessionEffect, type SessionEffect } from "../session.ts";

/** What the fast paths use of their client: its state, and the steps of its ordinary path. */
export interface ClientCore {
  c: ClientState;
  ctx: PoolerContext;
  socket: Socket<any>;
  params: Map<string, string>;
  sets: Map<string, string>;
  stmts: Map<string, Stmt>;
  pendingWrites: string[];
  laneClient: LaneClient;
  send(b: Uint8Array): void;
  failed(e: unknown): void;
  /** Borrows an origin connection; true when one was granted at once. */
  acquire(): boolean;
  flushToServer(): void;
  toOrigin(b: Uint8Array): void;
  ensurePrepared(s: Server, stmt: Stmt): void;
  resumeMessages(): void;
  /** Sends messages collected for the cache to the origin, in order, now that a connection is attached. */
  flushDeferred(): void;
  onAuthOrReady(type: number, body: Uint8Array, buf: Uint8Array, at: number): boolean;
  /** The replayed part of the session state, as one string. */
  sig(): string;
  stmtKeyPrefix(stmt: Stmt): string;
  cacheSessionKey(): string;
  classifyOrNull(sql: string): Classification | null;
  makeStatement(m: { query: string; paramTypes: number[] }): Stmt;
}

export type FastPaths = ReturnType<typeof createFastPaths>;

export function createFastPaths(core: ClientCore) {
  const { c, ctx, socket, params, sets, stmts, pendingWrites, laneClient, send, failed, acquire, flushToServer, toOrigin, ensurePrepared, resumeMessages, flushDeferred, onAuthOrReady, sig, stmtKeyPrefix, cacheSessionKey, classifyOrNull, makeStatement } = core;
  const cfg = ctx.config;

  /** Nothing to note or settle for this statement: it may take a fast path or a lane. */
  const quietHere = (eff: SessionEffect) => quiet(eff, ctx.functions?.safe(c.database) ?? null);

  /** A simple Query of one read-only statement from an idle client: pipelined on a lane. False: not such a query. */
  function queryOnLane(body: Uint8Array, raw: Uint8Array): boolean {
    const sql = decodeQuery(body);
    const cls = classifyOrNull(sql);
    if (!cls?.cacheable || cls.pin || cls.writeTables.length || !quietHere(sessionEffect(sql)) || volatility(cls) !== false) return false;
    c.busy = true;
    ctx.lanes!.submit(c.pool!, sig(), params, sets, laneClient, null, raw.slice(), false);
    return true;
  }

  /**
   * Whether the statement calls a function that is not immutable: false for none, undefined while not known
   * (then it is asked for in the background, once; until the answer is in, the statement is not cached).
   */
  function volatility(cls: Classification): boolean | undefined {
    if (cls.functions.length === 0) return false;
    const cache = ctx.cachePath!.cache;
    const known = cache.knownVolatile(c.database, cls.functions);
    if (known === undefined) void cache.isVolatile(c.database, cls.functions);
    return known;
  }

  /**
   * Extended protocol on an idle client: Bind (unnamed portal) of a cacheable prepared statement, optionally
   * Describe of that portal, Execute, Sync is answered from the cache without an origin connection. Anything
   * else ends the collection and what was collected goes to the origin first. Returns true when consumed.
   */
  function collectBatch(type: number, body: Uint8Array, raw: Uint8Array): boolean {
    if (!c.batch) {
      if (type !== F.Bind || body[0] !== 0) return false;
      const [ns, ne] = checkBind(body);
      const stmt = ne > ns ? stmts.get(utf8.decode(body.subarray(ns, ne))) : undefined;
      if (!stmt?.cls?.cacheable || stmt.cls.pin) return false;
      c.batch = { stmt, msgs: [raw.slice()], describe: false, exec: false };
      return true;
    }
    if (type === F.Describe && !c.batch.exec && body.length === 2 && body[0] === 0x50 && body[1] === 0) {
      c.batch.describe = true;
    } else if (type === F.Execute && !c.batch.exec && body.length === 5 && body[0] === 0 && body[1]! + body[2]! + body[3]! + body[4]! === 0) {
      c.batch.exec = true;
    } else if (type === F.Sync && c.batch.exec) {
      c.batch.msgs.push(raw.slice());
      lookupBatch(c.batch);
      c.batch = null;
      return true;
    } else {
      c.deferred = c.batch.msgs;
      c.batch = null;
      return false;
    }
    c.batch.msgs.push(raw.slice());
    return true;
  }

  function lookupBatch(b: { stmt: Stmt; msgs: Uint8Array[]; describe: boolean }) {
    const cls = b.stmt.cls!;
    const body = b.msgs[0]!.subarray(5);
    const tail = body.subarray(checkBind(body)[1] + 1);
    const cache = ctx.cachePath!.cache;
    const id = stmtKeyPrefix(b.stmt) + cache.keyTail({ bindTail: tail });
    if (volatility(cls) === false) {
      const e = cache.fresh(id);
      if (e >= 0) {
        ctx.metrics.cacheStatus(c.pool!, "hit");
        const form = b.describe ? REPLY_DESCRIBED : REPLY_BOUND;
        send(cache.reply(e, form, REPLY_BUILDERS[form]!));
        return;
      }
    }
    const key = { database: c.database, user: c.user, sql: b.stmt.query, paramTypes: b.stmt.paramTypes, session: cacheSessionKey(), bindTail: tail, id };
    const untracked = quietHere(b.stmt.eff) ? undefined : UNTRACKED_LOAD;
    const load = () => ctx.recordQuery(c.pool!, new Map(params), new Map(sets), b.stmt.query, { bind: rewriteBind(body, ""), paramTypes: b.stmt.paramTypes }, untracked);
    c.busy = true;
    const volatile = cls.functions.length ? cache.isVolatile(c.database, cls.functions) : Promise.resolve(false);
    volatile
      .then((v) => (v ? { status: "volatile" as const, messages: [] } : cache.lookup(key, cls.readTables, load)))
      .then(
        (r) => batchAnswered(r, b),
        (e) => {
          ctx.log(`kvdrive pooler: cache lookup failed: ${(e as Error).message}`);
          batchAnswered(null, b);
        },
      );
  }

  /**
   * The common case first: a chunk that is exactly one prepared-statement call (Bind, Describe, Execute, Sync)
   * from an idle client, with no origin connection attached. A fresh cached answer is sent with one write; a
   * cacheable miss runs on the connection it borrows, its answer recorded for the cache as it streams back;
   * anything else borrows a connection and goes out with one write, the Bind renamed in the same buffer. Returns
   * false to take the ordinary message-by-message path (which handles every case, this one included).
   */
  function preparedCall(chunk: Uint8Array): boolean {
    const m = matchPreparedCall(chunk);
    if (!m) return false;
    const stmt = stmts.get(utf8.decode(chunk.subarray(m.nameStart, m.nameEnd)));
    // A statement that touches session state takes the ordinary path, which notes and settles what it does.
    // (BEGIN and friends from an idle client are fine: the tracker learns of the transaction from ReadyForQuery.)
    if (!stmt || !(stmt.eff.txOnly || quietHere(stmt.eff))) return false;
    checkBindAt(chunk, m.nameStart, m.bindEnd);
    const r = cachedOrPipelined(stmt, chunk, m, false);
    if (r === true) return true;
    if (r === ORDINARY) return false;
    const rec = r || null;
    if (!acquire()) {
      // Waiting for a connection, the call is held like any message and runs the ordinary way once granted; if
      // the wait failed at once, the ordinary path answers it with the error.
      rec?.done(null);
      c.frames!.push(chunk, c.waiter ? () => false : onAuthOrReady);
      return true;
    }
    const s = c.server!;
    if (stmt.writes.length) pendingWrites.push(...stmt.writes);
    const idle = s.expect.length === 0 && !s.unsynced;
    c.retryBatch = idle && s.prepared.has(stmt.serverName) ? { stmt, serverName: stmt.serverName, bind: chunk.subarray(5, m.bindEnd), rest: [chunk.subarray(m.bindEnd)], synced: true } : null;
    ensurePrepared(s, stmt);
    if (stmt.bindExpect?.name !== stmt.serverName) {
      stmt.nameBytes = new TextEncoder().encode(stmt.serverName);
      stmt.bindExpect = { k: K.Bind, name: stmt.serverName };
    }
    // A recorded miss needs the RowDescription: without the client's own Describe, one is added and kept from it.
    const hidden = rec !== null && !m.describe;
    const renamed = renamePreparedCall(chunk, m.nameEnd, stmt.nameBytes!);
    toOrigin(hidden ? withPortalDescribe(renamed) : renamed);
    s.push(stmt.bindExpect);
    if (m.describe) s.push(EXPECT_DESCRIBE);
    else if (hidden) s.push(EXPECT_DESCRIBE_HIDDEN);
    s.push(EXPECT_EXECUTE);
    s.push({ k: K.Sync, t: performance.now() });
    if (rec) {
      ctx.metrics.cacheStatus(c.pool!, "miss");
      c.tee = { rec, answer: createAnswerRecorder(cfg.queryCacheMaxResultBytes) };
    }
    flushToServer();
    return true;
  }

  /**
   * The cache and lane steps of a call of `stmt` (Bind, optional Describe, Execute, Sync in `call`) from an idle
   * client: true when answered from the cache or sent on a lane; ORDINARY when the message-by-message path must
   * take it (a stale entry, a load in flight, volatility not known yet); otherwise false (run it on a borrowed
   * connection), or the recorder of a cacheable miss that the caller runs and records. `parsed`: the call came
   * after an unnamed Parse, whose ParseComplete goes first.
   */
  function cachedOrPipelined(stmt: Stmt, call: Uint8Array, m: { nameEnd: number; bindEnd: number; describe: boolean }, parsed: boolean): boolean | typeof ORDINARY | { done(messages: Uint8Array[] | null): void } {
    let rec: { done(messages: Uint8Array[] | null): void } | null = null;
    const cls = stmt.cls;
    const cacheable = cls?.cacheable && !cls.pin;
    const volatile = cacheable ? volatility(cls!) : true;
    const knownSafe = volatile === false;
    if (cacheable && !knownSafe && c.cacheOn) {
      // Not known yet: the ordinary path asks, waits, and caches. Volatile: it runs uncached on a borrowed connection.
      if (volatile === undefined) return ORDINARY;
      ctx.metrics.cacheStatus(c.pool!, "volatile");
    }
    if (c.cacheOn && knownSafe) {
      const cache = ctx.cachePath!.cache;
      const id = stmtKeyPrefix(stmt) + cache.keyTail({ bindTail: call.subarray(m.nameEnd + 1, m.bindEnd) });
      const e = cache.fresh(id);
      if (e >= 0) {
        ctx.metrics.cacheStatus(c.pool!, "hit");
        ctx.cachePath!.admission.hit();
        const form = (m.describe ? REPLY_DESCRIBED : REPLY_BOUND) + (parsed ? REPLY_PARSED : 0);
        send(cache.reply(e, form, REPLY_BUILDERS[form]!));
        return true;
      }
      if (ctx.cachePath!.admission.admit(id)) {
        rec = cache.recorder({ database: c.database, user: c.user, sql: stmt.query, id }, cls!.readTables);
        if (!rec) return ORDINARY; // stale (served while it refreshes), or being loaded: the ordinary path waits for it
      } else ctx.metrics.cacheStatus(c.pool!, "miss"); // not recorded: it passes through like an uncached read
    }
    if (!ctx.lanes || !knownSafe || stmt.writes.length) return rec ?? false;
    // A read-only autocommit call: pipelined on a connection shared with other clients' reads (lanes.ts).
    if (stmt.bindExpect?.name !== stmt.serverName) {
      stmt.nameBytes = new TextEncoder().encode(stmt.serverName);
      stmt.bindExpect = { k: K.Bind, name: stmt.serverName };
    }
    c.busy = true;
    if (parsed) send(PARSE_COMPLETE);
    if (rec) {
      ctx.metrics.cacheStatus(c.pool!, "miss");
      c.tee = { rec, answer: createAnswerRecorder(cfg.queryCacheMaxResultBytes) };
    }
    const renamed = renamePreparedCall(call, m.nameEnd, stmt.nameBytes!);
    // A recorded miss needs the RowDescription: without the client's own Describe, one is added and kept from it.
    const hidden = rec !== null && !m.describe;
    ctx.lanes.submit(c.pool!, sig(), params, sets, laneClient, stmt, hidden ? withPortalDescribe(renamed) : renamed, m.describe, hidden);
    return true;
  }

  /**
   * An unnamed Parse and a call of it in one chunk (node-postgres' parameterised queries, postgres.js with
   * prepare: false), from an idle client: a cacheable read is answered from the cache or pipelined on a lane
   * under the statement's shared origin name, like a prepared call. The client's unnamed statement is then
   * this one, prepared again wherever it is next bound without a Parse. False: the ordinary path.
   */
  function unnamedCall(chunk: Uint8Array): boolean {
    const u = matchUnnamedCall(chunk);
    if (!u) return false;
    const parse = chunk.subarray(0, u.parseEnd);
    const call = chunk.subarray(u.parseEnd);
    let stmt = c.unnamedStmt;
    if (!stmt || !c.unnamedStmtParse || Buffer.compare(c.unnamedStmtParse, parse) !== 0) {
      const p = decodeParse(parse.subarray(5));
      if (!quietHere(sessionEffect(p.query))) return false;
      stmt = makeStatement(p);
      if (!stmt.cls?.cacheable) return false;
      c.unnamedStmt = stmt;
      c.unnamedStmtParse = parse.slice();
    }
    checkBindAt(call, u.call.nameStart, u.call.bindEnd);
    // Committed from here on: the origin connections do not hold this unnamed statement.
    const r = cachedOrPipelined(stmt, call, u.call, true);
    if (r !== true) {
      if (r && r !== ORDINARY) r.done(null);
      return false;
    }
    c.unnamed = c.unnamedStmtParse;
    c.unnamedSeq++;
    c.unnamedWrites = [];
    return true;
  }

  function record(b: Uint8Array) {
    if (c.tee!.answer.feed(b)) endTee(c.tee!.answer.result());
  }

  function endTee(messages: Uint8Array[] | null) {
    const t = c.tee!;
    c.tee = null;
    t.rec.done(messages);
  }

  function batchAnswered(r: { status: string; messages: Uint8Array[] } | null, b: { msgs: Uint8Array[]; describe: boolean }) {
    c.busy = false;
    if (c.st === St.Closed) return;
    if (r) ctx.metrics.cacheStatus(c.pool!, r.status);
    if (r && r.messages.length) {
      send(REPLY_BUILDERS[b.describe ? REPLY_DESCRIBED : REPLY_BOUND]!(r.messages));
      resumeAfterBusy();
      return resumeMessages();
    }
    c.deferred = b.msgs;
    resumeAfterBusy();
    try {
      if (acquire()) {
        flushDeferred();
        flushToServer();
      }
    } catch (e) {
      return failed(e);
    }
    if (!c.waiter) resumeMessages();
  }

  /**
   * A simple Query on an idle client: answer it from the cache when the classifier allows. Returns false to
   * take the ordinary path. Otherwise later messages wait until the answer is sent; if the cache could not
   * answer (an error, an oversized result), the Query is put back and goes to the origin like any other.
   */
  function tryCache(body: Uint8Array, raw: Uint8Array): boolean {
    const sql = decodeQuery(body);
    let cls;
    try {
      cls = ctx.cachePath!.classify(sql);
    } catch (e) {
      ctx.log(`kvdrive pooler: classifier failed: ${(e as Error).message}`);
      return false;
    }
    if (!cls.cacheable || cls.pin) {
      ctx.metrics.cacheStatus(c.pool!, cls.status);
      return false;
    }
    // A function that is not a builtin of the origin may be cached (when immutable); a load of it resets its connection.
    const untracked = quietHere(sessionEffect(sql)) ? undefined : UNTRACKED_LOAD;
    const cache = ctx.cachePath!.cache;
    const key: { database: string; user: string; sql: string; session: string; id?: string } = { database: c.database, user: c.user, sql, session: cacheSessionKey() };
    key.id = cache.key(key);
    if (volatility(cls) === false) {
      const e = cache.fresh(key.id);
      if (e >= 0) {
        ctx.metrics.cacheStatus(c.pool!, "hit");
        send(cache.reply(e, REPLY_SIMPLE, REPLY_BUILDERS[REPLY_SIMPLE]!));
        return true;
      }
    }
    const copy = raw.slice();
    c.busy = true;
    const volatile = cls.functions.length ? cache.isVolatile(c.database, cls.functions) : Promise.resolve(false);
    const readTables = cls.readTables;
    volatile
      .then((v) => (v ? { status: "volatile" as const, messages: [] } : cache.lookup(key, readTables, () => ctx.recordQuery(c.pool!, new Map(params), new Map(sets), sql, undefined, untracked))))
      .then(
        (r) => answered(r, copy),
        (e) => {
          ctx.log(`kvdrive pooler: cache lookup failed: ${(e as Error).message}`);
          answered(null, copy);
        },
      );
    return true;
  }

  /** Reading stops only when a client sends a lot while a cache lookup is in flight (see onData). */
  function resumeAfterBusy() {
    if (!c.pausedWhileBusy) return;
    c.pausedWhileBusy = false;
    socket.resume();
  }

  function answered(r: { status: string; messages: Uint8Array[] } | null, query: Uint8Array) {
    c.busy = false;
    if (c.st === St.Closed) return;
    if (r && r.messages.length) {
      ctx.metrics.cacheStatus(c.pool!, r.status);
      send(REPLY_BUILDERS[REPLY_SIMPLE]!(r.messages));
    } else {
      if (r) ctx.metrics.cacheStatus(c.pool!, r.status);
      c.bypassCache = true;
      c.frames!.unshift(query);
    }
    resumeAfterBusy();
    resumeMessages();
  }
  /**
   * A driver's first call of a statement comes on the connection it borrowed for the Parse (and Describe) of it:
   * node-postgres' named query (Parse, Bind, Describe, Execute, Sync in one write), postgres.js (Parse, Describe,
   * Flush, then Bind, Execute, Sync, with or without a statement name). On a fresh connection (a Worker's request)
   * that is every call. The origin answers the Parse and Describe, as it must (a fresh Parse is never answered
   * with another session's statement); the call itself is answered from the cache when a fresh entry is held
   * (the Bind, Describe of the portal and Execute are kept back, and the cached answer takes their place before
   * the origin's ReadyForQuery), or recorded as it streams back, so the next call can be a hit. `ordinary` sees
   * every message of the ordinary path before it goes to the origin; true: it took the message.
   */
  let held: { s: Server; parseOnly: boolean; rec: CacheRecorder | null; described: boolean; executed: boolean; hit: Uint8Array[] | null; id: string } | null = null;

  function ordinary(type: number, body: Uint8Array, s: Server, raw: Uint8Array): boolean {
    if (!held || held.s !== s) held = { s, parseOnly: c.status === 0x49 && !c.pinned && s.status === 0x49 && s.expect.length === 0 && !s.unsynced, rec: null, described: false, executed: false, hit: null, id: "" };
    const h = held;
    if (h.hit) return holdHit(h, type, body, raw);
    if (h.rec) {
      if (type === F.Flush) return false;
      if (type === F.Describe && !h.executed && isPortalDescribe(body)) return void (h.described = true), false;
      if (type === F.Execute && !h.executed && isExecuteAll(body)) {
        h.executed = true;
        // The recording starts with the RowDescription: without the client's Describe, one is added and kept from it.
        if (!h.described) {
          toOrigin(DESCRIBE_PORTAL);
          s.push(EXPECT_DESCRIBE_HIDDEN);
        }
        return false;
      }
      if (type === F.Sync && h.executed) return void (held = null), false; // the recording ends at its ReadyForQuery
      abandonHeld();
      return false;
    }
    if (type === F.Sync || type === F.Query) return void (held = null), false;
    if (type === F.Parse) {
      if (body[0] === 0) noteUnnamedParse(body, raw);
      return false;
    }
    if (type === F.Flush || (type === F.Describe && body[0] === 0x53)) return false;
    const first = type === F.Bind && h.parseOnly;
    h.parseOnly = false;
    return first && heldCall(h, body, raw, s);
  }

  const isPortalDescribe = (body: Uint8Array) => body.length === 2 && body[0] === 0x50 && body[1] === 0;
  const isExecuteAll = (body: Uint8Array) => body.length === 5 && body[0] === 0 && body[1]! + body[2]! + body[3]! + body[4]! === 0;

  /** The client's unnamed statement as a Stmt (classified once per distinct Parse), for the held call after it. */
  function noteUnnamedParse(body: Uint8Array, raw: Uint8Array) {
    if (!c.cacheOn || (c.unnamedStmtParse && Buffer.compare(c.unnamedStmtParse, raw) === 0)) return;
    const p = decodeParse(body);
    c.unnamedStmt = makeStatement(p);
    c.unnamedStmtParse = raw.slice();
  }

  /** The statement a Bind names: a named one, or the unnamed one its Parse on this connection defined. */
  function boundStmt(body: Uint8Array, ns: number, ne: number): Stmt | undefined {
    if (ne > ns) return stmts.get(utf8.decode(body.subarray(ns, ne)));
    return c.unnamed && c.unnamedStmtParse && Buffer.compare(c.unnamed, c.unnamedStmtParse) === 0 ? (c.unnamedStmt ?? undefined) : undefined;
  }

  /** The first Bind after a Parse on this connection: kept back when a fresh answer is held, else recorded. */
  function heldCall(h: NonNullable<typeof held>, body: Uint8Array, raw: Uint8Array, s: Server): boolean {
    const [ns, ne] = checkBind(body);
    if (body[0] !== 0 || !c.cacheOn) return false;
    const stmt = boundStmt(body, ns, ne);
    const cls = stmt?.cls;
    if (!stmt || !cls?.cacheable || cls.pin || stmt.writes.length || !quietHere(stmt.eff) || volatility(cls) !== false) return false;
    const cache = ctx.cachePath!.cache;
    const id = stmtKeyPrefix(stmt) + cache.keyTail({ bindTail: body.subarray(ne + 1) });
    if (cache.has(id)) {
      h.hit = [raw.slice()];
      h.id = id;
      return true;
    }
    recordHeld(h, stmt, id, s);
    return false;
  }

  /**
   * Bind (kept back), then the portal's Describe and Execute, then Sync: the cached answer, still fresh at the
   * Sync, goes to the client in the place of theirs, and only the Sync goes to the origin (its ReadyForQuery ends
   * the answer, after the origin's answers to the Parse and Describe before it). Anything else, or an entry gone
   * meanwhile: what was kept back goes to the origin the ordinary way, then this message.
   */
  function holdHit(h: NonNullable<typeof held>, type: number, body: Uint8Array, raw: Uint8Array): boolean {
    const kept = h.hit!;
    const executed = kept.length > 1 && kept[kept.length - 1]![0] === F.Execute;
    if (type === F.Describe && !executed && kept.length === 1 && isPortalDescribe(body)) return void kept.push(raw.slice()), true;
    if (type === F.Execute && !executed && isExecuteAll(body)) return void kept.push(raw.slice()), true;
    h.hit = null;
    const e = type === F.Sync && executed ? ctx.cachePath!.cache.fresh(h.id) : -1;
    if (e >= 0) {
      held = null;
      ctx.metrics.cacheStatus(c.pool!, "hit");
      ctx.cachePath!.admission.hit();
      const form = kept.length === 3 ? REPLY_DESCRIBED : REPLY_BOUND;
      const reply = ctx.cachePath!.cache.reply(e, form, REPLY_BUILDERS[form]!);
      h.s.push({ k: K.Synth, bytes: reply.subarray(0, reply.length - READY_IDLE.length) });
      return false; // the Sync goes on to the origin
    }
    // Given back: the ordinary path sends what was kept, then this message (nothing is recorded now).
    c.deferred.push(...kept);
    flushDeferred();
    return false;
  }

  function recordHeld(h: NonNullable<typeof held>, stmt: Stmt, id: string, s: Server) {
    const r = ctx.cachePath!.cache.recorder({ database: c.database, user: c.user, sql: stmt.query, id }, stmt.cls!.readTables);
    if (!r) return;
    let settled = false;
    const rec: CacheRecorder = { done: (m) => void (settled || ((settled = true), r.done(m))) };
    h.rec = rec;
    ctx.metrics.cacheStatus(c.pool!, "miss");
    // The recording starts where the Bind's answer starts: after the ParseComplete and Describe answers before it.
    s.push({
      k: K.Synth,
      bytes: SKIPPED,
      done(skipped) {
        if (skipped || h.rec !== rec || c.tee || c.st === St.Closed) return rec.done(null);
        c.tee = { rec, answer: createAnswerRecorder(cfg.queryCacheMaxResultBytes) };
      },
    });
  }

  /** Gives up the recording of a held call (another message came, or the client or its connection went away). */
  function abandonHeld() {
    if (held) held.hit = null;
    const rec = held?.rec;
    if (!rec) return;
    held!.rec = null;
    if (c.tee?.rec === rec) c.tee.answer.abandon();
    else rec.done(null);
  }

  return { preparedCall, unnamedCall, queryOnLane, tryCache, collectBatch, record, endTee, resumeAfterBusy, ordinary, abandonHeld };
}

const utf8 = new TextDecoder();
type CacheRecorder = { done(messages: Uint8Array[] | null): void };
const UNTRACKED_LOAD = "a cache load of a statement calling functions that are not builtins";
/** cachedOrPipelined's answer when the request must take the ordinary, message-by-message path. */
const ORDINARY = "ordinary";
