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

// ---------------------------------------------------------------------------------------------------------
// Lists during an outage (issue 10, item 14). A namespace is seeded (small keys and a few large values), a
// fault is injected (a shard stopped), then writers overwrite, delete and add keys while listers page through
// the whole namespace. Every list must be complete or fail (503): a successful list that leaves out a key
// certainly live during the whole list, or shows one certainly deleted, is counted.

export interface ListOutageOptions {
  /** .../client/v4 of one kvdrive instance. */
  baseURL: string;
  apiToken: string;
  accountId: string;
  namespaceId: string;
  /** Small keys seeded before the fault (the issue's case: 600). */
  smallKeys: number;
  /** Large keys seeded and overwritten during the load, of largeBytes each (default 1 MiB). */
  largeKeys: number;
  largeBytes?: number;
  writers: number;
  listers: number;
  durationMs: number;
  /** Page size of each list request (default 1000); the listers follow cursors to the end. */
  listLimit?: number;
  /**
   * Runs after seeding and before the load, e.g. stops a shard. Its writes go through `write` so they are part
   * of the history (e.g. keys written while the replica is halted, which then only the primary holds).
   */
  fault?: (write: (key: string, kind: "put" | "delete", value?: string) => Promise<boolean>) => Promise<void>;
  random?: () => number;
}

interface WriteOp {
  key: string;
  kind: "put" | "delete";
  start: number;
  end: number;
  ok: boolean;
}

interface ListRun {
  start: number;
  end: number;
  status: number;
  keys: Set<string>;
  error?: string;
}

export interface ListOutageReport {
  writes: number;
  writesAcked: number;
  lists: number;
  /** Lists that answered success and were checked. */
  succeeded: number;
  /** Lists that failed with 503 (allowed). */
  unavailable: number;
  /** Lists that failed otherwise (a defect). */
  otherErrors: number;
  /** Over all successful lists: keys certainly live during the list but not listed, and certainly deleted but listed. */
  missing: number;
  extra: number;
  /** A few distinct reasons lists failed, for the log. */
  failures: string[];
  /** The worst successful list, for the log. */
  worst: { listed: number; live: number; missing: string[]; extra: string[] } | null;
}

