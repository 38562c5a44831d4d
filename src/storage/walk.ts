// Walking every entry of a backend page by page, namespace by namespace, resumable from a checkpoint: what
// backfill and rebalance share. The caller advances `pos.key` once it has handled a page (then saves it), so a
// run stopped anywhere resumes at the first page not yet handled.
import { keyFromHex, keyHex, type StoredEntry } from "./entry.ts";
import type { Backend } from "./backend.ts";

export interface WalkPosition {
  /** The namespace in progress, or null before the first. */
  ns: string | null;
  /** Hex of the last key handled in ns, or null. */
  key: string | null;
}

export interface WalkPage {
  ns: string;
  page: StoredEntry[];
}

const NAMESPACE_PAGE = 100;

/** Marks a page handled: the next run resumes after its last key. */
export const handled = (pos: WalkPosition, page: StoredEntry[]) => {
  pos.key = keyHex(page[page.length - 1]!.key);
};

/**
 * Pages of every entry of `from` (or of namespace `only`), in the backend's namespace order. On resume, the
 * namespaces before `pos.ns` are done and skipped. Returns false when `pos.ns` no longer exists (dropped
 * meanwhile): the caller starts over, which conditional writes make harmless.
 */
export async function* walkPages(from: Pick<Backend, "namespaceIds" | "scan">, pos: WalkPosition, pageSize: number, only?: string): AsyncGenerator<WalkPage, boolean> {
  let skipping = pos.ns !== null;
  let after: string | null = null;
  for (;;) {
    const ids: string[] = only !== undefined ? [only] : await from.namespaceIds(after, NAMESPACE_PAGE);
    for (const ns of ids) {
      if (skipping) {
        if (ns !== pos.ns) continue;
        skipping = false;
      } else {
        pos.ns = ns;
        pos.key = null;
      }
      for (;;) {
        const page = await from.scan({ ns, after: pos.key === null ? null : keyFromHex(pos.key), before: null, limit: pageSize });
        if (page.length === 0) break;
        yield { ns, page };
        if (page.length < pageSize) break;
      }
    }
    if (only !== undefined || ids.length < NAMESPACE_PAGE) return !skipping;
    after = ids[ids.length - 1]!;
  }
}
