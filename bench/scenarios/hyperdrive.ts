// Hyperdrive's scenario: the client is near kvdrive (0.5 ms one-way through a relay) and the origin is far
// (25 ms one-way = 50 ms RTT through a relay). Like a serverless function, the client opens a new connection
// with SCRAM for every query: straight to the far origin (direct), or to the near kvdrive, which keeps pooled
// origin connections (uncached, cached, writes).
import { SQL } from "bun";
import pg from "pg";
import postgres from "postgres";
import type { Context, Scenario } from "../lib/context.ts";
import { features } from "../lib/features.ts";
import { closedLoop } from "../lib/recorder.ts";
import { startRelay } from "../lib/relay.ts";
import { notBuilt, ratio, type Ratio, type Row } from "../lib/result.ts";
import { measuredAsCached } from "../lib/query-cache-stats.ts";
import { pgUrl } from "../lib/stack.ts";

const NEAR_MS = 0.5;
const FAR_MS = 25;
const JITTER_MS = 0.1;
const LANES = 8;

type Driver = "pg" | "postgres.js";
interface Query {
  text: string;
  params: (i: number) => unknown[];
  /** A named (prepared) statement: the pooler's query cache serves simple and named extended queries. */
  name?: string;
}

/** One serverless invocation: connect (SCRAM), one parameterised query, disconnect. */
function invocation(driver: Driver, url: string, q: Query) {
  if (driver === "pg") {
    return async (i: number) => {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 30_000 });
      await c.connect();
      try {
        await c.query(q.name ? { name: q.name, text: q.text, values: q.params(i) } : { text: q.text, values: q.params(i) });
      } finally {
        await c.end();
      }
    };
  }
  return async (i: number) => {
    // fetch_types off: the invocation is exactly connect + one query, on both paths.
    const sql = postgres(url, { max: 1, fetch_types: false, connect_timeout: 30, onnotice: () => {} });
    try {
      await sql.unsafe(q.text, q.params(i) as postgres.ParameterOrJSON<never>[]);
    } finally {
      await sql.end({ timeout: 5 });
    }
  };
}

const read: Query = { text: "SELECT id, v FROM bench_items WHERE id = $1", params: () => [42], name: "bench_read" };
const readUncached: Query = { text: "SELECT id, v FROM bench_items WHERE id = $1", params: (i) => [(i % 1000) + 1] };
const write: Query = { text: "INSERT INTO bench_writes (v) VALUES ($1)", params: (i) => [`w${i}`] };

