// The contract every blob store passes: round trips of bytes and streams, replace, delete, size checks,
// multipart-sized bodies, listing in byte order with pages, and key limits.
import { expect, test } from "bun:test";
import { readAll, type BlobStore } from "../../src/storage/blob.ts";
import { BlobError } from "../../src/errors.ts";

const enc = (s: string) => new TextEncoder().encode(s);

/** n bytes of a deterministic xorshift pattern: large values whose every byte is checked. */
export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** A stream delivering data in uneven chunks, so chunk boundaries never line up with part boundaries. */
function streamOf(data: Uint8Array, chunk = 65_521): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    pull(c) {
      if (off >= data.length) return c.close();
      c.enqueue(data.slice(off, off + chunk));
      off += chunk;
    },
  });
}

async function bytesOf(store: BlobStore, key: string): Promise<Uint8Array | null> {
  const s = await store.get(key);
  return s ? readAll(s) : null;
}

export interface BlobContractOptions {
  /** A body larger than this takes the store's multipart / chunked path. */
  largeBytes: number;
  /**
   * Real S3 and the fs store list in UTF-8 byte order and replace an object atomically. s3rver does neither:
   * it lists in the order of its percent-encoded file names and writes an object in place, so two concurrent
   * PUTs of one key can interleave. For it these two tests check the weaker properties it does keep.
   */
  serverKeepsS3Guarantees: boolean;
}