export async function runListDuringOutage(o: ListOutageOptions): Promise<ListOutageReport> {
  const rnd = o.random ?? Math.random;
  const base = `${o.baseURL}/accounts/${o.accountId}/storage/kv/namespaces/${o.namespaceId}`;
  const headers = { authorization: `Bearer ${o.apiToken}` };
  const big = new Uint8Array(o.largeBytes ?? 1024 * 1024).fill(97);
  const writes: WriteOp[] = [];
  const lists: ListRun[] = [];
  let otherErrors = 0;

  const record = async (key: string, kind: "put" | "delete", body?: string | Uint8Array): Promise<boolean> => {
    const op: WriteOp = { key, kind, start: performance.now(), end: 0, ok: false };
    try {
      const res = await fetch(`${base}/values/${encodeURIComponent(key)}`, { method: kind === "put" ? "PUT" : "DELETE", headers, body });
      await res.arrayBuffer();
      op.ok = res.status === 200;
    } catch {
      op.ok = false;
    }
    op.end = performance.now();
    writes.push(op);
    return op.ok;
  };

  // Seed: one bulk write of the small keys, then the large ones.
  const small = Array.from({ length: o.smallKeys }, (_, i) => `s${String(i).padStart(4, "0")}`);
  const large = Array.from({ length: o.largeKeys }, (_, i) => `big${i}`);
  const seedStart = performance.now();
  for (let i = 0; i < small.length; i += 1000) {
    const res = await fetch(`${base}/bulk`, { method: "PUT", headers, body: JSON.stringify(small.slice(i, i + 1000).map((key) => ({ key, value: `seed-${key}` }))) });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`seeding failed with ${res.status}`);
  }
  const seedEnd = performance.now();
  for (const key of small) writes.push({ key, kind: "put", start: seedStart, end: seedEnd, ok: true });
  for (const key of large) await record(key, "put", big);
  if (writes.some((w) => !w.ok)) throw new Error("seeding failed");

  await o.fault?.((key, kind, value) => record(key, kind, kind === "put" ? (value ?? "fault") : undefined));

  const until = performance.now() + o.durationMs;
  let added = 0;
  // A large key has one writer: over an object store without compare-and-swap, two concurrent writes of one
  // key can land out of order for a moment (s3-conditional.ts), and a list then rightly answers 503.
  const writer = async (_: unknown, w: number) => {
    const mine = w < large.length ? large[w]! : null;
    while (performance.now() < until) {
      const r = rnd();
      if (r < 0.4) await record(small[Math.floor(rnd() * small.length)]!, "put", `v${Math.floor(rnd() * 1e9)}`);
      else if (r < 0.6) await record(small[Math.floor(rnd() * small.length)]!, "delete");
      else if (r < 0.95) await record(`n${String(added++).padStart(5, "0")}`, "put", "new");
      else if (mine) await record(mine, r < 0.98 ? "put" : "delete", r < 0.98 ? big : undefined);
    }
  };
  const lister = async () => {
    while (performance.now() < until) {
      const run: ListRun = { start: performance.now(), end: 0, status: 200, keys: new Set() };
      let cursor = "";
      try {
        for (;;) {
          const res = await fetch(`${base}/keys?limit=${o.listLimit ?? 1000}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`, { headers });
          const body = (await res.json()) as { success: boolean; result: Array<{ name: string }>; result_info?: { cursor?: string } };
          if (res.status !== 200 || !body.success) {
            run.status = res.status;
            run.error = `${res.status} ${JSON.stringify((body as { errors?: unknown }).errors ?? null).slice(0, 300)}`;
            break;
          }
          for (const k of body.result) run.keys.add(k.name);
          cursor = body.result_info?.cursor ?? "";
          if (!cursor) break;
        }
      } catch (e) {
        run.status = 0;
        run.error = `no answer after ${Math.round(performance.now() - run.start)} ms: ${String(e).slice(0, 200)}`;
      }
      run.end = performance.now();
      lists.push(run);
    }
  };
  await Promise.all([...Array.from({ length: o.writers }, writer), ...Array.from({ length: o.listers }, lister)]);

  // Per key, its writes in order of start.
  const byKey = new Map<string, WriteOp[]>();
  for (const w of writes) (byKey.get(w.key) ?? byKey.set(w.key, []).get(w.key)!).push(w);

  /** Whether the key was certainly live (true), certainly absent (false) during [start, end], or not known (null). */
  const stateDuring = (ops: WriteOp[], start: number, end: number): boolean | null => {
    const before = ops.filter((w) => w.start < end);
    if (before.length === 0) return false;
    if (before.some((w) => w.end > start)) return null; // a write overlapping the list: either answer is right
    const acked = before.filter((w) => w.ok);
    // The writes no acknowledged write follows entirely: any of them may be the last to have landed.
    const maximal = before.filter((w) => !acked.some((x) => x !== w && x.start > w.end));
    if (maximal.some((w) => !w.ok)) return null; // a failed write may or may not have landed
    const kinds = new Set(maximal.map((w) => w.kind));
    return kinds.size === 1 ? kinds.has("put") : null;
  };

  let missing = 0;
  let extra = 0;
  let worst: ListOutageReport["worst"] = null;
  let succeeded = 0;
  let unavailable = 0;
  for (const l of lists) {
    if (l.status === 503) {
      unavailable++;
      continue;
    }
    if (l.status !== 200) {
      otherErrors++;
      continue;
    }
    succeeded++;
    const miss: string[] = [];
    const ext: string[] = [];
    let live = 0;
    for (const [key, ops] of byKey) {
      const s = stateDuring(ops, l.start, l.end);
      if (s === true) live++;
      if (s === true && !l.keys.has(key)) miss.push(key);
      if (s === false && l.keys.has(key)) ext.push(key);
    }
    missing += miss.length;
    extra += ext.length;
    if (miss.length + ext.length > (worst ? worst.missing.length + worst.extra.length : 0)) worst = { listed: l.keys.size, live, missing: miss.slice(0, 20), extra: ext.slice(0, 20) };
  }
  const failures = [...new Set(lists.flatMap((l) => (l.error ? [l.error] : [])))].slice(0, 5);
  return { writes: writes.length, writesAcked: writes.filter((w) => w.ok).length, lists: lists.length, succeeded, unavailable, otherErrors, missing, extra, failures, worst };
}
