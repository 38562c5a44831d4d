// Shard ring lookup (src/storage/ring.ts): owner of a (namespace, key) over 3 clusters with 128 virtual nodes.
import { bench, do_not_optimize, group, summary } from "mitata";
import { requireModules, runMicro } from "../lib/micro.ts";

if (requireModules(["src/storage/ring.ts"])) {
  const { createRing, entryHash } = await import("../../src/storage/ring.ts");
  const ring = createRing(["postgres://a/kv", "postgres://b/kv", "postgres://c/kv"]);
  const keys = Array.from({ length: 1024 }, (_, i) => `user:${i}:profile`);
  const hashes = keys.map((k) => entryHash("0123456789abcdef", k));
  let i = 0;
  summary(() => {
    group("ring, 3 nodes × 128 vnodes", () => {
      bench("owner(namespace, key)", () => do_not_optimize(ring.owner("0123456789abcdef", keys[i++ & 1023]!)));
      bench("ownerOfHash(precomputed)", () => do_not_optimize(ring.ownerOfHash(hashes[i++ & 1023]!)));
      bench("entryHash (XXH64)", () => do_not_optimize(entryHash("0123456789abcdef", keys[i++ & 1023]!)));
    });
  });
  await runMicro();
}
