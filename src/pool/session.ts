// What a statement string does to session state, the part transaction pooling must know about, read from the
// Postgres parser's tree (libpg-query), memoized by text:
// - session-only features that pin a client to its origin connection (LISTEN, session advisory locks, temp
//   objects, WITH HOLD cursors, SQL PREPARE, SET ROLE / SESSION AUTHORIZATION);
// - per statement, the session SETs and RESETs to track and replay (rebuilt from the tree: the name quoted as an
//   identifier, the values as literals) and the transaction commands that decide whether they last;
// - effects that cannot be known (set_config, DO, CALL, functions that are not known builtins, ...): the
//   connection is then reset before anyone else gets it (RESET_SQL), or closed when even that cannot undo them.
// A false "pin" or "unknown" costs only pooling efficiency; a missed one would leak one client's state to another,
// so whatever is not understood counts as unknown.
import { parseStatements, type Pin } from "./cache/classify.ts";
import { ParserUnavailableError, parserStarted } from "./cache/parser.ts";
import { B, decodeDataRow, decodeErrorResponse } from "../protocol/backend.ts";
import { createFrames } from "../protocol/frames.ts";
import { encodeQuery } from "../protocol/frontend.ts";
import type { OriginConn } from "./server/origin.ts";

/** One statement's effect on the session, in the order of the string. */
export type Op =
  | { k: "set"; name: string; sql: string }
  | { k: "reset"; name: string }
  | { k: "resetall" }
  | { k: "begin" }
  | { k: "commit"; chain: boolean }
  | { k: "rollback"; chain: boolean }
  | { k: "savepoint"; name: string }
  | { k: "release"; name: string }
  | { k: "rollbackto"; name: string }
  | { k: "other" };

export interface SessionEffect {
  /** No pin, nothing to track, nothing unknown, no function to check: the common case. */
  none: boolean;
  pin?: Pin;
  /** One entry per statement, or null when no statement sets, resets or controls a transaction. */
  ops: Op[] | null;
  /** Why the statement's effect on the session cannot be known: the connection is reset before reuse. */
  unknown?: string;
  /** Why a reset cannot undo it (LOAD): the connection is closed instead of reused. */
  poison?: string;
  /** Functions called that are not known to leave the session alone unless they are builtins of the origin. */
  functions: string[];
  /** DISCARD ALL / DEALLOCATE: the origin forgot prepared statements the pooler made. */
  forgetsStatements?: boolean;
  /** Only transaction control (BEGIN, COMMIT, ...): from an idle client, nothing for the tracker to follow. */
  txOnly?: boolean;
  /** Tables it writes (lower-case names): a trigger on one of them may change the session (TRIGGER_PREFIX in the catalog). */
  writes?: string[];
  /** CREATE TRIGGER on this table: from now on its writes count as unknown. */
  createsTrigger?: string;
}

