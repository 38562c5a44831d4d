// Conditional writes on S3 for the replica backend: a repair or a late write never puts an older version over a
// newer one. Each object carries its entry version in user metadata (x-amz-meta-kv-version). Where the endpoint
// honours If-Match / If-None-Match (AWS S3, R2, MinIO) the write is a true compare-and-swap on the ETag read
// just before; where it ignores them (s3rver and older stores), it falls back to read, compare, write, verify.
import {
  DeleteObjectCommand, HeadObjectCommand, PutObjectCommand, type S3Client,
} from "@aws-sdk/client-s3";
import { randomBytes } from "node:crypto";
import { isS3NotFound } from "./blob-s3.ts";
import { compareVersions, type Version } from "./entry.ts";
import { ConditionalConflictError } from "../errors.ts";

export const VERSION_METADATA = "kv-version";

export const encodeVersion = (v: Version) => `${v.ts}-${v.nonce}`;

export function decodeVersion(s: string | undefined): Version | null {
  const m = s ? /^(\d{1,16})-(\d{1,10})$/.exec(s) : null;
  return m ? { ts: Number(m[1]), nonce: Number(m[2]) } : null;
}

/** "cas": the endpoint honours If-Match/If-None-Match. "verify": it ignores them; read-compare-write-verify. */
export type ConditionalMode = "cas" | "verify";

export interface StoredHead {
  etag: string;
  /** null for an object written without a version (not by kvdrive): any versioned write replaces it. */
  version: Version | null;
  metadata: Record<string, string>;
}

export interface PutIfNewerResult {
  written: boolean;
  /** What the object holds afterwards as far as this call saw: ours when written, else the newer one found. */
  stored: Version | null;
  mode: ConditionalMode;
}

export interface ConditionalWriter {
  /** Probes the endpoint once (a put of a scratch object, then a conflicting If-None-Match put) and caches it. */
  mode(): Promise<ConditionalMode>;
  head(key: string): Promise<StoredHead | null>;
  /** Writes body under key only if the stored version is older than `version` (or there is none). */
  putIfNewer(key: string, body: Uint8Array, version: Version, metadata?: Record<string, string>): Promise<PutIfNewerResult>;
  /** Deletes key only while it still holds exactly `version` (tombstone removal). True when it was deleted. */
  deleteIfVersion(key: string, version: Version): Promise<boolean>;
}

export interface ConditionalWriterOptions {
  client: S3Client;
  bucket: string;
  /** Skip the probe: for endpoints known either way. */
  mode?: ConditionalMode;
  /** Where the support probe writes its scratch object (deleted again). */
  probePrefix?: string;
  /** Attempts when another writer keeps winning the race, before ConditionalConflictError. */
  maxAttempts?: number;
}

const isPreconditionFailed = (e: unknown) => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  const status = err?.$metadata?.httpStatusCode;
  // 412: the condition failed. 409 ConditionalRequestConflict: a concurrent conditional write is in flight.
  return status === 412 || status === 409 || err?.name === "PreconditionFailed";
};

