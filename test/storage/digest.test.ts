// Range digests: order independence, incremental upkeep, sensitivity, range splitting, diffing, and the same
// digest computed inside a real Postgres by the SQL form.
import { setDefaultTimeout } from "bun:test";
setDefaultTimeout(120_000); // per file: bun applies a preloaded default to the first file only
import { afterAll, beforeAll, expect, test } from "bun:test";
import {
  compareBytes, decodeDigest, diffRanges, digestAdd, digestEquals, digestOf, digestRanges, digestReplace, digestSelectSql,
  EMPTY_DIGEST, encodeDigest, entryHash, FULL_RANGE, inRange, rangeIndex, splitRange,
} from "../../src/storage/digest.ts";
import type { KeyRange, Version } from "../../src/storage/entry.ts";
import { startTestPostgres, type TestPostgres } from "../helpers/postgres.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array | null) => (b === null ? null : Buffer.from(b).toString("hex"));

// A fixed pseudo-random sequence, so failures reproduce.
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

type E = { key: Uint8Array; version: Version };
function dataset(n: number, seed: number): E[] {
  const r = rng(seed);
  const out: E[] = [];
  for (let i = 0; i < n; i++) {
    const len = 1 + Math.floor(r() * 24);
    const key = new Uint8Array(len);
    for (let j = 0; j < len; j++) key[j] = r() < 0.7 ? 0x61 + Math.floor(r() * 26) : Math.floor(r() * 256);
    out.push({ key, version: { ts: 1_700_000_000_000_000 + Math.floor(r() * 1e12), nonce: Math.floor(r() * 0x7fffffff) } });
  }
  const seen = new Set<string>();
  return out.filter((e) => !seen.has(hex(e.key)!) && seen.add(hex(e.key)!));
}

test("a digest does not depend on order, and sees every change of key or version", () => {
  const data = dataset(2000, 1);
  const d = digestOf(data);
  expect(d.count).toBe(data.length);
  expect(digestEquals(digestOf([...data].reverse()), d)).toBe(true);
  const changed = data.map((e, i) => (i === 777 ? { ...e, version: { ...e.version, nonce: e.version.nonce ^ 1 } } : e));
  expect(digestEquals(digestOf(changed), d)).toBe(false);
  // two keys swapping versions is a difference too
  const swapped = data.map((e, i) => (i === 0 ? { ...e, version: data[1]!.version } : i === 1 ? { ...e, version: data[0]!.version } : e));
  expect(digestEquals(digestOf(swapped), d)).toBe(false);
  expect(digestEquals(digestOf(data.slice(1)), d)).toBe(false);
});

test("a digest kept up to date write by write equals one recomputed from scratch", () => {
  const r = rng(2);
  const state = new Map<string, E>();
  let d = EMPTY_DIGEST;
  for (let i = 0; i < 5000; i++) {
    const key = enc(`k${Math.floor(r() * 500)}`);
    const next: E = { key, version: { ts: i + 1, nonce: Math.floor(r() * 1000) } };
    const old = state.get(hex(key)!);
    d = digestReplace(d, old ? entryHash(old.key, old.version) : null, entryHash(key, next.version));
    state.set(hex(key)!, next);
  }
  expect(digestEquals(d, digestOf(state.values()))).toBe(true);
  // a write applied twice shows (a sum, not XOR)
  const one = digestAdd(EMPTY_DIGEST, entryHash("x", { ts: 1, nonce: 1 }));
  expect(digestEquals(digestAdd(one, entryHash("x", { ts: 1, nonce: 1 })), EMPTY_DIGEST)).toBe(false);
});

test("digests travel as count:hex", () => {
  const d = digestOf(dataset(50, 3));
  expect(decodeDigest(encodeDigest(d))).toEqual(d);
  expect(decodeDigest(encodeDigest(EMPTY_DIGEST))).toEqual(EMPTY_DIGEST);
  for (const bad of ["", "1", "x:1", "1:xyz", "1:" + "f".repeat(17)]) expect(() => decodeDigest(bad)).toThrow(/count:hex/);
});

function checkCover(r: KeyRange, parts: KeyRange[]) {
  expect(hex(parts[0]!.start)).toBe(hex(r.start));
  expect(hex(parts.at(-1)!.end)).toBe(hex(r.end));
  for (let i = 1; i < parts.length; i++) {
    expect(hex(parts[i]!.start)).toBe(hex(parts[i - 1]!.end));
    expect(compareBytes(parts[i]!.start, parts[i - 1]!.start)).toBeGreaterThan(0);
  }
}

test("splitting the whole key space gives contiguous ranges, and every key falls in exactly one", () => {
  const parts = splitRange(FULL_RANGE, 16);
  expect(parts.length).toBe(16);
  checkCover(FULL_RANGE, parts);
  expect(hex(parts[1]!.start)).toBe("10"); // evenly on the first byte
  for (const e of dataset(3000, 4)) {
    const holders = parts.filter((p) => inRange(p, e.key));
    expect(holders.length).toBe(1);
    expect(rangeIndex(parts, e.key)).toBe(parts.indexOf(holders[0]!));
  }
});

