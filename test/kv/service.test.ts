import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { createKVService } from "../../src/kv/service.ts";
import type { KVService } from "../../src/kv/types.ts";
import { startTestPostgres, tempDirForFile, type TestPostgres } from "../helpers/postgres.ts";

/** The data dir these in-process services are given (the blob store makes its folder there). */
const dataDir = tempDirForFile("kvdrive-unit-");

let pg: TestPostgres;
let kv: KVService;
const metrics = createRegistry();
const clock = manualClock(Date.UTC(2026, 0, 1));
const ACC = "acc-service";
const text = (v: { value: Uint8Array } | null) => (v ? new TextDecoder().decode(v.value) : null);
const bytes = (s: string) => new TextEncoder().encode(s);

beforeAll(async () => {
  pg = await startTestPostgres();
  kv = await createKVService({ urls: [pg.url], config: loadConfig({ dataDir }, {}), clock, metrics });
}, 60_000);
afterAll(async () => {
  await kv.close();
  await pg.destroy();
}, 60_000);

describe("namespaces", () => {
  test("create, duplicate title, rename, list, delete, account isolation", async () => {
    const a = await kv.createNamespace(ACC, "alpha");
    expect(a.id).toMatch(/^[0-9a-f]{32}$/);
    await expect(kv.createNamespace(ACC, "alpha")).rejects.toMatchObject({ status: 400, code: 10014 });
    const other = await kv.createNamespace("acc-other", "alpha");
    await expect(kv.getNamespace(ACC, other.id)).rejects.toMatchObject({ status: 404, code: 10013 });
    const b = await kv.createNamespace(ACC, "beta");
    await expect(kv.renameNamespace(ACC, b.id, "alpha")).rejects.toMatchObject({ code: 10014 });
    expect((await kv.renameNamespace(ACC, b.id, "gamma")).title).toBe("gamma");
    const page1 = await kv.listNamespaces(ACC, { page: 1, perPage: 1, order: "title", direction: "asc" });
    expect(page1.total).toBe(2);
    expect(page1.namespaces.map((n) => n.title)).toEqual(["alpha"]);
    const past = await kv.listNamespaces(ACC, { page: 5, perPage: 10, order: "id", direction: "asc" });
    expect(past.namespaces).toEqual([]);
    await kv.deleteNamespace(ACC, b.id);
    await expect(kv.getNamespace(ACC, b.id)).rejects.toMatchObject({ code: 10013 });
    await expect(kv.deleteNamespace(ACC, b.id)).rejects.toMatchObject({ code: 10013 });
  });
});

