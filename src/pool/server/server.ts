// Server side of a pooled session: what each origin connection is expected to answer, in order.
// Every message sent to the origin that produces a response pushes an Expect entry; responses pop them.
// That is how injected messages (a lazy re-Parse, a Close on LRU eviction, a parameter replay) have their
// answers swallowed, and synthetic answers (ParseComplete for a statement the origin already has) are
// slotted in at the right place, while everything else streams to the client unparsed.
import { B } from "../../protocol/backend.ts";
import { encodeClose, encodeParse, encodeQuery } from "../../protocol/frontend.ts";
import { createScanner, END_RANGE, type ScanSink, type Scanner } from "../../protocol/scan.ts";
import type { OriginConn } from "./origin.ts";
import { RESET_SQL, resetSql, type Op } from "../session.ts";

export const enum K {
  Parse,
  ParseHidden,
  Bind,
  Describe,
  Execute,
  Close,
  CloseHidden,
  Synth,
  Sync,
  Query,
  Replay,
  /** A Describe the client did not send: its RowDescription (or NoData) goes to owner.hiddenAnswer, not the client. */
  DescribeHidden,
}

export interface Expect {
  k: K;
  /** Server-side statement name of a Parse/Bind (to forget it when the Parse fails). */
  name?: string;
  /** The client's own name of a statement it Parsed (to forget it when the origin rejects or skips the Parse). */
  client?: string;
  /** Bytes to emit for a Synth entry. */
  bytes?: Uint8Array;
  /**
   * Replay: called with the origin's error fields, or null when it succeeded. Synth: called with null when its
   * place in the answer is reached (after what the origin owed before it), with SKIPPED when an error skipped it.
   */
  done?: (error: Uint8Array | null) => void;
  error?: Uint8Array;
  /** performance.now() when sent, for latency. */
  t?: number;
  /** A Sync whose ReadyForQuery the client must not see (it ends an attempt that is being re-sent). */
  swallow?: boolean;
  /** Query or Execute: the statements' session effects (session.ts), settled when they complete. */
  ops?: Op[];
  /** Query with ops: statements completed so far, and whether one failed (the rest were skipped). */
  cc?: number;
  failed?: boolean;
}

/** Whoever uses an origin connection right now: a wire client, or an internal executor. */
export interface Owner {
  send(bytes: Uint8Array): void;
  /**
   * Several clients take turns on this connection (a lane): a ReadyForQuery answering a Sync or Query ends
   * a send, so no send mixes two clients' answers; endTurn(e) is called just before that last send.
   */
  turns?: boolean;
  endTurn?(e: Expect): void;
  /**
   * With turns: the current call's statement needs a fresh plan. True when the owner sends the call again
   * at the end of the pipeline; then this attempt's error and ReadyForQuery are dropped.
   */
  retryTurn?(serverName: string): boolean;
  /** The client socket's outbox is full: the origin socket should pause. */
  backpressured(): boolean;
  parameterStatus(name: string, value: string, fromReplay: boolean): void;
  /** Called after a chunk when the origin is idle (ReadyForQuery 'I', nothing outstanding). */
  idle(): void;
  /** A statement finished (for latency metrics and cache bookkeeping). */
  completed(e: Expect, status: number): void;
  /**
   * An ErrorResponse 0A000 "cached plan must not change result type" for this statement. May return bytes
   * that re-run the failed batch under a fresh statement name (Parse first), to be sent instead of the error.
   */
  planChanged(serverName: string, retryable: boolean): { name: string; bytes: Uint8Array } | null;
  /** The origin connection closed; `saidWhy` when its last answer to this owner was a FATAL ErrorResponse (Postgres' own farewell). */
  serverClosed(saidWhy?: boolean): void;
  serverDrained(): void;
  /** The origin rejected (or, after an earlier error, skipped) the client's Parse of `client`: as on Postgres, that name does not exist. */
  parseRejected?(client: string, serverName: string): void;
  /** The answer to a Describe the pooler added (K.DescribeHidden), kept from the client: a RowDescription or NoData. */
  hiddenAnswer?(type: number, body: Uint8Array): void;
}

