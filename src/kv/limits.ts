// Workers KV's limits and query parameters, in one place (its error codes are in src/errors.ts, with every other).
export const MAX_KEY_BYTES = 512;
export const MAX_VALUE_BYTES = 25 * 1024 * 1024;
export const MAX_METADATA_BYTES = 1024;
export const MIN_EXPIRATION_TTL = 60;
export const MAX_LIST_LIMIT = 1000;
export const DEFAULT_LIST_LIMIT = 1000;
export const MAX_BULK_PAIRS = 10_000;
export const MAX_BULK_BYTES = 100 * 1024 * 1024;
export const MAX_BULK_GET_KEYS = 100;
export const MIN_CACHE_TTL = 30;
export const MAX_NAMESPACE_TITLE_BYTES = 512;
export const MAX_NAMESPACES_PER_PAGE = 100;
/** Latest accepted expiration, in unix seconds: 9999-12-31T23:59:59Z. */
export const MAX_EXPIRATION = 253_402_300_799;
/** Largest accepted cache_ttl, in seconds (one year). */
export const MAX_CACHE_TTL = 365 * 86_400;
/** Metadata nesting: 1024 serialized bytes cannot hold more than 512 levels; deeper is refused before serializing. */
export const MAX_METADATA_DEPTH = 512;
/** Account ids in paths (Cloudflare's are 32 hex characters). */
export const MAX_ACCOUNT_ID_BYTES = 128;

/** Query parameters of the value and list routes (REST and the workerd binding alike). */
export const PARAM = {
  cacheTtl: "cache_ttl",
  expiration: "expiration",
  expirationTtl: "expiration_ttl",
  listLimit: "limit",
  listPrefix: "prefix",
  listCursor: "cursor",
} as const;
