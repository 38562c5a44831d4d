// A client's session settings: what it asked for (reported parameters, SETs) as one signature replayed on the
// connections it borrows, the session part of its cache keys, and what its statements do to the session
// (session.ts), noted as they are sent and settled as they complete (session-tracker.ts).
import { encodeQuery } from "../../protocol/frontend.ts";
import { K } from "../server/expect.ts";
import { REPLAYED, REPLAYED_LOWER, replaySql } from "../server/replay.ts";
import type { Server } from "../server/server.ts";
import { quiet, untracked, type SessionEffect } from "../session.ts";
import { createSessionTracker } from "../session-tracker.ts";
import type { Client, Stmt } from "./state.ts";

export function sessionChanged(cl: Client) {
  cl.sigCache = null;
  cl.cacheSession = null;
  cl.sessionGen++;
}

/** The replayed part of the session state as one string, recomputed only after it changed. */
export function sig(cl: Client): string {
  if (cl.sigCache !== null) return cl.sigCache;
  let out = "";
  for (const name of REPLAYED) out += (cl.params.get(name) ?? "") + "\0";
  for (const [k, v] of cl.sets) out += k + "=" + v + "\0";
  return (cl.sigCache = out);
}

/** Results depend on session settings (TimeZone, DateStyle, search_path, SETs), but not on application_name. */
export function cacheSessionKey(cl: Client): string {
  if (cl.cacheSession !== null) return cl.cacheSession;
  let s = "";
  for (const name of REPLAYED) if (name !== "application_name") s += (cl.params.get(name) ?? "") + "\0";
  for (const [k, v] of cl.sets) s += k + "=" + v + "\0";
  return (cl.cacheSession = s);
}

export function stmtKeyPrefix(cl: Client, stmt: Stmt): string {
  if (stmt.prefixGen !== cl.sessionGen) {
    stmt.prefix = cl.ctx.cachePath.cache.keyPrefix({ database: cl.database, user: cl.user, sql: stmt.query, paramTypes: stmt.paramTypes, session: cacheSessionKey(cl) });
    stmt.prefixGen = cl.sessionGen;
  }
  return stmt.prefix;
}

/** Nothing to note or settle for this statement: it may take a cache path or a lane. */
export const quietHere = (cl: Client, eff: SessionEffect) => quiet(eff, cl.ctx.functions?.safe(cl.database) ?? null);

export function createTracker(cl: Client) {
  return createSessionTracker({
    sets: cl.sets,
    reported: (name) => REPLAYED_LOWER.has(name),
    server: () => cl.server,
    changed: () => sessionChanged(cl),
    resync() {
      const s = cl.server;
      if (!s) return;
      s.sig = "";
      const sql = replaySql(s, cl.params, cl.sets);
      if (!sql) return;
      s.conn.write(encodeQuery(sql));
      s.push({ k: K.Replay, done: (error) => void (error && (s.dirty ??= "a session replay failed")) });
    },
  });
}

/** At send time: pins, effects the pooler cannot track (the connection is reset before reuse), forgotten statements. */
export function noteSend(cl: Client, s: Server, eff: SessionEffect) {
  if (eff.none) return;
  const { ctx } = cl;
  if (eff.pin && !cl.pinned) {
    cl.pinned = eff.pin;
    ctx.metrics.pinned(cl.pool!, eff.pin);
  }
  const why = untracked(eff, ctx.functions?.safe(cl.database) ?? null);
  if (why) s.dirty ??= why;
  if (eff.createsTrigger) ctx.functions?.addTrigger(cl.database, eff.createsTrigger);
  if (eff.poison) {
    cl.poisoned = s;
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
