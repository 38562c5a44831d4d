// Hostile input to the KV routes: numbers at extreme values, keys that are not valid Unicode, NUL, deep
// nesting, malformed ids, odd multipart. Each gets its documented 4xx code and a message naming the parameter
// and the limit; never a 5xx, never "bigint out of range"; and two invalid keys are never merged into one.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import Cloudflare from "cloudflare";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";
import { rawRequest, request } from "./raw.ts";

let pg: TestPostgres;
let srv: TestServer;
let base: string;
let ns: string;
const ACCOUNT = "acct-input";
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

function expectError(r: { status: number; body: any }, status: number, code: number, message?: RegExp) {
  expect(r.status).toBe(status);
  expect(r.body).toMatchObject({ success: false, result: null, messages: [] });
  expect(r.body.errors[0].code).toBe(code);
  expect(r.body.errors[0].message).not.toMatch(/bigint|out of range|invalid byte sequence|\n\s+at /);
  if (message) expect(r.body.errors[0].message).toMatch(message);
}

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  base = `${srv.httpUrl}/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`;
  ns = (await call("", { method: "POST", body: JSON.stringify({ title: "input" }) })).body.result.id;
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

describe("expiration and expiration_ttl at extreme values", () => {
  test("query parameters: 400 with 10033/10034 naming the parameter and the limit", async () => {
    const put = (q: string) => call(`/${ns}/values/exp?${q}`, { method: "PUT", body: "x" });
    expectError(await put("expiration=9999999999999999999999"), 400, 10033, /expiration.*at most 253402300799/);
    expectError(await put(`expiration=${"9".repeat(400)}`), 400, 10033, /at most 253402300799/);
    expectError(await put("expiration=253402300800"), 400, 10033, /at most/);
    expectError(await put("expiration_ttl=9223372036854775807"), 400, 10034, /expiration_ttl.*at most/);
    expectError(await put(`expiration_ttl=${"9".repeat(400)}`), 400, 10034, /at most/);
    expectError(await put("expiration_ttl=-60"), 400, 10034, /at least 60/);
    expectError(await put("expiration_ttl=60.5"), 400, 10034, /integer/);
    expectError(await put("expiration_ttl=NaN"), 400, 10034, /integer/);
    expectError(await put("expiration_ttl=1e9"), 400, 10034, /integer/);
    expectError(await put("expiration_ttl=%FF"), 400, 10034, /expiration_ttl.*percent-encoding/);
    expect((await put("expiration=253402300799")).status).toBe(200);
    expect((await put("expiration_ttl=86400")).status).toBe(200);
  });
  test("bulk items: 1e300, huge strings, fractions and non-numbers are 400 and nothing is written", async () => {
    const bulk = (item: Record<string, unknown>) => call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify([{ key: "bulk-ok", value: "v" }, { key: "bulk-exp", value: "v", ...item }]) });
    expectError(await bulk({ expiration: 1e300 }), 400, 10033, /at most 253402300799/);
    expectError(await bulk({ expiration: "9999999999999999999999" }), 400, 10033, /at most/);
    expectError(await bulk({ expiration_ttl: 9223372036854775807 }), 400, 10034, /at most/);
    expectError(await bulk({ expiration_ttl: -1 }), 400, 10034);
    expectError(await bulk({ expiration_ttl: 61.5 }), 400, 10034);
    expectError(await bulk({ expiration_ttl: true }), 400, 10034);
    expectError(await bulk({ expiration: { a: 1 } }), 400, 10033);
    expectError(await call(`/${ns}/values/bulk-ok`), 404, 10009);
  });
});

describe("keys that are not valid Unicode", () => {
  test("lone surrogates in bulk keys are refused, never merged into U+FFFD", async () => {
    const body = '[{"key":"\\ud800","value":"first"},{"key":"\\udbff","value":"second"}]';
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body }), 400, 10020, /not valid Unicode/);
    for (const k of ["\ud800", "\udbff", "a\udc00b"]) {
      expectError(await call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify([{ key: k, value: "x" }]) }), 400, 10020);
      expectError(await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: [k] }) }), 400, 10020);
      expectError(await call(`/${ns}/bulk/delete`, { method: "POST", body: JSON.stringify([k]) }), 400, 10020);
    }
    expectError(await call(`/${ns}/values/${encodeURIComponent("\ufffd")}`), 404, 10009);
  });
  test("invalid UTF-8 bytes inside a JSON body are refused, not merged into U+FFFD", async () => {
    const enc = new TextEncoder();
    const bytes = (raw: number[]) => new Uint8Array([...enc.encode('[{"key":"bad-'), ...raw, ...enc.encode('","value":"x"}]')]);
    for (const raw of [[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80]]) {
      expectError(await call(`/${ns}/bulk`, { method: "PUT", body: bytes(raw) }), 400, 10001, /UTF-8/);
    }
    expectError(await call(`/${ns}/values/${encodeURIComponent("bad-\ufffd")}`), 404, 10009);
  });
  test("invalid UTF-8 in a path key's percent-encoding is 400 (surrogate halves, overlong forms, stray bytes)", async () => {
    for (const enc of ["%ED%A0%80", "%ED%AF%BF", "%C0%AF", "%FF", "%80", "%E0%A4%A"]) {
      expectError(await call(`/${ns}/values/${enc}`, { method: "PUT", body: "x" }), 400, 10020);
      expectError(await call(`/${ns}/values/${enc}`), 400, 10020);
      expectError(await call(`/${ns}/metadata/${enc}`), 400, 10020);
    }
  });
  test("paired surrogates (astral characters) are ordinary keys", async () => {
    const key = "emoji-\u{1F600}";
    expect((await call(`/${ns}/values/${encodeURIComponent(key)}`, { method: "PUT", body: "smile" })).status).toBe(200);
    expect((await call(`/${ns}/values/${encodeURIComponent(key)}`)).body).toBe("smile");
  });
});

