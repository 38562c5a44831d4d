// What runs above the backends when a second one is configured: the replicated backend, its repair queue,
// the repair worker and the crawler. Without one, the primary alone, its calls bounded by the backend timeout.
import { join } from "node:path";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import { withDeadline } from "../storage/deadline.ts";
import type { Storage } from "../storage/open.ts";
import type { Backend, NamespaceStore } from "../storage/backend.ts";
import { startCrawler, startRepairWorker, type Crawler } from "./anti-entropy.ts";
import { openRepairQueue, type RepairQueue } from "./repair-queue.ts";
import { createReplicatedBackend, type ReplicationMode } from "./replicated.ts";
import { onAbandon } from "./shutdown.ts";

export interface RedundancyOptions {
  config: Config;
  metrics: Registry;
  clock: Clock;
  log?: (msg: string) => void;
  /** A namespace's mode: its override, else the default. */
  modeOf(ns: string): ReplicationMode;
  /** The same, loading the namespace when it is not known yet (for the crawler). */
  resolveMode(ns: string): Promise<ReplicationMode>;
}

export interface Redundancy {
  /** Reads and writes of entries go here. */
  data: Backend;
  /** Namespaces live on the primary's first cluster. */
  catalog: NamespaceStore;
  queue: RepairQueue | null;
  crawler: Crawler | null;
  /** "primary" when no second backend is configured. */
  defaultMode: ReplicationMode;
  /** Stops the background work, then closes the backends. */
  close(): Promise<void>;
}

export function startRedundancy(storage: Storage, opts: RedundancyOptions): Redundancy {
  const { config, metrics, clock } = opts;
  const { primary, primaryData, replica } = storage;
  const catalog = withDeadline(primary, config.backendTimeoutMs);
  const defaultMode: ReplicationMode = (config.replication as ReplicationMode | undefined) ?? (replica ? "active-active" : "primary");
  if (!replica) {
    // Requests must not hang on a hung cluster: the replicated backend bounds its calls, here they are bounded alone.
    return { data: withDeadline(primaryData, config.backendTimeoutMs), catalog, queue: null, crawler: null, defaultMode, close: () => storage.close() };
  }

  const queue = openRepairQueue({ dir: join(config.dataDir, "repair"), clock, metrics });
  const replicated = createReplicatedBackend({
    primary: primaryData, replica, modeOf: opts.modeOf, queue, metrics, clock, timeoutMs: config.backendTimeoutMs, log: opts.log,
    partition: (rows) => primary.partition(rows),
    trustFirstAnswer: storage.trustFirstAnswer,
  });
  const worker = startRepairWorker({ backend: replicated, queue, clock });
  const crawler = startCrawler({
    backend: replicated, queue, clock, metrics, modeOf: opts.resolveMode,
    keysPerSecond: config.crawlerKeysPerSecond, intervalSeconds: config.crawlerIntervalSeconds, log: opts.log,
  });
  // A shutdown that cannot wait for the backends still leaves every write in flight to one of them queued.
  const forget = onAbandon(() => ({ parkedRows: replicated.park(), repairQueue: { primary: queue.depth("primary"), replica: queue.depth("replica") } }));
  return {
    data: replicated, catalog, queue, crawler, defaultMode,
    async close() {
      for (const stop of [() => crawler.stop(), () => worker.stop(), async () => queue.close(), () => storage.close()]) await stop().catch(() => {});
      forget({ repairQueue: { primary: queue.depth("primary"), replica: queue.depth("replica") } });
    },
  };
}
