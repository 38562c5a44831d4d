// Opens KV storage's backends from the config: the primary (Postgres shards, large values in the blob store)
// and the optional second backend (an S3 bucket or another group of Postgres clusters), with the sweep of
// orphaned blobs. What runs above them (replication, repair queue, crawler) is built by gateway/open.ts.
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import { ConfigError } from "../errors.ts";
import type { Registry } from "../metrics/registry.ts";
import type { BlobStore } from "./blob.ts";
import { openBlobStore } from "./blob-open.ts";
import { s3OptionsFromConfig, type S3Options } from "./blob-s3.ts";
import { withLargeValues, type LargeValueBackend } from "./large-values.ts";
import { openS3Replica } from "./s3-replica.ts";
import { openShardedBackend, type ShardedBackend } from "./sharded.ts";
import type { Backend } from "./backend.ts";

export interface StorageOptions {
  config: Config;
  /** The primary's clusters (DATABASE_URL, or the embedded ones). */
  urls: string[];
  metrics: Registry;
  clock: Clock;
  log?: (msg: string) => void;
  /** Sweep orphaned blobs in the background (default true; the CLI's one-shot commands say false). */
  background?: boolean;
}

export interface Storage {
  /** The primary's clusters; namespaces live on its first one. */
  primary: ShardedBackend;
  /** The primary with large values resolved: what reads, writes and backfill go to. */
  primaryData: Backend;
  /** The second backend (large values resolved), or null. */
  replica: Backend | null;
  /** What the second backend is, for logs: "s3://bucket", "postgres (N clusters)", or null. */
  replicaKind: string | null;
  /** False for a bucket without compare-and-swap: a replica object can go back a version, so reads compare both. */
  trustFirstAnswer: boolean;
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
  const close = async () => {
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
    if (opts.background ?? true) {
      const sweepMs = config.blobSweepIntervalSeconds * 1000;
      const sweeper = setInterval(() => {
        for (const s of sweepers) s.sweepOrphans(sweepMs).catch((e) => opts.log?.(`blob sweep failed: ${(e as Error).message}`));
      }, sweepMs);
      sweeper.unref?.();
      closers.push(async () => clearInterval(sweeper));
    }
    return { primary, primaryData, replica, replicaKind, trustFirstAnswer, close };
  } catch (e) {
    await close();
    throw e;
  }
}
