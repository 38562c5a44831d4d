// The HTTP application: auth, health, metrics and the KV routes, with every error turned into the envelope.
// Extra route groups (the SQL endpoint, admin views) are mounted through `plugins`, each an Elysia instance
// whose paths are relative to the site root; they sit behind the same bearer token.
//
// Authentication is decided once, in a global beforeHandle, on the route template the router matched: every
// route but GET/HEAD /healthz and /readyz needs the token. A request that matches no route is refused 401/403
// before it learns the route does not exist. Nothing here re-reads the URL to decide who may do what.
import { Elysia } from "elysia";
import type { Clock } from "../clock.ts";
import type { Config } from "../config.ts";
import type { Registry } from "../metrics/registry.ts";
import { CODE } from "../errors.ts";
import { kvRoutes, valueHandlers, VALUES_TEMPLATE, type PathIds, type ValueHandler } from "../kv/routes.ts";
import type { KVService } from "../kv/types.ts";
import { authGate, type AuthGate } from "./auth.ts";
import { errorResponse, fail } from "./envelope.ts";

export interface HttpAppOptions {
  kv: KVService;
  config: Config;
  metrics: Registry;
  apiToken: string;
  clock: Clock;
  plugins?: Elysia<any, any, any, any, any, any, any>[];
}

/** Routes served without the token, by matched template; GET and HEAD only. */
const OPEN_ROUTES = new Set(["/healthz", "/readyz"]);
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
/** The matched route template and whether the token was checked, kept on the request by the gate. */
const ROUTE = Symbol("kvdrive.route");
const AUTHED = Symbol("kvdrive.authed");
type Marked = Request & { [ROUTE]?: string; [AUTHED]?: boolean };

/**
 * Elysia reads the path from the URL at a fixed offset unless told the host may be short; Bun hands over
 * `/path` with no scheme or host when the Host header holds a slash or an `@`. Only a URL of the plain
 * `http://host[:port]/…` form reaches the router.
 */
const PLAIN_URL = /^http:\/\/[A-Za-z0-9._~\-]*(?:\[[0-9A-Fa-f:.]+\])?(?::\d*)?\//;

/** A metric label from a matched route template (a fixed set), or "unmatched". */
export function routeLabel(template: string | undefined): string {
  if (template === undefined) return "unmatched";
  if (!template.startsWith("/client/v4/")) return OPEN_ROUTES.has(template) || template === "/metrics" ? template.slice(1) : template;
  if (template.endsWith("/values/*")) return "values";
  if (template.endsWith("/metadata/*")) return "metadata";
  if (template.endsWith("/keys")) return "keys";
  if (template.endsWith("/bulk/get")) return "bulk_get";
  if (template.endsWith("/bulk/delete")) return "bulk_delete";
  if (template.endsWith("/bulk")) return "bulk";
  if (template.endsWith("/namespaces")) return "namespaces";
  if (template.endsWith("/:namespace_id")) return "namespace";
  return template;
}

const isOpen = (req: Request, template: string | undefined) => template !== undefined && OPEN_ROUTES.has(template) && (req.method === "GET" || req.method === "HEAD");

/** What Bun.serve takes as `routes`: a template, then a handler per method. */
export type NativeRoutes = Record<string, Record<string, (req: Request & { params: PathIds }) => Promise<Response>>>;

export interface HttpApp {
  fetch(req: Request): Promise<Response>;
  /**
   * The hot value routes (GET, PUT, DELETE of one key, and HEAD, which Bun answers from GET), for Bun.serve to
   * match natively ahead of `fetch`: no Elysia context per request. Same gate, handlers, errors and metrics as
   * the Elysia route of the same template, which still serves them when these are not installed.
   */
  routes: NativeRoutes;
  auth: AuthGate;
}

