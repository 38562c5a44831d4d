// The S3 replica backend against a real s3rver: the shared backend contract (not atomic across keys), the
// order-preserving key encoding, and a halted endpoint failing calls fast instead of hanging them.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import { decodeKey, encodeKey, openS3Replica } from "../../src/storage/s3-replica.ts";
import type { Backend } from "../../src/storage/backend.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { backendContract } from "./contract.ts";

let s3: TestS3;
let backend: Backend;
beforeAll(async () => {
  s3 = await startTestS3("kv-replica-test");
  backend = await openS3Replica({ endpoint: s3.endpoint, bucket: s3.bucket, region: s3.region, accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, requestTimeoutMs: 2000 });
}, 60_000);
afterAll(async () => {
  await backend?.close();
  await s3?.stop();
}, 60_000);

backendContract("s3", () => backend, "s3c", { atomic: false, largeWriteRows: 600, refusedRow: "long-key" });

test("s3: the object key encoding keeps byte order and round-trips, within S3's key limit for 512-byte keys", () => {
  const samples = [[], [0], [0, 0], [0, 1], [1], [0x61], [0x61, 0x00], [0x61, 0x62], [0x62], [0xff], [0xff, 0xff], Array(512).fill(0xff)].map((a) => new Uint8Array(a));
  const sorted = [...samples].sort((a, b) => Buffer.compare(a, b));
  const byEncoding = [...samples].sort((a, b) => (encodeKey(a) < encodeKey(b) ? -1 : encodeKey(a) > encodeKey(b) ? 1 : 0));
  expect(byEncoding.map((k) => Buffer.from(k).toString("hex"))).toEqual(sorted.map((k) => Buffer.from(k).toString("hex")));
  for (const k of samples) expect(Buffer.from(decodeKey(encodeKey(k))).toString("hex")).toBe(Buffer.from(k).toString("hex"));
  for (let i = 0; i < 2000; i++) {
    const a = new Uint8Array(Math.floor(Math.random() * 6)).map(() => Math.floor(Math.random() * 4));
    const b = new Uint8Array(Math.floor(Math.random() * 6)).map(() => Math.floor(Math.random() * 4));
    expect(Math.sign(encodeKey(a) < encodeKey(b) ? -1 : encodeKey(a) > encodeKey(b) ? 1 : 0)).toBe(Math.sign(Buffer.compare(a, b)));
  }
  expect(encodeKey(new Uint8Array(512)).length + 3 + 53 + 1).toBeLessThanOrEqual(1024);
});

test("s3: with the endpoint halted, calls fail within seconds; after resume they work again", async () => {
  const k = new TextEncoder().encode("fault");
  await backend.write([{ ns: "s3c-fault", key: k, value: new Uint8Array([1]), metadata: null, expiration: null, version: { ts: 1, nonce: 1 }, tombstone: false }]);
  await s3.halt();
  try {
    const t = performance.now();
    await expect(backend.get("s3c-fault", k)).rejects.toThrow();
    await expect(backend.write([{ ns: "s3c-fault", key: k, value: new Uint8Array([2]), metadata: null, expiration: null, version: { ts: 2, nonce: 1 }, tombstone: false }])).rejects.toThrow();
    expect(await backend.ping()).toBe(false);
    expect(performance.now() - t).toBeLessThan(15_000);
  } finally {
    await s3.resume();
  }
  expect((await backend.get("s3c-fault", k))!.value).toEqual(new Uint8Array([1]));
  expect(await backend.ping()).toBe(true);
});

test("s3: a 512-byte key round-trips through write, get, list and scan (split into path segments file-backed stores accept)", async () => {
  const long = new Uint8Array(512).fill(0x7a);
  const longer = new Uint8Array(512).fill(0x7a);
  longer[511] = 0x7b;
  const mk = (key: Uint8Array, v: number) => ({ ns: "s3c-long", key, value: new Uint8Array([v]), metadata: null, expiration: null, version: { ts: 1, nonce: 1 }, tombstone: false });
  expect(await backend.write([mk(long, 1), mk(longer, 2), mk(new Uint8Array([0x7a]), 3)])).toEqual([true, true, true]);
  expect((await backend.get("s3c-long", long))!.value).toEqual(new Uint8Array([1]));
  const listed = await backend.list({ ns: "s3c-long", after: null, from: null, before: null, limit: 10, now: 0 });
  expect(listed.map((e) => e.key.length)).toEqual([1, 512, 512]);
  expect(listed[2]!.key[511]).toBe(0x7b);
  const scanned = await backend.scan({ ns: "s3c-long", after: long, before: null, limit: 10 });
  expect(scanned.map((e) => e.value![0])).toEqual([2]);
});

test("s3: an endpoint that accepts connections and never answers fails calls within the timeout", async () => {
  const net = await import("node:net");
  const silent = net.createServer(() => {});
  await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
  const port = (silent.address() as { port: number }).port;
  const hung = await openS3Replica({ endpoint: `http://127.0.0.1:${port}`, bucket: "b", region: "us-east-1", accessKeyId: "x", secretAccessKey: "y", requestTimeoutMs: 1000, mode: "verify" });
  try {
    const t = performance.now();
    await expect(hung.get("s3c-x", new Uint8Array([1]))).rejects.toThrow();
    expect(performance.now() - t).toBeLessThan(15_000);
  } finally {
    await hung.close();
    silent.close();
  }
});
