// The durable repair queue: keys a backend failed to take (or that raced reads found different) wait here to be
// copied again. It lives in a local append-only log under the data dir, so the failed backend cannot take it
// down with it. Deduplicated by (backend, namespace, key), retried with exponential backoff and jitter,
// replayed on start and compacted when the log outgrows what it holds. Bounded: past the bound a key is not
// stored, the backend is marked as needing a full crawler pass instead, and the overflow is counted.
//
// Durability: every change is written to the log with a write(2) before the call returns, so it survives the
// process dying (SIGKILL, crash); the log is fsynced on compaction, sync() and close(). What a power loss could
// take since the last fsync is what the crawler exists for.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync, existsSync } from "node:fs";
import { join } from "node:path";
import type { Clock } from "../clock.ts";
import type { Registry } from "../metrics/registry.ts";
import { RepairQueueError } from "../errors.ts";

export type RepairMechanism = "write" | "read" | "crawler";

export interface RepairItem {
  /** The backend that needs the key copied to it (e.g. "primary", "replica"). */
  backend: string;
  namespace: string;
  key: string;
  /** What found the divergence, for the repairs-by-mechanism metric. Default "write". */
  mechanism?: RepairMechanism;
}

export interface RepairTask {
  readonly backend: string;
  readonly namespace: string;
  readonly key: string;
  readonly mechanism: RepairMechanism;
  /** Failed attempts so far. */
  readonly attempts: number;
  readonly dueAt: number;
  readonly queuedAt: number;
}

export type EnqueueResult = "queued" | "deduplicated" | "overflow";

export interface RepairQueueOptions {
  /** Directory of the log, e.g. `${dataDir}/repair`. Created when missing. */
  dir: string;
  clock: Clock;
  metrics?: Registry;
  /** Most keys held; past it, enqueue answers "overflow". Default 100,000. */
  maxEntries?: number;
  /** Most bytes the held keys may take in the log. Default 64 MiB. */
  maxBytes?: number;
  /** First retry delay; doubles per failure up to maxDelayMs. Defaults 1 s and 5 min. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Source of jitter in [0, 1): injected so tests know the schedule. */
  random?: () => number;
  /** Compact once the log is this big and more than twice what it holds. Default 4 MiB. */
  compactAtBytes?: number;
}

export interface RepairQueue {
  enqueue(item: RepairItem): EnqueueResult;
  /** Due tasks (dueAt <= now), at most max, oldest first; each is handed out once until done() or failed(). */
  take(now?: number, max?: number): RepairTask[];
  /** The repair succeeded: the key leaves the queue (unless it was enqueued again meanwhile). */
  done(task: RepairTask): void;
  /** The repair failed: retried after the backoff. Returns the new due time. */
  failed(task: RepairTask): number;
  depth(backend?: string): number;
  /** Whether the key waits in the queue for that backend. */
  has(backend: string, namespace: string, key: string): boolean;
  /** Every key of the namespace waiting in the queue (hex), with the backend that needs it. */
  keysOf(namespace: string): Array<{ backend: string; key: string }>;
  /** Backends whose keys overflowed the bound: a full crawler pass must cover them. */
  needsCrawler(): string[];
  /** A full crawler pass over this backend finished: clears its overflow mark. */
  crawlerCovered(backend: string): void;
  /** The log's size on disk, in bytes. */
  logBytes(): number;
  compact(): void;
  sync(): void;
  close(): void;
}

/** Fields longer than this are refused: the bounds must mean something, and no KV key or id is this long. */
export const REPAIR_FIELD_MAX_BYTES = 2048;
const LOG = "repair.log";

interface Entry {
  backend: string;
  namespace: string;
  key: string;
  mechanism: RepairMechanism;
  attempts: number;
  dueAt: number;
  queuedAt: number;
  bytes: number;
  inFlight: boolean;
  /** Enqueued again while in flight: the repair may have copied what was there before the new failure. */
  again: boolean;
}

