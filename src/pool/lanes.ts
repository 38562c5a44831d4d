// Read pipelining: autocommit calls of read-only prepared statements from different clients share an origin
// connection (a lane) instead of each borrowing one. Calls that arrive in the same turn of the event loop go
// out in one write, and their answers come back in order, each up to its ReadyForQuery, to the client that
// sent it. A lane is an ordinary pooled connection whose owner is the lane; it goes back to the pool as soon
// as nothing is in flight on it.
//
// Only a call that cannot change the connection's state is pipelined: one Bind (unnamed portal) of a named
// statement the classifier calls cacheable (a single read-only statement, immutable functions only, no locks,
// no temp tables or catalogs), optional Describe, Execute, Sync, or a simple Query of one such statement, from
// an idle client in autocommit. Such a call
// starts and ends its own implicit transaction, so an error in it is discarded up to its own Sync and the next
// client's call runs as if alone. Clients with different session settings never share a lane.
import { encodeQuery, renamePreparedCall } from "../protocol/frontend.ts";
import type { Pool } from "./pool.ts";
import { EXPECT_DESCRIBE, EXPECT_DESCRIBE_HIDDEN, EXPECT_EXECUTE, K, type Expect } from "./server/expect.ts";
import { replaySql } from "./server/replay.ts";
import type { Owner, Server } from "./server/server.ts";
import { prepareOn, type OriginStatement } from "./server/statements.ts";



/** A client with a call on a lane: the relay's Owner, plus the end of its turn. */
export interface LaneClient extends Owner {
  /** Its ReadyForQuery was delivered: the client may go on. */
  laneDone(): void;
  /** No origin connection could be had for its call (the pool's wait failed): answer it with this error. */
  laneFailed(code: string, message: string): void;
}

/** One call in flight: whose it is, and what to send again if the origin asks for a fresh plan. */
interface Turn {
  client: LaneClient;
  /** Null for a simple Query. */
  stmt: OriginStatement | null;
  /** The call as sent: Bind (statement name from byte 6), optional Describe, Execute, Sync; or a Query. */
  call: Uint8Array;
  nameLength: number;
  describe: boolean;
  /** The call carries a Describe the client did not send (lanes answer it through hiddenAnswer). */
  hiddenDescribe: boolean;
}

interface Lane {
  server: Server;
  sig: string;
  /** Calls in flight, in the order they were sent. */
  fifo: Turn[];
  counts: LaneStats;
  /** Queues bytes for this lane's connection (emit bound to it, made once). */
  emit: (b: Uint8Array) => void;
  /** Bytes for the origin not written yet: flushed once per turn of the event loop. */
  out: Uint8Array[];
  list: Lane[];
}

/** The lanes of one pool for clients with one session signature, and calls waiting for a first lane. */
interface Group {
  sig: string;
  lanes: Lane[];
  waiting: Turn[];
  acquiring: boolean;
  /** Settings of the first waiting client, replayed on the connection the group gets. */
  params: Map<string, string> | null;
  sets: Map<string, string> | null;
}

export interface LaneStats {
  inFlight: number;
  lanes: number;
  pipelined: number;
}

export interface Lanes {
  /**
   * Sends a call (Bind, optional Describe, Execute, Sync, with the origin's statement name; or, with stmt null,
   * a simple Query) on a lane of the pool for clients with this session signature, or queues it until the
   * pool has a connection for a lane.
   * The client hears laneDone() after its ReadyForQuery, or laneFailed() if no connection could be had.
   */
  submit(pool: Pool, sig: string, params: Map<string, string>, sets: Map<string, string>, client: LaneClient, stmt: OriginStatement | null, call: Uint8Array, describe: boolean, hiddenDescribe?: boolean): void;
  /** The lane serving this client, when its call is the only one in flight there (so a cancel hits only it). */
  soleServer(client: LaneClient): Server | null;
  /** Resumes reading the lane a client's call is on (its socket drained). */
  resume(client: LaneClient): void;
  /** For one pool: calls in flight on its lanes, lanes open, and calls pipelined since start. */
  stats(pool: Pool): LaneStats;
}

