// Calls of prepared statements from an idle client, answered without holding an origin connection when they
// can be: from the query cache, or pipelined on a shared connection (lanes.ts), Busy until answered. A call
// in one chunk (Bind, Describe, Execute, Sync; or an unnamed Parse with its call) is matched whole; a call
// sent message by message is collected up to its Sync. What cannot be answered so goes the ordinary way.
import { checkBind, checkBindAt, decodeParse, F, matchPreparedCall, matchUnnamedCall, renameBindStatement as rewriteBind, renamePreparedCall, withPortalDescribe } from "../../protocol/frontend.ts";
import { PARSE_COMPLETE } from "../../protocol/backend.ts";
import { createAnswerRecorder, REPLY_BOUND, REPLY_BUILDERS, REPLY_DESCRIBED, REPLY_PARSED } from "../cache/cache-path.ts";
import type { Classification } from "../cache/classify.ts";
import { EXPECT_DESCRIBE, EXPECT_DESCRIBE_HIDDEN, EXPECT_EXECUTE, K } from "../server/expect.ts";
import { sessionEffect } from "../session.ts";
import { failed, flushDeferred, resumeMessages, send, toOrigin } from "./client.ts";
import { acquire, flushToServer } from "./link.ts";
import { cacheSessionKey, quietHere, sig, stmtKeyPrefix } from "./settings.ts";
import { ensurePrepared, makeStatement } from "./statements.ts";
import { move, resumeReading, St, type Client, type Stmt } from "./state.ts";

const utf8 = new TextDecoder();
export const UNTRACKED_LOAD = "a cache load of a statement calling functions that are not builtins";
/** cachedOrPipelined's answer when the request must take the ordinary, message-by-message path. */
const ORDINARY = "ordinary";
type Recorder = { done(messages: Uint8Array[] | null): void };

/**
 * Whether the statement calls a function that is not immutable: false for none, undefined while not known
 * (then it is asked for in the background, once; until the answer is in, the statement is not cached).
 */
export function volatility(cl: Client, cls: Classification): boolean | undefined {
  if (cls.functions.length === 0) return false;
  const cache = cl.ctx.cachePath.cache;
  const known = cache.knownVolatile(cl.database, cls.functions);
  if (known === undefined) void cache.isVolatile(cl.database, cls.functions);
  return known;
}

/**
 * The common case first: a chunk that is exactly one prepared-statement call (Bind, Describe, Execute, Sync)
 * from an idle client. A fresh cached answer is sent with one write; a cacheable miss runs on the connection
 * it borrows, its answer recorded for the cache as it streams back; anything else borrows a connection and goes
 * out with one write, the Bind renamed in the same buffer. Returns false to take the ordinary message-by-message
 * path (which handles every case, this one included).
 */
