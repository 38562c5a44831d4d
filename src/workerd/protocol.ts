// The HTTP protocol workerd speaks to the service behind a `kvNamespace` binding (measured in
// ../shared/reference/workerd/kv-binding-protocol.md): which operation a request is, its key, and how an error
// becomes a reason phrase, since the Worker sees only `KV <OP> failed: <status> <reason phrase>`. Pure functions.
import { ApiError, CODE } from "../errors.ts";
import { validateKey } from "../kv/validate.ts";

export const NAMESPACE_HEADER = "x-kvdrive-namespace";
export const METADATA_HEADER = "cf-kv-metadata";
export const EXPIRATION_HEADER = "cf-expiration";

export type Operation =
  | { op: "get"; key: string; query: URLSearchParams }
  | { op: "put"; key: string; query: URLSearchParams }
  | { op: "delete"; key: string }
  | { op: "list"; query: URLSearchParams }
  | { op: "bulk_get" };

/**
 * The operation of one request. `rawUrl` is the request target as sent: a path (`style = host`) or an absolute
 * URL (the default proxy style). The key is the whole path after the first `/`, decoded once when
 * `urlencoded=true` (GET and PUT leave `:` and `+` raw, DELETE encodes them: decoding once is right for both,
 * and `+` is never a space).
 */
export function parseOperation(method: string, rawUrl: string): Operation {
  let target = rawUrl;
  if (!target.startsWith("/")) {
    const scheme = target.indexOf("://");
    const slash = scheme < 0 ? -1 : target.indexOf("/", scheme + 3);
    const q = target.indexOf("?", scheme + 3);
    target = slash >= 0 && (q < 0 || slash < q) ? target.slice(slash) : "/" + (q >= 0 ? target.slice(q) : "");
  }
  const q = target.indexOf("?");
  const rawPath = (q < 0 ? target : target.slice(0, q)).slice(1);
  const query = new URLSearchParams(q < 0 ? "" : target.slice(q + 1));
  if (rawPath === "") {
    if (method === "GET") return { op: "list", query };
    throw new ApiError(405, CODE.methodNotAllowed, `Method ${method} is not allowed on "/": list is GET.`);
  }
  if (rawPath === "bulk/get") {
    if (method === "POST") return { op: "bulk_get" };
  }
  if (method !== "GET" && method !== "PUT" && method !== "DELETE") {
    throw new ApiError(405, CODE.methodNotAllowed, `Method ${method} is not allowed on a key: use GET, PUT or DELETE.`);
  }
  const key = decodeKey(rawPath, query);
  validateKey(key);
  if (method === "DELETE") return { op: "delete", key };
  return { op: method === "GET" ? "get" : "put", key, query };
}

function decodeKey(raw: string, query: URLSearchParams): string {
  if (query.get("urlencoded")?.toLowerCase() !== "true") return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new ApiError(400, CODE.badKey, `Could not URL-decode key name ${JSON.stringify(raw.slice(0, 64))}.`);
  }
}

/** Metadata from the CF-KV-Metadata header (JSON), or undefined when absent. */
export function parseMetadataHeader(raw: string | null): unknown {
  if (raw === null) return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    throw new ApiError(400, CODE.badRequest, `Invalid ${METADATA_HEADER} header: it must be JSON.`);
  }
}

/**
 * Serialized metadata as a header value: JSON with every non-ASCII character escaped (\uXXXX), so the header is
 * plain ASCII whatever the HTTP stack does with other bytes, and workerd's JSON.parse gives the same value.
 */
export function asciiJson(json: string): string {
  return json.replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

/** A header value read as Latin-1 (one char per byte, as node:http does) back to the UTF-8 text it was sent as. */
export function utf8Header(value: string): string {
  return /[\x80-\xff]/.test(value) && !/[^\x00-\xff]/.test(value) ? Buffer.from(value, "latin1").toString("utf8") : value;
}

const MAX_REASON = 1024;

/**
 * An error message as an HTTP reason phrase: printable ASCII only (anything else escaped as \uXXXX, so a key
 * name survives), bounded in length. workerd shows it to the Worker verbatim.
 */
export function reasonPhrase(message: string): string {
  let out = "";
  for (const ch of message) {
    const c = ch.codePointAt(0)!;
    if (c >= 0x20 && c <= 0x7e) out += ch;
    else if (c <= 0xffff) out += "\\u" + c.toString(16).padStart(4, "0");
    else {
      const hi = Math.floor((c - 0x10000) / 0x400) + 0xd800;
      const lo = ((c - 0x10000) % 0x400) + 0xdc00;
      out += "\\u" + hi.toString(16) + "\\u" + lo.toString(16);
    }
    if (out.length > MAX_REASON) return out.slice(0, MAX_REASON - 3) + "...";
  }
  return out;
}
