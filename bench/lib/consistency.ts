// The adversarial consistency harness from the Workers KV article: several clients, each bound to one kvdrive
// instance, rapidly interleave writes, deletes and reads of a small set of keys. The history is recorded and
// analysed for read-your-own-write violations on the same instance, staleness across instances, and, after
// convergence, lost acknowledged writes and resurrected deletes. `bun test` runs a small form
// (test/kv/consistency.test.ts); `bun run bench consistency` runs the long one.
import { KVClient } from "../../src/client.ts";

export interface Instance {
  name: string;
  baseURL: string; // .../client/v4
  apiToken: string;
}

export interface Op {
  client: number;
  instance: string;
  kind: "put" | "delete" | "get";
  key: string;
  /** put: the unique value written; get: the value read (null: no value). */
  value: string | null;
  start: number;
  end: number;
  ok: boolean;
}

export interface ConsistencyOptions {
  instances: Instance[];
  accountId: string;
  namespaceId: string;
  clientsPerInstance: number;
  keys: number;
  durationMs: number;
  /** Shares of writes and deletes among operations; the rest are reads. */
  writeShare?: number;
  deleteShare?: number;
  /** Called once while the load runs (e.g. to stop a backend), at this fraction of the duration. */
  fault?: { at: number; run(): Promise<void> };
  random?: () => number;
}

export interface Report {
  ops: number;
  reads: number;
  writesAcked: number;
  failed: number;
  /** Same-instance reads that returned something older than the client's own last acknowledged write. */
  ryowViolations: number;
  ryowViolationPct: number;
  /** Reads on another instance that returned an older value than the newest write acknowledged before the read began. */
  staleReads: number;
  stalePct: number;
  /** How long those reads were behind: read start minus the acknowledgement of the newer write, in ms. */
  staleness: { p50: number; p99: number; max: number };
  /** Filled by checkConvergence. */
  lost?: number;
  resurrected?: number;
}

const key = (i: number) => `k${i}`;

export async function runConsistency(o: ConsistencyOptions): Promise<Op[]> {
  const rnd = o.random ?? Math.random;
  const wShare = o.writeShare ?? 0.4;
  const dShare = o.deleteShare ?? 0.1;
  const history: Op[] = [];
  const t0 = performance.now();
  const until = t0 + o.durationMs;
  let faultDone: Promise<void> | null = null;
  let seq = 0;
  const clients = o.instances.flatMap((inst) =>
    Array.from({ length: o.clientsPerInstance }, () => ({
      inst,
      kv: new KVClient({ baseURL: inst.baseURL, apiToken: inst.apiToken, accountId: o.accountId, namespaceId: o.namespaceId }),
    })),
  );
  await Promise.all(
    clients.map(async (c, id) => {
      while (performance.now() < until) {
        if (o.fault && !faultDone && performance.now() - t0 >= o.fault.at * o.durationMs) faultDone = o.fault.run();
        const k = key(Math.floor(rnd() * o.keys));
        const r = rnd();
        const start = performance.now();
        const op: Op = { client: id, instance: c.inst.name, kind: "get", key: k, value: null, start, end: 0, ok: true };
        try {
          if (r < wShare) {
            op.kind = "put";
            op.value = `c${id}-${seq++}`;
            await c.kv.put(k, op.value);
          } else if (r < wShare + dShare) {
            op.kind = "delete";
            await c.kv.delete(k);
          } else {
            // cacheTtl is the API's floor (30 s): reads are served by the instance's cache when it can.
            op.value = (await c.kv.get(k, { type: "text", cacheTtl: 30 })) ?? null;
          }
        } catch {
          op.ok = false;
        }
        op.end = performance.now();
        history.push(op);
      }
    }),
  );
  await faultDone;
  return history;
}

const pct = (sorted: number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]! : 0);

/**
 * Analyses a history. A read R of key k returns the value of some write W (or null, from a delete or nothing).
 * RYOW: for R's client, let M be its own last acknowledged write of k that ended before R started. R violates
 * read-your-own-write if what it returned was produced by a write that ended before M started (strictly
 * older than M), or is null with no delete of k acknowledged at or after M's start... Staleness: for reads on
 * instances other than the writer's, compared with the newest write of k acknowledged before R started.
 */
