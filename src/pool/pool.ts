// One pool of origin connections per (database, user): idle stack, bounded wait queue with a timeout,
// idle timeout and max lifetime. `move()` is the only place a connection changes state (ServerState).
import type { Clock } from "../clock.ts";
import { resetServer } from "./server/replay.ts";
import { ServerState, type Server } from "./server/server.ts";
import { OriginError } from "../errors.ts";

export interface Waiter {
  grant(server: Server): void;
  fail(err: OriginError): void;
}

export interface PoolOptions {
  database: string;
  user: string;
  size: number;
  maxWaiting: number;
  waitTimeoutMs: number;
  idleTimeoutMs: number;
  maxLifetimeMs: number;
  clock: Clock;
  open(): Promise<Server>;
  /** Opening failed and the pool never had a connection nor has anything left: its owner may drop it. */
  unusable?(): void;
  log?: (line: string) => void;
}

export interface PoolStats {
  database: string;
  user: string;
  activeServers: number;
  idleServers: number;
  connectingServers: number;
  waitingClients: number;
}

export interface Pool {
  readonly database: string;
  readonly user: string;
  /** Calls grant (possibly synchronously) or fail (53300 on timeout or a full queue, or the origin's error). */
  acquire(w: Waiter): void;
  /** An idle connection, made active, if there is one now; never waits or opens one. */
  takeIdle(): Server | null;
  /** Gives a connection back; reusable=false closes it. */
  release(server: Server, reusable: boolean): void;
  /** Drops a waiter that went away (client disconnected). */
  cancelWait(w: Waiter): void;
  /** Closes idle connections past their idle timeout or lifetime. */
  janitor(): void;
  stats(): PoolStats;
  /** One origin connection was opened successfully at least once (the database exists). */
  verified(): boolean;
  /** No connection is idle and no more may be opened: a new borrower would wait. */
  saturated(): boolean;
  close(): void;
}

export function createPool(o: PoolOptions): Pool {
  const idle: Server[] = [];
  const active = new Set<Server>();
  const waiters: Array<{ w: Waiter; timer: ReturnType<typeof setTimeout> }> = [];
  let connecting = 0;
  let ok = false;
  let closed = false;

  const expired = (s: Server, now: number) => o.maxLifetimeMs > 0 && now - s.conn.createdAt >= o.maxLifetimeMs;

  /** The one function that changes a connection's state; the idle stack and the in-use set follow it. */
  function move(s: Server, to: ServerState) {
    if (s.state === ServerState.Idle) {
      const i = idle.lastIndexOf(s); // the top of the stack, when takeIdle lends it
      if (i >= 0) idle.splice(i, 1);
    }
    s.state = to;
    if (to === ServerState.Idle) {
      active.delete(s);
      s.conn.lastUsedAt = o.clock.now();
      idle.push(s);
    } else if (to === ServerState.Closed) {
      active.delete(s);
      if (!s.conn.closed) s.conn.close();
    } else active.add(s);
  }

  function takeIdle(): Server | null {
    if (closed) return null;
    const now = o.clock.now();
    while (idle.length) {
      const s = idle[idle.length - 1]!;
      if (s.conn.closed || expired(s, now)) {
        move(s, ServerState.Closed);
        continue;
      }
      move(s, ServerState.Active);
      return s;
    }
    return null;
  }

  function grantNext(s: Server) {
    const next = waiters.shift();
    if (!next) return move(s, ServerState.Idle);
    clearTimeout(next.timer);
    move(s, ServerState.Active);
    next.w.grant(s);
  }

  function open() {
    connecting++;
    o.open().then(
      (s) => {
        connecting--;
        ok = true;
        if (closed) return s.conn.close();
        s.onClosed = () => {
          move(s, ServerState.Closed);
          fillForWaiters();
        };
        grantNext(s);
      },
      (err: OriginError) => {
        connecting--;
        o.log?.(`kvdrive pool ${o.database}/${o.user}: origin connection failed: ${err.message}`);
        // The waiter this connection was for hears why; when nothing else could serve the queue, all do.
        const nothingLeft = active.size + idle.length + connecting === 0;
        const failed = waiters.splice(0, nothingLeft ? waiters.length : 1);
        for (const f of failed) {
          clearTimeout(f.timer);
          f.w.fail(err);
        }
        if (!ok && nothingLeft && !connecting && !waiters.length) o.unusable?.();
      },
    );
  }

  function fillForWaiters() {
    while (!closed && waiters.length > connecting && active.size + idle.length + connecting < o.size) open();
  }

  const pool: Pool = {
    database: o.database,
    user: o.user,
    takeIdle,
    acquire(w) {
      if (closed) return w.fail(new OriginError("the pooler is shutting down", "57P01"));
      const s = takeIdle();
      if (s) return w.grant(s);
      if (waiters.length >= o.maxWaiting) {
        return w.fail(new OriginError(`too many clients waiting for pool ${o.database}/${o.user}: KVDRIVE_POOL_MAX_WAITING is ${o.maxWaiting}`, "53300"));
      }
      const entry = {
        w,
        timer: setTimeout(() => {
          const i = waiters.indexOf(entry);
          if (i >= 0) waiters.splice(i, 1);
          w.fail(new OriginError(`no origin connection in pool ${o.database}/${o.user} became free within ${o.waitTimeoutMs} ms (KVDRIVE_POOL_WAIT_TIMEOUT_MS)`, "53300"));
        }, o.waitTimeoutMs),
      };
      waiters.push(entry);
      fillForWaiters();
    },
    release(s, reusable) {
      // A cancel on its way to this backend could hit the next user's query: hold the connection until it landed.
      if (s.cancelsInFlight > 0) {
        move(s, ServerState.Cancelling);
        s.afterCancel = () => pool.release(s, reusable);
        return;
      }
      if (!reusable || s.conn.closed || closed || expired(s, o.clock.now())) {
        move(s, ServerState.Closed);
        return fillForWaiters();
      }
      // Its session state is no longer what the pooler tracked: reset before anyone else gets it (server.ts).
      if (s.dirty !== null) {
        move(s, ServerState.Resetting);
        return resetServer(s, (ok) => pool.release(s, ok));
      }
      grantNext(s);
    },
    cancelWait(w) {
      const i = waiters.findIndex((e) => e.w === w);
      if (i >= 0) {
        clearTimeout(waiters[i]!.timer);
        waiters.splice(i, 1);
      }
    },
    janitor() {
      const now = o.clock.now();
      for (const s of [...idle]) {
        if (s.conn.closed || expired(s, now) || (o.idleTimeoutMs > 0 && now - s.conn.lastUsedAt >= o.idleTimeoutMs)) move(s, ServerState.Closed);
      }
    },
    stats: () => ({ database: o.database, user: o.user, activeServers: active.size, idleServers: idle.length, connectingServers: connecting, waitingClients: waiters.length }),
    verified: () => ok,
    saturated: () => !closed && idle.length === 0 && active.size + connecting >= o.size,
    close() {
      closed = true;
      for (const e of waiters.splice(0)) {
        clearTimeout(e.timer);
        e.w.fail(new OriginError("the pooler is shutting down", "57P01"));
      }
      for (const s of [...idle, ...active]) move(s, ServerState.Closed);
    },
  };
  return pool;
}
