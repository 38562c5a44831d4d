// A driver's first call of a statement comes on the connection it borrowed for the Parse (and Describe) of it:
// node-postgres' named query (Parse, Bind, Describe, Execute, Sync in one write), postgres.js (Parse, Describe,
// Flush, then Bind, Execute, Sync, with or without a statement name). On a fresh connection (a Worker's request)
// that is every call. The origin answers the Parse and Describe, as it must (a fresh Parse is never answered
// with another session's statement); the call itself is answered from the cache when a fresh entry is held
// (the Bind, Describe of the portal and Execute are kept back, and the cached answer takes their place before
// the origin's ReadyForQuery), or recorded as it streams back, so the next call can be a hit.
import { checkBind, decodeParse, DESCRIBE_PORTAL, F } from "../../protocol/frontend.ts";
import { READY_IDLE } from "../../protocol/backend.ts";
import { createAnswerRecorder, REPLY_BOUND, REPLY_BUILDERS, REPLY_DESCRIBED } from "../cache/cache-path.ts";
import { EXPECT_DESCRIBE_HIDDEN, K, SKIPPED } from "../server/expect.ts";
import { type Server } from "../server/server.ts";
import { flushDeferred, toOrigin } from "./client.ts";
import { volatility } from "./call.ts";
import { quietHere, stmtKeyPrefix } from "./settings.ts";
import { makeStatement } from "./statements.ts";
import { St, type Client, type Held, type Stmt } from "./state.ts";

const utf8 = new TextDecoder();
const isPortalDescribe = (body: Uint8Array) => body.length === 2 && body[0] === 0x50 && body[1] === 0;
const isExecuteAll = (body: Uint8Array) => body.length === 5 && body[0] === 0 && body[1]! + body[2]! + body[3]! + body[4]! === 0;

/** Sees every message of the ordinary path before it goes to the origin; true: it took the message. */
export function heldStep(cl: Client, type: number, body: Uint8Array, s: Server, raw: Uint8Array): boolean {
  if (!cl.held || cl.held.s !== s) cl.held = { s, parseOnly: cl.status === 0x49 && !cl.pinned && s.status === 0x49 && s.expect.length === 0 && !s.unsynced, rec: null, described: false, executed: false, hit: null, id: "" };
  const h = cl.held;
  if (h.hit) return holdHit(cl, h, type, body, raw);
  if (h.rec) {
    if (type === F.Flush) return false;
    if (type === F.Describe && !h.executed && isPortalDescribe(body)) return void (h.described = true), false;
    if (type === F.Execute && !h.executed && isExecuteAll(body)) {
      h.executed = true;
      // The recording starts with the RowDescription: without the client's Describe, one is added and kept from it.
      if (!h.described) {
        toOrigin(cl, DESCRIBE_PORTAL);
        s.push(EXPECT_DESCRIBE_HIDDEN);
      }
      return false;
    }
    if (type === F.Sync && h.executed) return void (cl.held = null), false; // the recording ends at its ReadyForQuery
    abandonHeld(cl);
    return false;
  }
  if (type === F.Sync || type === F.Query) return void (cl.held = null), false;
  if (type === F.Parse) {
    if (body[0] === 0) noteUnnamedParse(cl, body, raw);
    return false;
  }
  if (type === F.Flush || (type === F.Describe && body[0] === 0x53)) return false;
  const first = type === F.Bind && h.parseOnly;
  h.parseOnly = false;
  return first && heldCall(cl, h, body, raw, s);
}

/** The client's unnamed statement as a Stmt (classified once per distinct Parse), for the held call after it. */
function noteUnnamedParse(cl: Client, body: Uint8Array, raw: Uint8Array) {
  if (!cl.cacheOn || (cl.unnamedStmtParse && Buffer.compare(cl.unnamedStmtParse, raw) === 0)) return;
  const p = decodeParse(body);
  cl.unnamedStmt = makeStatement(cl, p);
  cl.unnamedStmtParse = raw.slice();
}

/** The statement a Bind names: a named one, or the unnamed one its Parse on this connection defined. */
function boundStmt(cl: Client, body: Uint8Array, ns: number, ne: number): Stmt | undefined {
  if (ne > ns) return cl.stmts.get(utf8.decode(body.subarray(ns, ne)));
  return cl.unnamed && cl.unnamedStmtParse && Buffer.compare(cl.unnamed, cl.unnamedStmtParse) === 0 ? (cl.unnamedStmt ?? undefined) : undefined;
}

