// The hot value routes that Bun.serve matches natively (createHttpApp().routes) answer exactly as the Elysia
// route of the same template: same gate (401/403 before any input check), same errors and envelope, same
// values, same metric label. Each request is sent both ways against one real KV service and compared.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { systemClock } from "../../src/clock.ts";
import { loadConfig } from "../../src/config.ts";
import { createHttpApp, type HttpApp } from "../../src/http/app.ts";
import { kvHttp } from "../../src/kv/routes.ts";
import { createKVService } from "../../src/kv/service.ts";
import type { KVService } from "../../src/kv/types.ts";
import { createRegistry, type Registry } from "../../src/metrics/registry.ts";
import { startTestPostgres, tempDirForFile, type TestPostgres } from "../helpers/postgres.ts";

/** The data dir these in-process services are given (the blob store makes its folder there). */
const dataDir = tempDirForFile("kvdrive-unit-");

const TOKEN = "native-routes-token";
const ACC = "acct-native";
let pg: TestPostgres;
let kv: KVService;
let app: HttpApp;
let metrics: Registry;
let ns: string;

beforeAll(async () => {
  pg = await startTestPostgres();
  metrics = createRegistry();
  const config = loadConfig({ dataDir, authFailureDelayMs: 0 }, {});
  kv = await createKVService({ urls: [pg.url], config, clock: systemClock, metrics });
  const api = kvHttp(kv, systemClock);
  app = createHttpApp({ config, metrics, apiToken: TOKEN, ready: () => kv.ready(), plugins: [api.routes], native: api.native, label: api.label });
  ns = (await kv.createNamespace(ACC, "native")).id;
});
afterAll(async () => {
  await kv.close();
  await pg.destroy();
});

type Native = (req: Request & { params: { account_id: string; namespace_id: string } }) => Promise<Response>;

/** The request through Bun's route table, with params as Bun's router gives them (percent-decoded). */
function viaNative(method: string, path: string, init: RequestInit): Promise<Response> {
  const m = /^\/client\/v4\/accounts\/([^/]*)\/storage\/kv\/namespaces\/([^/]*)\/values\//.exec(path)!;
  const handler = app.routes["/client/v4/accounts/:account_id/storage/kv/namespaces/:namespace_id/values/*"]![method] as Native;
  const req = Object.assign(new Request(`http://127.0.0.1${path}`, { ...init, method }), { params: { account_id: decodeURIComponent(m[1]!), namespace_id: decodeURIComponent(m[2]!) } });
  return handler(req);
}

const summary = async (res: Response) => ({ status: res.status, type: res.headers.get("content-type"), expiration: res.headers.get("expiration"), body: await res.text() });

test("both ways give the same answer for good and bad requests, with and without the token", async () => {
  const base = (acc: string, id: string) => `/client/v4/accounts/${acc}/storage/kv/namespaces/${id}/values/`;
  const good = { authorization: `Bearer ${TOKEN}` };
  const cases: Array<[string, string, RequestInit]> = [];
  for (const headers of [good, {}, { authorization: "Bearer wrong" }]) {
    cases.push(
      ["PUT", `${base(ACC, ns)}k1?expiration_ttl=600`, { headers, body: "v1" }],
      ["GET", `${base(ACC, ns)}k1`, { headers }],
      ["GET", `${base(ACC, ns)}k1?cache_ttl=10`, { headers }],
      ["GET", `${base(ACC, ns)}k1?cache_ttl=60`, { headers }],
      ["GET", `${base(ACC, ns)}missing`, { headers }],
      ["GET", `${base(ACC, ns)}`, { headers }],
      ["GET", `${base(ACC, ns)}%FF`, { headers }],
      ["GET", `${base(ACC, ns)}${"k".repeat(600)}`, { headers }],
      ["GET", `${base(ACC, "nope")}k1`, { headers }],
      ["GET", `${base("%00", ns)}k1`, { headers }],
      ["PUT", `${base(ACC, ns)}k2?expiration_ttl=5`, { headers, body: "v2" }],
      ["PUT", `${base(ACC, ns)}a%2Fb`, { headers, body: "slash" }],
      ["GET", `${base(ACC, ns)}a%2Fb`, { headers }],
      ["DELETE", `${base(ACC, ns)}a%2Fb`, { headers }],
      ["GET", `${base(ACC, ns)}a%2Fb`, { headers }],
    );
  }
  for (const [method, path, init] of cases) {
    const viaElysia = await summary(await app.fetch(new Request(`http://127.0.0.1${path}`, { ...init, method })));
    const native = await summary(await viaNative(method, path, init));
    expect({ method, path, ...native }).toEqual({ method, path, ...viaElysia });
  }
  // Both ways are counted under the same route label, and no other label appeared.
  const text = metrics.render();
  expect(text).toMatch(/kvdrive_http_requests_total\{method="GET",route="values",status="200"\} \d+/);
  expect(text).not.toMatch(/route="unmatched"/);
});
