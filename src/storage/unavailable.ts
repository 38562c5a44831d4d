// Which storage failures mean "storage is unavailable, retry later" (a 503) rather than a defect (a 500):
// a cluster that refuses or drops connections, is shutting down or starting up, has no connection slot left,
// or does not answer in time; an object store that cannot be reached or answers 500/502/503/504. Everything else is a real error.

import { StorageUnavailableError } from "../errors.ts";

// Postgres SQLSTATEs of a server that is there but cannot serve now: class 08 (connection exception) is
// matched by prefix; admin shutdown, crash shutdown, cannot connect now (starting up or shutting down),
// too many connections, and a statement cancelled because the server is going away.
const UNAVAILABLE_SQLSTATES = new Set(["57P01", "57P02", "57P03", "57P05", "53300", "53400"]);
// Socket-level failures, from Bun.SQL's own codes or from node's net layer (the S3 client).
const UNAVAILABLE_SOCKET_CODES = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN",
  "ConnectionRefused", "ConnectionClosed", "ConnectionReset", "UND_ERR_SOCKET", "UND_ERR_CONNECT_TIMEOUT",
]);

/** A short reason when `e` means storage is unavailable, else null. Looks through `cause` chains. */
export function unavailableReason(e: unknown, depth = 0): string | null {
  if (depth > 4 || typeof e !== "object" || e === null) return null;
  const err = e as { name?: unknown; code?: unknown; errno?: unknown; message?: unknown; cause?: unknown; $metadata?: { httpStatusCode?: number } };
  const name = typeof err.name === "string" ? err.name : "";
  const code = typeof err.code === "string" ? err.code : "";
  const sqlstate = typeof err.errno === "string" && /^[0-9A-Z]{5}$/.test(err.errno) ? err.errno : /^[0-9A-Z]{5}$/.test(code) ? code : "";
  const message = typeof err.message === "string" ? err.message : "";
  // kvdrive's own (a backend too slow or not to be trusted to be current), then a timeout from outside: a
  // DOMException of AbortSignal.timeout() or the AWS SDK's.
  if (e instanceof StorageUnavailableError) return message || name;
  if (name === "TimeoutError") return message || name;
  // Bun.SQL: ERR_POSTGRES_CONNECTION_REFUSED / _CLOSED / _TIMEOUT, ERR_POSTGRES_IDLE_TIMEOUT, ERR_POSTGRES_LIFETIME_TIMEOUT.
  if (/^ERR_POSTGRES_(CONNECTION_|IDLE_TIMEOUT|LIFETIME_TIMEOUT|CONNECTION_TIMEOUT)/.test(code)) return `${code}: ${message}`;
  if (sqlstate && (sqlstate.startsWith("08") || UNAVAILABLE_SQLSTATES.has(sqlstate))) return `${sqlstate}: ${message}`;
  if (UNAVAILABLE_SOCKET_CODES.has(code)) return `${code}: ${message}`;
  const status = err.$metadata?.httpStatusCode;
  // 500 too: S3 documents InternalError as "please try again" (its SDK retries it as transient), not as a
  // defect of the request.
  if (status === 500 || status === 503 || status === 502 || status === 504) return `object store answered ${status}`;
  return unavailableReason(err.cause, depth + 1);
}
