// Pure validation of KV input. Each error names the value and the limit, in Miniflare's words where it has them.
import { CODE } from "./codes.ts";
import { KVError } from "./errors.ts";
import * as L from "./limits.ts";

const encoder = new TextEncoder();

export function validateKey(key: string): void {
  if (key === "") throw new KVError(400, CODE.badKey, "Key names must not be empty.");
  if (key === "." || key === "..") throw new KVError(400, CODE.badKey, `Illegal key name "${key}". Please use a different name.`);
  const len = key.length <= L.MAX_KEY_BYTES / 3 ? key.length : encoder.encode(key).byteLength;
  if (len > L.MAX_KEY_BYTES) throw new KVError(414, CODE.keyTooLong, `UTF-8 encoded length of ${len} exceeds key length limit of ${L.MAX_KEY_BYTES}.`);
}

export function validateMetadata(metadata: unknown): string | null {
  if (metadata === undefined || metadata === null) return null;
  const json = JSON.stringify(metadata);
  const len = encoder.encode(json).byteLength;
  if (len > L.MAX_METADATA_BYTES) throw new KVError(413, CODE.metadataTooLarge, `Metadata length of ${len} exceeds limit of ${L.MAX_METADATA_BYTES}.`);
  return json;
}

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
    if (t === null) throw new KVError(400, CODE.badExpirationTtl, `Invalid expiration_ttl of ${JSON.stringify(ttl)}. Please specify an integer number of seconds.`);
    if (t < L.MIN_EXPIRATION_TTL) throw new KVError(400, CODE.badExpirationTtl, `Invalid expiration_ttl of ${t}. Expiration TTL must be at least ${L.MIN_EXPIRATION_TTL}.`);
    return nowSeconds + t;
  }
  if (present(expiration)) {
    const e = integer(expiration);
    if (e === null) throw new KVError(400, CODE.badExpiration, `Invalid expiration of ${JSON.stringify(expiration)}. Please specify an integer number of seconds since the UNIX epoch.`);
    if (e < nowSeconds + L.MIN_EXPIRATION_TTL) {
      throw new KVError(400, CODE.badExpiration, `Invalid expiration of ${e}. Expiration times must be at least ${L.MIN_EXPIRATION_TTL} seconds in the future.`);
    }
    return e;
  }
  return null;
}

export function validateListLimit(raw: string | null): number {
  if (raw === null || raw === "") return L.DEFAULT_LIST_LIMIT;
  const n = integer(raw);
  if (n === null) throw new KVError(400, CODE.badListLimit, `Invalid list limit ${JSON.stringify(raw)}: it must be a number.`);
  if (n < 1) throw new KVError(400, CODE.badListLimit, `Invalid list limit of ${n}: it must be at least 1.`);
  if (n > L.MAX_LIST_LIMIT) throw new KVError(400, CODE.badListLimit, `Invalid list limit of ${n}: it must be at most ${L.MAX_LIST_LIMIT}.`);
  return n;
}

export function validateCacheTtl(raw: string | null): number | undefined {
  if (raw === null || raw === "") return undefined;
  const n = integer(raw);
  if (n === null || n < L.MIN_CACHE_TTL) throw new KVError(400, CODE.badRequest, `Invalid cache_ttl of ${JSON.stringify(raw)}. Cache TTL must be an integer of at least ${L.MIN_CACHE_TTL}.`);
  return n;
}

export function validateTitle(title: unknown): string {
  if (typeof title !== "string" || title.trim() === "") throw new KVError(400, CODE.badNamespaceTitle, "A namespace needs a non-empty string title.");
  const len = encoder.encode(title).byteLength;
  if (len > L.MAX_NAMESPACE_TITLE_BYTES) throw new KVError(400, CODE.badNamespaceTitle, `Namespace title length of ${len} exceeds limit of ${L.MAX_NAMESPACE_TITLE_BYTES}.`);
  return title;
}

export function positiveInt(name: string, raw: string | null, def: number, max: number): number {
  if (raw === null || raw === "") return def;
  const n = integer(raw);
  if (n === null || n < 1) throw new KVError(400, CODE.badRequest, `Invalid ${name} ${JSON.stringify(raw)}: it must be a positive integer.`);
  if (n > max) throw new KVError(400, CODE.badRequest, `Invalid ${name} of ${n}: it must be at most ${max}.`);
  return n;
}

export function oneOf<T extends string>(name: string, raw: string | null, allowed: readonly T[], def: T): T {
  if (raw === null || raw === "") return def;
  if (!(allowed as readonly string[]).includes(raw)) throw new KVError(400, CODE.badRequest, `Invalid ${name} ${JSON.stringify(raw)}: it must be one of ${allowed.join(", ")}.`);
  return raw as T;
}