describe("values", () => {
  test("put, get, overwrite, delete (tombstone), missing delete succeeds", async () => {
    const ns = (await kv.createNamespace(ACC, "values")).id;
    await kv.put(ACC, ns, { key: "a", value: bytes("1"), metadata: { m: 1 } });
    expect(text(await kv.get(ACC, ns, "a"))).toBe("1");
    expect((await kv.get(ACC, ns, "a"))!.metadata).toBe('{"m":1}');
    await kv.put(ACC, ns, { key: "a", value: bytes("2") });
    expect(text(await kv.get(ACC, ns, "a"))).toBe("2");
    await kv.delete(ACC, ns, "a");
    expect(await kv.get(ACC, ns, "a")).toBeNull();
    await kv.delete(ACC, ns, "never-existed");
    const rows = await pg.url && (await new Bun.SQL(pg.url)`SELECT tombstone FROM kv_entries WHERE ns = ${ns} AND key = ${bytes("a")}`);
    expect(rows[0].tombstone).toBe(true);
  });

  test("an older version never overwrites a newer one; a newer one seen by a read orders later writes after it", async () => {
    const ns = (await kv.createNamespace(ACC, "versions")).id;
    const sql = new Bun.SQL(pg.url);
    // Another process, whose clock runs an hour ahead, wrote this key.
    const ahead = (clock.now() + 3_600_000) * 1000;
    await sql`INSERT INTO kv_entries (ns, key, value, version_ts, version_nonce) VALUES (${ns}, ${bytes("k")}, ${bytes("remote")}, ${ahead}, 1)`;
    await kv.put(ACC, ns, { key: "k", value: bytes("local-older") });
    const [row] = await sql`SELECT value, version_ts FROM kv_entries WHERE ns = ${ns} AND key = ${bytes("k")}`;
    expect(new TextDecoder().decode(row.value)).toBe("remote");
    // Reading the remote write moves this process's clock past it: the next local write wins.
    await sql`INSERT INTO kv_entries (ns, key, value, version_ts, version_nonce) VALUES (${ns}, ${bytes("j")}, ${bytes("remote")}, ${ahead + 10}, 1)`;
    expect(text(await kv.get(ACC, ns, "j"))).toBe("remote");
    await kv.put(ACC, ns, { key: "j", value: bytes("after-read") });
    const [j] = await sql`SELECT value FROM kv_entries WHERE ns = ${ns} AND key = ${bytes("j")}`;
    expect(new TextDecoder().decode(j.value)).toBe("after-read");
    await sql.close();
  });

  test("another account sees neither the namespace nor its values", async () => {
    const ns = (await kv.createNamespace(ACC, "isolated")).id;
    await kv.put(ACC, ns, { key: "secret", value: bytes("s") });
    const other = "acc-intruder";
    await expect(kv.get(other, ns, "secret")).rejects.toMatchObject({ status: 404, code: 10013 });
    await expect(kv.put(other, ns, { key: "x", value: bytes("x") })).rejects.toMatchObject({ code: 10013 });
    await expect(kv.delete(other, ns, "secret")).rejects.toMatchObject({ code: 10013 });
    await expect(kv.list(other, ns, { limit: 10 })).rejects.toMatchObject({ code: 10013 });
    await expect(kv.getMany(other, ns, ["secret"])).rejects.toMatchObject({ code: 10013 });
    await expect(kv.deleteNamespace(other, ns)).rejects.toMatchObject({ code: 10013 });
    expect((await kv.listNamespaces(other, { page: 1, perPage: 100, order: "id", direction: "asc" })).namespaces.map((n) => n.id)).not.toContain(ns);
    expect(text(await kv.get(ACC, ns, "secret"))).toBe("s");
  });

  test("deleting a namespace removes its entries", async () => {
    const ns = (await kv.createNamespace(ACC, "doomed")).id;
    await kv.putMany(ACC, ns, [{ key: "a", value: bytes("1") }, { key: "b", value: bytes("2") }]);
    await kv.deleteNamespace(ACC, ns);
    const sql = new Bun.SQL(pg.url);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns}`;
    expect(n).toBe(0);
    await sql.close();
    await expect(kv.get(ACC, ns, "a")).rejects.toMatchObject({ code: 10013 });
  });

  test("expiry is immediate with the injected clock", async () => {
    const ns = (await kv.createNamespace(ACC, "expiry")).id;
    const now = Math.floor(clock.now() / 1000);
    await kv.put(ACC, ns, { key: "e", value: bytes("x"), expiration: now + 120 });
    await kv.put(ACC, ns, { key: "f", value: bytes("y") });
    expect(text(await kv.get(ACC, ns, "e"))).toBe("x");
    clock.advance(121_000);
    expect(await kv.get(ACC, ns, "e")).toBeNull();
    expect((await kv.getMany(ACC, ns, ["e", "f"])).map(text)).toEqual([null, "y"]);
    expect((await kv.list(ACC, ns, { limit: 10 })).keys.map((k) => k.name)).toEqual(["f"]);
  });

  test("list: UTF-8 byte order, literal prefix, cursor pagination while inserting", async () => {
    const ns = (await kv.createNamespace(ACC, "list")).id;
    const keys = ["b", "a", "a%", "a_", "ab", "é", "z", "\u{1F600}", "\uFFFD", "A"];
    for (const k of keys) await kv.put(ACC, ns, { key: k, value: bytes(k) });
    const all = (await kv.list(ACC, ns, { limit: 1000 })).keys.map((k) => k.name);
    const byteOrder = [...keys].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    expect(all).toEqual(byteOrder);
    expect((await kv.list(ACC, ns, { prefix: "a_", limit: 10 })).keys.map((k) => k.name)).toEqual(["a_"]);
    expect((await kv.list(ACC, ns, { prefix: "a%", limit: 10 })).keys.map((k) => k.name)).toEqual(["a%"]);

    // Paginate while other writers insert before and after the cursor: every key that sorts after the cursor
    // at the time of its page shows up, none twice, and the order holds across pages.
    const seen: string[] = [];
    let cursor: string | undefined;
    let round = 0;
    do {
      const page = await kv.list(ACC, ns, { limit: 3, cursor });
      seen.push(...page.keys.map((k) => k.name));
      cursor = page.cursor || undefined;
      round++;
      await Promise.all([kv.put(ACC, ns, { key: `y-late-${round}`, value: bytes("late") }), kv.put(ACC, ns, { key: `0-early-${round}`, value: bytes("early") })]);
    } while (cursor);
    expect(seen.filter((k) => k.startsWith("y-late-")).length).toBeGreaterThan(0);
    expect(seen.some((k) => k.startsWith("0-early-"))).toBe(false);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual([...seen].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))));
    for (const k of keys) expect(seen).toContain(k);
    expect((await kv.list(ACC, ns, { limit: 1000 })).cursor).toBe("");
    await expect(kv.list(ACC, ns, { limit: 3, cursor: "garbage!" })).rejects.toMatchObject({ status: 400 });
  });

  test("1,000 concurrent puts are all readable; a raced key keeps the newest version", async () => {
    const ns = (await kv.createNamespace(ACC, "concurrent")).id;
    const batchesBefore = metrics.histogram("kvdrive_batch_rows", "").snapshot().count;
    await Promise.all(Array.from({ length: 1000 }, (_, i) => kv.put(ACC, ns, { key: `k${i}`, value: bytes(`v${i}`) })));
    await Promise.all(Array.from({ length: 200 }, (_, i) => kv.put(ACC, ns, { key: "raced", value: bytes(`r${i}`) })));
    const sql = new Bun.SQL(pg.url);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns} AND NOT tombstone`;
    expect(n).toBe(1001);
    const [raced] = await sql`SELECT value FROM kv_entries WHERE ns = ${ns} AND key = ${bytes("raced")}`;
    expect(new TextDecoder().decode(raced.value)).toBe("r199");
    await sql.close();
    // Group commit: far fewer statements than writes.
    expect(metrics.histogram("kvdrive_batch_rows", "").snapshot().count - batchesBefore).toBeLessThan(600);
    const got = await kv.getMany(ACC, ns, Array.from({ length: 100 }, (_, i) => `k${i * 10}`));
    expect(got.map(text)).toEqual(Array.from({ length: 100 }, (_, i) => `v${i * 10}`));
  });

  test("bulk writes and deletes are one batch each", async () => {
    const ns = (await kv.createNamespace(ACC, "bulk")).id;
    const committed = () => metrics.counter("kvdrive_batches_committed_total", "").get();
    const before = committed();
    await kv.putMany(ACC, ns, Array.from({ length: 5000 }, (_, i) => ({ key: `b${i}`, value: bytes(String(i)) })));
    expect(committed() - before).toBe(1);
    // The same key twice in one bulk write: the later pair wins.
    await kv.putMany(ACC, ns, [{ key: "dup", value: bytes("first") }, { key: "dup", value: bytes("second") }]);
    expect(text(await kv.get(ACC, ns, "dup"))).toBe("second");
    expect((await kv.getMany(ACC, ns, ["dup", "dup", "none"])).map(text)).toEqual(["second", "second", null]);
    expect(text(await kv.get(ACC, ns, "b4999"))).toBe("4999");
    await kv.deleteMany(ACC, ns, ["b1", "b2"]);
    expect((await kv.getMany(ACC, ns, ["b1", "b2", "b3"])).map(text)).toEqual([null, null, "3"]);
  });
});

