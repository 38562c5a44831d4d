// Redundancy end to end, with real servers: kvdrive over three embedded Postgres clusters (shards) with an
// s3rver bucket as the second backend in active-active, large values in a second s3rver bucket. Faults are
// real: a cluster stopped and restarted, s3rver halted and resumed, a backend slowed by a TCP relay.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import Cloudflare from "cloudflare";
import { startRelay, type Relay } from "../../bench/lib/relay.ts";
import { KVClient } from "../../src/client.ts";
import { startEmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { FULL_RANGE } from "../../src/storage/digest.ts";
import { openS3Replica } from "../../src/storage/s3-replica.ts";
import { openShardedBackend, type ShardedBackend } from "../../src/storage/sharded.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { crawlPass } from "../helpers/crawl.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

const ACCOUNT = "acct-redundancy";
let pgs: TestPostgres[] = [];
let replicaS3: TestS3;
let blobS3: TestS3;
let relay: Relay;
let srv: TestServer;
let cf: Cloudflare;
let nsId: string;
// Direct views of both backends, to check what each holds.
let primary: ShardedBackend;
let replica: Backend;

const kv = (ns = nsId) => new KVClient({ baseURL: `${srv.httpUrl}/client/v4`, apiToken: TEST_TOKEN, accountId: ACCOUNT, namespaceId: ns });

async function restart(pg: TestPostgres, whileDown: () => Promise<void>) {
  await pg.stop();
  try {
    await whileDown();
  } finally {
    const again = await startEmbeddedPostgres({ dataDir: pg.dataDir, port: pg.port });
    pg.stop = again.stop;
  }
}

async function converged(ns: string, deadlineMs = 60_000): Promise<boolean> {
  const until = Date.now() + deadlineMs;
  for (;;) {
    await crawlPass(srv.httpUrl, TEST_TOKEN);
    const now = Math.floor(Date.now() / 1000);
    const [a, b] = await Promise.all([primary.digest(ns, FULL_RANGE, now), replica.digest(ns, FULL_RANGE, now)]);
    const depth = srv.metrics.render().match(/^kvdrive_repair_queue_depth\{backend="\w+"\} (\d+)/gm)?.reduce((n, l) => n + Number(l.split(" ")[1]), 0) ?? 0;
    if (a.count === b.count && a.sum === b.sum && depth === 0) return true;
    if (Date.now() > until) {
      console.log(srv.metrics.render().split("\n").filter((l) => /errors_total|depth|repairs_total|retries|both_failed|enqueued/.test(l) && !l.startsWith("#")).join("\n"));
      console.log(`not converged: primary ${JSON.stringify({ ...a, sum: String(a.sum) })}, replica ${JSON.stringify({ ...b, sum: String(b.sum) })}, repair queue depth ${depth}`);
      return false;
    }
    await Bun.sleep(250);
  }
}

beforeAll(async () => {
  [pgs, replicaS3, blobS3] = await Promise.all([Promise.all([0, 1, 2].map(() => startTestPostgres())), startTestS3("kv-replica"), startTestS3("kv-blobs")]);
  // The replica is reached through a relay, so a test can slow it down for real.
  relay = await startRelay({ targetHost: "127.0.0.1", targetPort: Number(new URL(replicaS3.endpoint).port) });
  const replicaEndpoint = `http://127.0.0.1:${relay.port}`;
  srv = await startTestServer(pgs[0]!.url, {
    databaseUrl: pgs.map((p) => p.url),
    replicaS3Bucket: replicaS3.bucket,
    replicaS3Endpoint: replicaEndpoint,
    replicaS3AccessKeyId: replicaS3.accessKeyId,
    replicaS3SecretAccessKey: replicaS3.secretAccessKey,
    s3Bucket: blobS3.bucket,
    s3Endpoint: blobS3.endpoint,
    awsAccessKeyId: blobS3.accessKeyId,
    awsSecretAccessKey: blobS3.secretAccessKey,
    largeValueBytes: 64 * 1024,
    backendTimeoutMs: 3000,
    crawlerIntervalSeconds: 3600,
  });
  cf = new Cloudflare({ apiToken: TEST_TOKEN, baseURL: `${srv.httpUrl}/client/v4`, maxRetries: 0 });
  nsId = (await cf.kv.namespaces.create({ account_id: ACCOUNT, title: "redundancy" })).id;
  primary = await openShardedBackend(pgs.map((p) => p.url), 2);
  replica = await openS3Replica({ endpoint: replicaS3.endpoint, bucket: replicaS3.bucket, region: replicaS3.region, accessKeyId: replicaS3.accessKeyId, secretAccessKey: replicaS3.secretAccessKey });
}, 180_000);

afterAll(async () => {
  await srv?.destroy();
  await primary?.close();
  await replica?.close();
  await relay?.stop();
  await Promise.all([...pgs.map((p) => p.destroy()), replicaS3?.stop(), blobS3?.stop()]);
}, 60_000);

test("the KV API over three shards and an S3 replica: writes land on both, list pages stay exact", async () => {
  const KV = kv();
  const names = Array.from({ length: 250 }, (_, i) => `item-${String(i).padStart(4, "0")}`);
  await Promise.all(names.map((n) => KV.put(n, `value of ${n}`)));
  // Acknowledged by the first backend to commit; the slower one (s3rver) lands shortly after.
  expect(await converged(nsId)).toBe(true);
  const owners = new Set(names.map((n) => primary.ownerOf(nsId, new TextEncoder().encode(n)).id));
  expect(owners.size).toBe(3);
  expect(new TextDecoder().decode((await replica.get(nsId, new TextEncoder().encode("item-0042")))!.value!)).toBe("value of item-0042");
  const seen: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await KV.list({ prefix: "item-", limit: 60, cursor });
    seen.push(...page.keys.map((k) => k.name));
    cursor = page.list_complete ? undefined : page.cursor;
  } while (cursor);
  expect(seen).toEqual(names);
});

