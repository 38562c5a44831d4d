// The Cloudflare v4 envelope, and the one place where errors become HTTP responses (never a stack trace).
import { ApiError, CODE, ShuttingDownError, StorageFaultError, StorageUnavailableError } from "../errors.ts";

// Response copies these; a prebuilt Headers is several times cheaper to copy than an object to convert.
const JSON_HEADERS = new Headers({ "content-type": "application/json" });

export function ok(result: unknown, resultInfo?: unknown, status = 200): Response {
  const body: Record<string, unknown> = { success: true, errors: [], messages: [], result };
  if (resultInfo !== undefined) body.result_info = resultInfo;
  return new Response(JSON.stringify(body), { status, headers: JSON_HEADERS });
}

export function fail(status: number, code: number, message: string): Response {
  return new Response(JSON.stringify({ success: false, errors: [{ code, message }], messages: [], result: null }), { status, headers: JSON_HEADERS });
}

/** Maps anything thrown while serving a request to an envelope. Unknown errors are logged and answered generically. */
export function errorResponse(error: unknown, log: (msg: string) => void = console.error): Response {
  if (error instanceof ApiError) return fail(error.status, error.code, error.message);
  if (error instanceof SyntaxError) return fail(400, CODE.badRequest, `Malformed request body: ${error.message}`);
  // Recursion past the stack can only come from input nested too deeply (the routes bound nesting; this is the backstop).
  if (error instanceof RangeError && /call stack/i.test(error.message)) return fail(400, CODE.badRequest, "Input nested too deeply.");
  // A backend too slow, or the only one holding the newest version not answering: the request may be retried.
  if (error instanceof StorageUnavailableError) {
    return fail(error.status, error.code, `Storage temporarily unavailable: ${error.message}`);
  }
  if (error instanceof ShuttingDownError) return fail(error.status, error.code, error.message);
  // A broken invariant inside storage is logged with its detail (it names the key) and answered with its status.
  if (error instanceof StorageFaultError) {
    log(`kvdrive: storage fault: ${error.stack ?? error.message}`);
    return fail(error.status, error.code, error.status === 503 ? `Storage temporarily unavailable: ${error.message}` : "Internal error: the request could not be completed. It has been logged.");
  }
  log(`kvdrive: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  return fail(500, CODE.internal, "Internal error: the request could not be completed. It has been logged.");
}
