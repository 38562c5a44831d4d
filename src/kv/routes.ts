// The Workers KV REST routes under /accounts/:account_id/storage/kv/namespaces (Cloudflare's v4 shape).
// Keys are taken from the raw URL and percent-decoded exactly once, so %2F stays a slash inside the key.
import { Elysia } from "elysia";
import type { Clock } from "../clock.ts";
import type { HttpAppOptions } from "../http/app.ts";
import { ok } from "../http/envelope.ts";
import { readForm, readJson, readLimited } from "../http/body.ts";
import { ApiError, CODE } from "../errors.ts";
import * as L from "./limits.ts";
import type { KVService, KVValue, PutInput } from "./types.ts";
import { bulkGetValue, oneOf, positiveInt, resolveExpiration, shown, validateAccountId, validateCacheTtl, validateKey, validateListLimit, validateMetadata, validateNamespaceId, validateTitle } from "./validate.ts";

const valueTooLarge = (size: number) => new ApiError(413, CODE.valueTooLarge, `Value length of ${size} exceeds limit of ${L.MAX_VALUE_BYTES}.`);
const bulkTooLarge = (size: number) => new ApiError(413, CODE.bulkTooLarge, `Bulk request body of ${size} bytes exceeds limit of ${L.MAX_BULK_BYTES}.`);
const bodyTooLarge = (size: number) => new ApiError(413, CODE.badRequest, `Request body of ${size} bytes exceeds limit of ${1024 * 1024}.`);

/** The key after `/{segment}/` in the raw URL, decoded once. */
function keyFromUrl(url: string, segment: "values" | "metadata"): string {
  const q = url.indexOf("?");
  const path = q < 0 ? url : url.slice(0, q);
  const marker = `/${segment}/`;
  const at = path.indexOf(marker, path.indexOf("/namespaces/"));
  const raw = at < 0 ? "" : path.slice(at + marker.length);
  let key: string;
  try {
    key = raw.includes("%") ? decodeURIComponent(raw) : raw;
  } catch {
    throw new ApiError(400, CODE.badKey, `Key ${JSON.stringify(raw.slice(0, 64))} is not valid percent-encoding.`);
  }
  validateKey(key);
  return key;
}

/** The error code of a parameter that cannot be decoded, as when its value is wrong. */
const PARAM_CODE: Record<string, number> = {
  [L.PARAM.listCursor]: CODE.badCursor,
  [L.PARAM.listLimit]: CODE.badListLimit,
  [L.PARAM.expiration]: CODE.badExpiration,
  [L.PARAM.expirationTtl]: CODE.badExpirationTtl,
};

/** Query parameters decoded strictly: invalid UTF-8 in a percent-encoding is refused, never turned into U+FFFD. */
function query(url: string): { get(name: string): string | null } {
  const out = new Map<string, string>();
  const q = url.indexOf("?");
  if (q < 0) return { get: () => null };
  for (const part of url.slice(q + 1).split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const rawName = eq < 0 ? part : part.slice(0, eq);
    const rawValue = eq < 0 ? "" : part.slice(eq + 1);
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent(rawName.replace(/\+/g, " "));
      value = decodeURIComponent(rawValue.replace(/\+/g, " "));
    } catch {
      throw new ApiError(400, PARAM_CODE[rawName] ?? CODE.badRequest, `Query parameter ${shown(rawName)} is not valid percent-encoding of UTF-8.`);
    }
    if (!out.has(name)) out.set(name, value);
  }
  return { get: (name) => out.get(name) ?? null };
}

