// The Gateway on its own, over a real Postgres: what kv relies on (a cached read answers without a promise,
// read-your-own-write, expiry at the injected clock, the namespace catalog, closing refuses writes).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { openGateway } from "../../src/gateway/open.ts";
import type { Gateway } from "../../src/gateway/types.ts";
import { ShuttingDownError } from "../../src/errors.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { startTestPostgres, tempDirForFile, type TestPostgres } from "../helpers/postgres.ts";

/** The data dir these in-process services are given (the blob store makes its folder there). */
const dataDir = tempDirForFile("kvdrive-unit-");

let pg: TestPostgres;
let gw: Gateway;
const clock = manualClock(Date.UTC(2026, 0, 1));
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (v: { value: Uint8Array } | null) => (v ? new TextDecoder().decode(v.value) : null);

beforeAll(async () => {
  pg = await startTestPostgres();
  gw = await openGateway({ urls: [pg.url], config: loadConfig({ dataDir }, {}), clock, metrics: createRegistry() });
}, 60_000);
afterAll(async () => {
  await gw.close();
  await pg.destroy();
}, 60_000);

test("a write is read back from the cache without a promise; a miss goes to storage and is cached", async () => {
  expect(await gw.createNamespace("acc-gw", "gw-ns-1", "one")).toBe(true);
  await gw.put("gw-ns-1", "a", bytes("1"), '{"m":1}', null);
  const hit = gw.get("gw-ns-1", "a", 60);
  expect(hit instanceof Promise).toBe(false);
  expect(text(hit as { value: Uint8Array })).toBe("1");
  expect((hit as { metadata: string | null }).metadata).toBe('{"m":1}');
  const miss = gw.get("gw-ns-1", "never-written", 60);
  expect(miss instanceof Promise).toBe(true);
  expect(await miss).toBeNull();
  expect(gw.get("gw-ns-1", "never-written", 60)).toBeNull();
});

test("bulk writes, bulk reads, deletes, expiry at the injected clock, list", async () => {
  await gw.createNamespace("acc-gw", "gw-ns-2", "two");
  const now = Math.floor(clock.now() / 1000);
  await gw.putMany("gw-ns-2", [
    { key: "k1", value: bytes("v1"), metadata: null, expiration: null },
    { key: "k2", value: bytes("v2"), metadata: null, expiration: now + 100 },
    { key: "k3", value: bytes("v3"), metadata: null, expiration: null },
  ]);
  await gw.deleteMany("gw-ns-2", ["k3"]);
  expect((await gw.getMany("gw-ns-2", ["k1", "k2", "k3", "k4"], 60)).map(text)).toEqual(["v1", "v2", null, null]);
  const listed = await gw.list({ ns: "gw-ns-2", after: null, from: null, before: null, limit: 10, now });
  expect(listed.map((e) => new TextDecoder().decode(e.key))).toEqual(["k1", "k2"]);
  clock.advance(101_000);
  expect(await gw.get("gw-ns-2", "k2", 60)).toBeNull();
  await gw.delete("gw-ns-2", "k1");
  expect(gw.get("gw-ns-2", "k1", 60)).toBeNull();
});

test("the namespace catalog: remembered rows, forget and reload, rename, replication override, delete", async () => {
  await gw.createNamespace("acc-gw", "gw-ns-3", "three");
  expect(gw.namespace("gw-ns-3")).toMatchObject({ account_id: "acc-gw", title: "three" });
  expect(await gw.createNamespace("acc-gw", "gw-ns-3b", "three")).toBe(false);
  expect(await gw.renameNamespace("acc-gw", "gw-ns-3", "drei")).toBe("ok");
  expect(gw.namespace("gw-ns-3")).toBeUndefined();
  expect(await gw.loadNamespace("gw-ns-3")).toMatchObject({ title: "drei" });
  expect(gw.modeOf("gw-ns-3")).toBe("primary");
  expect(await gw.setReplication("gw-ns-3", "shadow")).toBe(true);
  await gw.loadNamespace("gw-ns-3");
  expect(gw.modeOf("gw-ns-3")).toBe("shadow");
  expect(gw.redundancy()).toMatchObject({ defaultMode: "primary", replica: null, repairQueueDepth: 0, lastCrawl: null });
  expect(await gw.runCrawlerPass()).toBeNull();
  await gw.put("gw-ns-3", "x", bytes("y"), null, null);
  expect(await gw.deleteNamespace("acc-other", "gw-ns-3")).toBe(false);
  expect(await gw.deleteNamespace("acc-gw", "gw-ns-3")).toBe(true);
  expect(await gw.loadNamespace("gw-ns-3")).toBeNull();
  expect(await gw.get("gw-ns-3", "x", 60)).toBeNull();
  expect(await gw.ready()).toBe(true);
});

test("after close a write is refused with ShuttingDownError", async () => {
  const other = await openGateway({ urls: [pg.url], config: loadConfig({ dataDir, invalidation: false }, {}), clock, metrics: createRegistry() });
  await other.createNamespace("acc-gw", "gw-ns-4", "four");
  await other.close();
  await expect(other.put("gw-ns-4", "k", bytes("v"), null, null)).rejects.toBeInstanceOf(ShuttingDownError);
});
