// Rebalance after adding a cluster: every key whose owner changed moves from the cluster holding it to its new
// owner (a conditional write there, then a removal here only while it still holds that version), page by page,
// with a checkpoint after each page so an interrupted run resumes where it stopped. When every cluster has
// been walked, the new ring is stored on the first cluster and processes stop reading old owners.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { ShardedBackend } from "./sharded.ts";
import type { StoredEntry } from "./entry.ts";
import { handled, walkPages } from "./walk.ts";

export interface RebalanceProgress {
  /** Entries walked so far, and the total when the run started. */
  scanned: number;
  total: number;
  /** Entries moved to their new owner. */
  moved: number;
}

export interface RebalanceOptions {
  /** Where progress is kept between runs (e.g. `${dataDir}/rebalance.json`). */
  checkpointFile: string;
  pageSize?: number;
  onProgress?(p: RebalanceProgress): void;
  /** Checked between pages: stop early (the checkpoint keeps the place). */
  shouldStop?(): boolean;
}

interface Checkpoint {
  target: string[];
  shard: number;
  ns: string | null;
  /** Hex of the last key handled in ns, or null. */
  key: string | null;
  scanned: number;
  moved: number;
}

export async function rebalance(b: ShardedBackend, opts: RebalanceOptions): Promise<RebalanceProgress & { complete: boolean }> {
  const pageSize = opts.pageSize ?? 1000;
  const target = [...b.ring.nodes];
  let cp: Checkpoint = { target, shard: 0, ns: null, key: null, scanned: 0, moved: 0 };
  if (existsSync(opts.checkpointFile)) {
    const saved = JSON.parse(readFileSync(opts.checkpointFile, "utf8")) as Checkpoint;
    // A checkpoint for another ring (clusters changed again) is stale: start over, moves are idempotent.
    if (saved.target.join(",") === target.join(",")) cp = saved;
  }
  const save = () => {
    const tmp = opts.checkpointFile + ".tmp";
    writeFileSync(tmp, JSON.stringify(cp));
    renameSync(tmp, opts.checkpointFile);
  };
  const total = await b.countEntries();
  const progress = () => ({ scanned: cp.scanned, total: Math.max(total, cp.scanned), moved: cp.moved });

  for (; cp.shard < b.shards.length; cp.shard++, cp.ns = null, cp.key = null) {
    const shard = b.shards[cp.shard]!;
    // A cluster new to the ring holds only keys it owns: nothing to move from it.
    const prev = b.previous();
    if (prev && !prev.nodes.includes(shard.id)) continue;
    // Namespaces come in the cluster's own order; on resume, those before the checkpoint's are done already.
    const walk = walkPages(shard.backend, cp, pageSize);
    let found = true;
    for (let step = await walk.next(); ; step = await walk.next()) {
      if (step.done) {
        found = step.value;
        break;
      }
      if (opts.shouldStop?.()) {
        save();
        await walk.return(false);
        return { ...progress(), complete: false };
      }
      const { ns, page } = step.value;
      const moving: StoredEntry[] = page.filter((e) => b.ownerOf(ns, e.key) !== shard);
      if (moving.length) {
        const groups = new Map<typeof shard, StoredEntry[]>();
        for (const e of moving) {
          const owner = b.ownerOf(ns, e.key);
          (groups.get(owner) ?? groups.set(owner, []).get(owner)!).push(e);
        }
        // The new owner first: a key is never absent from both.
        await Promise.all([...groups].map(([owner, rows]) => owner.backend.write(rows)));
        await shard.backend.removeIfVersion(moving.map((e) => ({ ns, key: e.key, version: e.version })));
        cp.moved += moving.length;
      }
      cp.scanned += page.length;
      handled(cp, page);
      save();
      opts.onProgress?.(progress());
    }
    if (!found) {
      // The namespace in progress was dropped meanwhile: walk this cluster again from its start.
      cp.shard--;
      continue;
    }
  }
  await b.setRing(target, b.ring.vnodes);
  await b.refreshRing();
  rmSync(opts.checkpointFile, { force: true });
  return { ...progress(), complete: true };
}