export function preparedCall(cl: Client, chunk: Uint8Array): boolean {
  const m = matchPreparedCall(chunk);
  if (!m) return false;
  const stmt = cl.stmts.get(utf8.decode(chunk.subarray(m.nameStart, m.nameEnd)));
  // A statement that touches session state takes the ordinary path, which notes and settles what it does.
  // (BEGIN and friends from an idle client are fine: the tracker learns of the transaction from ReadyForQuery.)
  if (!stmt || !(stmt.eff.txOnly || quietHere(cl, stmt.eff))) return false;
  checkBindAt(chunk, m.nameStart, m.bindEnd);
  const r = cachedOrPipelined(cl, stmt, chunk, m, false);
  if (r === true) return true;
  if (r === ORDINARY) return false;
  const rec = r || null;
  if (!acquire(cl)) {
    // Waiting for a connection, the call is held like any message and runs the ordinary way once granted; if
    // the wait failed at once, the ordinary path answers it with the error.
    rec?.done(null);
    cl.frames!.push(chunk, cl.waiter ? HOLD : cl.onFrame);
    return true;
  }
  const s = cl.server!;
  if (stmt.writes.length) cl.pendingWrites.push(...stmt.writes);
  const idle = s.expect.length === 0 && !s.unsynced;
  cl.retryBatch = idle && s.prepared.has(stmt.serverName) ? { stmt, serverName: stmt.serverName, bind: chunk.subarray(5, m.bindEnd), rest: [chunk.subarray(m.bindEnd)], synced: true } : null;
  ensurePrepared(cl, s, stmt);
  nameBytes(stmt);
  // A recorded miss needs the RowDescription: without the client's own Describe, one is added and kept from it.
  const hidden = rec !== null && !m.describe;
  const renamed = renamePreparedCall(chunk, m.nameEnd, stmt.nameBytes!);
  toOrigin(cl, hidden ? withPortalDescribe(renamed) : renamed);
  s.push(stmt.bindExpect!);
  if (m.describe) s.push(EXPECT_DESCRIBE);
  else if (hidden) s.push(EXPECT_DESCRIBE_HIDDEN);
  s.push(EXPECT_EXECUTE);
  s.push({ k: K.Sync, t: performance.now() });
  if (rec) {
    cl.ctx.metrics.cacheStatus(cl.pool!, "miss");
    cl.tee = { rec, answer: createAnswerRecorder(cl.cfg.queryCacheMaxResultBytes) };
  }
  flushToServer(cl);
  return true;
}

const HOLD = () => false;

/** The statement's origin name, encoded, and the Bind expectation naming it, made again only after it changed. */
function nameBytes(stmt: Stmt) {
  if (stmt.bindExpect?.name !== stmt.serverName) {
    stmt.nameBytes = new TextEncoder().encode(stmt.serverName);
    stmt.bindExpect = { k: K.Bind, name: stmt.serverName };
  }
}

/**
 * The cache and lane steps of a call of `stmt` (Bind, optional Describe, Execute, Sync in `call`) from an idle
 * client: true when answered from the cache or sent on a lane; ORDINARY when the message-by-message path must
 * take it (a stale entry, a load in flight, volatility not known yet); otherwise false (run it on a borrowed
 * connection), or the recorder of a cacheable miss that the caller runs and records. `parsed`: the call came
 * after an unnamed Parse, whose ParseComplete goes first.
 */
function cachedOrPipelined(cl: Client, stmt: Stmt, call: Uint8Array, m: { nameEnd: number; bindEnd: number; describe: boolean }, parsed: boolean): boolean | typeof ORDINARY | Recorder {
  const { ctx } = cl;
  let rec: Recorder | null = null;
  const cls = stmt.cls;
  const cacheable = cls?.cacheable && !cls.pin;
  const volatile = cacheable ? volatility(cl, cls!) : true;
  const knownSafe = volatile === false;
  if (cacheable && !knownSafe && cl.cacheOn) {
    // Not known yet: the ordinary path asks, waits, and caches. Volatile: it runs uncached on a borrowed connection.
    if (volatile === undefined) return ORDINARY;
    ctx.metrics.cacheStatus(cl.pool!, "volatile");
  }
  if (cl.cacheOn && knownSafe) {
    const cache = ctx.cachePath.cache;
    const id = stmtKeyPrefix(cl, stmt) + cache.keyTail({ bindTail: call.subarray(m.nameEnd + 1, m.bindEnd) });
    const e = cache.fresh(id);
    if (e >= 0) {
      ctx.metrics.cacheStatus(cl.pool!, "hit");
      ctx.cachePath.admission.hit();
      const form = (m.describe ? REPLY_DESCRIBED : REPLY_BOUND) + (parsed ? REPLY_PARSED : 0);
      send(cl, cache.reply(e, form, REPLY_BUILDERS[form]!));
      return true;
    }
    if (ctx.cachePath.admission.admit(id)) {
      rec = cache.recorder({ database: cl.database, user: cl.user, sql: stmt.query, id }, cls!.readTables);
      if (!rec) return ORDINARY; // stale (served while it refreshes), or being loaded: the ordinary path waits for it
    } else ctx.metrics.cacheStatus(cl.pool!, "miss"); // not recorded: it passes through like an uncached read
  }
  if (!ctx.lanes || !knownSafe || stmt.writes.length) return rec ?? false;
  // A read-only autocommit call: pipelined on a connection shared with other clients' reads (lanes.ts).
  nameBytes(stmt);
  move(cl, St.Busy);
  if (parsed) send(cl, PARSE_COMPLETE);
  if (rec) {
    ctx.metrics.cacheStatus(cl.pool!, "miss");
    cl.tee = { rec, answer: createAnswerRecorder(cl.cfg.queryCacheMaxResultBytes) };
  }
  const renamed = renamePreparedCall(call, m.nameEnd, stmt.nameBytes!);
  // A recorded miss needs the RowDescription: without the client's own Describe, one is added and kept from it.
  const hidden = rec !== null && !m.describe;
  ctx.lanes.submit(cl.pool!, sig(cl), cl.params, cl.sets, cl.laneClient, stmt, hidden ? withPortalDescribe(renamed) : renamed, m.describe, hidden);
  return true;
}

