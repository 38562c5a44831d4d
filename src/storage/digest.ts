// Per-range digests for the anti-entropy crawler: two backends agree on a key range when their digests of the
// (key, version) pairs in it are equal, so the crawler walks key by key only the ranges that differ.
//
// The digest of a range is the count of entries and the sum, mod 2^64, of a 64-bit hash per entry. A sum is
// order-independent, so the digest can be computed by a scan in any order or kept up to date on each write
// (subtract the replaced entry's hash, add the new one). A sum, not XOR, so that a change applied twice shows.
// The entry hash is the first 8 bytes of MD5(key || int8 ts || int4 nonce): not for security, but because
// Postgres computes the very same value in SQL (md5, int8send, int4send), so a Postgres backend digests a range
// without sending its keys out (see digestSelectSql).
import { createHash } from "node:crypto";
import type { Digest, KeyRange, RangeDigest, Version } from "./entry.ts";

const MASK = (1n << 64n) - 1n;
const utf8 = new TextEncoder();
const asBytes = (k: string | Uint8Array) => (typeof k === "string" ? utf8.encode(k) : k);

export const EMPTY_DIGEST: Digest = Object.freeze({ count: 0, sum: 0n });
export const FULL_RANGE: KeyRange = Object.freeze({ start: new Uint8Array(0), end: null });

export function entryHash(key: string | Uint8Array, version: Version): bigint {
  const tail = new Uint8Array(12);
  const dv = new DataView(tail.buffer);
  dv.setBigInt64(0, BigInt(version.ts));
  dv.setInt32(8, version.nonce);
  const md5 = createHash("md5").update(asBytes(key)).update(tail).digest();
  return md5.readBigUInt64BE(0);
}

export const digestAdd = (d: Digest, h: bigint): Digest => ({ count: d.count + 1, sum: (d.sum + h) & MASK });
export const digestRemove = (d: Digest, h: bigint): Digest => ({ count: d.count - 1, sum: (d.sum - h) & MASK });

/** Keeps a digest current on a write: `old` is the hash of the entry replaced (null for a new key). */
export function digestReplace(d: Digest, old: bigint | null, next: bigint): Digest {
  return digestAdd(old === null ? d : digestRemove(d, old), next);
}

export function digestOf(entries: Iterable<{ key: string | Uint8Array; version: Version }>): Digest {
  let count = 0;
  let sum = 0n;
  for (const e of entries) {
    count++;
    sum = (sum + entryHash(e.key, e.version)) & MASK;
  }
  return { count, sum };
}

export const digestEquals = (a: Digest, b: Digest) => a.count === b.count && a.sum === b.sum;

/** "count:hex", for digests sent between instances or stored. */
export const encodeDigest = (d: Digest) => `${d.count}:${d.sum.toString(16)}`;

export function decodeDigest(s: string): Digest {
  const m = /^(\d{1,15}):([0-9a-f]{1,16})$/.exec(s);
  if (!m) throw new Error(`digest ${JSON.stringify(s)} is not "count:hex"`);
  return { count: Number(m[1]), sum: BigInt("0x" + m[2]) };
}

/**
 * Select-list expressions that compute the digest in Postgres over rows with a bytea key, a bigint version
 * timestamp and an integer nonce, e.g. `SELECT ${count}, ${sum} FROM kv_entries WHERE ns = $1 AND key >= $2 AND key < $3`.
 * The sum comes back as numeric text in [0, 2^64): BigInt() it. Column names are trusted identifiers from
 * code, never input.
 */
export function digestSelectSql(cols: { key: string; ts: string; nonce: string }): { count: string; sum: string } {
  for (const c of Object.values(cols)) if (!/^[a-z_][a-z0-9_.]*$/i.test(c)) throw new Error(`column ${JSON.stringify(c)} is not a plain identifier`);
  const h = `('x' || substr(md5(${cols.key} || int8send(${cols.ts}) || int4send(${cols.nonce})), 1, 16))::bit(64)::int8::numeric`;
  const m = "18446744073709551616";
  return { count: "count(*)::int8", sum: `((coalesce(sum(${h}), 0) % ${m}) + ${m}) % ${m}` };
}

export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

export const inRange = (r: KeyRange, key: string | Uint8Array) => {
  const k = asBytes(key);
  return compareBytes(k, r.start) >= 0 && (r.end === null || compareBytes(k, r.end) < 0);
};

