// Authentication is decided on the route the router matched: every route but GET/HEAD /healthz and /readyz
// needs the token, whatever the Host header, request target, dot segments or encodings say. Driven from outside
// over raw sockets, so nothing is normalized on the way in.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";
import { rawRequest, request } from "./raw.ts";

let pg: TestPostgres;
let srv: TestServer;
let ns: string;
const AUTH = { authorization: `Bearer ${TEST_TOKEN}` };
const NS_BASE = "/client/v4/accounts/acct-auth/storage/kv/namespaces";

beforeAll(async () => {
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url, { authFailureDelayMs: 20 });
  const res = await fetch(`${srv.httpUrl}${NS_BASE}`, { method: "POST", headers: AUTH, body: JSON.stringify({ title: "auth" }) });
  ns = ((await res.json()) as { result: { id: string } }).result.id;
}, 60_000);
afterAll(async () => {
  await srv.destroy();
  await pg.destroy();
}, 60_000);

interface Target {
  method: string;
  path: string;
  body: string;
}

const targets = (): Target[] => [
  { method: "POST", path: "/sql", body: JSON.stringify({ query: "create table pwned_sql ()" }) },
  { method: "PUT", path: `${NS_BASE}/${ns}/bulk`, body: JSON.stringify([{ key: "pwned", value: "x" }]) },
  { method: "POST", path: NS_BASE, body: JSON.stringify({ title: "pwned" }) },
  { method: "GET", path: NS_BASE, body: "" },
  { method: "GET", path: "/metrics", body: "" },
  { method: "GET", path: "/admin/pools", body: "" },
  { method: "GET", path: "/admin/kv", body: "" },
  { method: "POST", path: "/admin/kv/crawl", body: "" },
  { method: "PUT", path: `/admin/kv/namespaces/${ns}/replication`, body: JSON.stringify({ mode: "shadow" }) },
  { method: "PUT", path: `${NS_BASE}/${ns}/values/pwned`, body: "x" },
];

/** Ways to make a request look like /healthz to one reader of the URL and like the target to another. */
const tricks: Array<[string, (p: string) => { target: string; host: string }]> = [
  ["query after /healthz, 1-char Host", (p) => ({ target: `/healthz?x=${p}`, host: "a" })],
  ["query after /healthz, 2-char Host", (p) => ({ target: `/healthz?x=${p}`, host: "kv" })],
  ["query after /healthz, 3-char Host", (p) => ({ target: `/healthz?x=${p}`, host: "abc" })],
  ["query after /readyz", (p) => ({ target: `/readyz?x=${p}`, host: "a" })],
  ["double slash", (p) => ({ target: `/${p}`, host: "a" })],
  ["dot segment", (p) => ({ target: `/healthz/..${p}`, host: "a" })],
  ["encoded dot segment", (p) => ({ target: `/healthz/%2E%2E${p}`, host: "a" })],
  ["encoded slashes", (p) => ({ target: `/healthz%2F..${p}`, host: "a" })],
  ["all slashes encoded", (p) => ({ target: `/${p.slice(1).replaceAll("/", "%2F")}`, host: "a" })],
  ["/healthz in the query", (p) => ({ target: `${p}?x=/healthz`, host: "a" })],
  ["/healthz in the query, short Host", (p) => ({ target: `${p}?x=/healthz`, host: "k" })],
  ["absolute-form /healthz", (p) => ({ target: `http://a/healthz?x=${p}`, host: "a" })],
  ["absolute-form other host", (p) => ({ target: `http://healthz${p}`, host: "a" })],
  ["Host with a path", (p) => ({ target: p, host: "a/healthz" })],
  ["Host with userinfo", (p) => ({ target: p, host: "x@healthz" })],
  ["Host with a query", (p) => ({ target: p, host: "a?/healthz" })],
  ["plain, short Host", (p) => ({ target: p, host: "a" })],
];

test("no trick reaches a protected route without the token: 401 (or 400 for a malformed Host), never 2xx, 404 or 5xx", async () => {
  const results = await Promise.all(
    targets().flatMap((t) =>
      tricks.map(async ([name, trick]) => {
        const { target, host } = trick(t.path);
        const res = await rawRequest(srv.httpPort, request(t.method, target, { Host: host, "content-type": "application/json" }, t.body));
        return { what: `${name}: ${t.method} ${target} Host: ${host}`, res };
      }),
    ),
  );
  // A GET whose path really is /healthz or /readyz gets the health answer (the query is just a query).
  const isHealth = (r: { status: number; body: string }) => r.status === 200 && /^\{"status":"(ok|ready)"\}$/.test(r.body);
  const bad = results.filter(({ res }) => res.status !== 401 && res.status !== 400 && !isHealth(res)).map(({ what, res }) => `${what} -> ${res.status} ${res.body.slice(0, 80)}`);
  expect(bad).toEqual([]);
  for (const { res } of results) {
    if (res.status !== 401 || res.body === "") continue;
    const body = JSON.parse(res.body);
    expect(body).toMatchObject({ success: false, result: null, messages: [] });
    expect(body.errors[0].code).toBe(10000);
  }
  // Nothing happened: no table, no namespace, no key, no mode change.
  const sql = await fetch(`${srv.httpUrl}/sql`, { method: "POST", headers: AUTH, body: JSON.stringify({ query: "select count(*)::int as n from pg_tables where tablename like 'pwned%'" }) });
  expect(((await sql.json()) as { rows: Array<{ n: number }> }).rows[0]!.n).toBe(0);
  const list = (await (await fetch(`${srv.httpUrl}${NS_BASE}?per_page=100`, { headers: AUTH })).json()) as { result: Array<{ title: string }> };
  expect(list.result.map((n) => n.title)).not.toContain("pwned");
  expect((await fetch(`${srv.httpUrl}${NS_BASE}/${ns}/values/pwned`, { headers: AUTH })).status).toBe(404);
  const mode = (await (await fetch(`${srv.httpUrl}/admin/kv/namespaces/${ns}/replication`, { headers: AUTH })).json()) as { result: { override: string | null } };
  expect(mode.result.override).toBeNull();
});

