// KVClient against a live server: Worker-style code using the KVNamespace binding API.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { KVClient } from "../../src/client.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

let pg: TestPostgres;
let srv: TestServer;
let KV: KVClient;

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  const res = await fetch(`${srv.httpUrl}/client/v4/accounts/acct-client/storage/kv/namespaces`, { method: "POST", headers: { authorization: `Bearer ${TEST_TOKEN}` }, body: JSON.stringify({ title: "client" }) });
  const namespaceId = ((await res.json()) as any).result.id;
  KV = new KVClient({ baseURL: `${srv.httpUrl}/client/v4`, apiToken: TEST_TOKEN, accountId: "acct-client", namespaceId });
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

// A Worker's fetch handler, unchanged, with the binding in env.
const worker = {
  async fetch(request: Request, env: { KV: KVClient }): Promise<Response> {
    const url = new URL(request.url);
    const key = url.pathname.slice(1);
    if (request.method === "PUT") {
      await env.KV.put(key, await request.text(), { metadata: { by: "worker" }, expirationTtl: 3600 });
      return new Response("stored", { status: 201 });
    }
    const { value, metadata } = await env.KV.getWithMetadata(key);
    if (value === null) return new Response("not found", { status: 404 });
    return Response.json({ value, metadata });
  },
};

test("a Worker runs unchanged against kvdrive", async () => {
  expect((await worker.fetch(new Request("https://w.example/user-1", { method: "PUT", body: "Ada" }), { KV })).status).toBe(201);
  const res = await worker.fetch(new Request("https://w.example/user-1"), { KV });
  expect(await res.json()).toEqual({ value: "Ada", metadata: { by: "worker" } });
  expect((await worker.fetch(new Request("https://w.example/nobody"), { KV })).status).toBe(404);
});

test("get with every type, cacheTtl, and arrays of keys", async () => {
  await KV.put("j", JSON.stringify({ a: [1, 2] }));
  expect(await KV.get("j")).toBe('{"a":[1,2]}');
  expect(await KV.get("j", "json")).toEqual({ a: [1, 2] });
  expect(await KV.get("j", { type: "json", cacheTtl: 60 })).toEqual({ a: [1, 2] });
  expect(new TextDecoder().decode(await KV.get("j", "arrayBuffer"))).toBe('{"a":[1,2]}');
  const stream: ReadableStream = await KV.get("j", { type: "stream" });
  expect(await new Response(stream).text()).toBe('{"a":[1,2]}');
  expect(await KV.get("missing")).toBeNull();
  const many = await KV.get(["j", "missing"], "json");
  expect(many).toEqual(new Map<string, unknown>([["j", { a: [1, 2] }], ["missing", null]]));
  const withMeta = await KV.getWithMetadata(["j"]);
  expect(withMeta.get("j")).toEqual({ value: '{"a":[1,2]}', metadata: null });
});

test("put takes strings, ArrayBuffers, views and streams; delete; expiration", async () => {
  await KV.put("buf", new Uint8Array([1, 2, 3]).buffer);
  await KV.put("view", new Uint8Array([9, 8, 7, 6]).subarray(1, 3));
  await KV.put("stream", new Response("streamed").body!);
  expect([...new Uint8Array(await KV.get("buf", "arrayBuffer"))]).toEqual([1, 2, 3]);
  expect([...new Uint8Array(await KV.get("view", "arrayBuffer"))]).toEqual([8, 7]);
  expect(await KV.get("stream")).toBe("streamed");
  await KV.delete("stream");
  expect(await KV.get("stream")).toBeNull();
  await expect(KV.put("bad", "x", { expirationTtl: 10 })).rejects.toMatchObject({ status: 400, code: 10034 });
});

test("list with prefix, limit and cursor", async () => {
  for (let i = 0; i < 7; i++) await KV.put(`p:${i}`, "v", { metadata: { i } });
  const first = await KV.list({ prefix: "p:", limit: 3 });
  expect(first.list_complete).toBe(false);
  expect(first.keys.map((k) => k.name)).toEqual(["p:0", "p:1", "p:2"]);
  expect(first.keys[1]!.metadata).toEqual({ i: 1 });
  const names = [...first.keys.map((k) => k.name)];
  let cursor = first.list_complete ? undefined : first.cursor;
  while (cursor) {
    const page = await KV.list({ prefix: "p:", limit: 3, cursor });
    names.push(...page.keys.map((k) => k.name));
    cursor = page.list_complete ? undefined : page.cursor;
  }
  expect(names).toEqual(["p:0", "p:1", "p:2", "p:3", "p:4", "p:5", "p:6"]);
});