test("a narrow range splits after its common prefix; a range too narrow to split stays whole", () => {
  const r: KeyRange = { start: enc("user:a"), end: enc("user:b") };
  const parts = splitRange(r, 4);
  expect(parts.length).toBe(4);
  checkCover(r, parts);
  for (const p of parts.slice(1)) expect(new TextDecoder().decode(p.start.subarray(0, 6))).toBe("user:a");
  const tiny: KeyRange = { start: enc("a"), end: new Uint8Array([0x61, 0]) };
  expect(splitRange(tiny, 8)).toEqual([tiny]);
  const nested = splitRange(parts[2]!, 3);
  checkCover(parts[2]!, nested);
  expect(nested.length).toBe(3);
  expect(() => splitRange(r, 0)).toThrow(/between 1 and 1000000/);
  expect(() => splitRange({ start: enc("b"), end: enc("a") }, 2)).toThrow(/before its end/);
});

test("diffRanges points at exactly the ranges where the backends differ, and walking them finds every difference", () => {
  const primary = dataset(10_000, 5);
  const replica = primary.map((e) => ({ ...e }));
  const missing = replica.splice(1234, 1)[0]!; // a key the replica never got
  replica[42] = { ...replica[42]!, version: { ts: replica[42]!.version.ts - 1, nonce: 0 } }; // an older version
  const extra: E = { key: enc("zzz-only-on-replica"), version: { ts: 5, nonce: 5 } }; // e.g. a tombstone not purged
  replica.push(extra);
  const ranges = splitRange(FULL_RANGE, 64);
  const local = digestRanges(ranges, primary);
  const remote = digestRanges(ranges, replica);
  const differing = diffRanges(local, remote);
  const expected = new Set([missing.key, replica[42]!.key, extra.key].map((k) => rangeIndex(ranges, k)));
  expect(differing.map((r) => ranges.indexOf(r)).sort((a, b) => a - b)).toEqual([...expected].sort((a, b) => a - b));
  // walk only the differing ranges key by key
  const diffs: string[] = [];
  for (const r of differing) {
    const p = new Map(primary.filter((e) => inRange(r, e.key)).map((e) => [hex(e.key)!, encodeVersion(e.version)]));
    const q = new Map(replica.filter((e) => inRange(r, e.key)).map((e) => [hex(e.key)!, encodeVersion(e.version)]));
    for (const k of new Set([...p.keys(), ...q.keys()])) if (p.get(k) !== q.get(k)) diffs.push(k);
  }
  expect(diffs.sort()).toEqual([missing.key, replica[42]!.key, extra.key].map((k) => hex(k)!).sort());
  expect(diffRanges(local, local)).toEqual([]);
  expect(() => diffRanges(local, remote.slice(1))).toThrow(/differ in length/);
  expect(() => diffRanges(local, digestRanges(splitRange(FULL_RANGE, 64).reverse(), primary))).toThrow(/different ranges/);
});

const encodeVersion = (v: Version) => `${v.ts}-${v.nonce}`;

let pg: TestPostgres;
let sql: InstanceType<typeof Bun.SQL>;
beforeAll(async () => {
  pg = await startTestPostgres();
  sql = new Bun.SQL(pg.url, { max: 2 });
}, 60_000); // starting/stopping real servers on a busy 2-core machine
afterAll(async () => {
  await sql?.close();
  await pg?.destroy();
}, 60_000); // starting/stopping real servers on a busy 2-core machine

test("Postgres computes the same digests in SQL, over the whole space and per range, without sending keys", async () => {
  await sql`CREATE TABLE digest_probe (key bytea PRIMARY KEY, version_ts bigint NOT NULL, version_nonce integer NOT NULL)`;
  const data = dataset(3000, 6);
  data.push({ key: new Uint8Array([0xff, 0xff]), version: { ts: 2 ** 52, nonce: 2147483647 } }, { key: new Uint8Array([0]), version: { ts: 0, nonce: 0 } });
  for (let i = 0; i < data.length; i += 500) {
    const chunk = data.slice(i, i + 500);
    await sql`INSERT INTO digest_probe (key, version_ts, version_nonce)
      SELECT * FROM unnest(${chunk.map((e) => Buffer.from(e.key))}::bytea[], ${chunk.map((e) => e.version.ts)}::int8[], ${chunk.map((e) => e.version.nonce)}::int4[])`;
  }
  const { count, sum } = digestSelectSql({ key: "key", ts: "version_ts", nonce: "version_nonce" });
  const digestIn = async (r: KeyRange) => {
    const rows = r.end === null
      ? await sql.unsafe(`SELECT ${count} AS n, (${sum})::text AS s FROM digest_probe WHERE key >= $1`, [Buffer.from(r.start)])
      : await sql.unsafe(`SELECT ${count} AS n, (${sum})::text AS s FROM digest_probe WHERE key >= $1 AND key < $2`, [Buffer.from(r.start), Buffer.from(r.end)]);
    return { count: Number(rows[0].n), sum: BigInt(rows[0].s) };
  };
  expect(await digestIn(FULL_RANGE)).toEqual(digestOf(data));
  const ranges = splitRange(FULL_RANGE, 8);
  const fromJs = digestRanges(ranges, data);
  for (const [i, r] of ranges.entries()) expect(await digestIn(r)).toEqual({ count: fromJs[i]!.count, sum: fromJs[i]!.sum });
  expect(await digestIn({ start: enc("no keys here"), end: enc("no keys here!") })).toEqual(EMPTY_DIGEST);
  expect(() => digestSelectSql({ key: "key; DROP TABLE x", ts: "t", nonce: "n" })).toThrow(/plain identifier/);
});