describe("read cache", () => {
  test("read-your-own-write, a hit does no I/O, cacheTtl bounds staleness", async () => {
    const ns = (await kv.createNamespace(ACC, "cache")).id;
    await kv.put(ACC, ns, { key: "c", value: bytes("v1") });
    expect(text(await kv.get(ACC, ns, "c"))).toBe("v1");
    // Change storage behind the service's back: a cache hit must not see it (no I/O)...
    const sql = new Bun.SQL(pg.url);
    await sql`UPDATE kv_entries SET value = ${bytes("behind")} WHERE ns = ${ns} AND key = ${bytes("c")}`;
    expect(text(await kv.get(ACC, ns, "c"))).toBe("v1");
    // ...until the entry is older than cacheTtl.
    clock.advance(31_000);
    expect(text(await kv.get(ACC, ns, "c", { cacheTtl: 30 }))).toBe("behind");
    // Own writes and deletes are visible at once.
    await kv.put(ACC, ns, { key: "c", value: bytes("v2") });
    expect(text(await kv.get(ACC, ns, "c"))).toBe("v2");
    await kv.delete(ACC, ns, "c");
    expect(await kv.get(ACC, ns, "c")).toBeNull();
    // Negative entries are cached too.
    expect(await kv.get(ACC, ns, "absent")).toBeNull();
    await sql`INSERT INTO kv_entries (ns, key, value, version_ts, version_nonce) VALUES (${ns}, ${bytes("absent")}, ${bytes("x")}, 1, 1)`;
    expect(await kv.get(ACC, ns, "absent")).toBeNull();
    await sql.close();
  });
});

