// A client's session SETs through its transactions: which of them last (commit) and which do not (ROLLBACK, an
// error, ROLLBACK TO SAVEPOINT), from the effects session.ts reads in each statement and the ReadyForQuery status.
import type { Op } from "./session.ts";

/** What the session tracker changes: the client's replayed SETs and the connection it holds. */
export interface TrackedSession {
  /** The client's session SETs by lower-case name (SQL rebuilt by setSql), replayed wherever it goes. */
  sets: Map<string, string>;
  /** Names whose change is reported by ParameterStatus (tracked from that instead). */
  reported: (name: string) => boolean;
  /** The connection the client holds: its `applied` map follows the SETs that took effect there. */
  server(): { applied: Map<string, string>; dirty: string | null } | null;
  /** The tracked state changed. */
  changed(): void;
  /** The connection no longer holds the client's tracked state (a RESET to a start-up value): replay it now. */
  resync(): void;
}

/**
 * Follows a client's transactions to know which session SETs last: a SET counts once its transaction commits
 * (an explicit one, or the implicit one of a simple Query or of an extended-protocol batch up to Sync), is
 * dropped by ROLLBACK, by an error outside an explicit transaction, and by ROLLBACK TO a savepoint before it.
 * SET LOCAL is never tracked. The ReadyForQuery status is the check: a mismatch marks the connection dirty.
 */
export function createSessionTracker(t: TrackedSession) {
  let startup: Map<string, string> = new Map();
  let pending: Op[] = [];
  let explicit = false;
  let aborted = false;
  let marks: Array<{ name: string; len: number }> = [];

  const drop = () => {
    if (pending.length) pending = [];
    explicit = false;
    aborted = false;
    if (marks.length) marks = [];
  };

  function apply(op: Op) {
    const s = t.server();
    if (op.k === "set") {
      if (t.reported(op.name)) return;
      t.sets.set(op.name, op.sql);
      s?.applied.set(op.name, op.sql);
    } else if (op.k === "reset") {
      if (t.reported(op.name)) return;
      // RESET goes back to the value the client started with (as on Postgres), which the origin does not know.
      const first = startup.get(op.name);
      s?.applied.delete(op.name);
      if (first === undefined) t.sets.delete(op.name);
      else {
        t.sets.set(op.name, first);
        t.resync();
      }
    } else if (op.k === "resetall") {
      t.sets.clear();
      s?.applied.clear();
      for (const [k, v] of startup) t.sets.set(k, v);
      if (startup.size) t.resync();
    } else return;
    t.changed();
  }

  function commit() {
    const ops = pending;
    drop();
    for (const op of ops) apply(op);
  }

  return {
    /** The client's start-up settings: what RESET goes back to. */
    started() {
      startup = new Map(t.sets);
    },
    /** A statement completed successfully. */
    done(op: Op) {
      switch (op.k) {
        case "set":
        case "reset":
        case "resetall":
          pending.push(op);
          return;
        case "begin":
          explicit = true;
          return;
        case "commit":
          if (aborted) drop();
          else commit();
          explicit = op.chain;
          return;
        case "rollback":
          drop();
          explicit = op.chain;
          return;
        case "savepoint":
          marks.push({ name: op.name, len: pending.length });
          return;
        case "release": {
          const i = marks.findLastIndex((m) => m.name === op.name);
          if (i >= 0) marks.length = i;
          return;
        }
        case "rollbackto": {
          const i = marks.findLastIndex((m) => m.name === op.name);
          if (i >= 0) {
            pending.length = marks[i]!.len;
            marks.length = i + 1;
          }
          aborted = false;
          return;
        }
      }
    },
    /** A statement failed: an explicit transaction is aborted, an implicit one rolled back. */
    failed() {
      if (explicit) aborted = true;
      else drop();
    },
    /** The simple Query's statements: the first `completed` succeeded, and the next failed when `failed`. */
    query(ops: Op[], completed: number, failed: boolean) {
      for (let i = 0; i < completed && i < ops.length; i++) this.done(ops[i]!);
      if (failed) this.failed();
    },
    /** ReadyForQuery with this status ('I', 'T' or 'E'). */
    ready(status: number) {
      if (status === 0x49) {
        if (!explicit && !aborted) {
          if (pending.length) commit();
          return;
        }
        // We thought a transaction was open and it is not: what it set is not known.
        const s = t.server();
        if (s && pending.length) s.dirty ??= "a transaction ended in a way the pooler did not follow";
        drop();
      } else {
        explicit = true;
        aborted = status === 0x45;
      }
    },
    /** Whether SETs are waiting for their transaction's end (then every error and Sync matters). */
    pending: () => pending.length > 0,
  };
}

export type SessionTracker = ReturnType<typeof createSessionTracker>;