export interface Server {
  conn: OriginConn;
  owner: Owner | null;
  expect: Expect[];
  /**
   * Statement names prepared on this connection, oldest first (Map order = LRU order), each with the sequence
   * number (nextPrepareSeq) of the Parse that made it: a client's statement may use it only if it is newer than
   * the client's own Parse, so a fresh Parse never gets a plan made against an older schema.
   */
  prepared: Map<string, number>;
  /** Which client's unnamed statement the origin holds (client id and its Parse sequence). */
  unnamedOwner: number;
  unnamedSeq: number;
  /** Last ReadyForQuery status byte. */
  status: number;
  discarding: boolean;
  copyIn: boolean;
  /** Extended-protocol messages were sent since the last Sync: the origin may hold an open implicit transaction. */
  unsynced: boolean;
  /** Non-reported settings applied by SET on this connection, to undo before another client uses it. */
  applied: Map<string, string>;
  /** Signature of the session state the connection holds ("" unknown): equal signatures skip the replay check. */
  sig: string;
  /**
   * Why the session state of this connection is no longer what the pooler tracked (an untracked effect, a pinned
   * client gone): the pool resets it (resetServer) before anyone else gets it. Null when it is known.
   */
  dirty: string | null;
  onClosed: () => void;
  /** CancelRequests for this connection's backend still being delivered: it serves no one else until they are. */
  cancelsInFlight: number;
  /** What to do once they are (a release the pool put off). */
  afterCancel: (() => void) | null;
  /** Pushes an expectation and emits any synthetic answers that are now due. */
  push(e: Expect): void;
  /** Emits leading synthetic entries (when the origin owes nothing before them). */
  advance(): void;
}

const NEED_BODY = new Uint8Array(256);
NEED_BODY[B.ReadyForQuery] = 1;
NEED_BODY[B.ErrorResponse] = 1;
NEED_BODY[B.ParameterStatus] = 1;
NEED_BODY[B.RowDescription] = 1; // for a hidden Describe's answer; small, once per statement
NEED_BODY[B.NoData] = 1;

const decoder = new TextDecoder();

