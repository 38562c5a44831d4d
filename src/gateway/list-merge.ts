// The list of a replicated backend, also during an outage: one side answers the listing (the replica stands in
// for a primary cluster that cannot), and every key that may differ between the sides is taken from whichever
// side holds its newest version. When that cannot be known, the list fails rather than answer with keys missing.
import { BackendBehindError } from "../errors.ts";
import { keyFromHex, keyHex, type StoredEntry } from "../storage/entry.ts";
import type { ListedEntry, ListQuery } from "../storage/backend.ts";
import { absentIfExpired, belowFloor, newest, other, type Sides } from "./replica-sides.ts";
import type { Side } from "./replicated.ts";

export function createListMerge(s: Sides): (q: ListQuery) => Promise<ListedEntry[]> {
  const { opts, call, floors, ck } = s;
  const { queue } = opts;

  /** Keys of `ns` whose two sides may differ now: a write in flight (or just settled), or waiting for repair. */
  function suspectKeys(ns: string, into: Map<string, Uint8Array>) {
    const prefix = ns + "\0";
    const add = (id: string) => {
      if (id.startsWith(prefix) && !into.has(id)) into.set(id, keyFromHex(id.slice(prefix.length)));
    };
    for (const id of s.inflight.keys()) add(id);
    // A settled write whose two sides both succeeded agrees on both, except on an object store without
    // compare-and-swap, where an older write can still overtake it for a moment (SUSPECT_GRACE_MS).
    if (opts.trustFirstAnswer === false) {
      const now = performance.now();
      for (const [id, until] of s.recent) if (until > now) add(id);
    }
    if (queue.depth() > 0) for (const { key } of queue.keysOf(ns)) add(prefix + key);
  }

  /**
   * The newest entry of each key from both sides, for a list to trust. A side that cannot answer for a key is
   * tolerated only when the side that did answer is not behind on it (not queued for repair, not older than
   * this instance's acknowledged write); otherwise the list cannot be complete and fails.
   */
  async function newestForList(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>> {
    // What each side was known to lack when the reads began: a write acknowledged (or failed) after that is
    // concurrent with the list, and either answer is right for it.
    const floorAtStart = keys.map((k) => floors.get(ck(ns, k)));
    const queuedAtStart = keys.map((k) => ({ primary: queue.has("primary", ns, keyHex(k)), replica: queue.has("replica", ns, keyHex(k)) }));
    const fromPrimary: Array<{ e: StoredEntry | null } | undefined> = new Array(keys.length);
    const items = keys.map((key, i) => ({ ns, key, i }));
    // Per cluster, so a cluster that is down costs only its own keys.
    const parts = opts.partition ? opts.partition(items) : [items];
    const replicaAnswer = call("replica", "getMany", (b) => b.getMany(ns, keys)).catch(() => null);
    await Promise.all(
      parts.map((part) =>
        call("primary", "getMany", (b) => b.getMany(ns, part.map((x) => x.key))).then(
          (got) => part.forEach((x, j) => (fromPrimary[x.i] = { e: got[j] ?? null })),
          () => {},
        ),
      ),
    );
    const fromReplica = await replicaAnswer;
    let unsure = 0;
    const out = keys.map((key, i) => {
      const a = fromPrimary[i];
      const b = fromReplica === null ? undefined : { e: fromReplica[i] ?? null };
      if (a && b) return newest(a.e, b.e);
      const answered: Side | null = a ? "primary" : b ? "replica" : null;
      const e = (a ?? b)?.e ?? null;
      const f = floorAtStart[i];
      const isBelow = f !== undefined && belowFloor(e, f);
      if (answered === null || isBelow || queuedAtStart[i]![answered]) unsure++;
      return e;
    });
    if (unsure) {
      s.bothFailed.inc({ op: "list" });
      throw new BackendBehindError(`list: ${unsure} key${unsure > 1 ? "s" : ""} in this range may be newer on a backend that did not answer; the list would be incomplete: retry it`);
    }
    return out;
  }

  /**
   * One cluster's share of a list page from the replica, for a primary cluster that cannot answer: the
   * replica's entries that `q.only` accepts, up to q.limit.
   */
  async function replicaStandIn(q: ListQuery): Promise<ListedEntry[]> {
    const out: ListedEntry[] = [];
    let after = q.after;
    for (;;) {
      const page = await opts.replica.list({ ...q, after, standIn: undefined });
      for (const e of page) if (!q.only || q.only(e.key)) out.push(e);
      if (out.length >= q.limit || page.length < q.limit) break;
      after = page[page.length - 1]!.key;
    }
    s.standIns.inc();
    return out.length > q.limit ? out.slice(0, q.limit) : out;
  }

  /**
   * A list both sides agree on. One side answers the listing (the primary; the replica when the primary, or a
   * cluster of it, cannot), and every key that may differ between the sides (suspectKeys) inside the range it
   * covered is taken from whichever side holds its newest version, so a key acknowledged on one side only is
   * listed, and one deleted on one side only is not. When that cannot be known the list fails (503) rather than
   * answer with keys missing.
   */
  async function listChecked(q: ListQuery): Promise<ListedEntry[]> {
    if (opts.modeOf(q.ns) === "primary") return call("primary", "list", (b) => b.list(q));
    const suspects = new Map<string, Uint8Array>();
    suspectKeys(q.ns, suspects);
    // A side whose repairs overflowed the queue may be behind on keys nobody tracks: list from the other one.
    const overflowed = queue.needsCrawler();
    let base: Side = overflowed.includes("primary") && !overflowed.includes("replica") ? "replica" : "primary";
    const out: ListedEntry[] = [];
    let after = q.after;
    while (out.length < q.limit) {
      const want = q.limit - out.length;
      const pageQuery: ListQuery = { ...q, after, limit: want, standIn: base === "primary" ? replicaStandIn : undefined };
      let page: ListedEntry[];
      try {
        page = await call(base, "list", (b) => b.list(pageQuery));
      } catch (e) {
        if (overflowed.includes(other(base))) throw e;
        page = await call(other(base), "list", (b) => b.list({ ...pageQuery, standIn: undefined })).catch(() => {
          s.bothFailed.inc({ op: "list" });
          throw e;
        });
        base = other(base);
      }
      // Keys that turned suspect while the page was read (a read repair, a write that failed meanwhile).
      suspectKeys(q.ns, suspects);
      const full = page.length >= want;
      const high = full ? page[page.length - 1]!.key : null;
      const within = [...suspects.values()].filter(
        (k) =>
          (after === null || Buffer.compare(k, after) > 0) &&
          (q.from === null || Buffer.compare(k, q.from) >= 0) &&
          (q.before === null || Buffer.compare(k, q.before) < 0) &&
          (high === null || Buffer.compare(k, high) <= 0),
      );
      if (within.length) page = await corrected(q, page, within);
      out.push(...page);
      if (!full) break;
      after = high;
    }
    return out.length > q.limit ? out.slice(0, q.limit) : out;
  }

  /** The page with each of `keys` replaced by its newest state on either side (added, updated or removed). */
  async function corrected(q: ListQuery, page: ListedEntry[], keys: Uint8Array[]): Promise<ListedEntry[]> {
    const CHUNK = 500;
    const found: Array<StoredEntry | null> = [];
    for (let i = 0; i < keys.length; i += CHUNK) found.push(...(await newestForList(q.ns, keys.slice(i, i + CHUNK))));
    const replaced = new Set(keys.map(keyHex));
    const kept = page.filter((e) => !replaced.has(keyHex(e.key)));
    keys.forEach((key, i) => {
      const e = absentIfExpired(found[i]!, q.now);
      if (e !== null && !e.tombstone) kept.push({ key, metadata: e.metadata, expiration: e.expiration });
    });
    return kept.sort((a, b) => Buffer.compare(a.key, b.key));
  }

  return listChecked;
}
