// Large values in the blob store behind the Postgres backend: the shared backend contract through the wrapper
// (with a 4-byte threshold, so nearly every contract value takes the blob path), on the fs store and on a real
// s3rver, plus what is the wrapper's own: where the bytes live, which blobs go when, the orphan sweep and
// readers racing writers.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import fs from "node:fs";
import { manualClock } from "../../src/clock.ts";
import { createRegistry } from "../../src/metrics/registry.ts";
import { readAll, type BlobStore } from "../../src/storage/blob.ts";
import { createFsBlobStore } from "../../src/storage/blob-fs.ts";
import { createS3BlobStore } from "../../src/storage/blob-s3.ts";
import { parseBlobKey, withLargeValues, type LargeValueBackend, type LargeValueOptions } from "../../src/storage/large-values.ts";
import type { StoredEntry } from "../../src/storage/entry.ts";
import { openPostgresBackend } from "../../src/storage/store.ts";
import type { PostgresBackend } from "../../src/storage/backend.ts";
import { startTestPostgres, tempDir, type TestPostgres } from "../helpers/postgres.ts";
import { startTestS3, type TestS3 } from "../helpers/s3.ts";
import { backendContract } from "./contract.ts";
import { pattern } from "./blob-contract.ts";
import { LargeValueError } from "../../src/errors.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const MiB = 1024 * 1024;


const row = (ns: string, key: string, value: Uint8Array | null, ts: number, extra: Partial<StoredEntry> = {}): StoredEntry => ({
  ns, key: enc(key), value, metadata: null, expiration: null, version: { ts, nonce: 1 }, tombstone: value === null, ...extra,
});

async function keysUnder(store: BlobStore, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let after: string | undefined;
  do {
    const page = await store.list(prefix, after);
    out.push(...page.entries.map((e) => e.key));
    after = page.next;
  } while (after);
  return out.sort();
}

const blobBytes = async (store: BlobStore, key: string) => {
  const s = await store.get(key);
  return s ? readAll(s) : null;
};

let pg: TestPostgres;
let backend: PostgresBackend;
let fsDir: string;
let fsStore: BlobStore;
// The contract leaves ~16k blobs behind, and the fs store lists by reading every file: the wrapper's own tests
// get a store of their own so their listings stay quick.
let fsContractStore: BlobStore;
let s3: TestS3;
let s3Store: BlobStore;

beforeAll(async () => {
  [pg, s3] = await Promise.all([startTestPostgres(), startTestS3()]);
  backend = await openPostgresBackend(pg.url, 8);
  fsDir = tempDir("kvdrive-lv-");
  fsStore = await createFsBlobStore({ dir: `${fsDir}/blobs` });
  fsContractStore = await createFsBlobStore({ dir: `${fsDir}/contract` });
  s3Store = createS3BlobStore({ ...s3 });
}, 60_000); // starting real servers on a busy 2-core machine
afterAll(async () => {
  await backend?.close();
  await fsStore?.close();
  await fsContractStore?.close();
  await s3Store?.close();
  await Promise.all([pg?.destroy(), s3?.stop()]);
  if (fsDir) fs.rmSync(fsDir, { recursive: true, force: true });
}, 60_000);

