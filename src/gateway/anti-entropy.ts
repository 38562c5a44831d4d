// Convergence of the two backends: the repair worker drains the repair queue, and the crawler walks both
// backends in the background, compares per-range digests and walks key by key only where they differ.
import type { Clock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import type { Backend, KeyVersion } from "../storage/backend.ts";
import { diffRanges, FULL_RANGE, splitRange } from "../storage/digest.ts";
import { compareVersions, keyFromHex, keyHex, type KeyRange, type RangeDigest } from "../storage/entry.ts";
import type { RepairQueue, RepairTask } from "./repair-queue.ts";
import { absentIfExpired, type ReplicatedBackend, type ReplicationMode } from "./replicated.ts";

/**
 * Runs fn at most once at a time: a call while a run is in progress gets that run. The promise is kept until it
 * settles and cleared after, never from inside (a run that finds nothing to do may finish synchronously,
 * before it could be stored). `current()` is the run in progress, for stop().
 */
function oneAtATime<T>(fn: () => Promise<T>): { run(): Promise<T>; current(): Promise<T> | undefined } {
  let running: Promise<T> | undefined;
  return {
    run() {
      if (running) return running;
      const p = fn();
      running = p;
      p.finally(() => {
        if (running === p) running = undefined;
      }).catch(() => {});
      return p;
    },
    current: () => running,
  };
}

export interface RepairWorker {
  /** One round now: repairs what is due. Resolves to the keys repaired. */
  runOnce(): Promise<number>;
  stop(): Promise<void>;
}

export function startRepairWorker(opts: { backend: ReplicatedBackend; queue: RepairQueue; clock: Clock; intervalMs?: number; batch?: number; concurrency?: number }): RepairWorker {
  const { backend, queue, clock } = opts;
  const batch = opts.batch ?? 256;
  const concurrency = opts.concurrency ?? 8;
  let stopped = false;

  async function round(): Promise<number> {
    let repaired = 0;
    for (;;) {
      const tasks = queue.take(clock.now(), batch);
      if (tasks.length === 0) break;
      // Grouped by namespace, in batches: one read per side and one write per side behind for each group.
      const groups = new Map<string, RepairTask[]>();
      for (const t of tasks) (groups.get(t.namespace) ?? groups.set(t.namespace, []).get(t.namespace)!).push(t);
      const chunks: RepairTask[][] = [];
      for (const g of groups.values()) for (let i = 0; i < g.length; i += 64) chunks.push(g.slice(i, i + 64));
      let next = 0;
      const lane = async () => {
        while (next < chunks.length) {
          const chunk = chunks[next++]!;
          try {
            await backend.repairKeys(chunk[0]!.namespace, chunk.map((t) => keyFromHex(t.key)));
            for (const t of chunk) queue.done(t);
            repaired += chunk.length;
          } catch {
            for (const t of chunk) queue.failed(t);
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(concurrency, chunks.length) }, lane));
      if (tasks.length < batch || stopped) break;
    }
    return repaired;
  }

  const rounds = oneAtATime(round);
  const runOnce = () => rounds.run();

  const timer = setInterval(() => {
    if (!stopped) runOnce().catch(() => {});
  }, opts.intervalMs ?? 250);
  timer.unref?.();
  return {
    runOnce,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await rounds.current()?.catch(() => {});
    },
  };
}

export interface CrawlerOptions {
  backend: ReplicatedBackend;
  queue: RepairQueue;
  clock: Clock;
  metrics: Registry;
  /** The namespace's mode: namespaces in "primary" mode are not compared (their replica is not kept). */
  modeOf(ns: string): ReplicationMode | Promise<ReplicationMode>;
  /** Keys digested or compared per second, across both backends. */
  keysPerSecond: number;
  intervalSeconds: number;
  /** Start the first pass after this long (default: intervalSeconds). */
  firstPassAfterMs?: number;
  log?: (msg: string) => void;
}

export interface CrawlPass {
  namespaces: number;
  rangesCompared: number;
  rangesDiffering: number;
  keysCompared: number;
  /** Keys found different (or missing on one side) and repaired. */
  divergent: number;
  /** Namespaces whose walk failed (a backend error); the next pass tries them again. */
  failed: number;
  /** The first failure's message, when there was one. */
  error?: string;
}