/** Metadata sent as `metadata[a][b]=…` bracket fields (the v7 SDK's form encoding of an object). */
function bracketMetadata(form: FormData): Record<string, unknown> | undefined {
  let out: Record<string, unknown> | undefined;
  let fields = 0;
  for (const [name, v] of form.entries()) {
    if (!name.startsWith("metadata[")) continue;
    // Metadata serializes to at most 1024 bytes, so a longer field name or value, or more fields than that, cannot
    // be valid: refused before anything is built from them.
    const tooLarge = (what: string) => new ApiError(413, CODE.metadataTooLarge, `Metadata ${what} exceeds limit of ${L.MAX_METADATA_BYTES}.`);
    if (name.length > L.MAX_METADATA_BYTES + "metadata".length) throw tooLarge(`field name of ${name.length} characters`);
    if (typeof v === "string" && v.length > L.MAX_METADATA_BYTES) throw tooLarge(`field value of ${v.length} characters`);
    if (++fields > L.MAX_METADATA_BYTES) throw tooLarge(`in more than ${L.MAX_METADATA_BYTES} fields`);
    const path = [...name.slice("metadata".length).matchAll(/\[([^\]]*)\]/g)].map((m) => m[1]!);
    if (path.length === 0) continue;
    if (path.length > L.MAX_METADATA_DEPTH) throw new ApiError(413, CODE.metadataTooLarge, `Metadata field ${shown(name)} nests more than ${L.MAX_METADATA_DEPTH} levels.`);
    // Null-prototype nodes: a field named metadata[__proto__][x] is data, not a way to reach Object.prototype.
    out ??= Object.create(null) as Record<string, unknown>;
    let node: Record<string, unknown> = out;
    for (const p of path.slice(0, -1)) {
      const next = Object.hasOwn(node, p) ? node[p] : undefined;
      if (typeof next === "object" && next !== null) node = next as Record<string, unknown>;
      else node = node[p] = Object.create(null) as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = typeof v === "string" ? v : "";
  }
  return out;
}

async function formPut(req: Request): Promise<{ value: Uint8Array; metadata: unknown }> {
  const form = await readForm(req, L.MAX_VALUE_BYTES + 2 * L.MAX_METADATA_BYTES + 64 * 1024, valueTooLarge);
  const v = form.get("value");
  if (v === null) throw new ApiError(400, CODE.badRequest, "Multipart body needs a 'value' part.");
  const value = typeof v === "string" ? new TextEncoder().encode(v) : new Uint8Array(await v.arrayBuffer());
  if (value.byteLength > L.MAX_VALUE_BYTES) throw valueTooLarge(value.byteLength);
  const m = form.get("metadata");
  let metadata: unknown = bracketMetadata(form);
  if (m !== null) {
    const text = typeof m === "string" ? m : await m.text();
    try {
      metadata = JSON.parse(text);
    } catch {
      throw new ApiError(400, CODE.badRequest, "The 'metadata' part must be valid JSON (at most 1024 bytes serialized).");
    }
  }
  return { value, metadata };
}

function asObject(body: unknown, what: string): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, CODE.badRequest, `${what} must be a JSON object.`);
  return body as Record<string, unknown>;
}

/** The single-value route, under /client/v4: its template names it in metrics and in the auth gate. */
const VALUES_TEMPLATE = "/accounts/:account_id/storage/kv/namespaces/:namespace_id/values/*";

interface PathIds {
  account_id: string;
  namespace_id: string;
}

type ValueHandler = (request: Request, params: PathIds) => Response | Promise<Response>;

/**
 * GET, PUT and DELETE of one value. The same functions serve the Elysia routes and, on the hot path, the routes
 * Bun.serve matches natively (kvHttp), so both check the same ids and keys and answer alike. They run
 * after authentication.
 */
