// One typed configuration: every setting, its environment variable and its default live in SETTINGS.
// Precedence: explicit option, then environment, then default. A bad value stops start-up naming the variable.

import fs from "node:fs";
import { ConfigError } from "./errors.ts";

type Kind = "string" | "int" | "bool" | "list";

interface Setting {
  env: string;
  kind: Kind;
  default: unknown;
  min?: number;
  max?: number;
  /** The allowed values of an enum setting (its type is their union). */
  values?: readonly string[];
  doc: string;
}

const int = (env: string, def: number, min: number, max: number, doc: string) => ({ env, kind: "int", default: def, min, max, doc }) as const;
const str = <D extends string | undefined>(env: string, def: D, doc: string) => ({ env, kind: "string", default: def, doc }) as const;
const oneOf = <const V extends string, D extends V | undefined>(env: string, def: D, values: readonly V[], doc: string) => ({ env, kind: "string", default: def, values, doc }) as const;
const bool = (env: string, def: boolean, doc: string) => ({ env, kind: "bool", default: def, doc }) as const;
const list = (env: string, doc: string) => ({ env, kind: "list", default: [] as string[], doc }) as const;

const REPLICATION_MODES = ["primary", "shadow", "active-active"] as const;
const ORIGIN_ROLES = ["client", "origin"] as const;
const PG_AUTH_METHODS = ["scram-sha-256", "md5", "trust"] as const;
/** The sslmode values the pooler speaks to its origin with (libpq's, but "allow"). */
const ORIGIN_SSLMODES = ["disable", "prefer", "require", "verify-ca", "verify-full"] as const;
const LIBPQ_SSLMODES: readonly string[] = ["allow", ...ORIGIN_SSLMODES];

const MiB = 1024 * 1024;

