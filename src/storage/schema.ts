// The KV schema, created or migrated idempotently at start-up. Keys are bytea so that order is the byte
// order of their UTF-8 and any Unicode (NUL included) fits.
import type { SQL } from "bun";

export const SCHEMA_VERSION = 2;

const MIGRATIONS: string[][] = [
  [
    `CREATE TABLE IF NOT EXISTS kv_namespaces (
       account_id text NOT NULL,
       id text PRIMARY KEY,
       title text NOT NULL,
       created_at timestamptz NOT NULL DEFAULT now(),
       UNIQUE (account_id, title)
     )`,
    `CREATE TABLE IF NOT EXISTS kv_entries (
       ns text NOT NULL,
       key bytea NOT NULL,
       value bytea,
       metadata text,
       expiration bigint,
       version_ts bigint NOT NULL,
       version_nonce integer NOT NULL,
       tombstone boolean NOT NULL DEFAULT false,
       PRIMARY KEY (ns, key)
     )`,
    `CREATE INDEX IF NOT EXISTS kv_entries_expiration ON kv_entries (expiration) WHERE expiration IS NOT NULL`,
    `CREATE INDEX IF NOT EXISTS kv_entries_tombstones ON kv_entries (version_ts) WHERE tombstone`,
  ],
  [
    // Large values: the row holds a pointer into the blob store instead of the bytes.
    `ALTER TABLE kv_entries ADD COLUMN IF NOT EXISTS blob text`,
    // Each cluster names itself once, so shard placement follows the cluster, not its URL or list position.
    `CREATE TABLE IF NOT EXISTS kvdrive_shard (id text NOT NULL)`,
    `INSERT INTO kvdrive_shard (id) SELECT 'pg-' || substr(md5(random()::text || clock_timestamp()::text), 1, 12) WHERE NOT EXISTS (SELECT 1 FROM kvdrive_shard)`,
    // The ring as last completed, kept on the first cluster; a rebalance moves keys from it to the configured one.
    `CREATE TABLE IF NOT EXISTS kvdrive_ring (nodes text[] NOT NULL, vnodes integer NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())`,
    // A per-namespace override of the replication mode (primary | shadow | active-active), set by the admin route.
    `ALTER TABLE kv_namespaces ADD COLUMN IF NOT EXISTS replication text`,
  ],
];

export async function migrate(sql: SQL): Promise<void> {
  await sql.begin(async (tx) => {
    // One migrator at a time, even with several kvdrive processes starting together.
    await tx`SELECT pg_advisory_xact_lock(727274001)`;
    await tx`CREATE TABLE IF NOT EXISTS kvdrive_schema (version integer NOT NULL)`;
    const rows = await tx`SELECT version FROM kvdrive_schema`;
    const current: number = rows.length ? rows[0].version : 0;
    for (let v = current; v < MIGRATIONS.length; v++) {
      for (const stmt of MIGRATIONS[v]!) await tx.unsafe(stmt);
    }
    if (rows.length === 0) await tx`INSERT INTO kvdrive_schema (version) VALUES (${MIGRATIONS.length})`;
    else if (current < MIGRATIONS.length) await tx`UPDATE kvdrive_schema SET version = ${MIGRATIONS.length}`;
  });
}
