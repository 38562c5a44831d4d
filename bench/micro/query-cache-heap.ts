// Real heap per query cache entry: fills a cache with pgbench -S shaped answers (one int parameter, one row of
// one int column) the way the pooler stores them (a recorder per miss, the key from the statement prefix and the
// Bind's bytes), then compares Bun's heap after a full collection with the cache's own byte count.
// bun bench/micro/query-cache-heap.ts [entries]
import { heapStats } from "bun:jsc";
import { manualClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { createQueryCache } from "../../src/pool/cache/query-cache.ts";
import { encodeBind } from "../../src/protocol/frontend.ts";

const n = Number(process.argv[2] ?? 100_000);
const cache = createQueryCache({ config: loadConfig({ queryCacheBytes: 4096 * 1024 * 1024 }, {}), clock: manualClock(1_000_000), metrics: createRegistry() });
const session = "ISO, MDY\0UTF8\0UTC\0on\0"; // what the pooler's cacheSessionKey holds for a default psql/pgbench session
const prefix = cache.keyPrefix({ database: "postgres", user: "postgres", sql: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", paramTypes: [], session });
const tables = ["pgbench_accounts"];
// RowDescription (1 column), DataRow, CommandComplete: one buffer, as the answer recorder keeps it.
const answer = (i: number) => {
  const v = String(i % 10_000);
  const rd = Buffer.from("540000001f0001616162616c616e636500000040060003000000170004ffffffff0000", "hex");
  const dr = Buffer.alloc(11 + v.length);
  dr[0] = 0x44;
  dr.writeUInt32BE(10 + v.length, 1);
  dr.writeUInt16BE(1, 5);
  dr.writeUInt32BE(v.length, 7);
  dr.write(v, 11);
  const cc = Buffer.from("430000000d53454c454354203100", "hex");
  return [Buffer.concat([rd, dr, cc])];
};

let keyChars = 0;
let answerBytes = 0;
Bun.gc(true);
const before = heapStats();
for (let i = 0; i < n; i++) {
  const bind = encodeBind({ portal: "", statement: "s", paramFormats: [], params: [Buffer.from(String(i + 1))], resultFormats: [] });
  const tail = bind.subarray(5).subarray(bind.subarray(5).indexOf(0) + 1);
  const id = prefix + cache.keyTail({ bindTail: tail.subarray(tail.indexOf(0) + 1) });
  const a = answer(i);
  keyChars += id.length;
  answerBytes += a[0]!.byteLength;
  cache.recorder({ database: "postgres", user: "postgres", sql: "x", id }, tables)!.done(a);
}
Bun.gc(true);
const after = heapStats();
const s = cache.stats();
const heap = after.heapSize + after.extraMemorySize - before.heapSize - before.extraMemorySize;
console.log(`GC heap ${after.heapSize - before.heapSize}, extra memory (buffers) ${after.extraMemorySize - before.extraMemorySize}, rss ${process.memoryUsage().rss}`);
const objects = after.objectCount - before.objectCount;
console.log(`${s.entries} entries; cache counts ${s.bytes} bytes (${(s.bytes / s.entries).toFixed(0)} per entry)`);
console.log(`heap grew ${heap} bytes (${(heap / s.entries).toFixed(0)} per entry), ${objects} objects (${(objects / s.entries).toFixed(2)} per entry)`);
const t = performance.now();
Bun.gc(true);
console.log(`per entry: key ${(keyChars / n).toFixed(0)} chars, answer ${(answerBytes / n).toFixed(0)} bytes; the rest (the overhead to charge) ${((heap - keyChars - answerBytes) / n).toFixed(0)} bytes`);
console.log(`full GC ${(performance.now() - t).toFixed(0)} ms; heap/counted ${(heap / s.bytes).toFixed(2)}`);