const SETTINGS = {
  // Process and storage
  databaseUrl: list("DATABASE_URL", "Postgres cluster(s) for KV data, comma-separated. Unset: an embedded Postgres is started."),
  dataDir: str("KVDRIVE_DATA_DIR", "./.kvdrive", "Data directory: embedded Postgres, API token, local logs."),
  host: str("KVDRIVE_HOST", "127.0.0.1", "Address the HTTP and Postgres listeners bind to."),
  httpPort: int("KVDRIVE_HTTP_PORT", 8787, 0, 65535, "HTTP port (0 picks a free port)."),
  apiToken: str("KVDRIVE_API_TOKEN", undefined, "Bearer token for HTTP. Unset: generated on first start and saved in the data dir."),
  dbPoolSize: int("KVDRIVE_DB_POOL_SIZE", 16, 1, 1000, "Connections from the KV store to each Postgres cluster."),
  shutdownTimeoutSeconds: int("KVDRIVE_SHUTDOWN_TIMEOUT_SECONDS", 30, 1, 3600, "SIGTERM/SIGINT: the most a shutdown may take, whatever the backends do; what could not be flushed is logged with counts (exit code 1)."),

  // KV write path
  batchMaxRows: int("KVDRIVE_BATCH_MAX_ROWS", 512, 1, 10_000, "Group commit: most rows in one multi-row upsert."),
  batchMaxBytes: int("KVDRIVE_BATCH_MAX_BYTES", 8 * MiB, 1024, 256 * MiB, "Group commit: most value bytes in one batch."),
  batchWindowMs: int("KVDRIVE_BATCH_WINDOW_MS", 2, 0, 1000, "Group commit: how long a batch waits for company."),
  batchConcurrency: int("KVDRIVE_BATCH_CONCURRENCY", 4, 1, 64, "Group commit: batches in flight at once."),
  tombstoneGraceSeconds: int("KVDRIVE_TOMBSTONE_GRACE_SECONDS", 3600, 0, 30 * 86400, "How long a tombstone is kept before it is purged."),
  purgeIntervalSeconds: int("KVDRIVE_PURGE_INTERVAL_SECONDS", 60, 1, 86400, "How often expired entries and old tombstones are purged."),

  // Large values (issue 3): object storage, or a blob directory under the data dir when no bucket is set
  largeValueBytes: int("KVDRIVE_LARGE_VALUE_BYTES", 128 * 1024, 0, 25 * MiB, "Values larger than this go to the blob store (S3, or the data dir's blobs/ when no bucket is set)."),
  s3Endpoint: str("KVDRIVE_S3_ENDPOINT", undefined, "S3-compatible endpoint URL for large values (path-style addressing is used when set). Unset: AWS."),
  s3Bucket: str("KVDRIVE_S3_BUCKET", undefined, "Bucket for large values. Unset: large values go to the data dir's blobs/ directory."),
  s3Region: str("KVDRIVE_S3_REGION", "us-east-1", "Region of the large-value bucket."),
  awsAccessKeyId: str("AWS_ACCESS_KEY_ID", undefined, "S3 access key id. Unset: the AWS SDK's default credential chain."),
  awsSecretAccessKey: str("AWS_SECRET_ACCESS_KEY", undefined, "S3 secret access key. Unset: the AWS SDK's default credential chain."),

  // Shards and the second backend (issue 3)
  embeddedShards: int("KVDRIVE_EMBEDDED_SHARDS", 1, 1, 16, "Without DATABASE_URL: how many embedded Postgres clusters to start and shard keys over."),
  shardVnodes: int("KVDRIVE_SHARD_VNODES", 128, 1, 4096, "Virtual nodes per cluster on the consistent-hash ring. Changing it moves keys: run `bun run kvdrive rebalance`."),
  replicaDatabaseUrl: list("KVDRIVE_REPLICA_DATABASE_URL", "Second backend: a group of Postgres clusters, comma-separated."),
  replicaS3Bucket: str("KVDRIVE_REPLICA_S3_BUCKET", undefined, "Second backend: an S3 bucket holding every entry."),
  replicaS3Endpoint: str("KVDRIVE_REPLICA_S3_ENDPOINT", undefined, "Endpoint of the replica bucket. Unset: KVDRIVE_S3_ENDPOINT."),
  replicaS3Region: str("KVDRIVE_REPLICA_S3_REGION", undefined, "Region of the replica bucket. Unset: KVDRIVE_S3_REGION."),
  replicaS3AccessKeyId: str("KVDRIVE_REPLICA_S3_ACCESS_KEY_ID", undefined, "Access key id of the replica bucket. Unset: AWS_ACCESS_KEY_ID."),
  replicaS3SecretAccessKey: str("KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY", undefined, "Secret access key of the replica bucket. Unset: AWS_SECRET_ACCESS_KEY."),
  replication: oneOf("KVDRIVE_REPLICATION", undefined, REPLICATION_MODES, "primary, shadow or active-active. Unset: active-active when a replica is configured, else primary."),
  backendTimeoutMs: int("KVDRIVE_BACKEND_TIMEOUT_MS", 10_000, 100, 600_000, "A storage call slower than this counts as failed: with a replica the other backend serves and the key is queued for repair; without one the request answers 503."),
  crawlerKeysPerSecond: int("KVDRIVE_CRAWLER_KEYS_PER_SECOND", 2000, 0, 1_000_000, "Anti-entropy crawler rate: keys digested or compared per second (0 disables the crawler)."),
  crawlerIntervalSeconds: int("KVDRIVE_CRAWLER_INTERVAL_SECONDS", 300, 1, 86400, "Pause between two crawler passes."),
  blobSweepIntervalSeconds: int("KVDRIVE_BLOB_SWEEP_INTERVAL_SECONDS", 3600, 1, 86400, "How often blobs no row points to are removed (after a grace of the same length)."),
  invalidation: bool("KVDRIVE_INVALIDATION", true, "Announce writes over Postgres LISTEN/NOTIFY so other kvdrive instances evict those keys from their caches."),

  // KV read cache
  cacheBytes: int("KVDRIVE_CACHE_BYTES", 64 * MiB, 0, 64 * 1024 * MiB, "In-process KV read cache bound in bytes (0 disables it)."),

  // Workers runtime (issue 14): the KV binding protocol workerd speaks, for `kvNamespace` bindings
  workerdPort: str("KVDRIVE_WORKERD_PORT", "8789", "Port of the workerd KV-binding listener on KVDRIVE_HOST (0 picks a free port, off disables it)."),

  // Postgres pooler (Hyperdrive)
  pgPort: int("KVDRIVE_PG_PORT", 6432, 0, 65535, "Postgres wire-protocol listener port (0 picks a free port)."),
  originDatabaseUrl: str("ORIGIN_DATABASE_URL", undefined, "Origin Postgres for the pooler. Unset: the embedded Postgres."),
  pgUsers: list("KVDRIVE_PG_USERS", "Pooler client users, user=password pairs, comma-separated. Unset: the origin URL's user. Each must exist on the origin with that password unless KVDRIVE_PG_ORIGIN_ROLE=origin."),
  pgOriginRole: oneOf("KVDRIVE_PG_ORIGIN_ROLE", "client", ORIGIN_ROLES, "Which role pooled clients run as on the origin. client: each logs in to the origin as its own user name with its own password (from KVDRIVE_PG_USERS, or the origin URL's), one pool per (database, user), as PgBouncer does. origin: every client runs as the origin URL's user (single-tenant; that role's rights are every client's)."),
  pgAuth: oneOf("KVDRIVE_PG_AUTH", "scram-sha-256", PG_AUTH_METHODS, "Pooler client authentication."),
  pgTlsCert: str("KVDRIVE_PG_TLS_CERT", undefined, "PEM certificate file for client TLS on the pooler."),
  pgTlsKey: str("KVDRIVE_PG_TLS_KEY", undefined, "PEM key file for client TLS on the pooler."),
  pgScramIterations: int("KVDRIVE_PG_SCRAM_ITERATIONS", 4096, 1, 1_000_000, "SCRAM-SHA-256 iteration count of the pooler's client verifiers (Postgres' scram_iterations). Clients pay it per connection."),
  poolSize: int("KVDRIVE_POOL_SIZE", 20, 1, 10_000, "Origin connections per (database, user) pool."),
  poolIdleTimeoutSeconds: int("KVDRIVE_POOL_IDLE_TIMEOUT_SECONDS", 600, 0, 86400, "Close idle origin connections after this long (0: never)."),
  poolMaxLifetimeSeconds: int("KVDRIVE_POOL_MAX_LIFETIME_SECONDS", 3600, 0, 7 * 86400, "Retire origin connections after this long (0: never)."),
  poolMaxWaiting: int("KVDRIVE_POOL_MAX_WAITING", 10_000, 0, 1_000_000, "Clients that may wait for an origin connection per pool."),
  poolWaitTimeoutMs: int("KVDRIVE_POOL_WAIT_TIMEOUT_MS", 30_000, 1, 3_600_000, "How long a client waits for an origin connection."),
  poolPipelineDepth: int("KVDRIVE_POOL_PIPELINE_DEPTH", 4, 0, 1024, "Read-only autocommit calls of prepared statements from different clients pipelined on one origin connection (0 or 1: each client borrows its own)."),
  pgMaxClients: int("KVDRIVE_PG_MAX_CLIENTS", 10_000, 1, 1_000_000, "Client connections the pooler accepts at once."),
  poolMaxPreparedStatements: int("KVDRIVE_POOL_PREPARED_STATEMENTS", 256, 1, 100_000, "Protocol-level prepared statements kept per origin connection (LRU; Close on eviction)."),
  pgMaxMessageBytes: int("KVDRIVE_PG_MAX_MESSAGE_BYTES", 64 * MiB, 1024, 1024 * MiB, "Largest protocol message accepted from a client."),
  queryCacheMaxAge: int("KVDRIVE_CACHE_MAX_AGE", 60, 0, 3600, "Query cache max_age in seconds."),
  queryCacheSwr: int("KVDRIVE_CACHE_SWR", 15, 0, 3600, "Query cache stale-while-revalidate in seconds."),
  queryCacheDisabled: str("KVDRIVE_CACHE_DISABLED", "false", "Disable the query cache: true, or a comma-separated list of databases."),
  queryCacheListenChannel: str("KVDRIVE_CACHE_LISTEN_CHANNEL", "kvdrive_invalidate", "LISTEN channel on each origin database with cached results: a NOTIFY naming tables (the trigger in README.md) drops what read them. off: do not listen."),
  queryCacheBytes: int("KVDRIVE_QUERY_CACHE_BYTES", 64 * MiB, 0, 64 * 1024 * MiB, "Query cache memory bound in bytes."),
  queryCacheMaxResultBytes: int("KVDRIVE_QUERY_CACHE_MAX_RESULT_BYTES", MiB, 0, 1024 * MiB, "Results larger than this are not cached."),
  pgLoginTimeoutSeconds: int("KVDRIVE_PG_LOGIN_TIMEOUT_SECONDS", 60, 1, 3600, "Pooler clients must finish start-up and authentication within this time."),
  pgMaxLoginMessageBytes: int("KVDRIVE_PG_MAX_LOGIN_MESSAGE_BYTES", 10_000, 1024, MiB, "Largest message a pooler client may send before it has logged in: the start-up packet (Postgres' own limit is 10,000) and each password or SASL message."),
  pgMaxStartingClients: int("KVDRIVE_PG_MAX_STARTING_CLIENTS", 512, 1, 1_000_000, "Pooler clients in start-up or authentication at once (failed logins waiting out KVDRIVE_AUTH_FAILURE_DELAY_MS included); past it a new connection gets 53300."),
  pgMaxClientOutputBytes: int("KVDRIVE_PG_MAX_CLIENT_OUTPUT_BYTES", MiB, 64 * 1024, 1024 * MiB, "Unsent answer bytes queued for one pooler client before the pooler stops reading from it until they drain."),
  poolMaxPreparedBytes: int("KVDRIVE_POOL_MAX_PREPARED_BYTES", 16 * MiB, 64 * 1024, 64 * 1024 * MiB, "Text and parameter types of the protocol-level prepared statements one pooler client keeps; past it the client's least recently used ones are forgotten."),
  authFailureDelayMs: int("KVDRIVE_AUTH_FAILURE_DELAY_MS", 250, 0, 60_000, "Delay before a failed authentication is answered (HTTP token, pooler password), like Postgres' auth_delay."),

  // HTTP bounds (apply before authentication too)
  httpAuthFailureMaxPending: int("KVDRIVE_HTTP_AUTH_FAILURE_MAX_PENDING", 256, 1, 1_000_000, "HTTP answers to failed authentications held for KVDRIVE_AUTH_FAILURE_DELAY_MS at once; past it a failure is answered 429 at once."),
  httpIdleTimeoutSeconds: int("KVDRIVE_HTTP_IDLE_TIMEOUT_SECONDS", 10, 1, 255, "An HTTP connection that sends or receives nothing for this long is closed (every request, no exemption)."),
  httpMaxBodyBytes: int("KVDRIVE_HTTP_MAX_BODY_BYTES", 128 * MiB, 1024, 1024 * MiB, "Largest HTTP request body the server reads; each route has its own smaller limit (a value 25 MiB, a bulk write 100 MB)."),
  metricSeriesMax: int("KVDRIVE_METRIC_SERIES_MAX", 1000, 10, 1_000_000, "Label sets kept per metric; new ones past it are counted under overflow=\"true\" (kvdrive_metric_series_overflow_total)."),
} as const;