test("GET and HEAD /healthz and /readyz are open, with any Host, including a short one", async () => {
  for (const host of ["kv", "a", "localhost:8787", "127.0.0.1"]) {
    for (const path of ["/healthz", "/readyz"]) {
      expect((await rawRequest(srv.httpPort, request("GET", path, { Host: host }))).status).toBe(200);
      expect((await rawRequest(srv.httpPort, request("HEAD", path, { Host: host }))).status).toBe(200);
    }
  }
  const body = JSON.parse((await rawRequest(srv.httpPort, request("GET", "/healthz", { Host: "kv" }))).body);
  expect(body.status).toBe("ok");
});

test("other methods on the open routes need the token", async () => {
  for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
    expect((await rawRequest(srv.httpPort, request(method, "/healthz", { Host: "kv" }, "{}"))).status).toBe(401);
    expect((await rawRequest(srv.httpPort, request(method, "/readyz", { Host: "kv" }, "{}"))).status).toBe(401);
  }
});

test("with the token, a short Host works on every route", async () => {
  const list = await rawRequest(srv.httpPort, request("GET", NS_BASE, { Host: "kv", ...AUTH }));
  expect(list.status).toBe(200);
  expect(JSON.parse(list.body).success).toBe(true);
  const sql = await rawRequest(srv.httpPort, request("POST", "/sql", { Host: "a", ...AUTH, "content-type": "application/json" }, JSON.stringify({ query: "select 1 as one" })));
  expect(sql.status).toBe(200);
  expect(JSON.parse(sql.body).rows).toEqual([{ one: 1 }]);
  const put = await rawRequest(srv.httpPort, request("PUT", `${NS_BASE}/${ns}/values/short-host`, { Host: "kv", ...AUTH }, "v"));
  expect(put.status).toBe(200);
  const get = await rawRequest(srv.httpPort, request("GET", `${NS_BASE}/${ns}/values/short-host`, { Host: "kv", ...AUTH }));
  expect(get.body).toBe("v");
});

test("an unknown route is 401 without the token (the route table is not shown) and a 404 envelope with it", async () => {
  for (const path of ["/nope", "/client/v4/nope", "/admin", "/healthz/x", "/sql/x", `${NS_BASE}/${ns}/nope`]) {
    const anon = await fetch(`${srv.httpUrl}${path}`);
    expect(anon.status).toBe(401);
    expect(((await anon.json()) as { errors: Array<{ code: number }> }).errors[0]!.code).toBe(10000);
    const authed = await fetch(`${srv.httpUrl}${path}`, { headers: AUTH });
    expect(authed.status).toBe(404);
    expect(await authed.json()).toMatchObject({ success: false, result: null, errors: [{ code: 7003 }] });
  }
});

test("a wrong token is 403, a missing or malformed one 401, both with code 10000", async () => {
  for (const [header, status] of [[undefined, 401], ["Bearer wrong-token-wrong-token", 403], ["Basic abc", 403], ["Bearer", 403], [`bearer ${TEST_TOKEN}x`, 403]] as const) {
    const res = await fetch(`${srv.httpUrl}/metrics`, { headers: header ? { authorization: header } : {} });
    expect(res.status).toBe(status);
    expect(((await res.json()) as { errors: Array<{ code: number }> }).errors[0]!.code).toBe(10000);
  }
  expect((await fetch(`${srv.httpUrl}/metrics`, { headers: { authorization: `bearer ${TEST_TOKEN}` } })).status).toBe(200);
});

test("input checks never answer before authentication: bad ids, keys and params are 401 without the token", async () => {
  const paths = [
    `${NS_BASE}/%00/keys`,
    "/client/v4/accounts/%00/storage/kv/namespaces",
    "/admin/kv/namespaces/%00/replication",
    `${NS_BASE}/${ns}/values/%FF`,
    `${NS_BASE}/${ns}/keys?limit=0&cursor=%FF`,
    `${NS_BASE}/${ns}/values/${"k".repeat(600)}`,
  ];
  for (const path of paths) {
    const res = await fetch(`${srv.httpUrl}${path}`);
    expect(res.status).toBe(401);
  }
  const bulk = await fetch(`${srv.httpUrl}${NS_BASE}/${ns}/bulk`, { method: "PUT", body: "[".repeat(100_000) });
  expect(bulk.status).toBe(401);
});
