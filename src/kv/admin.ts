// Admin routes for redundancy, behind the same bearer token as the KV API:
//   GET  /admin/kv                                 shards, second backend, repair queue depth, last crawler pass
//   GET  /admin/kv/namespaces/:id/replication      the namespace's mode and whether it is overridden
//   PUT  /admin/kv/namespaces/:id/replication      {"mode": "primary" | "shadow" | "active-active" | null}
//   POST /admin/kv/crawl                           one anti-entropy pass now; answers its counts
import { Elysia } from "elysia";
import { errorResponse, fail, ok } from "../http/envelope.ts";
import { readJson } from "../http/body.ts";
import { CODE } from "./codes.ts";
import { KVError } from "./errors.ts";
import type { KVService } from "./types.ts";

const MAX_ADMIN_BODY = 4096;

export function kvAdminRoutes(kv: KVService) {
  return new Elysia()
    .onError(({ code, error }) => (code === "PARSE" || code === "VALIDATION" ? fail(400, CODE.badRequest, "Malformed request.") : errorResponse(error)))
    .get("/admin/kv", () => ok(kv.redundancy()))
    .get("/admin/kv/namespaces/:id/replication", async ({ params }) => ok(await kv.replication(params.id)))
    .put("/admin/kv/namespaces/:id/replication", async ({ params, request }) => {
      const body = (await readJson(request, MAX_ADMIN_BODY, () => new KVError(413, CODE.badRequest, `The body exceeds ${MAX_ADMIN_BODY} bytes.`))) as { mode?: unknown };
      if (typeof body !== "object" || body === null || !("mode" in body) || (body.mode !== null && typeof body.mode !== "string")) {
        throw new KVError(400, CODE.badRequest, 'The body must be {"mode": "primary" | "shadow" | "active-active" | null}.');
      }
      return ok(await kv.setReplication(params.id, body.mode as string | null));
    })
    // A pass runs at the crawler's rate and may take minutes: server.ts exempts it from the idle timeout.
    .post("/admin/kv/crawl", async () => ok(await kv.runCrawlerPass()));
}
