// A seeded HTTP fuzzer against a real kvdrive: random methods, request targets (route templates mutated, encodings,
// dot segments, the /healthz tricks, huge parts), headers (Host, Authorization, content types, lengths that do
// not match the body) and bodies (JSON, deep nesting, multipart, binary), with and without the token, over raw
// sockets. The oracle: never a 5xx, an envelope on every JSON error, never a success without the token, and the
// server keeps answering /healthz. FUZZ_SEED and FUZZ_CASES pick the run (`bun run fuzz` runs it long); a
// failure names the seed and case, and FUZZ_CASE=n replays that one case.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(600_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";
import { rng, type Rng } from "./rng.ts";

const SEED = Number(process.env.FUZZ_SEED ?? 20261202);
const CASES = Number(process.env.FUZZ_CASES ?? 3000);
const ONLY = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
const CONCURRENCY = 8;
const ACCOUNT = "acct-fuzz";

let pg: TestPostgres;
let srv: TestServer;
let ns: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  // A short delay and a small cap, so that both the delayed refusal and the 429 past the cap are exercised.
  srv = await startTestServer(pg.url, { authFailureDelayMs: 5, httpAuthFailureMaxPending: 4 });
  const auth = { authorization: `Bearer ${TEST_TOKEN}` };
  const base = `${srv.httpUrl}/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`;
  ns = ((await (await fetch(base, { method: "POST", headers: auth, body: JSON.stringify({ title: "fuzz" }) })).json()) as { result: { id: string } }).result.id;
  await fetch(`${base}/${ns}/bulk`, { method: "PUT", headers: auth, body: JSON.stringify(["a", "b", "a/b", "ü", "json"].map((key) => ({ key, value: key === "json" ? '{"x":1}' : key, metadata: { k: key } }))) });
}, 60_000);
afterAll(async () => {
  await srv?.destroy();
  await pg?.destroy();
}, 60_000);


const METHODS = ["GET", "GET", "HEAD", "POST", "POST", "PUT", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO", "get", "TRACE"];
const SEGMENTS = ["", ".", "..", "%2e%2e", "%2E", "%00", "%FF", "%ED%A0%80", "%F0%9F%98%80", "%2F", "%252F", "a%2Fb", "ü", "%C3%BC", "healthz", "sql", "%", "%zz", "+", "%20", "a%20b", "\u00e9", "*", "~", "@", "%0A", "%0D%0A"];
const QUERY_NAMES = ["limit", "cursor", "prefix", "expiration", "expiration_ttl", "cache_ttl", "page", "per_page", "order", "direction", "x", "", "%FF", "limit"];
const NUMBERS = ["0", "-1", "1", "60", "61", "1000", "1001", "1e9", "1.5", "NaN", "Infinity", "-0", "9223372036854775807", "9999999999999999999999", "9".repeat(400), "253402300799", "0x10", "%2070%20", "+70+", ""];
const HOSTS = ["kv", "a", "localhost", "127.0.0.1:8787", "[::1]", "a/b", "x@y", "a?b", "", "h".repeat(300), "kv:99999", "-", "a b", "a#b", "a\\b"];
/** Methods Bun's HTTP parser knows; it closes the connection on any other without an answer. */
const KNOWN_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]);
const CONTENT_TYPES = ["application/json", "text/plain", "multipart/form-data; boundary=XyZ", "multipart/form-data", "application/x-www-form-urlencoded", "application/octet-stream", "", "Multipart/Form-Data; boundary=XyZ", "application/json; charset=utf-16"];
const SQL = ["select 1", "select $1::int as n", "selec", "", "select repeat('x', 100000) as r", "select 1; select 2", "select '\u0000'", "show all", "select pg_backend_pid()"];

function templates(): string[] {
  const b = `/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`;
  return ["/healthz", "/readyz", "/metrics", "/sql", "/admin/pools", "/admin/kv", "/admin/kv/crawl", `/admin/kv/namespaces/${ns}/replication`, b, `${b}/${ns}`, `${b}/${ns}/values/a`, `${b}/${ns}/values/a%2Fb`, `${b}/${ns}/metadata/a`, `${b}/${ns}/keys`, `${b}/${ns}/bulk`, `${b}/${ns}/bulk/get`, `${b}/${ns}/bulk/delete`, "/nope", "/client/v4"];
}