test("a large value goes to the blob store, invisibly", async () => {
  const KV = kv();
  const big = new Uint8Array(300 * 1024).map((_, i) => (i * 31) % 251);
  await KV.put("big", big);
  const back = new Uint8Array(await KV.get("big", "arrayBuffer"));
  expect(back.length).toBe(big.length);
  expect(Buffer.compare(Buffer.from(back), Buffer.from(big))).toBe(0);
  // Acknowledged by whichever backend committed first: wait for the primary's row, then look inside it.
  let row = await primary.get(nsId, new TextEncoder().encode("big"));
  for (let i = 0; i < 100 && row === null; i++) {
    await Bun.sleep(50);
    row = await primary.get(nsId, new TextEncoder().encode("big"));
  }
  expect(row!.value).toBeNull();
  expect(row!.blob).toBeTruthy();
  await KV.put("big", "small now");
  expect(await KV.get("big", "text")).toBe("small now");
});

test("admin: the replication mode can be overridden per namespace", async () => {
  const h = { authorization: `Bearer ${TEST_TOKEN}`, "content-type": "application/json" };
  const url = `${srv.httpUrl}/admin/kv/namespaces/${nsId}/replication`;
  type Envelope = { result: { mode: string; override: string | null }; errors: Array<{ message: string }> };
  const json = async (r: Response) => (await r.json()) as Envelope;
  expect((await json(await fetch(url, { headers: h }))).result).toMatchObject({ mode: "active-active", override: null });
  const put = await fetch(url, { method: "PUT", headers: h, body: JSON.stringify({ mode: "shadow" }) });
  expect((await json(put)).result).toMatchObject({ mode: "shadow", override: "shadow" });
  const bad = await fetch(url, { method: "PUT", headers: h, body: JSON.stringify({ mode: "sideways" }) });
  expect(bad.status).toBe(400);
  expect((await json(bad)).errors[0]!.message).toMatch(/primary, shadow, active-active/);
  await fetch(url, { method: "PUT", headers: h, body: JSON.stringify({ mode: null }) });
  expect((await json(await fetch(url, { headers: h }))).result.mode).toBe("active-active");
  expect((await fetch(url, { headers: { "content-type": "application/json" } })).status).toBe(401);
});

test("one Postgres cluster stopped under load: its keys are served by the replica; after restart both converge", async () => {
  const KV = kv();
  const enc = new TextEncoder();
  const keys = Array.from({ length: 90 }, (_, i) => `load-${i}`);
  await Promise.all(keys.map((k) => KV.put(k, "before")));
  const victim = pgs[1]!;
  const victimId = primary.shards[1]!.id;
  const onVictim = keys.filter((k) => primary.ownerOf(nsId, enc.encode(k)).id === victimId);
  expect(onVictim.length).toBeGreaterThan(10);
  const acked = new Map<string, string>();
  const deleted = new Set<string>();
  await restart(victim, async () => {
    let errors = 0;
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        keys.map(async (k, i) => {
          try {
            if (i % 10 === 0 && round === 2) {
              await KV.delete(k);
              deleted.add(k);
              acked.delete(k);
            } else {
              const v = `r${round}-${k}`;
              await KV.put(k, v);
              acked.set(k, v);
            }
          } catch {
            errors++;
          }
        }),
      );
    }
    expect(errors).toBe(0);
    // Reads of the stopped cluster's keys come from the replica, with the latest acknowledged value.
    for (const k of onVictim) expect(await KV.get(k, { type: "text", cacheTtl: 30 })).toBe(acked.get(k) ?? null);
  });
  expect(await converged(nsId)).toBe(true);
  for (const k of keys) {
    const p = await primary.get(nsId, enc.encode(k));
    if (deleted.has(k)) expect(p === null || p.tombstone).toBe(true);
    else expect(new TextDecoder().decode(p!.value!)).toBe(acked.get(k)!);
  }
});