// Log records, one JSON object a line. q: queued (the whole state), f: failed/rescheduled, d: done,
// x: overflow (backend needs the crawler), c: crawler covered the backend.
type Rec =
  | { o: "q"; b: string; n: string; k: string; m: RepairMechanism; a: number; d: number; t: number }
  | { o: "f"; b: string; n: string; k: string; a: number; d: number }
  | { o: "d"; b: string; n: string; k: string }
  | { o: "x"; b: string }
  | { o: "c"; b: string };

const MECHANISMS: readonly RepairMechanism[] = ["write", "read", "crawler"];
const idOf = (b: string, n: string, k: string) => JSON.stringify([b, n, k]);
const utf8 = new TextEncoder();

export function openRepairQueue(opts: RepairQueueOptions): RepairQueue {
  const { clock } = opts;
  const maxEntries = opts.maxEntries ?? 100_000;
  const maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
  const baseDelay = opts.baseDelayMs ?? 1000;
  const maxDelay = opts.maxDelayMs ?? 300_000;
  const random = opts.random ?? Math.random;
  const compactAt = opts.compactAtBytes ?? 4 * 1024 * 1024;
  mkdirSync(opts.dir, { recursive: true });
  const path = join(opts.dir, LOG);

  const entries = new Map<string, Entry>();
  const overflowed = new Set<string>();
  let liveBytes = 0;
  let size = 0;
  let fd = -1;
  let closed = false;

  const m = opts.metrics;
  const depthGauge = m?.gauge("kvdrive_repair_queue_depth", "Keys waiting in the repair queue, by backend.");
  const enqueued = m?.counter("kvdrive_repair_enqueued_total", "Keys put in the repair queue, by backend and mechanism.");
  const deduped = m?.counter("kvdrive_repair_deduplicated_total", "Enqueues of a key already queued, by backend.");
  const repaired = m?.counter("kvdrive_repairs_total", "Keys repaired from the queue, by backend and mechanism.");
  const retries = m?.counter("kvdrive_repair_retries_total", "Failed repair attempts, by backend.");
  const overflowCount = m?.counter("kvdrive_repair_overflow_total", "Keys not queued because the queue was full (left to the crawler), by backend.");
  const needsCrawlerGauge = m?.gauge("kvdrive_repair_needs_crawler", "1 when the queue overflowed for a backend and a full crawler pass is due.");
  const logGauge = m?.gauge("kvdrive_repair_log_bytes", "Size of the repair queue log.");
  const corrupt = m?.counter("kvdrive_repair_log_corrupt_lines_total", "Unreadable repair log lines skipped on replay (a torn last line after a crash is normal).");

  const backendDepth = new Map<string, number>();
  const bumpDepth = (backend: string, by: number) => {
    const d = (backendDepth.get(backend) ?? 0) + by;
    backendDepth.set(backend, d);
    depthGauge?.set(d, { backend });
  };

  const recordBytes = (e: Pick<Entry, "backend" | "namespace" | "key">) =>
    utf8.encode(JSON.stringify(queuedRec({ ...e, mechanism: "write", attempts: 0, dueAt: 0, queuedAt: 0 }))).length + 1;

  function add(e: Entry) {
    entries.set(idOf(e.backend, e.namespace, e.key), e);
    liveBytes += e.bytes;
    bumpDepth(e.backend, 1);
  }
  function remove(id: string, e: Entry) {
    entries.delete(id);
    liveBytes -= e.bytes;
    bumpDepth(e.backend, -1);
  }

  function append(rec: Rec) {
    if (closed) throw new RepairQueueError("repair queue is closed");
    const line = utf8.encode(JSON.stringify(rec) + "\n");
    let off = 0;
    while (off < line.length) off += writeSync(fd, line, off, line.length - off);
    size += line.length;
    logGauge?.set(size);
  }

  function replay() {
    if (!existsSync(path)) return;
    const lines = readFileSync(path, "utf8").split("\n");
    for (const line of lines) {
      if (line === "") continue;
      let rec: Rec;
      try {
        rec = JSON.parse(line) as Rec;
      } catch {
        // the last line torn by a crash is expected; anything else is counted too, never fatal
        corrupt?.inc(undefined, 1);
        continue;
      }
      if (!apply(rec)) corrupt?.inc(undefined, 1);
    }
  }

  function apply(r: Rec): boolean {
    if (!r || typeof r !== "object" || typeof r.b !== "string") return false;
    if (r.o === "x" || r.o === "c") {
      if (r.o === "x") overflowed.add(r.b);
      else overflowed.delete(r.b);
      return true;
    }
    if (typeof r.n !== "string" || typeof r.k !== "string") return false;
    const id = idOf(r.b, r.n, r.k);
    const e = entries.get(id);
    if (r.o === "q") {
      if (!MECHANISMS.includes(r.m) || !Number.isFinite(r.d) || !Number.isFinite(r.t) || !Number.isInteger(r.a)) return false;
      if (e) return true;
      add({ backend: r.b, namespace: r.n, key: r.k, mechanism: r.m, attempts: r.a, dueAt: r.d, queuedAt: r.t, bytes: recordBytes({ backend: r.b, namespace: r.n, key: r.k }), inFlight: false, again: false });
      return true;
    }
    if (r.o === "f") {
      if (!Number.isFinite(r.d) || !Number.isInteger(r.a)) return false;
      if (e) {
        e.attempts = r.a;
        e.dueAt = r.d;
      }
      return true;
    }
    if (r.o === "d") {
      if (e) remove(id, e);
      return true;
    }
    return false;
  }

  // Rewrites the log as exactly what it holds: to a temp file, fsynced, renamed over the old log.
  function compact() {
    if (closed) throw new RepairQueueError("repair queue is closed");
    const temp = path + ".compact";
    const out = openSync(temp, "w", 0o600);
    let bytes = 0;
    try {
      const chunks: string[] = [];
      const flush = () => {
        const buf = utf8.encode(chunks.join(""));
        let off = 0;
        while (off < buf.length) off += writeSync(out, buf, off, buf.length - off);
        bytes += buf.length;
        chunks.length = 0;
      };
      for (const b of overflowed) chunks.push(JSON.stringify({ o: "x", b }) + "\n");
      for (const e of entries.values()) {
        chunks.push(JSON.stringify(queuedRec(e)) + "\n");
        if (chunks.length >= 1024) flush();
      }
      flush();
      fsyncSync(out);
    } finally {
      closeSync(out);
    }
    renameSync(temp, path);
    syncDir(opts.dir);
    if (fd >= 0) closeSync(fd);
    fd = openSync(path, "a", 0o600);
    size = bytes;
    logGauge?.set(size);
  }

  const maybeCompact = () => {
    if (size >= compactAt && size > 2 * liveBytes) compact();
  };

  function checkField(name: string, v: unknown) {
    if (typeof v !== "string" || v.length === 0) throw new RepairQueueError(`repair item ${name} must be a non-empty string`);
    const n = utf8.encode(v).length;
    if (n > REPAIR_FIELD_MAX_BYTES) throw new RepairQueueError(`repair item ${name} of ${n} bytes exceeds the limit of ${REPAIR_FIELD_MAX_BYTES}`);
  }

  function enqueue(item: RepairItem): EnqueueResult {
    checkField("backend", item.backend);
    checkField("namespace", item.namespace);
    checkField("key", item.key);
    const mechanism = item.mechanism ?? "write";
    if (!MECHANISMS.includes(mechanism)) throw new RepairQueueError(`repair item mechanism must be one of ${MECHANISMS.join(", ")}`);
    const id = idOf(item.backend, item.namespace, item.key);
    const existing = entries.get(id);
    if (existing) {
      if (existing.inFlight) existing.again = true;
      deduped?.inc({ backend: item.backend });
      return "deduplicated";
    }
    const bytes = recordBytes(item);
    if (entries.size >= maxEntries || liveBytes + bytes > maxBytes) {
      overflowCount?.inc({ backend: item.backend });
      if (!overflowed.has(item.backend)) {
        overflowed.add(item.backend);
        append({ o: "x", b: item.backend });
        needsCrawlerGauge?.set(1, { backend: item.backend });
      }
      return "overflow";
    }
    const now = clock.now();
    const e: Entry = { ...item, mechanism, attempts: 0, dueAt: now, queuedAt: now, bytes, inFlight: false, again: false };
    append(queuedRec(e));
    add(e);
    enqueued?.inc({ backend: item.backend, mechanism });
    return "queued";
  }

  function take(now = clock.now(), max = 100): RepairTask[] {
    if (closed) throw new RepairQueueError("repair queue is closed");
    const due: Entry[] = [];
    for (const e of entries.values()) if (!e.inFlight && e.dueAt <= now) due.push(e);
    due.sort((a, b) => a.dueAt - b.dueAt);
    return due.slice(0, max).map((e) => {
      e.inFlight = true;
      return task(e);
    });
  }

  const lookup = (t: RepairTask) => {
    const id = idOf(t.backend, t.namespace, t.key);
    return { id, e: entries.get(id) };
  };

  function done(t: RepairTask) {
    const { id, e } = lookup(t);
    if (!e) return;
    repaired?.inc({ backend: e.backend, mechanism: e.mechanism });
    if (e.again) {
      // a new failure arrived during the repair: go again at once, from a clean slate
      e.again = false;
      e.inFlight = false;
      e.attempts = 0;
      e.dueAt = clock.now();
      append({ o: "f", b: e.backend, n: e.namespace, k: e.key, a: 0, d: e.dueAt });
      return;
    }
    append({ o: "d", b: e.backend, n: e.namespace, k: e.key });
    remove(id, e);
    maybeCompact();
  }

  function failed(t: RepairTask): number {
    const { e } = lookup(t);
    if (!e) return clock.now();
    e.attempts++;
    e.inFlight = false;
    e.again = false;
    e.dueAt = clock.now() + backoffDelay(e.attempts, baseDelay, maxDelay, random);
    append({ o: "f", b: e.backend, n: e.namespace, k: e.key, a: e.attempts, d: e.dueAt });
    retries?.inc({ backend: e.backend });
    maybeCompact();
    return e.dueAt;
  }

  replay();
  for (const b of overflowed) needsCrawlerGauge?.set(1, { backend: b });
  compact(); // drops torn lines and everything done, so appends start on a clean line

  return {
    enqueue,
    take,
    done,
    failed,
    depth: (backend) => (backend === undefined ? entries.size : backendDepth.get(backend) ?? 0),
    has: (backend, namespace, key) => entries.has(idOf(backend, namespace, key)),
    keysOf(namespace) {
      const out: Array<{ backend: string; key: string }> = [];
      for (const e of entries.values()) if (e.namespace === namespace) out.push({ backend: e.backend, key: e.key });
      return out;
    },
    needsCrawler: () => [...overflowed].sort(),
    crawlerCovered(backend) {
      if (!overflowed.delete(backend)) return;
      append({ o: "c", b: backend });
      needsCrawlerGauge?.set(0, { backend });
    },
    logBytes: () => size,
    compact,
    sync() {
      if (!closed) fsyncSync(fd);
    },
    close() {
      if (closed) return;
      fsyncSync(fd);
      closeSync(fd);
      closed = true;
    },
  };
}

/**
 * Exponential backoff with "equal jitter": half the delay is fixed, half random, so retries of many keys that
 * failed together spread out, yet none comes back sooner than half its step. After the n-th failure the wait is
 * between step/2 and step, where step = min(max, base * 2^(n-1)).
 */
export function backoffDelay(attempts: number, baseMs: number, maxMs: number, random: () => number): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(step / 2 + random() * (step / 2));
}

function queuedRec(e: Pick<Entry, "backend" | "namespace" | "key" | "mechanism" | "attempts" | "dueAt" | "queuedAt">): Rec {
  return { o: "q", b: e.backend, n: e.namespace, k: e.key, m: e.mechanism, a: e.attempts, d: e.dueAt, t: e.queuedAt };
}

const task = (e: Entry): RepairTask => ({
  backend: e.backend, namespace: e.namespace, key: e.key, mechanism: e.mechanism,
  attempts: e.attempts, dueAt: e.dueAt, queuedAt: e.queuedAt,
});

function syncDir(dir: string) {
  const d = openSync(dir, "r");
  try {
    fsyncSync(d);
  } finally {
    closeSync(d);
  }
}
