// Every limit and error of the KV API: right status, Cloudflare code, a message naming the value and limit,
// never a 5xx, and the server keeps serving afterwards.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

let pg: TestPostgres;
let srv: TestServer;
let base: string;
let ns: string;
const auth = { authorization: `Bearer ${TEST_TOKEN}` };

async function call(path: string, init: RequestInit = {}) {
  const res = await fetch(`${base}${path}`, { ...init, headers: { ...auth, ...(init.headers as Record<string, string>) } });
  const text = await res.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function expectError(r: { status: number; body: any }, status: number, code?: number, message?: RegExp) {
  expect(r.status).toBe(status);
  expect(r.body.success).toBe(false);
  expect(r.body.errors[0].message).not.toMatch(/\n\s+at /);
  if (code !== undefined) expect(r.body.errors[0].code).toBe(code);
  if (message) expect(r.body.errors[0].message).toMatch(message);
}

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  base = `${srv.httpUrl}/client/v4/accounts/acct-limits/storage/kv/namespaces`;
  ns = (await call("", { method: "POST", body: JSON.stringify({ title: "limits" }) })).body.result.id;
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

describe("keys", () => {
  test("empty, '.' and '..' are 400", async () => {
    expectError(await call(`/${ns}/values/`, { method: "PUT", body: "x" }), 400, 10020, /empty/);
    // URL parsers remove "." and ".." path segments (even as %2E), so such keys arrive in bodies.
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify([{ key: ".", value: "x" }]) }), 400, 10020, /"\."/);
    expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: [".."] }) }), 400, 10020, /"\.\."/);
    expectError(await call(`/${ns}/bulk/delete`, { method: "POST", body: JSON.stringify([""]) }), 400, 10020, /empty/);
  });
  test("over 512 UTF-8 bytes is 414, exactly 512 is fine", async () => {
    expectError(await call(`/${ns}/values/${"a".repeat(513)}`, { method: "PUT", body: "x" }), 414, 10025, /513 exceeds key length limit of 512/);
    expectError(await call(`/${ns}/values/${encodeURIComponent("é".repeat(257))}`, { method: "GET" }), 414, 10025, /514/);
    expect((await call(`/${ns}/values/${"a".repeat(512)}`, { method: "PUT", body: "x" })).status).toBe(200);
  });
  test("bad percent-encoding is 400", async () => {
    expectError(await call(`/${ns}/values/%E0%A4%A`, { method: "GET" }), 400, 10020);
  });
});

describe("values and metadata", () => {
  test("a value over 25 MiB is refused with 413 while streaming", async () => {
    const chunk = new Uint8Array(1024 * 1024);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= 30) return c.close();
        sent++;
        c.enqueue(chunk);
      },
    });
    const r = await call(`/${ns}/values/big`, { method: "PUT", body, headers: { "content-type": "application/octet-stream" } });
    expectError(r, 413, 10021, /exceeds limit of 26214400/);
    expect((await call(`/${ns}/values/big`)).status).toBe(404);
  });
  test("a declared content-length over the limit is refused up front", async () => {
    const r = await call(`/${ns}/values/big2`, { method: "PUT", body: new Uint8Array(26 * 1024 * 1024) });
    expectError(r, 413, 10021);
  });
  test("metadata over 1024 bytes is 413", async () => {
    const form = new FormData();
    form.set("value", "v");
    form.set("metadata", JSON.stringify({ x: "y".repeat(1100) }));
    expectError(await call(`/${ns}/values/meta`, { method: "PUT", body: form }), 413, 10022, /exceeds limit of 1024/);
  });
  test("malformed multipart and metadata JSON are 400", async () => {
    const form = new FormData();
    form.set("value", "v");
    form.set("metadata", "{not json");
    expectError(await call(`/${ns}/values/m1`, { method: "PUT", body: form }), 400);
    expectError(await call(`/${ns}/values/m2`, { method: "PUT", body: "--x\r\ngarbage", headers: { "content-type": "multipart/form-data; boundary=zzz" } }), 400);
    const noValue = new FormData();
    noValue.set("metadata", "{}");
    expectError(await call(`/${ns}/values/m3`, { method: "PUT", body: noValue }), 400);
  });
  test("expiration_ttl under 60 or not an integer is 400 code 10034", async () => {
    expectError(await call(`/${ns}/values/t?expiration_ttl=59`, { method: "PUT", body: "x" }), 400, 10034, /at least 60/);
    expectError(await call(`/${ns}/values/t?expiration_ttl=60.5`, { method: "PUT", body: "x" }), 400, 10034);
    expectError(await call(`/${ns}/values/t?expiration_ttl=abc`, { method: "PUT", body: "x" }), 400, 10034);
  });
  test("expiration less than 60 s ahead is 400 code 10033; ttl wins when both are given", async () => {
    const now = Math.floor(Date.now() / 1000);
    expectError(await call(`/${ns}/values/t?expiration=${now + 30}`, { method: "PUT", body: "x" }), 400, 10033, /at least 60 seconds in the future/);
    expectError(await call(`/${ns}/values/t?expiration=soon`, { method: "PUT", body: "x" }), 400, 10033);
    expect((await call(`/${ns}/values/t?expiration=${now}&expiration_ttl=120`, { method: "PUT", body: "x" })).status).toBe(200);
  });
  test("missing key is 404 code 10009; unknown namespace is 404 code 10013", async () => {
    expectError(await call(`/${ns}/values/nothing`), 404, 10009);
    expectError(await call(`/${ns}/metadata/nothing`), 404, 10009);
    expectError(await call(`/0123456789abcdef0123456789abcdef/values/x`), 404, 10013);
  });
});

