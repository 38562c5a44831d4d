// Statement classification for the query cache and the pooler, with the Postgres parser itself (libpg-query):
// is a statement a cacheable read, which tables it reads and writes, which functions it calls, whether it pins
// a session, and whether it opens or ends a transaction. Results are memoized by statement text.
//
// Table names are normalized to their bare lower-case relation name ("public.T" and "t" both become "t"):
// invalidation by relation name may drop a little more than needed, never less. '*' means "every table".
//
// The parser runs in a worker thread (parser.ts says why), started on first use: a pooler client's login or an
// HTTP SQL request.
import { parse, ParserUnavailableError, parserStarted } from "./parser.ts";

export type CacheStatus = "hit" | "miss" | "stale" | "uncacheable" | "transaction" | "volatile" | "multiplestatements" | "oversizedresult" | "disabled";
/** Why a client keeps one origin connection (classify finds the first five; session.ts adds "role" for SET ROLE and SESSION AUTHORIZATION). */
export type Pin = "listen" | "advisory" | "temp" | "holdcursor" | "prepare" | "role";

export interface Classification {
  cacheable: boolean;
  /** 'miss' for a cacheable statement (a candidate), else the reason it is not cacheable. */
  status: CacheStatus;
  readTables: string[];
  writeTables: string[];
  /** Functions called by name; the caller asks pg_proc whether they are all immutable. */
  functions: string[];
  pin?: Pin;
  txn?: "begin" | "commit" | "rollback";
  statements: number;
}

// Obviously not immutable: answered 'volatile' without asking the origin.
const VOLATILE = new Set([
  "now", "random", "nextval", "currval", "lastval", "setval", "pg_sleep", "clock_timestamp", "statement_timestamp", "transaction_timestamp",
  "timeofday", "gen_random_uuid", "uuid_generate_v4", "txid_current", "pg_current_xact_id", "pg_backend_pid", "current_setting", "set_config",
  "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "pg_try_advisory_xact_lock",
  "pg_notify", "random_normal", "setseed", "inet_client_addr", "pg_postmaster_start_time", "age",
]);
const SESSION_ADVISORY = new Set(["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"]);
const WRITES = new Set(["InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"]);
// Statements that change no table data (their effects are on the session or on nothing).
const NO_WRITES = new Set([
  "SelectStmt", "VariableSetStmt", "VariableShowStmt", "ListenStmt", "UnlistenStmt", "NotifyStmt", "DiscardStmt", "FetchStmt", "ClosePortalStmt",
  "VacuumStmt", "CheckPointStmt", "LockStmt", "DeallocateStmt", "TransactionStmt", "PrepareStmt", "DeclareCursorStmt", "ExplainStmt",
  "IndexStmt", "CreateSchemaStmt", "CreateSeqStmt", "CommentStmt", "GrantStmt", "GrantRoleStmt", "CreateRoleStmt", "CreateFunctionStmt",
  "CreateExtensionStmt", "ViewStmt", "CreateTableAsStmt", "CreateStmt", "ReindexStmt", "ClusterStmt", "LoadStmt", "ConstraintsSetStmt",
]);
const CACHEABLE_TOPS = new Set(["SelectStmt"]);

// The memo is a least-recently-used map bounded in bytes (statement text, UTF-16, plus an estimate for the
// verdict), so a client sending endless distinct statements cannot grow it, and popular ones stay.
const MEMO_MAX_BYTES = 8 * 1024 * 1024;
const MEMO_MAX_SQL = 16 * 1024;
const MEMO_ENTRY_OVERHEAD = 200;
const memo = new Map<string, { c: Classification; bytes: number }>();
let memoBytes = 0;

const verdictBytes = (c: Classification) => {
  let n = MEMO_ENTRY_OVERHEAD;
  for (const list of [c.readTables, c.writeTables, c.functions]) for (const t of list) n += 2 * t.length + 16;
  return n;
};

/** Bytes the memo holds now (statement text and verdicts), for tests. */
export const memoSize = () => ({ entries: memo.size, bytes: memoBytes });

