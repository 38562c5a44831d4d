// The Postgres backend (Bun.SQL): the Backend interface of backend.ts over one cluster. Writes are conditional: a row is
// applied only if its version is newer than the stored one, so replays, retries and repairs never go backwards.
import { SQL } from "bun";
import { digestSelectSql } from "./digest.ts";
import { compareVersions, keyString, type Digest, type KeyRange, type StoredEntry, type Version } from "./entry.ts";
import { migrate } from "./schema.ts";
import type { Backend, NamespaceRow, PostgresBackend } from "./backend.ts";

// Bun.SQL binds at most 65535 parameters per statement; 9 columns a row.
const ROWS_PER_STATEMENT = 4000;
const UPSERT_COLUMNS = ["ns", "key", "value", "metadata", "expiration", "version_ts", "version_nonce", "tombstone", "blob"] as const;
/** Statement texts of the common group-commit sizes, kept once built; a larger batch builds its own. */
const UPSERT_TEXT_CACHED_UP_TO = 64;
const upsertTexts: string[] = [];
/** The conditional upsert of `n` rows, with UPSERT_COLUMNS.length parameters a row in that order. */
export function upsertText(n: number): string {
  const cached = upsertTexts[n];
  if (cached !== undefined) return cached;
  const c = UPSERT_COLUMNS.length;
  const tuples = Array.from({ length: n }, (_, i) => `(${UPSERT_COLUMNS.map((_, j) => `$${i * c + j + 1}`).join(",")})`);
  const text = `INSERT INTO kv_entries AS e (${UPSERT_COLUMNS.join(", ")}) VALUES ${tuples.join(",")}
      ON CONFLICT (ns, key) DO UPDATE SET
        value = excluded.value, metadata = excluded.metadata, expiration = excluded.expiration,
        version_ts = excluded.version_ts, version_nonce = excluded.version_nonce, tombstone = excluded.tombstone,
        blob = excluded.blob
      WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)
      RETURNING ns, key`;
  if (n <= UPSERT_TEXT_CACHED_UP_TO) upsertTexts[n] = text;
  return text;
}
const DIGEST = digestSelectSql({ key: "key", ts: "version_ts", nonce: "version_nonce" });
// Purge deletes in slices so one round never holds a huge transaction or blocks writers for long.
const PURGE_SLICE = 5000;

const toEntry = (ns: string, r: any): StoredEntry => ({
  ns,
  key: r.key,
  value: r.value,
  metadata: r.metadata,
  expiration: r.expiration === null ? null : Number(r.expiration),
  version: { ts: Number(r.version_ts), nonce: r.version_nonce },
  tombstone: r.tombstone,
  blob: r.blob ?? null,
});

function compareRows(a: StoredEntry, b: StoredEntry): number {
  if (a.ns !== b.ns) return a.ns < b.ns ? -1 : 1;
  return Buffer.compare(a.key, b.key);
}

/**
 * Sorts by (namespace, key) and keeps the newest row per key. Sorted batches take row locks in one global order,
 * so two concurrent batches touching the same keys can never deadlock; ON CONFLICT may not touch a row twice, so
 * duplicates must go before the statement.
 */
export function sortNewestPerKey(rows: StoredEntry[]): StoredEntry[] {
  const sorted = rows.length < 2 ? rows : [...rows].sort(compareRows);
  const out: StoredEntry[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && compareRows(last, r) === 0) {
      if (compareVersions(r.version, last.version) > 0) out[out.length - 1] = r;
    } else out.push(r);
  }
  return out;
}

