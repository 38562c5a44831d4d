// Request bodies read with a bound: counted while streaming and refused past the limit, never buffered whole.
import { ApiError, CODE } from "../errors.ts";

/** The client went away or broke the framing mid-body: its fault, answered 400 (if anyone still listens). */
const truncated = () => new ApiError(400, CODE.badRequest, "The request body ended before its declared length (or its chunked framing broke).");

/** Our own refusals as they are; anything else the body read threw means the body broke off. */
const asBodyError = (e: unknown) => (e instanceof ApiError ? e : truncated());
const rethrowAsBodyError = (e: unknown): never => {
  throw asBodyError(e);
};

// Not async: a body of declared length is one promise (Bun's), its failures mapped on the way out (the mapping
// functions are module-level: nothing is allocated for them per request).
export function readLimited(req: Request, limit: number, tooLarge: (size: number) => ApiError): Promise<Uint8Array> {
  try {
    return readBody(req, limit, tooLarge).catch(rethrowAsBodyError);
  } catch (e) {
    return Promise.reject(asBodyError(e));
  }
}

function readBody(req: Request, limit: number, tooLarge: (size: number) => ApiError): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? NaN);
  if (declared > limit) throw tooLarge(declared);
  // A declared length within the limit is safe to take in one piece (Bun enforces the declared length). This
  // comes before req.body, whose getter builds a stream: the hot path (a PUT with Content-Length) never makes one.
  if (declared >= 0) return req.bytes();
  return readStream(req, limit, tooLarge);
}

/** A body of undeclared length (chunked), counted chunk by chunk and refused past the limit. */
async function readStream(req: Request, limit: number, tooLarge: (size: number) => ApiError): Promise<Uint8Array> {
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge(size);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

export async function readJson(req: Request, limit: number, tooLarge: (size: number) => ApiError): Promise<unknown> {
  const bytes = await readLimited(req, limit, tooLarge);
  let text: string;
  try {
    // fatal: invalid UTF-8 is refused, never turned into U+FFFD (two different keys would become one).
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError(400, CODE.badRequest, "The JSON body is not valid UTF-8.");
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    // Also RangeError: nesting too deep for the parser.
    throw new ApiError(400, CODE.badRequest, `Malformed JSON body: ${(e as Error).message.slice(0, 200)}`);
  }
}

export async function readForm(req: Request, limit: number, tooLarge: (size: number) => ApiError): Promise<FormData> {
  const bytes = await readLimited(req, limit, tooLarge);
  try {
    return (await new Response(bytes, { headers: { "content-type": req.headers.get("content-type") ?? "" } }).formData()) as unknown as FormData;
  } catch (e) {
    throw new ApiError(400, CODE.badRequest, `Malformed multipart body: ${(e as Error).message}`);
  }
}
