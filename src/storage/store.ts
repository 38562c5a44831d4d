// The storage backend interface and its Postgres implementation (Bun.SQL). Writes are conditional: a row is
// applied only if its version is newer than the stored one, so replays and repairs never go backwards.
import { SQL } from "bun";
import type { Version } from "../gateway/version.ts";
import { migrate } from "./schema.ts";

export interface StoredEntry {
  ns: string;
  key: Uint8Array;
  value: Uint8Array | null;
  metadata: string | null;
  expiration: number | null;
  version: Version;
  tombstone: boolean;
}

export interface ListQuery {
  ns: string;
  /** Exclusive lower bound (the cursor), or null. */
  after: Uint8Array | null;
  /** Inclusive lower bound (the prefix), or null. */
  from: Uint8Array | null;
  /** Exclusive upper bound (the prefix's successor), or null. */
  before: Uint8Array | null;
  limit: number;
  /** Unix seconds: entries expiring at or before it are hidden. */
  now: number;
}

export interface ListedEntry {
  key: Uint8Array;
  metadata: string | null;
  expiration: number | null;
}

export interface NamespaceRow {
  account_id: string;
  id: string;
  title: string;
}

export interface Backend {
  get(ns: string, key: Uint8Array): Promise<StoredEntry | null>;
  getMany(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>>;
  /** Applies each row only if newer than what is stored; all rows in one transaction. Returns how many applied. */
  write(rows: StoredEntry[]): Promise<number>;
  list(q: ListQuery): Promise<ListedEntry[]>;
  /** Removes expired entries and tombstones older than tombstoneBefore (µs); returns rows removed. */
  purge(nowSeconds: number, tombstoneBeforeMicros: number): Promise<number>;
  dropNamespace(ns: string): Promise<void>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

export interface NamespaceStore {
  createNamespace(accountId: string, id: string, title: string): Promise<boolean>;
  listNamespaces(accountId: string, order: "id" | "title", direction: "asc" | "desc", limit: number, offset: number): Promise<{ rows: NamespaceRow[]; total: number }>;
  getNamespace(id: string): Promise<NamespaceRow | null>;
  renameNamespace(accountId: string, id: string, title: string): Promise<"ok" | "missing" | "duplicate">;
  deleteNamespace(accountId: string, id: string): Promise<boolean>;
}

// Bun.SQL binds at most 65535 parameters per statement; 8 columns a row.
const ROWS_PER_STATEMENT = 4000;

const toEntry = (ns: string, r: any): StoredEntry => ({
  ns,
  key: r.key,
  value: r.value,
  metadata: r.metadata,
  expiration: r.expiration === null ? null : Number(r.expiration),
  version: { ts: Number(r.version_ts), nonce: r.version_nonce },
  tombstone: r.tombstone,
});

const keyHex = (k: Uint8Array) => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString("hex");

export async function openPostgresBackend(url: string, poolSize: number): Promise<Backend & NamespaceStore> {
  const sql = new SQL(url, { max: poolSize, idleTimeout: 0 });
  await migrate(sql);

  // One statement text for every batch size (arrays through unnest), so Postgres plans it once per connection.
  async function upsert(q: SQL, rows: StoredEntry[]): Promise<number> {
    const n = rows.length;
    const ns = new Array<string>(n), keys = new Array<Uint8Array>(n), values = new Array<Uint8Array | null>(n), metas = new Array<string | null>(n);
    const exps = new Array<number | null>(n), tss = new Array<number>(n), nonces = new Array<number>(n), tombs = new Array<boolean>(n);
    for (let i = 0; i < n; i++) {
      const r = rows[i]!;
      ns[i] = r.ns;
      keys[i] = r.key;
      values[i] = r.value;
      metas[i] = r.metadata;
      exps[i] = r.expiration;
      tss[i] = r.version.ts;
      nonces[i] = r.version.nonce;
      tombs[i] = r.tombstone;
    }
    const res = await q`
      INSERT INTO kv_entries AS e (ns, key, value, metadata, expiration, version_ts, version_nonce, tombstone)
      SELECT * FROM unnest(${sql.array(ns, "text")}::text[], ${sql.array(keys, "bytea")}::bytea[], ${sql.array(values, "bytea")}::bytea[],
                           ${sql.array(metas, "text")}::text[], ${sql.array(exps, "int8")}::bigint[], ${sql.array(tss, "int8")}::bigint[],
                           ${sql.array(nonces, "int4")}::int[], ${sql.array(tombs, "bool")}::bool[])
      ON CONFLICT (ns, key) DO UPDATE SET
        value = excluded.value, metadata = excluded.metadata, expiration = excluded.expiration,
        version_ts = excluded.version_ts, version_nonce = excluded.version_nonce, tombstone = excluded.tombstone
      WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)`;
    return res.count;
  }

  return {
    async get(ns, key) {
      const rows = await sql`SELECT key, value, metadata, expiration, version_ts, version_nonce, tombstone FROM kv_entries WHERE ns = ${ns} AND key = ${key}`;
      return rows.length ? toEntry(ns, rows[0]) : null;
    },
    async getMany(ns, keys) {
      const rows = await sql`SELECT key, value, metadata, expiration, version_ts, version_nonce, tombstone FROM kv_entries WHERE ns = ${ns} AND key = ANY(${sql.array(keys, "bytea")})`;
      const byKey = new Map<string, StoredEntry>();
      for (const r of rows) byKey.set(keyHex(r.key), toEntry(ns, r));
      return keys.map((k) => byKey.get(keyHex(k)) ?? null);
    },
    async write(rows) {
      if (rows.length === 0) return 0;
      if (rows.length <= ROWS_PER_STATEMENT) return upsert(sql, rows);
      return sql.begin(async (tx) => {
        let applied = 0;
        for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) applied += await upsert(tx as unknown as SQL, rows.slice(i, i + ROWS_PER_STATEMENT));
        return applied;
      });
    },
    async list(q) {
      const rows = await sql`
        SELECT key, metadata, expiration FROM kv_entries
        WHERE ns = ${q.ns} AND NOT tombstone AND (expiration IS NULL OR expiration > ${q.now})
          ${q.after ? sql`AND key > ${q.after}` : sql``}
          ${q.from ? sql`AND key >= ${q.from}` : sql``}
          ${q.before ? sql`AND key < ${q.before}` : sql``}
        ORDER BY key LIMIT ${q.limit}`;
      return rows.map((r: any) => ({ key: r.key, metadata: r.metadata, expiration: r.expiration === null ? null : Number(r.expiration) }));
    },
    async purge(nowSeconds, tombstoneBeforeMicros) {
      const expired = await sql`DELETE FROM kv_entries WHERE expiration IS NOT NULL AND expiration <= ${nowSeconds}`;
      // Conditional on the row still being that old tombstone: a newer write since the scan is kept.
      const dead = await sql`DELETE FROM kv_entries WHERE tombstone AND version_ts < ${tombstoneBeforeMicros}`;
      return expired.count + dead.count;
    },
    async dropNamespace(ns) {
      await sql`DELETE FROM kv_entries WHERE ns = ${ns}`;
    },
    async ping() {
      try {
        await sql`SELECT 1`;
        return true;
      } catch {
        return false;
      }
    },
    close: () => sql.close({ timeout: 5 }),

    async createNamespace(accountId, id, title) {
      const res = await sql`INSERT INTO kv_namespaces (account_id, id, title) VALUES (${accountId}, ${id}, ${title}) ON CONFLICT (account_id, title) DO NOTHING`;
      return res.count === 1;
    },
    async listNamespaces(accountId, order, direction, limit, offset) {
      const orderBy = sql.unsafe(`${order === "title" ? "title" : "id"} ${direction === "desc" ? "DESC" : "ASC"}`);
      const rows = await sql`SELECT account_id, id, title, count(*) OVER () AS total FROM kv_namespaces WHERE account_id = ${accountId} ORDER BY ${orderBy}, id LIMIT ${limit} OFFSET ${offset}`;
      let total = rows.length ? Number(rows[0].total) : 0;
      if (!rows.length && offset > 0) total = Number((await sql`SELECT count(*) AS n FROM kv_namespaces WHERE account_id = ${accountId}`)[0].n);
      return { rows: rows.map((r: any) => ({ account_id: r.account_id, id: r.id, title: r.title })), total };
    },
    async getNamespace(id) {
      const rows = await sql`SELECT account_id, id, title FROM kv_namespaces WHERE id = ${id}`;
      return rows.length ? (rows[0] as NamespaceRow) : null;
    },
    async renameNamespace(accountId, id, title) {
      try {
        const res = await sql`UPDATE kv_namespaces SET title = ${title} WHERE account_id = ${accountId} AND id = ${id}`;
        return res.count === 1 ? "ok" : "missing";
      } catch (e: any) {
        if (e?.errno === "23505" || e?.code === "23505" || /duplicate key/.test(String(e?.message))) return "duplicate";
        throw e;
      }
    },
    async deleteNamespace(accountId, id) {
      return sql.begin(async (tx) => {
        const res = await tx`DELETE FROM kv_namespaces WHERE account_id = ${accountId} AND id = ${id}`;
        if (res.count !== 1) return false;
        await tx`DELETE FROM kv_entries WHERE ns = ${id}`;
        return true;
      });
    },
  };
}
