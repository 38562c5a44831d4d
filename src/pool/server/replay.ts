// A pooled session's state on an origin connection: the SQL that brings a connection to a client's settings
// before its turn (replaySql), and the reset that brings an idle one back to a fresh session (resetServer).
import { encodeQuery } from "../../protocol/frontend.ts";
import { quoteLiteral, RESET_SQL, resetSql } from "../session.ts";
import { K } from "./expect.ts";
import type { Owner, Server } from "./server.ts";

/** Parameters a client may change that the origin reports, so they are replayed on another connection. */
// search_path is not one: Postgres 17 and older do not report it, so it is tracked from the SETs themselves.
export const REPLAYED = ["client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "application_name", "standard_conforming_strings"];
export const REPLAYED_LOWER = new Map(REPLAYED.map((p) => [p.toLowerCase(), p]));

/**
 * SQL that brings an origin connection to a session's state: reported parameters through set_config (which
 * parses list values such as search_path like the config file does), other settings by re-running the
 * session's SET statements and RESETting what a previous user set. Null when nothing differs.
 */
export function replaySql(s: Server, params: Map<string, string>, sets: Map<string, string>): string | null {
  const parts: string[] = [];
  const configs: string[] = [];
  for (const [name, value] of params) {
    if (!REPLAYED_LOWER.has(name.toLowerCase())) continue;
    if (s.conn.params.get(name) !== value) configs.push(`pg_catalog.set_config(${quoteLiteral(name)}, ${quoteLiteral(value)}, false)`);
  }
  // Identity first when undoing and last when setting (start-up settings may name them): under another role some
  // settings can be neither reset nor set.
  const undo = [...s.applied].filter(([name, sql]) => sets.get(name) !== sql).sort(([a], [b]) => identityRank(b) - identityRank(a));
  for (const [name] of undo) parts.push(resetSql(name));
  const todo = [...sets].filter(([name, sql]) => s.applied.get(name) !== sql).sort(([a], [b]) => identityRank(a) - identityRank(b));
  for (const [, sql] of todo) parts.push(sql);
  if (configs.length) parts.push(`SELECT ${configs.join(", ")}`);
  if (!parts.length) return null;
  s.applied = new Map(sets);
  return parts.join("; ");
}

const identityRank = (name: string) => (name === "session_authorization" ? 2 : name === "role" ? 1 : 0);

const RESET_QUERY = encodeQuery(RESET_SQL);

/** Origin connections reset since start (all pools of the process): the hot path must not add to it. */
export const sessionResets = { total: 0 };

/**
 * Brings an idle connection nobody holds back to a fresh session (RESET_SQL; the statements the pooler prepared
 * there stay), then done(true); done(false) when that failed and the connection must be closed.
 */
export function resetServer(s: Server, done: (ok: boolean) => void) {
  sessionResets.total++;
  s.dirty = null;
  let finished = false;
  const end = (ok: boolean) => {
    if (finished) return;
    finished = true;
    if (s.owner === resetter) s.owner = null;
    done(ok);
  };
  const resetter: Owner = {
    send() {},
    backpressured: () => false,
    parameterStatus() {},
    idle() {},
    completed() {},
    planChanged: () => null,
    serverClosed: () => end(false),
    serverDrained() {},
  };
  s.owner = resetter;
  s.applied = new Map();
  s.sig = "";
  s.conn.resume();
  s.conn.write(RESET_QUERY);
  s.push({ k: K.Replay, done: (error) => end(error === null && !s.conn.closed && s.status === 0x49) });
}
