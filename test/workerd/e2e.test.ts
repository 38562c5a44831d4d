// Unchanged Worker code in real workerd, with env.KV and env.HYPERDRIVE served by a real kvdrive (embedded test
// Postgres, free ports). The config comes from `bun run kvdrive workerd-config`; the Worker (fixtures/worker.ts,
// bundled with postgres.js) is driven over HTTP. Fails, never skips, when workerd is not installed.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fs from "node:fs";
import path from "node:path";
import postgres from "postgres";
import { KVClient } from "../../src/client.ts";
import { freePort } from "../../src/embedded/postgres.ts";
import { bundleWorker, findWorkerd, serveWorkerd, type WorkerdProcess } from "../../src/workerd/runtime.ts";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

const root = path.resolve(import.meta.dir, "../..");
const ACCOUNT = "acc-workerd";
const MiB = 1024 * 1024;
const UNKNOWN_NS = "0123456789abcdef0123456789abcdef";

let pg: TestPostgres;
let srv: TestServer;
let dir: string;
let nsId: string;
let configText: string;
let workerd: WorkerdProcess;
let workerUrl: string;
let kvClient: KVClient;

const rest = (p: string, init: RequestInit = {}) =>
  fetch(`${srv.httpUrl}/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces${p}`, { ...init, headers: { authorization: `Bearer ${TEST_TOKEN}`, ...(init.headers as Record<string, string>) } });

