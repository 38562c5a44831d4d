// Keys spread over two Postgres clusters, one of them down: concurrent PUTs are gathered into shared batches
// (group commit), yet only the writes of keys the stopped cluster holds fail (503, envelope); the keys of the
// cluster still up are written and acknowledged as if nothing happened. Then the cluster comes back.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { SQL } from "bun";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

let pgs: TestPostgres[] = [];
let restarted: EmbeddedPostgres | null = null;
let srv: TestServer;
let values: string;
let ns: string;
const headers = { authorization: `Bearer ${TEST_TOKEN}` };
const keys = Array.from({ length: 120 }, (_, i) => `key-${i}`);

beforeAll(async () => {
  pgs = await Promise.all([startTestPostgres(), startTestPostgres()]);
  // No cross-instance invalidation: its LISTEN on the stopped cluster is not what this test is about.
  srv = await startTestServer(pgs[0]!.url, { databaseUrl: [pgs[0]!.url, pgs[1]!.url], invalidation: false });
  const base = `${srv.httpUrl}/client/v4/accounts/acc/storage/kv/namespaces`;
  ns = ((await (await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "shard-outage" }) })).json()) as any).result.id;
  values = `${base}/${ns}/values/`;
});

afterAll(async () => {
  await srv.destroy();
  await restarted?.stop();
  for (const pg of pgs) await pg.destroy();
});

const putAll = (value: string) => Promise.all(keys.map((k) => fetch(values + k, { method: "PUT", headers, body: value })));

/** The keys each cluster holds, read from the clusters themselves. */
async function keysOn(url: string): Promise<Set<string>> {
  const sql = new SQL(url, { max: 1 });
  try {
    const rows = await sql`SELECT convert_from(key, 'UTF8') AS k FROM kv_entries WHERE ns = ${ns}`;
    return new Set(rows.map((r: any) => r.k as string));
  } finally {
    await sql.close();
  }
}

test("one cluster down: only its keys' writes fail, those of the cluster still up are acknowledged and readable", async () => {
  // Both up: every key lands on exactly one cluster, and both clusters hold some.
  for (const res of await putAll("v1")) expect(res.status).toBe(200);
  const [up, down] = [await keysOn(pgs[0]!.url), await keysOn(pgs[1]!.url)];
  expect(up.size + down.size).toBe(keys.length);
  expect(up.size).toBeGreaterThan(10);
  expect(down.size).toBeGreaterThan(10);

  await pgs[1]!.stop();
  // Many at once, so group commit mixes both clusters' keys in its batches.
  for (let round = 0; round < 3; round++) {
    const answers = await putAll(`v2-${round}`);
    const failed: string[] = [];
    for (const [i, res] of answers.entries()) {
      const body = (await res.json()) as any;
      if (up.has(keys[i]!)) {
        expect({ key: keys[i], status: res.status, success: body.success }).toEqual({ key: keys[i], status: 200, success: true });
      } else {
        expect({ key: keys[i], status: res.status, success: body.success }).toEqual({ key: keys[i], status: 503, success: false });
        expect(body.errors[0].message).toContain("storage is unavailable");
        failed.push(keys[i]!);
      }
    }
    expect(failed.length).toBe(down.size);
  }
  // What was acknowledged is stored: on the cluster that stayed up, every key holds the last value.
  const sql = new SQL(pgs[0]!.url, { max: 1 });
  const rows = await sql`SELECT convert_from(key, 'UTF8') AS k, convert_from(value, 'UTF8') AS v FROM kv_entries WHERE ns = ${ns}`;
  await sql.close();
  expect(rows.length).toBe(up.size);
  for (const r of rows) expect(r.v).toBe("v2-2");
  for (const k of [...up].slice(0, 20)) expect(await (await fetch(values + k, { headers })).text()).toBe("v2-2");

  // The cluster comes back on its port: writes of its keys succeed again, without restarting kvdrive.
  restarted = await startEmbeddedPostgres({ dataDir: pgs[1]!.dataDir, port: pgs[1]!.port });
  let answers: Response[] = [];
  for (let i = 0; i < 50; i++) {
    answers = await putAll("v3");
    if (answers.every((r) => r.status === 200)) break;
    await Bun.sleep(200);
  }
  expect(answers.map((r) => r.status)).toEqual(keys.map(() => 200));
  expect(await keysOn(pgs[1]!.url)).toEqual(down);
  for (const k of [...down].slice(0, 20)) expect(await (await fetch(values + k, { headers })).text()).toBe("v3");
});
