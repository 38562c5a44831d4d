// Runs statements for the HTTP /sql endpoint on the same pools as wire clients: extended protocol with
// text parameters and text results, one Sync for a transaction (an implicit transaction block) or one per
// statement otherwise. Results are collected in memory, so they are bounded by KVDRIVE_PG_MAX_MESSAGE_BYTES.
import { type OriginError, PoolerError } from "../errors.ts";
import { createFrames } from "../protocol/frames.ts";
import { encodeBind, encodeDescribe, encodeExecute, encodeParse, encodeQuery, SYNC } from "../protocol/frontend.ts";
import { B, decodeCommandComplete, decodeDataRow, decodeErrorResponse, decodeRowDescription } from "../protocol/backend.ts";
import { K } from "./server/expect.ts";
import { replaySql } from "./server/replay.ts";
import type { Owner, Server } from "./server/server.ts";
import type { Pool } from "./pool.ts";
import type { PoolerContext } from "./context.ts";
import { recordQuery } from "./cache/cache-path.ts";
import { parserLoaded, parserReady } from "./cache/parser.ts";
import { quiet, sessionEffect } from "./session.ts";

export interface ExecuteRequest {
  database: string;
  user: string;
  statements: Array<{ sql: string; params?: unknown[] }>;
  /** Run all statements in one transaction (all or nothing). */
  transaction: boolean;
}

