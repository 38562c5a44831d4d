// The read race of a replicated backend and its read repair: in active-active a read races both sides and the
// first answer wins, unless the key is suspect (or the replica can go back a version), then the newer of both
// answers wins and never one older than this instance's acknowledged write. In shadow mode the primary answers
// and the replica's answer is only compared. Two answers that differ queue the key for the side behind.
import { BackendBehindError } from "../errors.ts";
import type { StoredEntry } from "../storage/entry.ts";
import { belowFloor, newest, sameVersion, type Sides } from "./replica-sides.ts";
import type { Side } from "./replicated.ts";

export interface ReadRace {
  get(ns: string, key: Uint8Array): Promise<StoredEntry | null>;
  getMany(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>>;
}

export function createReadRace(s: Sides): ReadRace {
  const { opts, call, floors, ck } = s;

  /** Both answers arrived: queue the key for the side that is behind. */
  function compareAnswers(ns: string, key: Uint8Array, p: StoredEntry | null, r: StoredEntry | null, shadow: boolean) {
    if (sameVersion(p, r, s.nowSeconds())) return;
    if (shadow) s.shadowMismatch.inc();
    s.readRepairs.inc();
    const win = newest(p, r);
    s.enqueue(win === p ? "replica" : "primary", ns, key, "read");
  }

  async function getRaced(ns: string, key: Uint8Array): Promise<StoredEntry | null> {
    const mode = opts.modeOf(ns);
    if (mode === "primary") return call("primary", "get", (b) => b.get(ns, key));
    const p = call("primary", "get", (b) => b.get(ns, key));
    const r = call("replica", "get", (b) => b.get(ns, key));
    // Whatever the outcome, compare both answers once they are in.
    Promise.allSettled([p, r]).then(([a, b]) => {
      if (a.status === "fulfilled" && b.status === "fulfilled") compareAnswers(ns, key, a.value, b.value, mode === "shadow");
    });
    if (mode === "shadow") {
      // The primary answers; when it cannot, the replica is better than an error.
      return p.catch(() => r);
    }
    if (opts.trustFirstAnswer === false || s.suspect(ns, key)) return newestOfBoth(p, r, "get", ns, key);
    return (await s.firstSuccess([p.then((e) => ({ e, side: "primary" as Side })), r.then((e) => ({ e, side: "replica" as Side }))], "get")).e;
  }

  /**
   * Waits for both; the newer answer wins. One failing side is tolerated, unless the key's own recent write
   * (its floor) is newer than the answer left: then the failed side is asked once more, and if it still
   * cannot answer, the read fails rather than return a value older than a write this instance acknowledged.
   */
  async function newestOfBoth(p: Promise<StoredEntry | null>, r: Promise<StoredEntry | null>, op: string, ns?: string, key?: Uint8Array): Promise<StoredEntry | null> {
    let [a, b] = await Promise.allSettled([p, r]);
    if (a.status === "rejected" && b.status === "rejected") {
      s.bothFailed.inc({ op });
      throw a.reason;
    }
    const floor = ns !== undefined && key !== undefined ? floors.get(ck(ns, key)) : undefined;
    const best = () => newest(a.status === "fulfilled" ? a.value : null, b.status === "fulfilled" ? b.value : null);
    const below = (e: StoredEntry | null) => floor !== undefined && belowFloor(e, floor);
    // Only a side that failed can hold what is missing; two answers below the floor are what storage holds
    // (the entry was removed since, e.g. a purged tombstone).
    if (below(best()) && ns !== undefined && key !== undefined && (a.status === "rejected" || b.status === "rejected")) {
      const again = (side: Side) => Promise.allSettled([call(side, op, (x) => x.get(ns, key))]).then(([x]) => x!);
      if (a.status === "rejected") a = await again("primary");
      else if (b.status === "rejected") b = await again("replica");
      if (below(best()) && (a.status === "rejected" || b.status === "rejected")) throw new BackendBehindError(`the backend holding the newest version of this key did not answer: retry the read`);
    }
    return best();
  }

  async function getManyRaced(ns: string, keys: Uint8Array[]): Promise<Array<StoredEntry | null>> {
    const mode = opts.modeOf(ns);
    if (mode === "primary") return call("primary", "getMany", (b) => b.getMany(ns, keys));
    const p = call("primary", "getMany", (b) => b.getMany(ns, keys));
    const r = call("replica", "getMany", (b) => b.getMany(ns, keys));
    Promise.allSettled([p, r]).then(([a, b]) => {
      if (a.status !== "fulfilled" || b.status !== "fulfilled") return;
      keys.forEach((k, i) => compareAnswers(ns, k, a.value[i]!, b.value[i]!, mode === "shadow"));
    });
    if (mode === "shadow") return p.catch(() => r);
    if (opts.trustFirstAnswer === false || keys.some((k) => s.suspect(ns, k))) {
      const [a, b] = await Promise.allSettled([p, r]);
      if (a.status === "rejected" && b.status === "rejected") {
        s.bothFailed.inc({ op: "getMany" });
        throw a.reason;
      }
      const out = keys.map((_, i) => newest(a.status === "fulfilled" ? a.value[i]! : null, b.status === "fulfilled" ? b.value[i]! : null));
      // A key whose own recent write is newer than what the answering side holds: ask again, one key at a time.
      for (let i = 0; i < keys.length; i++) {
        const f = floors.get(ck(ns, keys[i]!));
        if (f !== undefined && belowFloor(out[i] as StoredEntry | null, f)) {
          out[i] = await newestOfBoth(call("primary", "get", (x) => x.get(ns, keys[i]!)), call("replica", "get", (x) => x.get(ns, keys[i]!)), "get", ns, keys[i]!);
        }
      }
      return out;
    }
    return (await s.firstSuccess([p.then((e) => ({ e, side: "primary" as Side })), r.then((e) => ({ e, side: "replica" as Side }))], "getMany")).e;
  }

  return {
    get: getRaced,
    getMany: (ns, keys) => (keys.length === 0 ? Promise.resolve([]) : getManyRaced(ns, keys)),
  };
}
