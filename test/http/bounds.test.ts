// What an unauthenticated client can make the HTTP side hold is bounded: delayed refusals (past the bound: 429),
// sockets (the idle timeout has no exemption, not even for the crawl route), metric series (labels come from
// route templates; each metric has a hard cap). A long admin pass runs in the background and is polled.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { authGate } from "../../src/http/auth.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { crawlPass } from "../helpers/crawl.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";
import { startTestServer, TEST_TOKEN, type TestServer } from "../helpers/server.ts";

const AUTH = { authorization: `Bearer ${TEST_TOKEN}` };

describe("auth failure delay", () => {
  test("refusals are held back, at most maxPending at once; past it 429 at once; a good token passes", async () => {
    const gate = authGate({ apiToken: TEST_TOKEN, failureDelayMs: 200, maxPending: 3 });
    const wrong = () => new Request("http://kv/x", { headers: { authorization: "Bearer nope-nope-nope" } });
    const answers = Array.from({ length: 6 }, () => gate.check(wrong())!);
    expect(gate.pending()).toBe(3);
    const statuses = (await Promise.all(answers)).map((r) => r.status);
    expect(statuses.sort()).toEqual([403, 403, 403, 429, 429, 429]);
    const limited = (await Promise.all(answers)).find((r) => r.status === 429)!;
    expect(await limited.json()).toMatchObject({ success: false, errors: [{ code: 971 }] });
    expect(limited.headers.get("retry-after")).toBe("1");
    expect(gate.pending()).toBe(0);
    expect((await gate.check(new Request("http://kv/x"))!).status).toBe(401);
    expect(gate.check(new Request("http://kv/x", { headers: AUTH }))).toBeUndefined();
  });
});

describe("metric registry", () => {
  test("a metric keeps at most maxSeriesPerMetric label sets; the rest is counted under overflow", () => {
    const reg = createRegistry({ maxSeriesPerMetric: 10 });
    const c = reg.counter("t_total", "test");
    const h = reg.histogram("t_seconds", "test");
    const g = reg.gauge("t_gauge", "test");
    for (let i = 0; i < 1000; i++) {
      c.inc({ path: `/p${i}` });
      c.with({ path: `/w${i}` }).inc();
      h.observe(0.01, { path: `/p${i}` });
      g.set(i, { path: `/p${i}` });
    }
    const text = reg.render();
    expect(text.split("\n").filter((l) => l.startsWith("t_total{")).length).toBe(11);
    expect(text.split("\n").filter((l) => l.startsWith("t_seconds_count{")).length).toBe(11);
    expect(text.split("\n").filter((l) => l.startsWith("t_gauge{")).length).toBe(11);
    expect(text).toContain('t_total{overflow="true"} 1990');
    expect(text).toContain('kvdrive_metric_series_overflow_total{metric="t_total"} 1990');
    expect(text).toContain('t_total{path="/p3"} 1');
  });
});

describe("a kvdrive", () => {
  let pg: TestPostgres;
  let srv: TestServer;
  beforeAll(async () => {
    pg = await startTestPostgres();
    srv = await startTestServer(pg.url, { httpIdleTimeoutSeconds: 1, authFailureDelayMs: 10 });
  }, 60_000);
  afterAll(async () => {
    await srv.destroy();
    await pg.destroy();
  }, 60_000);

  /** Resolves when the server closes the socket; sends `bytes` and then nothing. */
  const closedByServer = (bytes: string) =>
    new Promise<string>((resolve) => {
      let got = "";
      const s = net.connect(srv.httpPort, "127.0.0.1", () => s.write(bytes));
      s.on("data", (d: Buffer) => (got += d.toString("latin1")));
      s.on("error", () => {});
      s.on("close", () => resolve(got));
    });

  test("silent sockets are closed by the idle timeout, including a POST /admin/kv/crawl whose body never comes", async () => {
    const results = await Promise.all([
      closedByServer(""),
      closedByServer("GET /healthz HTTP/1.1\r\nHost: kv\r\n"),
      closedByServer("POST /admin/kv/crawl HTTP/1.1\r\nHost: kv\r\nContent-Length: 100\r\n\r\n"),
      closedByServer(`POST /admin/kv/crawl HTTP/1.1\r\nHost: kv\r\nAuthorization: Bearer ${TEST_TOKEN}\r\nContent-Length: 100\r\n\r\n`),
    ]);
    expect(results[2]).not.toMatch(/^HTTP\/1\.1 2/);
    expect((await fetch(`${srv.httpUrl}/healthz`)).status).toBe(200);
  });

  test("POST /admin/kv/crawl answers 202 at once with the pass's status; GET polls it; both need the token", async () => {
    expect((await fetch(`${srv.httpUrl}/admin/kv/crawl`, { method: "POST" })).status).toBe(401);
    expect((await fetch(`${srv.httpUrl}/admin/kv/crawl`)).status).toBe(401);
    const idle = (await (await fetch(`${srv.httpUrl}/admin/kv/crawl`, { headers: AUTH })).json()) as { result: { state: string } };
    expect(["idle", "done"]).toContain(idle.result.state);
    const res = await fetch(`${srv.httpUrl}/admin/kv/crawl`, { method: "POST", headers: AUTH });
    expect(res.status).toBe(202);
    const started = (await res.json()) as { success: boolean; result: { state: string; id: number } };
    expect(started.success).toBe(true);
    expect(["running", "done"]).toContain(started.result.state);
    const finished = await crawlPass(srv.httpUrl, TEST_TOKEN);
    expect(finished.state).toBe("done");
    expect(finished.id).toBeGreaterThan(started.result.id);
  });

  test("metric labels are route templates: random paths, methods and hosts add no series", async () => {
    const before = (await (await fetch(`${srv.httpUrl}/metrics`, { headers: AUTH })).text()).length;
    await Promise.all(
      Array.from({ length: 400 }, (_, i) =>
        fetch(`${srv.httpUrl}/rnd-${i}-${Math.random().toString(36).slice(2)}/x?y=${i}`, { method: ["GET", "POST", "PUT", "DELETE"][i % 4], headers: i % 2 ? AUTH : {} }),
      ),
    );
    await Promise.all(Array.from({ length: 50 }, (_, i) => fetch(`${srv.httpUrl}/client/v4/accounts/acc-${i}/storage/kv/namespaces`, { headers: AUTH })));
    const text = await (await fetch(`${srv.httpUrl}/metrics`, { headers: AUTH })).text();
    expect(text).not.toContain("rnd-");
    expect(text).not.toContain("acc-1");
    expect(text).toContain('route="unmatched"');
    expect(text).toContain('kvdrive_http_requests_total{method="GET",route="namespaces",status="200"} 50');
    const series = text.split("\n").filter((l) => l.startsWith("kvdrive_http_requests_total{"));
    expect(series.length).toBeLessThan(20);
    expect(text.length - before).toBeLessThan(16 * 1024);
  });
});
