// Backfill: copies every entry (tombstones included) of one backend into another, page by page, with
// conditional writes, so it runs online next to live traffic (a newer live write always wins) and can be
// resumed from its checkpoint. The article's rollout step for a new backend.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { Backend } from "../storage/backend.ts";
import { handled, walkPages } from "../storage/walk.ts";

export interface BackfillProgress {
  copied: number;
  /** Entries the target already held at that version or newer. */
  skipped: number;
  total: number;
}

export interface BackfillOptions {
  from: Backend;
  to: Backend;
  /** Only this namespace; all of them when unset. */
  namespace?: string;
  /** Entries to copy, for the progress bar (e.g. countEntries on a Postgres source); 0 when unknown. */
  total?: number;
  checkpointFile: string;
  pageSize?: number;
  onProgress?(p: BackfillProgress): void;
  shouldStop?(): boolean;
}

interface Checkpoint {
  namespace: string | null;
  /** The namespace in progress and the hex of its last key copied. */
  ns: string | null;
  key: string | null;
  copied: number;
  skipped: number;
}

export async function backfill(opts: BackfillOptions): Promise<BackfillProgress & { complete: boolean }> {
  const pageSize = opts.pageSize ?? 500;
  const scope = opts.namespace ?? null;
  let cp: Checkpoint = { namespace: scope, ns: null, key: null, copied: 0, skipped: 0 };
  if (existsSync(opts.checkpointFile)) {
    const saved = JSON.parse(readFileSync(opts.checkpointFile, "utf8")) as Checkpoint;
    if (saved.namespace === scope) cp = saved;
  }
  const save = () => {
    writeFileSync(opts.checkpointFile + ".tmp", JSON.stringify(cp));
    renameSync(opts.checkpointFile + ".tmp", opts.checkpointFile);
  };
  const progress = () => ({ copied: cp.copied, skipped: cp.skipped, total: Math.max(opts.total ?? 0, cp.copied + cp.skipped) });

  const walk = walkPages(opts.from, cp, pageSize, scope ?? undefined);
  for (let step = await walk.next(); ; step = await walk.next()) {
    if (step.done) {
      if (step.value) break;
      // The namespace in progress is gone from the source: start over (conditional writes make it harmless).
      rmSync(opts.checkpointFile, { force: true });
      return backfill(opts);
    }
    if (opts.shouldStop?.()) {
      save();
      await walk.return(false);
      return { ...progress(), complete: false };
    }
    const { page } = step.value;
    const applied = await opts.to.write(page);
    const n = applied.filter(Boolean).length;
    cp.copied += n;
    cp.skipped += page.length - n;
    handled(cp, page);
    save();
    opts.onProgress?.(progress());
  }
  rmSync(opts.checkpointFile, { force: true });
  return { ...progress(), complete: true };
}