export interface Crawler {
  /** One full pass over every namespace of both backends, now. Passes never overlap. */
  runPass(): Promise<CrawlPass>;
  readonly lastPass: CrawlPass | null;
  stop(): Promise<void>;
}

/** Ranges a namespace is first cut into; a differing range holding more than WALK_MAX keys is cut again. */
const SPLIT = 16;
const WALK_MAX = 2_000;
const PAGE = 500;
const MAX_DEPTH = 6;
const REPAIR_BATCH = 256;

export function startCrawler(opts: CrawlerOptions): Crawler {
  const { backend, clock } = opts;
  const m = opts.metrics;
  const passes = m.counter("kvdrive_crawler_passes_total", "Completed anti-entropy passes.");
  const keysCompared = m.counter("kvdrive_crawler_keys_compared_total", "Keys compared one by one in ranges whose digests differed.");
  const rangesCompared = m.counter("kvdrive_crawler_ranges_compared_total", "Key ranges whose digests were compared.");
  const divergence = m.gauge("kvdrive_crawler_divergent_keys", "Keys found divergent in the last completed pass (drift).");
  const repaired = m.counter("kvdrive_crawler_repairs_total", "Keys the crawler repaired.");
  const failures = m.counter("kvdrive_crawler_namespace_errors_total", "Namespaces a crawler pass could not compare (a backend error).");
  const progress = m.gauge("kvdrive_crawler_progress_ratio", "Share of namespaces done in the current pass (1 when idle).");
  progress.set(1);
  let lastPass: CrawlPass | null = null;
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  // A token bucket: spending n keys waits until the rate allows them. The budget is what bounds CPU and I/O.
  let allowance = 0;
  let last = performance.now();
  async function spend(n: number) {
    const rate = opts.keysPerSecond;
    for (;;) {
      if (stopped) throw new Error("crawler stopped");
      const now = performance.now();
      allowance = Math.min(rate, allowance + ((now - last) / 1000) * rate);
      last = now;
      if (allowance >= Math.min(n, rate)) {
        allowance -= n;
        return;
      }
      await Bun.sleep(Math.max(5, Math.ceil(((Math.min(n, rate) - allowance) / rate) * 1000)));
    }
  }

  async function digestBoth(ns: string, ranges: KeyRange[], now: number): Promise<{ p: RangeDigest[]; r: RangeDigest[] }> {
    const p: RangeDigest[] = [];
    const r: RangeDigest[] = [];
    for (const range of ranges) {
      const [a, b] = await Promise.all([backend.primary.digest(ns, range, now), backend.replica.digest(ns, range, now)]);
      p.push({ range, ...a });
      r.push({ range, ...b });
      await spend(Math.max(1, Math.ceil((a.count + b.count) / 100)));
    }
    return { p, r };
  }

  async function versionsIn(b: Backend, ns: string, range: KeyRange): Promise<KeyVersion[]> {
    const out: KeyVersion[] = [];
    // scan bounds are exclusive and a range's start is inclusive: the start key itself is looked up on its own.
    if (range.start.length > 0) {
      const first = await b.get(ns, range.start);
      if (first) out.push({ key: first.key, version: first.version, tombstone: first.tombstone, expiration: first.expiration });
    }
    let after: Uint8Array | null = range.start.length > 0 ? range.start : null;
    for (;;) {
      const page: KeyVersion[] = await b.versions({ ns, after, before: range.end, limit: PAGE });
      out.push(...page);
      await spend(Math.max(1, page.length));
      if (page.length < PAGE) break;
      after = page[page.length - 1]!.key;
    }
    return out;
  }

  /** Compares a range key by key and repairs what differs. Returns the divergent keys. */
  async function walk(ns: string, range: KeyRange, now: number, pass: CrawlPass): Promise<void> {
    const [p, r] = await Promise.all([versionsIn(backend.primary, ns, range), versionsIn(backend.replica, ns, range)]);
    const seen = new Map<string, { p: KeyVersion | null; r: KeyVersion | null }>();
    for (const v of p) seen.set(keyHex(v.key), { p: absentIfExpired(v, now), r: null });
    for (const v of r) {
      const h = keyHex(v.key);
      const e = seen.get(h);
      if (e) e.r = absentIfExpired(v, now);
      else seen.set(h, { p: null, r: absentIfExpired(v, now) });
    }
    pass.keysCompared += seen.size;
    keysCompared.inc(undefined, seen.size);
    const divergent: string[] = [];
    for (const [h, { p: a, r: b }] of seen) {
      if (a === null && b === null) continue;
      if (a !== null && b !== null && compareVersions(a.version, b.version) === 0) continue;
      divergent.push(h);
    }
    pass.divergent += divergent.length;
    // In batches: one read of each side and one conditional write per side behind, not a round trip per key.
    for (let i = 0; i < divergent.length; i += REPAIR_BATCH) {
      const batch = divergent.slice(i, i + REPAIR_BATCH);
      await spend(batch.length);
      try {
        await backend.repairKeys(ns, batch.map(keyFromHex));
        repaired.inc(undefined, batch.length);
      } catch {
        for (const h of batch) {
          const { p: a, r: b } = seen.get(h)!;
          opts.queue.enqueue({ backend: a === null || (b !== null && compareVersions(b.version, a.version) > 0) ? "primary" : "replica", namespace: ns, key: h, mechanism: "crawler" });
        }
      }
    }
  }

  async function crawlRange(ns: string, ranges: KeyRange[], now: number, pass: CrawlPass, depth: number) {
    const { p, r } = await digestBoth(ns, ranges, now);
    pass.rangesCompared += ranges.length;
    rangesCompared.inc(undefined, ranges.length);
    const differing = diffRanges(p, r);
    pass.rangesDiffering += differing.length;
    for (const range of differing) {
      const i = ranges.indexOf(range);
      const count = Math.max(p[i]!.count, r[i]!.count);
      const parts = count > WALK_MAX && depth < MAX_DEPTH ? splitRange(range, SPLIT) : [range];
      if (parts.length > 1) await crawlRange(ns, parts, now, pass, depth + 1);
      else await walk(ns, range, now, pass);
    }
  }

  async function namespaces(): Promise<string[]> {
    // Both sides: a namespace the primary lost entirely is still found through the replica.
    const all = new Set<string>();
    for (const b of [backend.primary, backend.replica]) {
      let after: string | null = null;
      for (;;) {
        let page: string[];
        try {
          page = await b.namespaceIds(after, 1000);
        } catch {
          break;
        }
        for (const n of page) all.add(n);
        if (page.length < 1000) break;
        after = page[page.length - 1]!;
      }
    }
    return [...all].sort();
  }

  async function onePass(): Promise<CrawlPass> {
    const pass: CrawlPass = { namespaces: 0, rangesCompared: 0, rangesDiffering: 0, keysCompared: 0, divergent: 0, failed: 0 };
    try {
      const ids = await namespaces();
      progress.set(0);
      for (const ns of ids) {
        if ((await opts.modeOf(ns)) === "primary") continue;
        try {
          await crawlRange(ns, splitRange(FULL_RANGE, SPLIT), Math.floor(clock.now() / 1000), pass, 0);
        } catch (e) {
          // One namespace's backend error does not end the pass; what it left is found next time.
          if (stopped) throw e;
          pass.failed++;
          pass.error ??= (e as Error).message;
          failures.inc();
          opts.log?.(`crawler: namespace ${ns} not compared: ${(e as Error).message}`);
        }
        pass.namespaces++;
        progress.set(pass.namespaces / ids.length);
      }
      if (pass.failed === 0) for (const b of opts.queue.needsCrawler()) opts.queue.crawlerCovered(b);
      lastPass = pass;
      passes.inc();
      divergence.set(pass.divergent);
      if (pass.divergent) opts.log?.(`crawler: ${pass.divergent} divergent keys repaired over ${pass.namespaces} namespaces`);
      return pass;
    } finally {
      progress.set(1);
    }
  }

  const passesRun = oneAtATime(onePass);
  const runPass = () => passesRun.run();

  function schedule(ms: number) {
    if (stopped || opts.keysPerSecond === 0) return;
    timer = setTimeout(() => {
      runPass()
        .catch((e) => opts.log?.(`crawler pass failed: ${(e as Error).message}`))
        .finally(() => schedule(opts.intervalSeconds * 1000));
    }, ms);
    timer.unref?.();
  }
  schedule(opts.firstPassAfterMs ?? opts.intervalSeconds * 1000);

  return {
    runPass,
    get lastPass() {
      return lastPass;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await passesRun.current()?.catch(() => {});
    },
  };
}