export const hyperdrive: Scenario = {
  name: "hyperdrive",
  title: "Hyperdrive's scenario: client near kvdrive (1 ms RTT), origin far (50 ms RTT), a new connection per query",
  quick: true,
  params: "8 concurrent invocations, each a new connection + SCRAM + one query; client↔kvdrive 0.5 ms, origin 25 ms one-way; node-postgres (--full adds postgres.js)",
  async run(ctx: Context) {
    const pg = await ctx.postgres();
    const setup = new SQL(pg.url, { max: 1 });
    await setup.unsafe(`CREATE TABLE IF NOT EXISTS bench_items (id int PRIMARY KEY, v text NOT NULL);
      INSERT INTO bench_items SELECT g, md5(g::text) FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING;
      CREATE TABLE IF NOT EXISTS bench_writes (id bigserial PRIMARY KEY, v text NOT NULL)`);
    await setup.close();

    const far = await startRelay({ targetHost: "127.0.0.1", targetPort: pg.port, delayMs: FAR_MS, jitterMs: JITTER_MS, simulateHandshake: true });
    ctx.defer(() => far.stop());
    const origin = pgUrl(pg.user, pg.password, far.port);
    const kvOff = await ctx.kvdrive({ ORIGIN_DATABASE_URL: origin, KVDRIVE_CACHE_DISABLED: "true" });
    const nearOff = await startRelay({ targetHost: "127.0.0.1", targetPort: kvOff.pgPort, delayMs: NEAR_MS, jitterMs: JITTER_MS, simulateHandshake: true });
    ctx.defer(() => nearOff.stop());
    const viaOff = pgUrl(pg.user, pg.password, nearOff.port);

    const d = ctx.durationSec;
    const rows: Row[] = [];
    const ratiosExtra: Ratio[] = [];
    const run = async (label: string, url: string, q: Query, driver: Driver = "pg", check?: (fn: () => Promise<Row>) => Promise<Row>) => {
      const op = invocation(driver, url, q);
      await op(0); // endpoint check: throws if the path is broken
      await closedLoop("warm-up", { concurrency: LANES, durationSec: ctx.warmupSec }, op);
      const group = driver === "pg" ? "node-postgres (pg): one round trip per parameterised query" : "postgres.js: Parse/Describe, then Bind/Execute — two round trips per new query";
      const measure = () => closedLoop(label, { concurrency: LANES, durationSec: d, group }, op);
      const r = await ctx.measure(label, d, () => (check ? check(measure) : measure()));
      rows.push(r);
      return r;
    };

    const directRead = await run("direct: new connection + SCRAM + SELECT, to the far origin", origin, readUncached);
    const directWrite = await run("direct: new connection + SCRAM + INSERT, to the far origin", origin, write);
    const kvRead = await run("kvdrive, uncached: new connection + SCRAM to near kvdrive, SELECT", viaOff, readUncached);
    const kvWrite = await run("kvdrive: new connection + SCRAM to near kvdrive, INSERT", viaOff, write);
    let kvCached: Row;
    if (features.queryCache()) {
      const kvOn = await ctx.kvdrive({ ORIGIN_DATABASE_URL: origin });
      const nearOn = await startRelay({ targetHost: "127.0.0.1", targetPort: kvOn.pgPort, delayMs: NEAR_MS, jitterMs: JITTER_MS, simulateHandshake: true });
      ctx.defer(() => nearOn.stop());
      kvCached = await run("kvdrive, cached: new connection + SCRAM to near kvdrive, same SELECT (named statement)", pgUrl(pg.user, pg.password, nearOn.port), read, "pg", (fn) => measuredAsCached(kvOn, fn));
    } else {
      kvCached = notBuilt("kvdrive, cached: new connection + SCRAM to near kvdrive, same SELECT", "the pooler's query cache (issue 4) is not in the tree yet");
      rows.push(kvCached);
    }

    if (ctx.full) {
      const a = await run("direct: new connection + SCRAM + SELECT, to the far origin", origin, readUncached, "postgres.js");
      const b = await run("kvdrive, uncached: new connection + SCRAM to near kvdrive, SELECT", viaOff, readUncached, "postgres.js");
      ratiosExtra.push(ratio("postgres.js: uncached read speedup, p50", b, a, "p50", { text: "article: 6–8×" }));
    }

    const ratios: Ratio[] = [
      ratio("cached read speedup: direct p50 / kvdrive cached p50", kvCached, directRead, "p50", { text: "article: 17–25×" }),
      ratio("uncached read speedup: direct p50 / kvdrive uncached p50", kvRead, directRead, "p50", { text: "article: 6–8×" }),
      ratio("write speedup: direct p50 / kvdrive p50", kvWrite, directWrite, "p50", { text: "article: 6–8×" }),
      ratio("uncached read speedup at p99", kvRead, directRead, "p99"),
      ...ratiosExtra,
    ];
    return {
      scenario: "hyperdrive",
      title: this.title,
      params: { "client ↔ kvdrive": `${NEAR_MS} ms one-way ± ${JITTER_MS}`, "kvdrive ↔ origin, client ↔ origin (direct)": `${FAR_MS} ms one-way ± ${JITTER_MS}`, "concurrent invocations": LANES, "duration per run": `${d} s`, client: "node-postgres (pg) (--full adds postgres.js), a new connection per query" },
      rows,
      ratios,
      notes: [
        "Distance is simulated by bench/lib/relay.ts (no netem here): every byte in each direction waits the one-way delay, and each new connection is charged one round trip for its TCP handshake. There is no TLS, so direct pays 5 far round trips (TCP, startup, SCRAM ×2, query) where the article's direct path also paid 1–2 for TLS; the article's speedups are therefore an upper reference for this setup, not a like-for-like target.",
        "Through kvdrive the client pays its handshake at near distance and one far round trip for the query on a pooled origin connection; warm-up (which opens those origin connections) is excluded.",
      ],
    };
  },
};
