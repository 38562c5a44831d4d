// An unchanged Worker using env.KV and env.HYPERDRIVE, both served by kvdrive:
//   bun run kvdrive dev examples/worker.ts
//   curl 'http://127.0.0.1:8790/visit?page=home'
import postgres from "postgres";

interface Env {
  KV: KVNamespace;
  HYPERDRIVE: Hyperdrive;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const page = new URL(request.url).searchParams.get("page") ?? "home";

    // Workers KV: a counter per page, with metadata and a TTL.
    const previous = await env.KV.getWithMetadata<number, { at: string }>(`visits:${page}`, "json");
    const visits = (previous.value ?? 0) + 1;
    await env.KV.put(`visits:${page}`, JSON.stringify(visits), { metadata: { at: new Date().toISOString() }, expirationTtl: 86400 });

    // Hyperdrive: postgres.js through kvdrive's pooler. now() is volatile, so this read always reaches Postgres;
    // a read of tables with immutable functions only is answered from the pooler's query cache when repeated.
    const sql = postgres(env.HYPERDRIVE.connectionString, { max: 1, fetch_types: false });
    const [row] = await sql`select now() as at, ${page}::text as page`;
    ctx.waitUntil(sql.end());

    return Response.json({ page, visits, lastVisit: previous.metadata?.at ?? null, database: row });
  },
};
