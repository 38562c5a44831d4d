// Handler of the simple Query message: from an idle client, answered from the query cache (Busy while a lookup
// or load is in flight) or pipelined on a shared connection (lanes.ts); otherwise sent on the client's own
// origin connection, with what it does to the session noted.
import { decodeQuery } from "../../protocol/frontend.ts";
import { REPLY_BUILDERS, REPLY_SIMPLE } from "../cache/cache-path.ts";
import { K } from "../server/expect.ts";
import { type Server } from "../server/server.ts";
import { sessionEffect } from "../session.ts";
import { resumeMessages, send, toOrigin } from "./client.ts";
import { resumeAfterBusy, UNTRACKED_LOAD, volatility } from "./call.ts";
import { noteSend, quietHere, cacheSessionKey, sig } from "./settings.ts";
import { classifyOrNull, writesOf } from "./statements.ts";
import { move, St, type Client } from "./state.ts";

/** A Query on the client's origin connection. */
export function onQuery(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array): boolean {
  const sql = decodeQuery(body);
  const eff = sessionEffect(sql);
  noteSend(cl, s, eff);
  cl.pendingWrites.push(...writesOf(cl, sql));
  toOrigin(cl, raw);
  s.push(eff.ops ? { k: K.Query, t: performance.now(), ops: eff.ops } : { k: K.Query, t: performance.now() });
  return true;
}

/** A simple Query of one read-only statement from an idle client: pipelined on a lane. False: not such a query. */
export function queryOnLane(cl: Client, body: Uint8Array, raw: Uint8Array): boolean {
  const sql = decodeQuery(body);
  const cls = classifyOrNull(cl, sql);
  if (!cls?.cacheable || cls.pin || cls.writeTables.length || !quietHere(cl, sessionEffect(sql)) || volatility(cl, cls) !== false) return false;
  move(cl, St.Busy);
  cl.ctx.lanes!.submit(cl.pool!, sig(cl), cl.params, cl.sets, cl.laneClient, null, raw.slice(), false);
  return true;
}

/**
 * A simple Query on an idle client: answer it from the cache when the classifier allows. Returns false to
 * take the ordinary path. Otherwise later messages wait until the answer is sent; if the cache could not
 * answer (an error, an oversized result), the Query is put back and goes to the origin like any other.
 */
export function tryCache(cl: Client, body: Uint8Array, raw: Uint8Array): boolean {
  const { ctx } = cl;
  const sql = decodeQuery(body);
  let cls;
  try {
    cls = ctx.cachePath.classify(sql);
  } catch (e) {
    ctx.log(`kvdrive pooler: classifier failed: ${(e as Error).message}`);
    return false;
  }
  if (!cls.cacheable || cls.pin) {
    ctx.metrics.cacheStatus(cl.pool!, cls.status);
    return false;
  }
  // A function that is not a builtin of the origin may be cached (when immutable); a load of it resets its connection.
  const untracked = quietHere(cl, sessionEffect(sql)) ? undefined : UNTRACKED_LOAD;
  const cache = ctx.cachePath.cache;
  const key: { database: string; user: string; sql: string; session: string; id?: string } = { database: cl.database, user: cl.user, sql, session: cacheSessionKey(cl) };
  key.id = cache.key(key);
  if (volatility(cl, cls) === false) {
    const e = cache.fresh(key.id);
    if (e >= 0) {
      ctx.metrics.cacheStatus(cl.pool!, "hit");
      send(cl, cache.reply(e, REPLY_SIMPLE, REPLY_BUILDERS[REPLY_SIMPLE]!));
      return true;
    }
  }
  const copy = raw.slice();
  move(cl, St.Busy);
  const volatile = cls.functions.length ? cache.isVolatile(cl.database, cls.functions) : Promise.resolve(false);
  const readTables = cls.readTables;
  volatile
    .then((v) => (v ? { status: "volatile" as const, messages: [] } : cache.lookup(key, readTables, () => ctx.recordQuery(cl.pool!, new Map(cl.params), new Map(cl.sets), sql, undefined, untracked))))
    .then(
      (r) => answered(cl, r, copy),
      (e) => {
        ctx.log(`kvdrive pooler: cache lookup failed: ${(e as Error).message}`);
        answered(cl, null, copy);
      },
    );
  return true;
}

/** The lookup is done (Busy to Idle): the answer goes out, or the Query goes back in front to reach the origin. */
function answered(cl: Client, r: { status: string; messages: Uint8Array[] } | null, query: Uint8Array) {
  if (cl.st === St.Closed) return;
  move(cl, St.Idle);
  if (r && r.messages.length) {
    cl.ctx.metrics.cacheStatus(cl.pool!, r.status);
    send(cl, REPLY_BUILDERS[REPLY_SIMPLE]!(r.messages));
  } else {
    if (r) cl.ctx.metrics.cacheStatus(cl.pool!, r.status);
    cl.bypassCache = true;
    cl.frames!.unshift(query);
  }
  resumeAfterBusy(cl);
  resumeMessages(cl);
}
