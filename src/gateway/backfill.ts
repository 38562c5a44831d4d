// Backfill: copies every entry (tombstones included) of one backend into another, page by page, with
// conditional writes, so it runs online next to live traffic (a newer live write always wins) and can be
// resumed from its checkpoint. The article's rollout step for a new backend.
import { existsSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import type { Backend } from "../storage/store.ts";

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

  async function* namespaces(): AsyncGenerator<string> {
    if (scope !== null) {
      yield scope;
      return;
    }
    let after: string | null = null;
    for (;;) {
      const ids: string[] = await opts.from.namespaceIds(after, 100);
      yield* ids;
      if (ids.length < 100) return;
      after = ids[ids.length - 1]!;
    }
  }

  // On resume, namespaces before the one in progress are done (same source, same order).
  let skipping = cp.ns !== null;
  for await (const ns of namespaces()) {
    if (skipping) {
      if (ns !== cp.ns) continue;
      skipping = false;
    } else {
      cp.ns = ns;
      cp.key = null;
    }
    for (;;) {
      if (opts.shouldStop?.()) {
        save();
        return { ...progress(), complete: false };
      }
      const page = await opts.from.scan({ ns, after: cp.key === null ? null : new Uint8Array(Buffer.from(cp.key, "hex")), before: null, limit: pageSize });
      if (page.length === 0) break;
      const applied = await opts.to.write(page);
      const n = applied.filter(Boolean).length;
      cp.copied += n;
      cp.skipped += page.length - n;
      cp.key = Buffer.from(page[page.length - 1]!.key).toString("hex");
      save();
      opts.onProgress?.(progress());
      if (page.length < pageSize) break;
    }
  }
  if (skipping) {
    // The namespace in progress is gone from the source: start over (conditional writes make it harmless).
    rmSync(opts.checkpointFile, { force: true });
    return backfill(opts);
  }
  rmSync(opts.checkpointFile, { force: true });
  return { ...progress(), complete: true };
}