type Settings = typeof SETTINGS;
type ValueOf<S> = S extends { values: readonly (infer V)[] } ? V
  : S extends { kind: "int" } ? number : S extends { kind: "bool" } ? boolean : S extends { kind: "list" } ? string[] : string;

export type Config = {
  [K in keyof Settings]: undefined extends Settings[K]["default"] ? ValueOf<Settings[K]> | undefined : ValueOf<Settings[K]>;
};

function parseValue(s: Setting, raw: string): unknown {
  switch (s.kind) {
    case "int": {
      if (!/^\s*-?\d+\s*$/.test(raw)) throw new ConfigError(`${s.env}=${JSON.stringify(raw)} is not an integer: expected a whole number in ${s.min}..${s.max}`);
      const n = Number(raw);
      if (n < s.min! || n > s.max!) throw new ConfigError(`${s.env}=${n} is outside the allowed range ${s.min}..${s.max}`);
      return n;
    }
    case "bool": {
      const v = raw.trim().toLowerCase();
      if (["1", "true", "yes", "on"].includes(v)) return true;
      if (["0", "false", "no", "off", ""].includes(v)) return false;
      throw new ConfigError(`${s.env}=${JSON.stringify(raw)} is not a boolean (true/false)`);
    }
    case "list":
      return raw.split(",").map((x) => x.trim()).filter(Boolean);
    case "string":
      if (s.values && !s.values.includes(raw)) throw new ConfigError(`${s.env}=${JSON.stringify(raw)} must be one of ${s.values.join(", ")}`);
      return raw;
  }
}

