// The KV schema, created or migrated idempotently at start-up. Keys are bytea so that order is the byte
// order of their UTF-8 and any Unicode (NUL included) fits.
import type { SQL } from "bun";

export const SCHEMA_VERSION = 1;

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