describe("metadata", () => {
  test("nested 100,000 deep in a bulk item, a multipart part and bracket fields is 413/400, never a stack overflow", async () => {
    const deep = "[".repeat(100_000) + "]".repeat(100_000);
    const bulk = await call(`/${ns}/bulk`, { method: "PUT", body: `[{"key":"deep","value":"v","metadata":${deep}}]` });
    expect([400, 413]).toContain(bulk.status);
    expect(bulk.body.success).toBe(false);
    const form = new FormData();
    form.set("value", "v");
    form.set("metadata", deep);
    const multi = await call(`/${ns}/values/deep`, { method: "PUT", body: form });
    expect([400, 413]).toContain(multi.status);
    const brackets = new FormData();
    brackets.set("value", "v");
    brackets.set(`metadata${"[a]".repeat(5000)}`, "x");
    expectError(await call(`/${ns}/values/deep`, { method: "PUT", body: brackets }), 413, 10022, /exceeds limit of 1024/);
    const huge = new FormData();
    huge.set("value", "v");
    huge.set(`metadata${"[a]".repeat(2_000_000)}`, "x"); // 6 MB of field name: refused before it is split
    expectError(await call(`/${ns}/values/deep`, { method: "PUT", body: huge }), 413, 10022);
    const many = new FormData();
    many.set("value", "v");
    for (let i = 0; i < 5000; i++) many.append(`metadata[k${i}]`, "x");
    expectError(await call(`/${ns}/values/deep`, { method: "PUT", body: many }), 413, 10022, /fields/);
    const objDeep = '{"a":'.repeat(600) + "1" + "}".repeat(600);
    expectError(await call(`/${ns}/bulk`, { method: "PUT", body: `[{"key":"deep","value":"v","metadata":${objDeep}}]` }), 413, 10022, /512 levels/);
  });
  test("a key named __proto__ is an ordinary key in a bulk get answer", async () => {
    await call(`/${ns}/bulk`, { method: "PUT", body: JSON.stringify([{ key: "__proto__", value: "p" }, { key: "constructor", value: "c" }]) });
    const r = await call(`/${ns}/bulk/get`, { method: "POST", body: JSON.stringify({ keys: ["__proto__", "constructor", "missing"] }) });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body.result.values).sort()).toEqual(["__proto__", "constructor", "missing"]);
    expect(JSON.stringify(r.body.result.values)).toBe('{"__proto__":"p","constructor":"c","missing":null}');
  });
  test("bracket fields cannot reach Object.prototype, and a field under a string is replaced, not a 500", async () => {
    const form = new FormData();
    form.set("value", "v");
    form.set("metadata[__proto__][polluted]", "yes");
    form.set("metadata[a]", "1");
    form.set("metadata[a][b]", "2");
    const r = await call(`/${ns}/values/proto`, { method: "PUT", body: form });
    expect(r.status).toBe(200);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const meta = await call(`/${ns}/metadata/proto`);
    expect(meta.body.result.__proto__.polluted).toBe("yes");
    expect(meta.body.result.a).toEqual({ b: "2" });
  });
});

