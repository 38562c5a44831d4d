// What a statement does to session state, the part transaction pooling must know about:
// session-only features that pin a client to its origin connection, and session-level SETs to replay.
// Deliberately conservative text checks on the statement's start and keywords; a false "pin" only costs
// pooling efficiency for that client, a missed one would break the client, so we err towards pinning.

export type Pin = "listen" | "advisory" | "temp" | "holdcursor" | "prepare" | "role" | "set";

export interface SessionEffect {
  pin?: Pin;
  /** A session-level SET of a setting: its lower-case name and the statement that sets it. */
  set?: { name: string; sql: string };
  /** RESET name; "" for RESET ALL. */
  reset?: string;
  /** DISCARD ALL / DEALLOCATE ALL: the origin forgot its prepared statements. */
  forgetsStatements?: boolean;
}

const QUICK = /listen|advisory|temp|hold|prepare|set|reset|discard|deallocate|role|authorization/i;
const NONE: SessionEffect = {};

/** Strips leading whitespace and -- or /* comments so the first keyword can be read. */
function head(sql: string): string {
  let s = sql;
  for (;;) {
    s = s.trimStart();
    if (s.startsWith("--")) {
      const nl = s.indexOf("\n");
      s = nl < 0 ? "" : s.slice(nl + 1);
    } else if (s.startsWith("/*")) {
      const end = s.indexOf("*/");
      s = end < 0 ? "" : s.slice(end + 2);
    } else return s;
  }
}

export function sessionEffect(sql: string): SessionEffect {
  if (!QUICK.test(sql)) return NONE;
  const h = head(sql);
  const lower = h.toLowerCase();
  if (/^listen\b/.test(lower)) return { pin: "listen" };
  if (/^prepare\b/.test(lower)) return { pin: "prepare" };
  if (/\bpg_(try_)?advisory_lock(_shared)?\s*\(/.test(lower)) return { pin: "advisory" };
  if (/\bcreate\s+(?:(?:global|local)\s+)?temp(?:orary)?\s+(?:table|view|sequence)\b/.test(lower) || /\bcreate\s+(?:unlogged\s+)?table\b[^;]*\bon\s+commit\b/.test(lower) || /\binto\s+temp(orary)?\b/.test(lower)) {
    return { pin: "temp" };
  }
  if (/\bwith\s+hold\b/.test(lower)) return { pin: "holdcursor" };
  if (/^set\s+(session\s+)?(role|session\s+authorization)\b/.test(lower)) return { pin: "role" };
  if (/^(discard\s+(all|plans)|deallocate\s+(prepare\s+)?all)\b/.test(lower)) return { forgetsStatements: true, reset: /^discard\s+all/.test(lower) ? "" : undefined };
  const reset = /^reset\s+(all|[a-z_][a-z0-9_.]*)\s*;?\s*$/.exec(lower);
  if (reset) return { reset: reset[1] === "all" ? "" : reset[1] };
  const set = /^set\s+(?:session\s+)?(?!local\b|transaction\b|constraints\b|session\s+characteristics\b)("?[a-z_][a-z0-9_.]*"?)\s*(?:=|\bto\b)/.exec(lower);
  if (set) {
    const sql = h.replace(/[;\s]+$/, "");
    // A SET inside a multi-statement string cannot be replayed on its own: keep the whole session instead.
    if (sql.includes(";", set[0].length)) return { pin: "set" };
    return { set: { name: set[1]!.replace(/"/g, ""), sql } };
  }
  return NONE;
}
