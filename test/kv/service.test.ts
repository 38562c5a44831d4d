import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { createKVService } from "../../src/kv/service.ts";
import type { KVService } from "../../src/kv/types.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
let kv: KVService;
const metrics = createRegistry();
const clock = manualClock(Date.UTC(2026, 0, 1));
const ACC = "acc-service";
const text = (v: { value: Uint8Array } | null) => (v ? new TextDecoder().decode(v.value) : null);
const bytes = (s: string) => new TextEncoder().encode(s);

beforeAll(async () => {
  pg = await startTestPostgres();
  kv = await createKVService({ urls: [pg.url], config: loadConfig({ dataDir: "/tmp/unused" }, {}), clock, metrics });
});
afterAll(async () => {
  await kv.close();
  await pg.destroy();
});

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

  test("an older version never overwrites a newer one", async () => {
    const ns = (await kv.createNamespace(ACC, "versions")).id;
    await kv.put(ACC, ns, { key: "k", value: bytes("new") });
    const sql = new Bun.SQL(pg.url);
    const res = await sql`UPDATE kv_entries SET value = ${bytes("old")} WHERE ns = ${ns} AND (version_ts, version_nonce) < (${1}, ${0})`;
    expect(res.count).toBe(0);
    await sql.close();
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

    const seen: string[] = [];
    let cursor: string | undefined;
    let inserted = false;
    do {
      const page = await kv.list(ACC, ns, { limit: 3, cursor });
      seen.push(...page.keys.map((k) => k.name));
      cursor = page.cursor || undefined;
      if (!inserted) {
        await kv.put(ACC, ns, { key: "y-late", value: bytes("late") });
        inserted = true;
      }
    } while (cursor);
    expect(seen).toContain("y-late");
    expect(new Set(seen).size).toBe(seen.length);
    await expect(kv.list(ACC, ns, { limit: 3, cursor: "garbage!" })).rejects.toMatchObject({ status: 400 });
  });

  test("1,000 concurrent puts are all readable; a raced key keeps the newest version", async () => {
    const ns = (await kv.createNamespace(ACC, "concurrent")).id;
    await Promise.all(Array.from({ length: 1000 }, (_, i) => kv.put(ACC, ns, { key: `k${i}`, value: bytes(`v${i}`) })));
    await Promise.all(Array.from({ length: 200 }, (_, i) => kv.put(ACC, ns, { key: "raced", value: bytes(`r${i}`) })));
    const sql = new Bun.SQL(pg.url);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM kv_entries WHERE ns = ${ns} AND NOT tombstone`;
    expect(n).toBe(1001);
    const [raced] = await sql`SELECT value FROM kv_entries WHERE ns = ${ns} AND key = ${bytes("raced")}`;
    expect(new TextDecoder().decode(raced.value)).toBe("r199");
    await sql.close();
    // Group commit: far fewer statements than writes.
    expect(metrics.histogram("kvdrive_batch_rows", "").snapshot().count).toBeLessThan(600);
    const got = await kv.getMany(ACC, ns, Array.from({ length: 100 }, (_, i) => `k${i * 10}`));
    expect(got.map(text)).toEqual(Array.from({ length: 100 }, (_, i) => `v${i * 10}`));
  });

  test("bulk writes and deletes are one batch each", async () => {
    const ns = (await kv.createNamespace(ACC, "bulk")).id;
    await kv.putMany(ACC, ns, Array.from({ length: 5000 }, (_, i) => ({ key: `b${i}`, value: bytes(String(i)) })));
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
