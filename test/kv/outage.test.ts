// Item 12 of issue 10: with the only Postgres cluster down, every KV route answers 503 in the Cloudflare
// envelope saying storage is unavailable (not 500 "internal error"), /readyz is 503, and once the cluster is
// back everything works again without restarting kvdrive.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Cloudflare from "cloudflare";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../src/embedded/postgres.ts";
import { clusterPids, startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

let pg: TestPostgres;
let restarted: EmbeddedPostgres | null = null;
let srv: TestServer;
let base: string;
let ns: string;
const headers = { authorization: `Bearer ${TEST_TOKEN}` };

beforeAll(async () => {
  pg = await startTestPostgres();
  // The defaults, cross-instance invalidation included: its LISTEN connection loses the cluster too.
  srv = await startTestServer(pg.url);
  base = `${srv.httpUrl}/client/v4/accounts/acc/storage/kv/namespaces`;
  ns = ((await (await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "outage" }) })).json()) as any).result.id;
});

afterAll(async () => {
  await srv.destroy();
  await restarted?.stop();
  await pg.destroy();
});

async function expectUnavailable(res: Response, what: string) {
  const body = (await res.json()) as any;
  expect({ what, status: res.status }).toEqual({ what, status: 503 });
  expect(body.success).toBe(false);
  expect(body.result).toBe(null);
  expect(body.messages).toEqual([]);
  expect(body.errors[0].message).toContain("storage is unavailable");
  expect(typeof body.errors[0].code).toBe("number");
}

/** /readyz answers from a probe at most a second old: the status it settles on within a few seconds. */
async function readyz(url: string, want: number): Promise<{ status: number; body: any }> {
  let last = { status: 0, body: null as any };
  for (let i = 0; i < 50; i++) {
    const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(60_000) });
    last = { status: res.status, body: await res.json() };
    if (last.status === want) break;
    await Bun.sleep(200);
  }
  return last;
}

describe("the only Postgres cluster down", () => {
  test("every KV route answers 503 with the envelope, /readyz is 503, and all works again once it is back", async () => {
    expect((await fetch(`${base}/${ns}/values/before`, { method: "PUT", headers, body: "v0" })).status).toBe(200);
    expect((await fetch(`${srv.httpUrl}/readyz`)).status).toBe(200);

    await pg.stop(); // fast shutdown: open connections get 57P01, new ones are refused

    await expectUnavailable(await fetch(`${base}/${ns}/values/k1`, { method: "PUT", headers, body: "v1" }), "put");
    await expectUnavailable(await fetch(`${base}/${ns}/values/never-read`, { headers }), "get");
    await expectUnavailable(await fetch(`${base}/${ns}/metadata/never-read`, { headers }), "metadata");
    await expectUnavailable(await fetch(`${base}/${ns}/values/k1`, { method: "DELETE", headers }), "delete");
    await expectUnavailable(await fetch(`${base}/${ns}/keys`, { headers }), "list");
    await expectUnavailable(await fetch(`${base}/${ns}/bulk`, { method: "PUT", headers, body: JSON.stringify([{ key: "b1", value: "x" }]) }), "bulk put");
    await expectUnavailable(await fetch(`${base}/${ns}/bulk/get`, { method: "POST", headers, body: JSON.stringify({ keys: ["b1", "b2"] }) }), "bulk get");
    await expectUnavailable(await fetch(`${base}/${ns}/bulk/delete`, { method: "POST", headers, body: JSON.stringify(["b1"]) }), "bulk delete");
    await expectUnavailable(await fetch(base, { method: "POST", headers, body: JSON.stringify({ title: "during-outage" }) }), "create namespace");
    await expectUnavailable(await fetch(base, { headers }), "list namespaces");
    // The SQL endpoint goes through the pooler to the same cluster: a retryable 503 as well.
    const sqlRes = await fetch(`${srv.httpUrl}/sql`, { method: "POST", headers, body: JSON.stringify({ query: "select 1 as one" }) });
    expect(sqlRes.status).toBe(503);
    expect(((await sqlRes.json()) as any).success).toBe(false);
    const ready = await readyz(srv.httpUrl, 503);
    expect(ready.status).toBe(503);
    expect(ready.body.status).toBe("storage unavailable");

    // The official SDK sees a retryable 503, not an internal error.
    const cf = new Cloudflare({ apiToken: TEST_TOKEN, baseURL: `${srv.httpUrl}/client/v4`, maxRetries: 0 });
    const err = await cf.kv.namespaces.values.update("sdk", { account_id: "acc", namespace_id: ns, value: "x", metadata: {} }).catch((e) => e);
    expect(err).toBeInstanceOf(Cloudflare.APIError);
    expect(err.status).toBe(503);

    // The same cluster comes back on the same port: kvdrive reconnects by itself.
    restarted = await startEmbeddedPostgres({ dataDir: pg.dataDir, port: pg.port });
    let put = 0;
    for (let i = 0; i < 50 && put !== 200; i++) {
      put = (await fetch(`${base}/${ns}/values/k1`, { method: "PUT", headers, body: "v1" })).status;
      if (put !== 200) await Bun.sleep(100);
    }
    expect(put).toBe(200);
    expect(await (await fetch(`${base}/${ns}/values/k1`, { headers })).text()).toBe("v1");
    expect(await (await fetch(`${base}/${ns}/values/before`, { headers })).text()).toBe("v0");
    const list = (await (await fetch(`${base}/${ns}/keys`, { headers })).json()) as any;
    expect(list.success).toBe(true);
    expect(list.result.map((k: any) => k.name)).toEqual(["before", "k1"]);
    expect((await fetch(`${base}/${ns}/bulk`, { method: "PUT", headers, body: JSON.stringify([{ key: "b1", value: "x" }]) })).status).toBe(200);
    expect((await readyz(srv.httpUrl, 200)).status).toBe(200);
    expect(await cf.kv.namespaces.values.get("b1", { account_id: "acc", namespace_id: ns }).then((r) => r.text())).toBe("x");
  });
});