export function createHttpApp(opts: HttpAppOptions): HttpApp {
  const { kv, metrics, apiToken, clock, config } = opts;
  const requests = metrics.counter("kvdrive_http_requests_total", "HTTP requests by route template, method and status");
  const latency = metrics.histogram("kvdrive_http_request_duration_seconds", "HTTP request latency by route template");
  const auth = authGate({ apiToken, failureDelayMs: config.authFailureDelayMs, maxPending: config.httpAuthFailureMaxPending });
  metrics.gauge("kvdrive_http_auth_failures_delayed", "Failed HTTP authentications being held for KVDRIVE_AUTH_FAILURE_DELAY_MS now", () => [[undefined, auth.pending()]]);
  // /readyz is open to anyone: one storage probe answers every caller for a second, so a flood of it is not a
  // flood of queries; while a probe is under way (storage slow to answer) no second one starts.
  let probe: { at: number; done: boolean; ready: Promise<boolean> } | undefined;
  const readiness = () => {
    const now = performance.now();
    if (!probe || (probe.done && now - probe.at > 1000)) {
      const p: NonNullable<typeof probe> = { at: now, done: false, ready: kv.ready().catch(() => false) };
      void p.ready.then(() => (p.done = true));
      probe = p;
    }
    return probe.ready;
  };

  let app = new Elysia({ handler: { standardHostname: false } })
    .onBeforeHandle({ as: "global" }, ({ request, route }) => {
      const req = request as Marked;
      req[ROUTE] = route;
      if (isOpen(req, route)) return;
      const refused = auth.check(req);
      if (refused) return refused;
      req[AUTHED] = true;
    })
    .onError({ as: "global" }, async ({ code, error, request }) => {
      const req = request as Marked;
      // Errors raised before the gate ran (no route, a body the router could not parse) are answered only to
      // a client that holds the token: the route table is not shown to strangers.
      if (!req[AUTHED] && !isOpen(req, req[ROUTE])) {
        const refused = auth.check(req);
        if (refused) return refused;
      }
      if (code === "NOT_FOUND") return fail(404, CODE.routeNotFound, "No route for that URI.");
      if (code === "PARSE" || code === "VALIDATION") return fail(400, CODE.badRequest, "Malformed request.");
      return errorResponse(error);
    })
    .get("/healthz", () => new Response(JSON.stringify({ status: "ok" }), { headers: { "content-type": "application/json" } }))
    .get("/readyz", async () => {
      const ready = await readiness();
      return new Response(JSON.stringify({ status: ready ? "ready" : "storage unavailable" }), { status: ready ? 200 : 503, headers: { "content-type": "application/json" } });
    })
    .get("/metrics", () => new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } }))
    .group("/client/v4", (g) => g.use(kvRoutes(kv, clock)));
  for (const p of opts.plugins ?? []) app = app.use(p);
  app.compile();

  // Bound metric handles per (route, method, status): the hot path skips building label keys. Every part of
  // the id comes from a fixed set, so the map stays small.
  const series = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  function record(req: Request, res: Response, started: number) {
    const route = routeLabel((req as Marked)[ROUTE]);
    const method = METHODS.has(req.method) ? req.method : "other";
    const id = `${route} ${method} ${res.status}`;
    let m = series.get(id);
    if (!m) series.set(id, (m = { count: requests.with({ route, method, status: res.status }), time: latency.with({ route }) }));
    m.count.inc();
    m.time.observe((performance.now() - started) / 1000);
  }

  const template = "/client/v4" + VALUES_TEMPLATE;
  const label = routeLabel(template);
  // The gate of the Elysia app, on the template Bun's router matched: the token first, then the handler. Its
  // metric handles are bound per status up front: nothing is looked up by string on the way out.
  const native = (method: string, handler: ValueHandler) => {
    const byStatus = new Map<number, { count: { inc(): void }; time: { observe(v: number): void } }>();
    return async (req: Request & { params: PathIds }) => {
      const started = performance.now();
      let res: Response;
      if (!PLAIN_URL.test(req.url)) {
        res = fail(400, CODE.badRequest, "Invalid Host header or request target: expected Host: name[:port] and an origin-form path.");
      } else {
        const refused = auth.check(req);
        if (refused) res = await refused;
        else {
          try {
            res = await handler(req, req.params);
          } catch (e) {
            res = errorResponse(e);
          }
        }
      }
      const head = req.method === "HEAD";
      const id = head ? -res.status : res.status;
      let m = byStatus.get(id);
      if (!m) byStatus.set(id, (m = { count: requests.with({ route: label, method: head ? "HEAD" : method, status: res.status }), time: latency.with({ route: label }) }));
      m.count.inc();
      m.time.observe((performance.now() - started) / 1000);
      return res;
    };
  };
  const values = valueHandlers(kv, clock);

  return {
    auth,
    // HEAD reaches the GET handler (Bun answers it without the body).
    routes: { [template]: { GET: native("GET", values.get), PUT: native("PUT", values.put), DELETE: native("DELETE", values.delete) } },
    async fetch(req) {
      const started = performance.now();
      let res: Response;
      if (!PLAIN_URL.test(req.url)) {
        res = fail(400, CODE.badRequest, "Invalid Host header or request target: expected Host: name[:port] and an origin-form path.");
      } else {
        try {
          res = await app.handle(req);
        } catch (e) {
          res = errorResponse(e);
        }
      }
      record(req, res, started);
      return res;
    },
  };
}