const relName = (rv: any): string => String(rv?.relname ?? "").toLowerCase();
const isCatalog = (rv: any) => {
  const schema = String(rv?.schemaname ?? "").toLowerCase();
  const name = relName(rv);
  return schema === "pg_catalog" || schema === "information_schema" || name.startsWith("pg_");
};

interface Walk {
  reads: Set<string>;
  functions: Set<string>;
  catalog: boolean;
  temp: boolean;
  volatileSyntax: boolean;
  writesInside: boolean;
  locking: boolean;
  into: boolean;
  advisory: boolean;
  cteNames: Set<string>;
}

function walk(node: unknown, w: Walk) {
  if (Array.isArray(node)) {
    for (const n of node) walk(n, w);
    return;
  }
  if (node === null || typeof node !== "object") return;
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    switch (k) {
      case "RangeVar": {
        const rv = v as any;
        if (isCatalog(rv)) w.catalog = true;
        if (String(rv.schemaname ?? "").toLowerCase() === "pg_temp" || rv.relpersistence === "t") w.temp = true;
        w.reads.add(relName(rv));
        break;
      }
      case "FuncCall": {
        const names = ((v as any).funcname ?? []).map((n: any) => String(n?.String?.sval ?? ""));
        const name = String(names[names.length - 1] ?? "").toLowerCase();
        if (name) w.functions.add(name);
        if (SESSION_ADVISORY.has(name)) w.advisory = true;
        break;
      }
      case "SQLValueFunction":
      case "NextValueExpr":
        w.volatileSyntax = true;
        break;
      case "CommonTableExpr":
        w.cteNames.add(String((v as any).ctename ?? "").toLowerCase());
        break;
      case "lockingClause":
        if (Array.isArray(v) && v.length) w.locking = true;
        break;
      case "intoClause":
        if (v) w.into = true;
        break;
    }
    if (WRITES.has(k)) w.writesInside = true;
    walk(v, w);
  }
}

function writesOf(type: string, body: any, w: Walk): string[] {
  switch (type) {
    case "InsertStmt":
    case "UpdateStmt":
    case "DeleteStmt":
    case "MergeStmt":
      return [relName(body.relation)];
    case "TruncateStmt":
      return (body.relations ?? []).map((r: any) => relName(r.RangeVar));
    case "CopyStmt":
      return body.is_from && body.relation ? [relName(body.relation)] : [];
    case "AlterTableStmt":
    case "RenameStmt":
    case "RuleStmt":
    case "CreateTrigStmt":
    case "AlterObjectSchemaStmt":
      return body.relation ? [relName(body.relation)] : ["*"];
    case "DropStmt":
      if (["OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE"].includes(body.removeType)) {
        return (body.objects ?? []).map((o: any) => {
          const items = o?.List?.items ?? [];
          return String(items[items.length - 1]?.String?.sval ?? "*").toLowerCase();
        });
      }
      return body.removeType === "OBJECT_INDEX" || body.removeType === "OBJECT_SEQUENCE" ? [] : ["*"];
    case "RefreshMatViewStmt":
      return [relName(body.relation)];
    case "CreateTableAsStmt":
      return [relName(body.into?.rel)];
    case "SelectStmt":
      // Data-modifying CTEs and SELECT INTO write; their targets are collected by a walk of the statement.
      return w.writesInside || w.into ? collectWriteTargets(body) : [];
    default:
      return NO_WRITES.has(type) ? (w.writesInside ? collectWriteTargets(body) : []) : ["*"];
  }
}

function collectWriteTargets(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) {
    for (const n of node) collectWriteTargets(n, out);
  } else if (node && typeof node === "object") {
    for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
      if (WRITES.has(k)) out.push(relName((v as any).relation));
      if (k === "intoClause" && v) out.push(relName((v as any).rel));
      collectWriteTargets(v, out);
    }
  }
  return out;
}