/** The first Bind after a Parse on this connection: kept back when a fresh answer is held, else recorded. */
function heldCall(cl: Client, h: Held, body: Uint8Array, raw: Uint8Array, s: Server): boolean {
  const [ns, ne] = checkBind(body);
  if (body[0] !== 0 || !cl.cacheOn) return false;
  const stmt = boundStmt(cl, body, ns, ne);
  const cls = stmt?.cls;
  if (!stmt || !cls?.cacheable || cls.pin || stmt.writes.length || !quietHere(cl, stmt.eff) || volatility(cl, cls) !== false) return false;
  const cache = cl.ctx.cachePath.cache;
  const id = stmtKeyPrefix(cl, stmt) + cache.keyTail({ bindTail: body.subarray(ne + 1) });
  if (cache.has(id)) {
    h.hit = [raw.slice()];
    h.id = id;
    return true;
  }
  recordHeld(cl, h, stmt, id, s);
  return false;
}

/**
 * Bind (kept back), then the portal's Describe and Execute, then Sync: the cached answer, still fresh at the
 * Sync, goes to the client in the place of theirs, and only the Sync goes to the origin (its ReadyForQuery ends
 * the answer, after the origin's answers to the Parse and Describe before it). Anything else, or an entry gone
 * meanwhile: what was kept back goes to the origin the ordinary way, then this message.
 */
function holdHit(cl: Client, h: Held, type: number, body: Uint8Array, raw: Uint8Array): boolean {
  const kept = h.hit!;
  const executed = kept.length > 1 && kept[kept.length - 1]![0] === F.Execute;
  if (type === F.Describe && !executed && kept.length === 1 && isPortalDescribe(body)) return void kept.push(raw.slice()), true;
  if (type === F.Execute && !executed && isExecuteAll(body)) return void kept.push(raw.slice()), true;
  h.hit = null;
  const cachePath = cl.ctx.cachePath;
  const e = type === F.Sync && executed ? cachePath.cache.fresh(h.id) : -1;
  if (e >= 0) {
    cl.held = null;
    cl.ctx.metrics.cacheStatus(cl.pool!, "hit");
    cachePath.admission.hit();
    const form = kept.length === 3 ? REPLY_DESCRIBED : REPLY_BOUND;
    const reply = cachePath.cache.reply(e, form, REPLY_BUILDERS[form]!);
    h.s.push({ k: K.Synth, bytes: reply.subarray(0, reply.length - READY_IDLE.length) });
    return false; // the Sync goes on to the origin
  }
  // Given back: the ordinary path sends what was kept, then this message (nothing is recorded now).
  cl.deferred.push(...kept);
  flushDeferred(cl);
  return false;
}

function recordHeld(cl: Client, h: Held, stmt: Stmt, id: string, s: Server) {
  const r = cl.ctx.cachePath.cache.recorder({ database: cl.database, user: cl.user, sql: stmt.query, id }, stmt.cls!.readTables);
  if (!r) return;
  let settled = false;
  const rec: Held["rec"] = { done: (m) => void (settled || ((settled = true), r.done(m))) };
  h.rec = rec;
  cl.ctx.metrics.cacheStatus(cl.pool!, "miss");
  // The recording starts where the Bind's answer starts: after the ParseComplete and Describe answers before it.
  s.push({
    k: K.Synth,
    bytes: SKIPPED,
    done(skipped) {
      if (skipped || h.rec !== rec || cl.tee || cl.st === St.Closed) return rec!.done(null);
      cl.tee = { rec: rec!, answer: createAnswerRecorder(cl.cfg.queryCacheMaxResultBytes) };
    },
  });
}

/** Gives up the recording of a held call (another message came, or the client or its connection went away). */
export function abandonHeld(cl: Client) {
  const held = cl.held;
  if (!held) return;
  held.hit = null;
  const rec = held.rec;
  if (!rec) return;
  held.rec = null;
  if (cl.tee?.rec === rec) cl.tee.answer.abandon();
  else rec.done(null);
}
