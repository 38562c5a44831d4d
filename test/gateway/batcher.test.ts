// Group commit over the real Postgres backend: bounds by rows and bytes, slots in flight, acknowledgement only
// after commit, newest-wins inside a batch, draining on close, and one retry across a dropped connection.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createBatcher, rowBytes, type BatcherOptions } from "../../src/gateway/batcher.ts";
import type { StoredEntry } from "../../src/storage/entry.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { ShuttingDownError } from "../../src/errors.ts";

let pg: TestPostgres;
let backend: Backend;
let sql: InstanceType<typeof Bun.SQL>;
const b = (s: string) => new TextEncoder().encode(s);
let ts = 1_000;
const row = (ns: string, key: string, value: string, size = 0, version = { ts: ts++, nonce: 1 }): StoredEntry => ({
  ns,
  key: b(key),
  value: size ? new Uint8Array(size) : b(value),
  metadata: null,
  expiration: null,
  version,
  tombstone: false,
});
const count = async (ns: string) => (await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns}`)[0].n as number;

beforeAll(async () => {
  pg = await startTestPostgres();
  backend = await openPostgresBackend(pg.url, 4);
  sql = new Bun.SQL(pg.url, { max: 1 });
});
afterAll(async () => {
  await sql.close();
  await backend.close();
  await pg.destroy();
});

/** The real backend, with each batch's size and the batches in flight recorded on the way through. */
function observed(opts: Partial<BatcherOptions> = {}) {
  const sizes: number[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const metrics = createRegistry();
  const batcher = createBatcher({
    async write(rows) {
      sizes.push(rows.length);
      maxInFlight = Math.max(maxInFlight, ++inFlight);
      try {
        return await backend.write(rows);
      } finally {
        inFlight--;
      }
    },
    maxRows: 512,
    maxBytes: 8 << 20,
    windowMs: 2,
    concurrency: 4,
    metrics,
    ...opts,
  });
  return { batcher, sizes, metrics, maxInFlight: () => maxInFlight };
}

test("batches hold at most maxRows rows, every row lands, and few statements carry many writes", async () => {
  const o = observed({ maxRows: 10 });
  await Promise.all(Array.from({ length: 95 }, (_, i) => o.batcher.submit(row("bt-rows", `k${i}`, "v"))));
  expect(Math.max(...o.sizes)).toBeLessThanOrEqual(10);
  expect(o.sizes.reduce((a, c) => a + c, 0)).toBe(95);
  expect(o.sizes.length).toBeLessThan(95);
  expect(await count("bt-rows")).toBe(95);
  expect(o.metrics.histogram("kvdrive_batch_rows", "").snapshot()).toEqual({ count: o.sizes.length, sum: 95 });
  expect(o.metrics.counter("kvdrive_batches_committed_total", "").get()).toBe(o.sizes.length);
});

test("batches stay within maxBytes (a single oversized row still goes, alone)", async () => {
  const per = rowBytes(row("bt-bytes", "k00", "", 1000));
  const o = observed({ maxBytes: per * 3 + 10 });
  await Promise.all([...Array.from({ length: 20 }, (_, i) => o.batcher.submit(row("bt-bytes", `k${String(i).padStart(2, "0")}`, "", 1000))), o.batcher.submit(row("bt-bytes", "huge", "", per * 5))]);
  expect(Math.max(...o.sizes.filter((n) => n > 1))).toBeLessThanOrEqual(3);
  expect(await count("bt-bytes")).toBe(21);
});

test("no more than `concurrency` batches are in flight", async () => {
  const o = observed({ maxRows: 5, concurrency: 2 });
  await Promise.all(Array.from({ length: 200 }, (_, i) => o.batcher.submit(row("bt-conc", `k${i}`, "v"))));
  expect(o.maxInFlight()).toBeLessThanOrEqual(2);
  expect(o.maxInFlight()).toBeGreaterThan(0);
  expect(await count("bt-conc")).toBe(200);
});

test("a row arriving while one batch commits goes out beside it, not after it (several batches in flight)", async () => {
  // The first batch is held open until a second one has started (or 1.5 s pass): with one batch at a time the
  // second would only start after the first (or after the long window), and the overlap would never happen.
  let started!: () => void;
  const second = new Promise<void>((r) => (started = r));
  let calls = 0;
  let overlapped = false;
  let open = 0;
  const batcher = createBatcher({
    async write(rows) {
      const first = ++calls === 1;
      open++;
      if (!first) {
        overlapped ||= open > 1;
        started();
      }
      try {
        if (first) await Promise.race([second, Bun.sleep(1500)]);
        return await backend.write(rows);
      } finally {
        open--;
      }
    },
    maxRows: 512,
    maxBytes: 8 << 20,
    windowMs: 10_000,
    concurrency: 4,
    metrics: createRegistry(),
  });
  const a = batcher.submit(row("bt-overlap", "a", "v"));
  await Bun.sleep(20);
  const b2 = batcher.submit(row("bt-overlap", "b", "v"));
  await Promise.all([a, b2]);
  expect(overlapped).toBe(true);
  expect(await count("bt-overlap")).toBe(2);
});

test("a full queue is shared among the free slots: batches commit side by side", async () => {
  const o = observed({ concurrency: 4 });
  await Promise.all(Array.from({ length: 128 }, (_, i) => o.batcher.submit(row("bt-split", `k${i}`, "v"))));
  expect(o.sizes.length).toBeGreaterThanOrEqual(2);
  expect(Math.min(...o.sizes)).toBeGreaterThanOrEqual(16);
  expect(o.maxInFlight()).toBeGreaterThanOrEqual(2);
  expect(await count("bt-split")).toBe(128);
});

test("a write is acknowledged only once its row is committed", async () => {
  const o = observed({ windowMs: 20 });
  const seen = await Promise.all(
    Array.from({ length: 30 }, async (_, i) => {
      await o.batcher.submit(row("bt-ack", `k${i}`, `v${i}`));
      // A different connection sees the row as soon as the promise settles.
      const [r] = await sql`SELECT value FROM kv_entries WHERE ns = 'bt-ack' AND key = ${b(`k${i}`)}`;
      return r ? new TextDecoder().decode(r.value) : null;
    }),
  );
  expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => `v${i}`));
});

test("two writes to one key in a batch: the newer version wins whatever the order of arrival", async () => {
  const o = observed({ windowMs: 50 });
  await Promise.all([
    o.batcher.submit(row("bt-dup", "k", "newer", 0, { ts: 500, nonce: 1 })),
    o.batcher.submit(row("bt-dup", "k", "older", 0, { ts: 400, nonce: 9 })),
    o.batcher.submit(row("bt-dup", "k", "tie-lower-nonce", 0, { ts: 500, nonce: 0 })),
  ]);
  expect(o.sizes).toEqual([3]);
  const [r] = await sql`SELECT value FROM kv_entries WHERE ns = 'bt-dup' AND key = ${b("k")}`;
  expect(new TextDecoder().decode(r.value)).toBe("newer");
});

test("a bulk write is one batch, and close() drains what is pending then refuses more", async () => {
  const o = observed({ windowMs: 100, concurrency: 1 });
  await o.batcher.submitAll(Array.from({ length: 2000 }, (_, i) => row("bt-bulk", `k${i}`, "v")));
  expect(o.sizes).toEqual([2000]);
  const pending = Array.from({ length: 50 }, (_, i) => o.batcher.submit(row("bt-close", `k${i}`, "v")));
  expect(o.batcher.pending).toBe(50);
  await o.batcher.close();
  await Promise.all(pending);
  expect(await count("bt-close")).toBe(50);
  expect(o.batcher.pending).toBe(0);
  await expect(o.batcher.submit(row("bt-close", "late", "v"))).rejects.toBeInstanceOf(ShuttingDownError);
  await expect(o.batcher.submitAll([row("bt-close", "late", "v")])).rejects.toBeInstanceOf(ShuttingDownError);
});

test("a connection dropped under the batcher costs a retry, not an error", async () => {
  const own = await openPostgresBackend(pg.url, 1);
  const batcher = createBatcher({ write: (rows) => own.write(rows), maxRows: 100, maxBytes: 1 << 20, windowMs: 1, concurrency: 1, metrics: createRegistry() });
  await batcher.submit(row("bt-retry", "before", "v"));
  // Terminate every other client connection: the batcher's pooled connection is among them.
  await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND datname = current_database()`;
  await batcher.submit(row("bt-retry", "after", "v"));
  expect(await count("bt-retry")).toBe(2);
  await batcher.close();
  await own.close();
});

test("rows whose final flush fails at close are counted (a shutdown reports them), and every one is refused", async () => {
  const down = await startTestPostgres();
  const lost = await openPostgresBackend(down.url, 2);
  try {
    await down.stop();
    const batcher = createBatcher({ write: (rows) => lost.write(rows), maxRows: 10, maxBytes: 1 << 20, windowMs: 5, concurrency: 1, metrics: createRegistry() });
    const pending = Array.from({ length: 25 }, (_, i) => batcher.submit(row("bt-down", `k${i}`, "v")));
    const bulk = batcher.submitAll([row("bt-down", "b1", "v"), row("bt-down", "b2", "v")]);
    expect(batcher.pendingRows).toBe(27);
    const closing = batcher.close();
    const outcomes = await Promise.allSettled([...pending, bulk]);
    await closing;
    expect(outcomes.filter((o) => o.status === "fulfilled")).toEqual([]);
    expect(batcher.failedAtClose).toBe(27);
    expect(batcher.pendingRows).toBe(0);
  } finally {
    await lost.close().catch(() => {});
    await down.destroy();
  }
});
