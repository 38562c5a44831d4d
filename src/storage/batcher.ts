// Group commit: concurrent single-key writes are gathered into one multi-row conditional upsert, bounded by
// rows, bytes and a short window. A caller's promise settles only once its batch has committed.
import type { Registry } from "../metrics/registry.ts";
import { SIZE_BUCKETS } from "../metrics/registry.ts";
import { compareVersions } from "../gateway/version.ts";
import type { StoredEntry } from "./store.ts";

export interface BatcherOptions {
  write(rows: StoredEntry[]): Promise<number>;
  maxRows: number;
  maxBytes: number;
  windowMs: number;
  concurrency: number;
  metrics: Registry;
}

export interface Batcher {
  /** Resolves after the batch holding this row has committed. */
  submit(row: StoredEntry): Promise<void>;
  /** Writes every row in one transaction, ahead of nothing else: a bulk write is its own batch. */
  submitAll(rows: StoredEntry[]): Promise<void>;
  /** Resolves when everything submitted so far has settled. */
  flush(): Promise<void>;
  readonly pending: number;
}

interface Waiter {
  row: StoredEntry;
  resolve(): void;
  reject(e: unknown): void;
}

const rowBytes = (r: StoredEntry) => 64 + r.key.byteLength + (r.value?.byteLength ?? 0) + (r.metadata?.length ?? 0);

/** Two writes to one key in a batch: only the newer version goes into the statement. */
export function dedupeNewest(rows: StoredEntry[]): StoredEntry[] {
  if (rows.length < 2) return rows;
  const newest = new Map<string, StoredEntry>();
  for (const r of rows) {
    const k = r.ns + "\0" + Buffer.from(r.key.buffer, r.key.byteOffset, r.key.byteLength).toString("latin1");
    const prev = newest.get(k);
    if (!prev || compareVersions(r.version, prev.version) > 0) newest.set(k, r);
  }
  return newest.size === rows.length ? rows : [...newest.values()];
}

export function createBatcher(opts: BatcherOptions): Batcher {
  const batchRows = opts.metrics.histogram("kvdrive_batch_rows", "Rows per group-commit batch", SIZE_BUCKETS);
  const batchSeconds = opts.metrics.histogram("kvdrive_batch_duration_seconds", "Time to commit one batch");
  const batchErrors = opts.metrics.counter("kvdrive_batch_errors_total", "Batches that failed to commit");

  let queue: Waiter[] = [];
  let queuedBytes = 0;
  let inFlight = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const settling = new Set<Promise<void>>();

  async function commit(waiters: Waiter[]) {
    const started = performance.now();
    try {
      await opts.write(dedupeNewest(waiters.map((w) => w.row)));
      batchRows.observe(waiters.length);
      batchSeconds.observe((performance.now() - started) / 1000);
      for (const w of waiters) w.resolve();
    } catch (e) {
      batchErrors.inc();
      for (const w of waiters) w.reject(e);
    }
  }

  function run(waiters: Waiter[]) {
    inFlight++;
    const p = commit(waiters).finally(() => {
      inFlight--;
      settling.delete(p);
      // Rows that piled up while every slot was busy go out now, without waiting for another window.
      if (queue.length && inFlight < opts.concurrency) dispatch();
    });
    settling.add(p);
  }

  function dispatch() {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    while (queue.length && inFlight < opts.concurrency) {
      let n = 0;
      let bytes = 0;
      while (n < queue.length && n < opts.maxRows) {
        const b = rowBytes(queue[n]!.row);
        if (n > 0 && bytes + b > opts.maxBytes) break;
        bytes += b;
        n++;
      }
      const batch = n === queue.length ? queue : queue.slice(0, n);
      queue = n === queue.length ? [] : queue.slice(n);
      queuedBytes -= bytes;
      run(batch);
    }
  }

  return {
    submit(row) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ row, resolve, reject });
        queuedBytes += rowBytes(row);
        if (queue.length >= opts.maxRows || queuedBytes >= opts.maxBytes) dispatch();
        else if (!timer && inFlight < opts.concurrency) {
          if (opts.windowMs === 0) queueMicrotask(dispatch);
          else timer = setTimeout(dispatch, opts.windowMs);
        }
      });
    },
    submitAll(rows) {
      const p = opts.write(dedupeNewest(rows)).then(() => {
        batchRows.observe(rows.length);
      });
      const tracked = p.catch(() => {}).finally(() => settling.delete(tracked));
      settling.add(tracked);
      return p;
    },
    async flush() {
      while (queue.length || settling.size) {
        if (queue.length) dispatch();
        await Promise.all([...settling]);
        if (queue.length && inFlight >= opts.concurrency) await Bun.sleep(1);
      }
    },
    get pending() {
      return queue.length + inFlight;
    },
  };
}
