// Workers KV's limits, in one place.
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
