// Cross-instance invalidation over a real Postgres LISTEN/NOTIFY: eviction by key hash, own messages ignored,
// large batches split, hostile payloads ignored, and a killed listener connection resyncing.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { systemClock } from "../../src/clock.ts";
import { createReadCache, keyHash, type ReadCache } from "../../src/gateway/cache.ts";
import { CHANNEL, startInvalidation, type Invalidation } from "../../src/gateway/notify.ts";
import { createRegistry, type Registry } from "../../src/metrics/registry.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
interface Node {
  cache: ReadCache;
  inv: Invalidation;
  metrics: Registry;
  resyncs: number;
}
let a: Node;
let b: Node;

const entry = (v: string) => ({ value: new TextEncoder().encode(v), metadata: null, expiration: null, version: { ts: 1, nonce: 1 } });

async function node(id: string): Promise<Node> {
  const n = { cache: createReadCache({ maxBytes: 1 << 20, clock: systemClock }), metrics: createRegistry(), resyncs: 0 } as Node;
  n.inv = await startInvalidation({
    url: pg.url,
    instanceId: id,
    onEvict: (ns, hs) => (hs === "all" ? n.cache.deleteWhere((k) => k.startsWith(ns + "\0")) : n.cache.evictHashed(ns, hs)),
    onResync: () => {
      n.resyncs++;
      n.cache.clear();
    },
    metrics: n.metrics,
  });
  return n;
}

async function until(cond: () => boolean, ms = 5000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}

beforeAll(async () => {
  pg = await startTestPostgres();
  a = await node("A");
  b = await node("B");
}, 60_000);
afterAll(async () => {
  await a?.inv.close();
  await b?.inv.close();
  await pg?.destroy();
}, 60_000);

test("a write announced by one instance evicts exactly that key elsewhere, and not on itself", async () => {
  for (const n of [a, b]) {
    n.cache.setFromWrite("ns1\0k", entry("old"));
    n.cache.setFromWrite("ns1\0j", entry("other"));
    n.cache.setFromWrite("ns2\0k", entry("other ns"));
  }
  a.inv.announce("ns1", [keyHash("k")]);
  await until(() => b.cache.get("ns1\0k", 60) === undefined);
  expect(b.cache.get("ns1\0j", 60)).toBeDefined();
  expect(b.cache.get("ns2\0k", 60)).toBeDefined();
  await Bun.sleep(100);
  expect(a.cache.get("ns1\0k", 60)).toBeDefined();
});

test("an eviction keeps a read already in flight from caching its older answer", () => {
  const c = createReadCache({ maxBytes: 1 << 20, clock: systemClock });
  const ticket = c.readTicket();
  c.evictHashed("ns", [keyHash("x")]);
  c.setFromRead("ns\0x", entry("from before the remote write"), ticket);
  expect(c.get("ns\0x", 60)).toBeUndefined();
  c.setFromRead("ns\0x", entry("fresh"), c.readTicket());
  expect(c.get("ns\0x", 60)).toBeDefined();
  expect(c.evictHashed("ns", [keyHash("x")])).toBe(1);
  expect(c.entries).toBe(0);
  expect(c.bytes).toBe(0);
});

test("5,000 keys in one turn arrive completely, split over several notifications", async () => {
  const keys = Array.from({ length: 5000 }, (_, i) => `bulk-${i}`);
  for (const k of keys) b.cache.setFromWrite(`ns3\0${k}`, entry("v"));
  const before = b.metrics.render().match(/kvdrive_invalidations_received_total (\d+)/)?.[1] ?? "0";
  a.inv.announce("ns3", keys.map(keyHash));
  await until(() => keys.every((k) => b.cache.get(`ns3\0${k}`, 60) === undefined));
  const after = Number(b.metrics.render().match(/kvdrive_invalidations_received_total (\d+)/)![1]);
  expect(after - Number(before)).toBeGreaterThan(1);
});

test("a hostile NOTIFY on the channel is counted and ignored", async () => {
  const sql = new Bun.SQL(pg.url, { max: 1 });
  for (const p of ["not json", '{"i":"X","t":1,"n":"ns1","h":["evil"]}', '{"i":"X"}', JSON.stringify({ i: "X", t: 1, n: "ns1", h: Array(700).fill(1) })]) {
    await sql`SELECT pg_notify(${CHANNEL}, ${p})`;
  }
  await until(() => /kvdrive_invalidations_malformed_total 4/.test(b.metrics.render()));
  await sql.close();
});

test("after its listening connection is killed, an instance clears its cache and keeps receiving", async () => {
  b.cache.setFromWrite("ns4\0k", entry("v"));
  const sql = new Bun.SQL(pg.url, { max: 1 });
  await sql`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query ILIKE ${"%listen%" + CHANNEL + "%"} AND pid <> pg_backend_pid()`;
  await sql.close();
  await until(() => b.resyncs > 0 && a.resyncs > 0, 15_000);
  expect(b.cache.get("ns4\0k", 60)).toBeUndefined();
  b.cache.setFromWrite("ns5\0k", entry("v"));
  a.inv.announce("ns5", [keyHash("k")]);
  await until(() => b.cache.get("ns5\0k", 60) === undefined, 10_000);
});

test("delay from announcement to eviction, over 1,000 announcements", async () => {
  for (let i = 0; i < 1000; i++) {
    a.inv.announce("ns6", [i]);
    if (i % 50 === 0) await Bun.sleep(1);
  }
  await until(() => (b.metrics.render().match(/kvdrive_invalidation_delay_seconds_count (\d+)/)?.[1] ?? "0") !== "0");
  await Bun.sleep(200);
  const text = b.metrics.render();
  const count = Number(text.match(/kvdrive_invalidation_delay_seconds_count (\d+)/)![1]);
  const sum = Number(text.match(/kvdrive_invalidation_delay_seconds_sum (\S+)/)![1]);
  console.log(`cross-instance invalidation: ${count} messages, mean delay ${((sum / count) * 1000).toFixed(2)} ms`);
  expect(count).toBeGreaterThan(0);
});
