// Group commit: concurrent single-key writes are gathered into one multi-row conditional upsert, bounded by
// rows, bytes and a short window. A caller's promise settles only once its batch has committed.
import type { Registry } from "../metrics/registry.ts";
import { SIZE_BUCKETS } from "../metrics/registry.ts";
import type { StoredEntry } from "../storage/entry.ts";
import { ShuttingDownError } from "../errors.ts";

export interface BatcherOptions {
  /** Conditional multi-row write in one transaction (Backend.write). */
  write(rows: StoredEntry[]): Promise<unknown>;
  maxRows: number;
  maxBytes: number;
  windowMs: number;
  concurrency: number;
  metrics: Registry;
  /**
   * The cluster a row belongs to, when rows are spread over several: a batch is then committed per cluster and
   * each part settles its own callers, so a cluster that is down fails only the writes it holds.
   */
  clusterOf?(row: StoredEntry): unknown;
}

export interface Batcher {
  /** Resolves after the batch holding this row has committed. */
  submit(row: StoredEntry): Promise<void>;
  /** Writes every row in one transaction: a bulk write is its own batch. */
  submitAll(rows: StoredEntry[]): Promise<void>;
  /** Resolves when everything submitted so far has settled. */
  flush(): Promise<void>;
  /** Refuses new rows, then drains everything pending. */
  close(): Promise<void>;
  readonly pending: number;
  /** Rows not committed yet: queued, or in a batch or bulk write still in flight (what a cut-short shutdown leaves). */
  readonly pendingRows: number;
  /** Rows whose commit failed after close() began: the final flush could not write them (none was acknowledged). */
  readonly failedAtClose: number;
}

interface Waiter {
  row: StoredEntry;
  resolve(): void;
  reject(e: unknown): void;
}

const ROW_OVERHEAD_BYTES = 64;
/** The smallest share of the queue worth a batch of its own when slots are free. */
const SPLIT_MIN_ROWS = 16;
export const rowBytes = (r: StoredEntry) => ROW_OVERHEAD_BYTES + r.key.byteLength + (r.value?.byteLength ?? 0) + (r.metadata?.length ?? 0);