function segment(r: Rng): string {
  if (r.chance(0.1)) return "k".repeat(r.pick([200, 513, 2000, 9000]));
  if (r.chance(0.2)) return Array.from({ length: 1 + r.int(4) }, () => r.pick(SEGMENTS)).join("");
  if (r.chance(0.1)) return r.int(1 << 30).toString(16).padStart(32, "0");
  return r.pick(SEGMENTS);
}

function path(r: Rng): string {
  let p = r.pick(templates());
  const parts = p.split("/");
  const mutations = r.int(3);
  for (let i = 0; i < mutations; i++) {
    const at = 1 + r.int(Math.max(1, parts.length - 1));
    switch (r.int(5)) {
      case 0: parts[at] = segment(r); break;
      case 1: parts.splice(at, 0, segment(r)); break;
      case 2: parts.push(segment(r)); break;
      case 3: parts[at] = (parts[at] ?? "").toUpperCase(); break;
      default: parts.splice(at, 1);
    }
  }
  p = parts.join("/");
  if (r.chance(0.05)) p = p.replaceAll("/", "%2F");
  if (r.chance(0.4)) {
    const n = 1 + r.int(4);
    p += "?" + Array.from({ length: n }, () => `${r.pick(QUERY_NAMES)}=${r.chance(0.6) ? r.pick(NUMBERS) : segment(r)}`).join("&");
  }
  if (r.chance(0.08)) p = `/healthz?x=${p}`;
  if (r.chance(0.04)) p = `/healthz/..${p}`;
  if (r.chance(0.04)) p = `http://${r.pick(["a", "kv", "evil"])}${p.startsWith("/") ? p : "/" + p}`;
  if (r.chance(0.02)) p = `//${p}`;
  return p;
}

function deep(r: Rng): string {
  const n = r.pick([10, 600, 20_000, 100_000]);
  return r.chance(0.5) ? "[".repeat(n) + "]".repeat(n) : '{"a":'.repeat(n) + "1" + "}".repeat(n);
}

function jsonValue(r: Rng, depth = 0): unknown {
  switch (depth > 3 ? r.int(4) : r.int(8)) {
    case 0: return r.pick([null, true, false]);
    case 1: return r.pick([0, -1, 60, 1.5, 1e300, -1e300, 9223372036854775807, 2 ** 53 + 1]);
    case 2: return r.pick(["", "a", "\ud800", "\udbff", "\u0000", "ü", "x".repeat(600), "k1AAAA", "..", "."]);
    case 3: return r.pick(NUMBERS);
    case 4: return Array.from({ length: r.int(4) }, () => jsonValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      const keys = ["key", "value", "metadata", "expiration", "expiration_ttl", "base64", "title", "keys", "type", "withMetadata", "query", "params", "mode", "__proto__", "constructor"];
      for (let i = r.int(5); i > 0; i--) o[r.pick(keys)] = jsonValue(r, depth + 1);
      return o;
    }
  }
}

function body(r: Rng, contentType: string): string | Uint8Array {
  switch (r.int(9)) {
    case 0: return "";
    case 1: return deep(r);
    case 2: return Uint8Array.from({ length: r.int(300) }, () => r.int(256));
    case 3: {
      const parts = Array.from({ length: r.int(4) }, () => {
        const name = r.pick(["value", "metadata", "metadata[a]", "metadata[__proto__][x]", `metadata${"[a]".repeat(r.pick([1, 600]))}`, "value", "", 'x"y']);
        const file = r.chance(0.3) ? `; filename="${r.pick(["f", "", "..\\x"])}"` : "";
        return `--XyZ\r\nContent-Disposition: form-data; name="${name}"${file}\r\n\r\n${r.chance(0.5) ? JSON.stringify(jsonValue(r)) : segment(r)}\r\n`;
      });
      return parts.join("") + (r.chance(0.8) ? "--XyZ--\r\n" : "");
    }
    case 4: return JSON.stringify(Array.from({ length: r.int(5) }, () => ({ key: jsonValue(r), value: r.chance(0.7) ? "v" : jsonValue(r), ...(r.chance(0.5) ? { [r.pick(["expiration", "expiration_ttl", "metadata", "base64"])]: jsonValue(r) } : {}) })));
    case 5: return JSON.stringify({ query: r.pick(SQL), params: r.chance(0.5) ? [jsonValue(r)] : undefined });
    case 6: return JSON.stringify({ keys: Array.from({ length: r.pick([0, 1, 3, 101]) }, () => jsonValue(r)), type: jsonValue(r), withMetadata: jsonValue(r) });
    case 7: return contentType.includes("json") ? "{" : "not json";
    default: return JSON.stringify(jsonValue(r));
  }
}

