// The two sides of a replicated backend and what this instance knows about them: each call to a side, timed and
// bounded; the keys whose write is in flight or just settled (suspect); the newest version this instance
// acknowledged per suspect key (its floor); the way into the repair queue; the first valid answer of a race.
// The write race, the read race and the list merge (write-race.ts, read-race.ts, list-merge.ts) share it.
import { BackendTimeoutError } from "../errors.ts";
import type { Counter } from "../metrics/registry.ts";
import { compareVersions, keyHex, type StoredEntry, type Version } from "../storage/entry.ts";
import type { Backend } from "../storage/backend.ts";
import type { ReplicatedOptions, Side } from "./replicated.ts";

/** How long after its write settles a key is still read from both sides (see write-race.ts). */
export const SUSPECT_GRACE_MS = 2_000;
const MAX_RECENT = 200_000;

export const other = (s: Side): Side => (s === "primary" ? "replica" : "primary");

/** The newer of two answers; a missing entry is older than any stored one. */
export function newest(a: StoredEntry | null, b: StoredEntry | null): StoredEntry | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareVersions(a.version, b.version) >= 0 ? a : b;
}

export const sameVersion = (a: StoredEntry | null, b: StoredEntry | null, nowSeconds: number) => {
  const x = absentIfExpired(a, nowSeconds);
  const y = absentIfExpired(b, nowSeconds);
  if (x === null || y === null) return x === y;
  return compareVersions(x.version, y.version) === 0;
};

/** An expired live entry is as good as absent: both sides purge it on their own clocks. */
export function absentIfExpired<T extends { tombstone: boolean; expiration: number | null }>(e: T | null, nowSeconds: number): T | null {
  return e !== null && !e.tombstone && e.expiration !== null && e.expiration <= nowSeconds ? null : e;
}

/** The newest version this instance acknowledged for a key: no later read may answer older. */
export interface Floor {
  version: Version;
  tombstone: boolean;
}

/** Whether an answer is older than the floor. Absent satisfies a delete: its tombstone may already be purged. */
export const belowFloor = (e: StoredEntry | null, f: Floor) => (e === null ? !f.tombstone : compareVersions(e.version, f.version) < 0);

/** Rows being written to one side; done settles when that write does. */
export interface Flight {
  side: Side;
  rows: StoredEntry[];
  done?: Promise<unknown>;
}

export interface Sides {
  readonly opts: ReplicatedOptions;
  nowSeconds(): number;
  /** Times a call, counts its failure, and fails it after timeoutMs. */
  call<T>(side: Side, op: string, f: (b: Backend) => Promise<T>): Promise<T>;
  /** The first promise to fulfil with a valid answer; else the first invalid one; rejects only when all reject. */
  firstSuccess<T extends { side: Side }>(ps: Promise<T>[], op: string, valid?: (t: T) => boolean): Promise<T>;
  enqueue(side: Side, ns: string, key: Uint8Array, mechanism: "write" | "read" | "crawler"): void;
  /** Whether the key's newest version may be on one side only. */
  suspect(ns: string, key: Uint8Array): boolean;
  /** A key's id in the maps below: "ns\0hex". */
  ck(ns: string, key: Uint8Array): string;
  /** Keys with a write in flight (count of writes). */
  readonly inflight: Map<string, number>;
  hold(id: string): void;
  release(id: string): void;
  readonly floors: Map<string, Floor>;
  /** Keys whose writes settled within SUSPECT_GRACE_MS, in settling order (so the oldest are first to go). */
  readonly recent: Map<string, number>;
  trimRecent(): void;
  readonly rowsInFlight: Record<Side, number>;
  /** The writes themselves, so a shutdown that cannot wait for them can still queue them (park()). */
  readonly flying: Set<Flight>;
  /** Waits until every write in flight now has landed or failed on its side (each is bounded by timeoutMs). */
  settle(): Promise<void>;
  readonly readRepairs: Counter;
  readonly shadowMismatch: Counter;
  readonly bothFailed: Counter;
  readonly standIns: Counter;
  readonly shed: Counter;
}