for (const kind of ["fs", "s3"] as const) {
  const store = () => (kind === "fs" ? fsStore : s3Store);

  let contractBackend: LargeValueBackend | undefined;
  // 4 bytes: nearly every contract value goes to a blob. On s3rver, 5 bytes keeps the contract's 9,000-row
  // writes ("v1000".."v8999") in rows, so the run stays short; every other contract value still goes to a blob.
  backendContract(`large values (${kind})`, () => (contractBackend ??= withLargeValues(backend, kind === "fs" ? fsContractStore : s3Store, { thresholdBytes: kind === "fs" ? 4 : 5, prefix: `contract/` })), `lv-${kind}`);

  // Each test gets its own blob prefix and namespace, so blob listings and sweep counts are its own.
  let n = 0;
  const fresh = (extra: Partial<LargeValueOptions> = {}) => {
    const id = `t${++n}`;
    const prefix = `${id}/`;
    return { lv: withLargeValues(backend, store(), { thresholdBytes: 4, prefix, ...extra }), prefix, ns: `lv-${kind}-${id}` };
  };

  test(`${kind}: a 5 MiB value round-trips byte for byte; Postgres holds only the pointer, the blob store the bytes`, async () => {
    const { lv, ns, prefix } = fresh({ thresholdBytes: 128 * 1024 });
    const big = pattern(5 * MiB, 42);
    expect(await lv.write([row(ns, "big", big, 10, { metadata: '{"m":1}', expiration: 4_102_444_800 })])).toEqual([true]);

    const got = (await lv.get(ns, enc("big")))!;
    expect(got.value!.byteLength).toBe(big.byteLength);
    expect(Buffer.compare(got.value!, big)).toBe(0);
    expect(got.blob).toBeNull();
    expect(got.metadata).toBe('{"m":1}');
    expect(got.expiration).toBe(4_102_444_800);
    expect(got.version).toEqual({ ts: 10, nonce: 1 });

    const raw = (await backend.get(ns, enc("big")))!;
    expect(raw.value).toBeNull();
    expect(raw.blob!.startsWith(prefix)).toBe(true);
    expect(raw.metadata).toBe('{"m":1}');
    const sql = new Bun.SQL(pg.url, { max: 1 });
    const [r] = await sql`SELECT value IS NULL AS no_value, blob, pg_column_size(kv_entries.*) AS row_bytes FROM kv_entries WHERE ns = ${ns}`;
    await sql.close();
    expect(r.no_value).toBe(true);
    expect(r.blob).toBe(raw.blob);
    expect(Number(r.row_bytes)).toBeLessThan(1024);

    expect(await keysUnder(store(), prefix)).toEqual([raw.blob!]);
    expect(Buffer.compare((await blobBytes(store(), raw.blob!))!, big)).toBe(0);

    const [many] = await lv.getMany(ns, [enc("big")]);
    expect(Buffer.compare(many!.value!, big)).toBe(0);
    const [scanned] = await lv.scan({ ns, after: null, before: null, limit: 10 });
    expect(Buffer.compare(scanned!.value!, big)).toBe(0);
  });

  test(`${kind}: a value exactly at the threshold stays in the row; one byte more goes to the blob store`, async () => {
    const { lv, ns, prefix } = fresh({ thresholdBytes: 16 });
    await lv.write([row(ns, "at", pattern(16, 1), 1), row(ns, "over", pattern(17, 2), 1), row(ns, "empty", new Uint8Array(0), 1)]);
    const at = (await backend.get(ns, enc("at")))!;
    expect(at.blob).toBeNull();
    expect(at.value!.byteLength).toBe(16);
    const over = (await backend.get(ns, enc("over")))!;
    expect(over.value).toBeNull();
    expect(await keysUnder(store(), prefix)).toEqual([over.blob!]);
    expect([...(await lv.get(ns, enc("over")))!.value!]).toEqual([...pattern(17, 2)]);
    expect((await lv.get(ns, enc("empty")))!.value!.byteLength).toBe(0);
  });

  test(`${kind}: a newer large value replaces the old one and deletes its blob`, async () => {
    const { lv, ns, prefix } = fresh();
    await lv.write([row(ns, "k", pattern(1000, 1), 10)]);
    const first = (await backend.get(ns, enc("k")))!.blob!;
    expect(await lv.write([row(ns, "k", pattern(2000, 2), 20)])).toEqual([true]);
    const second = (await backend.get(ns, enc("k")))!.blob!;
    expect(second).not.toBe(first);
    expect(await store().get(first)).toBeNull();
    expect(await keysUnder(store(), prefix)).toEqual([second]);
    expect([...(await lv.get(ns, enc("k")))!.value!]).toEqual([...pattern(2000, 2)]);
  });

  test(`${kind}: an older (losing) large write, or a replay of the stored version, leaves no blob behind and the value intact`, async () => {
    const { lv, ns, prefix } = fresh();
    await lv.write([row(ns, "k", pattern(1000, 1), 20)]);
    const current = (await backend.get(ns, enc("k")))!.blob!;
    expect(await lv.write([row(ns, "k", pattern(1000, 9), 10)])).toEqual([false]);
    // The same version again (a retry, a repair): it must not take the stored version's blob with it.
    expect(await lv.write([row(ns, "k", pattern(1000, 1), 20)])).toEqual([false]);
    // Several versions of one key in one write: only the newest is applied, the others' blobs go.
    expect(await lv.write([row(ns, "k", pattern(900, 3), 30), row(ns, "k", pattern(900, 4), 40), row(ns, "k", pattern(900, 5), 35)])).toEqual([false, true, false]);
    const now = (await backend.get(ns, enc("k")))!.blob!;
    expect(now).not.toBe(current);
    expect(await keysUnder(store(), prefix)).toEqual([now]);
    expect([...(await lv.get(ns, enc("k")))!.value!]).toEqual([...pattern(900, 4)]);
  });

  test(`${kind}: a small value or tombstone replacing a large one leaves an orphan that the sweep removes only after the grace`, async () => {
    const clock = manualClock(Date.now());
    const { lv, ns, prefix } = fresh({ clock });
    await lv.write([row(ns, "small", pattern(100, 1), 1), row(ns, "gone", pattern(100, 2), 1), row(ns, "kept", pattern(100, 3), 1)]);
    const kept = (await backend.get(ns, enc("kept")))!.blob!;
    const before = await keysUnder(store(), prefix);
    expect(before.length).toBe(3);
    // Small-only batches take the hot path (no pointer reads), so the replaced blobs stay for now.
    expect(await lv.write([row(ns, "small", enc("tiny"), 2), row(ns, "gone", null, 2)])).toEqual([true, true]);
    expect(await keysUnder(store(), prefix)).toEqual(before);
    expect(new TextDecoder().decode((await lv.get(ns, enc("small")))!.value!)).toBe("tiny");
    expect((await lv.get(ns, enc("gone")))!.tombstone).toBe(true);
    // A blob not written by the wrapper, under its prefix, is never touched.
    await store().put(`${prefix}README`, enc("not a value"));

    expect(await lv.sweepOrphans(60_000)).toBe(0);
    expect(await keysUnder(store(), prefix)).toEqual([...before, `${prefix}README`].sort());
    clock.advance(61_000);
    expect(await lv.sweepOrphans(60_000)).toBe(2);
    expect(await keysUnder(store(), prefix)).toEqual([`${prefix}README`, kept].sort());
    expect([...(await lv.get(ns, enc("kept")))!.value!]).toEqual([...pattern(100, 3)]);
    expect(await lv.sweepOrphans(60_000)).toBe(0);
  });

  test(`${kind}: dropNamespace removes that namespace's blobs and no other's`, async () => {
    const { lv, ns, prefix } = fresh();
    const other = `${ns}-keep`;
    await lv.write([row(ns, "a", pattern(100, 1), 1), row(ns, "b", pattern(100, 2), 1), row(ns, "c", enc("s"), 1), row(other, "a", pattern(100, 3), 1)]);
    expect((await keysUnder(store(), prefix)).length).toBe(3);
    await lv.dropNamespace(ns);
    expect(await lv.getMany(ns, [enc("a"), enc("b"), enc("c")])).toEqual([null, null, null]);
    const otherBlob = (await backend.get(other, enc("a")))!.blob!;
    expect(await keysUnder(store(), prefix)).toEqual([otherBlob]);
    expect([...(await lv.get(other, enc("a")))!.value!]).toEqual([...pattern(100, 3)]);
  });

  test(`${kind}: concurrent writers of one key never make a reader see a wrong value or an error`, async () => {
    const clock = manualClock(Date.now());
    const { lv, ns, prefix } = fresh({ clock });
    const SIZE = 64 * 1024;
    // Each value is derived from its version, so a reader can check the bytes it got belong to the version it got.
    const valueOf = (ts: number, nonce: number) => {
      const v = pattern(SIZE, ts * 31 + nonce);
      new DataView(v.buffer).setFloat64(0, ts);
      new DataView(v.buffer).setUint32(8, nonce);
      return v;
    };
    const check = (e: StoredEntry | null | undefined) => {
      if (!e) return 0;
      const v = e.value!;
      expect(v.byteLength).toBe(SIZE);
      const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
      expect({ ts: dv.getFloat64(0), nonce: dv.getUint32(8) }).toEqual(e.version);
      expect(Buffer.compare(v, valueOf(e.version.ts, e.version.nonce))).toBe(0);
      return 1;
    };
    await lv.write([{ ...row(ns, "hot", valueOf(1, 0), 1), version: { ts: 1, nonce: 0 } }]);

    let done = false;
    let reads = 0;
    let best = { ts: 1, nonce: 0 };
    const writer = async (w: number) => {
      for (let i = 0; i < 12; i++) {
        const version = { ts: 2 + Math.floor(Math.random() * 1000), nonce: w };
        const [applied] = await lv.write([{ ...row(ns, "hot", valueOf(version.ts, version.nonce), version.ts), version }]);
        if (applied && (version.ts > best.ts || (version.ts === best.ts && version.nonce > best.nonce))) best = version;
      }
    };
    const reader = async () => {
      while (!done) {
        reads += check(await lv.get(ns, enc("hot")));
        for (const e of await lv.getMany(ns, [enc("hot"), enc("hot")])) reads += check(e);
        for (const e of await lv.scan({ ns, after: null, before: null, limit: 10 })) reads += check(e);
      }
    };
    const readers = [reader(), reader(), reader()];
    try {
      await Promise.all([0, 1, 2, 3].map(writer));
    } finally {
      done = true;
      await Promise.all(readers);
    }
    expect(reads).toBeGreaterThan(10);
    const final = (await lv.get(ns, enc("hot")))!;
    expect(final.version).toEqual(best);
    check(final);
    // Racing writers can orphan a blob (one replaced between another's pointer read and its write): the sweep
    // takes those, and leaves exactly the one the row points at.
    clock.advance(3_600_000);
    await lv.sweepOrphans(60_000);
    expect(await keysUnder(store(), prefix)).toEqual([(await backend.get(ns, enc("hot")))!.blob!]);
  });

  test(`${kind}: a blob replaced and deleted between the row read and the blob read is followed to the newer row`, async () => {
    const { ns, prefix } = fresh();
    const metrics = createRegistry();
    const base = store();
    let lv: LargeValueBackend;
    // The race made deterministic: the first blob read lets a newer write land (and delete the blob) first.
    let racer: StoredEntry[] | null = null;
    const racing: BlobStore = {
      ...base,
      kind: base.kind,
      async get(key) {
        const r = racer;
        racer = null;
        if (r) await lv.write(r);
        return base.get(key);
      },
    };
    lv = withLargeValues(backend, racing, { thresholdBytes: 4, prefix, metrics });
    await lv.write([row(ns, "k", pattern(100, 1), 1)]);
    racer = [row(ns, "k", pattern(100, 2), 2)];
    const got = (await lv.get(ns, enc("k")))!;
    expect(got.version.ts).toBe(2);
    expect([...got.value!]).toEqual([...pattern(100, 2)]);
    racer = [row(ns, "k", pattern(100, 3), 3)];
    const [many] = await lv.getMany(ns, [enc("k")]);
    expect(many!.version.ts).toBe(3);
    expect([...many!.value!]).toEqual([...pattern(100, 3)]);
    // A small-only batch does not delete the blob it replaces: the reader gets the version it read, whole.
    racer = [row(ns, "k", enc("tiny"), 4)];
    const [scanned] = await lv.scan({ ns, after: null, before: null, limit: 10 });
    expect(scanned!.version.ts).toBe(3);
    expect([...scanned!.value!]).toEqual([...pattern(100, 3)]);
    expect(new TextDecoder().decode((await lv.get(ns, enc("k")))!.value!)).toBe("tiny");
    // A batch with a large row reads every row's pointer, so a tombstone beside it deletes the blob it replaces:
    // the reader follows the row to the tombstone, not to an error.
    await lv.write([row(ns, "k", pattern(100, 6), 6)]);
    racer = [row(ns, "k", null, 7), row(ns, "other", pattern(100, 8), 7)];
    expect((await lv.get(ns, enc("k")))!.tombstone).toBe(true);
    expect(metrics.render()).toContain(`kvdrive_large_value_rereads_total{store="${kind}"} 3`);
    // Left behind: the blob of version 3 (replaced by a small value): an orphan, and the only one.
    const pointers = [(await backend.get(ns, enc("other")))!.blob!];
    const left = (await keysUnder(base, prefix)).filter((k) => !pointers.includes(k));
    expect(left.map((k) => parseBlobKey(prefix, k)!.version.ts)).toEqual([3]);
  });

  test(`${kind}: a write whose row fails leaves only an orphan; a failed blob put leaves no row and no blob`, async () => {
    const clock = manualClock(Date.now());
    const { lv, ns, prefix } = fresh({ clock });
    // A NUL in metadata is refused by Postgres, after the blob went up.
    await expect(lv.write([row(ns, "k", pattern(100, 1), 1, { metadata: "nul: \0" })])).rejects.toThrow();
    expect(await backend.get(ns, enc("k"))).toBeNull();
    expect((await keysUnder(store(), prefix)).length).toBe(1);
    clock.advance(120_000);
    expect(await lv.sweepOrphans(60_000)).toBe(1);
    expect(await keysUnder(store(), prefix)).toEqual([]);

    let puts = 0;
    const flaky: BlobStore = {
      ...store(),
      kind: store().kind,
      async put(key, body, size) {
        if (++puts === 2) throw new Error("blob store unavailable");
        return store().put(key, body, size);
      },
    };
    const lv2 = withLargeValues(backend, flaky, { thresholdBytes: 4, prefix });
    await expect(lv2.write([row(ns, "x", pattern(100, 1), 1), row(ns, "y", pattern(100, 2), 1), row(ns, "z", pattern(100, 3), 1)])).rejects.toThrow("blob store unavailable");
    expect(await backend.getMany(ns, [enc("x"), enc("y"), enc("z")])).toEqual([null, null, null]);
    expect(await keysUnder(store(), prefix)).toEqual([]);
  });

  test(`${kind}: a row pointing at a blob that is gone is a clear error, never a wrong value`, async () => {
    const { lv, ns } = fresh();
    await lv.write([row(ns, "k", pattern(100, 1), 1)]);
    const blob = (await backend.get(ns, enc("k")))!.blob!;
    await store().delete(blob);
    await expect(lv.get(ns, enc("k"))).rejects.toThrow(LargeValueError);
    await expect(lv.getMany(ns, [enc("k")])).rejects.toThrow(/is missing from the (fs|s3) blob store/);
    await expect(lv.scan({ ns, after: null, before: null, limit: 10 })).rejects.toThrow(blob);
    // A newer write repairs it.
    await lv.write([row(ns, "k", pattern(100, 2), 2)]);
    expect([...(await lv.get(ns, enc("k")))!.value!]).toEqual([...pattern(100, 2)]);
  });
}