/**
 * An unnamed Parse and a call of it in one chunk (node-postgres' parameterised queries, postgres.js with
 * prepare: false), from an idle client: a cacheable read is answered from the cache or pipelined on a lane
 * under the statement's shared origin name, like a prepared call. The client's unnamed statement is then
 * this one, prepared again wherever it is next bound without a Parse. False: the ordinary path.
 */
export function unnamedCall(cl: Client, chunk: Uint8Array): boolean {
  const u = matchUnnamedCall(chunk);
  if (!u) return false;
  const parse = chunk.subarray(0, u.parseEnd);
  const call = chunk.subarray(u.parseEnd);
  let stmt = cl.unnamedStmt;
  if (!stmt || !cl.unnamedStmtParse || Buffer.compare(cl.unnamedStmtParse, parse) !== 0) {
    const p = decodeParse(parse.subarray(5));
    if (!quietHere(cl, sessionEffect(p.query))) return false;
    stmt = makeStatement(cl, p);
    if (!stmt.cls?.cacheable) return false;
    cl.unnamedStmt = stmt;
    cl.unnamedStmtParse = parse.slice();
  }
  checkBindAt(call, u.call.nameStart, u.call.bindEnd);
  // Committed from here on: the origin connections do not hold this unnamed statement.
  const r = cachedOrPipelined(cl, stmt, call, u.call, true);
  if (r !== true) {
    if (r && r !== ORDINARY) r.done(null);
    return false;
  }
  cl.unnamed = cl.unnamedStmtParse;
  cl.unnamedSeq++;
  cl.unnamedWrites = [];
  return true;
}

/**
 * Extended protocol on an idle client, message by message: Bind (unnamed portal) of a cacheable prepared
 * statement, optionally Describe of that portal, Execute, Sync is answered from the cache without an origin
 * connection. Anything else ends the collection and what was collected goes to the origin first. True: consumed.
 */
export function collectBatch(cl: Client, type: number, body: Uint8Array, raw: Uint8Array): boolean {
  const b = cl.batch;
  if (!b) {
    if (type !== F.Bind || body[0] !== 0) return false;
    const [ns, ne] = checkBind(body);
    const stmt = ne > ns ? cl.stmts.get(utf8.decode(body.subarray(ns, ne))) : undefined;
    if (!stmt?.cls?.cacheable || stmt.cls.pin) return false;
    cl.batch = { stmt, msgs: [raw.slice()], describe: false, exec: false };
    return true;
  }
  if (type === F.Describe && !b.exec && body.length === 2 && body[0] === 0x50 && body[1] === 0) {
    b.describe = true;
  } else if (type === F.Execute && !b.exec && body.length === 5 && body[0] === 0 && body[1]! + body[2]! + body[3]! + body[4]! === 0) {
    b.exec = true;
  } else if (type === F.Sync && b.exec) {
    b.msgs.push(raw.slice());
    lookupBatch(cl, b);
    cl.batch = null;
    return true;
  } else {
    cl.deferred = b.msgs;
    cl.batch = null;
    return false;
  }
  b.msgs.push(raw.slice());
  return true;
}

