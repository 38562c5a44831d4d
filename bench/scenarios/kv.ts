// Issue 2's figures: cached GET against the Bun.serve ceiling, group-commit PUT against direct single-row
// upserts, GET miss against a direct keyed select, and kvdrive's RSS throughout. All in one run.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { SQL } from "bun";
import { freePort, startEmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { autocannon, closedLoop, type LoadResult } from "../lib/load.ts";
import { sampleRss, spawnUntil, type Child } from "../lib/procs.ts";

export interface KvOptions {
  durationSec: number;
  log: (line: string) => void;
}

const TOKEN = "bench-token-0123456789";
const VALUE = "v".repeat(288);

async function startKvdrive(databaseUrl: string, extra: Record<string, string> = {}): Promise<{ child: Child; base: string }> {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-"));
  const child = await spawnUntil(
    ["bun", "src/main.ts"],
    { DATABASE_URL: databaseUrl, KVDRIVE_HTTP_PORT: String(port), KVDRIVE_PG_PORT: String(await freePort()), KVDRIVE_DATA_DIR: dataDir, KVDRIVE_API_TOKEN: TOKEN, ...extra },
    "kvdrive ready",
  );
  return { child, base: `http://127.0.0.1:${port}/client/v4/accounts/bench/storage/kv/namespaces` };
}

export async function runKv(o: KvOptions) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-bench-pg-"));
  fs.chmodSync(dir, 0o755);
  const pg = await startEmbeddedPostgres({ dataDir: path.join(dir, "pg") });
  const headers = { authorization: `Bearer ${TOKEN}` };
  const children: Child[] = [];
  const results: Record<string, LoadResult> = {};
  const d = o.durationSec;
  try {
    const main = await startKvdrive(pg.url);
    children.push(main.child);
    const rss = sampleRss(main.child.proc.pid);
    const ns = (await (await fetch(main.base, { method: "POST", headers, body: JSON.stringify({ title: "bench" }) })).json()).result.id;
    const nsUrl = `${main.base}/${ns}`;
    await fetch(`${nsUrl}/values/hot`, { method: "PUT", headers, body: VALUE });

    const hello = await spawnUntil(["bun", "bench/lib/hello.ts"], { PORT: String(await freePort()) }, "listening");
    children.push(hello);
    const helloPort = /listening (\d+)/.exec(hello.output())![1];
    o.log("warm-up: 2 s per target, excluded");
    await autocannon("warm", { url: `http://127.0.0.1:${helloPort}/`, connections: 64, durationSec: 2 });
    await autocannon("warm", { url: `${nsUrl}/values/hot`, connections: 64, durationSec: 2, headers });

    o.log("1/6 Bun.serve hello-world, 64 connections");
    results.hello = await autocannon("Bun.serve hello-world (ceiling)", { url: `http://127.0.0.1:${helloPort}/`, connections: 64, durationSec: d });
    await hello.stop();
    children.splice(children.indexOf(hello), 1);

    o.log("2/6 kvdrive cached GET, 288 B, 64 connections");
    results.cachedGet = await autocannon("kvdrive GET, cache hit", { url: `${nsUrl}/values/hot`, connections: 64, durationSec: d, headers });

    o.log("3/6 kvdrive PUT with group commit, 288 B, 64 connections");
    results.putGroupCommit = await autocannon("kvdrive PUT, group commit (64 conns)", { url: `${nsUrl}/values/w`, method: "PUT", body: VALUE, connections: 64, durationSec: d, headers, uniquePath: true });

    o.log("4/6 direct single-row upserts, 16 connections");
    const sql = new SQL(pg.url, { max: 16 });
    const val = new TextEncoder().encode(VALUE);
    let ts = Date.now() * 1000;
    results.directUpsert = await closedLoop("direct single-row upsert (16 conns)", 16, d, (i) =>
      sql`INSERT INTO kv_entries AS e (ns, key, value, version_ts, version_nonce, tombstone) VALUES (${ns}, ${new TextEncoder().encode(`d${i}`)}, ${val}, ${ts++}, ${1}, ${false})
          ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version_ts = excluded.version_ts, version_nonce = excluded.version_nonce
          WHERE (e.version_ts, e.version_nonce) < (excluded.version_ts, excluded.version_nonce)`,
    );

    o.log("5/6 kvdrive GET miss (cache off) served by Postgres, 64 connections");
    const nocache = await startKvdrive(pg.url, { KVDRIVE_CACHE_BYTES: "0" });
    children.push(nocache.child);
    const missUrl = `${nocache.base}/${ns}/values/hot`;
    await autocannon("warm", { url: missUrl, connections: 64, durationSec: 2, headers });
    results.getMiss = await autocannon("kvdrive GET, miss served by Postgres", { url: missUrl, connections: 64, durationSec: d, headers });
    await nocache.child.stop();
    children.splice(children.indexOf(nocache.child), 1);

    o.log("6/6 direct keyed select with Bun.SQL, 64 in flight");
    const sel = new SQL(pg.url, { max: 16 });
    const hotKey = new TextEncoder().encode("hot");
    results.directSelect = await closedLoop("direct keyed select, Bun.SQL (64 in flight)", 64, d, () => sel`SELECT value, metadata, expiration, version_ts, version_nonce, tombstone FROM kv_entries WHERE ns = ${ns} AND key = ${hotKey}`);
    await sel.close();
    await sql.close();

    const peakRss = rss.stop();
    const ratios = {
      cachedGetVsHello: results.cachedGet!.requestsPerSec / results.hello!.requestsPerSec,
      putGroupCommitVsDirectUpsert: results.putGroupCommit!.requestsPerSec / results.directUpsert!.requestsPerSec,
      getMissVsDirectSelect: results.getMiss!.requestsPerSec / results.directSelect!.requestsPerSec,
    };
    return { results, ratios, peakRssBytes: peakRss, cacheBoundBytes: 64 * 1024 * 1024 };
  } finally {
    for (const c of children) await c.stop().catch(() => {});
    await pg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