test("blob keys: a 512-byte key fits S3's key limit, and ns, key and version parse back", async () => {
  const { lv } = { lv: withLargeValues(backend, fsStore, { thresholdBytes: 4, prefix: "keys/" }) };
  const key = new Uint8Array(512).map((_, i) => (i * 7) & 0xff);
  const ns = "odd/ns é%";
  expect(await lv.write([{ ns, key, value: pattern(100, 7), metadata: null, expiration: null, version: { ts: 1_700_000_000_000_000, nonce: 2_147_483_646 }, tombstone: false }])).toEqual([true]);
  const blob = (await backend.get(ns, key))!.blob!;
  expect(Buffer.byteLength(blob)).toBeLessThanOrEqual(1024);
  const parsed = parseBlobKey("keys/", blob)!;
  expect(parsed.ns).toBe(ns);
  expect([...parsed.key]).toEqual([...key]);
  expect(parsed.version).toEqual({ ts: 1_700_000_000_000_000, nonce: 2_147_483_646 });
  expect(parseBlobKey("keys/", "keys/README")).toBeNull();
  expect(parseBlobKey("keys/", "other/a/b/1-2-0123456789abcdef")).toBeNull();
  expect([...(await lv.get(ns, key))!.value!]).toEqual([...pattern(100, 7)]);
  await lv.dropNamespace(ns);
  expect(await keysUnder(fsStore, "keys/")).toEqual([]);
});

