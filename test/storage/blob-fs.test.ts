// The fs blob store against the shared blob contract, plus what only a directory can get wrong.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createFsBlobStore } from "../../src/storage/blob-fs.ts";
import { readAll, type BlobStore } from "../../src/storage/blob.ts";
import { loadConfig } from "../../src/config.ts";
import { openBlobStore } from "../../src/storage/blob-open.ts";
import { blobContract } from "./blob-contract.ts";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "kvdrive-blobfs-"));
const dir = path.join(root, "blobs");
let store: BlobStore;

beforeAll(async () => {
  store = await createFsBlobStore({ dir });
});
afterAll(async () => {
  await store.close();
  fs.rmSync(root, { recursive: true, force: true });
});

blobContract("fs", () => store, { largeBytes: 1024 * 1024, serverKeepsS3Guarantees: true });

const allFiles = (d: string): string[] =>
  fs.readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? allFiles(path.join(d, e.name)) : [path.join(d, e.name)]));

test("fs: file names are hashes, never the key, and no temp file is left behind", async () => {
  await store.put("names/../../escape", new TextEncoder().encode("x"));
  const files = allFiles(dir);
  expect(files.every((f) => /\/[0-9a-f]{2}\/[0-9a-f]{64}$/.test(f))).toBe(true);
  expect(fs.existsSync(path.join(root, "escape"))).toBe(false);
});

test("fs: stale temp files from a crash are removed at start-up, foreign files are ignored by list", async () => {
  const sub = path.join(dir, "ab");
  fs.mkdirSync(sub, { recursive: true });
  fs.writeFileSync(path.join(sub, ".tmp-deadbeef"), "half a blob");
  fs.writeFileSync(path.join(sub, "not-a-blob"), "random file");
  const again = await createFsBlobStore({ dir });
  expect(fs.existsSync(path.join(sub, ".tmp-deadbeef"))).toBe(false);
  await again.put("foreign/k", new TextEncoder().encode("v"));
  expect((await again.list("")).entries.some((e) => e.key === "foreign/k")).toBe(true);
  expect((await again.list("")).entries.every((e) => e.key !== "not-a-blob")).toBe(true);
});

test("fs: a reader holding a stream keeps reading the blob it opened while it is replaced and deleted", async () => {
  const first = new Uint8Array(3 * 1024 * 1024).fill(1);
  await store.put("hold/k", first);
  const s = (await store.get("hold/k"))!;
  await store.put("hold/k", new Uint8Array(10).fill(2));
  await store.delete("hold/k");
  const got = await readAll(s);
  expect(got.length).toBe(first.length);
  expect(got.every((b) => b === 1)).toBe(true);
  expect(await store.get("hold/k")).toBeNull();
});

test("without an S3 bucket, the configured blob store is the data dir's blobs/ directory", async () => {
  const dataDir = path.join(root, "datadir");
  const s = await openBlobStore(loadConfig({ dataDir }, {}));
  expect(s.kind).toBe("fs");
  await s.put("cfg/k", new TextEncoder().encode("v"));
  expect(fs.existsSync(path.join(dataDir, "blobs"))).toBe(true);
  expect(allFiles(path.join(dataDir, "blobs")).length).toBe(1);
  await s.close();
});