describe("the only Postgres cluster hung", () => {
  let hung: TestPostgres;
  let srv2: TestServer;
  let frozen: number[] = [];
  beforeAll(async () => {
    hung = await startTestPostgres();
    srv2 = await startTestServer(hung.url, { invalidation: false, backendTimeoutMs: 1000 });
  });
  afterAll(async () => {
    for (const pid of frozen) process.kill(pid, "SIGCONT");
    await srv2.destroy();
    await hung.destroy();
  });

  test("requests answer 503 after KVDRIVE_BACKEND_TIMEOUT_MS instead of hanging, and work again once it answers", async () => {
    const b = `${srv2.httpUrl}/client/v4/accounts/acc/storage/kv/namespaces`;
    const id = ((await (await fetch(b, { method: "POST", headers, body: JSON.stringify({ title: "hung" }) })).json()) as any).result.id;
    expect((await fetch(`${b}/${id}/values/a`, { method: "PUT", headers, body: "1" })).status).toBe(200);

    frozen = clusterPids(hung.pid);
    for (const pid of frozen) process.kill(pid, "SIGSTOP");
    // A hang shows as the abort, never as a status.
    const within = () => AbortSignal.timeout(60_000);
    await expectUnavailable(await fetch(`${b}/${id}/values/b`, { method: "PUT", headers, body: "2", signal: within() }), "put");
    await expectUnavailable(await fetch(`${b}/${id}/values/unread`, { headers, signal: within() }), "get");
    await expectUnavailable(await fetch(`${b}/${id}/keys`, { headers, signal: within() }), "list");
    await expectUnavailable(await fetch(b, { headers, signal: within() }), "list namespaces");
    expect((await readyz(srv2.httpUrl, 503)).status).toBe(503);

    for (const pid of frozen) process.kill(pid, "SIGCONT");
    frozen = [];
    let put = 0;
    for (let i = 0; i < 100 && put !== 200; i++) {
      put = (await fetch(`${b}/${id}/values/b`, { method: "PUT", headers, body: "2" })).status;
      if (put !== 200) await Bun.sleep(100);
    }
    expect(put).toBe(200);
    expect(await (await fetch(`${b}/${id}/values/b`, { headers })).text()).toBe("2");
    expect((await readyz(srv2.httpUrl, 200)).status).toBe(200);
  });
});
