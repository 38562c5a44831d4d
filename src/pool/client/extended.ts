// Handlers of the extended query protocol's messages on a client holding an origin connection: Parse, Bind,
// Describe, Close, Execute, Sync, Flush. Statement names are rewritten to the origin's shared names, what a
// statement does to the session is noted, and each message pushes what its answer is expected to be.
import { checkBind, decodeParse, encodeDescribe, encodeParse, F, renameBindStatement as rewriteBind } from "../../protocol/frontend.ts";
import { CLOSE_COMPLETE } from "../../protocol/backend.ts";
import { EXPECT_BIND, EXPECT_CLOSE, EXPECT_DESCRIBE, EXPECT_EXECUTE, K } from "../server/expect.ts";
import type { Server } from "../server/server.ts";
import { closePrepared, nextPrepareSeq } from "../server/statements.ts";
import { sessionEffect, type Op } from "../session.ts";
import { toOrigin } from "./client.ts";
import { noteSend } from "./settings.ts";
import { defineStatement, ensurePrepared, ensureUnnamed, evictIfFull, forwardUnnamedParse, writesOf } from "./statements.ts";
import type { Client } from "./state.ts";
import { ProtocolError } from "../../errors.ts";

const utf8 = new TextDecoder();
/** A Sync whose batch's failure the session tracker needs to hear of. */
const NO_OPS: Op[] = [];

export function onParse(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array): boolean {
  if (body[0] === 0 && cl.unnamed && Buffer.compare(cl.unnamed, raw) === 0) {
    // The same unnamed statement again (drivers without named statements do this per query): it was
    // classified already, and the origin must see the Parse anyway to replace its unnamed statement.
    return forwardUnnamedParse(cl, s, raw);
  }
  const m = decodeParse(body);
  if (m.name === "") {
    cl.unnamedEff = sessionEffect(m.query);
    cl.unnamedWrites = writesOf(cl, m.query);
    cl.unnamed = raw.slice();
    return forwardUnnamedParse(cl, s, raw);
  }
  const stmt = defineStatement(cl, m);
  // A fresh Parse is answered by the origin, never with a copy another client prepared (maybe against
  // another table of that name): an older copy on this connection is closed first.
  if (s.prepared.has(stmt.serverName)) closePrepared(s, stmt.serverName, cl.emit);
  evictIfFull(cl, s);
  stmt.parse = encodeParse({ name: stmt.serverName, query: m.query, paramTypes: m.paramTypes });
  toOrigin(cl, stmt.parse);
  s.prepared.set(stmt.serverName, nextPrepareSeq());
  s.push({ k: K.Parse, name: stmt.serverName, client: m.name });
  return true;
}

/** `wasUnsynced`: messages before this Bind still await their Sync (then it cannot be re-run alone). */
export function onBind(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array, wasUnsynced: boolean): boolean {
  const [nameStart, nameEnd] = checkBind(body);
  const bound = nameEnd === nameStart ? cl.unnamedEff : cl.stmts.get(utf8.decode(body.subarray(nameStart, nameEnd)))?.eff;
  if (bound && !bound.none) {
    noteSend(cl, s, bound);
    if (bound.ops) cl.portals.set(utf8.decode(body.subarray(0, body.indexOf(0))), bound);
  } else if (cl.portals.size) cl.portals.delete(utf8.decode(body.subarray(0, body.indexOf(0))));
  if (nameEnd === nameStart) {
    if (cl.unnamedWrites.length) cl.pendingWrites.push(...cl.unnamedWrites);
    ensureUnnamed(cl, s);
    toOrigin(cl, raw);
  } else {
    const name = utf8.decode(body.subarray(nameStart, nameEnd));
    const stmt = cl.stmts.get(name);
    const idle = s.expect.length === 0 && cl.status === 0x49 && !wasUnsynced;
    cl.retryBatch = stmt && idle && s.prepared.has(stmt.serverName) ? { stmt, serverName: stmt.serverName, bind: body, rest: [], synced: false } : null;
    if (stmt) {
      if (stmt.writes.length) cl.pendingWrites.push(...stmt.writes);
      ensurePrepared(cl, s, stmt);
      toOrigin(cl, rewriteBind(body, stmt.serverName));
      s.push({ k: K.Bind, name: stmt.serverName });
      return true;
    }
    toOrigin(cl, rewriteBind(body, `kvdrive unknown statement ${name}`));
  }
  s.push(EXPECT_BIND);
  return true;
}

/** Describe and Close name a statement ('S') or a portal ('P'). */
function target(type: number, body: Uint8Array): { kind: number | undefined; name: string } {
  const kind = body[0];
  const name = utf8.decode(body.subarray(1, body.length - 1));
  if (body[body.length - 1] !== 0 || (kind !== 0x53 && kind !== 0x50)) throw new ProtocolError(`${type === F.Close ? "Close" : "Describe"} message is malformed`);
  return { kind, name };
}

export function onDescribe(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array): boolean {
  const { kind, name } = target(F.Describe, body);
  if (kind === 0x50 || name === "") {
    if (kind === 0x53) ensureUnnamed(cl, s);
    toOrigin(cl, raw);
    s.push(EXPECT_DESCRIBE);
    return true;
  }
  const stmt = cl.stmts.get(name);
  if (stmt) {
    ensurePrepared(cl, s, stmt);
    toOrigin(cl, encodeDescribe({ kind: "S", name: stmt.serverName }));
  } else toOrigin(cl, raw);
  s.push(EXPECT_DESCRIBE);
  return true;
}

export function onClose(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array): boolean {
  const { kind, name } = target(F.Close, body);
  if (kind === 0x50 || name === "") {
    if (kind === 0x53) cl.unnamed = null;
    toOrigin(cl, raw);
    s.push(EXPECT_CLOSE);
    return true;
  }
  // The origin copy stays for other clients and the LRU; only this client's name goes.
  cl.stmts.delete(name);
  s.push({ k: K.Synth, bytes: CLOSE_COMPLETE });
  return true;
}

export function onExecute(cl: Client, s: Server, body: Uint8Array, raw: Uint8Array): boolean {
  toOrigin(cl, raw);
  const ops = cl.portals.size ? cl.portals.get(utf8.decode(body.subarray(0, body.indexOf(0))))?.ops : undefined;
  if (ops) cl.batchTracked = true;
  s.push(ops ? { k: K.Execute, ops } : EXPECT_EXECUTE);
  return true;
}

export function onSync(cl: Client, s: Server, raw: Uint8Array): boolean {
  toOrigin(cl, raw);
  const tracked = cl.batchTracked || cl.tracker.pending();
  cl.batchTracked = false;
  if (!s.copyIn) s.push(tracked ? { k: K.Sync, t: performance.now(), ops: NO_OPS } : { k: K.Sync, t: performance.now() });
  return true;
}

export function onFlush(cl: Client, raw: Uint8Array): boolean {
  toOrigin(cl, raw);
  return true;
}
