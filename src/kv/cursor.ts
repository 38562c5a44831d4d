// List cursors and prefix ranges. A cursor names the last key returned, so a key written during
// pagination still shows up on a later page if it sorts after it.
import { ApiError, CODE } from "../errors.ts";
import { MAX_KEY_BYTES } from "./limits.ts";

const CURSOR_TAG = "k1";

export function encodeCursor(lastKey: Uint8Array): string {
  return CURSOR_TAG + Buffer.from(lastKey.buffer, lastKey.byteOffset, lastKey.byteLength).toString("base64url");
}

export function decodeCursor(cursor: string): Uint8Array {
  const body = cursor.startsWith(CURSOR_TAG) ? cursor.slice(CURSOR_TAG.length) : null;
  if (body === null || body.length === 0 || !/^[A-Za-z0-9_-]+$/.test(body)) {
    throw new ApiError(400, CODE.badCursor, `invalid list cursor ${JSON.stringify(cursor.slice(0, 64))}: pass the cursor returned by the previous page`);
  }
  const key = Buffer.from(body, "base64url");
  if (key.length === 0 || key.length > MAX_KEY_BYTES || key.toString("base64url") !== body) {
    throw new ApiError(400, CODE.badCursor, `invalid list cursor ${JSON.stringify(cursor.slice(0, 64))}: pass the cursor returned by the previous page`);
  }
  return new Uint8Array(key);
}

/** The smallest byte string greater than every string starting with prefix, or null when there is none. */
export function prefixUpperBound(prefix: Uint8Array): Uint8Array | null {
  let end = prefix.length;
  while (end > 0 && prefix[end - 1] === 0xff) end--;
  if (end === 0) return null;
  const out = prefix.slice(0, end);
  out[end - 1]!++;
  return out;
}
