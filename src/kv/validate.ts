// Pure validation of KV input. Each error names the value and the limit, in Miniflare's words where it has them.
import { ApiError, CODE } from "../errors.ts";
import * as L from "./limits.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A lone surrogate: JSON and JavaScript strings may hold one, UTF-8 cannot (it would become U+FFFD and alias). */
const LONE_SURROGATE = /\p{Cs}/u;
/** Postgres text cannot hold NUL; control characters have no place in names. */
const CONTROL = /[\u0000-\u001f\u007f]/;
const NAMESPACE_ID = /^[0-9a-f]{32}$/;

/** A value as it may appear in a message: JSON-quoted and cut short. */
export const shown = (raw: unknown): string => JSON.stringify(String(raw).slice(0, 64));

export function validateKey(key: string): void {
  if (key === "") throw new ApiError(400, CODE.badKey, "Key names must not be empty.");
  if (key === "." || key === "..") throw new ApiError(400, CODE.badKey, `Illegal key name "${key}". Please use a different name.`);
  const len = key.length <= L.MAX_KEY_BYTES / 3 ? key.length : encoder.encode(key).byteLength;
  if (len > L.MAX_KEY_BYTES) throw new ApiError(414, CODE.keyTooLong, `UTF-8 encoded length of ${len} exceeds key length limit of ${L.MAX_KEY_BYTES}.`);
  if (LONE_SURROGATE.test(key)) throw new ApiError(400, CODE.badKey, `Key ${shown(key)} is not valid Unicode: it holds a lone UTF-16 surrogate.`);
}

/** Depth of a JSON value, walked without recursion; stops counting past the limit. */
function depthExceeds(value: unknown, limit: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length) {
    const [v, d] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    if (d > limit) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (typeof child === "object" && child !== null) stack.push([child, d + 1]);
  }
  return false;
}

export function validateMetadata(metadata: unknown): string | null {
  if (metadata === undefined || metadata === null) return null;
  if (depthExceeds(metadata, L.MAX_METADATA_DEPTH)) {
    throw new ApiError(413, CODE.metadataTooLarge, `Metadata nested more than ${L.MAX_METADATA_DEPTH} levels deep exceeds limit of ${L.MAX_METADATA_BYTES} serialized bytes.`);
  }
  const json = JSON.stringify(metadata);
  const len = encoder.encode(json).byteLength;
  if (len > L.MAX_METADATA_BYTES) throw new ApiError(413, CODE.metadataTooLarge, `Metadata length of ${len} exceeds limit of ${L.MAX_METADATA_BYTES}.`);
  return json;
}

/** An integer from a JSON number or a decimal string; may be unsafe or infinite (callers bound it). */
function integer(raw: unknown): number | null {
  if (typeof raw === "number") return Number.isInteger(raw) ? raw : null;
  if (typeof raw === "string" && /^\s*-?\d+\s*$/.test(raw)) return Number(raw);
  return null;
}

/** Resolves expiration / expiration_ttl (the ttl wins) to absolute unix seconds, or null. */
export function resolveExpiration(expiration: unknown, ttl: unknown, nowSeconds: number): number | null {
  const present = (v: unknown) => v !== undefined && v !== null && v !== "";
  if (present(ttl)) {
    const t = integer(ttl);
    if (t === null) throw new ApiError(400, CODE.badExpirationTtl, `Invalid expiration_ttl of ${shown(ttl)}. Please specify an integer number of seconds.`);
    if (t < L.MIN_EXPIRATION_TTL) throw new ApiError(400, CODE.badExpirationTtl, `Invalid expiration_ttl of ${shown(ttl)}. Expiration TTL must be at least ${L.MIN_EXPIRATION_TTL}.`);
    const max = L.MAX_EXPIRATION - nowSeconds;
    if (t > max) throw new ApiError(400, CODE.badExpirationTtl, `Invalid expiration_ttl of ${shown(ttl)}. Expiration TTL must be at most ${max} (expiring by ${L.MAX_EXPIRATION}, 9999-12-31).`);
    return nowSeconds + t;
  }
  if (present(expiration)) {
    const e = integer(expiration);
    if (e === null) throw new ApiError(400, CODE.badExpiration, `Invalid expiration of ${shown(expiration)}. Please specify an integer number of seconds since the UNIX epoch.`);
    if (e < nowSeconds + L.MIN_EXPIRATION_TTL) {
      throw new ApiError(400, CODE.badExpiration, `Invalid expiration of ${shown(expiration)}. Expiration times must be at least ${L.MIN_EXPIRATION_TTL} seconds in the future.`);
    }
    if (e > L.MAX_EXPIRATION) throw new ApiError(400, CODE.badExpiration, `Invalid expiration of ${shown(expiration)}. Expiration times must be at most ${L.MAX_EXPIRATION} (9999-12-31T23:59:59Z).`);
    return e;
  }
  return null;
}

