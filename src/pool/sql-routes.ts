// HTTP SQL over the pooler's pools and query cache: POST /sql runs one statement ({query, params}) or an array
// of them as one transaction, answering {command, rowCount, fields, rows, cache}; GET /admin/pools shows the
// pools. Both sit behind the bearer token (src/http/app.ts checks it on the matched route; its onError answers errors).
import { Elysia } from "elysia";
import { readJson } from "../http/body.ts";
import { fail } from "../http/envelope.ts";
import { ApiError, CODE, PoolerError } from "../errors.ts";
import type { ExecuteResult, Pooler } from "./pooler.ts";
import { fromText } from "./sql-types.ts";

const MAX_SQL_BODY = 1024 * 1024;
const MAX_STATEMENTS = 100;
const tooLarge = (size: number) => new ApiError(413, CODE.badRequest, `SQL request body of ${size} bytes exceeds limit of ${MAX_SQL_BODY}.`);

interface Statement {
  query: string;
  params?: unknown[];
}

function statement(v: unknown, where: string): Statement {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ApiError(400, CODE.badRequest, `${where} must be an object {query, params}.`);
  const o = v as Record<string, unknown>;
  if (typeof o.query !== "string" || o.query.trim() === "") throw new ApiError(400, CODE.badRequest, `${where}.query must be a non-empty string.`);
  if (o.params !== undefined && !Array.isArray(o.params)) throw new ApiError(400, CODE.badRequest, `${where}.params must be an array.`);
  return { query: o.query, params: o.params as unknown[] | undefined };
}

function shape(r: ExecuteResult) {
  return {
    command: r.command,
    rowCount: r.rowCount,
    fields: r.fields,
    rows: r.rows.map((row) => Object.fromEntries(r.fields.map((f, i) => [f.name, fromText(row[i] ?? null, f.dataTypeID)]))),
    cache: r.cache,
  };
}

export function sqlRoutes(o: { pooler: Pooler; database: string; user: string }) {
  return new Elysia()
    .post("/sql", async ({ request }) => {
      const body = await readJson(request, MAX_SQL_BODY, tooLarge);
      const many = Array.isArray(body);
      const statements = many ? (body as unknown[]).map((s, i) => statement(s, `statement ${i}`)) : [statement(body, "the body")];
      if (statements.length === 0 || statements.length > MAX_STATEMENTS) throw new ApiError(400, CODE.badRequest, `An array of ${statements.length} statements is outside the allowed 1..${MAX_STATEMENTS}.`);
      try {
        const results = await o.pooler.execute({ database: o.database, user: o.user, statements: statements.map((s) => ({ sql: s.query, params: s.params })), transaction: many });
        return Response.json(many ? results.map(shape) : shape(results[0]!));
      } catch (e) {
        if (e instanceof PoolerError) {
          // 53300 (no origin connection in time) and connection failures are the service's, not the query's.
          // 08P01 is a protocol violation in what the client sent (say, too many params): the request's fault.
          const status = e.code === "53300" || (e.code.startsWith("08") && e.code !== "08P01") || e.code === "57P01" ? 503 : 400;
          const res = fail(status, CODE.badRequest, `${e.code}: ${e.message}`);
          return new Response(res.body, { status, headers: { "content-type": "application/json", "x-sqlstate": e.code } });
        }
        throw e;
      }
    })
    .get("/admin/pools", () => Response.json(o.pooler.stats()));
}
