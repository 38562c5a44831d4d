// What a shutdown cut short leaves behind. Each open storage (and the KV service over it) registers here how
// to count what it has not flushed and how to park writes still in flight in the durable repair queue, so the
// process can end at its deadline (KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS) and say what it left, whatever the
// backends do.

export interface PendingReport {
  /** Rows submitted but never committed (so never acknowledged to a client). */
  unflushedRows: number;
  /** Rows acknowledged or still racing, in flight to one backend: now in the durable repair queue. */
  parkedRows: number;
  /** Keys waiting in the repair queue, by backend: replayed after the next start. */
  repairQueue: Record<string, number>;
}

type Reporter = () => Partial<PendingReport>;
const reporters = new Set<Reporter>();

/** Registers a reporter until the returned function is called (when its owner has closed cleanly). */
export function onAbandon(r: Reporter): () => void {
  reporters.add(r);
  return () => reporters.delete(r);
}

/** Parks what can be parked and sums what every registered owner reports. */
export function abandonAll(): PendingReport {
  const out: PendingReport = { unflushedRows: 0, parkedRows: 0, repairQueue: {} };
  for (const r of reporters) {
    try {
      const p = r();
      out.unflushedRows += p.unflushedRows ?? 0;
      out.parkedRows += p.parkedRows ?? 0;
      for (const [b, n] of Object.entries(p.repairQueue ?? {})) out.repairQueue[b] = (out.repairQueue[b] ?? 0) + n;
    } catch {
      // A reporter that fails must not keep the process from ending.
    }
  }
  return out;
}
