// Pure row handling before a write: sort order for lock ordering and newest-per-key dedupe.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { expect, test } from "bun:test";
import type { StoredEntry } from "../../src/storage/entry.ts";
import { sortNewestPerKey } from "../../src/storage/store.ts";
import { rowBytes } from "../../src/gateway/batcher.ts";

const r = (ns: string, key: number[], ts: number, nonce = 0): StoredEntry => ({ ns, key: new Uint8Array(key), value: null, metadata: null, expiration: null, version: { ts, nonce }, tombstone: true });

test("rows come out sorted by namespace then key bytes, one per key, the newest", () => {
  const out = sortNewestPerKey([r("b", [1], 1), r("a", [0xff], 1), r("a", [0x00, 1], 1), r("a", [0xff], 3), r("a", [0xff], 2), r("a", [0x00], 7, 1), r("a", [0x00], 7, 2)]);
  expect(out.map((x) => [x.ns, [...x.key], x.version.ts, x.version.nonce])).toEqual([
    ["a", [0x00], 7, 2],
    ["a", [0x00, 1], 1, 0],
    ["a", [0xff], 3, 0],
    ["b", [1], 1, 0],
  ]);
});

test("the input array is left alone", () => {
  const input = [r("a", [2], 1), r("a", [1], 1)];
  sortNewestPerKey(input);
  expect(input.map((x) => x.key[0])).toEqual([2, 1]);
});

test("row size counts key, value and metadata", () => {
  const base = rowBytes(r("a", [], 1));
  expect(rowBytes({ ...r("a", [1, 2, 3], 1), value: new Uint8Array(100), metadata: "{}" })).toBe(base + 105);
});