function valueHandlers(kv: KVService, clock: Clock): { get: ValueHandler; put: ValueHandler; delete: ValueHandler } {
  const nowSeconds = () => Math.floor(clock.now() / 1000);
  // The last ids that passed, so a client that keeps using one namespace does not pay for the checks again
  // (they depend on the string alone).
  let validAccount = "";
  let validNamespace = "";
  const ids = (p: PathIds) => {
    if (p.account_id !== validAccount) validAccount = validateAccountId(p.account_id);
    if (p.namespace_id !== validNamespace) validNamespace = validateNamespaceId(p.namespace_id);
  };
  return {
    // Synchronous on a cache hit (no promise from the request to the Response); a throw is the caller's to answer.
    get(request, params) {
      ids(params);
      const key = keyFromUrl(request.url, "values");
      const q = request.url.indexOf("?") < 0 ? undefined : query(request.url).get(L.PARAM.cacheTtl);
      const v = kv.get(params.account_id, params.namespace_id, key, { cacheTtl: validateCacheTtl(q ?? null) });
      return v instanceof Promise ? v.then((x) => valueResponse(key, x)) : valueResponse(key, v);
    },
    // Not async: a plain PUT is one chain (body, then the write) with no async frame of its own; a throw before
    // the body is read is the caller's to answer, as for get.
    put(request, params) {
      ids(params);
      const key = keyFromUrl(request.url, "values");
      const q = query(request.url);
      const expiration = resolveExpiration(q.get(L.PARAM.expiration), q.get(L.PARAM.expirationTtl), nowSeconds());
      const ct = request.headers.get("content-type") ?? "";
      if (ct.startsWith("multipart/form-data")) {
        return formPut(request).then(({ value, metadata }) => {
          validateMetadata(metadata);
          return kv.put(params.account_id, params.namespace_id, { key, value, metadata, expiration });
        }).then(okEmpty);
      }
      return readLimited(request, L.MAX_VALUE_BYTES, valueTooLarge)
        .then((value) => kv.put(params.account_id, params.namespace_id, { key, value, metadata: undefined, expiration }))
        .then(okEmpty);
    },
    async delete(request, params) {
      ids(params);
      await kv.delete(params.account_id, params.namespace_id, keyFromUrl(request.url, "values"));
      return okEmpty();
    },
  };
}

function valueResponse(key: string, v: KVValue | null): Response {
  if (!v) throw new ApiError(404, CODE.keyNotFound, `key not found: ${JSON.stringify(key)}`);
  return new Response(v.value, { headers: v.expiration === null ? OCTETS : { "content-type": "application/octet-stream", expiration: String(v.expiration) } });
}

// Prebuilt Headers: Response copies them, and copying is several times cheaper than building from an object.
const OCTETS = new Headers({ "content-type": "application/octet-stream" });
const JSON_TYPE = new Headers({ "content-type": "application/json" });
const EMPTY_OK = JSON.stringify({ success: true, errors: [], messages: [], result: {} });
/** The envelope of a write, serialized once. */
const okEmpty = () => new Response(EMPTY_OK, { headers: JSON_TYPE });

/** The Cloudflare v4 API prefix the KV routes sit under. */
const API = "/client/v4";

/**
 * The KV API as the HTTP app takes it (src/main.ts hands it over): the routes under /client/v4, the value
 * routes for Bun.serve to match natively (the same handlers), and the metric label of each route template.
 */
export function kvHttp(kv: KVService, clock: Clock): Required<Pick<HttpAppOptions, "native" | "label">> & { routes: Elysia<any, any, any, any, any, any, any> } {
  const values = valueHandlers(kv, clock);
  return {
    routes: new Elysia().group(API, (g) => g.use(kvRoutes(kv, clock, values))),
    native: { [API + VALUES_TEMPLATE]: { GET: values.get, PUT: values.put, DELETE: values.delete } },
    label: kvRouteLabel,
  };
}

