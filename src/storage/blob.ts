// The large-value blob store: one interface for S3-compatible object storage and the data dir's blob directory.
// Both implementations pass test/storage/blob-contract.ts.
import { BlobError } from "../errors.ts";

export type BlobBody = Uint8Array | ReadableStream<Uint8Array>;

export interface BlobEntry {
  key: string;
  size: number;
  /** Last write, milliseconds since the epoch: the orphan sweep leaves blobs younger than its grace alone. */
  modified: number;
}

export interface BlobPage {
  entries: BlobEntry[];
  /** Pass as `after` for the next page; undefined on the last page. */
  next?: string;
}

export interface BlobStore {
  /** "fs" or "s3", for metrics and logs. */
  readonly kind: string;
  /**
   * Stores the whole body under key, replacing any previous blob. Resolves only once the blob is durable and
   * complete; a reader never sees a partial blob. When size is given, a body of any other length is refused
   * and nothing is stored.
   */
  put(key: string, body: BlobBody, size?: number): Promise<void>;
  /** The blob as a stream, or null when there is none. Read it to the end or cancel it: it holds a file or a socket. */
  get(key: string): Promise<ReadableStream<Uint8Array> | null>;
  /** Removes the blob; a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Keys starting with prefix, in byte order, strictly after `after`, at most `limit` (default 1000) per page. */
  list(prefix: string, after?: string, limit?: number): Promise<BlobPage>;
  close(): Promise<void>;
}

/** S3's object key limit; the fs store keeps the same limit so both behave alike. */
export const BLOB_KEY_MAX_BYTES = 1024;
export const BLOB_LIST_MAX = 1000;

const utf8 = new TextEncoder();

export function checkBlobKey(key: string): Uint8Array {
  if (typeof key !== "string" || key.length === 0) throw new BlobError("blob key must be a non-empty string");
  const bytes = utf8.encode(key);
  if (bytes.length > BLOB_KEY_MAX_BYTES) {
    throw new BlobError(`UTF-8 encoded length of ${bytes.length} exceeds blob key length limit of ${BLOB_KEY_MAX_BYTES}.`);
  }
  return bytes;
}

export function checkListLimit(limit: number | undefined): number {
  if (limit === undefined) return BLOB_LIST_MAX;
  if (!Number.isInteger(limit) || limit < 1 || limit > BLOB_LIST_MAX) {
    throw new BlobError(`blob list limit ${limit} must be an integer between 1 and ${BLOB_LIST_MAX}`);
  }
  return limit;
}

export function checkSize(size: number | undefined): void {
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) {
    throw new BlobError(`blob size ${size} must be a non-negative integer`);
  }
}

export function sizeMismatch(key: string, declared: number, actual: number): BlobError {
  return new BlobError(`blob ${JSON.stringify(key)}: body has ${actual} bytes but size ${declared} was declared; nothing stored`);
}

/** Reads a whole blob stream into memory (callers bound the size: large values are at most 25 MiB). */
export async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Byte-order comparison of keys, as S3 lists them and as Postgres' bytea orders them. */
export function compareKeyBytes(a: string, b: string): number {
  const x = utf8.encode(a);
  const y = utf8.encode(b);
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/**
 * Yields a body as chunks of exactly `chunk` bytes (the last one shorter), buffering at most one chunk:
 * S3 parts must be at least 5 MiB except the last, and the fs store writes in bounded pieces.
 */
export async function* chunked(body: BlobBody, chunk: number): AsyncGenerator<Uint8Array> {
  if (body instanceof Uint8Array) {
    for (let off = 0; off < body.length; off += chunk) yield body.subarray(off, Math.min(off + chunk, body.length));
    return;
  }
  const reader = body.getReader();
  let buf = new Uint8Array(chunk);
  let fill = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      let off = 0;
      while (off < value.length) {
        const n = Math.min(chunk - fill, value.length - off);
        buf.set(value.subarray(off, off + n), fill);
        fill += n;
        off += n;
        if (fill === chunk) {
          yield buf;
          buf = new Uint8Array(chunk);
          fill = 0;
        }
      }
    }
    if (fill > 0) yield buf.subarray(0, fill);
  } finally {
    reader.releaseLock();
  }
}
