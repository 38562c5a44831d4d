// Read coalescing over the real Postgres backend: answers stay per key and per namespace, busy slots turn many
// reads into few queries, and a storage failure reaches every waiting reader.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { createReadCoalescer } from "../../src/gateway/coalescer.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

let pg: TestPostgres;
let backend: Backend;
const b = (s: string) => new TextEncoder().encode(s);
const str = (u: Uint8Array | null | undefined) => (u ? new TextDecoder().decode(u) : null);

beforeAll(async () => {
  pg = await startTestPostgres();
  backend = await openPostgresBackend(pg.url, 4);
  const row = (ns: string, k: string) => ({ ns, key: b(k), value: b(`${ns}:${k}`), metadata: null, expiration: null, version: { ts: 1, nonce: 1 }, tombstone: false });
  await backend.write([...Array.from({ length: 100 }, (_, i) => row("co-a", `k${i}`)), ...Array.from({ length: 100 }, (_, i) => row("co-b", `k${i}`))]);
});
afterAll(async () => {
  await backend.close();
  await pg.destroy();
});

test("concurrent reads get their own answers, in few queries", async () => {
  let queries = 0;
  const counted: Pick<Backend, "get" | "getMany"> = {
    get: (ns, k) => (queries++, backend.get(ns, k)),
    getMany: (ns, ks) => (queries++, backend.getMany(ns, ks)),
  };
  const reads = createReadCoalescer(counted, 2);
  const asks = Array.from({ length: 600 }, (_, i) => ({ ns: i % 3 ? "co-a" : "co-b", key: i % 7 === 0 ? "missing" : `k${i % 100}` }));
  const got = await Promise.all(asks.map((a) => reads.get(a.ns, b(a.key))));
  got.forEach((e, i) => expect(str(e?.value)).toBe(asks[i]!.key === "missing" ? null : `${asks[i]!.ns}:${asks[i]!.key}`));
  expect(queries).toBeLessThan(20);
  // A lone read afterwards goes out by itself.
  expect(str((await reads.get("co-a", b("k5")))!.value)).toBe("co-a:k5");
});

test("a storage failure rejects every reader waiting on it, and the coalescer keeps working", async () => {
  const broken = await openPostgresBackend(pg.url, 1);
  await broken.close();
  const reads = createReadCoalescer(broken, 1);
  const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => reads.get("co-a", b(`k${i}`))));
  expect(results.every((r) => r.status === "rejected")).toBe(true);
  const healthy = createReadCoalescer(backend, 1);
  expect(str((await healthy.get("co-b", b("k1")))!.value)).toBe("co-b:k1");
});