interface Case {
  bytes: Uint8Array;
  method: string;
  target: string;
  authed: boolean;
  /** The declared Content-Length differs from the body: the server may wait for bytes that never come. */
  mismatched: boolean;
}

function makeCase(index: number): Case {
  const r = rng(SEED ^ Math.imul(index + 1, 0x9e3779b1));
  const method = r.pick(METHODS);
  const target = path(r);
  const contentType = r.pick(CONTENT_TYPES);
  const b = method === "GET" || method === "HEAD" ? (r.chance(0.1) ? body(r, contentType) : "") : body(r, contentType);
  const payload = typeof b === "string" ? new TextEncoder().encode(b) : b;
  const authChoice = r.int(8);
  const authed = authChoice < 4;
  const headers: string[] = [];
  if (!r.chance(0.03)) headers.push(`Host: ${r.pick(HOSTS)}`);
  if (authed) headers.push(`Authorization: ${r.pick(["Bearer ", "bearer ", "Bearer  "])}${TEST_TOKEN}`);
  else if (authChoice === 4) headers.push(`Authorization: Bearer ${TEST_TOKEN}x`);
  else if (authChoice === 5) headers.push(`Authorization: ${r.pick(["Basic YTpi", "Bearer", "", "Bearer " + "t".repeat(5000), `Bearer ${TEST_TOKEN.slice(0, -1)}`])}`);
  if (contentType) headers.push(`Content-Type: ${contentType}`);
  let mismatched = false;
  if (r.chance(0.1)) {
    const declared = r.pick([0, Math.max(0, payload.length - 1), payload.length + 10]);
    mismatched = declared !== payload.length;
    headers.push(`Content-Length: ${declared}`);
  } else if (r.chance(0.05)) {
    headers.push("Transfer-Encoding: chunked");
    const enc = new TextEncoder();
    const chunked = Buffer.concat([enc.encode(`${payload.length.toString(16)}\r\n`), payload, enc.encode("\r\n0\r\n\r\n")]);
    return finish(method, target, headers, new Uint8Array(chunked), authed, false);
  } else if (payload.length || method === "POST" || method === "PUT") headers.push(`Content-Length: ${payload.length}`);
  if (r.chance(0.05)) headers.push(`X-Junk: ${"j".repeat(r.pick([10, 9000]))}`);
  if (r.chance(0.03)) headers.push(`Host: ${r.pick(HOSTS)}`); // a second Host
  if (r.chance(0.03)) headers.push("Expect: 100-continue");
  if (r.chance(0.02)) {
    headers.push("Transfer-Encoding: chunked"); // next to a Content-Length: the smuggling shape
    mismatched = true;
  }
  return finish(method, target, headers, payload, authed, mismatched);
}

function finish(method: string, target: string, headers: string[], payload: Uint8Array, authed: boolean, mismatched: boolean): Case {
  const head = new TextEncoder().encode(`${method} ${target} HTTP/1.1\r\n${headers.join("\r\n")}\r\nConnection: close\r\n\r\n`);
  const bytes = new Uint8Array(head.length + payload.length);
  bytes.set(head);
  bytes.set(payload, head.length);
  return { bytes, method, target, authed, mismatched };
}

interface Answer {
  status: number;
  head: string;
  body: string;
}