export function blobContract(name: string, open: () => BlobStore, opts: BlobContractOptions) {
  test(`${name}: bytes round-trip, replace and delete`, async () => {
    const s = open();
    expect(await s.get("rt/missing")).toBeNull();
    await s.put("rt/a", enc("hello"));
    expect(await bytesOf(s, "rt/a")).toEqual(enc("hello"));
    await s.put("rt/a", enc("replaced"), 8);
    expect(await bytesOf(s, "rt/a")).toEqual(enc("replaced"));
    await s.put("rt/empty", new Uint8Array(0));
    expect(await bytesOf(s, "rt/empty")).toEqual(new Uint8Array(0));
    await s.delete("rt/a");
    expect(await s.get("rt/a")).toBeNull();
    await s.delete("rt/a"); // missing: not an error
    await s.delete("rt/never-existed");
  });

  test(`${name}: keys with slashes, dots, unicode and spaces are distinct and exact`, async () => {
    const s = open();
    const keys = ["odd/../x", "odd/./x", "odd/ü ñ 🔑", "odd/a b", "odd/%2F", "odd/" + ("k".repeat(99) + "/").repeat(9)];
    // (a 904-byte key in 100-byte segments: s3rver maps keys to file paths, and a file name stops at 255 bytes)
    for (const [i, k] of keys.entries()) await s.put(k, enc(`v${i}`));
    for (const [i, k] of keys.entries()) expect(new TextDecoder().decode((await bytesOf(s, k))!)).toBe(`v${i}`);
  });

  test(`${name}: a stream of unknown length, larger than one part, round-trips intact`, async () => {
    const s = open();
    const data = pattern(opts.largeBytes * 2 + 12_345, 7);
    await s.put("big/stream", streamOf(data));
    const back = await bytesOf(s, "big/stream");
    expect(back!.length).toBe(data.length);
    expect(Bun.hash(back!)).toBe(Bun.hash(data));
    // a large in-memory body: its parts are views at non-zero offsets into one buffer
    const inMemory = pattern(opts.largeBytes * 2 + 333, 11);
    await s.put("big/bytes", inMemory, inMemory.length);
    expect(Bun.hash((await bytesOf(s, "big/bytes"))!)).toBe(Bun.hash(inMemory));
    const sized = pattern(opts.largeBytes + 1, 9);
    await s.put("big/sized", streamOf(sized), sized.length);
    expect(Bun.hash((await bytesOf(s, "big/sized"))!)).toBe(Bun.hash(sized));
  });

  test(`${name}: a body whose length differs from the declared size is refused and nothing is stored`, async () => {
    const s = open();
    await expect(s.put("size/short", enc("abc"), 4)).rejects.toThrow(/3 bytes but size 4/);
    await expect(s.put("size/long", streamOf(enc("abcdef"), 2), 5)).rejects.toThrow(BlobError);
    expect(await s.get("size/short")).toBeNull();
    expect(await s.get("size/long")).toBeNull();
    const big = pattern(opts.largeBytes + 10, 3);
    await expect(s.put("size/big", streamOf(big), big.length - 1)).rejects.toThrow(BlobError);
    expect(await s.get("size/big")).toBeNull();
    // a failed replace keeps the old blob
    await s.put("size/keep", enc("old"));
    await expect(s.put("size/keep", enc("newer"), 2)).rejects.toThrow(BlobError);
    expect(await bytesOf(s, "size/keep")).toEqual(enc("old"));
  });

  test(`${name}: a body stream that fails stores nothing and keeps the old blob`, async () => {
    const s = open();
    await s.put("fail/k", enc("old"));
    let sent = 0;
    const failing = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent++ < 3) c.enqueue(pattern(opts.largeBytes, sent));
        else c.error(new Error("client went away"));
      },
    });
    await expect(s.put("fail/k", failing)).rejects.toThrow("client went away");
    expect(await bytesOf(s, "fail/k")).toEqual(enc("old"));
    expect((await s.list("fail/")).entries.map((e) => e.key)).toEqual(["fail/k"]);
  });

  test(`${name}: list gives keys under a prefix with sizes, in byte order, in pages`, async () => {
    const s = open();
    const keys = ["ls/b", "ls/a", "ls/é", "ls/Z", "ls/a/1", "ls/a0", "lsx/outside"];
    for (const k of keys) await s.put(k, enc(k + "!"));
    const byteOrder = ["ls/Z", "ls/a", "ls/a/1", "ls/a0", "ls/b", "ls/é"];
    const all = await s.list("ls/");
    expect(all.next).toBeUndefined();
    const a = all.entries.find((e) => e.key === "ls/a")!;
    expect(a.size).toBe(5);
    expect(Math.abs(a.modified - Date.now())).toBeLessThan(10 * 60_000);
    expect((await s.list("nothing-here/")).entries).toEqual([]);
    const page = await s.list("ls/", undefined, 2);
    expect(page.entries.length).toBe(2);
    expect(page.next).toBe(page.entries[1]!.key);
    const afterA0 = (await s.list("ls/", "ls/a0")).entries.map((e) => e.key);

    if (!opts.serverKeepsS3Guarantees) {
      // s3rver: the right set, and `after` filters by key, but in directory order, so pages do not stitch.
      expect(all.entries.map((e) => e.key).sort()).toEqual([...byteOrder].sort());
      expect(afterA0.sort()).toEqual(["ls/b", "ls/é"]);
      return;
    }
    expect(all.entries.map((e) => e.key)).toEqual(byteOrder);
    expect(afterA0).toEqual(["ls/b", "ls/é"]);
    const seen: string[] = [];
    let after: string | undefined;
    let pages = 0;
    do {
      const p = await s.list("ls/", after, 2);
      expect(p.entries.length).toBeLessThanOrEqual(2);
      seen.push(...p.entries.map((e) => e.key));
      after = p.next;
      pages++;
    } while (after !== undefined);
    expect(seen).toEqual(byteOrder);
    expect(pages).toBe(3);
  });

  test(`${name}: bad keys and limits are refused with errors naming the limit`, async () => {
    const s = open();
    await expect(s.put("", enc("x"))).rejects.toThrow(/non-empty/);
    await expect(s.put("k".repeat(1025), enc("x"))).rejects.toThrow("UTF-8 encoded length of 1025 exceeds blob key length limit of 1024.");
    await expect(s.get("é".repeat(513))).rejects.toThrow(/1026 exceeds/);
    await expect(s.list("", undefined, 0)).rejects.toThrow(/between 1 and 1000/);
    await expect(s.list("", undefined, 1001)).rejects.toThrow(/between 1 and 1000/);
    await expect(s.put("neg", enc("x"), -1)).rejects.toThrow(/non-negative/);
  });

  const bodies = () => [1, 2, 3, 4].map((i) => pattern(opts.largeBytes + 1000 * i, i));
  if (opts.serverKeepsS3Guarantees) {
    test(`${name}: concurrent writers of one key leave one whole body, never a mix`, async () => {
      const s = open();
      const all = bodies();
      await Promise.all(all.map((b) => s.put("race/k", streamOf(b))));
      const got = (await bytesOf(s, "race/k"))!;
      expect(all.some((b) => b.length === got.length && Bun.hash(b) === Bun.hash(got))).toBe(true);
    });
  } else {
    test(`${name}: concurrent writers of one key all complete, and the next write replaces the key cleanly`, async () => {
      const s = open();
      await Promise.all(bodies().map((b) => s.put("race/k", streamOf(b))));
      const last = pattern(opts.largeBytes + 77, 99);
      await s.put("race/k", last);
      expect(Bun.hash((await bytesOf(s, "race/k"))!)).toBe(Bun.hash(last));
    });
  }
}