export function createSides(opts: ReplicatedOptions): Sides {
  const { queue, clock } = opts;
  const m = opts.metrics;
  const seconds = m.histogram("kvdrive_backend_seconds", "Backend call latency, by backend and operation.");
  const errors = m.counter("kvdrive_backend_errors_total", "Backend calls that failed or timed out, by backend and operation.");
  const wins = m.counter("kvdrive_race_wins_total", "Raced calls answered first by each backend, by backend and operation.");
  const readRepairs = m.counter("kvdrive_read_repair_divergence_total", "Raced or shadow reads whose two answers differed (the key was queued).");
  const shadowMismatch = m.counter("kvdrive_shadow_mismatches_total", "Shadow-mode reads where the replica's answer differed from the primary's.");
  const bothFailed = m.counter("kvdrive_backend_both_failed_total", "Calls no backend could serve, by operation.");
  const standIns = m.counter("kvdrive_list_stand_in_total", "List pages where the replica answered for a primary cluster that could not.");
  m.gauge("kvdrive_writes_in_flight_keys", "Keys with a write still in flight to one of the backends.", () => [[undefined, inflight.size]]);

  const sides: Record<Side, Backend> = { primary: opts.primary, replica: opts.replica };
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  function call<T>(side: Side, op: string, f: (b: Backend) => Promise<T>): Promise<T> {
    const started = performance.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new BackendTimeoutError(`${side} backend: ${op} took longer than KVDRIVE_BACKEND_TIMEOUT_MS=${opts.timeoutMs}`)), opts.timeoutMs);
    });
    let p: Promise<T>;
    try {
      p = f(sides[side]);
    } catch (e) {
      p = Promise.reject(e);
    }
    return Promise.race([p, timeout]).then(
      (v) => {
        clearTimeout(timer);
        seconds.observe((performance.now() - started) / 1000, { backend: side, op });
        return v;
      },
      (e) => {
        clearTimeout(timer);
        errors.inc({ backend: side, op });
        throw e;
      },
    );
  }

  const inflight = new Map<string, number>();
  const ck = (ns: string, key: Uint8Array) => ns + "\0" + keyHex(key);
  const hold = (id: string) => inflight.set(id, (inflight.get(id) ?? 0) + 1);
  const release = (id: string) => {
    const n = (inflight.get(id) ?? 1) - 1;
    if (n <= 0) inflight.delete(id);
    else inflight.set(id, n);
  };

  const floors = new Map<string, Floor>();
  const recent = new Map<string, number>();
  function trimRecent() {
    const now = performance.now();
    for (const [id, until] of recent) {
      if (until > now && recent.size <= MAX_RECENT) break;
      recent.delete(id);
      if (!inflight.has(id)) floors.delete(id);
    }
  }
  const rowsInFlight: Record<Side, number> = { primary: 0, replica: 0 };
  const flying = new Set<Flight>();
  const settle = async () => {
    if (flying.size) await Promise.allSettled([...flying].map((f) => f.done));
  };
  const shed = m.counter("kvdrive_backend_shed_rows_total", "Rows not sent to a backend that was too far behind, queued for repair instead.");
  m.gauge("kvdrive_backend_rows_in_flight", "Rows being written to each backend.", () => (["primary", "replica"] as Side[]).map((b) => [{ backend: b }, rowsInFlight[b]]));

  function suspect(ns: string, key: Uint8Array): boolean {
    if (inflight.size && inflight.has(ck(ns, key))) return true;
    if (recent.size) {
      const until = recent.get(ck(ns, key));
      if (until !== undefined && until > performance.now()) return true;
    }
    if (queue.depth() === 0) return false;
    const hex = keyHex(key);
    return queue.has("primary", ns, hex) || queue.has("replica", ns, hex);
  }

  function enqueue(side: Side, ns: string, key: Uint8Array, mechanism: "write" | "read" | "crawler") {
    try {
      queue.enqueue({ backend: side, namespace: ns, key: keyHex(key), mechanism });
    } catch (e) {
      opts.log?.(`repair queue refused ${side} ${ns}: ${(e as Error).message}`);
    }
  }

  function firstSuccess<T extends { side: Side }>(ps: Promise<T>[], op: string, valid: (t: T) => boolean = () => true): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let pending = ps.length;
      let settled = false;
      const errs: unknown[] = [];
      const fallbacks: T[] = [];
      const last = () => {
        if (--pending > 0 || settled) return;
        settled = true;
        if (fallbacks.length) resolve(fallbacks[0]!);
        else {
          bothFailed.inc({ op });
          reject(errs[0]);
        }
      };
      for (const p of ps) {
        p.then(
          (t) => {
            if (!settled && valid(t)) {
              settled = true;
              wins.inc({ backend: t.side, op });
              resolve(t);
            } else fallbacks.push(t);
            last();
          },
          (e) => {
            errs.push(e);
            last();
          },
        );
      }
    });
  }

  return {
    opts, nowSeconds, call, firstSuccess, enqueue, suspect, ck, inflight, hold, release, floors, recent, trimRecent,
    rowsInFlight, flying, settle, readRepairs, shadowMismatch, bothFailed, standIns, shed,
  };
}