function lookupBatch(cl: Client, b: { stmt: Stmt; msgs: Uint8Array[]; describe: boolean }) {
  const { ctx } = cl;
  const cls = b.stmt.cls!;
  const body = b.msgs[0]!.subarray(5);
  const tail = body.subarray(checkBind(body)[1] + 1);
  const cache = ctx.cachePath.cache;
  const id = stmtKeyPrefix(cl, b.stmt) + cache.keyTail({ bindTail: tail });
  if (volatility(cl, cls) === false) {
    const e = cache.fresh(id);
    if (e >= 0) {
      ctx.metrics.cacheStatus(cl.pool!, "hit");
      const form = b.describe ? REPLY_DESCRIBED : REPLY_BOUND;
      send(cl, cache.reply(e, form, REPLY_BUILDERS[form]!));
      return;
    }
  }
  const key = { database: cl.database, user: cl.user, sql: b.stmt.query, paramTypes: b.stmt.paramTypes, session: cacheSessionKey(cl), bindTail: tail, id };
  const untracked = quietHere(cl, b.stmt.eff) ? undefined : UNTRACKED_LOAD;
  const load = () => ctx.recordQuery(cl.pool!, new Map(cl.params), new Map(cl.sets), b.stmt.query, { bind: rewriteBind(body, ""), paramTypes: b.stmt.paramTypes }, untracked);
  move(cl, St.Busy);
  const volatile = cls.functions.length ? cache.isVolatile(cl.database, cls.functions) : Promise.resolve(false);
  volatile
    .then((v) => (v ? { status: "volatile" as const, messages: [] } : cache.lookup(key, cls.readTables, load)))
    .then(
      (r) => batchAnswered(cl, r, b),
      (e) => {
        ctx.log(`kvdrive pooler: cache lookup failed: ${(e as Error).message}`);
        batchAnswered(cl, null, b);
      },
    );
}

/** The batch's lookup is done (Busy to Idle): the cached answer goes out, or the batch goes to the origin. */
function batchAnswered(cl: Client, r: { status: string; messages: Uint8Array[] } | null, b: { msgs: Uint8Array[]; describe: boolean }) {
  if (cl.st === St.Closed) return;
  move(cl, St.Idle);
  if (r) cl.ctx.metrics.cacheStatus(cl.pool!, r.status);
  if (r && r.messages.length) {
    send(cl, REPLY_BUILDERS[b.describe ? REPLY_DESCRIBED : REPLY_BOUND]!(r.messages));
    resumeAfterBusy(cl);
    return resumeMessages(cl);
  }
  cl.deferred = b.msgs;
  resumeAfterBusy(cl);
  try {
    if (acquire(cl)) {
      flushDeferred(cl);
      flushToServer(cl);
    }
  } catch (e) {
    return failed(cl, e);
  }
  if (!cl.waiter) resumeMessages(cl);
}

/** Reading stops only when a client sends a lot while a cache lookup is in flight (see onData). */
export function resumeAfterBusy(cl: Client) {
  if (!cl.pausedWhileBusy) return;
  cl.pausedWhileBusy = false;
  resumeReading(cl);
}

/** Part of a recorded miss's answer, as it streams to the client. */
export function record(cl: Client, b: Uint8Array) {
  if (cl.tee!.answer.feed(b)) endTee(cl, cl.tee!.answer.result());
}

/** The recording ends: its messages for the cache, or null when it was given up. */
export function endTee(cl: Client, messages: Uint8Array[] | null) {
  const t = cl.tee!;
  cl.tee = null;
  t.rec.done(messages);
}
