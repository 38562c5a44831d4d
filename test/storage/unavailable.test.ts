// Which storage failures are "unavailable, retry" (503) and which are defects (500): the classifier alone,
// fed the errors the real drivers raise (the outage tests cover them end to end).
import { expect, test } from "bun:test";
import { BackendBehindError, BackendTimeoutError, StorageUnavailableError } from "../../src/errors.ts";
import { unavailableReason } from "../../src/storage/unavailable.ts";

const isStorageUnavailable = (e: unknown) => unavailableReason(e) !== null;

const pgError = (code: string, errno?: string, message = "x") => Object.assign(new Error(message), { name: "PostgresError", code, errno });

test("connection failures, shutdown, start-up, too many connections and timeouts are unavailable", () => {
  for (const e of [
    pgError("ERR_POSTGRES_CONNECTION_REFUSED", undefined, "Failed to connect"),
    pgError("ERR_POSTGRES_CONNECTION_CLOSED"),
    pgError("ERR_POSTGRES_CONNECTION_TIMEOUT"),
    pgError("ERR_POSTGRES_IDLE_TIMEOUT"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "57P01", "terminating connection due to administrator command"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "57P03", "the database system is starting up"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "53300", "sorry, too many clients already"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "08006"),
    Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:9"), { code: "ECONNREFUSED" }),
    Object.assign(new Error("socket hang up"), { code: "ECONNRESET" }),
    Object.assign(new Error("Service Unavailable"), { name: "ServiceUnavailable", $metadata: { httpStatusCode: 503 } }),
    Object.assign(new Error("We encountered an internal error. Please try again."), { name: "InternalError", $metadata: { httpStatusCode: 500 } }),
    new BackendTimeoutError("primary backend: get took longer than KVDRIVE_BACKEND_TIMEOUT_MS=10"),
    new BackendBehindError("retry the read"),
    new StorageUnavailableError("down"),
    new Error("wrapped", { cause: pgError("ERR_POSTGRES_CONNECTION_CLOSED") }),
  ]) {
    expect({ e: String(e), unavailable: isStorageUnavailable(e) }).toEqual({ e: String(e), unavailable: true });
  }
  expect(unavailableReason(pgError("ERR_POSTGRES_SERVER_ERROR", "57P01", "terminating"))).toBe("57P01: terminating");
});

test("query errors, constraint violations, bugs and non-errors stay defects (500)", () => {
  for (const e of [
    pgError("ERR_POSTGRES_SERVER_ERROR", "22003", "bigint out of range"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "23505", "duplicate key"),
    pgError("ERR_POSTGRES_SERVER_ERROR", "42P01", "relation does not exist"),
    new TypeError("undefined is not a function"),
    new RangeError("Maximum call stack size exceeded"),
    Object.assign(new Error("Access Denied"), { $metadata: { httpStatusCode: 403 } }),
    "a string",
    null,
    undefined,
  ]) {
    expect({ e: String(e), unavailable: isStorageUnavailable(e) }).toEqual({ e: String(e), unavailable: false });
  }
});