test("s3rver stopped under load: the shards carry on; after it resumes both converge", async () => {
  const KV = kv();
  const keys = Array.from({ length: 60 }, (_, i) => `s3down-${i}`);
  await Promise.all(keys.map((k) => KV.put(k, "before")));
  await replicaS3.halt();
  try {
    await Promise.all(keys.map((k) => KV.put(k, `after-${k}`)));
    await KV.delete("s3down-0");
    for (const k of keys.slice(1, 10)) expect(await KV.get(k, "text")).toBe(`after-${k}`);
    expect(await KV.get("s3down-0", "text")).toBeNull();
  } finally {
    await replicaS3.resume();
  }
  expect(await converged(nsId)).toBe(true);
  const r = await replica.get(nsId, new TextEncoder().encode("s3down-5"));
  expect(new TextDecoder().decode(r!.value!)).toBe("after-s3down-5");
  expect((await replica.get(nsId, new TextEncoder().encode("s3down-0")))!.tombstone).toBe(true);
});

test("one backend slowed by the relay: write latency follows the fast backend; reads stay correct", async () => {
  const KV = kv();
  await KV.put("slow-probe", "x");
  relay.setDelay(150);
  try {
    const t = performance.now();
    for (let i = 0; i < 10; i++) await KV.put(`slow-${i}`, `v${i}`);
    // Each PUT would take at least 300 ms if it waited for the slowed replica.
    expect((performance.now() - t) / 10).toBeLessThan(150);
    // s3rver has no compare-and-swap, so a replica object could go back a version: misses compare both
    // backends rather than race (test/gateway/replicated.test.ts shows raced reads following the fast side).
    for (let i = 0; i < 10; i++) expect(await KV.get(`slow-${i}`, "text")).toBe(`v${i}`);
  } finally {
    relay.setDelay(0);
  }
  expect(await converged(nsId)).toBe(true);
});

test("kvdrive killed with SIGKILL mid-load and restarted: every acknowledged write is on a backend, and both converge", async () => {
  const { freePort } = await import("../../src/embedded/postgres.ts");
  const { tempDir } = await import("../helpers/postgres.ts");
  const dataDir = tempDir("kvdrive-kill-");
  const env = {
    ...process.env,
    DATABASE_URL: pgs.map((p) => p.url).join(","),
    KVDRIVE_DATA_DIR: dataDir,
    KVDRIVE_API_TOKEN: TEST_TOKEN,
    KVDRIVE_HTTP_PORT: String(await freePort()),
    KVDRIVE_PG_PORT: "0",
    KVDRIVE_REPLICA_S3_BUCKET: replicaS3.bucket,
    KVDRIVE_REPLICA_S3_ENDPOINT: replicaS3.endpoint,
    KVDRIVE_REPLICA_S3_ACCESS_KEY_ID: replicaS3.accessKeyId,
    KVDRIVE_REPLICA_S3_SECRET_ACCESS_KEY: replicaS3.secretAccessKey,
  };
  const start = async () => {
    const p = Bun.spawn(["bun", "src/main.ts"], { env, stdout: "pipe", stderr: "inherit" });
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    let out = "";
    while (!out.includes("KV API:")) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`kvdrive exited: ${out}`);
      out += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    return { p, base: /KV API:\s+(\S+)/.exec(out)![1]! };
  };
  let { p, base } = await start();
  const client = new KVClient({ baseURL: base, apiToken: TEST_TOKEN, accountId: ACCOUNT, namespaceId: nsId });
  const acked = new Map<string, string>();
  let stop = false;
  const writers = Array.from({ length: 8 }, async (_, w) => {
    for (let i = 0; !stop; i++) {
      const k = `kill-${w}-${i % 25}`;
      const v = `${w}-${i}`;
      try {
        await client.put(k, v);
        acked.set(k, v);
      } catch {
        return;
      }
    }
  });
  await Bun.sleep(1500);
  p.kill("SIGKILL");
  await p.exited;
  stop = true;
  await Promise.all(writers);
  expect(acked.size).toBeGreaterThan(20);
  // Every acknowledged write is on at least one backend (or superseded there by a later write of that key).
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const writtenAfter = (k: string, v: string) => Number(v.split("-")[1]) >= Number(acked.get(k)!.split("-")[1]);
  for (const [k] of acked) {
    const [a, b] = await Promise.all([primary.get(nsId, enc.encode(k)), replica.get(nsId, enc.encode(k))]);
    const vals = [a, b].filter((e) => e && e.value).map((e) => dec.decode(e!.value!));
    expect(vals.some((v) => v.split("-")[0] === acked.get(k)!.split("-")[0] && writtenAfter(k, v))).toBe(true);
  }
  ({ p, base } = await start());
  try {
    expect((await crawlPass(base.replace("/client/v4", ""), TEST_TOKEN)).state).toBe("done");
    const now = Math.floor(Date.now() / 1000);
    const [a, b] = await Promise.all([primary.digest(nsId, FULL_RANGE, now), replica.digest(nsId, FULL_RANGE, now)]);
    expect(b).toEqual(a);
  } finally {
    p.kill("SIGTERM");
    await p.exited;
    (await import("node:fs")).rmSync(dataDir, { recursive: true, force: true });
  }
}, 120_000);
