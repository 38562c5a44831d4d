// Which later-issue features are in the tree, so a scenario says "not built yet" instead of measuring
// something else under their name.
import fs from "node:fs";
import path from "node:path";

const root = path.join(import.meta.dir, "..", "..");

function filesUnder(dir: string): string[] {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs, { recursive: true }).map(String);
}

export const features = {
  /** The pooler's query cache (issue 4): src/pool/cache/ holds the cache and the classifier. */
  queryCache: () => ["src/pool/cache/query-cache.ts", "src/pool/cache/classify.ts"].every((f) => fs.existsSync(path.join(root, f))),
  /** The large-value tier (issue 3): wired when the storage or gateway opening reads the size threshold. */
  s3Tier: () => ["src/storage/open.ts", "src/gateway/open.ts", "src/kv/service.ts", "src/main.ts"].some((f) => fs.existsSync(path.join(root, f)) && fs.readFileSync(path.join(root, f), "utf8").includes("largeValueBytes")),
  /** A consistent-hash ring over several clusters (a later issue). */
  ring: () => filesUnder("src/storage").some((f) => /ring/i.test(f)),
  module: (rel: string) => fs.existsSync(path.join(root, rel)),
};