const quoteIdent = (s: string) => '"' + s.replace(/"/g, '""') + '"';
export const quoteLiteral = (s: string) => "'" + s.replace(/'/g, "''") + "'";

/** A session SET rebuilt from its name and values: never the client's text. */
export const setSql = (name: string, values: string[]) => `SET ${quoteIdent(name)} TO ${values.map(quoteLiteral).join(", ")}`;
export const resetSql = (name: string) => `RESET ${quoteIdent(name)}`;
/** A start-up setting: set_config reads the value as the start-up packet's would be read (a list for search_path). */
export const setConfigSql = (name: string, value: string) => `SELECT pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`;

/**
 * Brings a connection back to a fresh session without forgetting the protocol-level statements the pooler
 * prepared there (its own per-connection list stays true): authorization first, since SET SESSION AUTHORIZATION
 * and SET ROLE limit what RESET ALL may do; then SQL-level prepared statements (from_sql) only.
 */
export const RESET_SQL = [
  "SET SESSION AUTHORIZATION DEFAULT",
  "RESET ROLE",
  "RESET ALL",
  "UNLISTEN *",
  "SELECT pg_catalog.pg_advisory_unlock_all()",
  "CLOSE ALL",
  "DISCARD TEMP",
  "DISCARD SEQUENCES",
  "DO $kvdrive$DECLARE n text; BEGIN FOR n IN SELECT name FROM pg_catalog.pg_prepared_statements WHERE from_sql LOOP EXECUTE 'DEALLOCATE ' || pg_catalog.quote_ident(n); END LOOP; END$kvdrive$",
].join("; ");

/** Startup parameter and GUC names Postgres accepts: identifier characters, dotted for custom settings. */
export const VALID_NAME = /^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)*$/;

// Builtins that change the session beyond the statement: never counted as known-safe.
const SESSION_FUNCTIONS = new Set([
  "set_config", "setseed", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
  "pg_replication_origin_session_setup", "pg_replication_origin_xact_setup", "pg_create_logical_replication_slot", "pg_create_physical_replication_slot",
  "dblink_connect", "dblink_connect_u", "lo_open", "pg_stat_force_next_flush",
  // Builtins that run SQL given as text: what that SQL does is not seen.
  "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "ts_stat",
]);
const SESSION_ADVISORY = new Set(["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"]);

// Statements whose only session effects are the ones read below (pins, temp objects); anything else is unknown.
const KNOWN = new Set([
  "SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "VariableShowStmt", "NotifyStmt", "UnlistenStmt", "FetchStmt",
  "ClosePortalStmt", "VacuumStmt", "CheckPointStmt", "LockStmt", "ExplainStmt", "IndexStmt", "CreateSchemaStmt", "CreateSeqStmt", "AlterSeqStmt",
  "CommentStmt", "GrantStmt", "GrantRoleStmt", "CreateRoleStmt", "AlterRoleStmt", "DropRoleStmt", "CreateFunctionStmt", "CreateExtensionStmt",
  "ViewStmt", "CreateTableAsStmt", "CreateStmt", "ReindexStmt", "ClusterStmt", "ConstraintsSetStmt", "TruncateStmt", "CopyStmt", "AlterTableStmt",
  "RenameStmt", "RuleStmt", "CreateTrigStmt", "AlterObjectSchemaStmt", "DropStmt", "RefreshMatViewStmt", "CreateEnumStmt", "CompositeTypeStmt",
  "AlterEnumStmt", "DefineStmt", "CreateDomainStmt", "AlterDomainStmt", "CreatedbStmt", "DropdbStmt", "AlterOwnerStmt", "CreatePolicyStmt",
  "AlterPolicyStmt", "CreatePublicationStmt", "AlterPublicationStmt", "CreateStatsStmt", "AlterFunctionStmt", "DeclareCursorStmt", "ListenStmt",
  "PrepareStmt", "DeallocateStmt", "DiscardStmt", "TransactionStmt", "VariableSetStmt", "AlterDefaultPrivilegesStmt", "SecLabelStmt",
  "CreateTableSpaceStmt", "DropOwnedStmt", "ReassignOwnedStmt", "AlterTSConfigurationStmt", "AlterTSDictionaryStmt", "ImportForeignSchemaStmt",
  "CreateForeignTableStmt", "CreateCastStmt", "CreateOpClassStmt", "CreateConversionStmt", "CreateTransformStmt", "AlterDatabaseSetStmt",
  "AlterRoleSetStmt", "AlterSystemStmt", "AlterCollationStmt", "AlterStatsStmt", "CreateEventTrigStmt", "AlterEventTrigStmt", "CreatePLangStmt",
]);

const NONE_OPS: Op = { k: "other" };
const TX_OPS = new Set<Op["k"]>(["begin", "commit", "rollback", "savepoint", "release", "rollbackto"]);
const EMPTY: SessionEffect = { none: true, ops: null, functions: [] };

// Cheap prefilter: text without any of these words cannot set, reset, pin, call or end anything we track.
const QUICK = /set|reset|listen|advisory|temp|hold|prepare|deallocate|discard|role|authoriz|do|call|load|execute|begin|start|commit|end|abort|rollback|savepoint|release|\(/i;

const MEMO_MAX = 20_000;
const MEMO_MAX_SQL = 16 * 1024;
const memo = new Map<string, SessionEffect>();
// The oldest entry is dropped through one iterator kept across drops: every entry before it is gone already, so
// a drop costs O(1) (a fresh keys().next() steps over every deleted entry still in the table: 14 µs at 20,000).
let memoOldest = memo.keys();

export function sessionEffect(sql: string): SessionEffect {
  if (!QUICK.test(sql)) return EMPTY;
  const hit = memo.get(sql);
  if (hit) return hit;
  let eff: SessionEffect;
  try {
    eff = analyse(parseStatements(sql).map((s) => s.stmt ?? {}));
  } catch (e) {
    // Unparseable here: the origin rejects it too. Nothing runs, but nothing is assumed either.
    eff = { none: false, ops: null, functions: [], unknown: "unparsed statement" };
    if (e instanceof ParserUnavailableError) {
      if (!parserStarted()) throw e; // a caller that skipped parserReady(): a bug
      return eff; // the parser is being replaced: this verdict is not remembered
    }
  }
  if (sql.length <= MEMO_MAX_SQL) {
    if (memo.size >= MEMO_MAX) {
      let r = memoOldest.next();
      if (r.done) r = (memoOldest = memo.keys()).next();
      memo.delete(r.value as string);
    }
    memo.set(sql, eff);
  }
  return eff;
}

interface Acc {
  writes?: string[];
  createsTrigger?: string;
  pin?: Pin;
  unknown?: string;
  poison?: string;
  functions: Set<string>;
  forgets: boolean;
  advisory: boolean;
  temp: boolean;
}

function analyse(stmts: Array<Record<string, any>>): SessionEffect {
  const acc: Acc = { functions: new Set(), forgets: false, advisory: false, temp: false };
  const ops: Op[] = [];
  let tracked = false;
  for (const stmt of stmts) {
    const [type, body] = (Object.entries(stmt)[0] ?? ["", {}]) as [string, any];
    const op = statementOp(type, body, acc);
    if (op.k !== "other") tracked = true;
    ops.push(op);
    walk(body, acc);
  }
  if (acc.advisory) acc.pin ??= "advisory";
  if (acc.temp) acc.pin ??= "temp";
  const functions = [...acc.functions];
  const eff: SessionEffect = { none: !tracked && !acc.pin && !acc.unknown && !acc.poison && !acc.forgets && functions.length === 0 && !acc.writes && !acc.createsTrigger, ops: tracked ? ops : null, functions };
  if (acc.writes) eff.writes = acc.writes;
  if (acc.createsTrigger) eff.createsTrigger = acc.createsTrigger;
  if (acc.pin) eff.pin = acc.pin;
  if (acc.unknown) eff.unknown = acc.unknown;
  if (acc.poison) eff.poison = acc.poison;
  if (acc.forgets) eff.forgetsStatements = true;
  if (tracked && !acc.pin && !acc.unknown && !acc.poison && !acc.forgets && !functions.length && !acc.writes && ops.every((o) => TX_OPS.has(o.k))) eff.txOnly = true;
  return eff.none ? EMPTY : eff;
}

function constValue(n: any): string | null {
  const c = n?.A_Const;
  if (!c) return null;
  if (c.sval) return String(c.sval.sval ?? "");
  if (c.ival) return String(c.ival.ival ?? 0);
  if (c.fval) return String(c.fval.fval ?? "0");
  if (c.boolval) return c.boolval.boolval ? "on" : "off";
  return null; // NULL or a bit string
}

const relname = (rv: any) => String(rv?.relname ?? "").toLowerCase();
const written = (acc: Acc, name: string) => void (name && (acc.writes ??= []).push(name));

function statementOp(type: string, body: any, acc: Acc): Op {
  switch (type) {
    case "InsertStmt":
    case "UpdateStmt":
    case "DeleteStmt":
    case "MergeStmt":
      written(acc, relname(body.relation));
      return NONE_OPS;
    case "CopyStmt":
      if (body.is_from) written(acc, relname(body.relation));
      return NONE_OPS;
    case "TruncateStmt":
      for (const r of body.relations ?? []) written(acc, relname(r.RangeVar));
      return NONE_OPS;
    case "CreateTrigStmt":
      acc.createsTrigger = relname(body.relation);
      return NONE_OPS;
    case "VariableSetStmt": {
      const name = String(body.name ?? "").toLowerCase();
      if (body.is_local) return NONE_OPS; // lasts to the end of the transaction
      switch (body.kind) {
        case "VAR_RESET_ALL":
          return { k: "resetall" };
        case "VAR_RESET":
        case "VAR_SET_DEFAULT":
          if (name === "role" || name === "session_authorization") return (acc.pin ??= "role"), NONE_OPS;
          return { k: "reset", name };
        case "VAR_SET_VALUE": {
          if (name === "role" || name === "session_authorization") return (acc.pin ??= "role"), NONE_OPS;
          const values = (body.args ?? []).map(constValue);
          if (!VALID_NAME.test(name) || !values.length || values.some((v: string | null) => v === null)) {
            acc.unknown ??= `SET ${name} with a value that cannot be replayed`;
            return NONE_OPS;
          }
          return { k: "set", name, sql: setSql(name, values) };
        }
        default:
          // SET TRANSACTION lasts one transaction; SET ... FROM CURRENT and SESSION CHARACTERISTICS are not replayed.
          if (body.kind === "VAR_SET_MULTI" && name === "transaction") return NONE_OPS;
          acc.unknown ??= `SET ${name} (${body.kind})`;
          return NONE_OPS;
      }
    }
    case "TransactionStmt":
      switch (body.kind) {
        case "TRANS_STMT_BEGIN":
        case "TRANS_STMT_START":
          return { k: "begin" };
        case "TRANS_STMT_COMMIT":
          return { k: "commit", chain: !!body.chain };
        case "TRANS_STMT_ROLLBACK":
          return { k: "rollback", chain: !!body.chain };
        case "TRANS_STMT_SAVEPOINT":
          return { k: "savepoint", name: String(body.savepoint_name ?? "") };
        case "TRANS_STMT_RELEASE":
          return { k: "release", name: String(body.savepoint_name ?? "") };
        case "TRANS_STMT_ROLLBACK_TO":
          return { k: "rollbackto", name: String(body.savepoint_name ?? "") };
        default:
          // PREPARE TRANSACTION and friends: what happens to the session's SETs is not tracked.
          acc.unknown ??= `transaction command ${body.kind}`;
          return { k: "rollback", chain: false };
      }
    case "ListenStmt":
      acc.pin ??= "listen";
      return NONE_OPS;
    case "PrepareStmt":
      acc.pin ??= "prepare";
      return NONE_OPS;
    case "DeclareCursorStmt":
      if (((body.options ?? 0) & 0x20) !== 0) acc.pin ??= "holdcursor";
      return NONE_OPS;
    case "DiscardStmt":
      if (body.target === "DISCARD_ALL") {
        acc.forgets = true;
        return { k: "resetall" };
      }
      return NONE_OPS;
    case "DeallocateStmt":
      acc.forgets = true;
      return NONE_OPS;
    case "CreateFunctionStmt": {
      const names = (body.funcname ?? []).map((n: any) => String(n?.String?.sval ?? "").toLowerCase());
      if (names.length > 1 && names[0] === "pg_temp") acc.temp = true;
      return NONE_OPS;
    }
    case "LoadStmt":
      acc.poison ??= "LOAD";
      return NONE_OPS;
    case "DoStmt":
      acc.unknown ??= "DO";
      return NONE_OPS;
    case "CallStmt":
      acc.unknown ??= "CALL";
      return NONE_OPS;
    case "ExecuteStmt":
      acc.unknown ??= "EXECUTE of an SQL prepared statement";
      return NONE_OPS;
    default:
      if (!KNOWN.has(type)) acc.unknown ??= type || "empty statement";
      return NONE_OPS;
  }
}

function walk(node: unknown, acc: Acc) {
  if (Array.isArray(node)) {
    for (const n of node) walk(n, acc);
    return;
  }
  if (node === null || typeof node !== "object") return;
  // A relation (a RangeVar, named so or not): temporary, or in the temporary schema.
  const rv = node as any;
  if (rv.relname !== undefined && (rv.relpersistence === "t" || String(rv.schemaname ?? "").toLowerCase() === "pg_temp")) acc.temp = true;
  for (const [k, v] of Object.entries(node as Record<string, unknown>)) {
    if (k === "FuncCall") {
      const f = v as any;
      const names = (f.funcname ?? []).map((n: any) => String(n?.String?.sval ?? "").toLowerCase());
      const name = names[names.length - 1] ?? "";
      const schema = names.length > 1 ? names[0] : "";
      if (schema && schema !== "pg_catalog") acc.unknown ??= `function ${names.join(".")}`;
      if (SESSION_ADVISORY.has(name)) acc.advisory = true;
      else if (name === "set_config") {
        // set_config(name, value, true) is SET LOCAL; anything else may last beyond the transaction.
        const local = f.args?.[2]?.A_Const?.boolval?.boolval === true;
        if (!local) acc.unknown ??= "set_config outside SET LOCAL";
      } else if (SESSION_FUNCTIONS.has(name)) acc.unknown ??= `function ${name}`;
      else if (name) acc.functions.add(name);
    }
    walk(v, acc);
  }
}

/**
 * Names of the origin's functions whose every overload is a builtin (oid below FirstNormalObjectId), per database,
 * loaded once in the background. Until it is in, every function counts as unknown (a reset after the transaction).
 */
export function createFunctionCatalog(load: (database: string) => Promise<string[]>, log: (line: string) => void = () => {}) {
  const byDb = new Map<string, Set<string> | "loading">();
  const keep = (database: string, names: string[]) => byDb.set(database, new Set(names.filter((n) => !SESSION_FUNCTIONS.has(n))));
  return {
    known: (database: string) => byDb.has(database),
    /** A trigger created through the pooler: writes to its table count as unknown from now on. */
    addTrigger(database: string, table: string) {
      const got = byDb.get(database);
      if (got && got !== "loading") got.add(TRIGGER_PREFIX + table);
    },
    /** Names read on a pool's first connection (readBuiltinFunctions), before it serves anyone. */
    provide: keep,
    safe(database: string): ReadonlySet<string> | null {
      const got = byDb.get(database);
      if (got === "loading") return null;
      if (got) return got;
      byDb.set(database, "loading");
      load(database).then(
        (names) => keep(database, names),
        (e) => {
          byDb.delete(database);
          log(`kvdrive pooler: cannot read the builtin functions of ${database}: ${(e as Error).message}`);
        },
      );
      return null;
    },
  };
}

export type FunctionCatalog = ReturnType<typeof createFunctionCatalog>;

/** Catalog entries naming a table whose triggers may change the session (writes to it count as unknown). */
export const TRIGGER_PREFIX = "trigger on ";

// The origin's builtin functions (every overload below FirstNormalObjectId), and the tables with a trigger whose
// function might change the session: in SQL or PL/pgSQL mentioning SET, set_config, EXECUTE, CALL, DO and the like,
// or in any other language but C and internal ones.
export const BUILTIN_FUNCTIONS_SQL = `select proname::text from pg_catalog.pg_proc group by proname having max(oid::int8) < 16384
union all
select distinct 'trigger on ' || lower(c.relname) from pg_catalog.pg_trigger t
  join pg_catalog.pg_class c on c.oid = t.tgrelid join pg_catalog.pg_proc p on p.oid = t.tgfoid join pg_catalog.pg_language l on l.oid = p.prolang
  where not t.tgisinternal and (l.lanname not in ('c', 'internal') and (l.lanname not in ('sql', 'plpgsql')
    or p.prosrc ~* '(set_config|\\mset\\M|\\mreset\\M|\\mexecute\\M|\\mcall\\M|\\mdo\\M|\\mload\\M|\\mdiscard\\M|\\mlisten\\M|advisory|\\mtemp)'))`;

/** Reads BUILTIN_FUNCTIONS_SQL on a fresh origin connection, before the pool owns it (no connection of its own). */
export function readBuiltinFunctions(conn: OriginConn): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const frames = createFrames(64 * 1024 * 1024);
    const names: string[] = [];
    const text = new TextDecoder();
    let failed: string | null = null;
    conn.handler = {
      data(chunk) {
        try {
          frames.push(chunk, (type, body) => {
            if (type === B.DataRow) {
              const v = decodeDataRow(body)[0];
              if (v) names.push(text.decode(v));
            } else if (type === B.ErrorResponse) failed = decodeErrorResponse(body).M ?? "error";
            else if (type === B.ReadyForQuery) {
              conn.handler = null;
              if (failed) reject(new Error(failed));
              else resolve(names);
            }
          });
        } catch (e) {
          reject(e);
        }
      },
      drain() {},
      closed: () => reject(new Error("the origin connection closed")),
    };
    conn.write(encodeQuery(BUILTIN_FUNCTIONS_SQL));
  });
}

/** Why running this leaves the connection in a state that is not tracked (null: it does not). */
export function untracked(eff: SessionEffect, safe: ReadonlySet<string> | null): string | null {
  if (eff.none) return null;
  if (eff.unknown) return eff.unknown;
  for (const f of eff.functions) if (!safe?.has(f)) return `function ${f}`;
  if (eff.writes) for (const t of eff.writes) if (!safe || safe.has(TRIGGER_PREFIX + t)) return `a trigger on ${t}`;
  if (eff.createsTrigger) return `CREATE TRIGGER on ${eff.createsTrigger}`;
  return null;
}

/** True when a statement can run anywhere without the pooler having to note anything (fast paths, lanes). */
export function quiet(eff: SessionEffect, safe: ReadonlySet<string> | null): boolean {
  if (eff.none) return true;
  return !eff.pin && !eff.ops && !eff.forgetsStatements && !eff.poison && untracked(eff, safe) === null;
}
