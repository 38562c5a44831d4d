// The shard ring: consistent hashing of (namespace, key) over Postgres clusters with virtual nodes, so a hot
// namespace spreads over every cluster and adding a cluster moves only about 1/N of the keys, all to it.
// Placement must never change under a running dataset, so the hash is pinned: XXH64 (seed 0), a specified
// algorithm whose reference vectors test/storage/ring.test.ts checks. Not Bun.hash(), whose default
// (wyhash) is an implementation choice of the runtime.
import { RingError } from "../errors.ts";

export interface Ring {
  /** The nodes, sorted: placement does not depend on the order they were given in. */
  readonly nodes: readonly string[];
  readonly vnodes: number;
  /** The node that owns (namespace, key). */
  owner(namespace: string, key: string | Uint8Array): string;
  /** The node owning a position on the ring (an entryHash), for callers that hash once and route often. */
  ownerOfHash(h: bigint): string;
}

export const DEFAULT_VNODES = 128;
export const MAX_VNODES = 4096;

const utf8 = new TextEncoder();

export const xxh64 = (data: Uint8Array): bigint => Bun.hash.xxHash64(data, 0n);

/**
 * The ring position of an entry. The namespace is length-prefixed, so ("ab", "c") and ("a", "bc") differ
 * even though both concatenate to "abc".
 */
export function entryHash(namespace: string, key: string | Uint8Array): bigint {
  const ns = utf8.encode(namespace);
  const k = typeof key === "string" ? utf8.encode(key) : key;
  const buf = new Uint8Array(4 + ns.length + k.length);
  new DataView(buf.buffer).setUint32(0, ns.length);
  buf.set(ns, 4);
  buf.set(k, 4 + ns.length);
  return xxh64(buf);
}

function vnodeHash(node: string, i: number): bigint {
  const name = utf8.encode(node);
  const buf = new Uint8Array(name.length + 5);
  buf.set(name, 0);
  buf[name.length] = 0; // node names cannot hold NUL, so "n1" #12 and "n11" #2 never share bytes
  new DataView(buf.buffer).setUint32(name.length + 1, i);
  return xxh64(buf);
}

/**
 * Node names are stable identities of the clusters (e.g. "pg-1"), not connection strings: a password or host
 * change must not move keys.
 */
export function createRing(nodes: readonly string[], vnodes = DEFAULT_VNODES): Ring {
  if (nodes.length === 0) throw new RingError("a ring needs at least one node");
  if (!Number.isInteger(vnodes) || vnodes < 1 || vnodes > MAX_VNODES) {
    throw new RingError(`vnodes ${vnodes} must be an integer between 1 and ${MAX_VNODES}`);
  }
  const sorted = [...nodes].sort();
  for (let i = 0; i < sorted.length; i++) {
    const n = sorted[i]!;
    if (n.length === 0 || n.includes("\0")) throw new RingError(`ring node name ${JSON.stringify(n)} must be non-empty and without NUL`);
    if (i > 0 && sorted[i - 1] === n) throw new RingError(`ring node ${JSON.stringify(n)} is listed twice`);
  }

  const points: Array<{ h: bigint; node: number }> = [];
  sorted.forEach((n, node) => {
    for (let i = 0; i < vnodes; i++) points.push({ h: vnodeHash(n, i), node });
  });
  // Ties (vanishingly rare) are broken by node name, so every process builds the same ring.
  points.sort((a, b) => (a.h < b.h ? -1 : a.h > b.h ? 1 : a.node - b.node));
  const hashes = new BigUint64Array(points.map((p) => p.h));
  const owners = Uint16Array.from(points, (p) => p.node);

  // The owner is the first point at or after h, wrapping around past the last one.
  function ownerOfHash(h: bigint): string {
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return sorted[owners[lo === hashes.length ? 0 : lo]!]!;
  }

  return {
    nodes: sorted,
    vnodes,
    owner: (namespace, key) => ownerOfHash(entryHash(namespace, key)),
    ownerOfHash,
  };
}
