// Assembles KV storage from the config: the primary (Postgres shards, large values in the blob store), the
// optional second backend (an S3 bucket or another group of Postgres clusters), and, with a second backend,
// the replication layer with its repair queue, repair worker and crawler.
import { join } from "node:path";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { ConfigError } from "../errors.ts";
import type { Registry } from "../metrics/registry.ts";
import { startCrawler, startRepairWorker, type Crawler, type RepairWorker } from "../gateway/anti-entropy.ts";
import { openRepairQueue, type RepairQueue } from "../gateway/repair-queue.ts";
import { createReplicatedBackend, type ReplicatedBackend, type ReplicationMode } from "../gateway/replicated.ts";
import type { BlobStore } from "./blob.ts";
import { openBlobStore } from "./blob-open.ts";
import { s3OptionsFromConfig, type S3Options } from "./blob-s3.ts";
import { withLargeValues, type LargeValueBackend } from "./large-values.ts";
import { openS3Replica } from "./s3-replica.ts";
import { openShardedBackend, type ShardedBackend } from "./sharded.ts";
import { onAbandon } from "../gateway/shutdown.ts";
import { withDeadline } from "./deadline.ts";
import type { Backend, NamespaceStore } from "./store.ts";

export interface StorageOptions {
  config: Config;
  /** The primary's clusters (DATABASE_URL, or the embedded ones). */
  urls: string[];
  metrics: Registry;
  clock: Clock;
  log?: (msg: string) => void;
  /** A namespace's mode: its override, else the default. The KV service knows the overrides. */
  modeOf(ns: string): ReplicationMode;
  /** The same, loading the namespace when it is not known yet (for the crawler). */
  resolveMode(ns: string): Promise<ReplicationMode>;
  /** Start the repair worker, crawler and blob sweep (default true; the CLI's one-shot commands say false). */
  background?: boolean;
}

export interface Storage {
  /** Reads and writes of entries go here. */
  data: Backend;
  /** Namespaces live on the primary's first cluster. */
  catalog: NamespaceStore;
  primary: ShardedBackend;
  /** The primary with large values resolved: what backfill reads from and writes to. */
  primaryData: Backend;
  /** The second backend (large values resolved), or null. */
  replica: Backend | null;
  replicated: ReplicatedBackend | null;
  queue: RepairQueue | null;
  crawler: Crawler | null;
  /** "primary" when no second backend is configured. */
  defaultMode: ReplicationMode;
  /** What the second backend is, for logs: "s3://bucket", "postgres (N clusters)", or null. */
  replicaKind: string | null;
  close(): Promise<void>;
}

/** The replica bucket's settings: its own, falling back to the large-value store's. */
export function replicaS3Options(cfg: Config): S3Options | null {
  if (!cfg.replicaS3Bucket) return null;
  const base = cfg.s3Bucket ? s3OptionsFromConfig(cfg) : null;
  const id = cfg.replicaS3AccessKeyId ?? base?.accessKeyId ?? cfg.awsAccessKeyId;
  const secret = cfg.replicaS3SecretAccessKey ?? base?.secretAccessKey ?? cfg.awsSecretAccessKey;
  if (Boolean(id) !== Boolean(secret)) throw new ConfigError("KVDRIVE_REPLICA_S3_ACCESS_KEY_ID and KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY must be set together");
  return {
    endpoint: cfg.replicaS3Endpoint ?? cfg.s3Endpoint,
    bucket: cfg.replicaS3Bucket,
    region: cfg.replicaS3Region ?? cfg.s3Region,
    accessKeyId: id,
    secretAccessKey: secret,
  };
}

