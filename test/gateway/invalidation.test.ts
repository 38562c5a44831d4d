// Cross-instance invalidation (src/gateway/invalidation.ts) over real Postgres LISTEN/NOTIFY on two clusters:
// eviction by key hash, own messages ignored, large batches split, hostile payloads ignored, a killed listener
// and a restarted cluster resyncing, and the delay from announcement to eviction.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { systemClock } from "../../src/clock.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { createReadCache, keyHash, type ReadCache } from "../../src/gateway/cache.ts";
import { CHANNEL, HASHES_PER_MESSAGE, WHOLE_NAMESPACE_AT, startInvalidation, type Invalidation } from "../../src/gateway/invalidation.ts";
import { createRegistry, type Registry } from "../../src/metrics/registry.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

interface Node {
  id: string;
  cache: ReadCache;
  inv: Invalidation;
  metrics: Registry;
  resyncs: number[];
  /** Per namespace: when each key hash was evicted here (ms). */
  evictedAt: Map<string, Map<number, number>>;
  wholeNamespace: string[];
}

let pg1: TestPostgres;
let pg2: TestPostgres;
let pg2Restarted: EmbeddedPostgres | undefined;
const nodes: Node[] = [];
let a: Node;
let b: Node;

const entry = (v: string) => ({ value: new TextEncoder().encode(v), metadata: null, expiration: null, version: { ts: 1, nonce: 1 } });
const count = (n: Node, name: string) => n.metrics.counter(name, "").get();

async function node(id: string, urls: string[], startTimeoutMs?: number): Promise<Node> {
  const n: Node = { id, cache: createReadCache({ maxBytes: 64 << 20, clock: systemClock }), metrics: createRegistry(), resyncs: [], evictedAt: new Map(), wholeNamespace: [], inv: undefined as unknown as Invalidation };
  n.inv = await startInvalidation({
    urls,
    instanceId: id,
    startTimeoutMs,
    onEvict(ns, hashes) {
      if (hashes === "all") {
        n.wholeNamespace.push(ns);
        return n.cache.evictNamespace(ns);
      }
      let at = n.evictedAt.get(ns);
      if (!at) n.evictedAt.set(ns, (at = new Map()));
      const now = performance.timeOrigin + performance.now();
      for (const h of hashes) at.set(h, now);
      return n.cache.evictHashed(ns, hashes);
    },
    onResync(cluster) {
      n.resyncs.push(cluster);
      n.cache.clear();
    },
    metrics: n.metrics,
  });
  nodes.push(n);
  return n;
}

async function until(cond: () => boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await Bun.sleep(10);
  }
}

/** Kills the given instance's LISTEN backend on a cluster, from a connection of its own. */
async function killListener(url: string, id: string) {
  const sql = new Bun.SQL(url, { max: 1 });
  const rows = await sql`SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = ${"kvdrive-invalidation-" + id} AND query ILIKE 'listen%'`;
  await sql.close();
  expect(rows.length).toBe(1);
}

beforeAll(async () => {
  [pg1, pg2] = await Promise.all([startTestPostgres(), startTestPostgres()]);
  a = await node("A", [pg1.url, pg2.url]);
  b = await node("B", [pg1.url, pg2.url]);
}, 60_000);

afterAll(async () => {
  await Promise.all(nodes.map((n) => n.inv.close()));
  await pg2Restarted?.stop();
  await Promise.all([pg1?.destroy(), pg2?.destroy()]);
}, 60_000);

test("a write announced by one instance evicts exactly that key elsewhere, and its own cache is untouched", async () => {
  for (const n of [a, b]) {
    n.cache.setFromWrite("ns1\0k", entry("old"));
    n.cache.setFromWrite("ns1\0j", entry("other key"));
    n.cache.setFromWrite("ns2\0k", entry("other namespace"));
  }
  await a.inv.announce("ns1", ["k"]);
  await until(() => b.cache.get("ns1\0k", 60) === undefined);
  expect(b.cache.get("ns1\0j", 60)).toBeDefined();
  expect(b.cache.get("ns2\0k", 60)).toBeDefined();
  expect(count(b, "kvdrive_invalidation_keys_evicted_total")).toBe(1);
  await Bun.sleep(100);
  expect(a.cache.get("ns1\0k", 60)).toBeDefined();
  expect(count(a, "kvdrive_invalidations_received_total")).toBe(0);
  expect(count(a, "kvdrive_invalidations_sent_total")).toBe(1);
});

test("an announcement on the second cluster, and keys given as bytes, reach the other instance", async () => {
  b.cache.setFromWrite("ns1\0ключ", entry("old"));
  await a.inv.announce("ns1", [new TextEncoder().encode("ключ")], 1);
  await until(() => b.cache.get("ns1\0ключ", 60) === undefined);
});

test("5,000 keys in one turn arrive completely, split over several notifications", async () => {
  const keys = Array.from({ length: 5000 }, (_, i) => `bulk-${i}`);
  for (const k of keys) b.cache.setFromWrite(`ns3\0${k}`, entry("v"));
  b.cache.setFromWrite("ns3\0not announced", entry("v"));
  const received = count(b, "kvdrive_invalidations_received_total");
  // As a batcher's writes acknowledge: many announcements within one turn.
  await Promise.all(Array.from({ length: 50 }, (_, i) => a.inv.announce("ns3", keys.slice(i * 100, i * 100 + 100))));
  await until(() => keys.every((k) => b.cache.get(`ns3\0${k}`, 60) === undefined));
  expect(count(b, "kvdrive_invalidations_received_total") - received).toBe(Math.ceil(5000 / HASHES_PER_MESSAGE));
  expect(b.cache.get("ns3\0not announced", 60)).toBeDefined();
  expect(b.wholeNamespace).toEqual([]);
});

