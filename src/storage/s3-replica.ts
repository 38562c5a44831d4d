// The S3 replica: a Backend holding every KV entry in an S3 bucket, the article's independent object-store
// provider. One object per entry, under `${prefix}${enc(ns)}/${enc(key)}`, where enc is unpadded base32hex:
// it keeps byte order (so ListObjectsV2 lists keys in the same order as Postgres' bytea), uses only characters
// above "/" (so namespaces list in order with a "/" delimiter), and keeps a 512-byte key within S3's 1,024-byte
// object key limit. The body is the value; user metadata holds the version (kv-version, written by the
// conditional writer), the tombstone flag, the expiration and the metadata JSON (base64url: headers are ASCII).
//
// Writes are conditional (s3-conditional.ts): compare-and-swap where the endpoint supports it, else
// read-compare-write-verify. A multi-row write is not atomic across keys. Listing, scans and digests read each
// object's head; they serve the crawler and fallbacks, not the hot path. A full walk for expired entries runs
// at most once per purgeEveryMs.
import {
  DeleteObjectsCommand, GetObjectCommand, HeadBucketCommand, ListObjectsV2Command, type S3Client,
} from "@aws-sdk/client-s3";
import { NodeHttpHandler } from "@smithy/node-http-handler";
import { S3Client as Client } from "@aws-sdk/client-s3";
import { digestOf } from "./digest.ts";
import type { Digest, KeyRange, StoredEntry, Version } from "./entry.ts";
import { isS3NotFound, type S3Options } from "./blob-s3.ts";
import { createConditionalWriter, decodeVersion, VERSION_METADATA, type ConditionalMode } from "./s3-conditional.ts";
import { sortNewestPerKey } from "./store.ts";
import type { Backend, EntryRef, KeyVersion, ListedEntry, ScanQuery } from "./backend.ts";

export interface S3ReplicaOptions extends S3Options {
  /** Prefix of every object (default "kv/"), so the bucket can hold other things. */
  prefix?: string;
  /** Requests in flight per call (default 16). */
  concurrency?: number;
  /** Per-request timeout in ms (default 5,000): a down endpoint fails calls fast instead of hanging them. */
  requestTimeoutMs?: number;
  /** Skip the conditional-write probe. */
  mode?: ConditionalMode;
  /** Least time between two full walks for expired entries (default 1 h). */
  purgeEveryMs?: number;
  client?: S3Client;
}

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUV";
const utf8 = new TextEncoder();

/** Unpadded base32hex: order-preserving for byte strings. */
export function encodeKey(bytes: Uint8Array): string {
  let out = "";
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >>> bits) & 31];
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31];
  return out;
}

export function decodeKey(s: string): Uint8Array {
  const out = new Uint8Array(Math.floor((s.length * 5) / 8));
  let acc = 0;
  let bits = 0;
  let n = 0;
  for (const ch of s) {
    const v = ALPHABET.indexOf(ch);
    if (v < 0) throw new Error(`object key part ${JSON.stringify(s)} is not base32hex`);
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (acc >>> bits) & 255;
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/**
 * A "/" every SEGMENT characters: file-backed stores (s3rver, MinIO) keep each path segment as a file name,
 * limited to 255 bytes. Breaks sit at the same positions in every key and "/" sorts below every base32hex
 * character, so order is kept.
 */
const SEGMENT = 200;
export function segmented(enc: string): string {
  if (enc.length <= SEGMENT) return enc;
  const parts: string[] = [];
  for (let i = 0; i < enc.length; i += SEGMENT) parts.push(enc.slice(i, i + SEGMENT));
  return parts.join("/");
}

/** The greatest string below s that no encoded key lies between: StartAfter for an inclusive lower bound. */
function justBefore(s: string): string {
  if (s.length === 0) return "";
  const last = s[s.length - 1]!;
  const i = ALPHABET.indexOf(last);
  return i === 0 ? s.slice(0, -1) : s.slice(0, -1) + ALPHABET[i - 1] + "~";
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64url");
const unb64 = (s: string) => Buffer.from(s, "base64url").toString("utf8");

interface Head {
  key: Uint8Array;
  version: Version;
  tombstone: boolean;
  expiration: number | null;
  metadata: string | null;
}

function fromMetadata(key: Uint8Array, md: Record<string, string>): Head | null {
  const version = decodeVersion(md[VERSION_METADATA]);
  if (!version) return null; // not written by kvdrive
  return {
    key,
    version,
    tombstone: md["kv-tomb"] === "1",
    expiration: md["kv-exp"] ? Number(md["kv-exp"]) : null,
    metadata: md["kv-meta"] !== undefined ? unb64(md["kv-meta"]) : null,
  };
}

/** Runs f over items with at most n in flight; results in input order. */
async function pool<T, R>(items: readonly T[], n: number, f: (t: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await f(items[i]!, i);
      }
    }),
  );
  return out;
}

