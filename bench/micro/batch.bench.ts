// Group commit (src/gateway/batcher.ts): preparing a batch of 512 rows of 288 bytes (a quarter repeated keys),
// and the batcher's own cost with a write() that does no I/O, so only gathering, sizing and settling count.
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/gateway/batcher.ts", "src/metrics/registry.ts"])) {
  const batcherModule = await import("../../src/gateway/batcher.ts");
  const { createBatcher, rowBytes } = batcherModule;
  // The batch preparation step (sort, newest per key), which every backend's write() does.
  const { sortNewestPerKey: dedupeNewest } = await import("../../src/storage/store.ts");
  const { createRegistry } = await import("../../src/metrics/registry.ts");
  const enc = new TextEncoder();
  const value = new Uint8Array(288);
  const rows = Array.from({ length: 512 }, (_, i) => ({
    ns: "0123456789abcdef0123456789abcdef",
    key: enc.encode(`key-${i % 384}`),
    value,
    metadata: null,
    expiration: null,
    version: { ts: 1_700_000_000_000_000 + i, nonce: i },
    tombstone: false,
  }));
  let written = 0;
  const batcher = createBatcher({ write: async (b) => void (written += b.length), maxRows: 512, maxBytes: 8 * 1024 * 1024, windowMs: 0, concurrency: 4, metrics: createRegistry() });
  summary(() => {
    group("batch of 512 rows", () => {
      bench("rowBytes for every row", () => {
        let n = 0;
        for (const r of rows) n += rowBytes(r);
        return do_not_optimize(n);
      });
      bench("dedupeNewest (sort, newest write per key)", () => do_not_optimize(dedupeNewest(rows)));
      bench("submit 512 rows and await their commit (no I/O)", async () => {
        await Promise.all(rows.map((r) => batcher.submit(r)));
      });
      bench("submitAll (bulk) of 512 rows (no I/O)", async () => {
        await batcher.submitAll(rows);
      });
    });
  });
  await runMicro();
  do_not_optimize(written);
}