test("more than WHOLE_NAMESPACE_AT keys evict the namespace whole, in one message", async () => {
  b.cache.setFromWrite("ns7\0unnamed", entry("v"));
  b.cache.setFromWrite("ns8\0k", entry("v"));
  await a.inv.announce("ns7", Array.from({ length: WHOLE_NAMESPACE_AT + 1 }, (_, i) => `k${i}`));
  await until(() => b.wholeNamespace.includes("ns7"));
  expect(b.cache.get("ns7\0unnamed", 60)).toBeUndefined();
  expect(b.cache.get("ns8\0k", 60)).toBeDefined();
});

test("hostile NOTIFYs on the channel are counted and ignored, and the channel keeps working", async () => {
  const hostile = [
    "not json",
    "null",
    "[1,2]",
    '"string"',
    '{"i":"X"}',
    '{"i":"X","t":1,"n":"ns1","h":["evil"]}',
    '{"i":"X","t":1,"n":"ns1","h":[-1]}',
    '{"i":"X","t":1,"n":"ns1","h":[4294967296]}',
    '{"i":"X","t":"1","n":"ns1","h":[1]}',
    '{"i":"X","t":1,"n":"","h":[1]}',
    JSON.stringify({ i: "X", t: 1, n: "n".repeat(129), h: [1] }),
    JSON.stringify({ i: "X".repeat(65), t: 1, n: "ns1", h: [1] }),
    JSON.stringify({ i: "X", t: 1, n: "ns1", h: Array(HASHES_PER_MESSAGE + 1).fill(1) }),
    JSON.stringify({ i: "X", t: 1, n: "ns1", h: 2 }),
    '{"__proto__":{"i":"X"},"t":1,"n":"ns1","h":[1]}',
  ];
  const sql = new Bun.SQL(pg1.url, { max: 1 });
  for (const p of hostile) await sql`SELECT pg_notify(${CHANNEL}, ${p})`;
  await sql.close();
  await until(() => count(b, "kvdrive_invalidations_malformed_total") === hostile.length);
  b.cache.setFromWrite("ns1\0after", entry("v"));
  await a.inv.announce("ns1", ["after"]);
  await until(() => b.cache.get("ns1\0after", 60) === undefined);
});

test("after its listening connection is killed, an instance clears its cache and keeps receiving", async () => {
  b.cache.setFromWrite("ns4\0k", entry("v"));
  await killListener(pg1.url, "B");
  await until(() => b.resyncs.includes(0));
  expect(b.cache.get("ns4\0k", 60)).toBeUndefined();
  expect(a.resyncs).toEqual([]);
  expect(count(b, "kvdrive_invalidation_resyncs_total")).toBe(1);
  b.cache.setFromWrite("ns5\0k", entry("v"));
  await a.inv.announce("ns5", ["k"], 0);
  await until(() => b.cache.get("ns5\0k", 60) === undefined);
});

test("a cluster down at start is listened to once it is back; a cluster down later is skipped by senders", async () => {
  const { dataDir, port } = pg2;
  await pg2.stop();
  const c = await node("C", [pg1.url, pg2.url], 1000);
  // Sent to the stopped cluster: falls back to the first, which everyone hears.
  c.cache.setFromWrite("ns9\0k", entry("v"));
  b.cache.setFromWrite("ns9\0k", entry("v"));
  await a.inv.announce("ns9", ["k"], 1);
  await until(() => b.cache.get("ns9\0k", 60) === undefined && c.cache.get("ns9\0k", 60) === undefined);
  expect(count(a, "kvdrive_invalidation_send_errors_total")).toBe(0);

  pg2Restarted = await startEmbeddedPostgres({ dataDir, port });
  // Everyone missed what the second cluster may have carried meanwhile: each resyncs on it.
  await until(() => [a, b, c].every((n) => n.resyncs.includes(1)), 60_000);
  c.cache.setFromWrite("ns10\0k", entry("v"));
  const sql = new Bun.SQL(pg2Restarted.url, { max: 1 });
  await sql`SELECT pg_notify(${CHANNEL}, ${JSON.stringify({ i: "A", t: Date.now(), n: "ns10", h: [keyHash("k")] })})`;
  await sql.close();
  await until(() => c.cache.get("ns10\0k", 60) === undefined);
});

test("delay from announcement to eviction elsewhere, over 1,000 announcements", async () => {
  const histogram = () => b.metrics.histogram("kvdrive_invalidation_delay_seconds", "").snapshot();
  const before = histogram();
  const sentAt = new Map<number, number>();
  for (let i = 0; i < 1000; i++) {
    const k = `d${i}`;
    sentAt.set(keyHash(k), performance.timeOrigin + performance.now());
    void a.inv.announce("delay", [k]);
    await Bun.sleep(1); // one write acknowledged per millisecond, each in its own turn
  }
  await until(() => (b.evictedAt.get("delay")?.size ?? 0) === 1000);
  const at = b.evictedAt.get("delay")!;
  const ms = [...sentAt].map(([h, t]) => at.get(h)! - t).sort((x, y) => x - y);
  const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!.toFixed(2);
  const after = histogram();
  const hist = { count: after.count - before.count, sum: after.sum - before.sum };
  console.log(
    `cross-instance invalidation delay over 1,000 announcements (announce call to eviction on the other instance): ` +
      `p50 ${q(0.5)} ms, p90 ${q(0.9)} ms, p99 ${q(0.99)} ms, max ${ms[ms.length - 1]!.toFixed(2)} ms; ` +
      `histogram (NOTIFY send to receipt): ${hist.count} messages, mean ${((hist.sum / Math.max(1, hist.count)) * 1000).toFixed(2)} ms`,
  );
  expect(ms.length).toBe(1000);
});
