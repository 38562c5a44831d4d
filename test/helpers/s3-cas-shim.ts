// A STAND-IN, named as such: an HTTP proxy in front of s3rver that honours If-Match / If-None-Match on object
// PUT and DELETE, the way AWS S3, R2 and MinIO do. s3rver ignores those headers, and no S3 server that honours
// them installs from npm, so this is how the compare-and-swap path of src/storage/s3-conditional.ts meets a
// real server: the check happens here (per key, serialised), everything else is s3rver's. Requests are
// forwarded byte for byte with their Host header, so the client's SigV4 signatures still verify at s3rver.
import { HeadObjectCommand, S3Client } from "@aws-sdk/client-s3";
import type { TestS3 } from "./s3.ts";

export interface CasShim {
  endpoint: string;
  /** Conditional requests that failed with 412 here. */
  rejected(): number;
  stop(): Promise<void>;
}

export function startCasShim(s3: TestS3): CasShim {
  const head = new S3Client({
    endpoint: s3.endpoint, forcePathStyle: true, region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  const locks = new Map<string, Promise<unknown>>();
  let rejected = 0;

  // Runs fn after every earlier request on the same object, so check-then-write is atomic per key.
  const withLock = <T>(id: string, fn: () => Promise<T>): Promise<T> => {
    const prev = locks.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    locks.set(id, tail);
    void tail.then(() => locks.get(id) === tail && locks.delete(id));
    return next;
  };

  const currentEtag = async (key: string): Promise<string | null> => {
    try {
      return (await head.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: key }))).ETag ?? "";
    } catch (e) {
      if ((e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return null;
      throw e;
    }
  };

  const forward = async (req: Request, body: ArrayBuffer | null) => {
    const url = new URL(req.url);
    const headers = new Headers(req.headers);
    const r = await fetch(s3.endpoint + url.pathname + url.search, { method: req.method, headers, body, redirect: "manual" });
    return new Response(r.body, { status: r.status, headers: r.headers });
  };

  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const body = req.method === "GET" || req.method === "HEAD" ? null : await req.arrayBuffer();
      const url = new URL(req.url);
      const ifMatch = req.headers.get("if-match");
      const ifNoneMatch = req.headers.get("if-none-match");
      const prefix = `/${s3.bucket}/`;
      const isObjectWrite = (req.method === "PUT" || req.method === "DELETE") && url.pathname.startsWith(prefix) && !url.search.includes("uploadId");
      if (!isObjectWrite || (!ifMatch && !ifNoneMatch)) return forward(req, body);
      const key = decodeURIComponent(url.pathname.slice(prefix.length));
      return withLock(key, async () => {
        const etag = await currentEtag(key);
        const fails = (ifNoneMatch === "*" && etag !== null) || (ifMatch !== null && etag !== ifMatch);
        if (fails) {
          rejected++;
          return new Response(
            `<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>`,
            { status: 412, headers: { "content-type": "application/xml" } },
          );
        }
        return forward(req, body);
      });
    },
  });

  return {
    endpoint: `http://127.0.0.1:${server.port}`,
    rejected: () => rejected,
    async stop() {
      server.stop(true);
      head.destroy();
    },
  };
}
