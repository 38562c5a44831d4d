// The HTTP application: auth, health and metrics, with every error turned into the envelope. The products'
// routes come from the caller (src/main.ts): each an Elysia instance whose paths are relative to the site root
// (the KV API, the SQL endpoint, admin views), plus the hot routes Bun.serve matches natively. This module
// knows neither product.
//
// Authentication is decided once, in a global beforeHandle, on the route template the router matched: every
// route but GET/HEAD /healthz and /readyz needs the token. A request that matches no route is refused 401/403
// before it learns the route does not exist. Nothing here re-reads the URL to decide who may do what.
import { Elysia } from "elysia";
import type { Config } from "../config.ts";
import { CODE } from "../errors.ts";
import type { Registry } from "../metrics/registry.ts";
import { authGate } from "./auth.ts";
import { errorResponse, fail } from "./envelope.ts";

/** A handler Bun.serve runs for a natively matched route, after the gate, with the router's path params. */
export type NativeHandler<P = any> = (request: Request, params: P) => Response | Promise<Response>;

export interface HttpAppOptions {
  config: Pick<Config, "authFailureDelayMs" | "httpAuthFailureMaxPending">;
  metrics: Registry;
  apiToken: string;
  /** Behind /readyz: whether storage answers. */
  ready(): Promise<boolean>;
  /** Route groups, paths from the site root, all behind the token. */
  plugins: Elysia<any, any, any, any, any, any, any>[];
  /**
   * Routes for Bun.serve to match ahead of the router, template -> method -> handler: no Elysia context per
   * request. Each template must also be served by a plugin (which still serves it when these are not
   * installed), with the same handler, so both answer alike.
   */
  native?: Record<string, Partial<Record<"GET" | "PUT" | "DELETE", NativeHandler>>>;
  /** The metric label of a product's matched route template (a fixed set); default: the template. */
  label?(template: string): string;
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
function routeLabel(template: string | undefined, product: (template: string) => string): string {
  if (template === undefined) return "unmatched";
  if (OPEN_ROUTES.has(template) || template === "/metrics") return template.slice(1);
  return product(template);
}

const isOpen = (req: Request, template: string | undefined) => template !== undefined && OPEN_ROUTES.has(template) && (req.method === "GET" || req.method === "HEAD");

/** What Bun.serve takes as `routes`: a template, then a handler per method. */
export type NativeRoutes = Record<string, Record<string, (req: Request & { params: Record<string, string> }) => Response | Promise<Response>>>;

export interface HttpApp {
  fetch(req: Request): Promise<Response>;
  /**
   * The native routes (HEAD reaches a GET handler; Bun answers it without the body), for Bun.serve to match
   * ahead of `fetch`. Same gate, handlers, errors and metrics as the Elysia route of the same template.
   */
  routes: NativeRoutes;
}

export function createHttpApp(opts: HttpAppOptions): HttpApp {
  const { metrics, apiToken, config } = opts;
  const label = (template: string | undefined) => routeLabel(template, opts.label ?? ((t) => t));
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
      const p: NonNullable<typeof probe> = { at: now, done: false, ready: opts.ready().catch(() => false) };
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
    .get("/metrics", () => new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4" } }));
  for (const p of opts.plugins) app = app.use(p);
  app.compile();

  // Bound metric handles per (route, method, status): the hot path skips building label keys. Every part of
  // the id comes from a fixed set, so the map stays small.
  const series = new Map<string, { count: { inc(): void }; time: { observe(v: number): void } }>();
  function record(req: Request, res: Response, started: number) {
    const route = label((req as Marked)[ROUTE]);
    const method = METHODS.has(req.method) ? req.method : "other";
    const id = `${route} ${method} ${res.status}`;
    let m = series.get(id);
    if (!m) series.set(id, (m = { count: requests.with({ route, method, status: res.status }), time: latency.with({ route }) }));
    m.count.inc();
    m.time.observe((performance.now() - started) / 1000);
  }

  // The gate of the Elysia app, on the template Bun's router matched: the token first, then the handler. Its
  // metric handles are bound per status up front: nothing is looked up by string on the way out.
  const native = (template: string, method: string, handler: NativeHandler) => {
    const route = label(template);
    const byStatus = new Map<number, { count: { inc(): void }; time: { observe(v: number): void } }>();
    const done = (req: Request, res: Response, started: number) => {
      const head = req.method === "HEAD";
      const id = head ? -res.status : res.status;
      let m = byStatus.get(id);
      if (!m) byStatus.set(id, (m = { count: requests.with({ route, method: head ? "HEAD" : method, status: res.status }), time: latency.with({ route }) }));
      m.count.inc();
      m.time.observe((performance.now() - started) / 1000);
      return res;
    };
    const answerError = (e: unknown) => errorResponse(e);
    // Not async: a handler that answers at once (a cached GET) gives Bun its Response with no promise at all.
    return (req: Request & { params: Record<string, string> }): Response | Promise<Response> => {
      const started = performance.now();
      let res: Response | Promise<Response>;
      if (!PLAIN_URL.test(req.url)) {
        res = fail(400, CODE.badRequest, "Invalid Host header or request target: expected Host: name[:port] and an origin-form path.");
      } else {
        const refused = auth.check(req);
        if (refused) res = refused;
        else {
          try {
            res = handler(req, req.params);
          } catch (e) {
            res = errorResponse(e);
          }
        }
      }
      // One reaction for both outcomes: a rejected handler is answered by the envelope, then counted alike.
      return res instanceof Promise ? res.then((r) => done(req, r, started), (e) => done(req, answerError(e), started)) : done(req, res, started);
    };
  };
  const routes: NativeRoutes = {};
  for (const [template, methods] of Object.entries(opts.native ?? {})) {
    const r: NativeRoutes[string] = (routes[template] = {});
    for (const [method, handler] of Object.entries(methods)) if (handler) r[method] = native(template, method, handler);
  }

  return {
    routes,
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