async function cli(args: string[], env: Record<string, string> = {}) {
  const p = Bun.spawn(["bun", "src/cli.ts", ...args], {
    cwd: root,
    env: { ...process.env, KVDRIVE_DATA_DIR: srv.config.dataDir, KVDRIVE_API_TOKEN: TEST_TOKEN, ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { out, err, code };
}

/** One call of the Worker: {result} or {error, name}. */
async function worker(route: "/kv" | "/sql", call: unknown): Promise<{ result?: any; error?: string; name?: string }> {
  const res = await fetch(`${workerUrl}${route}`, { method: "POST", body: JSON.stringify(call) });
  return (await res.json()) as { result?: any; error?: string };
}
const kv = (call: unknown) => worker("/kv", call);
async function ok(call: unknown) {
  const r = await kv(call);
  expect(r.error).toBeUndefined();
  return r.result;
}

beforeAll(async () => {
  const bin = await findWorkerd(); // throws (the suite fails) when the devDependency is missing
  expect(fs.existsSync(bin.path)).toBe(true);
  pg = await startTestPostgres();
  srv = await startTestServer(pg.url);
  dir = tempDir("kvdrive-workerd-");
  const origin = postgres(pg.url, { max: 1, onnotice: () => {} });
  await origin`create table worker_items (id serial primary key, name text not null)`;
  await origin`insert into worker_items (name) values ('one'), ('two')`;
  await origin.end();

  const created = await rest("", { method: "POST", body: JSON.stringify({ title: "worker-e2e" }) });
  nsId = ((await created.json()) as { result: { id: string } }).result.id;
  kvClient = new KVClient({ baseURL: `${srv.httpUrl}/client/v4`, apiToken: TEST_TOKEN, accountId: ACCOUNT, namespaceId: nsId });

  const module = await bundleWorker(path.join(import.meta.dir, "fixtures/worker.ts"), dir);
  const port = await freePort();
  const configFile = path.join(dir, "config.capnp");
  const res = await cli([
    "workerd-config", module, "--port", String(port), "--out", configFile, "--account", ACCOUNT,
    "--kv", `KV=${nsId}`, "--kv", "CREATED=made-by-workerd-config", "--create", "--hyperdrive", "HYPERDRIVE=postgres",
  ]);
  expect(res.err).toContain("wrote");
  expect(res.code).toBe(0);
  configText = fs.readFileSync(configFile, "utf8");
  workerd = serveWorkerd(bin, configFile, port, { stdio: "pipe" });
  await workerd.ready;
  workerUrl = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await workerd?.stop();
  await srv?.destroy();
  await pg?.destroy();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe("workerd-config", () => {
  test("binds an id as given and a title it created, with the token, namespace and pooler password", async () => {
    const list = (await (await rest("?per_page=100")).json()) as { result: Array<{ id: string; title: string }> };
    const made = list.result.find((n) => n.title === "made-by-workerd-config");
    expect(made).toBeDefined();
    expect(configText).toContain(`(name = "X-Kvdrive-Namespace", value = "${nsId}")`);
    expect(configText).toContain(`(name = "X-Kvdrive-Namespace", value = "${made!.id}")`);
    expect(configText).toContain(`value = "Bearer ${TEST_TOKEN}"`);
    expect(configText).toContain(`password = ${JSON.stringify(new URL(pg.url).password)}`);
    expect(configText).toContain(`address = "127.0.0.1:${srv.pgPort}", tcp = ()`);
    expect(configText).toMatch(/sockets = \[\(name = "http", address = "127\.0\.0\.1:\d+", http = \(\), service = "main"\)\]/);
    // A title that does not exist, without --create, is refused naming it.
    const missing = await cli(["workerd-config", "test/workerd/fixtures/worker.ts", "--kv", "KV=no-such-title", "--account", ACCOUNT]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain('no namespace with the id or title "no-such-title" in account "acc-workerd"');
    const bad = await cli(["workerd-config", "w.js", "--kv", "not-an-identifier=x"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("is not a JavaScript identifier");
    const noModule = await cli(["workerd-config", "no-such-worker.js", "--kv", `KV=${nsId}`]);
    expect(noModule.code).toBe(2);
    expect(noModule.err).toContain("the Worker module no-such-worker.js does not exist");
  });
});

describe("a config written by hand", () => {
  test("the default proxy-style external service (no style = host) and lowercase header names work too; an unknown namespace is an error the Worker sees", async () => {
    const bin = await findWorkerd();
    const port = await freePort();
    const file = path.join(dir, "by-hand.capnp");
    const created = /kv-CREATED[\s\S]*?X-Kvdrive-Namespace", value = "([0-9a-f]{32})"/.exec(configText)![1]!;
    fs.writeFileSync(file, configText.replace(created, UNKNOWN_NS).replace("style = host, ", "").replace('name = "Authorization"', 'name = "authorization"').replace(/address = "127\.0\.0\.1:\d+", http = \(\)/, `address = "127.0.0.1:${port}", http = ()`));
    const other = serveWorkerd(bin, file, port, { stdio: "pipe" });
    try {
      await other.ready;
      const call = async (body: unknown) => (await (await fetch(`http://127.0.0.1:${port}/kv`, { method: "POST", body: JSON.stringify(body) })).json()) as { result?: any; error?: string; name?: string };
      expect(await call({ op: "put", key: "hand:a/b c+d", value: "by hand", options: { metadata: { h: 1 } } })).toEqual({ result: null });
      expect(await call({ op: "getWithMetadata", key: "hand:a/b c+d" })).toEqual({ result: { value: "by hand", metadata: { h: 1 }, cacheStatus: null } });
      expect((await call({ op: "list", options: { prefix: "hand:" } })).result.keys).toEqual([{ name: "hand:a/b c+d", metadata: { h: 1 } }]);
      expect((await call({ op: "put", key: "hand:ttl", value: "v", options: { expirationTtl: 1 } })).error).toMatch(/^KV PUT failed: 400 /);
      // CREATED points at a namespace that does not exist here: the Worker is told so.
      expect(await call({ binding: "CREATED", op: "put", key: "k", value: "v" })).toEqual({ error: `KV PUT failed: 404 namespace "${UNKNOWN_NS}" not found`, name: "Error" });
      expect((await call({ binding: "CREATED", op: "list" })).error).toBe(`KV GET failed: 404 namespace "${UNKNOWN_NS}" not found`);
    } finally {
      await other.stop();
    }
  });
});

describe("env.KV in workerd", () => {
  test("put a string with expirationTtl and metadata; get as text, json, arrayBuffer and stream; getWithMetadata", async () => {
    await ok({ op: "put", key: "doc:1", value: JSON.stringify({ a: 1, s: "é" }), options: { expirationTtl: 3600, metadata: { kind: "doc", n: 1 } } });
    expect(await ok({ op: "get", key: "doc:1" })).toBe('{"a":1,"s":"é"}');
    expect(await ok({ op: "get", key: "doc:1", options: "json" })).toEqual({ a: 1, s: "é" });
    expect(await ok({ op: "get", key: "doc:1", options: { type: "arrayBuffer", cacheTtl: 60 } })).toEqual({ arrayBuffer: Buffer.from('{"a":1,"s":"é"}').toString("base64") });
    expect(await ok({ op: "get", key: "doc:1", options: { type: "stream" } })).toEqual({ stream: '{"a":1,"s":"é"}' });
    expect(await ok({ op: "getWithMetadata", key: "doc:1", options: "json" })).toEqual({ value: { a: 1, s: "é" }, metadata: { kind: "doc", n: 1 }, cacheStatus: null });
    expect(await ok({ op: "getWithMetadata", key: "missing" })).toEqual({ value: null, metadata: null, cacheStatus: null });
    expect(await ok({ op: "get", key: "missing" })).toBeNull();
    await ok({ op: "put", key: "empty", value: "" });
    expect(await ok({ op: "get", key: "empty" })).toBe("");
    const listed = await ok({ op: "list", options: { prefix: "doc:" } });
    expect(listed.keys).toEqual([{ name: "doc:1", expiration: expect.any(Number), metadata: { kind: "doc", n: 1 } }]);
    expect(listed.keys[0].expiration).toBeGreaterThan(Date.now() / 1000 + 3500);
  });

  test("put an ArrayBuffer with an absolute expiration, and a stream of unknown length", async () => {
    const bytes = new Uint8Array([0, 1, 255, 254, 10, 13]);
    const expiration = Math.floor(Date.now() / 1000) + 7200;
    await ok({ op: "put", key: "bin:1", value: Buffer.from(bytes).toString("base64"), valueKind: "buffer", options: { expiration } });
    expect(await ok({ op: "get", key: "bin:1", options: "arrayBuffer" })).toEqual({ arrayBuffer: Buffer.from(bytes).toString("base64") });
    const chunks = Array.from({ length: 40 }, (_, i) => `chunk-${i}-${"x".repeat(1000)};`);
    await ok({ op: "put", key: "stream:1", value: chunks, valueKind: "stream", options: { metadata: "a string" } });
    expect(await ok({ op: "getWithMetadata", key: "stream:1", options: "stream" })).toEqual({ value: { stream: chunks.join("") }, metadata: "a string", cacheStatus: null });
    const listed = await ok({ op: "list", options: { prefix: "bin:" } });
    expect(listed.keys).toEqual([{ name: "bin:1", expiration }]);
    // 3 MiB: many chunks through the listener, and a value kept in the blob store (over 128 KiB).
    const large = new Uint8Array(3 * MiB).map((_, i) => (i * 31) % 251);
    await ok({ op: "put", key: "bin:large", value: Buffer.from(large).toString("base64"), valueKind: "buffer" });
    const back = await ok({ op: "get", key: "bin:large", options: "arrayBuffer" });
    expect(Buffer.from(back.arrayBuffer, "base64").equals(Buffer.from(large))).toBe(true);
    // Read back through the REST API: the same bytes and expiration.
    const res = await rest(`/${nsId}/values/bin%3A1`);
    expect(new Uint8Array(await res.arrayBuffer())).toEqual(bytes);
    expect(res.headers.get("expiration")).toBe(String(expiration));
  });

  test("get and getWithMetadata of an array of keys", async () => {
    await ok({ op: "put", key: "many:a", value: '{"x":1}', options: { metadata: { m: "a" } } });
    await ok({ op: "put", key: "many:b", value: "plain" });
    expect(await ok({ op: "get", key: ["many:a", "many:b", "many:none"] })).toEqual({ map: { "many:a": '{"x":1}', "many:b": "plain", "many:none": null } });
    expect(await ok({ op: "get", key: ["many:a"], options: "json" })).toEqual({ map: { "many:a": { x: 1 } } });
    expect(await ok({ op: "getWithMetadata", key: ["many:a", "many:b", "many:none"] })).toEqual({
      map: { "many:a": { value: '{"x":1}', metadata: { m: "a" } }, "many:b": { value: "plain", metadata: null }, "many:none": null },
    });
    const tooMany = await kv({ op: "get", key: Array.from({ length: 101 }, (_, i) => `k${i}`) });
    expect(tooMany.error).toMatch(/^KV GET_BULK failed: 400 .*101 keys.*1\.\.100/);
  });

  test("keys with '/', space, '?', '%', '#', '+', ':' and non-ASCII round-trip, and delete", async () => {
    const keys = ["a/b", "sp ace", "what?x=1", "100%", "#hash", "a+b", "c:d", "ключ", "日本/語 ?#%+:", "emoji🙂"];
    for (const [i, key] of keys.entries()) await ok({ op: "put", key: `odd:${key}`, value: `v${i}` });
    for (const [i, key] of keys.entries()) expect(await ok({ op: "get", key: `odd:${key}` })).toBe(`v${i}`);
    const listed = await ok({ op: "list", options: { prefix: "odd:" } });
    expect(listed.keys.map((k: { name: string }) => k.name).sort()).toEqual(keys.map((k) => `odd:${k}`).sort());
    expect(listed.list_complete).toBe(true);
    // The same keys through the REST API client.
    expect(await kvClient.get("odd:a+b")).toBe(`v${keys.indexOf("a+b")}`);
    expect(await kvClient.get("odd:日本/語 ?#%+:")).toBe(`v${keys.indexOf("日本/語 ?#%+:")}`);
    for (const key of keys) await ok({ op: "delete", key: `odd:${key}` });
    for (const key of keys) expect(await ok({ op: "get", key: `odd:${key}` })).toBeNull();
    expect((await ok({ op: "list", options: { prefix: "odd:" } })).keys).toEqual([]);
  });

  test("list with prefix, limit and cursor until list_complete", async () => {
    for (let i = 0; i < 7; i++) await ok({ op: "put", key: `page:${i}`, value: String(i), options: i % 2 ? { metadata: { i } } : undefined });
    await ok({ op: "put", key: "pagf", value: "outside the prefix" });
    const names: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    for (;;) {
      const r = await ok({ op: "list", options: { prefix: "page:", limit: 3, cursor } });
      pages++;
      names.push(...r.keys.map((k: { name: string }) => k.name));
      if (r.list_complete) {
        expect(r.cursor).toBeUndefined();
        break;
      }
      expect(r.keys.length).toBe(3);
      cursor = r.cursor;
    }
    expect(pages).toBe(3);
    expect(names).toEqual(Array.from({ length: 7 }, (_, i) => `page:${i}`));
    const bad = await kv({ op: "list", options: { prefix: "page:", cursor: "not-a-cursor" } });
    expect(bad.error).toMatch(/^KV GET failed: 400 invalid list cursor/);
  });

  test("the limits are errors the Worker sees, with the status and Miniflare's words", async () => {
    const big = await kv({ op: "put", key: "big", value: "x".repeat(25 * MiB + 1) });
    expect(big).toEqual({ error: "KV PUT failed: 413 Value length of 26214401 exceeds limit of 26214400.", name: "Error" });
    const meta = await kv({ op: "put", key: "meta", value: "v", options: { metadata: { pad: "m".repeat(1100) } } });
    expect(meta.error).toBe("KV PUT failed: 413 Metadata length of 1110 exceeds limit of 1024.");
    const ttl = await kv({ op: "put", key: "ttl", value: "v", options: { expirationTtl: 59 } });
    expect(ttl.error).toMatch(/^KV PUT failed: 400 Invalid expiration_ttl of "?59"?\. Expiration TTL must be at least 60\.$/);
    const exp = await kv({ op: "put", key: "exp", value: "v", options: { expiration: Math.floor(Date.now() / 1000) + 10 } });
    expect(exp.error).toMatch(/^KV PUT failed: 400 Invalid expiration of "?\d+"?\. Expiration times must be at least 60 seconds in the future\.$/);
    const limit = await kv({ op: "list", options: { limit: 1001 } });
    expect(limit.error).toMatch(/^KV GET failed: 400 .*1001.*at most 1000/);
    const longKey = await kv({ op: "put", key: "k".repeat(513), value: "v" });
    expect(longKey.error).toBe("KV PUT failed: 414 UTF-8 encoded length of 513 exceeds key length limit of 512.");
    // Nothing refused was written.
    for (const key of ["big", "meta", "ttl", "exp"]) expect(await ok({ op: "get", key })).toBeNull();
  });

  test("a value written through the Worker reads back through REST and KVClient, and the other way round", async () => {
    // Metadata travels in an HTTP header: non-ASCII text must survive both ways.
    await ok({ op: "put", key: "shared:from-worker", value: "written in workerd", options: { metadata: { by: "wörker 日本 🙂" } } });
    expect(await (await rest(`/${nsId}/values/shared%3Afrom-worker`)).text()).toBe("written in workerd");
    expect(await (await rest(`/${nsId}/metadata/shared%3Afrom-worker`)).json()).toMatchObject({ result: { by: "wörker 日本 🙂" } });
    expect(await kvClient.getWithMetadata("shared:from-worker")).toMatchObject({ value: "written in workerd", metadata: { by: "wörker 日本 🙂" } });

    await kvClient.put("shared:from-client", JSON.stringify({ by: "client" }), { metadata: { v: 2, s: "clïent 🙂" }, expirationTtl: 600 });
    expect(await ok({ op: "getWithMetadata", key: "shared:from-client", options: "json" })).toEqual({ value: { by: "client" }, metadata: { v: 2, s: "clïent 🙂" }, cacheStatus: null });
    expect((await ok({ op: "list", options: { prefix: "shared:from-client" } })).keys).toEqual([{ name: "shared:from-client", expiration: expect.any(Number), metadata: { v: 2, s: "clïent 🙂" } }]);
    await rest(`/${nsId}/values/shared%3Afrom-rest`, { method: "PUT", body: "via REST" });
    expect(await ok({ op: "get", key: "shared:from-rest" })).toBe("via REST");
    await kvClient.delete("shared:from-worker");
    expect(await ok({ op: "get", key: "shared:from-worker" })).toBeNull();
  });
});

describe("env.HYPERDRIVE in workerd (postgres.js through the pooler)", () => {
  const cacheHits = async () => {
    const res = await fetch(`${srv.httpUrl}/admin/pools`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
    const stats = (await res.json()) as { pools: Array<{ database: string; cache: Record<string, number> }> };
    return stats.pools.filter((p) => p.database === "postgres").reduce((n, p) => n + (p.cache.hit ?? 0), 0);
  };
  const sql = (call: unknown) => worker("/sql", call);

  test("a parameterised read is served from the query cache when repeated; a write invalidates it", async () => {
    const one = [{ id: 1, name: "one" }];
    const uno = [{ id: 1, name: "uno" }];
    const hitsBefore = await cacheHits();
    const reads = await sql({ op: "steps", steps: [{ read: 1 }, { read: 1 }, { read: 1 }] });
    expect(reads.result).toEqual([one, one, one]);
    expect(await cacheHits()).toBeGreaterThan(hitsBefore);
    // Each request opens a fresh postgres.js connection (Parse, Describe, Flush, then Bind, Execute, Sync): the
    // next request's first read is answered from the cache too, as Hyperdrive does across requests.
    const hitsAcross = await cacheHits();
    expect((await sql({ op: "steps", steps: [{ read: 1 }] })).result).toEqual([one]);
    expect(await cacheHits()).toBe(hitsAcross + 1);
    // The answer "one" is cached now; the write through the pooler drops it, so every later read is fresh,
    // on this connection and on the next request's.
    const written = await sql({ op: "steps", steps: [{ write: [1, "uno"] }, { read: 1 }, { read: 1 }] });
    expect(written.result).toEqual([1, uno, uno]);
    expect((await sql({ op: "steps", steps: [{ read: 1 }, { read: 1 }] })).result).toEqual([uno, uno]);
  });

  test("a transaction sees its own insert and commits it", async () => {
    const r = await sql({ op: "transaction", name: "in-tx" });
    expect(r.error).toBeUndefined();
    expect(r.result).toMatchObject({ n: 1 });
    expect(r.result.connection).toMatch(/^postgres(ql)?:\/\/postgres:\*\*\*@[0-9a-f]+\.hyperdrive\.local:\d+\/postgres/);
    const origin = postgres(pg.url, { max: 1 });
    expect((await origin`select name from worker_items where id = ${r.result.id}`)[0]).toEqual({ name: "in-tx" });
    await origin.end();
  });
});

describe("kvdrive dev", () => {
  test("starts kvdrive and workerd, serves a request through the Worker, and SIGINT stops both", async () => {
    const dataDir = tempDir("kvdrive-dev-");
    const port = await freePort();
    const proc = Bun.spawn(["bun", "src/cli.ts", "dev", "examples/worker.ts", "--port", String(port)], {
      cwd: root,
      env: { ...process.env, KVDRIVE_DATA_DIR: dataDir, DATABASE_URL: pg.url, KVDRIVE_HTTP_PORT: "0", KVDRIVE_PG_PORT: "0", KVDRIVE_WORKERD_PORT: "0", KVDRIVE_API_TOKEN: "dev-token-0123456789" },
      stdout: "pipe",
      stderr: "pipe",
    });
    let err = "";
    const reader = proc.stderr.getReader();
    const decoder = new TextDecoder();
    let workerdPid = 0;
    while (!workerdPid) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`kvdrive dev exited before it was ready:\n${err}`);
      err += decoder.decode(value);
      const m = /workerd pid (\d+)/.exec(err);
      if (m) workerdPid = Number(m[1]);
    }
    expect(err).toContain("starting one");
    const first = (await (await fetch(`http://127.0.0.1:${port}/visit?page=dev`)).json()) as { visits: number; database: { page: string } };
    expect(first.visits).toBe(1);
    expect(first.database.page).toBe("dev");
    const again = (await (await fetch(`http://127.0.0.1:${port}/visit?page=dev`)).json()) as { visits: number; lastVisit: string | null };
    expect(again.visits).toBe(2);
    expect(again.lastVisit).not.toBeNull();
    const instance = JSON.parse(fs.readFileSync(path.join(dataDir, "instance.json"), "utf8")) as { pid: number; http: string };
    expect(instance.pid).toBe(proc.pid);

    proc.kill("SIGINT");
    expect(await proc.exited).toBe(0);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(alive(workerdPid)).toBe(false);
    expect(alive(proc.pid)).toBe(false);
    expect(fs.existsSync(path.join(dataDir, "instance.json"))).toBe(false);
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow();
    await expect(fetch(`${instance.http}/healthz`)).rejects.toThrow();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
});
