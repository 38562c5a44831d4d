// The one errors module (it imports nothing, so every layer may throw these): each error kvdrive raises on
// purpose is a class with a code. An HTTP client gets an ApiError's status and Cloudflare code in the v4
// envelope (src/http/envelope.ts); storage that cannot serve now is a StorageUnavailableError (HTTP 503,
// retry later); a Postgres client, or the /sql endpoint, gets a PoolerError's SQLSTATE; a bad setting is a
// ConfigError naming the variable, and a bad command line a UsageError. Errors are told apart by class (instanceof), never by their name as a string.

/** Cloudflare API error codes, in one place (the KV API's, and the generic ones every route uses). */
export const CODE = {
  auth: 10000,
  badRequest: 10001,
  keyNotFound: 10009,
  namespaceNotFound: 10013,
  namespaceTitleExists: 10014,
  badNamespaceTitle: 10019,
  badKey: 10020,
  valueTooLarge: 10021,
  metadataTooLarge: 10022,
  keyTooLong: 10025,
  badListLimit: 10026,
  badExpiration: 10033,
  badExpirationTtl: 10034,
  bulkTooLarge: 10037,
  badCursor: 10056,
  routeNotFound: 7003,
  methodNotAllowed: 10405,
  rateLimited: 971,
  internal: 10043,
} as const;

/** The error that reaches HTTP clients: a status, a stable Cloudflare code, and a message naming the value and the limit. */
export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Storage could not serve the request; it may be retried once storage is back (answered 503). */
export class StorageUnavailableError extends Error {
  override name = "StorageUnavailableError";
}

/** A backend did not answer within KVDRIVE_BACKEND_TIMEOUT_MS. */
export class BackendTimeoutError extends StorageUnavailableError {
  override name = "BackendTimeoutError";
}

/** The backend that may hold the newest version did not answer, or is too far behind to be written to now. */
export class BackendBehindError extends StorageUnavailableError {
  override name = "BackendBehindError";
}

/** An error from the origin or the pooler, with its SQLSTATE `code` (and the origin's other fields). */
export class PoolerError extends Error {
  override name = "PoolerError";
  constructor(
    message: string,
    readonly code: string,
    readonly fields: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A command line `bun run kvdrive` cannot run: the message says what to type instead. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** A setting with a bad value (or two that do not go together): the message names the variable and the expected form. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
