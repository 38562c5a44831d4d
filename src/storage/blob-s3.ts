// The blob store on S3-compatible object storage. Bodies up to one part go up in a single PutObject; larger
// ones in a multipart upload whose parts are sent as they fill, so memory holds at most one part. A failed
// multipart upload is aborted, so no half-object becomes visible and no parts are left billed.
import {
  AbortMultipartUploadCommand, CompleteMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand,
  GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, UploadPartCommand, type CompletedPart,
} from "@aws-sdk/client-s3";
import type { Config } from "../config.ts";
import { ConfigError } from "../errors.ts";
import {
  checkBlobKey, checkListLimit, checkSize, chunked, sizeMismatch, type BlobBody, type BlobStore,
} from "./blob.ts";

/** S3's minimum size for every part but the last. */
export const MIN_PART_BYTES = 5 * 1024 * 1024;
export const DEFAULT_PART_BYTES = 8 * 1024 * 1024;

export interface S3Options {
  /** S3-compatible endpoint (MinIO, R2, s3rver…). When set, path-style addressing is used. Unset: AWS. */
  endpoint?: string;
  bucket: string;
  region?: string;
  accessKeyId?: string;
  secretAccessKey?: string;
}

export interface S3BlobOptions extends S3Options {
  /** Bodies larger than this use multipart upload, in parts of this size. At least 5 MiB. */
  partBytes?: number;
  /** Use this client instead of building one (it is not destroyed on close). */
  client?: S3Client;
}

/** The large-value store's S3 settings, or null when no bucket is configured (then the fs store is used). */
export function s3OptionsFromConfig(cfg: Config): S3Options | null {
  if (!cfg.s3Bucket) {
    if (cfg.s3Endpoint) throw new ConfigError("KVDRIVE_S3_ENDPOINT is set but KVDRIVE_S3_BUCKET is not");
    return null;
  }
  if (cfg.s3Endpoint) {
    let u: URL;
    try {
      u = new URL(cfg.s3Endpoint);
    } catch {
      throw new ConfigError(`KVDRIVE_S3_ENDPOINT=${JSON.stringify(cfg.s3Endpoint)} is not a URL`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new ConfigError(`KVDRIVE_S3_ENDPOINT must use http:// or https://, got ${JSON.stringify(u.protocol)}`);
    }
  }
  if (Boolean(cfg.awsAccessKeyId) !== Boolean(cfg.awsSecretAccessKey)) {
    throw new ConfigError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together");
  }
  return {
    endpoint: cfg.s3Endpoint,
    bucket: cfg.s3Bucket,
    region: cfg.s3Region,
    accessKeyId: cfg.awsAccessKeyId,
    secretAccessKey: cfg.awsSecretAccessKey,
  };
}

export function createS3Client(opts: S3Options): S3Client {
  return new S3Client({
    region: opts.region ?? "us-east-1",
    ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
    ...(opts.accessKeyId && opts.secretAccessKey
      ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } }
      : {}),
  });
}

export const isS3NotFound = (e: unknown) => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err?.name === "NoSuchKey" || err?.name === "NotFound" || err?.$metadata?.httpStatusCode === 404;
};

export function createS3BlobStore(opts: S3BlobOptions): BlobStore {
  const partBytes = opts.partBytes ?? DEFAULT_PART_BYTES;
  if (!Number.isInteger(partBytes) || partBytes < MIN_PART_BYTES) {
    throw new ConfigError(`S3 part size ${partBytes} is below S3's minimum part size of ${MIN_PART_BYTES} bytes`);
  }
  const client = opts.client ?? createS3Client(opts);
  const Bucket = opts.bucket;

  async function put(key: string, body: BlobBody, size?: number) {
    checkBlobKey(key);
    checkSize(size);
    const parts = chunked(body, partBytes);
    try {
      const first = await parts.next();
      const firstPart = first.done ? new Uint8Array(0) : first.value;
      const second = first.done ? first : await parts.next();
      if (second.done) {
        if (size !== undefined && firstPart.length !== size) throw sizeMismatch(key, size, firstPart.length);
        await client.send(new PutObjectCommand({ Bucket, Key: key, Body: firstPart, ContentLength: firstPart.length }));
        return;
      }
      await multipart(key, firstPart, second.value, parts, size);
    } catch (e) {
      await parts.return(undefined);
      if (!(body instanceof Uint8Array)) await body.cancel().catch(() => {});
      throw e;
    }
  }

  async function multipart(key: string, p1: Uint8Array, p2: Uint8Array, rest: AsyncGenerator<Uint8Array>, size?: number) {
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket, Key: key }));
    const done: CompletedPart[] = [];
    let total = 0;
    const upload = async (data: Uint8Array) => {
      total += data.length;
      if (size !== undefined && total > size) throw sizeMismatch(key, size, total);
      const PartNumber = done.length + 1;
      const r = await client.send(new UploadPartCommand({ Bucket, Key: key, UploadId, PartNumber, Body: data, ContentLength: data.length }));
      done.push({ ETag: r.ETag, PartNumber });
    };
    try {
      await upload(p1);
      await upload(p2);
      for await (const p of rest) await upload(p);
      if (size !== undefined && total !== size) throw sizeMismatch(key, size, total);
      await client.send(new CompleteMultipartUploadCommand({ Bucket, Key: key, UploadId, MultipartUpload: { Parts: done } }));
    } catch (e) {
      await client.send(new AbortMultipartUploadCommand({ Bucket, Key: key, UploadId })).catch(() => {});
      throw e;
    }
  }

  async function get(key: string): Promise<ReadableStream<Uint8Array> | null> {
    checkBlobKey(key);
    try {
      const r = await client.send(new GetObjectCommand({ Bucket, Key: key }));
      if (!r.Body) return new ReadableStream({ start: (c) => c.close() });
      return r.Body.transformToWebStream() as ReadableStream<Uint8Array>;
    } catch (e) {
      if (isS3NotFound(e)) return null;
      throw e;
    }
  }

  async function del(key: string) {
    checkBlobKey(key);
    try {
      await client.send(new DeleteObjectCommand({ Bucket, Key: key }));
    } catch (e) {
      if (!isS3NotFound(e)) throw e;
    }
  }

  async function list(prefix: string, after?: string, limit?: number) {
    const MaxKeys = checkListLimit(limit);
    const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix || undefined, StartAfter: after, MaxKeys }));
    const entries = (r.Contents ?? []).map((o) => ({ key: o.Key!, size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 }));
    return { entries, next: r.IsTruncated && entries.length ? entries[entries.length - 1]!.key : undefined };
  }

  return {
    kind: "s3",
    put,
    get,
    delete: del,
    list,
    close: async () => {
      if (!opts.client) client.destroy();
    },
  };
}
