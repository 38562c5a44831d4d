// Every KV route through the official cloudflare SDK and through raw fetch, against a real server.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Cloudflare from "cloudflare";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

let pg: TestPostgres;
let srv: TestServer;
let cf: Cloudflare;
const account_id = "acct-api";
let base: string;
const auth = { authorization: `Bearer ${TEST_TOKEN}` };

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  cf = new Cloudflare({ apiToken: TEST_TOKEN, baseURL: `${srv.httpUrl}/client/v4`, maxRetries: 0 });
  base = `${srv.httpUrl}/client/v4/accounts/${account_id}/storage/kv/namespaces`;
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

describe("namespaces through the SDK", () => {
  test("create, list with paging, get, rename, delete", async () => {
    const a = await cf.kv.namespaces.create({ account_id, title: "sdk-a" });
    expect(a.id).toMatch(/^[0-9a-f]{32}$/);
    expect(a.title).toBe("sdk-a");
    await cf.kv.namespaces.create({ account_id, title: "sdk-b" });
    expect(await cf.kv.namespaces.create({ account_id, title: "sdk-a" }).catch((e) => e)).toMatchObject({ status: 400, errors: [{ code: 10014 }] });
    const titles: string[] = [];
    for await (const ns of cf.kv.namespaces.list({ account_id, per_page: 1, order: "title", direction: "desc" })) titles.push(ns.title);
    expect(titles).toEqual(["sdk-b", "sdk-a"]);
    const page = await cf.kv.namespaces.list({ account_id, page: 9, per_page: 5 });
    expect(page.result).toEqual([]);
    expect((await cf.kv.namespaces.get(a.id, { account_id })).title).toBe("sdk-a");
    await cf.kv.namespaces.update(a.id, { account_id, title: "sdk-renamed" });
    expect((await cf.kv.namespaces.get(a.id, { account_id })).title).toBe("sdk-renamed");
    expect(await cf.kv.namespaces.get(a.id, { account_id: "someone-else" }).catch((e) => e)).toMatchObject({ status: 404 });
    await cf.kv.namespaces.delete(a.id, { account_id });
    const err = await cf.kv.namespaces.get(a.id, { account_id }).catch((e) => e);
    expect(err.status).toBe(404);
    expect(err.errors[0].code).toBe(10013);
  });
});

