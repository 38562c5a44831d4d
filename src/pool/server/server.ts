// Server side of a pooled session: one origin connection (`Server`), its state in the pool, and the relay of
// what the origin answers. Every message sent to the origin that produces a response pushes an Expect entry
// (expect.ts); responses pop them. That is how injected messages (a lazy re-Parse, a Close on LRU eviction, a
// parameter replay) have their answers swallowed, and synthetic answers (ParseComplete for a statement the origin
// already has) are slotted in at the right place, while everything else streams to the client unparsed.
// The client side mirrors it in ../client/; the pool (../pool.ts) moves a Server between states.
import { B } from "../../protocol/backend.ts";
import { createScanner, END_RANGE, type ScanSink, type Scanner } from "../../protocol/scan.ts";
import { K, SKIPPED, type Expect } from "./expect.ts";
import type { OriginConn } from "./origin.ts";
import { nextPrepareSeq } from "./statements.ts";

/**
 * Where an origin connection is, as PgBouncer's server states (SV_IDLE, SV_ACTIVE, SV_USED...): changed only by
 * the pool's move() (../pool.ts). Active, Cancelling and Resetting connections all count as in use.
 */
export const enum ServerState {
  /** Logged in (origin.ts), not yet in a pool list. */
  Opened,
  /** In the pool's idle stack: no owner, its session state known. */
  Idle,
  /** Lent to an owner: a client, a lane of clients, the cache's loader or the /sql executor. */
  Active,
  /** Given back while CancelRequests for its backend are still on their way: lent to no one until they land. */
  Cancelling,
  /** Given back with session state the pooler does not track: RESET_SQL runs before anyone gets it (replay.ts). */
  Resetting,
  /** Closed, or closing: in no list. */
  Closed,
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
  /** Changed only by the pool's move(). */
  state: ServerState;
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


/** SQLSTATE and message of an ErrorResponse body, read without decoding every field. */
function errorCode(body: Uint8Array): { code: string; message: string; severity: string } {
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
    state: ServerState.Opened,
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

  /**
   * An ErrorResponse: passed on, unless it answers something the pooler sent on its own (a replay's error is kept for
   * its `done`), or a plan that changed is re-run under a fresh name; the expectations up to the Sync are dropped as
   * the origin drops the messages.
   */
  function errorResponse(h: Expect | undefined, body: Uint8Array, inject: (b: Uint8Array) => void): boolean {
    const owner = s.owner;
    // A FATAL (57P01 after pg_terminate_backend, 57P02...) is followed by the close: the client has heard why,
    // and a second error of ours would reach node-postgres as an error event nobody listens to.
    if (h?.k !== K.Replay && isFatal(body)) fatalRelayed = true;
    if (!h || h.k === K.Query || h.k === K.Sync) {
      if (h?.ops) h.failed = true;
      return true;
    }
    if (h.k === K.Replay) {
      h.error = body.slice();
      return false;
    }
    const err = errorCode(body);
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
    if (h.k === K.Execute) owner?.completed(h, B.ErrorResponse);
    q.shift();
    if ((h.k === K.Parse || h.k === K.ParseHidden) && h.name) {
      s.prepared.delete(h.name);
      parseFailed(h.name, body);
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
        case B.ErrorResponse:
          return errorResponse(h, body!, inject);
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