export interface ExecuteResult {
  command: string;
  rowCount: number | null;
  fields: Array<{ name: string; dataTypeID: number }>;
  rows: Array<Array<string | null>>;
  cache: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A JavaScript value as a text-format parameter. */
export function textParam(v: unknown): Uint8Array | null {
  if (v === null || v === undefined) return null;
  if (v instanceof Uint8Array) return encoder.encode("\\x" + Buffer.from(v).toString("hex"));
  if (v instanceof Date) return encoder.encode(v.toISOString());
  if (typeof v === "object") return encoder.encode(JSON.stringify(v));
  return encoder.encode(String(v));
}

/** "INSERT 0 3" -> ["INSERT", 3]; "CREATE TABLE" -> ["CREATE TABLE", null]. */
export function parseTag(tag: string): { command: string; rowCount: number | null } {
  const m = /^(.*?)((?: \d+)+)$/.exec(tag);
  if (!m) return { command: tag, rowCount: null };
  const nums = m[2]!.trim().split(" ");
  return { command: m[1]!, rowCount: Number(nums[nums.length - 1]) };
}

function acquire(pool: Pool): Promise<Server> {
  return new Promise((resolve, reject) => pool.acquire({ grant: resolve, fail: (e: OriginError) => reject(new PoolerError(e.message, e.code)) }));
}

export async function executeStatements(pool: Pool, params: () => Map<string, string>, req: ExecuteRequest, ctx: PoolerContext): Promise<ExecuteResult[]> {
  if (!req.statements.length) return [];
  if (!parserLoaded()) await parserReady();
  const cp = ctx.cachePath;
  if (!cp) return run(pool, params, req, ctx, "disabled");
  if (!ctx.cacheOn(req.database)) return run(pool, params, req, ctx, "disabled");
  const classes = req.statements.map((s) => {
    try {
      return cp.classify(s.sql);
    } catch {
      return null;
    }
  });
  const writes = classes.flatMap((c) => c?.writeTables ?? []);
  const one = classes.length === 1 ? classes[0] : null;
  const volatile = one?.cacheable && one.functions.length ? await cp.cache.isVolatile(req.database, one.functions).catch(() => true) : false;
  if (!req.transaction && one?.cacheable && !one.pin && !volatile) {
    const stmt = req.statements[0]!;
    const bindParams = (stmt.params ?? []).map(textParam);
    const key = { database: req.database, user: req.user, sql: stmt.sql, params: bindParams, paramFormats: [], resultFormats: [], session: "" };
    const r = await cp.cache
      .lookup(key, one.readTables, () => recordQuery(pool, params(), new Map(), stmt.sql, bindParams, ctx.config.queryCacheMaxResultBytes))
      .catch(() => null);
    if (r?.messages.length) {
      ctx.metrics.cacheStatus(pool, r.status);
      return [decodeRecorded(r.messages, r.status)];
    }
  }
  const status = req.transaction ? "transaction" : classes.length > 1 ? "multiplestatements" : volatile ? "volatile" : (one?.status ?? "uncacheable");
  const out = await run(pool, params, req, ctx, status);
  for (let i = 0; i < out.length; i++) ctx.metrics.cacheStatus(pool, out[i]!.cache);
  if (writes.length) cp.cache.invalidate(req.database, writes);
  return out;
}

/** A cached response (RowDescription, DataRows, CommandComplete) as an ExecuteResult. */
function decodeRecorded(messages: Uint8Array[], cache: string): ExecuteResult {
  const r: ExecuteResult = { command: "", rowCount: null, fields: [], rows: [], cache };
  // The recorder keeps an answer's messages in one buffer (cache-path.ts): split it by their lengths.
  const frames = createFrames(Number.MAX_SAFE_INTEGER);
  for (const m of messages) {
    frames.push(m, (type, body) => {
      if (type === B.RowDescription) r.fields = decodeRowDescription(body).map((f) => ({ name: f.name, dataTypeID: f.typeOid }));
      else if (type === B.DataRow) r.rows.push(decodeDataRow(body).map((v) => (v === null ? null : decoder.decode(v))));
      else if (type === B.CommandComplete) Object.assign(r, parseTag(decodeCommandComplete(body)));
      return true;
    });
  }
  return r;
}

async function run(pool: Pool, params: () => Map<string, string>, req: ExecuteRequest, ctx: PoolerContext, cache: string): Promise<ExecuteResult[]> {
  const limit = ctx.config.pgMaxMessageBytes;
  const server = await acquire(pool);
  const results: ExecuteResult[] = [];
  let current: ExecuteResult | null = null;
  let error: PoolerError | null = null;
  let bytes = 0;
  const frames = createFrames(limit);

  return new Promise<ExecuteResult[]>((resolve, reject) => {
    let finished = false;
    const finish = (reusable: boolean) => {
      if (finished) return;
      finished = true;
      server.owner = null;
      pool.release(server, reusable);
      if (error) reject(error);
      else resolve(results);
    };
    const onMessage = (type: number, body: Uint8Array) => {
      switch (type) {
        case B.RowDescription:
          current ??= { command: "", rowCount: null, fields: [], rows: [], cache };
          current.fields = decodeRowDescription(body).map((f) => ({ name: f.name, dataTypeID: f.typeOid }));
          break;
        case B.NoData:
          current ??= { command: "", rowCount: null, fields: [], rows: [], cache };
          break;
        case B.DataRow:
          bytes += body.length;
          if (bytes > limit && !error) error = new PoolerError(`result exceeds ${limit} bytes (KVDRIVE_PG_MAX_MESSAGE_BYTES)`, "54000");
          if (!error) current!.rows.push(decodeDataRow(body).map((v) => (v === null ? null : decoder.decode(v))));
          break;
        case B.CommandComplete:
        case B.EmptyQueryResponse: {
          const r: ExecuteResult = current ?? { command: "", rowCount: null, fields: [], rows: [], cache };
          if (type === B.CommandComplete) Object.assign(r, parseTag(decodeCommandComplete(body)));
          results.push(r);
          current = null;
          break;
        }
        case B.ErrorResponse: {
          const f = decodeErrorResponse(body);
          error ??= new PoolerError(f.M ?? "query failed", f.C ?? "XX000", f);
          current = null;
          break;
        }
      }
    };
    const owner: Owner = {
      send: (b) => frames.push(b, onMessage),
      backpressured: () => false,
      parameterStatus() {},
      idle: () => finish(true),
      completed(e, type) {
        if (e.k === K.Execute) ctx.metrics.queries(pool);
        if (type === B.ReadyForQuery && e.k === K.Sync && e.t !== undefined) ctx.metrics.latency(pool, performance.now() - e.t);
      },
      planChanged: () => null,
      serverClosed() {
        error ??= new PoolerError("the origin connection closed during the query", "08006");
        finish(false);
      },
      serverDrained() {},
    };
    server.owner = owner;
    const parts: Uint8Array[] = [];
    // A previous user may have left different session settings: put the defaults back first.
    const replay = replaySql(server, params(), new Map());
    server.sig = "";
    if (replay) {
      parts.push(encodeQuery(replay));
      server.push({ k: K.Replay });
    }
    server.unnamedOwner = 0; // the unnamed statement is about to be replaced
    // HTTP SQL keeps no session: whatever it changes is reset before a pooled client gets the connection.
    const safe = ctx.functions?.safe(req.database) ?? null;
    if (req.statements.some((st) => !quiet(sessionEffect(st.sql), safe))) server.dirty ??= "HTTP SQL with session effects";
    for (const stmt of req.statements) {
      parts.push(encodeParse({ name: "", query: stmt.sql, paramTypes: [] }));
      server.push({ k: K.Parse });
      parts.push(encodeBind({ portal: "", statement: "", paramFormats: [], params: (stmt.params ?? []).map(textParam), resultFormats: [] }));
      server.push({ k: K.Bind });
      parts.push(encodeDescribe({ kind: "P", name: "" }));
      server.push({ k: K.Describe });
      parts.push(encodeExecute(""));
      server.push({ k: K.Execute });
      if (!req.transaction) {
        parts.push(SYNC);
        server.push({ k: K.Sync, t: performance.now() });
      }
    }
    if (req.transaction) {
      parts.push(SYNC);
      server.push({ k: K.Sync, t: performance.now() });
    }
    server.conn.write(Buffer.concat(parts));
  });
}
