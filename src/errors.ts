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
  readonly status = 503;
  readonly code: number = CODE.internal;
}

/** A backend did not answer within KVDRIVE_BACKEND_TIMEOUT_MS. */
export class BackendTimeoutError extends StorageUnavailableError {
  override name = "BackendTimeoutError";
}

/** The backend that may hold the newest version did not answer, or is too far behind to be written to now. */
export class BackendBehindError extends StorageUnavailableError {
  override name = "BackendBehindError";
}

/** kvdrive is shutting down: a write that arrives now is refused, not acknowledged (HTTP 503; SQLSTATE 57P01). */
export class ShuttingDownError extends Error {
  override name = "ShuttingDownError";
  readonly status = 503;
  readonly code: number = CODE.internal;
  readonly sqlstate = "57P01";
}

/** A fault inside the storage layers that no client input explains (HTTP 500): a broken invariant, named with its key. */
export class StorageFaultError extends Error {
  override name = "StorageFaultError";
  readonly status: number = 500;
  readonly code: number = CODE.internal;
}

/** A blob store call with an argument out of its bounds (key length, list limit, size). */
export class BlobError extends StorageFaultError {
  override name = "BlobError";
}

/** A row points at a blob that is not there, and no newer row explains why. Never answered with a wrong value. */
export class LargeValueError extends StorageFaultError {
  override name = "LargeValueError";
}

/** The repair queue refused an item (closed, or a field over its bound). */
export class RepairQueueError extends StorageFaultError {
  override name = "RepairQueueError";
}

/** An object store without compare-and-swap kept losing the race to other writers: retry later (HTTP 503). */
export class ConditionalConflictError extends StorageFaultError {
  override name = "ConditionalConflictError";
  override readonly status = 503;
}

/**
 * How a server answers a protocol error, as Postgres does: an ErrorResponse; a protocol-2 error (a bare 'E' and
 * text, for a client that asked for protocol 2); or no answer at all, just closing (a start-up packet whose length
 * is invalid: that peer does not speak the protocol, or sent a Terminate before its StartupMessage).
 */
export type ErrorReply = "error" | "v2" | "close";

/** A peer broke the Postgres protocol; `code` is the SQLSTATE to report (08P01 protocol_violation by default). */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  constructor(message: string, readonly code = "08P01", readonly reply: ErrorReply = "error") {
    super(message);
  }
}

/** A SCRAM exchange message that is malformed or does not verify (SQLSTATE 08P01, or 28P01 for a wrong proof). */
export class ScramError extends Error {
  override name = "ScramError";
  constructor(message: string, readonly code = "08P01") {
    super(message);
  }
}

/** An error from the origin (or from reaching it), carrying the SQLSTATE to pass on. */
export class OriginError extends Error {
  override name = "OriginError";
  constructor(message: string, readonly code: string, readonly fields?: Record<string, string>) {
    super(message);
  }
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

/** A cluster list the shards cannot be built from: a ConfigError, reported at start-up like any bad setting. */
export class ShardConfigError extends ConfigError {
  override name = "ShardConfigError";
}

/** A hash ring that cannot be built (no node, a node twice, vnodes out of range): a ConfigError too. */
export class RingError extends ConfigError {
  override name = "RingError";
}