/** Builds the config from explicit overrides, then the environment, then defaults. Throws ConfigError naming the variable. */
export function loadConfig(overrides: Partial<Config> = {}, env: Record<string, string | undefined> = process.env): Config {
  const out: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(SETTINGS) as [keyof Settings, Setting][]) {
    if (name in overrides && (overrides as Record<string, unknown>)[name] !== undefined) {
      out[name] = (overrides as Record<string, unknown>)[name];
      continue;
    }
    const raw = env[s.env];
    out[name] = raw === undefined || (raw === "" && s.kind !== "bool") ? s.default : parseValue(s, raw);
  }
  const cfg = out as Config;
  validate(cfg);
  return cfg;
}

/** The checks that span settings, or look inside a value: every one runs before anything starts. */
function validate(cfg: Config) {
  // Overrides skip parsing: their enums are checked here.
  for (const [name, s] of Object.entries(SETTINGS) as [keyof Settings, Setting][]) {
    const v = cfg[name];
    if (s.values && v !== undefined && !s.values.includes(v as string)) throw new ConfigError(`${s.env}=${JSON.stringify(v)} must be one of ${s.values.join(", ")}`);
  }
  for (const url of cfg.databaseUrl) checkPostgresUrl("DATABASE_URL", url, LIBPQ_SSLMODES);
  for (const url of cfg.replicaDatabaseUrl) checkPostgresUrl("KVDRIVE_REPLICA_DATABASE_URL", url, LIBPQ_SSLMODES);
  // The pooler's origin: ORIGIN_DATABASE_URL, else the first storage cluster.
  if (cfg.originDatabaseUrl) checkPostgresUrl("ORIGIN_DATABASE_URL", cfg.originDatabaseUrl, ORIGIN_SSLMODES);
  else if (cfg.databaseUrl[0]) checkPostgresUrl("DATABASE_URL (the pooler's origin when ORIGIN_DATABASE_URL is unset)", cfg.databaseUrl[0], ORIGIN_SSLMODES);
  checkUsers(cfg.pgUsers);
  if (cfg.apiToken !== undefined && cfg.apiToken.length < 8) throw new ConfigError("KVDRIVE_API_TOKEN must be at least 8 characters");
  checkS3(cfg);
  if (cfg.replicaDatabaseUrl.length && cfg.replicaS3Bucket) {
    throw new ConfigError("KVDRIVE_REPLICA_DATABASE_URL and KVDRIVE_REPLICA_S3_BUCKET are both set: choose one second backend");
  }
  if (cfg.replication && cfg.replication !== "primary" && !cfg.replicaDatabaseUrl.length && !cfg.replicaS3Bucket) {
    throw new ConfigError(`KVDRIVE_REPLICATION=${cfg.replication} needs a second backend: set KVDRIVE_REPLICA_S3_BUCKET or KVDRIVE_REPLICA_DATABASE_URL`);
  }
  checkPorts(cfg);
  if (Boolean(cfg.pgTlsCert) !== Boolean(cfg.pgTlsKey)) throw new ConfigError("KVDRIVE_PG_TLS_CERT and KVDRIVE_PG_TLS_KEY must be set together");
  for (const [variable, file] of [["KVDRIVE_PG_TLS_CERT", cfg.pgTlsCert], ["KVDRIVE_PG_TLS_KEY", cfg.pgTlsKey]] as const) {
    if (file && !fs.existsSync(file)) throw new ConfigError(`${variable}=${JSON.stringify(file)}: no such file (expected a PEM file)`);
  }
}

