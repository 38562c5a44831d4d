// Two independent backends behind one Backend: the primary (Postgres shards) and a replica (an S3 bucket or a
// second group of Postgres clusters), in one of three modes, chosen per namespace:
//   primary        the replica is not used.
//   shadow         writes go to both and are acknowledged by the primary; reads go to the primary, and the
//                  replica's answer is compared in the background (mismatches counted and queued for repair).
//   active-active  writes race to both and are acknowledged on the first success; reads race too, and the first
//                  valid answer wins.
// A backend that fails a write gets the key in the durable repair queue (repair-queue.ts); raced reads that
// disagree queue the key as well (read repair). Every write is conditional on versions, so no repair ever puts
// an older version over a newer one.
//
// Read-your-own-write with a lagging backend: a key is "suspect" while a write of it is still in flight to one
// of the backends, or while it waits in the repair queue for either. A suspect key is read from both backends
// and the newer answer wins, so a read never returns a version older than an acknowledged write it follows.
import type { Clock } from "../clock.ts";
import { BackendBehindError, BackendTimeoutError } from "../errors.ts";
import type { Registry } from "../metrics/registry.ts";
import { compareVersions, keyFromHex, keyHex, type StoredEntry, type Version } from "../storage/entry.ts";
import type { Backend, EntryRef, ListedEntry, ListQuery } from "../storage/store.ts";
import type { RepairQueue } from "./repair-queue.ts";

export type ReplicationMode = "primary" | "shadow" | "active-active";
export const REPLICATION_MODES: readonly ReplicationMode[] = ["primary", "shadow", "active-active"];

export type Side = "primary" | "replica";

export interface ReplicatedOptions {
  primary: Backend;
  replica: Backend;
  /** The namespace's mode: its admin override, else the configured default. */
  modeOf(ns: string): ReplicationMode;
  queue: RepairQueue;
  metrics: Registry;
  clock: Clock;
  /** A backend call slower than this counts as failed. */
  timeoutMs: number;
  /**
   * Splits a write into the parts of the primary that fail independently (its clusters), so one cluster down
   * fails only its rows on the primary and the replica acknowledges them, instead of failing the whole batch.
   */
  partition?: <T extends { ns: string; key: Uint8Array }>(rows: T[]) => T[][];
  /**
   * False when the replica can go back a version (an object store without compare-and-swap, where an older
   * write can overtake a newer one): then reads wait for both sides and the newer answer wins, instead of
   * racing. Default true.
   */
  trustFirstAnswer?: boolean;
  /** Rows in flight to the side that does not acknowledge before further rows go to it through the repair queue (default 20,000). */
  maxInFlightRows?: number;
  log?: (msg: string) => void;
}

export interface ReplicatedBackend extends Backend {
  readonly primary: Backend;
  readonly replica: Backend;
  /** Copies the newest version of (ns, key) to whichever side is older or missing it. True when both now agree. */
  repairKey(ns: string, key: Uint8Array): Promise<boolean>;
  /** repairKey for many keys of one namespace: one read of each side, one conditional write to each side behind. */
  repairKeys(ns: string, keys: Uint8Array[]): Promise<void>;
  /** Whether the key's newest version may be on one side only. */
  suspect(ns: string, key: Uint8Array): boolean;
  /**
   * A shutdown cut short: every row still in flight to a side is written to the durable repair queue for that
   * side (and the queue synced), so the copy that never landed is made after the next start. Returns the rows.
   */
  park(): number;
}

/** How long after its write settles a key is still read from both sides (see raceWrite). */
const SUSPECT_GRACE_MS = 2_000;
const MAX_RECENT = 200_000;

const other = (s: Side): Side => (s === "primary" ? "replica" : "primary");

/** The newer of two answers; a missing entry is older than any stored one. */
export function newest(a: StoredEntry | null, b: StoredEntry | null): StoredEntry | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareVersions(a.version, b.version) >= 0 ? a : b;
}

const sameVersion = (a: StoredEntry | null, b: StoredEntry | null, nowSeconds: number) => {
  const x = absentIfExpired(a, nowSeconds);
  const y = absentIfExpired(b, nowSeconds);
  if (x === null || y === null) return x === y;
  return compareVersions(x.version, y.version) === 0;
};

