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
//
// This file holds the modes, the options and the assembly; the parts live in replica-sides.ts (calls to each
// side, suspect keys and floors), write-race.ts, read-race.ts, list-merge.ts and replica-repair.ts.
import type { Clock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import type { Backend } from "../storage/backend.ts";
import { createListMerge } from "./list-merge.ts";
import { createReadRace } from "./read-race.ts";
import { createReplicaRepair } from "./replica-repair.ts";
import { createSides } from "./replica-sides.ts";
import type { RepairQueue } from "./repair-queue.ts";
import { createWriteRace } from "./write-race.ts";

export { absentIfExpired, newest } from "./replica-sides.ts";

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

export function createReplicatedBackend(opts: ReplicatedOptions): ReplicatedBackend {
  const s = createSides(opts);
  const { call } = s;
  const writes = createWriteRace(s);
  const reads = createReadRace(s);
  const repair = createReplicaRepair(s);

  /** Primary first; the replica answers when the primary cannot (list has no versions to race on). */
  function primaryThenReplica<T>(ns: string | null, op: string, f: (b: Backend) => Promise<T>): Promise<T> {
    const p = call("primary", op, f);
    if (ns !== null && opts.modeOf(ns) === "primary") return p;
    return p.catch((e) =>
      call("replica", op, f).catch(() => {
        s.bothFailed.inc({ op });
        throw e;
      }),
    );
  }

  const afterFlights = <T>(f: () => Promise<T>): Promise<T> => (s.flying.size ? s.settle().then(f) : f());

  return {
    primary: opts.primary,
    replica: opts.replica,
    repairKey: repair.repairKey,
    repairKeys: repair.repairKeys,
    suspect: s.suspect,
    park: writes.park,

    get: reads.get,
    getMany: reads.getMany,
    write: writes.write,
    list: createListMerge(s),
    async purge(nowSecs, tombstoneBeforeMicros) {
      // A write acknowledged by one side may still be on its way to the other: once it lands, a tombstone it
      // carries is held by both and can go now, as from a single backend, instead of at the next purge.
      await s.settle();
      // Expired entries go on each side on its own; tombstones only by the protocol in replica-repair.ts.
      const [a, b] = await Promise.allSettled([call("primary", "purge", (x) => x.purge(nowSecs, 0)), call("replica", "purge", (x) => x.purge(nowSecs, 0))]);
      let n = (a.status === "fulfilled" ? a.value : 0) + (b.status === "fulfilled" ? b.value : 0);
      n += await repair.collectTombstones(tombstoneBeforeMicros);
      if (a.status === "rejected") throw a.reason;
      return n;
    },
    async dropNamespace(ns) {
      // Else a write acknowledged before the drop could land on the slower side after it, and its entries
      // outlive the namespace there (and the crawler would copy them back).
      await s.settle();
      await Promise.all([call("primary", "dropNamespace", (b) => b.dropNamespace(ns)), call("replica", "dropNamespace", (b) => b.dropNamespace(ns)).catch(() => {})]);
    },
    // One side answers these alone (backfill, rebalance, tools): they wait for writes in flight to land first,
    // so they see every write acknowledged before them, whichever side acknowledged it.
    scan: (q) => afterFlights(() => primaryThenReplica(q.ns, "scan", (b) => b.scan(q))),
    versions: (q) => afterFlights(() => primaryThenReplica(q.ns, "versions", (b) => b.versions(q))),
    digest: (ns, range, now) => afterFlights(() => call("primary", "digest", (b) => b.digest(ns, range, now))),
    namespaceIds: (after, limit) => afterFlights(() => primaryThenReplica(null, "namespaceIds", (b) => b.namespaceIds(after, limit))),
    tombstones: (before, after, limit) => afterFlights(() => call("primary", "tombstones", (b) => b.tombstones(before, after, limit))),
    async removeIfVersion(refs) {
      // An acknowledged write newer than a ref keeps that entry on both sides, also on the side it is still
      // on its way to.
      await s.settle();
      const [a] = await Promise.all([call("primary", "removeIfVersion", (x) => x.removeIfVersion(refs)), call("replica", "removeIfVersion", (x) => x.removeIfVersion(refs))]);
      // Entries removed, counted once (as on the primary, the side tombstones() walks), not once per copy.
      return a;
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