export async function openPostgresBackend(url: string, poolSize: number): Promise<PostgresBackend> {
  const sql = new SQL(url, { max: poolSize, idleTimeout: 0 });
  try {
    await migrate(sql);
  } catch (e) {
    await sql.close({ timeout: 1 }).catch(() => {});
    throw e;
  }

  // A multi-row VALUES statement: measured faster here than unnest() of arrays, whose bytea elements travel
  // hex-encoded in a text array literal. Its text depends only on the row count and is built here, not by
  // Bun.SQL's insert helper (which walks the rows and columns by name and escapes them on every batch).
  async function upsert(q: SQL, rows: StoredEntry[]): Promise<Array<[string, Uint8Array]> | number> {
    const params: unknown[] = [];
    for (const r of rows) params.push(r.ns, r.key, r.value, r.metadata, r.expiration, r.version.ts, r.version.nonce, r.tombstone, r.blob ?? null);
    const res = await q.unsafe(upsertText(rows.length), params).values();
    // Everything applied is the common case: skip mapping the returned keys back.
    return res.length === rows.length ? res.length : (res as Array<[string, Uint8Array]>);
  }

  function appliedFlags(input: StoredEntry[], written: StoredEntry[], results: Array<Array<[string, Uint8Array]> | number>): boolean[] {
    if (written.length === input.length && results.every((r) => typeof r === "number")) return input.map(() => true);
    const appliedRows = new Set<StoredEntry>();
    results.forEach((res, chunk) => {
      const slice = written.slice(chunk * ROWS_PER_STATEMENT, (chunk + 1) * ROWS_PER_STATEMENT);
      if (typeof res === "number") {
        for (const r of slice) appliedRows.add(r);
        return;
      }
      const keys = new Set(res.map(([ns, key]) => keyString(ns, key)));
      for (const r of slice) if (keys.has(keyString(r.ns, r.key))) appliedRows.add(r);
    });
    return input.map((r) => appliedRows.has(r));
  }

  return {
    async get(ns, key) {
      const rows = await sql`SELECT key, value, metadata, expiration, version_ts, version_nonce, tombstone, blob FROM kv_entries WHERE ns = ${ns} AND key = ${key}`;
      return rows.length ? toEntry(ns, rows[0]) : null;
    },
    async getMany(ns, keys) {
      if (keys.length === 0) return [];
      const rows = await sql`SELECT key, value, metadata, expiration, version_ts, version_nonce, tombstone, blob FROM kv_entries WHERE ns = ${ns} AND key = ANY(${sql.array(keys, "bytea")})`;
      const byKey = new Map<string, StoredEntry>();
      for (const r of rows) byKey.set(keyString(ns, r.key), toEntry(ns, r));
      return keys.map((k) => byKey.get(keyString(ns, k)) ?? null);
    },
    async write(rows) {
      if (rows.length === 0) return [];
      const written = sortNewestPerKey(rows);
      if (written.length <= ROWS_PER_STATEMENT) return appliedFlags(rows, written, [await upsert(sql, written)]);
      const results = await sql.begin(async (tx) => {
        const out: Array<Array<[string, Uint8Array]> | number> = [];
        for (let i = 0; i < written.length; i += ROWS_PER_STATEMENT) out.push(await upsert(tx as unknown as SQL, written.slice(i, i + ROWS_PER_STATEMENT)));
        return out;
      });
      return appliedFlags(rows, written, results);
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
      // The conditions are repeated in the DELETE: a row rewritten since the slice was chosen is re-checked and kept.
      let removed = 0;
      for (;;) {
        const res = await sql`
          DELETE FROM kv_entries WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM kv_entries WHERE expiration IS NOT NULL AND expiration <= ${nowSeconds} LIMIT ${PURGE_SLICE}))
          AND expiration IS NOT NULL AND expiration <= ${nowSeconds}`;
        removed += res.count;
        if (res.count < PURGE_SLICE) break;
      }
      for (;;) {
        const res = await sql`
          DELETE FROM kv_entries WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM kv_entries WHERE tombstone AND version_ts < ${tombstoneBeforeMicros} LIMIT ${PURGE_SLICE}))
          AND tombstone AND version_ts < ${tombstoneBeforeMicros}`;
        removed += res.count;
        if (res.count < PURGE_SLICE) break;
      }
      return removed;
    },
    async dropNamespace(ns) {
      await sql`DELETE FROM kv_entries WHERE ns = ${ns}`;
    },
    async scan(q) {
      const rows = await sql`
        SELECT key, value, metadata, expiration, version_ts, version_nonce, tombstone, blob FROM kv_entries
        WHERE ns = ${q.ns} ${q.after ? sql`AND key > ${q.after}` : sql``} ${q.before ? sql`AND key < ${q.before}` : sql``}
        ORDER BY key LIMIT ${q.limit}`;
      return rows.map((r: any) => toEntry(q.ns, r));
    },
    async versions(q) {
      const rows = await sql`
        SELECT key, expiration, version_ts, version_nonce, tombstone FROM kv_entries
        WHERE ns = ${q.ns} ${q.after ? sql`AND key > ${q.after}` : sql``} ${q.before ? sql`AND key < ${q.before}` : sql``}
        ORDER BY key LIMIT ${q.limit}`;
      return rows.map((r: any) => ({ key: r.key, version: { ts: Number(r.version_ts), nonce: r.version_nonce }, tombstone: r.tombstone, expiration: r.expiration === null ? null : Number(r.expiration) }));
    },
    async digest(ns, range, nowSeconds) {
      // The select list is code, not input (digestSelectSql); every value is a parameter.
      const rows = await sql.unsafe(
        `SELECT ${DIGEST.count} AS n, (${DIGEST.sum})::text AS s FROM kv_entries
         WHERE ns = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)
           AND (tombstone OR expiration IS NULL OR expiration > $4)`,
        [ns, range.start, range.end, nowSeconds],
      );
      return { count: Number(rows[0].n), sum: BigInt(rows[0].s) };
    },
    async namespaceIds(after, limit) {
      // A loose index scan: one index probe per namespace instead of reading every entry.
      const rows = await sql`
        WITH RECURSIVE n AS (
          (SELECT ns FROM kv_entries WHERE ns > ${after ?? ""} COLLATE "C" ORDER BY ns COLLATE "C" LIMIT 1)
          UNION ALL
          SELECT (SELECT e.ns FROM kv_entries e WHERE e.ns > n.ns COLLATE "C" ORDER BY e.ns COLLATE "C" LIMIT 1) FROM n WHERE n.ns IS NOT NULL
        ) SELECT ns FROM n WHERE ns IS NOT NULL LIMIT ${limit}`;
      return rows.map((r: any) => r.ns as string);
    },
    async tombstones(beforeMicros, after, limit) {
      const rows = await sql`
        SELECT ns, key, version_ts, version_nonce FROM kv_entries
        WHERE tombstone AND version_ts < ${beforeMicros} ${after ? sql`AND (ns COLLATE "C", key) > (${after.ns} COLLATE "C", ${after.key})` : sql``}
        ORDER BY ns COLLATE "C", key LIMIT ${limit}`;
      return rows.map((r: any) => ({ ns: r.ns, key: r.key, version: { ts: Number(r.version_ts), nonce: r.version_nonce } }));
    },
    async removeIfVersion(refs) {
      let removed = 0;
      for (let i = 0; i < refs.length; i += ROWS_PER_STATEMENT) {
        const slice = refs.slice(i, i + ROWS_PER_STATEMENT);
        const res = await sql`
          DELETE FROM kv_entries e USING (SELECT * FROM unnest(${sql.array(slice.map((r) => r.ns), "text")}::text[], ${sql.array(slice.map((r) => r.key), "bytea")}::bytea[],
            ${sql.array(slice.map((r) => r.version.ts), "int8")}::int8[], ${sql.array(slice.map((r) => r.version.nonce), "int4")}::int4[]) AS t(ns, key, ts, nonce)) t
          WHERE e.ns = t.ns AND e.key = t.key AND e.version_ts = t.ts AND e.version_nonce = t.nonce`;
        removed += res.count;
      }
      return removed;
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
      // order and direction come from two closed sets, never from the request text.
      const orderBy = sql.unsafe(`${order === "title" ? "title" : "id"} ${direction === "desc" ? "DESC" : "ASC"}`);
      const rows = await sql`SELECT account_id, id, title, count(*) OVER () AS total FROM kv_namespaces WHERE account_id = ${accountId} ORDER BY ${orderBy}, id LIMIT ${limit} OFFSET ${offset}`;
      let total = rows.length ? Number(rows[0].total) : 0;
      if (!rows.length && offset > 0) total = Number((await sql`SELECT count(*) AS n FROM kv_namespaces WHERE account_id = ${accountId}`)[0].n);
      return { rows: rows.map((r: any) => ({ account_id: r.account_id, id: r.id, title: r.title })), total };
    },
    async getNamespace(id) {
      const rows = await sql`SELECT account_id, id, title, replication FROM kv_namespaces WHERE id = ${id}`;
      return rows.length ? (rows[0] as NamespaceRow) : null;
    },
    async setNamespaceReplication(id, mode) {
      const res = await sql`UPDATE kv_namespaces SET replication = ${mode} WHERE id = ${id}`;
      return res.count === 1;
    },
    async shardId() {
      const rows = await sql`SELECT id FROM kvdrive_shard LIMIT 1`;
      return rows[0].id as string;
    },
    async getRing() {
      const rows = await sql`SELECT nodes, vnodes FROM kvdrive_ring LIMIT 1`;
      return rows.length ? { nodes: [...rows[0].nodes] as string[], vnodes: rows[0].vnodes as number } : null;
    },
    async setRing(nodes, vnodes) {
      await sql.begin(async (tx) => {
        await tx`DELETE FROM kvdrive_ring`;
        await tx`INSERT INTO kvdrive_ring (nodes, vnodes) VALUES (${sql.array(nodes, "text")}, ${vnodes})`;
      });
    },
    async countEntries(ns) {
      const rows = ns === undefined ? await sql`SELECT count(*) AS n FROM kv_entries` : await sql`SELECT count(*) AS n FROM kv_entries WHERE ns = ${ns}`;
      return Number(rows[0].n);
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
