// Cross-instance invalidation sends one NOTIFY at a time: announcements made while a send is out gather into
// the next one (one per round trip rather than one per event-loop turn), and every key still arrives.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { keyHash } from "../../src/gateway/cache.ts";
import { startInvalidation, type Invalidation } from "../../src/gateway/invalidation.ts";
import { createRegistry, type Registry } from "../../src/metrics/registry.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
let a: Invalidation;
let b: Invalidation;
const bMetrics: Registry = createRegistry();
const seen = new Set<number>();

beforeAll(async () => {
  pg = await startTestPostgres();
  a = await startInvalidation({ urls: [pg.url], instanceId: "gather-A", onEvict: () => 0, onResync: () => {}, metrics: createRegistry() });
  b = await startInvalidation({
    urls: [pg.url],
    instanceId: "gather-B",
    onEvict(_ns, hashes) {
      if (hashes !== "all") for (const h of hashes) seen.add(h);
      return 0;
    },
    onResync: () => {},
    metrics: bMetrics,
  });
}, 60_000);
afterAll(async () => {
  await a.close();
  await b.close();
  await pg.destroy();
}, 60_000);

test("announcements in the turns while a send is out gather into one message; every key arrives", async () => {
  let first = false;
  const sent = a.announce("gather", ["k0"]).then(() => (first = true));
  const keys = ["k0"];
  // One announcement per event-loop turn until the first send has been answered (at most 50, so the gathered
  // hashes fit in one message).
  while (!first && keys.length < 50) {
    await new Promise((r) => setImmediate(r));
    const k = `k${keys.length}`;
    keys.push(k);
    void a.announce("gather", [k]);
  }
  await sent;
  const received = () => bMetrics.counter("kvdrive_invalidations_received_total", "").get();
  const deadline = Date.now() + 10_000;
  while (keys.some((k) => !seen.has(keyHash(k))) && Date.now() < deadline) await Bun.sleep(10);
  expect(keys.filter((k) => !seen.has(keyHash(k)))).toEqual([]);
  // A message per turn would be keys.length messages; gathered, the turns during the first send make one more.
  expect(keys.length).toBeGreaterThan(3);
  expect(received()).toBeLessThanOrEqual(2);
});
