// The S3 blob store against the shared blob contract on a real s3rver, plus multipart and outage behaviour.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { ListObjectsV2Command, type S3Client } from "@aws-sdk/client-s3";
import { loadConfig } from "../../src/config.ts";
import { createS3BlobStore, createS3Client, MIN_PART_BYTES, s3OptionsFromConfig } from "../../src/storage/blob-s3.ts";
import { readAll, type BlobStore } from "../../src/storage/blob.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { openBlobStore } from "../../src/storage/blob-open.ts";
import { blobContract } from "./blob-contract.ts";

let s3: TestS3;
let client: S3Client;
let store: BlobStore;
const sent: string[] = [];

beforeAll(async () => {
  s3 = await startTestS3();
  client = createS3Client(s3);
  // Observe (not alter) which S3 operations the store sends, to see multipart really used.
  client.middlewareStack.add((next, context) => (args) => {
    sent.push(String(context.commandName));
    return next(args);
  }, { step: "initialize", name: "recordCommands" });
  store = createS3BlobStore({ ...s3, client, partBytes: MIN_PART_BYTES });
}, 60_000); // starting/stopping real servers on a busy 2-core machine
afterAll(async () => {
  await store.close();
  client.destroy();
  await s3.stop();
}, 60_000); // starting/stopping real servers on a busy 2-core machine

blobContract("s3", () => store, { largeBytes: MIN_PART_BYTES, serverKeepsS3Guarantees: false });

test("s3: small bodies use one PutObject, large ones a multipart upload of >= 5 MiB parts", async () => {
  sent.length = 0;
  await store.put("mp/small", new Uint8Array(1000));
  expect(sent).toEqual(["PutObjectCommand"]);
  sent.length = 0;
  await store.put("mp/large", new Uint8Array(MIN_PART_BYTES * 2 + 1).fill(5));
  expect(sent).toEqual([
    "CreateMultipartUploadCommand", "UploadPartCommand", "UploadPartCommand", "UploadPartCommand", "CompleteMultipartUploadCommand",
  ]);
  const back = await readAll((await store.get("mp/large"))!);
  expect(back.length).toBe(MIN_PART_BYTES * 2 + 1);
  expect(back.every((b) => b === 5)).toBe(true);
});

test("s3: a multipart upload that fails midway is aborted and leaves no object", async () => {
  sent.length = 0;
  let n = 0;
  const failing = new ReadableStream<Uint8Array>({
    pull(c) {
      if (n++ < 12) c.enqueue(new Uint8Array(1024 * 1024));
      else c.error(new Error("upstream reset"));
    },
  });
  await expect(store.put("mp/failed", failing)).rejects.toThrow("upstream reset");
  expect(sent).toContain("AbortMultipartUploadCommand");
  expect(sent).not.toContain("CompleteMultipartUploadCommand");
  expect(await store.get("mp/failed")).toBeNull();
  const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: "mp/failed" }));
  expect(listed.Contents ?? []).toEqual([]);
});

test("s3: objects are stored under the key itself (path-style, no rewriting)", async () => {
  await store.put("plain/key with space", new TextEncoder().encode("v"));
  const listed = await client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: "plain/" }));
  expect(listed.Contents!.map((o) => o.Key)).toEqual(["plain/key with space"]);
});

test("s3: with the server down, calls fail with an error instead of hanging, and work again after it returns", async () => {
  const quick = createS3BlobStore({ ...s3, partBytes: MIN_PART_BYTES });
  await quick.put("down/k", new TextEncoder().encode("before"));
  await s3.halt();
  try {
    await expect(quick.put("down/k2", new TextEncoder().encode("x"))).rejects.toThrow();
    await expect(quick.get("down/k")).rejects.toThrow();
  } finally {
    await s3.resume();
  }
  expect(new TextDecoder().decode(await readAll((await quick.get("down/k"))!))).toBe("before");
  await quick.close();
});

test("s3: settings come from the config table and bad combinations name the variable", () => {
  expect(s3OptionsFromConfig(loadConfig({}, {}))).toBeNull();
  const o = s3OptionsFromConfig(loadConfig({}, {
    KVDRIVE_S3_BUCKET: "b1", KVDRIVE_S3_ENDPOINT: "http://127.0.0.1:9000", AWS_ACCESS_KEY_ID: "a", AWS_SECRET_ACCESS_KEY: "s",
  }))!;
  expect(o).toEqual({ bucket: "b1", endpoint: "http://127.0.0.1:9000", region: "us-east-1", accessKeyId: "a", secretAccessKey: "s" });
  expect(loadConfig({}, {}).largeValueBytes).toBe(131072);
  expect(() => s3OptionsFromConfig(loadConfig({}, { KVDRIVE_S3_ENDPOINT: "http://x" }))).toThrow(/KVDRIVE_S3_BUCKET/);
  expect(() => s3OptionsFromConfig(loadConfig({}, { KVDRIVE_S3_BUCKET: "b", KVDRIVE_S3_ENDPOINT: "not a url" }))).toThrow(/KVDRIVE_S3_ENDPOINT/);
  expect(() => s3OptionsFromConfig(loadConfig({}, { KVDRIVE_S3_BUCKET: "b", AWS_ACCESS_KEY_ID: "a" }))).toThrow(/AWS_SECRET_ACCESS_KEY/);
  expect(() => createS3BlobStore({ bucket: "b", partBytes: 1024 })).toThrow(/minimum part size of 5242880/);
});

test("with KVDRIVE_S3_BUCKET set, the configured blob store is S3 at that endpoint", async () => {
  const s = await openBlobStore(loadConfig({}, {
    KVDRIVE_S3_BUCKET: s3.bucket, KVDRIVE_S3_ENDPOINT: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  }));
  expect(s.kind).toBe("s3");
  await s.put("cfg/k", new TextEncoder().encode("via config"));
  expect(new TextDecoder().decode(await readAll((await store.get("cfg/k"))!))).toBe("via config");
  await s.close();
});
