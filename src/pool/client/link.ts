// A client's link to origin connections: borrowing one from the pool (acquire, its waiter), attaching it with
// the client's session replayed, letting it go, and the callbacks the server side makes to the client that
// holds a connection (its Owner) or takes a turn on a shared one (its LaneClient).
import { encodeParse, encodeQuery, F, renameBindStatement as rewriteBind } from "../../protocol/frontend.ts";
import { encodeParameterStatus, encodeReadyForQuery, errorMessage, READY_IDLE } from "../../protocol/backend.ts";
import type { LaneClient } from "../lanes.ts";
import type { Waiter } from "../pool.ts";
import { K, type Expect } from "../server/expect.ts";
import { replaySql } from "../server/replay.ts";
import type { Owner, Server } from "../server/server.ts";
import { move, resumeReading, St, type Client } from "./state.ts";
import { close, failed, fatal, flushDeferred, MAX_IN_FLIGHT, resumeMessages, send } from "./client.ts";
import { endTee, record, resumeAfterBusy } from "./call.ts";
import { sessionChanged, sig } from "./settings.ts";
import { type OriginError } from "../../errors.ts";

/**
 * Borrows an origin connection (Idle to Waiting, then Active). Returns true when one was granted at once;
 * otherwise processing of the client's bytes stops (the current message stays held) until it arrives or the wait fails.
 */
export function acquire(cl: Client): boolean {
  cl.inAcquire = true;
  cl.grantedNow = false;
  cl.waiter = cl.poolWaiter;
  move(cl, St.Waiting);
  cl.pool!.acquire(cl.poolWaiter);
  cl.inAcquire = false;
  if (cl.waiter) cl.socket.pause();
  return cl.grantedNow;
}

/** One waiter per client (it waits for one connection at a time), so borrowing allocates nothing. */
export function createPoolWaiter(cl: Client): Waiter {
  return {
    grant(s) {
      cl.waiter = null;
      if (cl.st === St.Closed) return cl.pool!.release(s, true);
      move(cl, St.Active);
      attach(cl, s);
      if (cl.inAcquire) return void (cl.grantedNow = true);
      if (cl.deferred.length) {
        try {
          flushDeferred(cl);
        } catch (e) {
          return failed(cl, e);
        }
      }
      resumeReading(cl);
      resumeMessages(cl);
      flushToServer(cl);
    },
    fail(err: OriginError) {
      cl.waiter = null;
      if (cl.st === St.Closed) return;
      move(cl, St.Idle);
      // The client gets the error for its request and stays usable: what it sent up to the next
      // Sync or Query is answered with this error and one ReadyForQuery, like a failed query.
      send(cl, errorMessage(err.code, err.message));
      cl.pendingDiscard = true;
      if (cl.deferred.length) {
        // The deferred batch ended with its Sync: its error is answered, later messages are not discarded.
        cl.deferred = [];
        send(cl, encodeReadyForQuery(String.fromCharCode(cl.status) as "I"));
        cl.pendingDiscard = false;
      }
      if (cl.inAcquire) return;
      resumeReading(cl);
      resumeMessages(cl);
    },
  };
}

/** Takes a granted connection: the client's session settings are replayed on it when it holds others. */
export function attach(cl: Client, s: Server, onReplayed?: (error: Uint8Array | null) => void) {
  cl.server = s;
  s.owner = cl.owner;
  const mine = sig(cl);
  const sql = s.sig === mine ? null : replaySql(s, cl.params, cl.sets);
  s.sig = mine;
  if (sql) {
    s.conn.write(encodeQuery(sql));
    s.push({
      k: K.Replay,
      done(error) {
        // Part of the replay failed: what the connection holds is not known any more; reset it before reuse.
        if (error) s.dirty ??= "a session replay failed";
        onReplayed?.(error);
      },
    });
  } else onReplayed?.(null);
}

/** Gives the connection back to the pool (Active to Idle). */
export function detach(cl: Client, reusable: boolean) {
  const s = cl.server!;
  if (s === cl.poisoned) {
    cl.poisoned = null;
    reusable = false;
  }
  cl.server = null;
  s.owner = null;
  s.sig = sig(cl);
  s.conn.resume();
  if (cl.st === St.Active) move(cl, St.Idle);
  cl.pool!.release(s, reusable);
}

export function flushToServer(cl: Client) {
  const q = cl.toServer;
  if (!q.length || !cl.server) return;
  const bytes = q.length === 1 ? q[0]! : Buffer.concat(q);
  q.length = 0;
  cl.server.conn.write(bytes);
  if (cl.server.conn.queued() > 0) cl.socket.pause();
}

/** A CancelRequest naming this client: cancels what runs for it on its connection or its lane. */
export function cancelRunning(cl: Client) {
  const s = cl.server ?? (cl.st === St.Busy ? cl.ctx.lanes?.soleServer(cl.laneClient) : null);
  if (s) cl.ctx.cancelOrigin(s);
}