export function createBatcher(opts: BatcherOptions): Batcher {
  const batchRows = opts.metrics.histogram("kvdrive_batch_rows", "Rows per group-commit batch", SIZE_BUCKETS);
  const batchSeconds = opts.metrics.histogram("kvdrive_batch_duration_seconds", "Time to commit one batch");
  const committed = opts.metrics.counter("kvdrive_batches_committed_total", "Group-commit batches committed");
  const batchErrors = opts.metrics.counter("kvdrive_batch_errors_total", "Batches that failed to commit");

  let queue: Waiter[] = [];
  let queuedBytes = 0;
  let inFlight = 0;
  let inFlightRows = 0;
  let failedAtClose = 0;
  let scheduled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const settling = new Set<Promise<void>>();

  // The upsert is conditional on versions, so replaying a batch that may have committed changes nothing: one
  // retry turns a dropped connection into latency instead of an error.
  async function writeWithRetry(rows: StoredEntry[]) {
    try {
      await opts.write(rows);
    } catch {
      await opts.write(rows);
    }
  }

  function track(p: Promise<void>) {
    const tracked = p.then(
      () => {},
      () => {},
    );
    settling.add(tracked);
    tracked.finally(() => settling.delete(tracked));
  }

  /** One statement's worth: its rows commit together, and its callers settle together. */
  async function commitPart(waiters: Waiter[]) {
    const started = performance.now();
    try {
      await writeWithRetry(waiters.map((w) => w.row));
      batchRows.observe(waiters.length);
      batchSeconds.observe((performance.now() - started) / 1000);
      committed.inc();
      for (const w of waiters) w.resolve();
    } catch (e) {
      batchErrors.inc();
      if (closed) failedAtClose += waiters.length;
      for (const w of waiters) w.reject(e);
    }
  }

  /** The batch's rows by cluster (one part when there is one cluster, or one row). */
  function parts(waiters: Waiter[]): Waiter[][] {
    const clusterOf = opts.clusterOf;
    if (!clusterOf || waiters.length === 1) return [waiters];
    const by = new Map<unknown, Waiter[]>();
    for (const w of waiters) {
      const c = clusterOf(w.row);
      const part = by.get(c);
      if (part) part.push(w);
      else by.set(c, [w]);
    }
    return by.size === 1 ? [waiters] : [...by.values()];
  }

  // A batch holds one slot however many clusters it spans.
  async function commit(waiters: Waiter[]) {
    inFlightRows += waiters.length;
    try {
      const split = parts(waiters);
      if (split.length === 1) await commitPart(waiters);
      else await Promise.all(split.map(commitPart));
    } finally {
      inFlightRows -= waiters.length;
      inFlight--;
      // Rows that piled up while every slot was busy have waited long enough: they go at once.
      if (queue.length) dispatch();
    }
  }

  /** At most `rows` rows from the head of the queue, within maxBytes (a single oversized row still goes, alone). */
  function takeBatch(rows: number): Waiter[] {
    let n = 0;
    let bytes = 0;
    while (n < queue.length && n < rows) {
      const b = rowBytes(queue[n]!.row);
      if (n > 0 && bytes + b > opts.maxBytes) break;
      bytes += b;
      n++;
    }
    const batch = n === queue.length ? queue : queue.slice(0, n);
    queue = n === queue.length ? [] : queue.slice(n);
    queuedBytes -= bytes;
    return batch;
  }

  // What is queued is shared among the free slots, so several batches commit side by side (Postgres runs
  // them on separate backends and shares their WAL flushes) instead of one large batch while the others idle.
  // A share is never smaller than SPLIT_MIN_ROWS, so light load still makes one statement.
  function dispatch() {
    scheduled = false;
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    while (queue.length && inFlight < opts.concurrency) {
      const parts = Math.min(opts.concurrency - inFlight, Math.max(1, Math.floor(queue.length / SPLIT_MIN_ROWS)));
      inFlight++;
      track(commit(takeBatch(Math.min(opts.maxRows, Math.ceil(queue.length / parts)))));
    }
  }

  // While fewer than half the slots are busy a batch leaves after the current I/O turn, so a lone write pays no
  // window and several batches are in flight under load. Past that, new rows wait up to windowMs for company (or
  // for a free slot), so batches grow with load.
  function schedule() {
    if (scheduled || inFlight >= opts.concurrency) return;
    scheduled = true;
    if (inFlight * 2 < opts.concurrency || opts.windowMs === 0) setImmediate(dispatch);
    else timer = setTimeout(dispatch, opts.windowMs);
  }

  return {
    submit(row) {
      if (closed) return Promise.reject(new ShuttingDownError("the write batcher is closed: kvdrive is shutting down"));
      return new Promise<void>((resolve, reject) => {
        queue.push({ row, resolve, reject });
        queuedBytes += rowBytes(row);
        if (queue.length >= opts.maxRows || queuedBytes >= opts.maxBytes) dispatch();
        else schedule();
      });
    },
    submitAll(rows) {
      if (closed) return Promise.reject(new ShuttingDownError("the write batcher is closed: kvdrive is shutting down"));
      inFlightRows += rows.length;
      const p = writeWithRetry(rows)
        .then(() => {
          batchRows.observe(rows.length);
          committed.inc();
        })
        .finally(() => {
          inFlightRows -= rows.length;
        });
      p.catch(() => {
        if (closed) failedAtClose += rows.length;
      });
      track(p);
      return p;
    },
    async flush() {
      while (queue.length || settling.size) {
        if (queue.length) dispatch();
        await Promise.all([...settling]);
      }
    },
    async close() {
      closed = true;
      await this.flush();
    },
    get pending() {
      return queue.length + inFlight;
    },
    get pendingRows() {
      return queue.length + inFlightRows;
    },
    get failedAtClose() {
      return failedAtClose;
    },
  };
}
