// Serves workerd's KV binding protocol (protocol.ts) over the KV service the REST API uses: same validation,
// limits, versions, cache and group commit. Every request carries the API token and the namespace id, both
// injected by the workerd config (`injectRequestHeaders`). Errors keep the Cloudflare envelope as their body and
// put its message in the reason phrase, which is all the Worker sees.
import type { Clock } from "../clock.ts";
import { readJson, readLimited } from "../http/body.ts";
import { authGate } from "../http/auth.ts";
import { errorResponse, fail } from "../http/envelope.ts";
import { ApiError, CODE } from "../errors.ts";
import * as L from "../kv/limits.ts";
import type { KVService } from "../kv/types.ts";
import { bulkGetValue, resolveExpiration, validateCacheTtl, validateKey, validateListLimit, validateMetadata } from "../kv/validate.ts";
import { asciiJson, EXPIRATION_HEADER, METADATA_HEADER, NAMESPACE_HEADER, parseMetadataHeader, parseOperation, reasonPhrase, type Operation } from "./protocol.ts";

export interface BindingHandlerOptions {
  kv: KVService;
  apiToken: string;
  clock: Clock;
  /** The HTTP API's gate settings (KVDRIVE_AUTH_FAILURE_DELAY_MS, KVDRIVE_HTTP_AUTH_FAILURE_MAX_PENDING). */
  authFailureDelayMs: number;
  authFailureMaxPending: number;
}

/** One request as the listener sees it, without building a web Request for the reads that have no body. */
export interface BindingRequest {
  method: string;
  /** The request target exactly as sent (keys are decoded from it once). */
  url: string;
  /** A header by its lower-case name. */
  header(name: string): string | null;
  /** The request as a web Request, its body streaming (PUT and POST). */
  request(): Request;
}

/** The answer: the reason phrase is what the Worker sees of an error. */
export interface Reply {
  status: number;
  reason: string;
  headers: Record<string, string>;
  body: Uint8Array | string | null;
}

export type BindingHandler = (req: BindingRequest) => Promise<Reply>;

const MAX_BULK_GET_BODY = 1024 * 1024;
const AUTH_URL = "http://kvdrive.local/";
const valueTooLarge = (size: number) => new ApiError(413, CODE.valueTooLarge, `Value length of ${size} exceeds limit of ${L.MAX_VALUE_BYTES}.`);
const bulkBodyTooLarge = (size: number) => new ApiError(413, CODE.badRequest, `Request body of ${size} bytes exceeds limit of ${MAX_BULK_GET_BODY}.`);
const JSON_HEADERS = { "content-type": "application/json" };
const OK: Reply = { status: 200, reason: "OK", headers: {}, body: null };
const json = (body: unknown): Reply => ({ status: 200, reason: "OK", headers: JSON_HEADERS, body: JSON.stringify(body) });

/** The Cloudflare envelope as the body, its message as the reason phrase. */
async function errorOut(e: unknown): Promise<Reply> {
  const r = e instanceof ApiError ? fail(e.status, e.code, e.message) : errorResponse(e);
  const body = await r.text();
  const message = (JSON.parse(body) as { errors: Array<{ message: string }> }).errors[0]?.message ?? "error";
  return { status: r.status, reason: reasonPhrase(message), headers: JSON_HEADERS, body };
}