/** An expired live entry is as good as absent: both sides purge it on their own clocks. */
export function absentIfExpired<T extends { tombstone: boolean; expiration: number | null }>(e: T | null, nowSeconds: number): T | null {
  return e !== null && !e.tombstone && e.expiration !== null && e.expiration <= nowSeconds ? null : e;
}

export function createReplicatedBackend(opts: ReplicatedOptions): ReplicatedBackend {
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

  /** Times a call, counts its failure, and fails it after timeoutMs. */
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

  // Keys with a write in flight (count of writes), as "ns\0hex".
  const inflight = new Map<string, number>();
  const ck = (ns: string, key: Uint8Array) => ns + "\0" + keyHex(key);
  const hold = (id: string) => inflight.set(id, (inflight.get(id) ?? 0) + 1);
  const release = (id: string) => {
    const n = (inflight.get(id) ?? 1) - 1;
    if (n <= 0) inflight.delete(id);
    else inflight.set(id, n);
  };

  // The newest version this instance wrote per suspect key: a read answer older than it is not an answer.
  const floors = new Map<string, { version: Version; tombstone: boolean }>();
  // Keys whose writes settled within SUSPECT_GRACE_MS, in settling order (so the oldest are first to go).
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
  // The writes themselves, so a shutdown that cannot wait for them can still queue them (park()).
  const flying = new Set<{ side: Side; rows: StoredEntry[] }>();
  const maxInFlightRows = opts.maxInFlightRows ?? 20_000;
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

  /**
   * Races one write to both sides. Resolves with the first success; a side that fails (now or later) gets
   * every row queued for repair. Rejects only when both fail.
   */
  function raceWrite(rows: StoredEntry[], ackOn: "first" | Side): Promise<boolean[]> {
    const ids = rows.map((r) => ck(r.ns, r.key));
    for (const id of ids) hold(id);
    // Once acknowledged, a write is this instance's floor for its key: no later read may answer older.
    const acked = () =>
      rows.forEach((r, i) => {
        const f = floors.get(ids[i]!);
        if (!f || compareVersions(r.version, f.version) > 0) floors.set(ids[i]!, { version: r.version, tombstone: r.tombstone });
      });
    const attempt = (side: Side): Promise<boolean[]> => {
      // A side that has fallen this far behind gets the rows through the repair queue instead: its backlog
      // stays bounded (and durable) rather than growing in memory at the fast side's pace.
      const behind = (x: Side) => rowsInFlight[x] + rows.length > maxInFlightRows;
      if (side !== ackOn && behind(side) && (ackOn !== "first" || !behind(other(side)))) {
        shed.inc({ backend: side }, rows.length);
        for (const r of rows) enqueue(side, r.ns, r.key, "write");
        return Promise.reject(new BackendBehindError(`${side} backend is ${rowsInFlight[side]} rows behind: queued for repair`));
      }
      rowsInFlight[side] += rows.length;
      const flight = { side, rows };
      flying.add(flight);
      return call(side, "write", (b) => b.write(rows))
        .catch((e) => {
          for (const r of rows) enqueue(side, r.ns, r.key, "write");
          throw e;
        })
        .finally(() => {
          rowsInFlight[side] -= rows.length;
          flying.delete(flight);
        });
    };
    const p = attempt("primary");
    const r = attempt("replica");
    Promise.allSettled([p, r]).then(() => {
      // Keys stay suspect a little longer: an object store without compare-and-swap can still be overwritten
      // by a concurrent older write for about one round trip after ours was verified (s3-conditional.ts).
      const until = performance.now() + SUSPECT_GRACE_MS;
      for (const id of ids) {
        release(id);
        recent.set(id, until);
      }
      trimRecent();
    });
    if (ackOn !== "first") {
      const mine = ackOn === "primary" ? p : r;
      return mine.then((v) => {
        acked();
        return v;
      });
    }
    return firstSuccess([p.then((v) => ({ v, side: "primary" as Side })), r.then((v) => ({ v, side: "replica" as Side }))], "write").then((x) => {
      acked();
      return x.v;
    });
  }

  /** The first promise to fulfil with a valid answer; else the first invalid one; rejects only when all reject. */
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

  async function writeGroup(mode: ReplicationMode, rows: StoredEntry[]): Promise<boolean[]> {
    if (mode === "primary") return call("primary", "write", (b) => b.write(rows));
    const parts = opts.partition ? opts.partition(rows) : [rows];
    if (parts.length === 1) return raceWrite(rows, mode === "shadow" ? "primary" : "first");
    const applied = new Map<StoredEntry, boolean>();
    await Promise.all(
      parts.map(async (part) => {
        const flags = await raceWrite(part, mode === "shadow" ? "primary" : "first");
        part.forEach((r, i) => applied.set(r, flags[i]!));
      }),
    );
    return rows.map((r) => applied.get(r) ?? false);
  }

  /** Both answers arrived: queue the key for the side that is behind. */
  function compareAnswers(ns: string, key: Uint8Array, p: StoredEntry | null, r: StoredEntry | null, shadow: boolean) {
    if (sameVersion(p, r, nowSeconds())) return;
    if (shadow) shadowMismatch.inc();
    readRepairs.inc();
    const win = newest(p, r);
    enqueue(win === p ? "replica" : "primary", ns, key, "read");
  }

  async function getRaced(ns: string, key: Uint8Array): Promise<StoredEntry | null> {
    const mode = opts.modeOf(ns);
    if (mode === "primary") return call("primary", "get", (b) => b.get(ns, key));
    const p = call("primary", "get", (b) => b.get(ns, key));
    const r = call("replica", "get", (b) => b.get(ns, key));
    // Whatever the outcome, compare both answers once they are in.
    Promise.allSettled([p, r]).then(([a, b]) => {
      if (a.status === "fulfilled" && b.status === "fulfilled") compareAnswers(ns, key, a.value, b.value, mode === "shadow");
    });
    if (mode === "shadow") {
      // The primary answers; when it cannot, the replica is better than an error.
      return p.catch(() => r);
    }
    if (opts.trustFirstAnswer === false || suspect(ns, key)) return newestOfBoth(p, r, "get", ns, key);
    return (await firstSuccess([p.then((e) => ({ e, side: "primary" as Side })), r.then((e) => ({ e, side: "replica" as Side }))], "get")).e;
  }

  /** Waits for both; the newer answer wins. One failing side is tolerated. */
  /**
   * Waits for both; the newer answer wins. One failing side is tolerated, unless the key's own recent write
   * (its floor) is newer than the answer left: then the failed side is asked once more, and if it still
   * cannot answer, the read fails rather than return a value older than a write this instance acknowledged.
   */
  async function newestOfBoth(p: Promise<StoredEntry | null>, r: Promise<StoredEntry | null>, op: string, ns?: string, key?: Uint8Array): Promise<StoredEntry | null> {
    let [a, b] = await Promise.allSettled([p, r]);
    if (a.status === "rejected" && b.status === "rejected") {
      bothFailed.inc({ op });
      throw a.reason;
    }
    const floor = ns !== undefined && key !== undefined ? floors.get(ck(ns, key)) : undefined;
    const best = () => newest(a.status === "fulfilled" ? a.value : null, b.status === "fulfilled" ? b.value : null);
    // Absent satisfies a delete: its tombstone may already be purged.
    const below = (e: StoredEntry | null) => floor !== undefined && (e === null ? !floor.tombstone : compareVersions(e.version, floor.version) < 0);
    // Only a side that failed can hold what is missing; two answers below the floor are what storage holds
    // (the entry was removed since, e.g. a purged tombstone).
    if (below(best()) && ns !== undefined && key !== undefined && (a.status === "rejected" || b.status === "rejected")) {
      const again = (side: Side) => Promise.allSettled([call(side, op, (x) => x.get(ns, key))]).then(([x]) => x!);
      if (a.status === "rejected") a = await again("primary");
      else if (b.status === "rejected") b = await again("replica");
      if (below(best()) && (a.status === "rejected" || b.status === "rejected")) throw new BackendBehindError(`the backend holding the newest version of this key did not answer: retry the read`);
    }
    return best();
  }

  async function getManyRaced(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>> {
    const mode = opts.modeOf(ns);
    if (mode === "primary") return call("primary", "getMany", (b) => b.getMany(ns, keys));
    const p = call("primary", "getMany", (b) => b.getMany(ns, keys));
    const r = call("replica", "getMany", (b) => b.getMany(ns, keys));
    Promise.allSettled([p, r]).then(([a, b]) => {
      if (a.status !== "fulfilled" || b.status !== "fulfilled") return;
      keys.forEach((k, i) => compareAnswers(ns, k, a.value[i]!, b.value[i]!, mode === "shadow"));
    });
    if (mode === "shadow") return p.catch(() => r);
    if (opts.trustFirstAnswer === false || keys.some((k) => suspect(ns, k))) {
      const [a, b] = await Promise.allSettled([p, r]);
      if (a.status === "rejected" && b.status === "rejected") {
        bothFailed.inc({ op: "getMany" });
        throw a.reason;
      }
      const out = keys.map((_, i) => newest(a.status === "fulfilled" ? a.value[i]! : null, b.status === "fulfilled" ? b.value[i]! : null));
      // A key whose own recent write is newer than what the answering side holds: ask again, one key at a time.
      for (let i = 0; i < keys.length; i++) {
        const f = floors.get(ck(ns, keys[i]!));
        if (f !== undefined && (out[i] === null ? !f.tombstone : compareVersions(out[i]!.version, f.version) < 0)) {
          out[i] = await newestOfBoth(call("primary", "get", (x) => x.get(ns, keys[i]!)), call("replica", "get", (x) => x.get(ns, keys[i]!)), "get", ns, keys[i]!);
        }
      }
      return out;
    }
    return (await firstSuccess([p.then((e) => ({ e, side: "primary" as Side })), r.then((e) => ({ e, side: "replica" as Side }))], "getMany")).e;
  }

  /** Primary first; the replica answers when the primary cannot (list has no versions to race on). */
  function primaryThenReplica<T>(ns: string | null, op: string, f: (b: Backend) => Promise<T>): Promise<T> {
    const p = call("primary", op, f);
    if (ns !== null && opts.modeOf(ns) === "primary") return p;
    return p.catch((e) =>
      call("replica", op, f).catch(() => {
        bothFailed.inc({ op });
        throw e;
      }),
    );
  }

  /** Keys of `ns` whose two sides may differ now: a write in flight (or just settled), or waiting for repair. */
  function suspectKeys(ns: string, into: Map<string, Uint8Array>) {
    const prefix = ns + "\0";
    const add = (id: string) => {
      if (id.startsWith(prefix) && !into.has(id)) into.set(id, keyFromHex(id.slice(prefix.length)));
    };
    for (const id of inflight.keys()) add(id);
    // A settled write whose two sides both succeeded agrees on both, except on an object store without
    // compare-and-swap, where an older write can still overtake it for a moment (SUSPECT_GRACE_MS).
    if (opts.trustFirstAnswer === false) {
      const now = performance.now();
      for (const [id, until] of recent) if (until > now) add(id);
    }
    if (queue.depth() > 0) for (const { key } of queue.keysOf(ns)) add(prefix + key);
  }

  /**
   * The newest entry of each key from both sides, for a list to trust. A side that cannot answer for a key is
   * tolerated only when the side that did answer is not behind on it (not queued for repair, not older than
   * this instance's acknowledged write); otherwise the list cannot be complete and fails.
   */
  async function newestForList(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>> {
    // What each side was known to lack when the reads began: a write acknowledged (or failed) after that is
    // concurrent with the list, and either answer is right for it.
    const floorAtStart = keys.map((k) => floors.get(ck(ns, k)));
    const queuedAtStart = keys.map((k) => ({ primary: queue.has("primary", ns, keyHex(k)), replica: queue.has("replica", ns, keyHex(k)) }));
    const fromPrimary: Array<{ e: StoredEntry | null } | undefined> = new Array(keys.length);
    const items = keys.map((key, i) => ({ ns, key, i }));
    // Per cluster, so a cluster that is down costs only its own keys.
    const parts = opts.partition ? opts.partition(items) : [items];
    const replicaAnswer = call("replica", "getMany", (b) => b.getMany(ns, keys)).catch(() => null);
    await Promise.all(
      parts.map((part) =>
        call("primary", "getMany", (b) => b.getMany(ns, part.map((x) => x.key))).then(
          (got) => part.forEach((x, j) => (fromPrimary[x.i] = { e: got[j] ?? null })),
          () => {},
        ),
      ),
    );
    const fromReplica = await replicaAnswer;
    let unsure = 0;
    const out = keys.map((key, i) => {
      const a = fromPrimary[i];
      const b = fromReplica === null ? undefined : { e: fromReplica[i] ?? null };
      if (a && b) return newest(a.e, b.e);
      const answered: Side | null = a ? "primary" : b ? "replica" : null;
      const e = (a ?? b)?.e ?? null;
      const f = floorAtStart[i];
      const belowFloor = f !== undefined && (e === null ? !f.tombstone : compareVersions(e.version, f.version) < 0);
      if (answered === null || belowFloor || queuedAtStart[i]![answered]) unsure++;
      return e;
    });
    if (unsure) {
      bothFailed.inc({ op: "list" });
      throw new BackendBehindError(`list: ${unsure} key${unsure > 1 ? "s" : ""} in this range may be newer on a backend that did not answer; the list would be incomplete: retry it`);
    }
    return out;
  }

  /**
   * One cluster's share of a list page from the replica, for a primary cluster that cannot answer: the
   * replica's entries that `q.only` accepts, up to q.limit.
   */
  async function replicaStandIn(q: ListQuery): Promise<ListedEntry[]> {
    const out: ListedEntry[] = [];
    let after = q.after;
    for (;;) {
      const page = await opts.replica.list({ ...q, after, standIn: undefined });
      for (const e of page) if (!q.only || q.only(e.key)) out.push(e);
      if (out.length >= q.limit || page.length < q.limit) break;
      after = page[page.length - 1]!.key;
    }
    standIns.inc();
    return out.length > q.limit ? out.slice(0, q.limit) : out;
  }

  /**
   * A list both sides agree on. One side answers the listing (the primary; the replica when the primary, or a
   * cluster of it, cannot), and every key that may differ between the sides (suspectKeys) inside the range it
   * covered is taken from whichever side holds its newest version, so a key acknowledged on one side only is
   * listed, and one deleted on one side only is not. When that cannot be known the list fails (503) rather than
   * answer with keys missing.
   */
  async function listChecked(q: ListQuery): Promise<ListedEntry[]> {
    if (opts.modeOf(q.ns) === "primary") return call("primary", "list", (b) => b.list(q));
    const suspects = new Map<string, Uint8Array>();
    suspectKeys(q.ns, suspects);
    // A side whose repairs overflowed the queue may be behind on keys nobody tracks: list from the other one.
    const overflowed = queue.needsCrawler();
    let base: Side = overflowed.includes("primary") && !overflowed.includes("replica") ? "replica" : "primary";
    const out: ListedEntry[] = [];
    let after = q.after;
    while (out.length < q.limit) {
      const want = q.limit - out.length;
      const pageQuery: ListQuery = { ...q, after, limit: want, standIn: base === "primary" ? replicaStandIn : undefined };
      let page: ListedEntry[];
      try {
        page = await call(base, "list", (b) => b.list(pageQuery));
      } catch (e) {
        if (overflowed.includes(other(base))) throw e;
        page = await call(other(base), "list", (b) => b.list({ ...pageQuery, standIn: undefined })).catch(() => {
          bothFailed.inc({ op: "list" });
          throw e;
        });
        base = other(base);
      }
      // Keys that turned suspect while the page was read (a read repair, a write that failed meanwhile).
      suspectKeys(q.ns, suspects);
      const full = page.length >= want;
      const high = full ? page[page.length - 1]!.key : null;
      const within = [...suspects.values()].filter(
        (k) =>
          (after === null || Buffer.compare(k, after) > 0) &&
          (q.from === null || Buffer.compare(k, q.from) >= 0) &&
          (q.before === null || Buffer.compare(k, q.before) < 0) &&
          (high === null || Buffer.compare(k, high) <= 0),
      );
      if (within.length) page = await corrected(q, page, within);
      out.push(...page);
      if (!full) break;
      after = high;
    }
    return out.length > q.limit ? out.slice(0, q.limit) : out;
  }

  /** The page with each of `keys` replaced by its newest state on either side (added, updated or removed). */
  async function corrected(q: ListQuery, page: ListedEntry[], keys: Uint8Array[]): Promise<ListedEntry[]> {
    const CHUNK = 500;
    const found: Array<StoredEntry | null> = [];
    for (let i = 0; i < keys.length; i += CHUNK) found.push(...(await newestForList(q.ns, keys.slice(i, i + CHUNK))));
    const replaced = new Set(keys.map(keyHex));
    const kept = page.filter((e) => !replaced.has(keyHex(e.key)));
    keys.forEach((key, i) => {
      const e = absentIfExpired(found[i]!, q.now);
      if (e !== null && !e.tombstone) kept.push({ key, metadata: e.metadata, expiration: e.expiration });
    });
    return kept.sort((a, b) => Buffer.compare(a.key, b.key));
  }

  async function repairKeys(ns: string, keys: Uint8Array[]): Promise<void> {
    if (keys.length === 0) return;
    const [p, r] = await Promise.all([call("primary", "getMany", (b) => b.getMany(ns, keys)), call("replica", "getMany", (b) => b.getMany(ns, keys))]);
    const now = nowSeconds();
    const toPrimary: StoredEntry[] = [];
    const toReplica: StoredEntry[] = [];
    keys.forEach((_, i) => {
      const a = p[i]!;
      const b = r[i]!;
      if (sameVersion(a, b, now)) return;
      const win = newest(a, b)!;
      (win === a ? toReplica : toPrimary).push(win);
    });
    await Promise.all([
      toPrimary.length ? call("primary", "write", (b) => b.write(toPrimary)) : null,
      toReplica.length ? call("replica", "write", (b) => b.write(toReplica)) : null,
    ]);
  }

  async function repairKey(ns: string, key: Uint8Array): Promise<boolean> {
    const [p, r] = await Promise.all([call("primary", "get", (b) => b.get(ns, key)), call("replica", "get", (b) => b.get(ns, key))]);
    if (sameVersion(p, r, nowSeconds())) return true;
    const win = newest(p, r)!;
    const behind: Side = win === p ? "replica" : "primary";
    await call(behind, "write", (b) => b.write([win]));
    return true;
  }

  /**
   * Tombstone removal: a tombstone older than the grace goes only once both sides hold it (or something newer),
   * and each side removes it only while it still holds exactly that tombstone. A side that lacks it gets it
   * queued instead, so a deleted key can never come back from the side that missed the delete.
   */
  async function collectTombstones(beforeMicros: number): Promise<number> {
    let removed = 0;
    // Walking the primary is enough: a tombstone only the replica holds is copied to the primary by the repair
    // queue or the crawler first (it is newer there), and walking an object store is a HEAD per entry.
    for (const side of ["primary"] as Side[]) {
      let after: { ns: string; key: Uint8Array } | null = null;
      for (;;) {
        const page: EntryRef[] = await call(side, "tombstones", (b) => b.tombstones(beforeMicros, after, 500));
        if (page.length === 0) break;
        after = page[page.length - 1]!;
        const byNs = new Map<string, EntryRef[]>();
        for (const t of page) (byNs.get(t.ns) ?? byNs.set(t.ns, []).get(t.ns)!).push(t);
        for (const [ns, refs] of byNs) {
          if (opts.modeOf(ns) === "primary") {
            if (side === "primary") removed += await call("primary", "removeIfVersion", (b) => b.removeIfVersion(refs));
            continue;
          }
          const there = await call(other(side), "getMany", (b) => b.getMany(ns, refs.map((t) => t.key)));
          const held: EntryRef[] = [];
          const sameThere: EntryRef[] = [];
          refs.forEach((t, i) => {
            const o = there[i]!;
            if (o === null || compareVersions(o.version, t.version) < 0) {
              enqueue(other(side), ns, t.key, "crawler");
              return;
            }
            held.push(t);
            if (o.tombstone && compareVersions(o.version, t.version) === 0) sameThere.push(t);
          });
          // Each side drops its copy only while it is exactly this tombstone.
          if (held.length) removed += await call(side, "removeIfVersion", (b) => b.removeIfVersion(held));
          if (sameThere.length) removed += await call(other(side), "removeIfVersion", (b) => b.removeIfVersion(sameThere));
        }
        if (page.length < 500) break;
      }
    }
    return removed;
  }

  return {
    primary: opts.primary,
    replica: opts.replica,
    repairKey,
    repairKeys,
    suspect,
    park() {
      let n = 0;
      for (const { side, rows } of flying) {
        for (const r of rows) enqueue(side, r.ns, r.key, "write");
        n += rows.length;
      }
      flying.clear();
      try {
        queue.sync();
      } catch (e) {
        opts.log?.(`repair queue could not be synced: ${(e as Error).message}`);
      }
      return n;
    },

    get: getRaced,
    getMany: (ns, keys) => (keys.length === 0 ? Promise.resolve([]) : getManyRaced(ns, keys)),
    async write(rows) {
      if (rows.length === 0) return [];
      // A batch can mix namespaces, and namespaces can have different modes.
      const groups = new Map<ReplicationMode, number[]>();
      rows.forEach((r, i) => {
        const mode = opts.modeOf(r.ns);
        (groups.get(mode) ?? groups.set(mode, []).get(mode)!).push(i);
      });
      if (groups.size === 1) return writeGroup(groups.keys().next().value!, rows);
      const out: boolean[] = new Array(rows.length).fill(false);
      await Promise.all(
        [...groups].map(async ([mode, idx]) => {
          const flags = await writeGroup(mode, idx.map((i) => rows[i]!));
          idx.forEach((i, j) => (out[i] = flags[j]!));
        }),
      );
      return out;
    },
    list: listChecked,
    async purge(nowSecs, tombstoneBeforeMicros) {
      // Expired entries go on each side on its own; tombstones only by the protocol above.
      const [a, b] = await Promise.allSettled([call("primary", "purge", (x) => x.purge(nowSecs, 0)), call("replica", "purge", (x) => x.purge(nowSecs, 0))]);
      let n = (a.status === "fulfilled" ? a.value : 0) + (b.status === "fulfilled" ? b.value : 0);
      n += await collectTombstones(tombstoneBeforeMicros);
      if (a.status === "rejected") throw a.reason;
      return n;
    },
    async dropNamespace(ns) {
      await Promise.all([call("primary", "dropNamespace", (b) => b.dropNamespace(ns)), call("replica", "dropNamespace", (b) => b.dropNamespace(ns)).catch(() => {})]);
    },
    scan: (q) => primaryThenReplica(q.ns, "scan", (b) => b.scan(q)),
    versions: (q) => primaryThenReplica(q.ns, "versions", (b) => b.versions(q)),
    digest: (ns, range, now) => call("primary", "digest", (b) => b.digest(ns, range, now)),
    namespaceIds: (after, limit) => primaryThenReplica(null, "namespaceIds", (b) => b.namespaceIds(after, limit)),
    tombstones: (before, after, limit) => call("primary", "tombstones", (b) => b.tombstones(before, after, limit)),
    async removeIfVersion(refs) {
      const [a, b] = await Promise.all([call("primary", "removeIfVersion", (x) => x.removeIfVersion(refs)), call("replica", "removeIfVersion", (x) => x.removeIfVersion(refs))]);
      return a + b;
    },
    async ping() {
      // Ready while at least one side answers: that is the point of having two.
      const [a, b] = await Promise.all([opts.primary.ping(), opts.replica.ping()]);
      return a || b;
    },
    async close() {
      await Promise.allSettled([opts.primary.close(), opts.replica.close()]);
    },
  };
}

export type { Version };