/** Parameters a client may change that the origin reports, so they are replayed on another connection. */
// search_path is not one: Postgres 17 and older do not report it, so it is tracked from the SETs themselves.
export const REPLAYED = ["client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "application_name", "standard_conforming_strings"];
export const REPLAYED_LOWER = new Map(REPLAYED.map((p) => [p.toLowerCase(), p]));

const quoteLiteral = (v: string) => "'" + v.replace(/'/g, "''") + "'";

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

/** A statement as the origin prepares it: its shared name there, its text and parameter types, its Parse once built. */
export interface OriginStatement {
  serverName: string;
  query: string;
  paramTypes: number[];
  parse: Uint8Array | null;
  /** nextPrepareSeq() when the client Parsed it: an origin copy older than this is prepared again. */
  parsedAt: number;
}

let prepareSeq = 0;
/** A process-wide sequence ordering client Parses and origin prepares. */
export const nextPrepareSeq = () => ++prepareSeq;

/** Queues a hidden Close of a statement (its CloseComplete is swallowed) and forgets it on the connection. */
export function closePrepared(s: Server, name: string, emit: (b: Uint8Array) => void) {
  s.prepared.delete(name);
  emit(encodeClose({ kind: "S", name }));
  s.push(EXPECT_CLOSE_HIDDEN);
}

/** What a skipped Synth entry's `done` gets. */
export const SKIPPED = new Uint8Array(0);

// Expectations without per-message data are shared: the relay only reads them.
export const EXPECT_PARSE: Expect = { k: K.Parse };
export const EXPECT_BIND: Expect = { k: K.Bind };
export const EXPECT_DESCRIBE: Expect = { k: K.Describe };
export const EXPECT_DESCRIBE_HIDDEN: Expect = { k: K.DescribeHidden };
export const EXPECT_EXECUTE: Expect = { k: K.Execute };
export const EXPECT_CLOSE: Expect = { k: K.Close };
export const EXPECT_CLOSE_HIDDEN: Expect = { k: K.CloseHidden };

/** Closes the least recently used statements of a connection until fewer than `max` remain; `emit` queues bytes for it. */
export function evictPrepared(s: Server, max: number, emit: (b: Uint8Array) => void) {
  while (s.prepared.size >= max) {
    closePrepared(s, s.prepared.keys().next().value as string, emit);
  }
}

/**
 * Makes sure a connection has a statement prepared under its shared name, by a Parse newer than the client's:
 * refreshes its LRU place, or queues a hidden Parse (after closing an older copy and evicting past `max`) whose
 * answer the relay swallows.
 */
export function prepareOn(s: Server, stmt: OriginStatement, max: number, emit: (b: Uint8Array) => void) {
  const at = s.prepared.get(stmt.serverName);
  if (at !== undefined) {
    s.prepared.delete(stmt.serverName);
    if (at > stmt.parsedAt) {
      s.prepared.set(stmt.serverName, at);
      return;
    }
    // Made before the client's Parse: possibly against an older schema (another client's table of that name).
    closePrepared(s, stmt.serverName, emit);
  }
  evictPrepared(s, max, emit);
  stmt.parse ??= encodeParse({ name: stmt.serverName, query: stmt.query, paramTypes: stmt.paramTypes });
  emit(stmt.parse);
  s.prepared.set(stmt.serverName, nextPrepareSeq());
  s.push({ k: K.ParseHidden, name: stmt.serverName });
}

/** SQLSTATE and message of an ErrorResponse body, read without decoding every field. */
export function errorCode(body: Uint8Array): { code: string; message: string; severity: string } {
  let code = "";
  let message = "";
  let severity = "";
  for (let i = 0; i < body.length && body[i] !== 0; ) {
    const t = body[i]!;
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    if (t === 0x43) code = decoder.decode(body.subarray(i + 1, end));
    else if (t === 0x4d) message = decoder.decode(body.subarray(i + 1, end));
    else if (t === 0x56) severity = decoder.decode(body.subarray(i + 1, end)); // 'V': never localized
    i = end + 1;
  }
  return { code, message, severity };
}

const isFatal = (body: Uint8Array) => {
  const { severity } = errorCode(body);
  return severity === "FATAL" || severity === "PANIC";
};

export function createServer(conn: OriginConn): Server {
  const scanner: Scanner = createScanner(NEED_BODY);
  const q: Expect[] = [];
  let fatalRelayed = false;

  const s: Server = {
    conn,
    owner: null,
    expect: q,
    prepared: new Map(),
    unnamedOwner: 0,
    unnamedSeq: 0,
    status: 0x49,
    discarding: false,
    copyIn: false,
    unsynced: false,
    applied: new Map(),
    sig: "",
    dirty: null,
    onClosed: () => {},
    cancelsInFlight: 0,
    afterCancel: null,
    push(e) {
      q.push(e);
      if (q.length === 1 || q[0]!.k === K.Synth) s.advance();
    },
    advance() {
      drain((b) => s.owner?.send(b));
    },
  };

  /** Pops entries the origin will never answer: synthetic ones (emitted unless discarding) and, while discarding, all but Sync. */
  function drain(emit: (b: Uint8Array) => void) {
    while (q.length) {
      const h = q[0]!;
      if (h.k === K.Synth) {
        q.shift();
        if (!s.discarding) {
          if (h.bytes!.length) emit(h.bytes!);
          h.done?.(null);
        } else h.done?.(SKIPPED);
        continue;
      }
      if (s.discarding && h.k !== K.Sync) {
        q.shift();
        if ((h.k === K.Parse || h.k === K.ParseHidden) && h.name) {
          s.prepared.delete(h.name);
          if (h.client !== undefined) s.owner?.parseRejected?.(h.client, h.name);
        }
        continue;
      }
      return;
    }
  }

  /** The last ErrorResponses of statements whose Parse failed, by server name (a few, newest kept). */
  const failedParses = new Map<string, Uint8Array>();
  const parseFailed = (name: string, body: Uint8Array) => {
    const msg = new Uint8Array(body.length + 5);
    msg[0] = B.ErrorResponse;
    new DataView(msg.buffer).setUint32(1, body.length + 4);
    msg.set(body, 5);
    failedParses.delete(name);
    failedParses.set(name, msg);
    if (failedParses.size > 64) failedParses.delete(failedParses.keys().next().value as string);
  };

  const pop = (k: K) => {
    const h = q[0];
    if (h && h.k === k) q.shift();
    return h;
  };

  const sink: ScanSink = {
    forward: (b) => s.owner?.send(b),
    message(type, body, inject) {
      if (q.length && (q[0]!.k === K.Synth || s.discarding)) drain(inject);
      const owner = s.owner;
      const h = q[0];
      switch (type) {
        case B.ParseComplete: {
          const e = q.shift();
          if (e?.name) failedParses.delete(e.name);
          return e?.k === K.Parse;
        }
        case B.BindComplete:
          pop(K.Bind);
          return true;
        case B.CloseComplete: {
          const e = q.shift();
          return e?.k === K.Close;
        }
        case B.RowDescription:
        case B.NoData:
          if (h?.k === K.DescribeHidden) {
            q.shift();
            owner?.hiddenAnswer?.(type, body!);
            return false;
          }
          if (h?.k === K.Describe) q.shift();
          return h?.k !== K.Replay;
        case B.CommandComplete:
        case B.EmptyQueryResponse:
        case B.PortalSuspended:
          if (h?.k === K.Execute) {
            q.shift();
            owner?.completed(h, type);
          } else if (h?.ops && type === B.CommandComplete) h.cc = (h.cc ?? 0) + 1;
          return h?.k !== K.Replay;
        case B.ReadyForQuery: {
          const e = q.shift();
          s.status = body![0]!;
          s.discarding = false;
          s.copyIn = false;
          if (e?.k === K.Replay) {
            e.done?.(e.error ?? null);
            return false;
          }
          if (e?.swallow) return false;
          if (owner?.turns && (e?.k === K.Sync || e?.k === K.Query)) {
            // The answer up to and including this ReadyForQuery goes out in one send; then the turn ends.
            owner.endTurn!(e);
            return END_RANGE;
          }
          if (e) owner?.completed(e, type);
          return true;
        }
        case B.ErrorResponse: {
          // A FATAL (57P01 after pg_terminate_backend, 57P02...) is followed by the close: the client has heard why,
          // and a second error of ours would reach node-postgres as an error event nobody listens to.
          if (h?.k !== K.Replay && isFatal(body!)) fatalRelayed = true;
          if (!h || h.k === K.Query || h.k === K.Sync) {
            if (h?.ops) h.failed = true;
            return true;
          }
          if (h.k === K.Replay) {
            h.error = body!.slice();
            return false;
          }
          const err = errorCode(body!);
          if (err.code === "0A000" && h.name && owner?.turns && h.k === K.Bind && /cached plan must not change result type/.test(err.message)) {
            if (owner.retryTurn?.(h.name)) {
              q.shift();
              s.discarding = true;
              drain(inject);
              // What is left of the failed attempt is its Sync: its ReadyForQuery is swallowed like a replay's.
              if (q[0]?.k === K.Sync) q[0] = { k: K.Sync, swallow: true };
              return false;
            }
          } else if (err.code === "0A000" && h.name && /cached plan must not change result type/.test(err.message) && owner) {
            // Retry only a batch that is exactly this Bind up to its Sync, the last thing sent: the origin skips
            // the rest of the batch, answers the Sync, then runs the re-sent batch with a fresh plan.
            const retry = owner.planChanged(h.name, h.k === K.Bind && q[q.length - 1]!.k === K.Sync && q.filter((e) => e.k === K.Sync).length === 1);
            if (retry) {
              s.prepared.set(retry.name, nextPrepareSeq());
              q.unshift({ k: K.Replay }, { k: K.ParseHidden, name: retry.name });
              conn.write(retry.bytes);
              return false;
            }
          }
          if (h.k === K.Execute) owner?.completed(h, type);
          q.shift();
          if ((h.k === K.Parse || h.k === K.ParseHidden) && h.name) {
            s.prepared.delete(h.name);
            parseFailed(h.name, body!);
            if (h.client !== undefined) owner?.parseRejected?.(h.client, h.name);
          }
          // The origin now discards everything up to Sync; so must the expectations. The batch failed: SETs in it did not last.
          for (const x of q) if (x.k === K.Sync) {
            if (x.ops) x.failed = true;
            break;
          }
          s.discarding = true;
          // A Bind sent behind a Parse of its statement that failed (pipelined, or another client's on a lane)
          // fails for a name the client never chose: it gets the Parse's own error instead.
          const why = h.k === K.Bind && h.name && err.code === "26000" ? failedParses.get(h.name) : undefined;
          if (why) inject(why);
          drain(inject);
          return !why;
        }
        case B.ParameterStatus: {
          const eq = body!.indexOf(0);
          const name = decoder.decode(body!.subarray(0, eq));
          const value = decoder.decode(body!.subarray(eq + 1, body!.indexOf(0, eq + 1)));
          conn.params.set(name, value);
          owner?.parameterStatus(name, value, h?.k === K.Replay);
          return h?.k !== K.Replay;
        }
        case B.CopyInResponse:
          s.copyIn = true;
          // The origin ignores Sync while in COPY IN; drop expectations for Syncs sent before the client knew.
          for (let i = q.length - 1; i > 0; i--) if (q[i]!.k === K.Sync) q.splice(i, 1);
          return true;
        case B.NoticeResponse:
          return h?.k !== K.Replay;
        default:
          return h?.k !== K.Replay;
      }
    },
  };

  conn.handler = {
    data(chunk) {
      const owner = s.owner;
      if (!owner) {
        // An idle connection should be silent; a notice or a FATAL before closing is all it may send.
        return;
      }
      try {
        scanner.feed(chunk, sink);
        if (q.length && q[0]!.k === K.Synth) s.advance();
        if (owner.backpressured()) conn.pause();
        // Not while discarding: after an extended-protocol error the origin ignores everything up to a Sync (a
        // simple Query too, which clears `unsynced`), so the connection must stay with this client until its Sync.
        if (q.length === 0 && s.status === 0x49 && !s.copyIn && !s.unsynced && !s.discarding && scanner.idle() && s.owner === owner) owner.idle();
      } catch (e) {
        // A response we cannot follow leaves the connection in an unknown state: drop it; its owner hears so.
        console.error(`kvdrive pooler: origin connection ${conn.id} failed: ${(e as Error).stack}`);
        conn.close();
        s.onClosed();
        s.owner?.serverClosed(false);
      }
    },
    drain() {
      s.owner?.serverDrained();
    },
    closed() {
      s.onClosed();
      s.owner?.serverClosed(fatalRelayed);
    },
  };
  return s;
}