describe("values through the SDK", () => {
  let ns: string;
  beforeAll(async () => {
    ns = (await cf.kv.namespaces.create({ account_id, title: "sdk-values" })).id;
  }, 60_000);

  test("put with metadata object and ttl, get raw bytes with expiration header, metadata, delete", async () => {
    await cf.kv.namespaces.values.update("greeting", { account_id, namespace_id: ns, value: "hello", metadata: { lang: "en" }, expiration_ttl: 300 });
    const res = await cf.kv.namespaces.values.get("greeting", { account_id, namespace_id: ns });
    expect(await res.text()).toBe("hello");
    const exp = Number(res.headers.get("expiration"));
    expect(exp).toBeGreaterThan(Date.now() / 1000 + 250);
    expect(await cf.kv.namespaces.metadata.get("greeting", { account_id, namespace_id: ns })).toEqual({ lang: "en" });
    await cf.kv.namespaces.values.delete("greeting", { account_id, namespace_id: ns });
    const err = await cf.kv.namespaces.values.get("greeting", { account_id, namespace_id: ns }).catch((e) => e);
    expect(err.status).toBe(404);
    await cf.kv.namespaces.values.delete("never-there", { account_id, namespace_id: ns });
  });

  test("binary values round-trip and keys with reserved characters decode once", async () => {
    const bytes = new Uint8Array([0, 255, 1, 254, 10, 13]);
    for (const key of ["a/b", "50%", "%2F", "sp ace", "ключ", "q?x=1#y", "\u{1F600}"]) {
      await cf.kv.namespaces.values.update(key, { account_id, namespace_id: ns, value: new File([bytes], "v") });
      const res = await cf.kv.namespaces.values.get(key, { account_id, namespace_id: ns });
      expect(new Uint8Array(await res.arrayBuffer())).toEqual(bytes);
    }
    const listed: string[] = [];
    for await (const k of cf.kv.namespaces.keys.list(ns, { account_id })) listed.push(k.name);
    expect(listed).toContain("%2F");
    expect(listed).toContain("a/b");
    // Raw: %2F is a slash inside the key, %252F is the literal text %2F.
    expect(await (await fetch(`${base}/${ns}/values/a%2Fb`, { headers: auth })).status).toBe(200);
    expect(await (await fetch(`${base}/${ns}/values/%252F`, { headers: auth })).status).toBe(200);
  });

  test("list with prefix, limit and cursor; metadata and expiration shown", async () => {
    for (let i = 0; i < 25; i++) await cf.kv.namespaces.values.update(`list/${String(i).padStart(2, "0")}`, { account_id, namespace_id: ns, value: "x", metadata: { i: String(i) } });
    const first = await cf.kv.namespaces.keys.list(ns, { account_id, prefix: "list/", limit: 10 });
    expect(first.result.length).toBe(10);
    expect(first.result[0]).toMatchObject({ name: "list/00", metadata: { i: "0" } });
    const names: string[] = [];
    for await (const k of cf.kv.namespaces.keys.list(ns, { account_id, prefix: "list/", limit: 10 })) names.push(k.name);
    expect(names.length).toBe(25);
  });

  test("bulk update, bulk get, bulk delete", async () => {
    const r = await cf.kv.namespaces.bulkUpdate(ns, {
      account_id,
      body: [
        { key: "bulk1", value: "one", metadata: { m: 1 } },
        { key: "bulk2", value: Buffer.from('{"n":2}').toString("base64"), base64: true },
        { key: "bulk3", value: "three", expiration_ttl: 120 },
      ],
    });
    expect(r).toMatchObject({ successful_key_count: 3, unsuccessful_keys: [] });
    const got: any = await cf.kv.namespaces.bulkGet(ns, { account_id, keys: ["bulk1", "bulk2", "nope"] });
    expect(got.values).toEqual({ bulk1: "one", bulk2: '{"n":2}', nope: null });
    const json: any = await cf.kv.namespaces.bulkGet(ns, { account_id, keys: ["bulk2"], type: "json", withMetadata: true });
    expect(json.values.bulk2).toEqual({ value: { n: 2 }, metadata: null });
    const del = await cf.kv.namespaces.bulkDelete(ns, { account_id, body: ["bulk1", "bulk2"] });
    expect(del).toMatchObject({ successful_key_count: 2 });
    const after: any = await cf.kv.namespaces.bulkGet(ns, { account_id, keys: ["bulk1", "bulk3"] });
    expect(after.values).toEqual({ bulk1: null, bulk3: "three" });
  });
});

describe("raw fetch", () => {
  test("raw body PUT, envelope shape, DELETE /bulk, health, metrics", async () => {
    const created: any = await (await fetch(base, { method: "POST", headers: auth, body: JSON.stringify({ title: "raw" }) })).json();
    expect(created).toMatchObject({ success: true, errors: [], messages: [] });
    const ns = created.result.id;
    const put = await fetch(`${base}/${ns}/values/k?expiration_ttl=60&expiration=1`, { method: "PUT", headers: auth, body: "raw-body" });
    expect(await put.json()).toEqual({ success: true, errors: [], messages: [], result: {} });
    const get = await fetch(`${base}/${ns}/values/k`, { headers: auth });
    expect(await get.text()).toBe("raw-body");
    expect(get.headers.get("expiration")).not.toBeNull();
    const del = await fetch(`${base}/${ns}/bulk`, { method: "DELETE", headers: auth, body: JSON.stringify(["k"]) });
    expect(((await del.json()) as any).result.successful_key_count).toBe(1);
    expect((await fetch(`${base}/${ns}/values/k`, { headers: auth })).status).toBe(404);
    expect((await fetch(`${srv.httpUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${srv.httpUrl}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${srv.httpUrl}/metrics`, { headers: auth })).text();
    expect(metrics).toContain('kvdrive_http_requests_total{method="GET",route="values",status="200"}');
    expect(metrics).toContain("kvdrive_batch_rows_bucket");
    expect(metrics).toContain("kvdrive_cache_hits_total");
  });
});