export type S3ReplicaBackend = Backend & {
  /** "cas" when the endpoint honours If-Match/If-None-Match; "verify" when a write can be overtaken by an older one. */
  conditionalMode(): Promise<ConditionalMode>;
};

export async function openS3Replica(opts: S3ReplicaOptions): Promise<S3ReplicaBackend> {
  const prefix = opts.prefix ?? "kv/";
  const conc = opts.concurrency ?? 16;
  const Bucket = opts.bucket;
  const client =
    opts.client ??
    new Client({
      region: opts.region ?? "us-east-1",
      ...(opts.endpoint ? { endpoint: opts.endpoint, forcePathStyle: true } : {}),
      ...(opts.accessKeyId && opts.secretAccessKey ? { credentials: { accessKeyId: opts.accessKeyId, secretAccessKey: opts.secretAccessKey } } : {}),
      // Retries absorb transient 5xx (s3rver answers 500 when a GET meets a PUT of the same key); timeouts bound the rest.
      maxAttempts: 4,
      // throwOnRequestTimeout: without it a server that accepts and never answers hangs the call forever.
      requestHandler: new NodeHttpHandler({ connectionTimeout: Math.min(2000, opts.requestTimeoutMs ?? 5000), requestTimeout: opts.requestTimeoutMs ?? 5000, throwOnRequestTimeout: true }),
    });
  const cas = createConditionalWriter({ client, bucket: Bucket, mode: opts.mode, probePrefix: prefix });
  const purgeEvery = opts.purgeEveryMs ?? 3_600_000;
  let lastPurge = 0;

  const nsPrefix = (ns: string) => {
    if (ns.length === 0) throw new Error("namespace id must not be empty");
    return `${prefix}${encodeKey(utf8.encode(ns))}/`;
  };
  const objectKey = (ns: string, key: Uint8Array) => nsPrefix(ns) + segmented(encodeKey(key));

  async function get(ns: string, key: Uint8Array): Promise<StoredEntry | null> {
    // A body cut off mid-read (s3rver replaces files in place under a concurrent PUT) is read again; errors
    // before the body are the SDK's to retry.
    for (let attempt = 1; ; attempt++) {
      let r;
      try {
        r = await client.send(new GetObjectCommand({ Bucket, Key: objectKey(ns, key) }));
      } catch (e) {
        if (isS3NotFound(e)) return null;
        throw e;
      }
      let body: Uint8Array;
      try {
        body = new Uint8Array(await r.Body!.transformToByteArray());
      } catch (e) {
        if (attempt < 3) continue;
        throw e;
      }
      const h = fromMetadata(key, r.Metadata ?? {});
      if (!h) return null;
      return { ns, key, value: h.tombstone ? null : body, metadata: h.metadata, expiration: h.expiration, version: h.version, tombstone: h.tombstone };
    }
  }

  async function head(ns: string, key: Uint8Array): Promise<Head | null> {
    const h = await cas.head(objectKey(ns, key));
    return h ? fromMetadata(key, h.metadata) : null;
  }

  /**
   * Object keys of ns in order, strictly after `startAfter` (an encoded key, or "" for the start), below
   * `before`, at most `max`, one ListObjectsV2 page at a time.
   */
  async function listKeys(ns: string, startAfter: string, before: Uint8Array | null, max: number): Promise<Uint8Array[]> {
    const p = nsPrefix(ns);
    const end = before ? segmented(encodeKey(before)) : null;
    const out: Uint8Array[] = [];
    let token: string | undefined;
    let after = startAfter ? p + startAfter : undefined;
    while (out.length < max) {
      const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: p, StartAfter: token ? undefined : after, ContinuationToken: token, MaxKeys: Math.min(1000, max - out.length) }));
      for (const o of r.Contents ?? []) {
        const enc = o.Key!.slice(p.length);
        if (end !== null && enc >= end) return out;
        out.push(decodeKey(enc.replaceAll("/", "")));
      }
      if (!r.IsTruncated || !(r.Contents ?? []).length) break;
      // s3rver's continuation tokens are unreliable across pages: continue after the last key instead.
      after = r.Contents![r.Contents!.length - 1]!.Key!;
      token = undefined;
    }
    return out;
  }

  async function heads(ns: string, q: { after: Uint8Array | null; before: Uint8Array | null; limit: number; inclusiveFrom?: Uint8Array | null }): Promise<Head[]> {
    return (await headPage(ns, q)).heads;
  }

  /**
   * The heads of up to `limit` listed objects, and what was listed. An object removed between the listing and
   * its HEAD has no head: a caller that pages must go on from the last key *listed*, and stop only when the
   * listing itself came back short, or a vanished object would end the walk early and silently.
   */
  async function headPage(
    ns: string,
    q: { after: Uint8Array | null; before: Uint8Array | null; limit: number; inclusiveFrom?: Uint8Array | null; only?: (key: Uint8Array) => boolean; maxHeads?: number },
  ): Promise<{ heads: Head[]; more: boolean; last: Uint8Array | null }> {
    const start = q.inclusiveFrom && (!q.after || Buffer.compare(q.inclusiveFrom, q.after) > 0) ? justBefore(segmented(encodeKey(q.inclusiveFrom))) : q.after ? segmented(encodeKey(q.after)) : "";
    const keys = await listKeys(ns, start, q.before, q.limit);
    const only = q.only;
    let wanted = only ? keys.filter((k) => only(k)) : keys;
    // No more heads than the caller can use: the next page goes on after the last key read.
    const capped = q.maxHeads !== undefined && wanted.length > q.maxHeads;
    if (capped) wanted = wanted.slice(0, q.maxHeads);
    const hs = await pool(wanted, conc, (k) => head(ns, k));
    const last = capped ? wanted[wanted.length - 1]! : keys.length ? keys[keys.length - 1]! : null;
    return { heads: hs.filter((h): h is Head => h !== null), more: capped || keys.length >= q.limit, last };
  }

  async function* namespaces(): AsyncGenerator<string> {
    let after: string | undefined;
    for (;;) {
      const r = await client.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, Delimiter: "/", StartAfter: after, MaxKeys: 1000 }));
      const ps = (r.CommonPrefixes ?? []).map((c) => c.Prefix!).filter((x) => x.length > prefix.length);
      for (const x of ps) {
        try {
          yield new TextDecoder().decode(decodeKey(x.slice(prefix.length, -1)));
        } catch {
          // not one of ours
        }
      }
      if (!r.IsTruncated || ps.length === 0) return;
      after = ps[ps.length - 1]! + "~";
    }
  }

  return {
    conditionalMode: () => cas.mode(),
    get,
    getMany: (ns, keys) => pool(keys, conc, (k) => get(ns, k)),
    async write(rows) {
      if (rows.length === 0) return [];
      const written = sortNewestPerKey(rows);
      const results = await pool(written, conc, async (r) => {
        const md: Record<string, string> = { "kv-tomb": r.tombstone ? "1" : "0" };
        if (r.expiration !== null) md["kv-exp"] = String(r.expiration);
        if (r.metadata !== null) md["kv-meta"] = b64(r.metadata);
        const body = r.tombstone ? new Uint8Array(0) : (r.value ?? new Uint8Array(0));
        return (await cas.putIfNewer(objectKey(r.ns, r.key), body, r.version, md)).written;
      });
      const applied = new Map<StoredEntry, boolean>();
      written.forEach((r, i) => applied.set(r, results[i]!));
      return rows.map((r) => applied.get(r) ?? false);
    },
    async list(q): Promise<ListedEntry[]> {
      const out: ListedEntry[] = [];
      let after = q.after;
      let from = q.from;
      while (out.length < q.limit) {
        const want = q.limit - out.length;
        // With `only`, a LIST page can hold few wanted keys: list a full page, read heads of the wanted ones.
        const page = await headPage(q.ns, { after, before: q.before, limit: q.only ? 1000 : want, inclusiveFrom: from, only: q.only, maxHeads: want });
        for (const h of page.heads) {
          if (h.tombstone || (h.expiration !== null && h.expiration <= q.now)) continue;
          out.push({ key: h.key, metadata: h.metadata, expiration: h.expiration });
        }
        if (!page.more) break;
        after = page.last;
        from = null;
      }
      return out.slice(0, q.limit);
    },
    async purge(nowSeconds, tombstoneBeforeMicros) {
      if (Date.now() - lastPurge < purgeEvery && tombstoneBeforeMicros <= 0) return 0;
      lastPurge = Date.now();
      let removed = 0;
      for await (const ns of namespaces()) {
        let after: Uint8Array | null = null;
        for (;;) {
          const page = await heads(ns, { after, before: null, limit: 500 });
          const doomed = page.filter((h) => (h.tombstone ? h.version.ts < tombstoneBeforeMicros : h.expiration !== null && h.expiration <= nowSeconds));
          const ok = await pool(doomed, conc, (h) => cas.deleteIfVersion(objectKey(ns, h.key), h.version));
          removed += ok.filter(Boolean).length;
          if (page.length < 500) break;
          after = page[page.length - 1]!.key;
        }
      }
      return removed;
    },
    async dropNamespace(ns) {
      for (;;) {
        const keys = await listKeys(ns, "", null, 1000);
        if (keys.length === 0) return;
        await client.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.map((k) => ({ Key: objectKey(ns, k) })), Quiet: true } }));
        if (keys.length < 1000) return;
      }
    },
    async scan(q: ScanQuery) {
      const keys = await listKeys(q.ns, q.after ? segmented(encodeKey(q.after)) : "", q.before, q.limit);
      const got = await pool(keys, conc, (k) => get(q.ns, k));
      return got.filter((e): e is StoredEntry => e !== null);
    },
    async versions(q: ScanQuery): Promise<KeyVersion[]> {
      const hs = await heads(q.ns, { after: q.after, before: q.before, limit: q.limit });
      return hs.map((h) => ({ key: h.key, version: h.version, tombstone: h.tombstone, expiration: h.expiration }));
    },
    async digest(ns: string, range: KeyRange, nowSeconds: number): Promise<Digest> {
      const live: Head[] = [];
      let after: Uint8Array | null = null;
      let from: Uint8Array | null = range.start.length ? range.start : null;
      for (;;) {
        const page = await headPage(ns, { after, before: range.end, limit: 1000, inclusiveFrom: from });
        for (const h of page.heads) if (h.tombstone || h.expiration === null || h.expiration > nowSeconds) live.push(h);
        if (!page.more) break;
        after = page.last;
        from = null;
      }
      return digestOf(live);
    },
    async namespaceIds(after, limit) {
      const out: string[] = [];
      for await (const ns of namespaces()) {
        if (after !== null && ns <= after) continue;
        out.push(ns);
        if (out.length >= limit) break;
      }
      return out;
    },
    async tombstones(beforeMicros, after, limit) {
      const out: EntryRef[] = [];
      for await (const ns of namespaces()) {
        if (after && ns < after.ns) continue;
        let from: Uint8Array | null = after && ns === after.ns ? after.key : null;
        for (;;) {
          const page = await heads(ns, { after: from, before: null, limit: 500 });
          for (const h of page) if (h.tombstone && h.version.ts < beforeMicros) out.push({ ns, key: h.key, version: h.version });
          if (out.length >= limit) return out.slice(0, limit);
          if (page.length < 500) break;
          from = page[page.length - 1]!.key;
        }
      }
      return out;
    },
    async removeIfVersion(refs) {
      const ok = await pool(refs, conc, (r) => cas.deleteIfVersion(objectKey(r.ns, r.key), r.version));
      return ok.filter(Boolean).length;
    },
    async ping() {
      try {
        await client.send(new HeadBucketCommand({ Bucket }));
        return true;
      } catch {
        return false;
      }
    },
    async close() {
      if (!opts.client) client.destroy();
    },
  };
}