/** Sends the case and reads the answer; the client half-closes, so a server waiting for body bytes sees EOF. */
function send(c: Case): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(srv.httpPort, "127.0.0.1", () => {
      sock.write(c.bytes);
      if (c.mismatched) sock.end();
    });
    const timer = setTimeout(() => sock.destroy(), 15_000);
    sock.on("data", (d: Buffer) => chunks.push(d));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      // An interim 100 Continue (asked for with Expect) precedes the answer.
      const text = Buffer.concat(chunks).toString("utf8").replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, "");
      const sep = text.indexOf("\r\n\r\n");
      const head = sep < 0 ? text : text.slice(0, sep);
      let rest = sep < 0 ? "" : text.slice(sep + 4);
      if (/\r\ntransfer-encoding: *chunked/i.test(head)) rest = unchunk(rest);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: rest });
    });
  });
}

function unchunk(s: string): string {
  let out = "";
  for (let i = 0; ; ) {
    const eol = s.indexOf("\r\n", i);
    const n = eol < 0 ? 0 : parseInt(s.slice(i, eol), 16);
    if (!(n > 0)) return out;
    out += s.slice(eol + 2, eol + 2 + n);
    i = eol + 2 + n + 2;
  }
}

/** What is wrong with the answer, or null. */
function judge(c: Case, a: Answer): string | null {
  // Bun's parser closes the connection on a method it does not know, and may on a body shorter than declared.
  if (a.status === 0) return c.mismatched || !KNOWN_METHODS.has(c.method) ? null : "no answer";
  if (a.status >= 500) return `a ${a.status}`;
  const json = /\r\ncontent-type: *application\/json/i.test(a.head);
  // The path as the server sees it: dot segments (also encoded ones) resolved, as Bun does.
  let pathname = "";
  try {
    pathname = new URL(c.target, "http://kv").pathname.replace(/(.)\/$/, "$1"); // Elysia matches a trailing slash loosely
  } catch {}
  const openRoute = pathname === "/healthz" || pathname === "/readyz";
  if (a.status < 300 && !c.authed && !(openRoute && (c.method === "GET" || c.method === "HEAD"))) return `a ${a.status} without the token`;
  if (a.status >= 400 && json && c.method !== "HEAD") {
    let env: any;
    try {
      env = JSON.parse(a.body);
    } catch {
      return "a JSON error that does not parse";
    }
    if (env.success !== false || !Array.isArray(env.errors) || typeof env.errors[0]?.code !== "number" || env.result !== null) return "an error that is not the envelope";
    if (/\n\s+at |bigint|out of range|invalid byte sequence/.test(env.errors[0].message)) return `an internal message: ${env.errors[0].message.slice(0, 120)}`;
  }
  if (a.status >= 400 && !json && ![400, 413, 414, 431].includes(a.status)) return `a ${a.status} outside the envelope`;
  return null;
}

test(`HTTP fuzz: seed ${SEED}, ${ONLY === undefined ? CASES : `case ${ONLY}`} cases`, async () => {
  const indexes = ONLY === undefined ? Array.from({ length: CASES }, (_, i) => i) : [ONLY];
  const failures: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < indexes.length && failures.length < 20) {
      const i = indexes[next++]!;
      const c = makeCase(i);
      const a = await send(c);
      const wrong = judge(c, a);
      if (wrong) {
        const shown = new TextDecoder().decode(c.bytes.slice(0, 300)).replace(/\r\n/g, "\\r\\n");
        failures.push(`FUZZ_SEED=${SEED} FUZZ_CASE=${i}: ${wrong}\n  request: ${shown}\n  answer: ${a.head.split("\r\n")[0]} ${a.body.slice(0, 200)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  expect(failures).toEqual([]);
  // The server is still up and serving.
  expect((await fetch(`${srv.httpUrl}/healthz`)).status).toBe(200);
  // (a fuzzed DELETE may have removed the namespace itself)
  const list = await fetch(`${srv.httpUrl}/client/v4/accounts/${ACCOUNT}/storage/kv/namespaces`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } });
  expect(list.status).toBe(200);
});