export function createOwner(cl: Client): Owner {
  const { ctx } = cl;
  return {
    hiddenAnswer(type, body) {
      // The RowDescription of a Describe added for a recorded miss: the recording needs it, the client must not see it.
      if (!cl.tee) return;
      const msg = new Uint8Array(body.length + 5);
      msg[0] = type;
      new DataView(msg.buffer).setUint32(1, body.length + 4);
      msg.set(body, 5);
      if (cl.tee.answer.feed(msg)) endTee(cl, cl.tee.answer.result());
    },
    send(b) {
      if (cl.tee) record(cl, b);
      send(cl, b);
      if (cl.expectPaused && (!cl.server || cl.server.expect.length <= MAX_IN_FLIGHT / 2)) {
        cl.expectPaused = false;
        resumeReading(cl);
      }
    },
    backpressured: () => cl.out.queued() > 0,
    parameterStatus(name, value, fromReplay) {
      if (cl.params.get(name) === value) return;
      cl.params.set(name, value);
      sessionChanged(cl);
      if (cl.server) cl.server.sig = "";
      if (fromReplay) send(cl, encodeParameterStatus(name, value));
    },
    idle() {
      if (!cl.pinned && cl.server && cl.st === St.Active) detach(cl, true);
    },
    completed(e: Expect, type: number) {
      if (e.k === K.Execute || (type === 0x5a && e.k === K.Query)) ctx.metrics.queries(cl.pool!);
      if (type === 0x5a && e.t !== undefined) ctx.metrics.latency(cl.pool!, performance.now() - e.t);
      const tracker = cl.tracker;
      if (e.k === K.Execute && type !== 0x5a) {
        if (type === 0x45) tracker.failed();
        else if (e.ops && type === 0x43) tracker.done(e.ops[0]!);
      }
      if (type === 0x5a && (e.k === K.Sync || e.k === K.Query)) {
        cl.status = cl.server ? cl.server.status : cl.status;
        if (e.ops) {
          if (e.k === K.Query) tracker.query(e.ops, e.cc ?? 0, e.failed === true);
          else if (e.failed) tracker.failed();
        }
        tracker.ready(cl.status);
        if (cl.status === 0x49 && cl.portals.size) cl.portals.clear();
        // At commit (or autocommit) of writes that went through us; after a rollback too, which is only wasteful.
        if (cl.status === 0x49 && cl.pendingWrites.length) ctx.cachePath.cache.invalidate(cl.database, cl.pendingWrites.splice(0));
      }
    },
    planChanged(serverName, retryable) {
      for (const s of cl.unnamedStmt ? [...cl.stmts.values(), cl.unnamedStmt] : cl.stmts.values()) {
        if (s.serverName !== serverName) continue;
        ctx.planChanged(s.key);
        s.serverName = ctx.statementName(s.key);
        s.parse = null;
      }
      const b = cl.retryBatch;
      cl.retryBatch = null;
      // Re-run only a call that describes its result: a client without the Describe would decode the new
      // rows with the old row description; it gets the error and prepares again, as against Postgres.
      if (!retryable || !b?.synced || b.serverName !== serverName || !b.rest.some((m) => m[0] === F.Describe)) return null;
      const name = b.stmt.serverName;
      b.stmt.parse = encodeParse({ name, query: b.stmt.query, paramTypes: b.stmt.paramTypes });
      return { name, bytes: Buffer.concat([b.stmt.parse, rewriteBind(b.bind, name), ...b.rest]) };
    },
    serverClosed(saidWhy) {
      if (cl.tee) endTee(cl, null);
      if (cl.st === St.Closed) return;
      cl.server = null;
      // After the origin's own FATAL (relayed already) the client gets the close alone, as from Postgres.
      if (saidWhy) close(cl);
      else fatal(cl, "08006", "the origin connection serving this session closed unexpectedly");
    },
    serverDrained() {
      resumeReading(cl);
    },
    parseRejected(client, serverName) {
      const st = cl.stmts.get(client);
      if (st && st.serverName === serverName) cl.stmts.delete(client);
    },
  };
}

/** This client as a turn-taker on a shared connection (lanes.ts): its pipelined call was answered (Busy to Idle). */
export function createLaneClient(cl: Client): LaneClient {
  const lc: LaneClient = {
    ...cl.owner,
    // A client that left with its answer backed up must not hold the lane's connection paused.
    backpressured: () => cl.st !== St.Closed && cl.out.queued() > 0,
    laneDone() {
      if (cl.st === St.Closed) return;
      move(cl, St.Idle);
      resumeAfterBusy(cl);
      if (cl.frames!.pending()) queueMicrotask(cl.resume);
    },
    laneFailed(code, message) {
      if (cl.tee) endTee(cl, null);
      send(cl, errorMessage(code, message));
      send(cl, READY_IDLE);
      lc.laneDone();
    },
  };
  return lc;
}