/** KVDRIVE_PG_USERS: user=password pairs, each user once. */
function checkUsers(pairs: string[]) {
  const seen = new Set<string>();
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    if (eq <= 0 || eq === pair.length - 1) throw new ConfigError(`KVDRIVE_PG_USERS entry ${JSON.stringify(pair.slice(0, Math.max(eq, 0)) || pair.slice(0, 20))} is not user=password (both non-empty)`);
    const user = pair.slice(0, eq);
    if (seen.has(user)) throw new ConfigError(`KVDRIVE_PG_USERS names the user ${JSON.stringify(user)} twice: expected user=password pairs, each user once`);
    seen.add(user);
  }
}

/** The large-value bucket and the replica bucket: endpoints are http(s) URLs, keys come in pairs. */
function checkS3(cfg: Config) {
  checkHttpUrl("KVDRIVE_S3_ENDPOINT", cfg.s3Endpoint);
  checkHttpUrl("KVDRIVE_REPLICA_S3_ENDPOINT", cfg.replicaS3Endpoint);
  if (cfg.s3Endpoint && !cfg.s3Bucket) throw new ConfigError("KVDRIVE_S3_ENDPOINT is set but KVDRIVE_S3_BUCKET is not");
  if (Boolean(cfg.awsAccessKeyId) !== Boolean(cfg.awsSecretAccessKey)) throw new ConfigError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
  if (cfg.replicaS3Bucket && Boolean(cfg.replicaS3AccessKeyId ?? cfg.awsAccessKeyId) !== Boolean(cfg.replicaS3SecretAccessKey ?? cfg.awsSecretAccessKey)) {
    throw new ConfigError("KVDRIVE_REPLICA_S3_ACCESS_KEY_ID and KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY must be set together");
  }
}