export function createConditionalWriter(opts: ConditionalWriterOptions): ConditionalWriter {
  const { client } = opts;
  const Bucket = opts.bucket;
  const maxAttempts = opts.maxAttempts ?? 5;
  let probed: Promise<ConditionalMode> | null = opts.mode ? Promise.resolve(opts.mode) : null;

  async function probe(): Promise<ConditionalMode> {
    const Key = `${opts.probePrefix ?? ""}.kvdrive-cas-probe-${randomBytes(8).toString("hex")}`;
    await client.send(new PutObjectCommand({ Bucket, Key, Body: new Uint8Array(0), IfNoneMatch: "*" }));
    try {
      await client.send(new PutObjectCommand({ Bucket, Key, Body: new Uint8Array(1), IfNoneMatch: "*" }));
      return "verify"; // the second create-only put succeeded: the header was ignored
    } catch (e) {
      if (isPreconditionFailed(e)) return "cas";
      const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 501 || status === 400) return "verify"; // the endpoint refuses conditional headers (HTTP 501/400)
      throw e;
    } finally {
      await client.send(new DeleteObjectCommand({ Bucket, Key })).catch(() => {});
    }
  }

  function mode() {
    probed ??= probe().catch((e) => {
      probed = null; // an outage during the probe must not pin a mode: probe again next time
      throw e;
    });
    return probed;
  }

  async function head(key: string): Promise<StoredHead | null> {
    try {
      const r = await client.send(new HeadObjectCommand({ Bucket, Key: key }));
      const metadata = r.Metadata ?? {};
      return { etag: r.ETag ?? "", version: decodeVersion(metadata[VERSION_METADATA]), metadata };
    } catch (e) {
      if (isS3NotFound(e)) return null;
      throw e;
    }
  }

  const put = (key: string, body: Uint8Array, version: Version, metadata: Record<string, string>, cond: { IfMatch?: string; IfNoneMatch?: string }) =>
    client.send(new PutObjectCommand({
      Bucket, Key: key, Body: body, ContentLength: body.length,
      Metadata: { ...metadata, [VERSION_METADATA]: encodeVersion(version) },
      ...cond,
    }));

  const isNewerThanStored = (h: StoredHead | null, v: Version) => !h || !h.version || compareVersions(v, h.version) > 0;

  async function putCas(key: string, body: Uint8Array, version: Version, metadata: Record<string, string>): Promise<PutIfNewerResult> {
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const h = await head(key);
      if (!isNewerThanStored(h, version)) return { written: false, stored: h!.version, mode: "cas" };
      try {
        await put(key, body, version, metadata, h ? { IfMatch: h.etag } : { IfNoneMatch: "*" });
        return { written: true, stored: version, mode: "cas" };
      } catch (e) {
        if (!isPreconditionFailed(e)) throw e;
        // someone wrote between our HEAD and PUT: look again, they may now be newer than us
      }
    }
    throw new ConditionalConflictError(`putIfNewer(${JSON.stringify(key)}): lost the compare-and-swap ${maxAttempts} times in a row`);
  }

  // Without compare-and-swap there is a window: a newer version written by someone else between our HEAD and
  // our PUT is overwritten by ours, and our verify then sees our own version. That writer's own verify catches
  // it only if it runs after our PUT. So the window is one HEAD->PUT round trip; what slips through is an older
  // version on the replica while the newer one is still on the primary, which read repair and the crawler
  // find (their digests differ) and copy again. The verify does catch the other order: an older writer landing
  // after us, which we undo by writing again.
  async function putVerify(key: string, body: Uint8Array, version: Version, metadata: Record<string, string>): Promise<PutIfNewerResult> {
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      const h = await head(key);
      if (!isNewerThanStored(h, version)) return { written: false, stored: h!.version, mode: "verify" };
      await put(key, body, version, metadata, {});
      const after = await head(key);
      if (after?.version && compareVersions(after.version, version) >= 0) return { written: true, stored: after.version, mode: "verify" };
      // an older version (or a delete) landed after ours: write again
    }
    throw new ConditionalConflictError(`putIfNewer(${JSON.stringify(key)}): older writes kept replacing ours ${maxAttempts} times in a row`);
  }

  // One conditional operation per key at a time from this writer: the next waits for the one in flight. In
  // "verify" mode this closes the HEAD->PUT window between this process's own writers of a key (a repair and
  // a live write, two overwrites), and it spares stores whose PUT is not atomic: s3rver writes the object and
  // its metadata file in place, so two PUTs of one key at once can leave a torn metadata file that answers
  // 500 to every later HEAD and GET of the key (seen in the list-during-outage test). In "cas" mode it saves
  // the retries of a lost swap. The map holds only keys with an operation in flight.
  const tails = new Map<string, Promise<unknown>>();
  function oneAtATime<T>(key: string, op: () => Promise<T>): Promise<T> {
    const before = tails.get(key);
    const run = before ? before.then(op, op) : op();
    const tail = run.then(() => {}, () => {});
    tails.set(key, tail);
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key);
    });
    return run;
  }

  function putIfNewer(key: string, body: Uint8Array, version: Version, metadata: Record<string, string> = {}) {
    return oneAtATime(key, async () =>
      (await mode()) === "cas" ? putCas(key, body, version, metadata) : putVerify(key, body, version, metadata));
  }

  // Same window as putVerify in "verify" mode: a newer write between our HEAD and our DELETE is deleted with it.
  // The primary still holds that newer write, so the crawler copies it back; a tombstone is only removed once
  // both backends hold it, so what is lost here is never the only copy.
  function deleteIfVersion(key: string, version: Version): Promise<boolean> {
    return oneAtATime(key, () => deleteExactVersion(key, version));
  }

  async function deleteExactVersion(key: string, version: Version): Promise<boolean> {
    const h = await head(key);
    if (!h?.version || compareVersions(h.version, version) !== 0) return false;
    try {
      await client.send(new DeleteObjectCommand({ Bucket, Key: key, ...((await mode()) === "cas" ? { IfMatch: h.etag } : {}) }));
      return true;
    } catch (e) {
      if (isPreconditionFailed(e)) return false;
      if (isS3NotFound(e)) return false;
      throw e;
    }
  }

  return { mode, head, putIfNewer, deleteIfVersion };
}
