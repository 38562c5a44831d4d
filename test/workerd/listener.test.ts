// The workerd KV-binding listener without workerd: its authentication gate, namespace header, body bounds and
// the request shapes of the capture in /work/shared/reference (replayed as pure parsing).
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { ApiError } from "../../src/errors.ts";
import { asciiJson, parseOperation, reasonPhrase, utf8Header } from "../../src/workerd/protocol.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

describe("protocol parsing", () => {
  test("keys are the raw path decoded once; '+' and ':' stay themselves; list and bulk get are told apart", () => {
    expect(parseOperation("PUT", "/a%2Fb%20c%3Fd%25e%23f+%C3%BC?urlencoded=true")).toMatchObject({ op: "put", key: "a/b c?d%e#f+ü" });
    expect(parseOperation("DELETE", "/a%2Fb%20c%3Fd%25e%23f%2B%C3%BC?urlencoded=true")).toEqual({ op: "delete", key: "a/b c?d%e#f+ü" });
    expect(parseOperation("GET", "/user:1?urlencoded=true&cache_ttl=60")).toMatchObject({ op: "get", key: "user:1" });
    expect(parseOperation("GET", "https://fake-host/user%3A1?urlencoded=true")).toMatchObject({ op: "get", key: "user:1" });
    const list = parseOperation("GET", "/?key_count_limit=5&prefix=a%2Bb+c%2F%C3%A9%26x%3Dy");
    expect(list.op).toBe("list");
    expect(list.op === "list" && list.query.get("prefix")).toBe("a+b c/é&x=y");
    expect(parseOperation("GET", "https://fake-host?prefix=").op).toBe("list");
    expect(parseOperation("POST", "/bulk/get")).toEqual({ op: "bulk_get" });
    expect(parseOperation("GET", "/bulk%2Fget?urlencoded=true")).toMatchObject({ op: "get", key: "bulk/get" });
    expect(() => parseOperation("PATCH", "/k?urlencoded=true")).toThrow(ApiError);
    expect(() => parseOperation("GET", "/%E0%A4%A?urlencoded=true")).toThrow(/Could not URL-decode key name/);
    expect(() => parseOperation("GET", "/..?urlencoded=true")).toThrow(/Illegal key name/);
  });

  test("every request of the capture parses to an operation", async () => {
    const lines = (await Bun.file(new URL("./fixtures/captured-requests.jsonl", import.meta.url)).text()).trim().split("\n").map((l) => JSON.parse(l));
    const requests = lines.filter((l) => l.method);
    expect(requests.length).toBeGreaterThan(20);
    for (const r of requests) {
      const op = parseOperation(r.method, r.url);
      expect(op.op).toBe(r.method === "POST" ? "bulk_get" : r.method === "DELETE" ? "delete" : r.url.startsWith("/?") || r.url === "/" ? "list" : r.method === "PUT" ? "put" : "get");
    }
  });

  test("metadata headers: non-ASCII goes out escaped, and comes in as the UTF-8 it was sent as", () => {
    const json = JSON.stringify({ s: "é日本🙂\u007f" });
    expect(asciiJson(json)).toMatch(/^[\x20-\x7e]+$/);
    expect(JSON.parse(asciiJson(json))).toEqual(JSON.parse(json));
    expect(utf8Header(Buffer.from(json, "utf8").toString("latin1"))).toBe(json);
    expect(utf8Header("plain")).toBe("plain");
    expect(utf8Header("already é日本")).toBe("already é日本");
  });

  test("reason phrases are printable ASCII and bounded", () => {
    expect(reasonPhrase('key not found: "ü🙂"')).toBe('key not found: "\\u00fc\\ud83d\\ude42"');
    expect(reasonPhrase("a\r\nb")).toBe("a\\u000d\\u000ab");
    expect(reasonPhrase("x".repeat(5000)).length).toBe(1024);
  });
});

