// The HTTP application: auth, health, metrics and the KV routes, with every error turned into the envelope.
// Extra route groups (the SQL endpoint, admin views) are mounted through `plugins`, each an Elysia instance
// whose paths are relative to the site root; they sit behind the same bearer token.
import { Elysia } from "elysia";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import { CODE } from "../kv/codes.ts";
import { kvRoutes } from "../kv/routes.ts";
import type { KVService } from "../kv/types.ts";
import { bearerCheck } from "./auth.ts";
import { errorResponse, fail } from "./envelope.ts";

export interface HttpAppOptions {
  kv: KVService;
  config: Config;
  metrics: Registry;
  apiToken: string;
  clock: Clock;
  plugins?: Elysia<any, any, any, any, any, any, any>[];
}

/** A low-cardinality route label from the path, for metrics. */
export function routeLabel(path: string): string {
  if (!path.startsWith("/client/v4/")) return path === "/healthz" || path === "/readyz" || path === "/metrics" ? path.slice(1) : path.split("/")[1] || "root";
  if (path.includes("/values/")) return "values";
  if (path.includes("/metadata/")) return "metadata";
  if (path.endsWith("/keys")) return "keys";
  if (path.endsWith("/bulk/get")) return "bulk_get";
  if (path.endsWith("/bulk/delete")) return "bulk_delete";
  if (path.endsWith("/bulk")) return "bulk";
  if (path.endsWith("/namespaces")) return "namespaces";
  if (path.includes("/namespaces/")) return "namespace";
  return "other";
}

export function createHttpApp(opts: HttpAppOptions): { fetch(req: Request): Promise<Response> } {
  const { kv, metrics, apiToken, clock } = opts;
  const requests = metrics.counter("kvdrive_http_requests_total", "HTTP requests by route, method and status");
  const latency = metrics.histogram("kvdrive_http_request_duration_seconds", "HTTP request latency by route");
  const authorize = bearerCheck(apiToken);

  let app = new Elysia()
    .onError(({ code, error }) => {
      if (code === "NOT_FOUND") return fail(404, CODE.routeNotFound, "No route for that URI.");
      if (code === "PARSE" || code === "VALIDATION") return fail(400, CODE.badRequest, `Malformed request: ${(error as Error).message?.slice(0, 200) ?? code}`);
      return errorResponse(error);
    })
    .get("/healthz", () => new Response(JSON.stringify({ status: "ok" }), { headers: { "content-type": "application/json" } }))
    .get("/readyz", async () => {
      const ready = await kv.ready();
      return new Response(JSON.stringify({ status: ready ? "ready" : "storage unavailable" }), { status: ready ? 200 : 503, headers: { "content-type": "application/json" } });
    })
    .get("/metrics", () => new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } }))
    .group("/client/v4", (g) => g.use(kvRoutes(kv, clock)));
  for (const p of opts.plugins ?? []) app = app.use(p);
  app.compile();

  const open = new Set(["/healthz", "/readyz"]);
  // Bound metric handles per (route, method, status): the hot path skips building label keys.
  const series = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  return {
    async fetch(req) {
      const started = performance.now();
      const url = req.url;
      const pathStart = url.indexOf("/", url.indexOf("//") + 2);
      const q = url.indexOf("?", pathStart);
      const path = url.slice(pathStart, q < 0 ? undefined : q);
      let res: Response;
      try {
        res = (!open.has(path) && authorize(req)) || (await app.handle(req));
      } catch (e) {
        res = errorResponse(e);
      }
      const route = routeLabel(path);
      const id = `${route} ${req.method} ${res.status}`;
      let m = series.get(id);
      if (!m) {
        if (series.size > 1000) series.clear();
        series.set(id, (m = { count: requests.with({ route, method: req.method, status: res.status }), time: latency.with({ route }) }));
      }
      m.count.inc();
      m.time.observe((performance.now() - started) / 1000);
      return res;
    },
  };
}