describe("list", () => {
  test("limit over 1000, under 1 or not a number is 400; a bad cursor is 400", async () => {
    expectError(await call(`/${ns}/keys?limit=1001`), 400, 10026, /at most 1000/);
    expectError(await call(`/${ns}/keys?limit=0`), 400, 10026);
    expectError(await call(`/${ns}/keys?limit=ten`), 400, 10026);
    expectError(await call(`/${ns}/keys?cursor=%%%`), 400, 10056);
    expectError(await call(`/${ns}/keys?cursor=k1${"A".repeat(800)}`), 400, 10056);
  });
});

describe("bulk", () => {
  test("more than 10,000 pairs is refused and nothing is written", async () => {
    const pairs = Array.from({ length: 10_001 }, (_, i) => ({ key: `over${i}`, value: "v" }));
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify(pairs) }), 413, 10037, /10001 pairs exceeds limit of 10000/);
    expect((await call(`/${ns}/values/over0`)).status).toBe(404);
  });
  test("one bad pair rejects the whole bulk write", async () => {
    const pairs = [{ key: "good", value: "v" }, { key: "", value: "v" }];
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify(pairs) }), 400);
    expect((await call(`/${ns}/values/good`)).status).toBe(404);
  });
  test("bulk delete over 10,000 keys is refused", async () => {
    expectError(await call(`/${ns}/bulk/delete`, { method: "POST", body: JSON.stringify(Array.from({ length: 10_001 }, (_, i) => `k${i}`)) }), 413);
  });
  test("bulk get with 0 or more than 100 keys, or a bad type, is 400", async () => {
    expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: [] }) }), 400, undefined, /1\.\.100/);
    expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: Array.from({ length: 101 }, (_, i) => `k${i}`) }) }), 400);
    expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: ["a"], type: "arrayBuffer" }) }), 400, undefined, /"text" or "json"/);
  });
  test("malformed JSON is 400", async () => {
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body: "[{" }), 400, 10001);
    expectError(await call("", { method: "POST", body: "{nope" }), 400);
    expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: "null" }), 400);
  });
});

describe("auth and routing", () => {
  test("missing token is 401, wrong token is 403", async () => {
    const missing = await fetch(`${base}/${ns}/values/x`);
    expect(missing.status).toBe(401);
    expect(((await missing.json()) as any).errors[0].code).toBe(10000);
    const wrong = await fetch(`${base}/${ns}/values/x`, { headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(403);
    expect((await fetch(`${srv.httpUrl}/metrics`)).status).toBe(401);
  });
  test("unknown routes get a 404 envelope", async () => {
    const r = await call(`/${ns}/nowhere`);
    expectError(r, 404);
  });
});

test("a barrage of hostile input never yields a 5xx and the server keeps serving", async () => {
  const paths = [`/${ns}/values/%`, `/${ns}/values/%00`, `/${ns}/keys?limit=-1&cursor=`, `/${ns}/bulk/get`, `/${ns}/bulk`, "", `/${ns}`, `/${"x".repeat(5000)}/keys`];
  const bodies: Array<string | undefined> = [undefined, "", "{}", "[]", "null", "[1,2]", '{"keys":"a"}', '{"title":5}', "\u0000\u0001", '[{"key":"k","value":5}]', '[{"key":"k","value":"!!","base64":true}]'];
  for (const p of paths)
    for (const method of ["GET", "PUT", "POST", "DELETE"])
      for (const body of bodies) {
        const r = await call(p, { method, body: method === "GET" ? undefined : body, headers: { "content-type": "application/json" } });
        expect(r.status).toBeLessThan(500);
      }
  // The barrage includes DELETE of the namespace itself, so check service on a fresh one.
  const fresh = (await call("", { method: "POST", body: JSON.stringify({ title: "after-barrage" }) })).body.result.id;
  expect((await call(`/${fresh}/values/after`, { method: "PUT", body: "still-ok" })).status).toBe(200);
  expect((await call(`/${fresh}/values/after`)).body).toBe("still-ok");
});
