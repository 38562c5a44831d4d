// The data model every layer shares, once: a stored entry, its version and their order, the key codecs, and
// the digest types the anti-entropy crawler compares. It imports nothing.

/**
 * A version: a microsecond timestamp plus a random nonce, compared as a pair. The gateway's version clock
 * (gateway/version.ts) makes them; storage keeps and compares them (conditional writes, S3 object metadata).
 */
export interface Version {
  /** Microseconds since the epoch (fits a double exactly until the year 2255). */
  ts: number;
  /** Random 31-bit tie-breaker between writers that picked the same microsecond. */
  nonce: number;
}

export const ZERO_VERSION: Version = { ts: 0, nonce: 0 };

/** <0 when a is older than b, 0 when equal, >0 when newer. */
export function compareVersions(a: Version, b: Version): number {
  return a.ts !== b.ts ? a.ts - b.ts : a.nonce - b.nonce;
}

export interface StoredEntry {
  ns: string;
  key: Uint8Array;
  value: Uint8Array | null;
  metadata: string | null;
  expiration: number | null;
  version: Version;
  tombstone: boolean;
  /**
   * Where a large value lives in the blob store (src/storage/large-values.ts), with `value` null. Backends
   * that store values whole (the S3 replica) never set it.
   */
  blob?: string | null;
}

/** A key as hex: a map key, a repair-queue record, a blob name. */
export const keyHex = (k: Uint8Array) => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString("hex");
export const keyFromHex = (h: string) => new Uint8Array(Buffer.from(h, "hex"));

/** (namespace, key) as one map key: latin1 keeps every byte distinct and is cheaper than hex. */
export const keyString = (ns: string, k: Uint8Array) => ns + "\0" + Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString("latin1");

/** What two backends compare to agree on a key range (storage/digest.ts computes it). */
export interface Digest {
  count: number;
  /** Sum of entry hashes mod 2^64. */
  sum: bigint;
}

/** [start, end) in key byte order (keys are bytea); end null: to the end of the key space. */
export interface KeyRange {
  start: Uint8Array;
  end: Uint8Array | null;
}

export interface RangeDigest extends Digest {
  range: KeyRange;
}
