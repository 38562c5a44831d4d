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
// What owners that closed left behind (rows whose final flush failed, keys still queued), for the last report.
const settled: PendingReport = { unflushedRows: 0, parkedRows: 0, repairQueue: {} };

function add(into: PendingReport, p: Partial<PendingReport>) {
  into.unflushedRows += p.unflushedRows ?? 0;
  into.parkedRows += p.parkedRows ?? 0;
  for (const [b, n] of Object.entries(p.repairQueue ?? {})) into.repairQueue[b] = (into.repairQueue[b] ?? 0) + n;
}

/**
 * Registers a reporter until its owner has closed; the returned function unregisters it, recording what the
 * owner left behind at its close.
 */
export function onAbandon(r: Reporter): (left?: Partial<PendingReport>) => void {
  reporters.add(r);
  return (left) => {
    if (!reporters.delete(r)) return;
    if (left) add(settled, left);
  };
}

/** Parks what can be parked and sums what every registered owner reports, and what closed owners left. */
export function abandonAll(): PendingReport {
  const out: PendingReport = { unflushedRows: 0, parkedRows: 0, repairQueue: {} };
  add(out, settled);
  for (const r of reporters) {
    try {
      add(out, r());
    } catch {
      // A reporter that fails must not keep the process from ending.
    }
  }
  return out;
}