describe("bounds, background purge and shutdown", () => {
  test("the cache stays within its byte bound; cacheTtl under 30 s counts as 30 s", async () => {
    const m = createRegistry();
    const small = await createKVService({ urls: [pg.url], config: loadConfig({ dataDir, cacheBytes: 64 * 1024 }, {}), clock, metrics: m });
    const ns = (await small.createNamespace(ACC, "small-cache")).id;
    const gauge = () => Number(/^kvdrive_cache_bytes (\d+)$/m.exec(m.render())![1]);
    // First, while the cache has room for a write of a new key (a full one does not admit it).
    await small.put(ACC, ns, { key: "ttl", value: bytes("v1") });
    const sql = new Bun.SQL(pg.url);
    await sql`UPDATE kv_entries SET value = ${bytes("behind")} WHERE ns = ${ns} AND key = ${bytes("ttl")}`;
    clock.advance(10_000);
    expect(text(await small.get(ACC, ns, "ttl", { cacheTtl: 1 }))).toBe("v1");
    clock.advance(21_000);
    expect(text(await small.get(ACC, ns, "ttl", { cacheTtl: 1 }))).toBe("behind");
    for (let i = 0; i < 50; i++) {
      await small.putMany(ACC, ns, Array.from({ length: 20 }, (_, j) => ({ key: `k${i}-${j}`, value: new Uint8Array(300 + j) })));
      expect(gauge()).toBeLessThanOrEqual(64 * 1024);
    }
    await small.getMany(ACC, ns, Array.from({ length: 100 }, (_, i) => `k${i % 50}-${i % 20}`));
    expect(gauge()).toBeLessThanOrEqual(64 * 1024);
    expect(gauge()).toBeGreaterThan(32 * 1024);

    const hits = m.counter("kvdrive_cache_hits_total", "").get();
    const missesCount = m.counter("kvdrive_cache_misses_total", "").get();
    expect(hits).toBeGreaterThan(0);
    expect(missesCount).toBeGreaterThan(0);
    await sql.close();
    await small.close();
  });

  test("the purge job removes expired entries and tombstones past their grace", async () => {
    const m = createRegistry();
    const purging = await createKVService({
      urls: [pg.url],
      config: loadConfig({ dataDir, purgeIntervalSeconds: 1, tombstoneGraceSeconds: 600 }, {}),
      clock,
      metrics: m,
    });
    const ns = (await purging.createNamespace(ACC, "purge")).id;
    const now = Math.floor(clock.now() / 1000);
    await purging.put(ACC, ns, { key: "expiring", value: bytes("x"), expiration: now + 60 });
    await purging.put(ACC, ns, { key: "kept", value: bytes("y") });
    await purging.put(ACC, ns, { key: "deleted", value: bytes("z") });
    await purging.delete(ACC, ns, "deleted");
    const sql = new Bun.SQL(pg.url);
    const keysLeft = async () => (await sql`SELECT key FROM kv_entries WHERE ns = ${ns} ORDER BY key`).map((r: { key: Uint8Array }) => new TextDecoder().decode(r.key));
    // Nothing is due yet: the job runs (every second, real time) and leaves all rows.
    await Bun.sleep(1500);
    expect(await keysLeft()).toEqual(["deleted", "expiring", "kept"]);
    // Past the expiry and the tombstone grace, on the injected clock.
    clock.advance(601_000);
    const deadline = Date.now() + 10_000;
    while ((await keysLeft()).length > 1 && Date.now() < deadline) await Bun.sleep(100);
    expect(await keysLeft()).toEqual(["kept"]);
    expect(m.counter("kvdrive_purged_total", "").get()).toBeGreaterThanOrEqual(2);
    await sql.close();
    await purging.close();
  });

  test("close() commits every accepted write, then refuses new ones with 503", async () => {
    const closing = await createKVService({ urls: [pg.url], config: loadConfig({ dataDir, batchWindowMs: 50, batchConcurrency: 1 }, {}), clock, metrics: createRegistry() });
    const ns = (await closing.createNamespace(ACC, "closing")).id;
    const writes = Array.from({ length: 300 }, (_, i) => closing.put(ACC, ns, { key: `c${i}`, value: bytes(`v${i}`) }));
    await closing.close();
    await Promise.all(writes);
    const sql = new Bun.SQL(pg.url);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns}`;
    expect(n).toBe(300);
    await sql.close();
    await expect(closing.put(ACC, ns, { key: "late", value: bytes("x") })).rejects.toMatchObject({ status: 503 });
  });
});

test("a namespace deleted while writes to it are in flight leaves no rows behind", async () => {
  const ns = (await kv.createNamespace(ACC, "racing-delete")).id;
  const writes = Array.from({ length: 200 }, (_, i) => kv.put(ACC, ns, { key: `k${i}`, value: bytes("v") }).catch(() => {}));
  await kv.deleteNamespace(ACC, ns);
  await Promise.all(writes);
  const sql = new Bun.SQL(pg.url);
  const [{ n }] = await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns}`;
  expect(n).toBe(0);
  await sql.close();
});
