// The pooler's query cache statuses from kvdrive's /metrics, so a row labelled "cached" is shown to have been
// served from the cache (kvdrive_query_cache_requests_total by status), not assumed to be.
import type { Row } from "./result.ts";
import { AUTH, type KvdriveProcess } from "./stack.ts";

export type CacheCounts = Record<string, number>;

export async function queryCacheCounts(k: KvdriveProcess): Promise<CacheCounts> {
  const text = await (await fetch(`${k.origin}/metrics`, { headers: AUTH })).text();
  const counts: CacheCounts = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("kvdrive_query_cache_requests_total{")) continue;
    const status = /status="([^"]+)"/.exec(line)?.[1] ?? "unknown";
    counts[status] = (counts[status] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return counts;
}

/**
 * Runs a measurement and checks that at least half of what the pooler saw during it was a cache hit. A row
 * that was not served from the cache is marked failed, so it never enters a "cached" ratio.
 */
export async function measuredAsCached(k: KvdriveProcess, run: () => Promise<Row>): Promise<Row> {
  const before = await queryCacheCounts(k);
  const row = await run();
  const after = await queryCacheCounts(k);
  const delta = Object.fromEntries(Object.keys(after).map((s) => [s, after[s]! - (before[s] ?? 0)]));
  const total = Object.values(delta).reduce((a, b) => a + b, 0);
  const hits = delta.hit ?? 0;
  const share = total ? hits / total : 0;
  const summary = Object.entries(delta).filter(([, n]) => n > 0).map(([s, n]) => `${s} ${n}`).join(", ") || "no lookups";
  if (share < 0.5) return { ...row, status: row.status === "errors" ? "errors" : "failed", note: `not served from the query cache (statuses during the run: ${summary})` };
  return { ...row, note: `query cache statuses during the run: ${summary}` };
}