export function createBindingHandler({ kv, apiToken, clock, authFailureDelayMs, authFailureMaxPending }: BindingHandlerOptions): BindingHandler {
  const gate = authGate({ apiToken, failureDelayMs: authFailureDelayMs, maxPending: authFailureMaxPending });
  const nowSeconds = () => Math.floor(clock.now() / 1000);

  async function get(account: string, ns: string, op: Extract<Operation, { op: "get" }>): Promise<Reply> {
    const v = await kv.get(account, ns, op.key, { cacheTtl: validateCacheTtl(op.query.get(L.PARAM.cacheTtl)) });
    // workerd turns a 404 into null whatever its body; the envelope is for anyone else reading it.
    if (!v) return errorOut(new ApiError(404, CODE.keyNotFound, `key not found: ${JSON.stringify(op.key)}`));
    // One round trip for getWithMetadata: the metadata rides along in a header.
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (v.metadata !== null) headers[METADATA_HEADER] = asciiJson(v.metadata);
    if (v.expiration !== null) headers[EXPIRATION_HEADER] = String(v.expiration);
    return { status: 200, reason: "OK", headers, body: v.value };
  }

  async function put(account: string, ns: string, req: BindingRequest, op: Extract<Operation, { op: "put" }>): Promise<Reply> {
    const expiration = resolveExpiration(op.query.get(L.PARAM.expiration), op.query.get(L.PARAM.expirationTtl), nowSeconds());
    const metadata = parseMetadataHeader(req.header(METADATA_HEADER));
    validateMetadata(metadata);
    const value = await readLimited(req.request(), L.MAX_VALUE_BYTES, valueTooLarge);
    await kv.put(account, ns, { key: op.key, value, metadata, expiration });
    return OK;
  }

  async function list(account: string, ns: string, op: Extract<Operation, { op: "list" }>): Promise<Reply> {
    const limit = validateListLimit(op.query.get("key_count_limit"));
    const res = await kv.list(account, ns, { prefix: op.query.get(L.PARAM.listPrefix) || undefined, limit, cursor: op.query.get(L.PARAM.listCursor) || undefined });
    // Metadata stays serialized: workerd JSON-parses a string and would pass an object through unchanged.
    const body: Record<string, unknown> = { keys: res.keys, list_complete: res.cursor === "" };
    if (res.cursor !== "") body.cursor = res.cursor;
    return json(body);
  }

  async function bulkGet(account: string, ns: string, req: BindingRequest): Promise<Reply> {
    const body = await readJson(req.request(), MAX_BULK_GET_BODY, bulkBodyTooLarge);
    if (typeof body !== "object" || body === null || Array.isArray(body)) throw new ApiError(400, CODE.badRequest, "The body must be a JSON object.");
    const { keys, type = "text", withMetadata, cacheTtl } = body as Record<string, unknown>;
    if (!Array.isArray(keys) || keys.some((k) => typeof k !== "string")) throw new ApiError(400, CODE.badRequest, "'keys' must be an array of strings.");
    if (keys.length < 1 || keys.length > L.MAX_BULK_GET_KEYS) throw new ApiError(400, CODE.badRequest, `Bulk get of ${keys.length} keys is outside the allowed 1..${L.MAX_BULK_GET_KEYS}.`);
    if (type !== "text" && type !== "json") throw new ApiError(400, CODE.badRequest, `Invalid type ${JSON.stringify(type)}: a bulk get takes "text" or "json".`);
    for (const k of keys as string[]) validateKey(k);
    const ttl = validateCacheTtl(cacheTtl === undefined ? null : String(cacheTtl));
    const found = await kv.getMany(account, ns, keys as string[], { cacheTtl: ttl });
    const out: Record<string, unknown> = {};
    (keys as string[]).forEach((k, i) => {
      const v = found[i];
      if (!v) out[k] = null;
      else if (withMetadata === true) out[k] = { value: bulkGetValue(v, type, k), metadata: v.metadata === null ? null : JSON.parse(v.metadata) };
      else out[k] = bulkGetValue(v, type, k);
    });
    return json(out);
  }

  return async (req) => {
    try {
      // The gate reads only the Authorization header: a bodiless Request carrying it is enough.
      const refused = gate.check(new Request(AUTH_URL, { headers: { authorization: req.header("authorization") ?? "" } }));
      if (refused) {
        // The API's gate (same token, delay and bound), but a wrong token is 401 here too: the Worker cannot
        // tell a missing header from a wrong one, and both are the config's fault.
        const denied = await refused;
        const error = ((await denied.json()) as { errors: Array<{ code: number; message: string }> }).errors[0]!;
        return await errorOut(new ApiError(denied.status === 403 ? 401 : denied.status, error.code, error.message));
      }
      const ns = req.header(NAMESPACE_HEADER);
      if (!ns) throw new ApiError(400, CODE.badRequest, "The X-Kvdrive-Namespace header is missing: inject it with injectRequestHeaders in the workerd config.");
      const account = await kv.accountOf(ns);
      const op = parseOperation(req.method, req.url);
      switch (op.op) {
        case "get":
          return await get(account, ns, op);
        case "put":
          return await put(account, ns, req, op);
        case "delete":
          await kv.delete(account, ns, op.key);
          return OK;
        case "list":
          return await list(account, ns, op);
        case "bulk_get":
          return await bulkGet(account, ns, req);
      }
    } catch (e) {
      return errorOut(e);
    }
  };
}