// Boundaries are placed on the 6 bytes after the common prefix: 48 bits still fit a double exactly.
const WIDTH = 6;

/**
 * Splits [start, end) into at most n contiguous ranges that cover it exactly, with boundaries evenly spaced
 * in the key bytes after the common prefix of start and end. Fewer come back when the range is too narrow.
 */
export function splitRange(r: KeyRange, n: number): KeyRange[] {
  if (!Number.isInteger(n) || n < 1 || n > 1_000_000) throw new Error(`split count ${n} must be an integer between 1 and 1000000`);
  if (r.end !== null && compareBytes(r.start, r.end) >= 0) throw new Error("range start must be before its end");
  let p = 0;
  if (r.end !== null) while (p < r.start.length && p < r.end.length && r.start[p] === r.end[p]) p++;
  const prefix = r.start.subarray(0, p);
  const a = readWide(r.start, p);
  const b = r.end === null ? 2 ** (8 * WIDTH) : readWide(r.end, p);
  const bounds: Uint8Array[] = [];
  let last = a;
  for (let i = 1; i < n; i++) {
    const v = a + Math.floor(((b - a) * i) / n);
    if (v <= last || v >= b) continue;
    last = v;
    bounds.push(boundary(prefix, v));
  }
  const out: KeyRange[] = [];
  let start = r.start;
  for (const bnd of bounds) {
    out.push({ start, end: bnd });
    start = bnd;
  }
  out.push({ start, end: r.end });
  return out;
}

function readWide(key: Uint8Array, from: number): number {
  let v = 0;
  for (let i = 0; i < WIDTH; i++) v = v * 256 + (key[from + i] ?? 0);
  return v;
}

// Trailing zero bytes are dropped: the shorter key sorts the same against every key of the range.
function boundary(prefix: Uint8Array, v: number): Uint8Array {
  const tail = new Uint8Array(WIDTH);
  for (let i = WIDTH - 1; i >= 0; i--) {
    tail[i] = v % 256;
    v = Math.floor(v / 256);
  }
  let len = WIDTH;
  while (len > 0 && tail[len - 1] === 0) len--;
  const out = new Uint8Array(prefix.length + len);
  out.set(prefix, 0);
  out.set(tail.subarray(0, len), prefix.length);
  return out;
}

/** Index of the range holding key in a sorted, contiguous list (as splitRange makes), or -1. */
export function rangeIndex(ranges: readonly KeyRange[], key: string | Uint8Array): number {
  const k = asBytes(key);
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const r = ranges[mid]!;
    if (compareBytes(k, r.start) < 0) hi = mid - 1;
    else if (r.end !== null && compareBytes(k, r.end) >= 0) lo = mid + 1;
    else return mid;
  }
  return -1;
}

/** Digests of each range, from entries in any order (a backend that cannot digest server-side). */
export function digestRanges(ranges: readonly KeyRange[], entries: Iterable<{ key: string | Uint8Array; version: Version }>): RangeDigest[] {
  const out: RangeDigest[] = ranges.map((range) => ({ range, count: 0, sum: 0n }));
  for (const e of entries) {
    const i = rangeIndex(ranges, e.key);
    if (i < 0) continue;
    const d = out[i]!;
    d.count++;
    d.sum = (d.sum + entryHash(e.key, e.version)) & MASK;
  }
  return out;
}

const sameRange = (x: KeyRange, y: KeyRange) =>
  compareBytes(x.start, y.start) === 0 && (x.end === null ? y.end === null : y.end !== null && compareBytes(x.end, y.end) === 0);

/**
 * The ranges whose digests differ: those the crawler walks key by key (or splits again and re-digests, when a
 * range is large). Both sides must have digested the same ranges.
 */
export function diffRanges(local: readonly RangeDigest[], remote: readonly RangeDigest[]): KeyRange[] {
  if (local.length !== remote.length) throw new Error(`digest lists differ in length: ${local.length} local, ${remote.length} remote`);
  const out: KeyRange[] = [];
  for (let i = 0; i < local.length; i++) {
    const l = local[i]!;
    const r = remote[i]!;
    if (!sameRange(l.range, r.range)) throw new Error(`digest ${i} covers different ranges on the two sides`);
    if (!digestEquals(l, r)) out.push(l.range);
  }
  return out;
}