function classifyParsed(stmts: Array<{ stmt: Record<string, unknown> }>): Classification {
  const reads = new Set<string>();
  const writes = new Set<string>();
  const functions = new Set<string>();
  let pin: Pin | undefined;
  let txn: Classification["txn"];
  let status: CacheStatus = "miss";
  const fail = (s: CacheStatus) => {
    if (status === "miss") status = s;
  };

  for (const { stmt } of stmts) {
    const [type, body] = Object.entries(stmt)[0] as [string, any];
    const w: Walk = { reads: new Set(), functions: new Set(), catalog: false, temp: false, volatileSyntax: false, writesInside: false, locking: false, into: false, advisory: false, cteNames: new Set() };
    walk(body, w);
    for (const t of writesOf(type, body, w)) writes.add(t);
    for (const t of w.reads) if (!w.cteNames.has(t)) reads.add(t);
    for (const f of w.functions) functions.add(f);

    if (type === "ListenStmt") pin ??= "listen";
    else if (type === "PrepareStmt") pin ??= "prepare";
    else if (type === "DeclareCursorStmt" && ((body.options ?? 0) & 0x20) !== 0) pin ??= "holdcursor";
    else if ((type === "CreateStmt" && body.relation?.relpersistence === "t") || (type === "CreateTableAsStmt" && body.into?.rel?.relpersistence === "t")) pin ??= "temp";
    if (w.advisory) pin ??= "advisory";

    if (type === "TransactionStmt") {
      const kind = body.kind as string;
      if (kind === "TRANS_STMT_BEGIN" || kind === "TRANS_STMT_START") txn = "begin";
      else if (kind === "TRANS_STMT_COMMIT") txn = "commit";
      else if (kind === "TRANS_STMT_ROLLBACK") txn = "rollback";
    }

    if (!CACHEABLE_TOPS.has(type) || w.writesInside || w.into || w.locking || w.catalog || w.temp) fail("uncacheable");
    else if (w.volatileSyntax || [...w.functions].some((f) => VOLATILE.has(f))) fail("volatile");
  }
  if (stmts.length > 1) status = "multiplestatements";
  if (stmts.length === 0) status = "uncacheable";
  return {
    cacheable: status === "miss",
    status,
    readTables: [...reads],
    writeTables: [...writes],
    functions: [...functions],
    ...(pin ? { pin } : {}),
    ...(txn ? { txn } : {}),
    statements: stmts.length,
  };
}

// The last few parse trees, by text: the pooler's session analysis (src/pool/session.ts) reads the same statement
// right before or after this classifier does, and a parse costs more than both analyses together.
const RECENT_MAX = 16;
const recent = new Map<string, Array<{ stmt: Record<string, unknown> }> | Error>();

/** The statements of `sql` as the Postgres parser reads them; throws the parser's error. */
export function parseStatements(sql: string): Array<{ stmt: Record<string, unknown> }> {
  if (sql === "") return [];
  let got = recent.get(sql);
  if (got === undefined) {
    try {
      got = parse(sql);
    } catch (e) {
      if (e instanceof ParserUnavailableError) throw e;
      got = e as Error;
    }
    if (sql.length <= MEMO_MAX_SQL) {
      if (recent.size >= RECENT_MAX) recent.delete(recent.keys().next().value as string);
      recent.set(sql, got);
    }
  }
  if (got instanceof Error) throw got;
  return got;
}

export function classify(sql: string): Classification {
  const hit = memo.get(sql);
  if (hit) {
    // Recency: the Map's order is the LRU order.
    memo.delete(sql);
    memo.set(sql, hit);
    return hit.c;
  }
  let c: Classification;
  try {
    c = classifyParsed(parseStatements(sql));
  } catch (e) {
    // Unparseable here: the origin will report the syntax error. Nothing to cache, and we cannot tell what it writes.
    c = { cacheable: false, status: "uncacheable", readTables: [], writeTables: ["*"], functions: [], statements: 1 };
    if (e instanceof ParserUnavailableError) {
      if (!parserStarted()) throw e; // a caller that skipped parserReady(): a bug
      return c; // the parser is being replaced: this verdict is not remembered
    }
  }
  if (sql.length <= MEMO_MAX_SQL) {
    const bytes = 2 * sql.length + verdictBytes(c);
    memo.set(sql, { c, bytes });
    memoBytes += bytes;
    for (const [k, e] of memo) {
      if (memoBytes <= MEMO_MAX_BYTES) break;
      memo.delete(k);
      memoBytes -= e.bytes;
    }
  }
  return c;
}