export async function openStorage(opts: StorageOptions): Promise<Storage> {
  const { config, metrics, clock } = opts;
  const closers: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
  };
  try {
    const primary = await openShardedBackend(opts.urls, config.dbPoolSize, { vnodes: config.shardVnodes });
    closers.push(() => primary.close());
    const blobs: BlobStore = await openBlobStore(config);
    closers.push(() => blobs.close());
    const large = (inner: Backend, prefix: string): LargeValueBackend =>
      withLargeValues(inner, blobs, { thresholdBytes: config.largeValueBytes, prefix, metrics, clock });
    const primaryData = large(primary, "primary/");
    const sweepers: LargeValueBackend[] = [primaryData];

    let replica: Backend | null = null;
    let replicaKind: string | null = null;
    let trustFirstAnswer = true;
    const s3 = replicaS3Options(config);
    if (s3) {
      const bucket = await openS3Replica(s3);
      replica = bucket;
      // Without compare-and-swap a replica object can go back a version: then reads compare both sides.
      trustFirstAnswer = (await bucket.conditionalMode().catch(() => "verify")) === "cas";
      replicaKind = `s3://${s3.bucket}${trustFirstAnswer ? "" : " (no compare-and-swap: reads compare both backends)"}`;
    } else if (config.replicaDatabaseUrl.length) {
      const group = await openShardedBackend(config.replicaDatabaseUrl, config.dbPoolSize, { vnodes: config.shardVnodes });
      const data = large(group, "replica/");
      sweepers.push(data);
      replica = data;
      replicaKind = `postgres (${config.replicaDatabaseUrl.length} cluster${config.replicaDatabaseUrl.length > 1 ? "s" : ""})`;
    }
    if (replica) closers.push(() => replica!.close());

    // Blobs no row points to (a small value replaced a large one, a crash between blob and row) go after a grace.
    const background = opts.background ?? true;
    const sweepMs = config.blobSweepIntervalSeconds * 1000;
    if (background) {
      const sweeper = setInterval(() => {
        for (const s of sweepers) s.sweepOrphans(sweepMs).catch((e) => opts.log?.(`blob sweep failed: ${(e as Error).message}`));
      }, sweepMs);
      sweeper.unref?.();
      closers.push(async () => clearInterval(sweeper));
    }

    const defaultMode: ReplicationMode = (config.replication as ReplicationMode | undefined) ?? (replica ? "active-active" : "primary");
    // The CLI's one-shot commands work on the backends themselves: the repair queue belongs to the server.
    if (!replica || !background) {
      // Requests must not hang on a hung cluster: the replicated backend bounds its calls, here they are bounded alone.
      const data = background ? withDeadline(primaryData, config.backendTimeoutMs) : primaryData;
      return { data, catalog: withDeadline(primary, config.backendTimeoutMs), primary, primaryData, replica, replicated: null, queue: null, crawler: null, defaultMode, replicaKind, close: closeAll };
    }

    const queue = openRepairQueue({ dir: join(config.dataDir, "repair"), clock, metrics });
    closers.push(async () => queue.close());
    const replicated = createReplicatedBackend({
      primary: primaryData, replica, modeOf: opts.modeOf, queue, metrics, clock, timeoutMs: config.backendTimeoutMs, log: opts.log,
      partition: (rows) => primary.partition(rows),
      trustFirstAnswer,
    });
    let crawler: Crawler | null = null;
    if (background) {
      const worker: RepairWorker = startRepairWorker({ backend: replicated, queue, clock });
      closers.push(() => worker.stop());
      const c = startCrawler({
        backend: replicated, queue, clock, metrics, modeOf: opts.resolveMode,
        keysPerSecond: config.crawlerKeysPerSecond, intervalSeconds: config.crawlerIntervalSeconds, log: opts.log,
      });
      closers.push(() => c.stop());
      crawler = c;
    }
    // A shutdown that cannot wait for the backends still leaves every write in flight to one of them queued.
    const forget = onAbandon(() => ({ parkedRows: replicated.park(), repairQueue: { primary: queue.depth("primary"), replica: queue.depth("replica") } }));
    const close = async () => {
      await closeAll();
      forget({ repairQueue: { primary: queue.depth("primary"), replica: queue.depth("replica") } });
    };
    return { data: replicated, catalog: withDeadline(primary, config.backendTimeoutMs), primary, primaryData, replica, replicated, queue, crawler, defaultMode, replicaKind, close };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