describe("listener", () => {
  let pg: TestPostgres;
  let srv: TestServer;
  let base: string;
  let ns: string;
  beforeAll(async () => {
    pg = await startTestPostgres();
    srv = await startTestServer(pg.url, { httpIdleTimeoutSeconds: 2 });
    expect(srv.workerdPort).toBeGreaterThan(0);
    base = `http://127.0.0.1:${srv.workerdPort}`;
    const res = await fetch(`${srv.httpUrl}/client/v4/accounts/acc-listener/storage/kv/namespaces`, {
      method: "POST", headers: { authorization: `Bearer ${TEST_TOKEN}` }, body: JSON.stringify({ title: "listener" }),
    });
    ns = ((await res.json()) as { result: { id: string } }).result.id;
  });
  afterAll(async () => {
    await srv?.destroy();
    await pg?.destroy();
  });

  const auth = (namespace = ns) => ({ authorization: `Bearer ${TEST_TOKEN}`, "x-kvdrive-namespace": namespace });

  test("a missing or wrong token is 401 with the reason in the phrase and the envelope", async () => {
    const none = await fetch(`${base}/k?urlencoded=true`, { headers: { "x-kvdrive-namespace": ns } });
    expect(none.status).toBe(401);
    expect(none.statusText).toContain("Authorization: Bearer");
    expect(await none.json()).toEqual({ success: false, errors: [{ code: 10000, message: expect.stringContaining("Authentication error") }], messages: [], result: null });
    const wrong = await fetch(`${base}/k?urlencoded=true`, { method: "PUT", headers: { authorization: "Bearer not-the-token-at-all", "x-kvdrive-namespace": ns }, body: "v" });
    expect(wrong.status).toBe(401);
    expect(wrong.statusText).toContain("not valid");
    // Nothing was written by the refused PUT.
    const missing = await fetch(`${base}/k?urlencoded=true`, { headers: auth() });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ success: false, errors: [{ code: 10009, message: 'key not found: "k"' }], messages: [], result: null });
  });

  test("the namespace header is required, and an unknown namespace is 404 saying so", async () => {
    const missing = await fetch(`${base}/?prefix=`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
    expect(missing.status).toBe(400);
    expect(missing.statusText).toContain("X-Kvdrive-Namespace header is missing");
    const unknown = await fetch(`${base}/k?urlencoded=true`, { method: "PUT", headers: auth("0123456789abcdef0123456789abcdef"), body: "v" });
    expect(unknown.status).toBe(404);
    expect(unknown.statusText).toBe('namespace "0123456789abcdef0123456789abcdef" not found');
    expect(((await unknown.json()) as { errors: Array<{ code: number }> }).errors[0]!.code).toBe(10013);
  });

  test("get returns metadata and expiration in headers: getWithMetadata is one round trip", async () => {
    const put = await fetch(`${base}/m%3A1?urlencoded=true&expiration_ttl=3600`, { method: "PUT", headers: { ...auth(), "cf-kv-metadata": '{"a":1}' }, body: "hello" });
    expect(put.status).toBe(200);
    const got = await fetch(`${base}/m:1?urlencoded=true`, { headers: auth() });
    expect(got.status).toBe(200);
    expect(got.headers.get("cf-kv-metadata")).toBe('{"a":1}');
    expect(Number(got.headers.get("cf-expiration"))).toBeGreaterThan(Date.now() / 1000 + 3500);
    expect(await got.text()).toBe("hello");
  });

  test("a value over 25 MiB is refused while it streams (413, Miniflare's words), and a declared one before", async () => {
    const MiB = 1024 * 1024;
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= 26 * MiB) return c.close();
        sent += MiB;
        c.enqueue(new Uint8Array(MiB));
      },
    });
    const streamed = await fetch(`${base}/big?urlencoded=true`, { method: "PUT", headers: auth(), body, duplex: "half" } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(streamed.statusText).toMatch(/^Value length of \d+ exceeds limit of 26214400\.$/);
    const declared = await fetch(`${base}/big?urlencoded=true`, { method: "PUT", headers: auth(), body: new Uint8Array(25 * MiB + 1) });
    expect(declared.status).toBe(413);
    expect(declared.statusText).toBe("Value length of 26214401 exceeds limit of 26214400.");
    const bulk = await fetch(`${base}/bulk/get`, { method: "POST", headers: { ...auth(), "content-type": "application/json" }, body: JSON.stringify({ keys: ["x".repeat(2 * MiB)] }) });
    expect(bulk.status).toBe(413);
    expect(bulk.statusText).toMatch(/exceeds limit of 1048576\.$/);
    // The listener still serves after refusing them.
    expect((await fetch(`${base}/big?urlencoded=true`, { headers: auth() })).status).toBe(404);
  });

  test("a request body that stalls, and a connection that says nothing, are closed after the idle timeout", async () => {
    const closed = (send: string) =>
      new Promise<string>((resolve) => {
        let got = "";
        const c = net.connect(srv.workerdPort!, "127.0.0.1", () => c.write(send));
        c.on("data", (d) => (got += d.toString()));
        c.on("close", () => resolve(got));
        c.on("error", () => {});
      });
    const head = `PUT /stall?urlencoded=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nX-Kvdrive-Namespace: ${ns}\r\nContent-Length: 100\r\n\r\n`;
    const [stalled, silent] = await Promise.all([closed(head + "only part of it"), closed("")]);
    expect(stalled).not.toContain("200");
    expect(silent).toBe("");
    expect((await fetch(`${base}/stall?urlencoded=true`, { headers: auth() })).status).toBe(404);
  });

  test("metadata, TTL and list limits are checked by the server with reasons the Worker can read", async () => {
    const meta = await fetch(`${base}/k?urlencoded=true`, { method: "PUT", headers: { ...auth(), "cf-kv-metadata": JSON.stringify({ x: "y".repeat(1100) }) }, body: "v" });
    expect([meta.status, meta.statusText]).toEqual([413, "Metadata length of 1108 exceeds limit of 1024."]);
    const badMeta = await fetch(`${base}/k?urlencoded=true`, { method: "PUT", headers: { ...auth(), "cf-kv-metadata": "{nope" }, body: "v" });
    expect(badMeta.status).toBe(400);
    const ttl = await fetch(`${base}/k?urlencoded=true&expiration_ttl=30`, { method: "PUT", headers: auth(), body: "v" });
    expect(ttl.status).toBe(400);
    expect(ttl.statusText).toMatch(/expiration_ttl of "?30"?\..* at least 60/);
    const limit = await fetch(`${base}/?key_count_limit=1001`, { headers: auth() });
    expect(limit.status).toBe(400);
    expect(limit.statusText).toMatch(/1001.*at most 1000/);
  });
});
