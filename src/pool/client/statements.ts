// A client's prepared statements: their names mapped to the origin's shared names (the same on every
// connection, so they survive moving between connections), their bounds, and the client's unnamed statement,
// prepared again on whichever connection it is next used.
import { encodeClose } from "../../protocol/frontend.ts";
import type { Classification } from "../cache/classify.ts";
import { EXPECT_CLOSE_HIDDEN, EXPECT_PARSE, K } from "../server/expect.ts";
import type { Server } from "../server/server.ts";
import { evictPrepared, nextPrepareSeq, prepareOn } from "../server/statements.ts";
import { sessionEffect } from "../session.ts";
import { toOrigin } from "./client.ts";
import type { Client, Statements, Stmt } from "./state.ts";
import { ProtocolError } from "../../errors.ts";

/**
 * What a prepared statement holds in the pooler, roughly: its text about three times (its key, its Parse,
 * its cache key prefix), its parameter types, and the objects around them.
 */
const statementBytes = (s: { query: string; paramTypes: number[] }) => 256 + 3 * s.query.length + 8 * s.paramTypes.length;

/** A client's prepared statements by name, with their size (bounded by KVDRIVE_POOL_MAX_PREPARED_BYTES). */
export class StatementMap extends Map<string, Stmt> implements Statements {
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

/** A named Parse: bounded by 16 x KVDRIVE_POOL_PREPARED_STATEMENTS (54000) and KVDRIVE_POOL_MAX_PREPARED_BYTES (53400). */
export function defineStatement(cl: Client, m: { name: string; query: string; paramTypes: number[] }): Stmt {
  const { cfg, stmts } = cl;
  if (stmts.size >= cfg.poolMaxPreparedStatements * 16 && !stmts.has(m.name)) {
    throw new ProtocolError(`client has more than ${cfg.poolMaxPreparedStatements * 16} prepared statements (16 x KVDRIVE_POOL_PREPARED_STATEMENTS)`, "54000");
  }
  const old = stmts.get(m.name);
  const total = stmts.bytes - (old ? statementBytes(old) : 0) + statementBytes(m);
  if (total > cfg.poolMaxPreparedBytes) {
    throw new ProtocolError(`prepared statements of this client would hold ${total} bytes, over the limit of ${cfg.poolMaxPreparedBytes} (KVDRIVE_POOL_MAX_PREPARED_BYTES); close some first`, "53400");
  }
  const stmt = makeStatement(cl, m);
  stmts.set(m.name, stmt);
  return stmt;
}

export function makeStatement(cl: Client, m: { query: string; paramTypes: number[] }): Stmt {
  const k = m.query + "\0" + m.paramTypes.join(",");
  const cls = classifyOrNull(cl, m.query);
  return { key: k, query: m.query, paramTypes: m.paramTypes, serverName: cl.ctx.statementName(k), parse: null, parsedAt: nextPrepareSeq(), writes: cls?.writeTables ?? [], eff: sessionEffect(m.query), cls, prefix: "", prefixGen: -1, nameBytes: null, bindExpect: null };
}

export function classifyOrNull(cl: Client, sql: string): Classification | null {
  try {
    return cl.ctx.cachePath.classify(sql);
  } catch {
    return null;
  }
}

/** Tables a statement writes, by the shared classifier; none without it (then there is no cache either). */
export const writesOf = (cl: Client, sql: string): string[] => classifyOrNull(cl, sql)?.writeTables ?? [];

/** Makes sure the origin connection has a client statement prepared, injecting a hidden Parse if not. */
export const ensurePrepared = (cl: Client, s: Server, stmt: Stmt) => prepareOn(s, stmt, cl.cfg.poolMaxPreparedStatements, cl.emit);

export const evictIfFull = (cl: Client, s: Server) => evictPrepared(s, cl.cfg.poolMaxPreparedStatements, cl.emit);

/** The connection holds the client's unnamed statement before a Bind or Describe of it (or none, as directly). */
export function ensureUnnamed(cl: Client, s: Server) {
  if (s.unnamedOwner === cl.id && s.unnamedSeq === cl.unnamedSeq) return;
  if (cl.unnamed) {
    toOrigin(cl, cl.unnamed);
    s.push({ k: K.ParseHidden });
    s.unnamedOwner = cl.id;
    s.unnamedSeq = cl.unnamedSeq;
  } else {
    // Another client's unnamed statement may sit there: drop it so this Bind fails as it would directly.
    toOrigin(cl, encodeClose({ kind: "S", name: "" }));
    s.push(EXPECT_CLOSE_HIDDEN);
    s.unnamedOwner = 0;
  }
}

/** The origin must see every unnamed Parse (it replaces its unnamed statement); the client owns it until the next. */
export function forwardUnnamedParse(cl: Client, s: Server, raw: Uint8Array): true {
  cl.unnamedSeq++;
  s.unnamedOwner = cl.id;
  s.unnamedSeq = cl.unnamedSeq;
  toOrigin(cl, raw);
  s.push(EXPECT_PARSE);
  return true;
}