function checkHttpUrl(variable: string, url: string | undefined) {
  if (url === undefined) return;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`${variable}=${JSON.stringify(url)} is not a URL: expected http(s)://host[:port]`);
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new ConfigError(`${variable} must use http:// or https://, got ${JSON.stringify(u.protocol)}`);
}

/** The workerd listener's port (a number or off), and no two listeners on one fixed port. */
function checkPorts(cfg: Config) {
  if (cfg.workerdPort !== "off" && !(/^\d{1,5}$/.test(cfg.workerdPort) && Number(cfg.workerdPort) <= 65535)) {
    throw new ConfigError(`KVDRIVE_WORKERD_PORT=${JSON.stringify(cfg.workerdPort)} must be a port number 0..65535 or off`);
  }
  const ports: Array<[string, number]> = [["KVDRIVE_HTTP_PORT", cfg.httpPort], ["KVDRIVE_PG_PORT", cfg.pgPort]];
  if (cfg.workerdPort !== "off") ports.push(["KVDRIVE_WORKERD_PORT", Number(cfg.workerdPort)]);
  for (let i = 0; i < ports.length; i++) {
    for (let j = i + 1; j < ports.length; j++) {
      const [a, p] = ports[i]!;
      const [b, q] = ports[j]!;
      if (p !== 0 && p === q) throw new ConfigError(`${a} and ${b} are both ${p}: each listener needs its own port (0 picks a free one)`);
    }
  }
}

function checkPostgresUrl(variable: string, url: string, sslmodes: readonly string[]) {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(`${variable} has an entry that is not a URL: ${JSON.stringify(redact(url))}`);
  }
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new ConfigError(`${variable} must use postgres:// or postgresql://, got ${JSON.stringify(u.protocol)}`);
  }
  const sslmode = u.searchParams.get("sslmode");
  if (sslmode !== null && !sslmodes.includes(sslmode)) throw new ConfigError(`${variable} has sslmode=${sslmode}: expected one of ${sslmodes.join(", ")}`);
}

/** Hides the password in a connection string before it is printed. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ":***@");
  }
}

/** The settings table as markdown, for the README. */
export function settingsTable(): string {
  const rows = Object.values(SETTINGS).map((s: Setting) => {
    const def = s.kind === "list" ? "(empty)" : s.default === undefined ? "(unset)" : String(s.default);
    return `| \`${s.env}\` | ${def} | ${s.doc} |`;
  });
  return ["| variable | default | meaning |", "| --- | --- | --- |", ...rows].join("\n");
}