describe("namespaces and ids", () => {
  test("NUL or a lone surrogate in a title is 400 code 10019", async () => {
    expectError(await call("", { method: "POST", body: JSON.stringify({ title: "a\u0000b" }) }), 400, 10019, /NUL/);
    expectError(await call("", { method: "POST", body: JSON.stringify({ title: "a\ud800" }) }), 400, 10019, /Unicode/);
    expectError(await call(`/${ns}`, { method: "PUT", body: JSON.stringify({ title: "\u0000" }) }), 400, 10019);
  });
  test("a namespace id that is not 32 hex characters is 404 code 10013 on every route", async () => {
    for (const id of ["%00", "%FF", "nope", "0123456789ABCDEF0123456789ABCDEF", "x".repeat(5000), "%ED%A0%80"]) {
      expectError(await call(`/${id}`), 404, 10013);
      expectError(await call(`/${id}/values/k`, { method: "PUT", body: "x" }), 404, 10013);
      expectError(await call(`/${id}/keys`), 404, 10013);
      expectError(await call(`/${id}/bulk`, { method: "PUT", body: "[]" }), 404, 10013);
      const admin = await fetch(`${srv.httpUrl}/admin/kv/namespaces/${id}/replication`, { headers: auth });
      expect(admin.status).toBe(404);
    }
  });
  test("an account id with NUL or control characters, or too long, is 400", async () => {
    for (const acc of ["%00", "a%0Ab", "x".repeat(200)]) {
      const r = await fetch(`${srv.httpUrl}/client/v4/accounts/${acc}/storage/kv/namespaces`, { headers: auth });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { errors: Array<{ message: string }> }).errors[0]!.message).toMatch(/account id/);
    }
  });
});

describe("every other parameter at extreme values", () => {
  test("list limit, cursor, prefix, page, per_page and cache_ttl", async () => {
    for (const limit of ["0", "-1", "1e9", "99999999999999999999999", "1.5", "%FF"]) expectError(await call(`/${ns}/keys?limit=${limit}`), 400, 10026);
    for (const cursor of ["k1" + "A".repeat(100_000).slice(0, 6000), "%FF", "k1!!", "zz"]) expectError(await call(`/${ns}/keys?cursor=${cursor}`), 400, 10056);
    expectError(await call(`/${ns}/keys?prefix=%ED%A0%80`), 400, 10001, /prefix/);
    for (const q of ["page=0", "page=99999999999999999999", "per_page=-1", "per_page=1e3", "order=%00", "direction=up"]) {
      expectError(await call(`?${q}`), 400, 10001);
    }
    for (const ttl of ["29", "99999999999999999999", "-1", "abc"]) expectError(await call(`/${ns}/values/k?cache_ttl=${ttl}`), 400, 10001, /cache_ttl/);
  });
  test("bodies that are not JSON, or JSON of the wrong shape, and wrong content types are 400", async () => {
    for (const body of ["", "not json", "{", "null", "1", '"s"', "[]", '{"keys":"a"}', "\u0000", '{"keys":[1]}']) {
      const r = await call(`/${ns}/bulk/get`, { method: "POST", body });
      expect(r.status).toBe(400);
    }
    for (const body of ["not json", "{}", "[1]", '[{"key":1,"value":"x"}]', '[{"key":"k"}]', '[{"key":"k","value":"x","base64":true}]']) {
      expect((await call(`/${ns}/bulk`, { method: "PUT", body, headers: { "content-type": "text/plain" } })).status).toBe(400);
    }
    expect((await call("", { method: "POST", body: "<xml/>", headers: { "content-type": "application/xml" } })).status).toBe(400);
    const badMultipart = await call(`/${ns}/values/mp`, { method: "PUT", body: "--x\r\nnope", headers: { "content-type": "multipart/form-data; boundary=x" } });
    expect(badMultipart.status).toBe(400);
    const noValue = new FormData();
    noValue.set("metadata", "{}");
    expect((await call(`/${ns}/values/mp`, { method: "PUT", body: noValue })).status).toBe(400);
  });
  test("a key over 512 bytes in the path is 414 however long the URL", async () => {
    expectError(await call(`/${ns}/values/${"k".repeat(4000)}`, { method: "PUT", body: "x" }), 414, 10025);
  });
  test("a Host the router cannot read is 400 in the envelope", async () => {
    const r = await rawRequest(srv.httpPort, request("GET", `/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`, { Host: "a/b", ...auth }));
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).success).toBe(false);
  });
});

test("the cloudflare SDK sees 400s as errors, and the server still serves afterwards", async () => {
  const cf = new Cloudflare({ apiToken: TEST_TOKEN, baseURL: `${srv.httpUrl}/client/v4`, maxRetries: 0 });
  const err = await cf.kv.namespaces.values.update("sdk", { account_id: ACCOUNT, namespace_id: ns, value: "v", expiration_ttl: 9223372036854775807 }).catch((e) => e);
  expect(err).toBeInstanceOf(Cloudflare.BadRequestError);
  await cf.kv.namespaces.values.update("sdk", { account_id: ACCOUNT, namespace_id: ns, value: "v", metadata: { ok: true } });
  expect(await (await cf.kv.namespaces.values.get("sdk", { account_id: ACCOUNT, namespace_id: ns })).text()).toBe("v");
  expect((await fetch(`${srv.httpUrl}/healthz`)).status).toBe(200);
});