test("rows carrying a blob pointer: with a value the pointer is dropped, without one the write is refused", async () => {
  const lv = withLargeValues(backend, fsStore, { thresholdBytes: 4, prefix: "ptr/" });
  await lv.write([row("lv-ptr", "a", enc("ab"), 1, { blob: "ptr/forged" })]);
  expect((await backend.get("lv-ptr", enc("a")))!.blob).toBeNull();
  await expect(lv.write([row("lv-ptr", "b", null, 1, { tombstone: false, blob: "ptr/forged" })])).rejects.toThrow(/must carry its value/);
  expect(await backend.get("lv-ptr", enc("b"))).toBeNull();
});

test("metrics count blobs written, bytes, deletes and orphans swept", async () => {
  const metrics = createRegistry();
  const clock = manualClock(Date.now());
  const lv = withLargeValues(backend, fsStore, { thresholdBytes: 4, prefix: "metrics/", metrics, clock });
  await lv.write([row("lv-metrics", "k", pattern(100, 1), 1)]);
  await lv.write([row("lv-metrics", "k", pattern(50, 1), 2)]); // replaces and deletes the first blob
  await lv.write([row("lv-metrics", "k", null, 3)]); // orphans the second
  clock.advance(10_000);
  expect(await lv.sweepOrphans(1_000)).toBe(1);
  const text = metrics.render();
  expect(text).toContain('kvdrive_large_value_blobs_written_total{store="fs"} 2');
  expect(text).toContain('kvdrive_large_value_blob_bytes_written_total{store="fs"} 150');
  expect(text).toContain('kvdrive_large_value_blobs_deleted_total{store="fs"} 2');
  expect(text).toContain('kvdrive_large_value_orphans_swept_total{store="fs"} 1');
});

test("close closes the inner backend, not the blob store; bad options are refused", async () => {
  const inner = await openPostgresBackend(pg.url, 1);
  let blobClosed = false;
  const lv = withLargeValues(inner, { ...fsStore, kind: "fs", close: async () => void (blobClosed = true) }, { thresholdBytes: 4 });
  await lv.write([row("lv-close", "k", pattern(10, 1), 1)]);
  expect((await backend.get("lv-close", enc("k")))!.blob!.startsWith("values/")).toBe(true);
  await lv.close();
  expect(blobClosed).toBe(false);
  expect(await lv.ping()).toBe(false);
  expect(() => withLargeValues(backend, fsStore, { thresholdBytes: -1 })).toThrow(/non-negative integer/);
  await expect(withLargeValues(backend, fsStore, { thresholdBytes: 4 }).sweepOrphans(-5)).rejects.toThrow(/non-negative/);
});