export function validateListLimit(raw: string | null): number {
  if (raw === null || raw === "") return L.DEFAULT_LIST_LIMIT;
  const n = integer(raw);
  if (n === null) throw new ApiError(400, CODE.badListLimit, `Invalid list limit ${shown(raw)}: it must be a number.`);
  if (n < 1) throw new ApiError(400, CODE.badListLimit, `Invalid list limit of ${shown(raw)}: it must be at least 1.`);
  if (n > L.MAX_LIST_LIMIT) throw new ApiError(400, CODE.badListLimit, `Invalid list limit of ${shown(raw)}: it must be at most ${L.MAX_LIST_LIMIT}.`);
  return n;
}

export function validateCacheTtl(raw: string | null): number | undefined {
  if (raw === null || raw === "") return undefined;
  const n = integer(raw);
  if (n === null || n < L.MIN_CACHE_TTL || n > L.MAX_CACHE_TTL) {
    throw new ApiError(400, CODE.badRequest, `Invalid cache_ttl of ${shown(raw)}. Cache TTL must be an integer of at least ${L.MIN_CACHE_TTL} and at most ${L.MAX_CACHE_TTL}.`);
  }
  return n;
}

export function validateTitle(title: unknown): string {
  if (typeof title !== "string" || title.trim() === "") throw new ApiError(400, CODE.badNamespaceTitle, "A namespace needs a non-empty string title.");
  const len = encoder.encode(title).byteLength;
  if (len > L.MAX_NAMESPACE_TITLE_BYTES) throw new ApiError(400, CODE.badNamespaceTitle, `Namespace title length of ${len} exceeds limit of ${L.MAX_NAMESPACE_TITLE_BYTES}.`);
  if (title.includes("\u0000")) throw new ApiError(400, CODE.badNamespaceTitle, "A namespace title must not contain NUL (U+0000).");
  if (LONE_SURROGATE.test(title)) throw new ApiError(400, CODE.badNamespaceTitle, "A namespace title must be valid Unicode: it holds a lone UTF-16 surrogate.");
  return title;
}

/** Namespace ids are 32 lowercase hex characters; anything else names no namespace. */
export function validateNamespaceId(id: string): string {
  if (!NAMESPACE_ID.test(id)) throw new ApiError(404, CODE.namespaceNotFound, `namespace ${shown(id)} not found: a namespace id is 32 hex characters.`);
  return id;
}

export function validateAccountId(id: string): string {
  const len = encoder.encode(id).byteLength;
  if (len === 0 || len > L.MAX_ACCOUNT_ID_BYTES || CONTROL.test(id) || LONE_SURROGATE.test(id)) {
    throw new ApiError(400, CODE.badRequest, `Invalid account id ${shown(id)}: it must be 1..${L.MAX_ACCOUNT_ID_BYTES} UTF-8 bytes without control characters.`);
  }
  return id;
}

export function positiveInt(name: string, raw: string | null, def: number, max: number): number {
  if (raw === null || raw === "") return def;
  const n = integer(raw);
  if (n === null || n < 1) throw new ApiError(400, CODE.badRequest, `Invalid ${name} ${shown(raw)}: it must be a positive integer.`);
  if (n > max) throw new ApiError(400, CODE.badRequest, `Invalid ${name} of ${shown(raw)}: it must be at most ${max}.`);
  return n;
}

export function oneOf<T extends string>(name: string, raw: string | null, allowed: readonly T[], def: T): T {
  if (raw === null || raw === "") return def;
  if (!(allowed as readonly string[]).includes(raw)) throw new ApiError(400, CODE.badRequest, `Invalid ${name} ${shown(raw)}: it must be one of ${allowed.join(", ")}.`);
  return raw as T;
}

/** A value of a bulk get as the caller asked for it: text, or parsed JSON (400 when it is not JSON). */
export function bulkGetValue(v: { value: Uint8Array }, type: "text" | "json", key: string): unknown {
  const text = decoder.decode(v.value);
  if (type === "text") return text;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(400, CODE.badRequest, `The value of key ${JSON.stringify(key)} is not valid JSON; ask for type "text".`);
  }
}
