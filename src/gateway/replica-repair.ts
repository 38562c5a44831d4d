// Bringing the two sides of a replicated backend together: a key copied from the side with its newest version
// to the side behind (the repair worker and the crawler call this, anti-entropy.ts), and tombstones removed only
// once both sides hold them, so a deleted key never comes back from the side that missed the delete.
import { compareVersions, type StoredEntry } from "../storage/entry.ts";
import type { EntryRef } from "../storage/backend.ts";
import { newest, other, sameVersion, type Sides } from "./replica-sides.ts";
import type { Side } from "./replicated.ts";

export interface ReplicaRepair {
  repairKey(ns: string, key: Uint8Array): Promise<boolean>;
  repairKeys(ns: string, keys: Uint8Array[]): Promise<void>;
  /** Removes tombstones written before beforeMicros from both sides; returns the rows removed. */
  collectTombstones(beforeMicros: number): Promise<number>;
}

export function createReplicaRepair(s: Sides): ReplicaRepair {
  const { opts, call } = s;

  async function repairKeys(ns: string, keys: Uint8Array[]): Promise<void> {
    if (keys.length === 0) return;
    const [p, r] = await Promise.all([call("primary", "getMany", (b) => b.getMany(ns, keys)), call("replica", "getMany", (b) => b.getMany(ns, keys))]);
    const now = s.nowSeconds();
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
    if (sameVersion(p, r, s.nowSeconds())) return true;
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
              s.enqueue(other(side), ns, t.key, "crawler");
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

  return { repairKey, repairKeys, collectTombstones };
}