export function createLanes(o: { depth: number; maxPrepared: number; pipelined?: (pool: Pool) => void }): Lanes {
  const byPool = new Map<Pool, Map<string, Group>>();
  const laneOf = new Map<LaneClient, Lane>();
  const counts = new Map<Pool, LaneStats>();
  const countsOf = (pool: Pool) => {
    let c = counts.get(pool);
    if (!c) counts.set(pool, (c = { inFlight: 0, lanes: 0, pipelined: 0 }));
    return c;
  };
  const dirty: Lane[] = [];
  let flushScheduled = false;

  function flush() {
    flushScheduled = false;
    for (const lane of dirty.splice(0)) {
      if (!lane.out.length) continue;
      const bytes = lane.out.length === 1 ? lane.out[0]! : Buffer.concat(lane.out);
      lane.out.length = 0;
      if (!lane.server.conn.closed) lane.server.conn.write(bytes);
    }
  }

  function emit(lane: Lane, b: Uint8Array) {
    if (!lane.out.length) dirty.push(lane);
    lane.out.push(b);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flush);
    }
  }

  function finish(lane: Lane, h: LaneClient) {
    laneOf.delete(h);
    lane.counts.inFlight--;
    h.laneDone();
  }

  /** Queues a call's bytes and the relay's expectations for them (after any hidden Parse). */
  function send(lane: Lane, t: Turn) {
    const s = lane.server;
    if (t.stmt) {
      prepareOn(s, t.stmt, o.maxPrepared, lane.emit);
      emit(lane, t.call);
      s.push({ k: K.Bind, name: t.stmt.serverName });
      if (t.describe) s.push(EXPECT_DESCRIBE);
      else if (t.hiddenDescribe) s.push(EXPECT_DESCRIBE_HIDDEN);
      s.push(EXPECT_EXECUTE);
      s.push({ k: K.Sync, t: performance.now() });
    } else {
      emit(lane, t.call);
      s.push({ k: K.Query, t: performance.now() });
    }
    lane.fifo.push(t);
  }

  function close(lane: Lane) {
    const i = lane.list.indexOf(lane);
    if (i < 0) return false;
    lane.list.splice(i, 1);
    lane.counts.lanes--;
    return true;
  }

  function openLane(pool: Pool, sig: string, params: Map<string, string>, sets: Map<string, string>, list: Lane[], s: Server): Lane {
    const lane: Lane = { server: s, sig, fifo: [], out: [], list, counts: countsOf(pool), emit: (b) => emit(lane, b) };
    // The ReadyForQuery that ends the head's turn is in the next send; then the turn passes on.
    let ending: Expect | null = null;
    const owner: Owner = {
      send(b) {
        lane.fifo[0]?.client.send(b);
        if (ending) {
          const e = ending;
          ending = null;
          owner.completed(e, 0x5a);
        }
      },
      turns: true,
      hiddenAnswer(type, body) {
        lane.fifo[0]?.client.hiddenAnswer?.(type, body);
      },
      endTurn(e) {
        ending = e;
      },
      backpressured: () => lane.fifo[0]?.client.backpressured() ?? false,
      parameterStatus(name, value, fromReplay) {
        // Pipelined statements cannot change settings; if one did, the connection no longer matches the lane.
        if (!fromReplay) s.sig = lane.sig = "\0changed";
        lane.fifo[0]?.client.parameterStatus(name, value, fromReplay);
      },
      idle() {
        if (lane.fifo.length || lane.out.length || !close(lane)) return;
        s.owner = null;
        s.conn.resume();
        pool.release(s, lane.sig === sig && s.status === 0x49);
      },
      completed(e, type) {
        const h = lane.fifo[0];
        h?.client.completed(e, type);
        if (type === 0x5a && (e.k === K.Sync || e.k === K.Query) && h) {
          lane.fifo.shift();
          if (s.status !== 0x49) {
            // A pipelined call must end its own transaction; anything else means the lane cannot be trusted.
            s.conn.close();
          }
          finish(lane, h.client);
        }
      },
      planChanged(serverName) {
        lane.fifo[0]?.client.planChanged(serverName, false);
        return null;
      },
      retryTurn(serverName) {
        // The head call's plan went stale (DDL changed its result type): it goes again at the end of the
        // pipeline under a fresh statement name; this attempt's error and ReadyForQuery are not the client's.
        const h = lane.fifo[0];
        if (!h?.stmt || h.stmt.serverName !== serverName) return false;
        h.client.planChanged(serverName, false); // what comes next is prepared under a fresh name either way
        // Without a Describe the client decodes rows with the row description it has: it must see the error
        // (and prepare again, as it would against Postgres) rather than get rows of another shape.
        if (!h.describe) return false;
        lane.fifo.shift();
        const name = new TextEncoder().encode(h.stmt.serverName);
        const call = renamePreparedCall(h.call, 6 + h.nameLength, name);
        send(lane, { ...h, call, nameLength: name.length });
        return true;
      },
      serverClosed(saidWhy) {
        close(lane);
        // Only the call at the head heard the origin's FATAL; the ones queued behind it get the pooler's own.
        for (const [i, h] of lane.fifo.splice(0).entries()) {
          laneOf.delete(h.client);
          lane.counts.inFlight--;
          h.client.serverClosed(saidWhy === true && i === 0);
        }
      },
      serverDrained() {},
    };
    s.owner = owner;
    const sql = s.sig === sig ? null : replaySql(s, params, sets);
    s.sig = sig;
    if (sql) {
      emit(lane, encodeQuery(sql));
      // A failed replay would leave the connection in a state other than the lane's: drop it.
      s.push({ k: K.Replay, done: (err) => void (err && s.conn.close()) });
    }
    list.push(lane);
    lane.counts.lanes++;
    return lane;
  }

  function start(lane: Lane, t: Turn) {
    send(lane, t);
    laneOf.set(t.client, lane);
    lane.counts.inFlight++;
  }

  /** Calls of a group wait here while it has no lane and the pool none idle: one pool waiter for all of them. */
  function waitForConnection(pool: Pool, g: Group) {
    if (g.acquiring) return;
    g.acquiring = true;
    pool.acquire({
      grant(s) {
        g.acquiring = false;
        const turns = g.waiting.splice(0);
        if (!turns.length) return pool.release(s, true);
        const lane = openLane(pool, g.sig, g.params!, g.sets!, g.lanes, s);
        lane.counts.inFlight -= turns.length; // counted while they waited; start() counts them again
        for (const t of turns) start(lane, t);
      },
      fail(err) {
        g.acquiring = false;
        for (const t of g.waiting.splice(0)) {
          countsOf(pool).inFlight--;
          t.client.laneFailed(err.code, err.message);
        }
      },
    });
  }

  return {
    submit(pool, sig, params, sets, client, stmt, call, describe, hiddenDescribe = false) {
      let bySig = byPool.get(pool);
      if (!bySig) byPool.set(pool, (bySig = new Map()));
      let g = bySig.get(sig);
      if (!g) bySig.set(sig, (g = { sig, lanes: [], waiting: [], acquiring: false, params: null, sets: null }));
      // Pack calls onto the fullest lane that still has room, so a turn's calls share one write; open another
      // lane when all are full and the pool has a connection idle; past that, the least loaded lane. With no
      // lane at all and no idle connection, the calls wait for the pool together.
      let pick: Lane | null = null;
      let least: Lane | null = null;
      for (const l of g.lanes) {
        if (l.server.conn.closed || l.server.cancelsInFlight > 0) continue; // a cancel on its way must hit no one else
        if (l.fifo.length < o.depth && (!pick || l.fifo.length > pick.fifo.length)) pick = l;
        if (!least || l.fifo.length < least.fifo.length) least = l;
      }
      const t: Turn = { client, stmt, call, nameLength: stmt ? call.indexOf(0, 6) - 6 : 0, describe, hiddenDescribe };
      countsOf(pool).pipelined++;
      o.pipelined?.(pool);
      if (!pick) {
        const idle = pool.takeIdle();
        if (idle) pick = openLane(pool, sig, params, sets, g.lanes, idle);
      }
      const lane = pick ?? least;
      if (lane) {
        start(lane, t);
        return;
      }
      if (!g.waiting.length) {
        g.params = params;
        g.sets = sets;
      }
      g.waiting.push(t);
      countsOf(pool).inFlight++;
      waitForConnection(pool, g);
    },
    soleServer(client) {
      const lane = laneOf.get(client);
      return lane && lane.fifo.length === 1 && lane.fifo[0]!.client === client ? lane.server : null;
    },
    resume(client) {
      laneOf.get(client)?.server.conn.resume();
    },
    stats: (pool) => ({ ...countsOf(pool) }),
  };
}
