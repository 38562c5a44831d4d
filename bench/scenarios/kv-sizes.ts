// Value size sweep: 288 B, 1 KiB, 64 KiB and 1 MiB, for writes and for reads (cache hit and miss), to show
// what larger values cost and, once the large-value tier is in the tree, where it takes over.
import type { Context, Scenario } from "../lib/context.ts";
import { features } from "../lib/features.ts";
import { autocannon } from "../lib/http-load.ts";
import { notBuilt, ratio, type Ratio, type Row } from "../lib/result.ts";
import { AUTH, checkHttp, namespace } from "../lib/stack.ts";

const SIZES: Array<[string, number]> = [["288 B", 288], ["1 KiB", 1024], ["64 KiB", 65536], ["1 MiB", 1048576]];
const CONNS = 16;

export const kvSizes: Scenario = {
  name: "kv-sizes",
  title: "KV value size sweep: 288 B, 1 KiB, 64 KiB, 1 MiB — PUT, cached GET, GET miss",
  quick: false,
  params: "16 connections; values of 288 B, 1 KiB, 64 KiB and 1 MiB; PUT, cached GET, GET miss",
  async run(ctx: Context) {
    const cached = await ctx.kvdrive();
    const nocache = await ctx.kvdrive({ KVDRIVE_CACHE_BYTES: "0" });
    const ns = await namespace(cached, "bench-sizes");
    const d = ctx.durationSec;
    const rows: Row[] = [];
    const ratios: Ratio[] = [];
    for (const [name, size] of SIZES) {
      const group = `${name} values`;
      const body = "s".repeat(size);
      const key = `${ns.values}size-${size}`;
      await checkHttp(cached.origin + key, { method: "PUT", headers: AUTH, body }, 200);
      await checkHttp(cached.origin + key, { headers: AUTH }, 200, size);
      const put = { origin: cached.origin, connections: CONNS, durationSec: d, headers: AUTH, rowsPerRequest: 1, requests: [{ method: "PUT", path: `${key}-`, body, unique: true }] };
      const hit = { origin: cached.origin, connections: CONNS, durationSec: d, headers: AUTH, requests: [{ path: key }] };
      const miss = { ...hit, origin: nocache.origin };
      const out: Row[] = [];
      for (const [label, load] of [["PUT (fresh keys)", put], ["GET, cache hit", hit], ["GET, miss served by storage (cache off)", miss]] as const) {
        await autocannon("warm-up", { ...load, durationSec: ctx.warmupSec });
        out.push(await ctx.measure(`${group}: ${label}`, d, () => autocannon(label, load, group)));
      }
      rows.push(...out);
      ratios.push(ratio(`${name}: cache hit / miss (req/s)`, out[1], out[2], "rps"));
      if (!features.s3Tier()) rows.push(notBuilt("GET miss from the S3 tier", "the large-value tier (S3) is not wired into the KV service yet", group));
    }
    const base = rows.find((r) => r.group === "288 B values" && r.label === "GET, miss served by storage (cache off)");
    const big = rows.find((r) => r.group === "1 MiB values" && r.label === "GET, miss served by storage (cache off)");
    ratios.push(ratio("GET miss p50: 288 B / 1 MiB (how much slower a 1 MiB read is)", base, big, "p50"));
    return {
      scenario: "kv-sizes",
      title: this.title,
      params: { connections: CONNS, sizes: SIZES.map(([n]) => n).join(", "), "duration per run": `${d} s` },
      rows,
      ratios,
      notes: ["Throughput here is requests/s; multiply by the size for bytes/s. Every PUT uses a fresh key and is acknowledged after its batch commits."],
    };
  },
};
