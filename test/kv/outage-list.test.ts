// Item 14 of issue 10: a list during a shard outage is complete or fails with 503, never `success: true` with
// keys missing. Two Postgres shards plus an s3rver replica in active-active; one shard stopped; writers
// overwrite, delete and add keys (600 small ones, a few of 1 MiB) while listers page through the namespace.
// The case is the consistency harness's runListDuringOutage (bench/lib/consistency.ts), run here bounded.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(180_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { runListDuringOutage } from "../../bench/lib/consistency.ts";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

const ACCOUNT = "acct-outage-list";
let pgs: TestPostgres[] = [];
let s3: TestS3;
let srv: TestServer;

beforeAll(async () => {
  [pgs, s3] = await Promise.all([Promise.all([0, 1].map(() => startTestPostgres())), startTestS3("kv-outage-list")]);
  srv = await startTestServer(pgs[0]!.url, {
    databaseUrl: pgs.map((p) => p.url),
    replicaS3Bucket: s3.bucket,
    replicaS3Endpoint: s3.endpoint,
    replicaS3AccessKeyId: s3.accessKeyId,
    replicaS3SecretAccessKey: s3.secretAccessKey,
    // Generous: on a loaded machine a replica write that times out leaves its key unknowable while the shard is
    // down, and lists would (rightly) be 503 rather than exercise the merge.
    backendTimeoutMs: 15_000,
    // Longer than the whole case: a keep-alive connection the client last used while seeding, reused by a lister
    // just as the server's idle timeout (10 s) closed it, was a reset without an answer (seen once in a full run:
    // ECONNRESET 8.5 s into paging). Bun's fetch does not retry such a request; a pending request is never cut.
    httpIdleTimeoutSeconds: 20,
    crawlerIntervalSeconds: 3600,
    invalidation: false,
  });
});

afterAll(async () => {
  await srv?.destroy();
  // A restarted cluster is its own server: destroy() stops only the first one, then removes the directory.
  for (const r of restarted) await r.stop();
  for (const pg of pgs) await pg.destroy();
  await s3?.stop();
});

const auth = { authorization: `Bearer ${TEST_TOKEN}` };

async function namespace(title: string): Promise<string> {
  const res = await fetch(`${srv.httpUrl}/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`, { method: "POST", headers: auth, body: JSON.stringify({ title }) });
  return ((await res.json()) as any).result.id as string;
}

/** Until every write has reached both backends (nothing in flight to one of them, nothing waiting for repair). */
async function bothBackendsCurrent() {
  for (let i = 0; ; i++) {
    const m = await (await fetch(`${srv.httpUrl}/metrics`, { headers: auth })).text();
    const busy = m.split("\n").filter((l) => /^kvdrive_(repair_queue_depth|backend_rows_in_flight)\{/.test(l) && !l.endsWith(" 0"));
    if (busy.length === 0) return;
    if (i > 1200) throw new Error(`the backends did not converge: ${busy.join(", ")}`);
    await Bun.sleep(100);
  }
}

const restarted: EmbeddedPostgres[] = [];
async function restartShard() {
  const again = await startEmbeddedPostgres({ dataDir: pgs[1]!.dataDir, port: pgs[1]!.port });
  restarted.push(again);
  pgs[1]!.stop = again.stop;
}

const options = (ns: string) => ({ baseURL: `${srv.httpUrl}/client/v4`, apiToken: TEST_TOKEN, accountId: ACCOUNT, namespaceId: ns, smallKeys: 600, largeKeys: 3, listLimit: 250 });

test("the issue's case: lists during a shard outage under load are complete or 503, never silently partial", async () => {
  const report = await runListDuringOutage({
    ...options(await namespace("outage-list")),
    writers: 6, listers: 2, durationMs: 8000,
    fault: async () => {
      // The seed must be on both backends first: a key only the stopped shard holds cannot be listed, and then
      // a 503 is the right answer (the next test), not the case under test here.
      await bothBackendsCurrent();
      await pgs[1]!.stop();
    },
  });
  console.log("list during a shard outage:", JSON.stringify(report));
  await restartShard();
  expect(report.writesAcked).toBeGreaterThan(100);
  expect(report.succeeded).toBeGreaterThan(0);
  expect(report.otherErrors).toBe(0);
  expect(report.worst).toBeNull();
  expect(report.missing).toBe(0);
  expect(report.extra).toBe(0);
});

// The cause of the 548/553: with a shard down the list was answered by the replica alone, which lacked the
// keys still waiting in the repair queue for it (and kept keys deleted on the primary only). Here the replica
// is halted while keys are added and deleted, so those writes are acknowledged by the primary and queued for
// the replica; then a shard stops before the replica is back. The keys the stopped shard held are now known to
// nobody that answers: a list must fail with 503, not succeed without them.
test("keys that only the stopped shard holds (the replica behind on them): the list is 503, never success with keys missing", async () => {
  await bothBackendsCurrent();
  const report = await runListDuringOutage({
    ...options(await namespace("outage-list-behind")),
    writers: 2, listers: 1, durationMs: 2000,
    fault: async (write) => {
      await bothBackendsCurrent();
      await s3.halt();
      for (let i = 0; i < 40; i++) expect(await write(`lag${String(i).padStart(2, "0")}`, "put", "only-on-the-primary")).toBe(true);
      for (let i = 0; i < 20; i++) expect(await write(`s${String(i * 7).padStart(4, "0")}`, "delete")).toBe(true);
      await pgs[1]!.stop();
      await s3.resume();
    },
  });
  console.log("list with the replica behind on the stopped shard's keys:", JSON.stringify(report));
  await restartShard();
  expect(report.lists).toBeGreaterThan(0);
  expect(report.unavailable).toBeGreaterThan(0);
  expect(report.otherErrors).toBe(0);
  expect(report.worst).toBeNull();
  expect(report.missing).toBe(0);
  expect(report.extra).toBe(0);
});