export function analyse(history: Op[]): Report {
  const writes = history.filter((h) => h.kind !== "get" && h.ok);
  const byValue = new Map<string, Op>();
  for (const w of writes) if (w.kind === "put") byValue.set(w.value!, w);
  const writesOf = new Map<string, Op[]>();
  for (const w of writes) (writesOf.get(w.key) ?? writesOf.set(w.key, []).get(w.key)!).push(w);
  for (const ws of writesOf.values()) ws.sort((a, b) => a.end - b.end);

  /** Is the answer to read R at least as new as write M (not strictly older)? */
  const notOlderThan = (r: Op, m: Op): boolean => {
    if (r.value !== null) {
      const src = byValue.get(r.value);
      if (!src) return false; // a value nobody wrote: certainly a violation
      return !(src.end < m.start);
    }
    // null: some delete of the key that did not end before M started (or M itself is a delete).
    if (m.kind === "delete") return true;
    return (writesOf.get(r.key) ?? []).some((w) => w.kind === "delete" && !(w.end < m.start));
  };

  let reads = 0;
  let ryow = 0;
  let stale = 0;
  const lags: number[] = [];
  for (const r of history) {
    if (r.kind !== "get" || !r.ok) continue;
    reads++;
    const ws = writesOf.get(r.key) ?? [];
    let own: Op | null = null;
    let newest: Op | null = null;
    for (const w of ws) {
      if (w.end >= r.start) break;
      newest = w;
      if (w.client === r.client) own = w;
    }
    if (own && !notOlderThan(r, own)) ryow++;
    if (newest && newest.instance !== r.instance && !notOlderThan(r, newest)) {
      stale++;
      lags.push(r.start - newest.end);
    }
  }
  lags.sort((a, b) => a - b);
  return {
    ops: history.length,
    reads,
    writesAcked: writes.length,
    failed: history.filter((h) => !h.ok).length,
    ryowViolations: ryow,
    ryowViolationPct: reads ? (ryow / reads) * 100 : 0,
    staleReads: stale,
    stalePct: reads ? (stale / reads) * 100 : 0,
    staleness: { p50: pct(lags, 0.5), p99: pct(lags, 0.99), max: lags.length ? lags[lags.length - 1]! : 0 },
  };
}

/**
 * After the load and convergence: each key's final value (read from every instance, uncached, via `read`)
 * must come from an acknowledged write that no other acknowledged write of the key follows entirely (present,
 * or superseded by a newer one), and a key whose last acknowledged operations are deletes must not hold a
 * value written before them (resurrected).
 */
export async function checkConvergence(history: Op[], keys: number, read: (key: string) => Promise<string | null>): Promise<{ lost: number; resurrected: number; details: string[] }> {
  const writes = history.filter((h) => h.kind !== "get" && h.ok);
  const details: string[] = [];
  let lost = 0;
  let resurrected = 0;
  for (let i = 0; i < keys; i++) {
    const k = key(i);
    const ws = writes.filter((w) => w.key === k);
    if (ws.length === 0) continue;
    const final = await read(k);
    // Candidates: writes (acked, or not: an unacknowledged write may have landed) not followed entirely by an acked one.
    const all = history.filter((h) => h.kind !== "get" && h.key === k);
    const maximal = all.filter((w) => !ws.some((x) => x !== w && x.start > w.end));
    if (final === null) {
      if (!maximal.some((w) => w.kind === "delete")) {
        lost++;
        details.push(`${k}: nothing stored, but the last acknowledged writes were ${maximal.map((w) => w.value).join(", ")}`);
      }
      continue;
    }
    const src = all.find((w) => w.kind === "put" && w.value === final);
    if (!src) {
      lost++;
      details.push(`${k}: holds ${final}, which no client wrote`);
    } else if (!maximal.includes(src)) {
      const after = ws.filter((x) => x.start > src.end);
      if (after.every((x) => x.kind === "delete")) resurrected++;
      else lost++;
      details.push(`${k}: holds ${final}, superseded by ${after.map((x) => x.kind + ":" + (x.value ?? "")).join(", ")}`);
    }
  }
  return { lost, resurrected, details };
}
