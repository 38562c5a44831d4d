// Admin routes for redundancy, behind the same bearer token as the KV API:
//   GET  /admin/kv                                 shards, second backend, repair queue depth, last crawler pass
//   GET  /admin/kv/namespaces/:id/replication      the namespace's mode and whether it is overridden
//   PUT  /admin/kv/namespaces/:id/replication      {"mode": "primary" | "shadow" | "active-active" | null}
//   POST /admin/kv/crawl                           starts one anti-entropy pass in the background: 202 and its status
//   GET  /admin/kv/crawl                           the status of the pass started last (poll until state is not "running")
// A pass runs at the crawler's rate and may take minutes, so no request waits for it: every connection stays
// under the HTTP idle timeout.
import { Elysia } from "elysia";
import { ok } from "../http/envelope.ts";
import { readJson } from "../http/body.ts";
import { ApiError, CODE } from "../errors.ts";
import type { KVService } from "./types.ts";
import { validateNamespaceId } from "./validate.ts";

const MAX_ADMIN_BODY = 4096;

export interface CrawlStatus {
  /** idle: none was asked for; running; done (result holds the pass's counts); failed (error says why). */
  state: "idle" | "running" | "done" | "failed";
  /** Increases with every pass started over HTTP. */
  id: number;
  started_at: string | null;
  finished_at: string | null;
  result: unknown;
  error: string | null;
}

/** One background pass at a time: a POST while one runs answers that pass's status instead of starting another. */
function crawlRunner(kv: KVService) {
  let status: CrawlStatus = { state: "idle", id: 0, started_at: null, finished_at: null, result: null, error: null };
  return {
    status: () => status,
    start(): CrawlStatus {
      if (status.state === "running") return status;
      const id = status.id + 1;
      status = { state: "running", id, started_at: new Date().toISOString(), finished_at: null, result: null, error: null };
      kv.runCrawlerPass().then(
        (result) => {
          if (status.id === id) status = { ...status, state: "done", finished_at: new Date().toISOString(), result };
        },
        (e) => {
          if (status.id === id) status = { ...status, state: "failed", finished_at: new Date().toISOString(), error: e instanceof Error ? e.message : String(e) };
        },
      );
      return status;
    },
  };
}

export function kvAdminRoutes(kv: KVService) {
  const crawl = crawlRunner(kv);
  return new Elysia()
    .get("/admin/kv", () => ok(kv.redundancy()))
    .get("/admin/kv/namespaces/:id/replication", async ({ params }) => ok(await kv.replication(validateNamespaceId(params.id))))
    .put("/admin/kv/namespaces/:id/replication", async ({ params, request }) => {
      const id = validateNamespaceId(params.id);
      const body = (await readJson(request, MAX_ADMIN_BODY, (size) => new ApiError(413, CODE.badRequest, `Request body of ${size} bytes exceeds limit of ${MAX_ADMIN_BODY}.`))) as { mode?: unknown };
      if (typeof body !== "object" || body === null || !("mode" in body) || (body.mode !== null && typeof body.mode !== "string")) {
        throw new ApiError(400, CODE.badRequest, 'The body must be {"mode": "primary" | "shadow" | "active-active" | null}.');
      }
      return ok(await kv.setReplication(id, body.mode as string | null));
    })
    .post("/admin/kv/crawl", () => ok(crawl.start(), undefined, 202))
    .get("/admin/kv/crawl", () => ok(crawl.status()));
}