/** A metric label per KV route template: a fixed set. */
function kvRouteLabel(template: string): string {
  if (!template.startsWith(API + "/")) return template;
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

function kvRoutes(kv: KVService, clock: Clock, values: ReturnType<typeof valueHandlers>) {
  const nowSeconds = () => Math.floor(clock.now() / 1000);
  const nsBase = "/accounts/:account_id/storage/kv/namespaces";
  const one = `${nsBase}/:namespace_id`;

  return (
    new Elysia()
      // Path ids are checked before any route touches storage (runs after the app's authentication gate).
      .onBeforeHandle(({ params }) => {
        const p = params as { account_id?: string; namespace_id?: string };
        if (p.account_id !== undefined) validateAccountId(p.account_id);
        if (p.namespace_id !== undefined) validateNamespaceId(p.namespace_id);
      })
      // Namespaces
      .post(nsBase, async ({ request, params }) => {
        const body = asObject(await readJson(request, 1024 * 1024, bodyTooLarge), "The body");
        return ok(await kv.createNamespace(params.account_id, validateTitle(body.title)));
      })
      .get(nsBase, async ({ request, params }) => {
        const q = query(request.url);
        const page = positiveInt("page", q.get("page"), 1, 1_000_000);
        const perPage = positiveInt("per_page", q.get("per_page"), 20, L.MAX_NAMESPACES_PER_PAGE);
        const order = oneOf("order", q.get("order"), ["id", "title"] as const, "id");
        const direction = oneOf("direction", q.get("direction"), ["asc", "desc"] as const, "asc");
        const { namespaces, total } = await kv.listNamespaces(params.account_id, { page, perPage, order, direction });
        return ok(namespaces, { page, per_page: perPage, count: namespaces.length, total_count: total, total_pages: Math.ceil(total / perPage) });
      })
      .get(one, async ({ params }) => ok(await kv.getNamespace(params.account_id, params.namespace_id)))
      .put(one, async ({ request, params }) => {
        const body = asObject(await readJson(request, 1024 * 1024, bodyTooLarge), "The body");
        return ok(await kv.renameNamespace(params.account_id, params.namespace_id, validateTitle(body.title)));
      })
      .delete(one, async ({ params }) => {
        await kv.deleteNamespace(params.account_id, params.namespace_id);
        return ok({});
      })

      // Single values: the handlers Bun.serve also runs for these templates without Elysia (valueHandlers)
      .get(`${one}/values/*`, ({ request, params }) => values.get(request, params))
      .put(`${one}/values/*`, ({ request, params }) => values.put(request, params))
      .delete(`${one}/values/*`, ({ request, params }) => values.delete(request, params))
      .get(`${one}/metadata/*`, async ({ request, params }) => {
        const key = keyFromUrl(request.url, "metadata");
        const v = await kv.get(params.account_id, params.namespace_id, key);
        if (!v) throw new ApiError(404, CODE.keyNotFound, `key not found: ${JSON.stringify(key)}`);
        return ok(v.metadata === null ? null : JSON.parse(v.metadata));
      })

      // Listing
      .get(`${one}/keys`, async ({ request, params }) => {
        const q = query(request.url);
        const limit = validateListLimit(q.get(L.PARAM.listLimit));
        const res = await kv.list(params.account_id, params.namespace_id, { prefix: q.get(L.PARAM.listPrefix) || undefined, limit, cursor: q.get(L.PARAM.listCursor) || undefined });
        const keys = res.keys.map((k) => (k.metadata === undefined ? k : { ...k, metadata: JSON.parse(k.metadata) }));
        return ok(keys, { count: keys.length, cursor: res.cursor });
      })

      // Bulk
      .put(`${one}/bulk`, async ({ request, params }) => {
        const body = await readJson(request, L.MAX_BULK_BYTES, bulkTooLarge);
        if (!Array.isArray(body)) throw new ApiError(400, CODE.badRequest, "A bulk write takes a JSON array of {key, value} objects.");
        if (body.length > L.MAX_BULK_PAIRS) throw new ApiError(413, CODE.bulkTooLarge, `Bulk write of ${body.length} pairs exceeds limit of ${L.MAX_BULK_PAIRS}.`);
        const now = nowSeconds();
        const inputs: PutInput[] = body.map((item, i) => {
          const o = asObject(item, `Bulk item ${i}`);
          if (typeof o.key !== "string") throw new ApiError(400, CODE.badKey, `Bulk item ${i} needs a string 'key'.`);
          validateKey(o.key);
          if (typeof o.value !== "string") throw new ApiError(400, CODE.badRequest, `Bulk item ${i} (${JSON.stringify(o.key)}) needs a string 'value'.`);
          let value: Uint8Array;
          if (o.base64 === true) {
            if (!/^[A-Za-z0-9+/]*={0,2}$/.test(o.value) || o.value.replace(/=+$/, "").length % 4 === 1) throw new ApiError(400, CODE.badRequest, `Bulk item ${i} (${JSON.stringify(o.key)}) is marked base64 but its value is not valid base64.`);
            value = new Uint8Array(Buffer.from(o.value, "base64"));
          } else value = new TextEncoder().encode(o.value);
          if (value.byteLength > L.MAX_VALUE_BYTES) throw valueTooLarge(value.byteLength);
          validateMetadata(o.metadata);
          return { key: o.key, value, metadata: o.metadata, expiration: resolveExpiration(o.expiration, o.expiration_ttl, now) };
        });
        if (inputs.length) await kv.putMany(params.account_id, params.namespace_id, inputs);
        return ok({ successful_key_count: inputs.length, unsuccessful_keys: [] });
      })
      .post(`${one}/bulk/delete`, async ({ request, params }) => bulkDelete(kv, request, params))
      .delete(`${one}/bulk`, async ({ request, params }) => bulkDelete(kv, request, params))
      .post(`${one}/bulk/get`, async ({ request, params }) => {
        const body = asObject(await readJson(request, 1024 * 1024, bodyTooLarge), "The body");
        const keys = body.keys;
        if (!Array.isArray(keys) || keys.some((k) => typeof k !== "string")) throw new ApiError(400, CODE.badRequest, "'keys' must be an array of strings.");
        if (keys.length < 1 || keys.length > L.MAX_BULK_GET_KEYS) throw new ApiError(400, CODE.badRequest, `Bulk get of ${keys.length} keys is outside the allowed 1..${L.MAX_BULK_GET_KEYS}.`);
        const type = body.type === undefined ? "text" : body.type;
        if (type !== "text" && type !== "json") throw new ApiError(400, CODE.badRequest, `Invalid type ${JSON.stringify(type)}: it must be "text" or "json".`);
        if (body.withMetadata !== undefined && typeof body.withMetadata !== "boolean") throw new ApiError(400, CODE.badRequest, "'withMetadata' must be a boolean.");
        for (const k of keys as string[]) validateKey(k);
        const found = await kv.getMany(params.account_id, params.namespace_id, keys as string[]);
        // Built from entries, so a key named "__proto__" is an ordinary property, not the object's prototype.
        const values = Object.fromEntries(
          (keys as string[]).map((k, i) => {
            const v = found[i];
            if (!v) return [k, null];
            if (!body.withMetadata) return [k, bulkGetValue(v, type, k)];
            const entry: Record<string, unknown> = { value: bulkGetValue(v, type, k), metadata: v.metadata === null ? null : JSON.parse(v.metadata) };
            if (v.expiration !== null) entry.expiration = v.expiration;
            return [k, entry];
          }),
        );
        return ok({ values });
      })
  );
}

async function bulkDelete(kv: KVService, request: Request, params: { account_id: string; namespace_id: string }) {
  const body = await readJson(request, L.MAX_BULK_BYTES, bulkTooLarge);
  if (!Array.isArray(body) || body.some((k) => typeof k !== "string")) throw new ApiError(400, CODE.badRequest, "A bulk delete takes a JSON array of key names.");
  if (body.length > L.MAX_BULK_PAIRS) throw new ApiError(413, CODE.bulkTooLarge, `Bulk delete of ${body.length} keys exceeds limit of ${L.MAX_BULK_PAIRS}.`);
  for (const k of body as string[]) validateKey(k);
  if (body.length) await kv.deleteMany(params.account_id, params.namespace_id, body as string[]);
  return ok({ successful_key_count: body.length, unsuccessful_keys: [] });
}
